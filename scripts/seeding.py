"""Seeding a source collection: the demo's and the tests' starting point.

A real production collection behind an alias: texts embedded with the old model, payloads
kept, the application's alias pointing at it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration.providers import EmbeddingProvider

CORPUS = Path(__file__).resolve().parents[1] / "demo" / "corpus.jsonl"


def read_corpus(path: Path = CORPUS, limit: int | None = None) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in islice(handle, limit):
            if line.strip():
                yield json.loads(line)


def seed_collection(
    client: QdrantClient,
    *,
    collection: str,
    alias: str,
    records: Iterable[dict[str, Any]],
    provider: EmbeddingProvider,
    text_field: str = "text",
    batch_size: int = 128,
    distance: qm.Distance = qm.Distance.COSINE,
) -> int:
    """Create ``collection`` from ``records`` embedded by ``provider``; point ``alias`` at it."""
    client.create_collection(
        collection, vectors_config=qm.VectorParams(size=provider.dimension, distance=distance)
    )
    total = 0
    iterator = iter(records)
    while batch := list(islice(iterator, batch_size)):
        vectors = provider.embed_documents([r[text_field] for r in batch])
        client.upsert(
            collection,
            [
                qm.PointStruct(
                    id=r["id"], vector=v, payload={k: x for k, x in r.items() if k != "id"}
                )
                for r, v in zip(batch, vectors, strict=True)
            ],
            wait=True,
        )
        total += len(batch)
    client.update_collection_aliases(
        change_aliases_operations=[
            qm.CreateAliasOperation(
                create_alias=qm.CreateAlias(collection_name=collection, alias_name=alias)
            )
        ]
    )
    return total


def _payload(record: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key != "id"}
