"""Test helpers: a real source collection builder, a counting provider, a whole migration run.

Nothing here fakes Qdrant or a model: collections live in a real embedded store and
vectors come from the real local models. :class:`CountingProvider` wraps a real provider
to count calls and to simulate a worker that dies in the middle of an embedding call.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration import collections, compatibility
from include.qdrant_migration.plan import Plan
from include.qdrant_migration.providers import (
    EmbeddingProvider,
    ModelInfo,
    ModelLineage,
    ProviderLimits,
)
from include.qdrant_migration.spec import MigrationSpec
from include.qdrant_migration.state import QdrantStateStore, StateStore
from include.qdrant_migration.sync import partitions
from include.qdrant_migration.sync.backfill import (
    BackfillSettings,
    PartitionBackfill,
    PartitionResult,
)

SOURCE_MODEL = "all-MiniLM-L6-v2"
TARGET_MODEL = "multilingual-e5-small"
SEED_POINTS = 240


def small_spec(**overrides: Any) -> MigrationSpec:
    """The seeded store's migration with sizes small enough for unit tests."""
    params: dict[str, Any] = {
        "alias": "articles",
        "provider": "local",
        "model": TARGET_MODEL,
        "points_per_partition": 100,
        "batch_size": 16,
        "embed_concurrency": 2,
        "recall_k": 5,
        "recall_sample_size": 20,
    }
    params.update(overrides)
    return MigrationSpec.from_params(params)


def settings_of(spec: MigrationSpec, run_id: str = "") -> BackfillSettings:
    return BackfillSettings(
        spec.batch_size, spec.embed_concurrency, spec.bad_text_policy, run_id=run_id
    )


class SimulatedCrashError(RuntimeError):
    """Stands for a worker killed in the middle of an embedding request."""


class CountingProvider(EmbeddingProvider):
    """A real provider, wrapped to count document calls and texts (thread-safe).

    ``fail_on_call=n`` makes the n-th ``embed_documents`` call raise, once, like a worker
    dying mid-request; every other call is served by the real model.
    """

    name: ClassVar[str] = "counting"
    needs_connection: ClassVar[bool] = False

    def __init__(self, inner: EmbeddingProvider, *, fail_on_call: int | None = None) -> None:
        self.inner = inner
        self.fail_on_call = fail_on_call
        super().__init__(inner.model)
        self.calls = 0
        self.texts_embedded = 0
        self.batch_sizes: list[int] = []
        self._lock = threading.Lock()

    @property
    def limits(self) -> ProviderLimits:
        return self.inner.limits

    def model_info(self) -> ModelInfo:
        return self.inner.model_info()

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        with self._lock:
            self.calls += 1
            call = self.calls
        if call == self.fail_on_call:
            raise SimulatedCrashError(f"worker died during embedding call {call}")
        vectors = self.inner.embed_documents(texts)
        with self._lock:
            self.texts_embedded += len(texts)
            self.batch_sizes.append(len(texts))
        return vectors

    def embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        return self.inner.embed_queries(texts)

    def check_access(self) -> None:
        self.inner.check_access()

    def document_input_type(self) -> str:
        return self.inner.document_input_type()

    def query_input_type(self) -> str:
        return self.inner.query_input_type()


def dummy_vector(point_id: int | str, size: int) -> list[float]:
    """A deterministic non-zero vector (the backfill never reads source vectors)."""
    seed = uuid.uuid5(uuid.NAMESPACE_OID, str(point_id)).int
    return [((seed >> (i * 4)) % 15 + 1) / 16 for i in range(size)]


def make_source(
    client: QdrantClient,
    collection: str,
    points: Iterable[tuple[int | str, dict[str, Any]]],
    *,
    alias: str | None = None,
    size: int = 8,
    vector_name: str | None = None,
    vectors_config: Any = None,
) -> None:
    """A source collection of ``(id, payload)`` points, optionally behind ``alias``."""
    if vectors_config is None:
        params = qm.VectorParams(size=size, distance=qm.Distance.COSINE)
        vectors_config = params if vector_name is None else {vector_name: params}
    client.create_collection(collection, vectors_config=vectors_config)
    structs = [
        qm.PointStruct(
            id=pid,
            vector=(
                dummy_vector(pid, size)
                if vector_name is None
                else {vector_name: dummy_vector(pid, size)}
            ),
            payload=payload,
        )
        for pid, payload in points
    ]
    if structs:
        client.upsert(collection, structs, wait=True)
    if alias:
        client.update_collection_aliases(
            change_aliases_operations=[
                qm.CreateAliasOperation(
                    create_alias=qm.CreateAlias(collection_name=collection, alias_name=alias)
                )
            ]
        )


