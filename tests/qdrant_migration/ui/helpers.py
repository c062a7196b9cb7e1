"""Hand-made progress records of a migration, as the backfill writes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from include.qdrant_migration.state import (
    MemoryStateStore,
    MigrationRecord,
    Migrations,
    MigrationStatus,
    RecordKind,
)
from include.qdrant_migration.sync.backfill import Checkpoint

DAG = "qdrant_model_migration"
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat(timespec="seconds")


def loading(store: MemoryStateStore, histories: dict[int, list[list[Any]]]) -> MigrationRecord:
    """A migration of 2 x 100 points whose partitions reported ``histories``."""
    record = MigrationRecord(
        migration_id="mig-1",
        alias="docs",
        source_collection="docs_v1",
        status=MigrationStatus.LOADING,
        strategy="full_reembed",
        target_collection="docs_v1__m__v1",
    )
    Migrations(store).put(record)
    parts = [
        {"index": i, "points": 100, "label": f"#{i}", "start": None, "end": None} for i in range(2)
    ]
    store.put(
        RecordKind.PARTITION_PLAN,
        "mig-1",
        {"fingerprint": "f1", "total_points": 200, "partitions": parts},
    )
    for index, history in histories.items():
        checkpoint = Checkpoint(
            "mig-1",
            "f1",
            index,
            next_offset=history[-1][1] + 1,
            done_points=history[-1][1],
            embedded=history[-1][1],
            tokens=10 * history[-1][1],
            run_id="run-1",
            history=history,
            updated_at=history[-1][0],
        )
        store.put(RecordKind.CHECKPOINT, checkpoint.key, checkpoint.to_doc())
    # A stale plan's checkpoint is not counted.
    old = Checkpoint("mig-1", "f0", 0, done_points=77, history=[[at(0), 77]])
    store.put(RecordKind.CHECKPOINT, old.key, old.to_doc())
    return record
