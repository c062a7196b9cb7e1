"""swap_alias and rollback: move the application's alias in one atomic operation.

Qdrant applies every operation of one ``update_collection_aliases`` call atomically: the
alias is never missing and never points at two collections. Before moving it we check that
it still points where the migration found it, so a swap never undoes somebody else's move.
The old collection is left in place for rollback.
"""

from __future__ import annotations

import logging
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration.state import StateStore, now_iso

log = logging.getLogger(__name__)


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


def swap_alias(
    client: QdrantClient,
    state: StateStore,
    *,
    migration_id: str,
    alias: str,
    source: str,
    target: str,
) -> dict[str, Any]:
    move_alias(client, alias, expected=source, new=target)
    doc = state.get("migration", migration_id) or {"migration_id": migration_id}
    doc.update({"status": "swapped", "swapped_at": now_iso(), "previous_collection": source})
    state.put("migration", migration_id, doc)
    return {"alias": alias, "from": source, "to": target, "at": doc["swapped_at"]}
