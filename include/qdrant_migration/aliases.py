"""swap_alias and rollback: move the application's alias in one atomic operation.

Qdrant applies every operation of one ``update_collection_aliases`` call atomically: the
alias is never missing and never points at two collections. Before moving it we check that
it still points where the migration found it, so a swap never undoes somebody else's move.
The old collection is left in place for rollback.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration import codec
from include.qdrant_migration.state import (
    MigrationRecord,
    Migrations,
    MigrationStatus,
    StateStore,
    StatusError,
    now_iso,
)
from include.qdrant_migration.sync.catchup import CatchUp, CatchUpResult
from include.qdrant_migration.sync.fingerprints import Fingerprints

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AliasMove:
    """One atomic move of an alias: what a swap or a rollback did."""

    alias: str
    from_collection: str
    to_collection: str
    migration_id: str
    action: str
    at: str
    #: In place (the same collection): the active vector before and after.
    from_vector: str | None = None
    to_vector: str | None = None


class AliasMovedError(RuntimeError):
    """The alias no longer points where the migration expects; nothing was changed."""


def current_target(client: QdrantClient, alias: str) -> str | None:
    for item in client.get_aliases().aliases:
        if item.alias_name == alias:
            return str(item.collection_name)
    return None


def ensure_alias_at(client: QdrantClient, alias: str, expected: str) -> None:
    """Refuse, changing nothing, when the alias was moved since the migration was planned."""
    current = current_target(client, alias)
    if current != expected:
        raise AliasMovedError(
            f"Alias {alias!r} now points at {current!r}, not {expected!r} as when this migration "
            "was planned; somebody moved it. Nothing was changed. Re-run the migration from "
            "the alias's current collection if that is intended."
        )


def move_alias(client: QdrantClient, alias: str, *, expected: str, new: str) -> None:
    """Point ``alias`` from ``expected`` to ``new`` atomically, or refuse if it moved."""
    ensure_alias_at(client, alias, expected)
    if not client.collection_exists(new):
        raise AliasMovedError(f"Collection {new!r} does not exist; the alias was not moved.")
    client.update_collection_aliases(
        change_aliases_operations=[
            qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=alias)),
            qm.CreateAliasOperation(
                create_alias=qm.CreateAlias(collection_name=new, alias_name=alias)
            ),
        ]
    )
    log.info("Alias %s: %s -> %s", alias, expected, new)


class LifecycleError(RuntimeError):
    """A rollback or retire cannot be done as asked; nothing was changed."""


@dataclass(frozen=True)
class Switched:
    """What a swap or a rollback did: the move and the passes around it."""

    move: AliasMove
    final: CatchUpResult | None = None
    reconcile: CatchUpResult | None = None

    def to_dict(self) -> dict[str, Any]:
        """The swap_alias (or rollback) XCom: the move, and the passes around it."""
        return codec.encode_dict(self.move) | {
            "final_catch_up": codec.encode(self.final),
            "reconcile": codec.encode(self.reconcile),
        }


def switch(
    client: QdrantClient,
    state: StateStore,
    record: MigrationRecord,
    *,
    rollback: bool = False,
    final: CatchUp | None = None,
    reconcile: CatchUp | None = None,
) -> Switched:
    """Swap a READY migration's alias to its target, or roll a SWAPPED one back, losing nothing.

    ``final`` copies what changed in the served collection up to the move; the move is one
    atomic alias operation; ``reconcile`` then copies what the application wrote to the
    formerly served collection in between (the window) to the newly served one. A retry
    after a crash resumes where it stopped (the alias already moved, the status recorded).
    """
    if rollback:
        before, after = MigrationStatus.SWAPPED, MigrationStatus.ROLLED_BACK
        old, new = record.target_collection, record.previous_collection or record.source_collection
    else:
        before, after = MigrationStatus.READY, MigrationStatus.SWAPPED
        old, new = record.source_collection, record.target_collection
    current = current_target(client, record.alias)
    final_result = None
    if record.status is before and current != new:
        ensure_alias_at(client, record.alias, old)
        if not client.collection_exists(new):
            raise AliasMovedError(f"Collection {new!r} does not exist; the alias was not moved.")
        final_result = final.run() if final is not None else None
        move_alias(client, record.alias, expected=old, new=new)
    elif current != new or record.status not in (before, after):
        raise StatusError(
            f"Migration {record.migration_id} is {record.status.value} and {record.alias!r} "
            f"points at {current!r}: nothing to {'roll back' if rollback else 'swap'}. The "
            "alias stays."
        )
    if record.status is before:
        changes: dict[str, Any] = (
            {"rolled_back_at": now_iso()}
            if rollback
            else {"swapped_at": now_iso(), "previous_collection": old}
        )
        record = Migrations(state).transition(record, after, **changes)
    reconciled = reconcile.run() if reconcile is not None else None
    at = record.rolled_back_at if rollback else record.swapped_at
    move = AliasMove(
        record.alias, old, new, record.migration_id, "rollback" if rollback else "swap", str(at)
    )
    return Switched(move, final_result, reconciled)


def swapped_migration(client: QdrantClient, state: StateStore, alias: str) -> MigrationRecord:
    """The migration whose swap moved ``alias`` to the collection it serves now."""
    current = current_target(client, alias)
    for record in Migrations(state).all(alias=alias):
        if record.status is MigrationStatus.SWAPPED and record.target_collection == current:
            return record
    raise LifecycleError(
        f"No swapped migration moved alias {alias!r} to its current collection {current!r}; "
        "there is nothing to roll back."
    )


def retire(
    client: QdrantClient,
    state: StateStore,
    *,
    migration_id: str,
    observation_days: float,
    now: datetime | None = None,
) -> dict[str, str | bool | None]:
    """Delete the collection a migration left unused, and stop catching it up.

    After a swap that is the old collection, and only once the observation period has
    passed since the swap. Otherwise (rejected, rolled back) it is the new collection.
    A collection an alias points at is never deleted.
    """
    migrations = Migrations(state)
    record = migrations.get(migration_id)
    if record is None:
        raise LifecycleError(f"No migration {migration_id!r} is recorded.")
    if record.status is MigrationStatus.RETIRED:
        return {"migration_id": migration_id, "deleted": None, "already": True}
    if record.status is MigrationStatus.QUANTIZED:
        raise LifecycleError(
            f"{migration_id} changed the quantization of {record.source_collection!r} in "
            "place; it made no collection, so there is nothing to retire. To undo it, migrate "
            "again with the previous quantization."
        )
    if record.status is MigrationStatus.SWAPPED:
        victim = record.source_collection
        swapped_at = datetime.fromisoformat(str(record.swapped_at))
        ready = swapped_at + timedelta(days=observation_days)
        if (now or datetime.now(tz=UTC)) < ready:
            raise LifecycleError(
                f"{migration_id} swapped at {swapped_at:%Y-%m-%d %H:%M} UTC; its old collection "
                f"{victim!r} is kept for rollback until {ready:%Y-%m-%d %H:%M} UTC "
                f"(observation_days={observation_days})."
            )
    else:
        victim = record.target_collection
    serving = [a.alias_name for a in client.get_aliases().aliases if a.collection_name == victim]
    if serving:
        raise LifecycleError(
            f"Collection {victim!r} still serves alias(es) {', '.join(serving)}; not deleted."
        )
    if client.collection_exists(victim):
        client.delete_collection(victim)
    Fingerprints(client, migration_id).drop()  # nothing is kept in sync any more
    migrations.transition(
        record, MigrationStatus.RETIRED, retired_at=now_iso(), deleted_collection=victim
    )
    return {"migration_id": migration_id, "deleted": victim}
