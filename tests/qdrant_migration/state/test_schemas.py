"""Schema versions: every record is written with its kind's version, older ones are upgraded
when read, and a newer one is refused. The whole of a release's records is read in
test_release_records.py; here each upgrade is shown on the smallest record it applies to."""

from __future__ import annotations

from typing import Any

import pytest

from include.qdrant_migration.spec import Strategy
from include.qdrant_migration.state import (
    LeaseRecord,
    Leases,
    MemoryStateStore,
    MigrationRecord,
    Migrations,
    MigrationStatus,
    NewerSchemaError,
    RecordKind,
    Repository,
)
from include.qdrant_migration.state.schemas import SCHEMAS, version_of
from include.qdrant_migration.sync.catchup import (
    CatchUpPasses,
    CatchUpResult,
    LastPass,
    Watermark,
    Watermarks,
)

#: The version each kind is written at. Raising one needs an upgrade in schemas.py, and
#: this line changed with it: a shape must never change under the same number.
CURRENT = {
    RecordKind.MIGRATION: 2,
    RecordKind.PARTITION_PLAN: 1,
    RecordKind.CHECKPOINT: 1,
    RecordKind.SKIP: 1,
    RecordKind.WATERMARK: 2,
    RecordKind.CATCH_UP: 2,
    RecordKind.LEASE: 2,
    RecordKind.REPORT: 1,
    RecordKind.LINEAR_MAP: 2,
    RecordKind.LINEAR_MAP_CHUNK: 1,
}


def test_every_kind_has_a_schema_and_its_version_counts_its_upgrades() -> None:
    assert set(SCHEMAS) == set(RecordKind)
    assert {kind: version_of(kind) for kind in RecordKind} == CURRENT


def _record() -> MigrationRecord:
    return MigrationRecord(
        migration_id="mig-1",
        alias="articles",
        source_collection="articles_v1",
        status=MigrationStatus.LOADING,
        strategy=Strategy.FULL_REEMBED,
        target_collection="articles_v1__new__v1",
    )


def test_a_record_is_written_with_its_version_and_read_without_it() -> None:
    store = MemoryStateStore()
    Migrations(store).put(_record())
    doc = store.get(RecordKind.MIGRATION, "mig-1")
    assert doc is not None and doc["schema"] == 2
    assert Migrations(store).get("mig-1") == _record()


@pytest.mark.parametrize("found", [3, 99])
def test_a_record_of_a_newer_version_is_refused_and_left_alone(found: int) -> None:
    store = MemoryStateStore()
    Migrations(store).put(_record())
    newer: dict[str, Any] = dict(store.get(RecordKind.MIGRATION, "mig-1") or {})
    newer |= {"schema": found, "renamed_in_the_future": "x"}
    store.put(RecordKind.MIGRATION, "mig-1", newer)
    with pytest.raises(NewerSchemaError) as refused:
        Migrations(store).get("mig-1")
    message = str(refused.value)
    assert f"The migration record 'mig-1' was written with schema version {found}" in message
    assert "reads migration records up to version 2: a newer release wrote it" in message
    assert "Run that release or a later one everywhere this store is used" in message
    assert "Nothing was read or changed." in message
    with pytest.raises(NewerSchemaError):
        list(Migrations(store).all())
    assert store.get(RecordKind.MIGRATION, "mig-1") == newer


@pytest.mark.parametrize("bad", [0, "2", None, True])
def test_a_bad_version_is_refused(bad: object) -> None:
    store = MemoryStateStore()
    store.put(RecordKind.LEASE, "run/mig-1", {"schema": bad, "owner": "x"})
    with pytest.raises(NewerSchemaError, match="has a bad schema version"):
        Leases(store).get("run/mig-1")


# -- the upgrades from version 1 (the releases up to ea95164), one kind each ------------------


def test_migration_v1_of_a_release_before_strategies_is_a_full_reembed_of_its_source() -> None:
    store = MemoryStateStore()
    store.put(
        RecordKind.MIGRATION,
        "mig-0",
        {"migration_id": "mig-0", "alias": "a", "source_collection": "a_v1", "status": "ready"},
    )
    record = Migrations(store).require("mig-0")
    assert (record.strategy, record.target_collection, record.plan) == (
        Strategy.FULL_REEMBED,
        "a_v1",
        None,
    )


def test_watermark_v1_takes_its_migration_and_direction_from_its_key() -> None:
    store = MemoryStateStore()
    since = "2026-11-30T11:55:00.123456+00:00"
    store.put(
        RecordKind.WATERMARK,
        "mig-1/mirror",
        {"since": since, "field": "updated_at", "at": "2026-11-30T12:00:00+00:00"},
    )
    mark = Watermarks(store).get("mig-1/mirror")
    assert mark == Watermark("mig-1", "mirror", since, "updated_at", "2026-11-30T12:00:00+00:00")
    Watermarks(store).put(mark)
    assert store.get(RecordKind.WATERMARK, "mig-1/mirror") == {
        "migration_id": "mig-1",
        "direction": "mirror",
        "since": since,
        "updated_at_field": "updated_at",
        "at": "2026-11-30T12:00:00+00:00",
        "schema": 2,
    }


def test_catch_up_v1_holds_its_result_beside_its_own_fields() -> None:
    store = MemoryStateStore()
    flat = {
        "migration_id": "mig-1",
        "at": "2026-11-30T12:00:00+00:00",
        "mode": "watermark",
        "direction": "forward",
        "inserted": 2,
        "cut": "2026-11-30T11:59:58+00:00",
        "skipped_by_reason": {"empty": 1},
    }
    store.put(RecordKind.CATCH_UP, "mig-1/forward", flat)
    last = CatchUpPasses(store).last("mig-1", "forward")
    result = CatchUpResult(
        mode="watermark",
        inserted=2,
        cut="2026-11-30T11:59:58+00:00",
        skipped_by_reason={"empty": 1},
    )
    assert last == LastPass("mig-1", "forward", result, "2026-11-30T12:00:00+00:00")
    CatchUpPasses(store).put(last)
    doc = store.get(RecordKind.CATCH_UP, "mig-1/forward")
    assert doc is not None and doc["schema"] == 2 and doc["result"]["inserted"] == 2


def test_lease_v1_takes_its_name_from_its_key() -> None:
    store = MemoryStateStore()
    store.put(
        RecordKind.LEASE,
        "writer/mig-1",
        {"owner": "dag/run", "since": "2026-11-30T12:00:00+00:00", "renewed": 1.0, "expires": 2.5},
    )
    assert Leases(store).get("writer/mig-1") == LeaseRecord(
        "writer/mig-1", "dag/run", "2026-11-30T12:00:00+00:00", 1.0, 2.5
    )
    # an expired version-1 lease is taken over like any other
    assert Leases(store).try_acquire("writer/mig-1", "dag/next", 60, now=10.0)
    doc = store.get(RecordKind.LEASE, "writer/mig-1")
    assert doc is not None and (doc["owner"], doc["name"], doc["schema"]) == (
        "dag/next",
        "writer/mig-1",
        2,
    )


def test_a_repository_reads_only_its_own_kind() -> None:
    store = MemoryStateStore()
    Migrations(store).put(_record())
    other: Repository[MigrationRecord] = Repository(store, RecordKind.REPORT, MigrationRecord)
    assert other.get("mig-1") is None and list(other.scan()) == []
