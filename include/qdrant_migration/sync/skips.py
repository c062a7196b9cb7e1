"""Points left out on purpose (no usable text, no stored vector), each with its reason.

The backfill and catch-up record every point they skip; the completeness check counts a
recorded skip as accounted for, not as missing; the report lists the reasons. A point
whose text becomes usable again is embedded and its skip record removed.
"""

from __future__ import annotations

from collections.abc import Iterable

from include.qdrant_migration.qdrant import PointId
from include.qdrant_migration.state import RecordKind, StateStore


def _key(migration_id: str, point: PointId) -> str:
    return f"{migration_id}/{point}"


def skipped_ids(state: StateStore, migration_id: str) -> set[str]:
    """Ids (as strings) of the points a migration recorded as skipped."""
    return {str(doc["point_id"]) for doc in state.scan(RecordKind.SKIP, migration_id=migration_id)}


def record_skips(
    state: StateStore, migration_id: str, skipped: Iterable[tuple[PointId, str]]
) -> None:
    for point, reason in skipped:
        state.put(
            RecordKind.SKIP,
            _key(migration_id, point),
            {"migration_id": migration_id, "point_id": point, "reason": reason},
        )


def forget_skip(state: StateStore, migration_id: str, point: PointId) -> None:
    """The point has usable text now (it was embedded): it is no longer a skip."""
    state.delete(RecordKind.SKIP, _key(migration_id, point))


def examples(state: StateStore, migration_id: str, per_reason: int = 5) -> dict[str, list[PointId]]:
    """The first ``per_reason`` recorded skips of each reason (for the report)."""
    found: dict[str, list[PointId]] = {}
    for doc in state.scan(RecordKind.SKIP, migration_id=migration_id):
        ids = found.setdefault(str(doc.get("reason", "unknown")), [])
        if len(ids) < per_reason:
            ids.append(doc["point_id"])
    return found
