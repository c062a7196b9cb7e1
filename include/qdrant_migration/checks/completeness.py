"""Is the target complete as of the last catch-up, while the source keeps changing?

The application keeps writing, so the two collections are never equal at one instant.
What must hold is that the target is what the catch-up made it: every point either
agrees with the source, or differs only because the source changed after the catch-up
copied it (the **lag**: writes the next pass will copy). A target point that differs
from what the catch-up recorded writing (:mod:`..sync.fingerprints`) was changed by
something else (**damaged**: deleted, altered, or written where nothing was copied), and
the check fails.

All three collections are streamed once in Qdrant's id order: flat memory whatever
their size, a few example ids kept. Points the migration recorded as skipped (no usable
text) are accounted for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration.checks import CheckFailedError
from include.qdrant_migration.layout import Carried
from include.qdrant_migration.plan import Plan
from include.qdrant_migration.qdrant import PointId, scroll_all
from include.qdrant_migration.state import StateStore
from include.qdrant_migration.sync.fingerprints import Fingerprints, align
from include.qdrant_migration.sync.skips import skipped_ids

EXAMPLES = 10


@dataclass(frozen=True)
class Completeness:
    source_points: int
    target_points: int
    #: Source points changed (inserted, edited, deleted) since the catch-up copied them.
    lag: int = 0
    lag_examples: list[PointId] = field(default_factory=list)
    #: Target points that are not what the catch-up wrote.
    damaged: int = 0
    damaged_examples: list[PointId] = field(default_factory=list)
    skipped: int = 0
    points_without_vector: int = 0


@dataclass
class _Tally:
    source_points: int = 0
    target_points: int = 0
    lag: int = 0
    damaged: int = 0
    skipped: int = 0
    lag_examples: list[PointId] = field(default_factory=list)
    damaged_examples: list[PointId] = field(default_factory=list)

    def add_lag(self, here: PointId) -> None:
        self.lag += 1
        if len(self.lag_examples) < EXAMPLES:
            self.lag_examples.append(here)

    def add_damage(self, here: PointId) -> None:
        self.damaged += 1
        if len(self.damaged_examples) < EXAMPLES:
            self.damaged_examples.append(here)


def compare(
    client: QdrantClient,
    source: str,
    target: str,
    state: StateStore,
    migration_id: str,
    carried: Carried | None = None,
) -> _Tally:
    """Sort every point into agreeing, lag, skipped or damaged (payloads and, with
    ``carried``, the carried vectors: see ``layout.Carried``)."""
    carried = carried or Carried()
    skips = skipped_ids(state, migration_id)
    tally = _Tally()
    vectors = carried.read()
    triples = align(
        scroll_all(client, source, with_payload=True, with_vectors=vectors),
        scroll_all(client, target, with_payload=True, with_vectors=vectors),
        Fingerprints(client, migration_id).stream(),
    )
    for here, src, tgt, recorded in triples:
        tally.source_points += src is not None
        tally.target_points += tgt is not None
        s = carried.state(src) if src is not None else None
        t = carried.state(tgt) if tgt is not None else None
        if s == t:
            continue
        if tgt is None and s == recorded and str(here) in skips:
            tally.skipped += 1
        elif t == recorded or (tgt is None and (recorded is None or str(here) in skips)):
            tally.add_lag(here)  # the source moved on since the copy (or is new)
        else:
            tally.add_damage(here)
    return tally


def points_without_vector(client: QdrantClient, collection: str, vector_name: str | None) -> int:
    condition = qm.HasVectorCondition(has_vector=vector_name or "")
    return client.count(collection, count_filter=qm.Filter(must_not=[condition]), exact=True).count


def measure(client: QdrantClient, plan: Plan, state: StateStore) -> Completeness:
    """The target of ``plan`` against its source, as of the last catch-up."""
    target = plan.target_collection
    tally = compare(client, plan.source.collection, target, state, plan.migration_id, plan.carried)
    return Completeness(
        source_points=tally.source_points,
        target_points=tally.target_points,
        lag=tally.lag,
        lag_examples=tally.lag_examples,
        damaged=tally.damaged,
        damaged_examples=tally.damaged_examples,
        skipped=tally.skipped,
        points_without_vector=points_without_vector(client, target, plan.vector_name),
    )


def require_complete(plan: Plan, found: Completeness) -> None:
    """Refuse a target something else changed, or that has points without a vector."""
    target = plan.target_collection
    if found.damaged:
        raise CheckFailedError(
            f"{found.damaged} points of {target!r} are not what the catch-up wrote (e.g. ids "
            f"{found.damaged_examples}): something else deleted or changed them. Waiting "
            "will not repair them; clear this run's catch_up task to copy them again (it "
            "puts back what it finds changed), or delete the target and re-run the migration."
        )
    if found.points_without_vector:
        raise CheckFailedError(
            f"{found.points_without_vector} points of {target!r} have no vector."
        )