def all_points(client: QdrantClient, collection: str, *, vectors: bool = True) -> list[qm.Record]:
    """Every point of ``collection`` in Qdrant's id order."""
    found: list[qm.Record] = []
    offset: Any = None
    while True:
        page, offset = client.scroll(
            collection, limit=256, offset=offset, with_payload=True, with_vectors=vectors
        )
        found.extend(page)
        if offset is None:
            return found


def snapshot(client: QdrantClient, collection: str) -> dict[str, Any]:
    """Config, aliases and every point (payload and vector) of a collection, comparable."""
    return {
        "config": client.get_collection(collection).config.model_dump(),
        "aliases": sorted((a.alias_name, a.collection_name) for a in client.get_aliases().aliases),
        "collections": sorted(c.name for c in client.get_collections().collections),
        "points": [(p.id, p.payload, p.vector) for p in all_points(client, collection)],
    }


@dataclass
class Migrated:
    """A private, opened copy of a store already migrated to the new model."""

    path: Path
    client: QdrantClient
    state: QdrantStateStore
    plan: Plan
    results: list[PartitionResult]


@dataclass
class MigrationRun:
    plan: Plan
    partitions: list[partitions.Partition]
    results: list[PartitionResult] = field(default_factory=list)


def prepare(
    client: QdrantClient, spec: MigrationSpec, provider: EmbeddingProvider, state: StateStore
) -> MigrationRun:
    """assess -> create_target -> plan_partitions, as the DAG does before the backfill."""
    plan = compatibility.assess(client, spec, provider, state)
    collections.create_target(client, plan, state)
    parts = partitions.partitions_for(client, state, plan)
    return MigrationRun(plan, parts)


def run_partition(
    client: QdrantClient,
    run: MigrationRun,
    index: int,
    provider: EmbeddingProvider,
    state: StateStore,
    spec: MigrationSpec,
    run_id: str = "",
) -> PartitionResult:
    job = PartitionBackfill(
        client, run.plan, run.partitions[index], provider, state, settings_of(spec, run_id)
    )
    return job.run()


def migrate(
    client: QdrantClient, spec: MigrationSpec, provider: EmbeddingProvider, state: StateStore
) -> MigrationRun:
    """Everything up to (not including) recall_check: a complete, indexed target."""
    run = prepare(client, spec, provider, state)
    run.results = [
        run_partition(client, run, p.index, provider, state, spec) for p in run.partitions
    ]
    collections.finish_bulk_load(client, run.plan, state)
    return run


def seed_standin_source(
    client: QdrantClient,
    records: Sequence[dict[str, Any]],
    *,
    collection: str = "docs_v1",
    alias: str = "docs",
    model: str = "text-embedding-3-small",
    dimensions: int = 1536,
    lineage: bool = True,
    sparse: str | None = None,
    vector_name: str | None = None,
) -> None:
    """A source of the OpenAI stand-in's vectors, as this tool would have written it.

    The vectors are exactly what the stand-in returns for each text at ``dimensions``
    (:func:`expected_vector`), and the collection's metadata records that lineage. With
    ``sparse``, a hybrid collection: each point also has that BM25 vector of its text.
    ``vector_name`` names the dense vector (None: unnamed).
    """
    from tests.standin import expected_vector

    metadata = {
        "qdrant_migration": {
            "provider": "openai",
            "model": model,
            "dimensions": dimensions,
            "migration_id": "mig-earlier",
        }
    }
    dense = qm.VectorParams(size=dimensions, distance=qm.Distance.COSINE)
    client.create_collection(
        collection,
        vectors_config={vector_name: dense} if vector_name else dense,
        sparse_vectors_config={sparse: qm.SparseVectorParams(modifier=qm.Modifier.IDF)}
        if sparse
        else None,
        metadata=metadata if lineage else None,
    )

    def vector(text: str) -> Any:
        dense = expected_vector(model, text, "", dimensions)
        if vector_name is None and not sparse:
            return dense
        return {vector_name or "": dense} | ({sparse: bm25_vector(text)} if sparse else {})

    client.upsert(
        collection,
        [
            qm.PointStruct(
                id=r["id"],
                vector=vector(r["text"]),
                payload={k: v for k, v in r.items() if k != "id"},
            )
            for r in records
        ],
        wait=True,
    )
    client.update_collection_aliases(
        change_aliases_operations=[
            qm.CreateAliasOperation(
                create_alias=qm.CreateAlias(collection_name=collection, alias_name=alias)
            )
        ]
    )


