"""Is every source point in the target, with a vector, and nothing else?

Both id streams are merged in Qdrant's id order, so the check streams each collection once
and holds only a few example ids in memory, whatever their size. Points the migration
recorded as skipped (no usable text) are accounted for, not missing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration.checks import CheckFailedError
from include.qdrant_migration.plan import Plan
from include.qdrant_migration.qdrant import PointId, id_key, scroll_ids
from include.qdrant_migration.state import StateStore
from include.qdrant_migration.sync.skips import skipped_ids

EXAMPLES = 10


@dataclass(frozen=True)
class Completeness:
    source_points: int
    target_points: int
    missing: int = 0
    missing_examples: list[PointId] = field(default_factory=list)
    skipped: int = 0
    extra: int = 0
    extra_examples: list[PointId] = field(default_factory=list)
    points_without_vector: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class _Tally:
    missing: int = 0
    skipped: int = 0
    extra: int = 0
    missing_examples: list[PointId] = field(default_factory=list)
    extra_examples: list[PointId] = field(default_factory=list)

    def source_only(self, point: PointId, skips: set[str]) -> None:
        if str(point) in skips:
            self.skipped += 1
            return
        self.missing += 1
        if len(self.missing_examples) < EXAMPLES:
            self.missing_examples.append(point)

    def target_only(self, point: PointId) -> None:
        self.extra += 1
        if len(self.extra_examples) < EXAMPLES:
            self.extra_examples.append(point)


def reconcile_ids(
    client: QdrantClient, source: str, target: str, state: StateStore, migration_id: str
) -> _Tally:
    """What is missing from the target, and what it has that the source does not."""
    skips = skipped_ids(state, migration_id)
    tally = _Tally()
    src, tgt = scroll_ids(client, source), scroll_ids(client, target)
    s, t = next(src, None), next(tgt, None)
    while s is not None or t is not None:
        if t is None or (s is not None and id_key(s) < id_key(t)):
            assert s is not None
            tally.source_only(s, skips)
            s = next(src, None)
        elif s is None or id_key(t) < id_key(s):
            tally.target_only(t)
            t = next(tgt, None)
        else:
            s, t = next(src, None), next(tgt, None)
    return tally


def points_without_vector(client: QdrantClient, collection: str, vector_name: str | None) -> int:
    condition = qm.HasVectorCondition(has_vector=vector_name or "")
    return client.count(collection, count_filter=qm.Filter(must_not=[condition]), exact=True).count


def measure(client: QdrantClient, plan: Plan, state: StateStore) -> Completeness:
    """Counts, the id reconciliation and vector-less points of ``plan``'s target."""
    target = plan.target_collection
    tally = reconcile_ids(client, plan.source.collection, target, state, plan.migration_id)
    return Completeness(
        source_points=client.count(plan.source.collection, exact=True).count,
        target_points=client.count(target, exact=True).count,
        missing=tally.missing,
        missing_examples=tally.missing_examples,
        skipped=tally.skipped,
        extra=tally.extra,
        extra_examples=tally.extra_examples,
        points_without_vector=points_without_vector(client, target, plan.vector_name),
    )


def require_complete(plan: Plan, found: Completeness) -> None:
    """Refuse a target that misses source points or has points without a vector."""
    target = plan.target_collection
    if found.missing:
        raise CheckFailedError(
            f"{found.missing} source points are missing from {target!r} (e.g. ids "
            f"{found.missing_examples}), not counting {found.skipped} recorded skips. "
            "The backfill and catch-up have finished, so waiting will not add them. Clear "
            "this run's catch_up task to copy them again; if the target was damaged, delete "
            "it and re-run the migration."
        )
    if found.points_without_vector:
        raise CheckFailedError(
            f"{found.points_without_vector} points of {target!r} have no vector."
        )
