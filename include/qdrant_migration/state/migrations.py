"""Migration records: one per migration, and the status machine that moves them."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from include.qdrant_migration.plan import Lineage, Plan
from include.qdrant_migration.spec import Strategy
from include.qdrant_migration.state.repository import Repository
from include.qdrant_migration.state.store import RecordKind, StateStore, now_iso

log = logging.getLogger(__name__)


class MigrationStatus(StrEnum):
    """Where a migration is in its life; :data:`TRANSITIONS` says where it may go next."""

    #: The target exists and is being filled.
    LOADING = "loading"
    #: The target is complete and caught up: waiting for approval.
    READY = "ready"
    #: The alias serves the target; the old collection is kept for rollback.
    SWAPPED = "swapped"
    #: The alias was moved back to the old collection.
    ROLLED_BACK = "rolled_back"
    #: The source's quantization was changed in place (no target).
    QUANTIZED = "quantized"
    #: The approval was rejected (or timed out): the migration ended, the alias stayed.
    REJECTED = "rejected"
    #: The unused collection was deleted; nothing more happens to this migration.
    RETIRED = "retired"

    @property
    def kept_in_sync(self) -> bool:
        """Whether the catch-up DAG keeps this migration's two collections level."""
        return self in (MigrationStatus.READY, MigrationStatus.SWAPPED, MigrationStatus.ROLLED_BACK)


_S = MigrationStatus
#: The status machine. A fresh target (a first run, or a rerun after the target was
#: deleted) always starts at LOADING; a new run of a rejected or rolled-back migration
#: makes it READY again once its target is caught up.
TRANSITIONS: dict[MigrationStatus, frozenset[MigrationStatus]] = {
    _S.LOADING: frozenset({_S.READY, _S.RETIRED}),
    _S.READY: frozenset({_S.READY, _S.SWAPPED, _S.REJECTED, _S.RETIRED}),
    _S.SWAPPED: frozenset({_S.ROLLED_BACK, _S.RETIRED}),
    _S.ROLLED_BACK: frozenset({_S.READY, _S.RETIRED}),
    _S.REJECTED: frozenset({_S.READY, _S.RETIRED}),
    _S.QUANTIZED: frozenset(),
    _S.RETIRED: frozenset(),
}


class StatusError(RuntimeError):
    """A migration cannot go from its status to the one asked for; nothing was changed."""


@dataclass
class MigrationRecord:
    """The one record of a migration: what it moves where, how far it is, and its history."""

    migration_id: str
    alias: str
    source_collection: str
    status: MigrationStatus
    strategy: Strategy
    #: The collection the new vectors go to (the source itself for a quantization change).
    target_collection: str
    #: The plan the migration runs on; the catch-up DAG works from it.
    plan: Plan | None = None
    lineage: Lineage = field(default_factory=lambda: Lineage())
    #: The source's indexing threshold, restored on the target once it is loaded.
    indexing_threshold: int | None = None
    created_at: str = field(default_factory=now_iso)
    swapped_at: str | None = None
    #: Where the alias pointed before the swap (what a rollback returns to).
    previous_collection: str | None = None
    rolled_back_at: str | None = None
    retired_at: str | None = None
    deleted_collection: str | None = None
    quantized_at: str | None = None
    #: What the quantization change did (its config before and after, its recall).
    quantization: dict[str, Any] | None = None
    #: The DAG run driving the migration now (None between runs): another run of the
    #: same migration stops instead of doing the same work twice.
    run_id: str | None = None
    rejected_at: str | None = None

    @property
    def key(self) -> str:
        return self.migration_id


class Migrations(Repository[MigrationRecord]):
    """The migration records of a store, and the only code that changes their status."""

    def __init__(self, store: StateStore) -> None:
        super().__init__(store, RecordKind.MIGRATION, MigrationRecord)

    def require(self, migration_id: str) -> MigrationRecord:
        record = self.get(migration_id)
        if record is None:
            raise StatusError(f"No migration {migration_id!r} is recorded.")
        return record

    def all(self, **match: str) -> Iterator[MigrationRecord]:
        return self.scan(**match)

    def transition(
        self, record: MigrationRecord, status: MigrationStatus, **changes: Any
    ) -> MigrationRecord:
        """Move ``record`` to ``status`` (with ``changes``) and store it, or refuse."""
        if status not in TRANSITIONS[record.status]:
            raise StatusError(
                f"Migration {record.migration_id} is {record.status.value}; it cannot become "
                f"{status.value}."
            )
        updated = dataclasses.replace(record, status=status, **changes)
        self.put(updated)
        log.info("Migration %s: %s -> %s", record.migration_id, record.status, status)
        return updated
