"""The one home for migration state: the store, its record kinds, their schema versions,
and a typed repository per kind.

* ``store.py``: documents by ``(kind, key)`` in the ``qdrant_migration_state`` collection
  (or in memory, for unit tests);
* ``repository.py``: one generic repository, records in and out through the codec
  (``include/qdrant_migration/codec.py``);
* ``schemas.py``: each kind's schema version and the upgrades of older records;
* the records that belong to no single module: migrations (and their status machine),
  leases and reports. The others live beside the code that writes them, each with its
  repository: ``Checkpoints`` (sync/backfill.py), ``PartitionPlans``
  (sync/partitions.py), ``Skips`` (sync/skips.py), ``Watermarks`` and ``CatchUpPasses``
  (sync/catchup.py), ``LinearMaps`` and ``LinearMapChunks`` (linear_map.py).
"""

from __future__ import annotations

from include.qdrant_migration.state.leases import LeaseRecord, Leases
from include.qdrant_migration.state.migrations import (
    TRANSITIONS,
    MigrationRecord,
    Migrations,
    MigrationStatus,
    StatusError,
)
from include.qdrant_migration.state.reports import ReportRecord, Reports
from include.qdrant_migration.state.repository import Repository
from include.qdrant_migration.state.schemas import NewerSchemaError
from include.qdrant_migration.state.store import (
    INDEXED_FIELDS,
    STATE_COLLECTION,
    Doc,
    MemoryStateStore,
    QdrantStateStore,
    RecordKind,
    StateStore,
    now_iso,
    record_id,
)

__all__ = [
    "INDEXED_FIELDS",
    "STATE_COLLECTION",
    "TRANSITIONS",
    "Doc",
    "LeaseRecord",
    "Leases",
    "MemoryStateStore",
    "MigrationRecord",
    "MigrationStatus",
    "Migrations",
    "NewerSchemaError",
    "QdrantStateStore",
    "RecordKind",
    "ReportRecord",
    "Reports",
    "Repository",
    "StateStore",
    "StatusError",
    "now_iso",
    "record_id",
]
