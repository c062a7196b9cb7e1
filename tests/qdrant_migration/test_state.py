"""The state store, the migration records and their status machine (leases: test_leases.py).

Both stores are exercised through the same tests (the embedded store on disk, and the
in-memory one of unit tests).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient

from include.qdrant_migration import state as state_module
from include.qdrant_migration.plan import Estimate, Lineage, Plan, SourceInfo
from include.qdrant_migration.qdrant import QdrantSettings, open_client
from include.qdrant_migration.spec import MigrationSpec, Strategy
from include.qdrant_migration.state import (
    STATE_COLLECTION,
    MemoryStateStore,
    MigrationRecord,
    Migrations,
    MigrationStatus,
    QdrantStateStore,
    RecordKind,
    StateStore,
    StatusError,
    record_id,
)
from tests.qdrant_server import QdrantServer, qdrant_server  # noqa: F401 (fixture)

DOC: dict[str, Any] = {
    "migration_id": "mig-1",
    "next_offset": 1234,
    "uuid_offset": "5b0f6a5e-8d0c-4d57-9b1c-2a5b8d3c7e11",
    "ratio": 0.25,
    "done": False,
    "nothing": None,
    "skipped_by_reason": {"empty": 2, "missing": 1},
    "ids": [1, "a", 2.5],
}


@pytest.fixture(params=["qdrant", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "memory":
        yield MemoryStateStore()
        return
    with open_client(QdrantSettings(path=str(tmp_path / "state"))) as client:
        yield QdrantStateStore(client)


# -- records -----------------------------------------------------------------------------


def test_put_get_round_trips_json_types(store: StateStore) -> None:
    store.put(RecordKind.CHECKPOINT, "mig-1/fp/0", DOC)
    got = store.get(RecordKind.CHECKPOINT, "mig-1/fp/0")
    assert got == DOC
    assert type(got and got["next_offset"]) is int  # an int offset must not come back as 1234.0


def test_put_replaces_and_kinds_are_separate(store: StateStore) -> None:
    store.put(RecordKind.PARTITION_PLAN, "k", {"v": 1})
    store.put(RecordKind.CHECKPOINT, "k", {"v": 2})
    store.put(RecordKind.PARTITION_PLAN, "k", {"v": 3})
    assert store.get(RecordKind.PARTITION_PLAN, "k") == {"v": 3}
    assert store.get(RecordKind.CHECKPOINT, "k") == {"v": 2}
    assert store.get(RecordKind.PARTITION_PLAN, "other") is None


def test_returned_documents_are_copies(store: StateStore) -> None:
    store.put(RecordKind.PARTITION_PLAN, "k", {"v": 1})
    got = store.get(RecordKind.PARTITION_PLAN, "k")
    assert got is not None
    got["v"] = 99
    assert store.get(RecordKind.PARTITION_PLAN, "k") == {"v": 1}


def test_delete(store: StateStore) -> None:
    store.put(RecordKind.SKIP, "a", {"x": 1})
    store.put(RecordKind.SKIP, "b", {"x": 2})
    store.delete(RecordKind.SKIP, "a")
    store.delete(RecordKind.SKIP, "never-written")
    assert store.get(RecordKind.SKIP, "a") is None
    assert store.get(RecordKind.SKIP, "b") == {"x": 2}


def test_scan_filters_by_kind_and_fields(store: StateStore) -> None:
    for i in range(5):
        store.put(
            RecordKind.SKIP, f"m1/{i}", {"migration_id": "m1", "point_id": i, "reason": "empty"}
        )
    store.put(RecordKind.SKIP, "m2/0", {"migration_id": "m2", "point_id": 0, "reason": "empty"})
    store.put(RecordKind.CHECKPOINT, "m1/x", {"migration_id": "m1"})
    skips = store.scan(RecordKind.SKIP, migration_id="m1")
    assert sorted(d["point_id"] for d in skips) == list(range(5))
    assert len(list(store.scan(RecordKind.SKIP))) == 6
    assert list(store.scan(RecordKind.SKIP, migration_id="m3")) == []
    assert list(store.scan(RecordKind.REPORT)) == []


def test_scan_streams_past_one_page() -> None:
    store = QdrantStateStore(QdrantClient(":memory:"))
    for i in range(300):  # scan pages by 256
        store.put(RecordKind.SKIP, f"m/{i}", {"migration_id": "m", "point_id": i})
    found = [d["point_id"] for d in store.scan(RecordKind.SKIP, migration_id="m")]
    assert sorted(found) == list(range(300))


def test_absent_collection_reads_as_empty_and_is_not_created(fast_client: QdrantClient) -> None:
    store = QdrantStateStore(fast_client)
    assert store.get(RecordKind.MIGRATION, "mig-1") is None
    assert list(store.scan(RecordKind.SKIP, migration_id="mig-1")) == []
    store.delete(RecordKind.CHECKPOINT, "x")
    store.release("target/mig-1", "nobody")
    assert not fast_client.collection_exists(STATE_COLLECTION)
    store.put(RecordKind.MIGRATION, "mig-1", {"status": "loading"})
    assert fast_client.collection_exists(STATE_COLLECTION)


def test_state_survives_reopening_the_store(tmp_path: Path) -> None:
    settings = QdrantSettings(path=str(tmp_path / "state"))
    with open_client(settings) as client:
        QdrantStateStore(client).put(RecordKind.MIGRATION, "mig-1", DOC)
    with open_client(settings) as client:
        store = QdrantStateStore(client)
        assert store.get(RecordKind.MIGRATION, "mig-1") == DOC
        record = client.retrieve(STATE_COLLECTION, [record_id(RecordKind.MIGRATION, "mig-1")])[0]
        assert record.payload is not None
        assert record.payload["kind"] == "migration" and record.payload["key"] == "mig-1"
        assert record.payload["updated_at"].endswith("+00:00")


def test_record_ids_are_stable_and_distinct() -> None:
    assert record_id(RecordKind.PARTITION_PLAN, "a") == record_id(RecordKind.PARTITION_PLAN, "a")
    keys = ["a", "b", "a/b", "b/c", "", "mig-1/0", "mig-1/0/1"]
    ids = {record_id(kind, key) for kind, key in itertools.product(RecordKind, keys)}
    assert len(ids) == len(RecordKind) * len(keys)
    # ids of records written before the kinds were an enum: stores made then still read
    assert record_id(RecordKind.PARTITION_PLAN, "mig-1") == "18b0c785-efb1-51c4-928f-0e944343209f"
    assert record_id(RecordKind.CHECKPOINT, "mig-1/fp/0") == "03c95c28-7f6e-52eb-89a1-0662cde1d847"


def test_record_kinds_keep_their_stored_names() -> None:
    """Records already in users' stores are found by these names: they must never change."""
    assert {kind.name: kind.value for kind in RecordKind} == {
        "MIGRATION": "migration",
        "PARTITION_PLAN": "plan",
        "CHECKPOINT": "checkpoint",
        "SKIP": "skip",
        "WATERMARK": "watermark",
        "LEASE": "lease",
        "REPORT": "report",
        "LINEAR_MAP": "linear_map",
        "LINEAR_MAP_CHUNK": "linear_map_chunk",
        "CATCH_UP": "catch_up",
    }


