"""Hand-made progress records of a migration, as the backfill writes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from include.qdrant_migration.spec import Strategy
from include.qdrant_migration.state import (
    MemoryStateStore,
    MigrationRecord,
    Migrations,
    MigrationStatus,
)
from include.qdrant_migration.sync.checkpoints import Checkpoint, Checkpoints
from include.qdrant_migration.sync.partitions import Partition, PartitionPlan, PartitionPlans

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
        strategy=Strategy.FULL_REEMBED,
        target_collection="docs_v1__m__v1",
    )
    Migrations(store).put(record)
    parts = [Partition(i, None, None, 100, "f1", "mig-1", of=2) for i in range(2)]
    PartitionPlans(store).put(PartitionPlan("mig-1", "f1", "docs_v1", 100, 200, parts))
    checkpoints = Checkpoints(store)
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
        checkpoints.put(checkpoint)
    # A stale plan's checkpoint is not counted.
    checkpoints.put(Checkpoint("mig-1", "f0", 0, done_points=77, history=[[at(0), 77]]))
    return record