class NoEmbeddingProvider(EmbeddingProvider):
    """Stands for a model that must not be called: any embedding call fails the test."""

    name: ClassVar[str] = "no-embedding"
    needs_connection: ClassVar[bool] = False

    def __init__(self, inner: EmbeddingProvider) -> None:
        self.inner = inner
        super().__init__(inner.model, dimensions=inner.requested_dimensions)

    @property
    def limits(self) -> ProviderLimits:
        return self.inner.limits

    def model_info(self) -> ModelInfo:
        return self.inner.model_info()

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        raise AssertionError(f"embed_documents called with {len(texts)} texts")

    def embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        raise AssertionError(f"embed_queries called with {len(texts)} texts")

    def lineage(self) -> ModelLineage:
        return self.inner.lineage()


#: Collection layouts beyond one dense vector (see ``include/qdrant_migration/layout.py``).
LAYOUTS = ("hybrid", "hybrid_unnamed", "named", "multivector")


def bm25_vector(text: str) -> qm.SparseVector:
    """Qdrant's BM25 of ``text`` (as an application writing hybrid points makes it)."""
    from qdrant_edge import Bm25, Bm25Config

    made = Bm25(Bm25Config(language="english")).embed_document(text)
    return qm.SparseVector(indices=list(made.indices), values=list(made.values))


def layout_vectors(layout: str, text: str, dense: list[float]) -> dict[str, Any]:
    """A point's vectors in ``layout``: ``dense`` is the one a migration replaces."""
    from tests.fakes import HashingProvider

    words = text.split()
    if layout in ("hybrid", "hybrid_unnamed"):
        return {"" if layout == "hybrid_unnamed" else "dense": dense, "bm25": bm25_vector(text)}
    if layout == "named":
        title = HashingProvider("hash-title-16").vector(" ".join(words[:5]))
        return {"body": dense, "title": title}
    tokens = HashingProvider("hash-token-8")
    return {"dense": dense, "colbert": [tokens.vector(w) for w in words[:4] or [text]]}


def layout_config(layout: str, size: int) -> dict[str, Any]:
    """``create_collection`` arguments of ``layout`` (``size``: the migrated vector's)."""
    dense = qm.VectorParams(size=size, distance=qm.Distance.COSINE)
    bm25 = {"bm25": qm.SparseVectorParams(modifier=qm.Modifier.IDF)}
    if layout == "hybrid_unnamed":
        return {"vectors_config": dense, "sparse_vectors_config": bm25}
    if layout == "hybrid":
        return {"vectors_config": {"dense": dense}, "sparse_vectors_config": bm25}
    if layout == "named":
        title = qm.VectorParams(
            size=16,
            distance=qm.Distance.DOT,
            on_disk=True,
            hnsw_config=qm.HnswConfigDiff(m=8),
            quantization_config=qm.ScalarQuantization(
                scalar=qm.ScalarQuantizationConfig(type=qm.ScalarType.INT8)
            ),
        )
        return {"vectors_config": {"body": dense, "title": title}}
    colbert = qm.VectorParams(
        size=8,
        distance=qm.Distance.COSINE,
        multivector_config=qm.MultiVectorConfig(comparator=qm.MultiVectorComparator.MAX_SIM),
    )
    return {"vectors_config": {"dense": dense, "colbert": colbert}}


def seed_layout(
    client: QdrantClient,
    layout: str,
    records: Sequence[dict[str, Any]],
    provider: EmbeddingProvider,
    *,
    collection: str = "articles_v1",
    alias: str = "articles",
) -> None:
    """A source in ``layout`` behind ``alias``: the migrated vector from ``provider``."""
    client.create_collection(collection, **layout_config(layout, provider.dimension))
    texts = [r["text"] for r in records]
    vectors = provider.embed_documents(texts)
    client.upsert(
        collection,
        [
            qm.PointStruct(
                id=r["id"],
                vector=layout_vectors(layout, r["text"], v),
                payload={k: x for k, x in r.items() if k != "id"},
            )
            for r, v in zip(records, vectors, strict=True)
        ],
        wait=True,
    )
    client.update_collection_aliases(
        change_aliases_operations=[
            qm.CreateAliasOperation(
                create_alias=qm.CreateAlias(collection_name=collection, alias_name=alias)
            )
        ]
    )
