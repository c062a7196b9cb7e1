from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration import quantization
from include.qdrant_migration.collections import (
    METADATA_KEY,
    CollectionConflictError,
    create_target,
    finish_bulk_load,
    lineage_record,
)
from include.qdrant_migration.compatibility import assess
from include.qdrant_migration.plan import Plan
from include.qdrant_migration.state import (
    MigrationRecord,
    Migrations,
    MigrationStatus,
    QdrantStateStore,
    RecordKind,
    StateStore,
)
from include.qdrant_migration.sync.fingerprints import Fingerprints
from tests.fakes import HashingProvider
from tests.qdrant_migration.hashed import HASH_DIMENSION, HASH_TARGET, NEW_MODEL, hash_spec
from tests.qdrant_migration.helpers import make_source

TARGET = HASH_TARGET
D = HASH_DIMENSION


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


def _plan(client: Any, model: HashingProvider, **spec: Any) -> Plan:
    return assess(client, hash_spec(**spec), model, QdrantStateStore(client))


def _record(state: StateStore, plan: Plan) -> MigrationRecord | None:
    return Migrations(state).get(plan.migration_id)


def test_target_takes_the_new_size_and_the_source_vector_settings(
    new_model: HashingProvider,
) -> None:
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
    plan = _plan(store, new_model, alias="docs")
    assert create_target(store, plan, QdrantStateStore(store)) == {
        "collection": f"docs_v1__{NEW_MODEL}__v1",
        "created": True,
    }
    vectors = store.get_collection(plan.target_collection).config.params.vectors
    assert isinstance(vectors, dict) and set(vectors) == {"dense"}  # same vector name
    target = vectors["dense"]
    assert target.size == D
    assert target.distance == qm.Distance.DOT
    assert target.hnsw_config == source_params.hnsw_config
    assert target.quantization_config == source_params.quantization_config
    assert target.on_disk is True
    assert store.count(plan.target_collection).count == 0


@pytest.mark.parametrize(
    ("requested", "collection_level", "vector_level"),
    [
        (None, "scalar_int8", "scalar_int8"),  # the source's, kept
        ("binary", "binary", "none"),  # replaced at the collection level, the vector's dropped
        ("none", "none", "none"),
    ],
)
def test_the_quantization_param_replaces_the_sources(
    new_model: HashingProvider, requested: str | None, collection_level: str, vector_level: str
) -> None:
    server = ServerLikeClient(QdrantClient(":memory:"))
    scalar = qm.ScalarQuantization(scalar=qm.ScalarQuantizationConfig(type=qm.ScalarType.INT8))
    server.create_collection(
        "docs_v1",
        vectors_config=qm.VectorParams(
            size=8, distance=qm.Distance.COSINE, quantization_config=scalar
        ),
        quantization_config=scalar,
    )
    server.upsert("docs_v1", [qm.PointStruct(id=1, vector=[0.5] * 8, payload={"text": "a"})])
    server.update_collection_aliases(
        change_aliases_operations=[
            qm.CreateAliasOperation(
                create_alias=qm.CreateAlias(collection_name="docs_v1", alias_name="docs")
            )
        ]
    )
    source = server.get_collection("docs_v1")
    if source.config.quantization_config is None:  # local mode drops it; a server keeps it
        source.config.quantization_config = scalar
        source.config.params.vectors.quantization_config = scalar  # type: ignore[union-attr]
        server.get_collection = lambda name: (  # type: ignore[method-assign]
            source if name == "docs_v1" else ServerLikeClient.get_collection(server, name)
        )
    plan = _plan(server, new_model, alias="docs", quantization=requested)
    create_target(server, plan, QdrantStateStore(server))  # type: ignore[arg-type]
    (_, name, created), *_ = [c for c in server.calls[1:] if c[0] == "create_collection"]
    assert name == plan.target_collection
    assert quantization.describe(created["quantization_config"]) == collection_level
    vector = created["vectors_config"]
    assert vector.size == D
    assert quantization.describe(vector.quantization_config) == vector_level


