"""What the benchmark's parts share: the corpus, seeding a source, workers, statistics."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator, Sequence
from itertools import cycle, islice
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from scripts.seeding import read_corpus

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "bench_v1"
ALIAS = "bench"
#: The backfill never reads the source's vectors: small dummy ones keep seeding cheap.
SOURCE_DIMENSION = 8
SEED_BATCH = 1000


def cycled_records(count: int) -> Iterator[dict[str, Any]]:
    """``count`` records cycling the demo corpus, the id appended so every text is distinct."""
    for point_id, record in enumerate(islice(cycle(list(read_corpus())), count), start=1):
        yield record | {"id": point_id, "text": f"{record['text']} [{point_id}]"}


def _dummy_vector(point_id: int) -> list[float]:
    return [((point_id >> i) & 7) / 8 + 0.125 for i in range(SOURCE_DIMENSION)]


def seed_source(client: QdrantClient, records: Sequence[dict[str, Any]] | Iterator[Any]) -> int:
    """A source collection behind the alias, with the records' payloads and dummy vectors."""
    client.create_collection(
        SOURCE,
        vectors_config=qm.VectorParams(size=SOURCE_DIMENSION, distance=qm.Distance.COSINE),
    )
    total = 0
    iterator = iter(records)
    while batch := list(islice(iterator, SEED_BATCH)):
        client.upsert(
            SOURCE,
            qm.Batch(
                ids=[r["id"] for r in batch],
                vectors=[_dummy_vector(r["id"]) for r in batch],
                payloads=[{k: v for k, v in r.items() if k != "id"} for r in batch],
            ),
            wait=True,
        )
        total += len(batch)
    client.update_collection_aliases(
        change_aliases_operations=[
            qm.CreateAliasOperation(
                create_alias=qm.CreateAlias(collection_name=SOURCE, alias_name=ALIAS)
            )
        ]
    )
    return total


def seed_ids(client: QdrantClient, count: int) -> int:
    """A source behind the alias with ``count`` points and no payload: for id-only work."""
    records = ({"id": point_id} for point_id in range(1, count + 1))
    return seed_source(client, records)


def drop_migration(client: QdrantClient) -> None:
    """Forget every migration (targets, state): the next run starts from scratch."""
    for collection in client.get_collections().collections:
        if collection.name != SOURCE:
            client.delete_collection(collection.name)


def run_worker(
    job: str,
    config: dict[str, Any],
    *,
    env: dict[str, str] | None = None,
    timeout_s: float = 900,
) -> dict[str, Any]:
    """Run ``python -m bench.worker job`` in a fresh process; its last stdout line is JSON."""
    env = (
        os.environ
        | (env or {})
        | {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "bench.worker", job, json.dumps(config)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"bench worker {job!r} failed ({done.returncode}):\n{done.stderr[-4000:]}"
        )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))
