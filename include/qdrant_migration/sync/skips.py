"""Points left out on purpose (no usable text, no stored vector), each with its reason.

The backfill and catch-up record every point they skip; the completeness check counts a
recorded skip as accounted for, not as missing; the report lists the reasons. A point
whose text becomes usable again is embedded and its skip record removed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from include.qdrant_migration.qdrant import PointId
from include.qdrant_migration.state import RecordKind, Repository, StateStore


@dataclass(frozen=True)
class Skip:
    """A point of a migration's scope left out, and why (a reason of ``texts.Skipped``)."""

    #: The migration, or one direction of it (``<migration>/mirror``: the old model's skips).
    migration_id: str
    point_id: PointId
    reason: str = "unknown"

    @property
    def key(self) -> str:
        return _key(self.migration_id, self.point_id)


class Skips(Repository[Skip]):
    """The skip records of a store."""

    def __init__(self, store: StateStore) -> None:
        super().__init__(store, RecordKind.SKIP, Skip)

    def of(self, migration_id: str) -> Iterable[Skip]:
        return self.scan(migration_id=migration_id)


def _key(migration_id: str, point: PointId) -> str:
    return f"{migration_id}/{point}"


def skipped_ids(state: StateStore, migration_id: str) -> set[str]:
    """Ids (as strings) of the points a migration recorded as skipped."""
    return {str(skip.point_id) for skip in Skips(state).of(migration_id)}


def record_skips(
    state: StateStore, migration_id: str, skipped: Iterable[tuple[PointId, str]]
) -> None:
    skips = Skips(state)
    for point, reason in skipped:
        skips.put(Skip(migration_id, point, reason))


def forget_skip(state: StateStore, migration_id: str, point: PointId) -> None:
    """The point has usable text now (it was embedded): it is no longer a skip."""
    Skips(state).delete(_key(migration_id, point))


def examples(state: StateStore, migration_id: str, per_reason: int = 5) -> dict[str, list[PointId]]:
    """The first ``per_reason`` recorded skips of each reason (for the report)."""
    found: dict[str, list[PointId]] = {}
    for skip in Skips(state).of(migration_id):
        ids = found.setdefault(skip.reason, [])
        if len(ids) < per_reason:
            ids.append(skip.point_id)
    return found