def test_lineage_goes_into_metadata_and_state(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    plan = _plan(fast_client, new_model)
    state = QdrantStateStore(fast_client)
    create_target(fast_client, plan, state)
    meta = fast_client.get_collection(TARGET).config.metadata or {}
    lineage = meta[METADATA_KEY]
    assert lineage["migration_id"] == plan.migration_id
    assert lineage["source_collection"] == "articles_v1"
    assert lineage["source_lineage"] == {}
    assert lineage["alias"] == "articles"
    assert lineage["text_field"] == "text"
    assert (lineage["provider"], lineage["model"], lineage["dimensions"]) == (
        "hashing",
        NEW_MODEL,
        D,
    )
    assert lineage["query_input"] == "query"
    assert lineage["strategy"] == "full_reembed"
    assert lineage["created_at"]
    record = _record(state, plan)
    assert record is not None
    assert record.target_collection == TARGET
    assert record.source_collection == "articles_v1"
    assert record.status is MigrationStatus.LOADING
    assert record.strategy == "full_reembed"
    assert record.plan == plan  # the catch-up DAG works from it
    assert record.lineage == lineage_record(plan)
    assert {k: v for k, v in lineage.items() if k != "created_at"} == lineage_record(plan)


def test_indexing_is_deferred_during_the_load_and_restored_after(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    server = ServerLikeClient(fast_client)
    server.update_collection(
        "articles_v1", optimizers_config=qm.OptimizersConfigDiff(indexing_threshold=5000)
    )
    plan = _plan(server, new_model)
    state = QdrantStateStore(fast_client)
    create_target(server, plan, state)  # type: ignore[arg-type]
    assert server.get_collection(TARGET).config.optimizer_config.indexing_threshold == 0
    record = _record(state, plan)
    assert record is not None and record.indexing_threshold == 5000  # the source's, remembered

    finish_bulk_load(server, plan, state)  # type: ignore[arg-type]
    assert server.get_collection(TARGET).config.optimizer_config.indexing_threshold == 5000
    updates = [c for c in server.calls if c[0] == "update_collection" and c[1] == TARGET]
    assert len(updates) == 1
    finish_bulk_load(server, plan, state)  # type: ignore[arg-type]
    assert len([c for c in server.calls if c[0] == "update_collection"]) == 2  # idempotent


def test_a_source_with_indexing_off_keeps_it_off(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    server = ServerLikeClient(fast_client)
    server.update_collection(
        "articles_v1", optimizers_config=qm.OptimizersConfigDiff(indexing_threshold=0)
    )
    plan = _plan(server, new_model)
    state = QdrantStateStore(fast_client)
    create_target(server, plan, state)  # type: ignore[arg-type]
    record = _record(state, plan)
    assert record is not None and record.indexing_threshold == 0
    finish_bulk_load(server, plan, state)  # type: ignore[arg-type]
    assert server.get_collection(TARGET).config.optimizer_config.indexing_threshold == 0
    assert not [c for c in server.calls if c[0] == "update_collection" and c[1] == TARGET]


def test_a_lost_state_record_does_not_turn_indexing_on(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    """The target is ours (its metadata says so) but the state record is gone: the source's
    threshold is read again, not replaced by a default that would switch indexing on."""
    server = ServerLikeClient(fast_client)
    server.update_collection(
        "articles_v1", optimizers_config=qm.OptimizersConfigDiff(indexing_threshold=0)
    )
    plan = _plan(server, new_model)
    state = QdrantStateStore(fast_client)
    create_target(server, plan, state)  # type: ignore[arg-type]
    state.delete(RecordKind.MIGRATION, plan.migration_id)

    assert create_target(server, plan, state) == {"collection": TARGET, "created": False}  # type: ignore[arg-type]
    record = _record(state, plan)
    assert record is not None and record.indexing_threshold == 0
    finish_bulk_load(server, plan, state)  # type: ignore[arg-type]
    assert server.get_collection(TARGET).config.optimizer_config.indexing_threshold == 0


def test_payload_indexes_are_copied(fast_client: QdrantClient, new_model: HashingProvider) -> None:
    server = ServerLikeClient(fast_client)
    server.create_payload_index("articles_v1", "module", qm.PayloadSchemaType.KEYWORD)
    server.create_payload_index("articles_v1", "kind", qm.PayloadSchemaType.KEYWORD)
    plan = _plan(server, new_model)
    create_target(server, plan, QdrantStateStore(fast_client))  # type: ignore[arg-type]
    assert server.indexes[TARGET] == {
        "module": qm.PayloadSchemaType.KEYWORD,
        "kind": qm.PayloadSchemaType.KEYWORD,
    }


def test_a_rerun_reuses_the_target_without_touching_it(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    client = fast_client
    plan = _plan(client, new_model)
    state = QdrantStateStore(client)
    create_target(client, plan, state)
    client.upsert(TARGET, [qm.PointStruct(id=1, vector=[0.1] * D, payload={"text": "kept"})])
    created = (client.get_collection(TARGET).config.metadata or {})[METADATA_KEY]["created_at"]
    first = _record(state, plan)
    assert first is not None
    Migrations(state).put(dataclasses.replace(first, indexing_threshold=1234))

    synced = Fingerprints(client, plan.migration_id)
    synced.record([(1, "what the backfill wrote")])

    assert create_target(client, plan, state) == {"collection": TARGET, "created": False}
    assert client.count(TARGET).count == 1
    assert dict(synced.stream()) == {1: "what the backfill wrote"}  # still describes it
    assert client.retrieve(TARGET, [1])[0].payload == {"text": "kept"}
    assert (client.get_collection(TARGET).config.metadata or {})[METADATA_KEY][
        "created_at"
    ] == created
    again = _record(state, plan)
    assert again is not None
    assert again.created_at == first.created_at
    assert again.indexing_threshold == 1234  # what the first run remembered, kept
    # and a second assess continues into the same target
    assert _plan(client, new_model).target_collection == TARGET


def test_a_recreated_target_starts_loading_again(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    """Somebody deleted the target of a ready migration: a rerun loads it from scratch."""
    client = fast_client
    plan = _plan(client, new_model)
    state = QdrantStateStore(client)
    create_target(client, plan, state)
    record = _record(state, plan)
    assert record is not None
    Migrations(state).transition(record, MigrationStatus.READY)
    synced = Fingerprints(client, plan.migration_id)
    synced.record([(1, "written to the deleted target"), (2, "this too")])
    state.put(RecordKind.PARTITION_PLAN, plan.migration_id, {"partitions": []})
    client.delete_collection(TARGET)
    assert create_target(client, plan, state) == {"collection": TARGET, "created": True}
    again = _record(state, plan)
    assert again is not None and again.status is MigrationStatus.LOADING
    # what was recorded about the deleted target describes nothing now: forgotten, or
    # completeness and catch-up would take the empty target for a damaged one
    assert not client.collection_exists(synced.collection)
    assert state.get(RecordKind.PARTITION_PLAN, plan.migration_id) is None


@pytest.mark.parametrize(
    ("vectors", "metadata", "problem"),
    [
        (
            qm.VectorParams(size=128, distance=qm.Distance.COSINE),
            None,
            "its vectors are 128-d Cosine",
        ),
        (
            qm.VectorParams(size=D, distance=qm.Distance.EUCLID),
            None,
            f"its vectors are {D}-d Euclid",
        ),
        (
            {"dense": qm.VectorParams(size=D, distance=qm.Distance.COSINE)},
            None,
            "it has a different vector layout",
        ),
        (
            qm.VectorParams(size=D, distance=qm.Distance.COSINE),
            {METADATA_KEY: {"migration_id": "mig-somebodyelse"}},
            "it belongs to migration mig-somebodyelse",
        ),
        (
            qm.VectorParams(size=D, distance=qm.Distance.COSINE),
            None,
            "nothing records that this migration created it",
        ),
    ],
    ids=["size", "distance", "layout", "other-migration", "unrecorded"],
)
def test_a_conflicting_collection_is_refused(
    fast_client: QdrantClient,
    new_model: HashingProvider,
    vectors: Any,
    metadata: dict[str, Any] | None,
    problem: str,
) -> None:
    client = fast_client
    plan = _plan(client, new_model)
    client.create_collection(TARGET, vectors_config=vectors, metadata=metadata)
    before = client.get_collection(TARGET).config
    state = QdrantStateStore(client)
    with pytest.raises(CollectionConflictError) as error:
        create_target(client, plan, state)
    message = str(error.value)
    assert f"Collection {TARGET!r} already exists but {problem}" in message
    assert f"this migration needs {D}-d Cosine vectors" in message
    assert "Delete or rename that collection" in message
    assert client.get_collection(TARGET).config == before
    assert _record(state, plan) is None