# -- migration records and the status machine -------------------------------------------

S = MigrationStatus
#: Every status with a collection to delete (a quantization change made none).
RETIRABLE = (S.LOADING, S.READY, S.SWAPPED, S.ROLLED_BACK, S.REJECTED)
#: The life of a migration, as the DAGs drive it. Everything else is refused.
ALLOWED = {
    (S.LOADING, S.READY),  # loaded, checked and caught up
    (S.READY, S.READY),  # caught up again while the approval waits
    (S.READY, S.SWAPPED),  # approved
    (S.SWAPPED, S.ROLLED_BACK),
    (S.ROLLED_BACK, S.READY),  # a rerun brings the target level again
    (S.READY, S.REJECTED),  # the approval was rejected (or timed out): the alias stays
    (S.REJECTED, S.READY),  # a new run of a rejected migration, caught up again
    *((status, S.RETIRED) for status in RETIRABLE),
}


def _plan() -> Plan:
    spec = MigrationSpec.from_params(
        {"alias": "articles", "provider_options": {"requests_per_minute": 100}, "batch_size": 16}
    )
    return Plan(
        migration_id="mig-1",
        alias="articles",
        strategy=Strategy.FULL_REEMBED,
        reasons=["Another model."],
        source=SourceInfo(
            collection="articles_v1",
            vector_name=None,
            size=384,
            distance="Cosine",
            points=240,
            sample_ids=[1, "5b0f6a5e-8d0c-4d57-9b1c-2a5b8d3c7e11"],
            text_coverage=0.75,
            lineage=Lineage(provider="local", model="all-MiniLM-L6-v2", dimensions=384),
        ),
        target_collection="articles_v1__hash-new__v1",
        target_dimension=64,
        target_lineage=Lineage(provider="hashing", model="hash-new", strategy="full_reembed"),
        spec=spec,
        estimate=Estimate(points=240, tokens=8000, cost_usd=0.5, creates=["articles_v1__x"]),
    )


