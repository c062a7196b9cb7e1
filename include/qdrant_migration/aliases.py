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

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration.state import (
    MigrationRecord,
    Migrations,
    MigrationStatus,
    StateStore,
    StatusError,
    now_iso,
)

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


def swap_alias(client: QdrantClient, state: StateStore, record: MigrationRecord) -> AliasMove:
    """Move the migration's alias from its source to its target, and record the swap."""
    migrations = Migrations(state)
    if record.status is not MigrationStatus.READY:
        raise StatusError(
            f"Migration {record.migration_id} is {record.status.value}, not ready: its target "
            "is not known to be complete and caught up, so the alias stays."
        )
    source, target = record.source_collection, record.target_collection
    move_alias(client, record.alias, expected=source, new=target)
    done = migrations.transition(
        record, MigrationStatus.SWAPPED, swapped_at=now_iso(), previous_collection=source
    )
    return AliasMove(
        record.alias, source, target, record.migration_id, "swap", str(done.swapped_at)
    )


class LifecycleError(RuntimeError):
    """A rollback or retire cannot be done as asked; nothing was changed."""


def _swapped_migration(state: StateStore, alias: str, current: str | None) -> MigrationRecord:
    for record in Migrations(state).all(alias=alias):
        if record.status is MigrationStatus.SWAPPED and record.target_collection == current:
            return record
    raise LifecycleError(
        f"No swapped migration moved alias {alias!r} to its current collection {current!r}; "
        "there is nothing to roll back."
    )


def rollback(client: QdrantClient, state: StateStore, *, alias: str) -> AliasMove:
    """Point ``alias`` back at the collection it served before the last swap, atomically."""
    current = current_target(client, alias)
    record = _swapped_migration(state, alias, current)
    assert current is not None
    previous = record.previous_collection or record.source_collection
    move_alias(client, alias, expected=current, new=previous)
    done = Migrations(state).transition(
        record, MigrationStatus.ROLLED_BACK, rolled_back_at=now_iso()
    )
    return AliasMove(
        alias, current, previous, record.migration_id, "rollback", str(done.rolled_back_at)
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
    migrations.transition(
        record, MigrationStatus.RETIRED, retired_at=now_iso(), deleted_collection=victim
    )
    return {"migration_id": migration_id, "deleted": victim}
