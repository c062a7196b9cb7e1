"""The record of points left out on purpose: one record per point and migration."""

from __future__ import annotations

from include.qdrant_migration.state import (
    RecordKind,
    StateStore,
)
from include.qdrant_migration.sync.skips import Skip, Skips, forget_skip, record_skips, skipped_ids
from include.qdrant_migration.texts import EMPTY, MISSING

UUID = "5b0f6a5e-8d0c-4d57-9b1c-2a5b8d3c7e11"


def test_skips_are_recorded_per_migration_with_their_reason(store: StateStore) -> None:
    assert skipped_ids(store, "mig-1") == set()
    record_skips(store, "mig-1", [(3, MISSING), (UUID, EMPTY)])
    record_skips(store, "mig-2", [(3, EMPTY)])

    assert skipped_ids(store, "mig-1") == {"3", UUID}  # as strings, whatever the id type
    assert skipped_ids(store, "mig-2") == {"3"}
    assert Skips(store).get("mig-1/3") == Skip("mig-1", 3, MISSING)
    doc = store.get(RecordKind.SKIP, "mig-1/3")  # as stored: the shape of version 1
    assert doc == {"migration_id": "mig-1", "point_id": 3, "reason": MISSING, "schema": 1}
    # recording a point again replaces its record (a retried batch): no duplicates
    record_skips(store, "mig-1", [(3, EMPTY)])
    skips = list(Skips(store).of("mig-1"))
    assert sorted((str(s.point_id), s.reason) for s in skips) == [("3", EMPTY), (UUID, EMPTY)]


def test_forget_skip_removes_only_that_point_of_that_migration(store: StateStore) -> None:
    record_skips(store, "mig-1", [(3, MISSING), (4, MISSING)])
    record_skips(store, "mig-2", [(3, MISSING)])

    forget_skip(store, "mig-1", 3)
    forget_skip(store, "mig-1", 99)  # never skipped: nothing to do

    assert skipped_ids(store, "mig-1") == {"4"}
    assert skipped_ids(store, "mig-2") == {"3"}