def _record(status: MigrationStatus = S.LOADING, **changes: Any) -> MigrationRecord:
    record = MigrationRecord(
        migration_id="mig-1",
        alias="articles",
        source_collection="articles_v1",
        status=status,
        strategy="full_reembed",
        target_collection="articles_v1__hash-new__v1",
    )
    return dataclasses.replace(record, **changes)


def test_a_migration_record_round_trips_through_the_store(store: StateStore) -> None:
    record = _record(
        S.SWAPPED,
        plan=_plan(),
        lineage=Lineage(provider="hashing", model="hash-new", dimensions=64),
        indexing_threshold=20000,
        swapped_at="2024-05-01T12:00:00+00:00",
        previous_collection="articles_v1",
        quantization={"before": "none", "after": "scalar_int8"},
        run_id="manual__2024-05-01T11:00:00+00:00",
        rejected_at="2024-04-30T09:00:00+00:00",
    )
    migrations = Migrations(store)
    migrations.put(record)

    got = migrations.get("mig-1")

    assert got == record
    assert got is not None and got.plan is not None
    assert got.status is S.SWAPPED and got.plan.strategy is Strategy.FULL_REEMBED
    assert got.plan.spec.provider_options == {"requests_per_minute": 100}
    doc = store.get(RecordKind.MIGRATION, "mig-1")
    assert doc is not None and doc["status"] == "swapped"  # stored as its plain value
    assert got.strategy is Strategy.FULL_REEMBED and type(doc["strategy"]) is str
    assert type(doc["plan"]["spec"]["strategy"]) is str
    assert doc["run_id"] == "manual__2024-05-01T11:00:00+00:00"
    assert doc["rejected_at"] == "2024-04-30T09:00:00+00:00"
    assert migrations.get("mig-2") is None
    assert Plan.from_dict(_plan().to_dict()) == _plan()


def test_records_written_before_the_plan_was_typed_still_load() -> None:
    old = {
        "migration_id": "mig-0",
        "alias": "articles",
        "source_collection": "articles_v1",
        "status": "ready",
        "written_by": "an older version",  # unknown fields are ignored
    }
    record = MigrationRecord.from_doc(old)
    assert record.status is S.READY and record.plan is None
    assert record.strategy is Strategy.FULL_REEMBED
    assert record.target_collection == "articles_v1"
    assert record.run_id is None and record.rejected_at is None  # fields added since


def test_all_and_require(store: StateStore) -> None:
    migrations = Migrations(store)
    migrations.put(_record(S.READY))
    migrations.put(_record(S.SWAPPED, migration_id="mig-2", alias="docs"))
    assert sorted(r.migration_id for r in migrations.all()) == ["mig-1", "mig-2"]
    assert [r.migration_id for r in migrations.all(alias="docs")] == ["mig-2"]
    assert [r.migration_id for r in migrations.all(status="ready")] == ["mig-1"]
    assert migrations.require("mig-2").alias == "docs"
    with pytest.raises(StatusError, match="No migration 'mig-3' is recorded"):
        migrations.require("mig-3")


@pytest.mark.parametrize(
    ("before", "after"),
    list(itertools.product(MigrationStatus, MigrationStatus)),
    ids=lambda s: str(s),
)
def test_status_machine(before: MigrationStatus, after: MigrationStatus) -> None:
    store = MemoryStateStore()
    migrations = Migrations(store)
    record = _record(before)
    migrations.put(record)
    stored = store.get(RecordKind.MIGRATION, "mig-1")

    if (before, after) in ALLOWED:
        done = migrations.transition(record, after, retired_at="2024-05-02T00:00:00+00:00")
        assert done.status is after and done.retired_at == "2024-05-02T00:00:00+00:00"
        assert migrations.get("mig-1") == done
        assert record.status is before  # the record given is not changed in place
    else:
        with pytest.raises(StatusError, match=f"is {before.value}; it cannot become {after}"):
            migrations.transition(record, after)
        assert store.get(RecordKind.MIGRATION, "mig-1") == stored  # nothing was changed


