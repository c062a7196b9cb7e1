from __future__ import annotations

import warnings
from typing import Any

import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration.collections import (
    METADATA_KEY,
    CollectionConflictError,
    create_target,
    finish_bulk_load,
    lineage_record,
)
from include.qdrant_migration.compatibility import Plan, assess
from include.qdrant_migration.providers import EmbeddingProvider
from include.qdrant_migration.state import QdrantStateStore
from tests.qdrant_migration.helpers import make_source, small_spec

TARGET = "articles_v1__multilingual-e5-small__v1"


class ServerLikeClient:
    """A real embedded client that also remembers what local mode silently drops.

    Local mode ignores optimizer settings (it always reports indexing_threshold 20000) and
    payload indexes (no-op). A server keeps both; this wrapper records them and reports
    them back from ``get_collection``, the way a server would. Everything else, including
    every write, goes to the real embedded store.
    """

    def __init__(self, inner: QdrantClient) -> None:
        self._inner = inner
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.thresholds: dict[str, int] = {}
        self.indexes: dict[str, dict[str, Any]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _remember(self, name: str, kwargs: dict[str, Any]) -> None:
        config = kwargs.get("optimizers_config")
        if config is not None and config.indexing_threshold is not None:
            self.thresholds[name] = config.indexing_threshold

    def create_collection(self, name: str, **kwargs: Any) -> bool:
        self.calls.append(("create_collection", name, kwargs))
        self._remember(name, kwargs)
        return self._inner.create_collection(name, **kwargs)

    def update_collection(self, name: str, **kwargs: Any) -> bool:
        self.calls.append(("update_collection", name, kwargs))
        self._remember(name, kwargs)
        return self._inner.update_collection(name, **kwargs)

    def create_payload_index(
        self, name: str, field_name: str, field_schema: Any, **kwargs: Any
    ) -> Any:
        self.calls.append(("create_payload_index", name, {field_name: field_schema}))
        self.indexes.setdefault(name, {})[field_name] = field_schema
        with warnings.catch_warnings():  # local mode warns that indexes have no effect
            warnings.simplefilter("ignore")
            return self._inner.create_payload_index(name, field_name, field_schema=field_schema)

    def get_collection(self, name: str) -> qm.CollectionInfo:
        info = self._inner.get_collection(name).model_copy(deep=True)
        if name in self.thresholds:
            info.config.optimizer_config.indexing_threshold = self.thresholds[name]
        if name in self.indexes:
            info.payload_schema = {
                f: qm.PayloadIndexInfo(data_type=t, points=0) for f, t in self.indexes[name].items()
            }
        return info


def _plan(client: Any, e5: EmbeddingProvider, **spec: Any) -> Plan:
    return assess(client, small_spec(**spec), e5, QdrantStateStore(client))


def test_target_takes_the_new_size_and_the_source_vector_settings(e5: EmbeddingProvider) -> None:
    store = QdrantClient(":memory:")
    source_params = qm.VectorParams(
        size=8,
        distance=qm.Distance.DOT,
        hnsw_config=qm.HnswConfigDiff(m=32, ef_construct=64),
        quantization_config=qm.ScalarQuantization(
            scalar=qm.ScalarQuantizationConfig(type=qm.ScalarType.INT8, always_ram=True)
        ),
        on_disk=True,
    )
    make_source(
        store,
        "docs_v1",
        [(i, {"text": f"document {i}"}) for i in range(3)],
        alias="docs",
        vector_name="dense",
        vectors_config={"dense": source_params},
    )
    plan = _plan(store, e5, alias="docs")
    assert create_target(store, plan, QdrantStateStore(store)) == {
        "collection": "docs_v1__multilingual-e5-small__v1",
        "created": True,
    }
    vectors = store.get_collection(plan.target_collection).config.params.vectors
    assert isinstance(vectors, dict) and set(vectors) == {"dense"}  # same vector name
    target = vectors["dense"]
    assert target.size == 384
    assert target.distance == qm.Distance.DOT
    assert target.hnsw_config == source_params.hnsw_config
    assert target.quantization_config == source_params.quantization_config
    assert target.on_disk is True
    assert store.count(plan.target_collection).count == 0


def test_lineage_goes_into_metadata_and_state(client: QdrantClient, e5: EmbeddingProvider) -> None:
    plan = _plan(client, e5)
    state = QdrantStateStore(client)
    create_target(client, plan, state)
    meta = client.get_collection(TARGET).config.metadata or {}
    lineage = meta[METADATA_KEY]
    assert lineage["migration_id"] == plan.migration_id
    assert lineage["source_collection"] == "articles_v1"
    assert lineage["alias"] == "articles"
    assert lineage["text_field"] == "text"
    assert (lineage["provider"], lineage["model"], lineage["dimensions"]) == (
        "local",
        "multilingual-e5-small",
        384,
    )
    assert lineage["query_input"] == "'query: ' prefix"
    assert lineage["created_at"]
    doc = state.get("migration", plan.migration_id)
    assert doc is not None
    assert doc["target_collection"] == TARGET
    assert doc["source_collection"] == "articles_v1"
    assert doc["status"] == "loading"
    assert doc["lineage"] == lineage_record(plan)
    assert {k: v for k, v in lineage.items() if k != "created_at"} == lineage_record(plan)


def test_indexing_is_deferred_during_the_load_and_restored_after(
    client: QdrantClient, e5: EmbeddingProvider
) -> None:
    server = ServerLikeClient(client)
    server.update_collection(
        "articles_v1", optimizers_config=qm.OptimizersConfigDiff(indexing_threshold=5000)
    )
    plan = _plan(server, e5)
    state = QdrantStateStore(client)
    create_target(server, plan, state)  # type: ignore[arg-type]
    assert server.get_collection(TARGET).config.optimizer_config.indexing_threshold == 0
    doc = state.get("migration", plan.migration_id)
    assert doc is not None and doc["indexing_threshold"] == 5000  # the source's, remembered

    finish_bulk_load(server, plan, state)  # type: ignore[arg-type]
    assert server.get_collection(TARGET).config.optimizer_config.indexing_threshold == 5000
    updates = [c for c in server.calls if c[0] == "update_collection" and c[1] == TARGET]
    assert len(updates) == 1
    finish_bulk_load(server, plan, state)  # type: ignore[arg-type]
    assert len([c for c in server.calls if c[0] == "update_collection"]) == 2  # idempotent


def test_payload_indexes_are_copied(client: QdrantClient, e5: EmbeddingProvider) -> None:
    server = ServerLikeClient(client)
    server.create_payload_index("articles_v1", "module", qm.PayloadSchemaType.KEYWORD)
    server.create_payload_index("articles_v1", "kind", qm.PayloadSchemaType.KEYWORD)
    plan = _plan(server, e5)
    create_target(server, plan, QdrantStateStore(client))  # type: ignore[arg-type]
    assert server.indexes[TARGET] == {
        "module": qm.PayloadSchemaType.KEYWORD,
        "kind": qm.PayloadSchemaType.KEYWORD,
    }


def test_a_rerun_reuses_the_target_without_touching_it(
    client: QdrantClient, e5: EmbeddingProvider
) -> None:
    plan = _plan(client, e5)
    state = QdrantStateStore(client)
    create_target(client, plan, state)
    client.upsert(TARGET, [qm.PointStruct(id=1, vector=[0.1] * 384, payload={"text": "kept"})])
    created = (client.get_collection(TARGET).config.metadata or {})[METADATA_KEY]["created_at"]
    first = state.get("migration", plan.migration_id)

    assert create_target(client, plan, state) == {"collection": TARGET, "created": False}
    assert client.count(TARGET).count == 1
    assert client.retrieve(TARGET, [1])[0].payload == {"text": "kept"}
    assert (client.get_collection(TARGET).config.metadata or {})[METADATA_KEY][
        "created_at"
    ] == created
    again = state.get("migration", plan.migration_id)
    assert again is not None and first is not None
    assert again["created_at"] == first["created_at"]
    assert again["indexing_threshold"] == first["indexing_threshold"]
    # and a second assess continues into the same target
    assert _plan(client, e5).target_collection == TARGET


@pytest.mark.parametrize(
    ("vectors", "metadata", "problem"),
    [
        (
            qm.VectorParams(size=128, distance=qm.Distance.COSINE),
            None,
            "its vectors are 128-d Cosine",
        ),
        (
            qm.VectorParams(size=384, distance=qm.Distance.EUCLID),
            None,
            "its vectors are 384-d Euclid",
        ),
        (
            {"dense": qm.VectorParams(size=384, distance=qm.Distance.COSINE)},
            None,
            "it has a different vector layout",
        ),
        (
            qm.VectorParams(size=384, distance=qm.Distance.COSINE),
            {METADATA_KEY: {"migration_id": "mig-somebodyelse"}},
            "it belongs to migration mig-somebodyelse",
        ),
    ],
)
def test_a_conflicting_collection_is_refused(
    client: QdrantClient,
    e5: EmbeddingProvider,
    vectors: Any,
    metadata: dict[str, Any] | None,
    problem: str,
) -> None:
    plan = _plan(client, e5)
    client.create_collection(TARGET, vectors_config=vectors, metadata=metadata)
    before = client.get_collection(TARGET).config
    state = QdrantStateStore(client)
    with pytest.raises(CollectionConflictError) as error:
        create_target(client, plan, state)
    message = str(error.value)
    assert f"Collection {TARGET!r} already exists but {problem}" in message
    assert "this migration needs 384-d Cosine vectors" in message
    assert "Delete or rename that collection" in message
    assert client.get_collection(TARGET).config == before
    assert state.get("migration", plan.migration_id) is None
