"""Migration records and their status machine, through both stores (the embedded store on
disk, and the in-memory one of unit tests)."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest

from include.qdrant_migration import codec
from include.qdrant_migration import state as state_module
from include.qdrant_migration.plan import Estimate, Lineage, Plan, SourceInfo
from include.qdrant_migration.spec import MigrationSpec, Strategy
from include.qdrant_migration.state import (
    MemoryStateStore,
    MigrationRecord,
    Migrations,
    MigrationStatus,
    RecordKind,
    StateStore,
    StatusError,
)

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
        strategy=Strategy.FULL_REEMBED,
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
    assert doc["schema"] == 2
    assert migrations.get("mig-2") is None
    assert codec.decode(Plan, codec.encode(_plan())) == _plan()


def test_records_written_before_the_plan_was_typed_still_load(store: StateStore) -> None:
    old = {
        "migration_id": "mig-0",
        "alias": "articles",
        "source_collection": "articles_v1",
        "status": "ready",
        "written_by": "an older version",  # unknown fields are ignored
    }
    store.put(RecordKind.MIGRATION, "mig-0", old)  # no schema version: version 1
    record = Migrations(store).require("mig-0")
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