def test_the_status_machine_is_the_documented_one() -> None:
    allowed = {(a, b) for a, targets in state_module.TRANSITIONS.items() for b in targets}
    assert allowed == ALLOWED
    assert set(state_module.TRANSITIONS) == set(MigrationStatus)
    # a quantization change happens in place: no target, nothing to swap, roll back or retire
    assert not state_module.TRANSITIONS[S.QUANTIZED]
    assert not state_module.TRANSITIONS[S.RETIRED]
    # a fresh target is recorded at LOADING, never transitioned to it
    assert all(S.LOADING not in targets for targets in state_module.TRANSITIONS.values())
    assert {s for s in MigrationStatus if s.kept_in_sync} == {S.READY, S.SWAPPED, S.ROLLED_BACK}
    # a rejected migration ended: the catch-up DAG leaves it alone until a new run
    assert not S.REJECTED.kept_in_sync and S.REJECTED.value == "rejected"


def test_a_rejected_migration_can_run_again_or_be_retired(store: StateStore) -> None:
    migrations = Migrations(store)
    migrations.put(_record())
    ready = migrations.transition(migrations.require("mig-1"), S.READY, run_id="run-1")
    rejected = migrations.transition(
        ready, S.REJECTED, rejected_at="2024-05-02T00:00:00+00:00", run_id=None
    )
    assert migrations.require("mig-1") == rejected
    assert (rejected.rejected_at, rejected.run_id) == ("2024-05-02T00:00:00+00:00", None)
    for refused in (S.SWAPPED, S.ROLLED_BACK, S.REJECTED):  # never swapped without a new run
        with pytest.raises(StatusError, match=f"is rejected; it cannot become {refused}"):
            migrations.transition(rejected, refused)
    again = migrations.transition(rejected, S.READY, run_id="run-2")
    assert again.rejected_at == rejected.rejected_at  # history kept
    assert migrations.transition(again, S.SWAPPED).status is S.SWAPPED
    retired = migrations.transition(rejected, S.RETIRED)
    assert retired.status is S.RETIRED


def test_a_whole_life_swap_rollback_and_retire(store: StateStore) -> None:
    migrations = Migrations(store)
    migrations.put(_record())
    record = migrations.require("mig-1")
    for status, changes in [
        (S.READY, {}),
        (S.SWAPPED, {"swapped_at": "t1", "previous_collection": "articles_v1"}),
        (S.ROLLED_BACK, {"rolled_back_at": "t2"}),
        (S.READY, {}),
        (S.SWAPPED, {"swapped_at": "t3"}),
        (S.RETIRED, {"retired_at": "t4", "deleted_collection": "articles_v1"}),
    ]:
        record = migrations.transition(record, status, **changes)
    final = migrations.require("mig-1")
    assert final == record
    assert (final.status, final.swapped_at, final.rolled_back_at) == (S.RETIRED, "t3", "t2")
    assert final.deleted_collection == "articles_v1"
    with pytest.raises(StatusError):
        migrations.transition(final, S.READY)


def test_a_server_store_scans_by_indexed_fields(qdrant_server: QdrantServer) -> None:  # noqa: F811
    """The UI scans kinds and migrations on every refresh: a server answers from indexes."""
    qdrant_server.reset()
    with open_client(qdrant_server.settings()) as client:
        store = QdrantStateStore(client)
        store.put(RecordKind.MIGRATION, "mig-1", {"migration_id": "mig-1"})
        schema = client.get_collection(STATE_COLLECTION).payload_schema
        assert set(state_module.INDEXED_FIELDS) <= set(schema)
        client.delete_payload_index(STATE_COLLECTION, "kind", wait=True)  # an older store
        QdrantStateStore(client).ensure_indexes()
        assert "kind" in client.get_collection(STATE_COLLECTION).payload_schema
        assert [d["migration_id"] for d in store.scan(RecordKind.MIGRATION)] == ["mig-1"]
