"""plan_partitions: split the source's id space into ranges for the mapped backfill tasks.

Planning reads ids only (no payloads, no vectors) and keeps only the boundaries, so a
10M-point collection costs a few hundred small records, not 10M ids in memory. The plan is
stored with a fingerprint; a resumed run reuses its own plan, and checkpoints are keyed by
that fingerprint so offsets from a different plan can never be mixed in.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import ClassVar

from qdrant_client import QdrantClient

from include.qdrant_migration.plan import Plan
from include.qdrant_migration.qdrant import PointId, id_key, scroll_ids
from include.qdrant_migration.state import RecordKind, Repository, StateStore, now_iso

log = logging.getLogger(__name__)

#: Airflow refuses to map more than ``[core] max_map_length`` (default 1024) task instances.
MAX_PARTITIONS = 1000


@dataclass(frozen=True)
class Partition:
    """Points with ``start <= id < end`` (None: open end)."""

    index: int
    start: PointId | None
    end: PointId | None
    points: int
    fingerprint: str
    migration_id: str
    #: How many partitions the plan has (to share a provider budget among parallel tasks).
    of: int = 1
    #: Encoded beside the fields (the DAG names each mapped task by it).
    encoded_properties: ClassVar[tuple[str, ...]] = ("label",)

    @property
    def label(self) -> str:
        return f"#{self.index} [{_short(self.start)} .. {_short(self.end)}) ~{self.points} pts"

    def contains(self, point_id: PointId) -> bool:
        return self.end is None or id_key(point_id) < id_key(self.end)


@dataclass(frozen=True)
class PartitionPlan:
    """A migration's partitions, and the fingerprint its checkpoints are keyed by."""

    migration_id: str
    fingerprint: str
    source_collection: str
    points_per_partition: int
    total_points: int
    partitions: list[Partition] = field(default_factory=list)
    created_at: str = field(default_factory=now_iso)

    @property
    def key(self) -> str:
        return self.migration_id


class PartitionPlans(Repository[PartitionPlan]):
    """The partition plans of a store: one per migration (its current target's)."""

    def __init__(self, store: StateStore) -> None:
        super().__init__(store, RecordKind.PARTITION_PLAN, PartitionPlan)


def _short(point_id: PointId | None) -> str:
    if point_id is None:
        return "…"
    text = str(point_id)
    return text if len(text) <= 10 else text[:8] + "…"


def compute_boundaries(
    client: QdrantClient, collection: str, points_per_partition: int
) -> tuple[list[PointId], list[int]]:
    """Start ids of each partition after the first, and the point count of each."""
    boundaries: list[PointId] = []
    counts: list[int] = [0]
    for point_id in scroll_ids(client, collection):
        if counts[-1] == points_per_partition:
            boundaries.append(point_id)
            counts.append(0)
        counts[-1] += 1
    return boundaries, counts


def plan_partitions(
    client: QdrantClient,
    state: StateStore,
    *,
    migration_id: str,
    source_collection: str,
    points_per_partition: int,
    expected_points: int,
) -> list[Partition]:
    """The migration's partition plan: the stored one if it exists, else a new one.

    ``points_per_partition`` grows when needed to stay under :data:`MAX_PARTITIONS`.
    """
    plans = PartitionPlans(state)
    stored = plans.get(migration_id)
    if stored is not None:
        log.info("Reusing partition plan %s of %s", stored.fingerprint, migration_id)
        return stored.partitions

    minimum = -(-expected_points // MAX_PARTITIONS)
    if points_per_partition < minimum:
        log.warning(
            "points_per_partition=%d would map more than %d tasks; using %d",
            points_per_partition,
            MAX_PARTITIONS,
            minimum,
        )
        points_per_partition = minimum
    boundaries, counts = compute_boundaries(client, source_collection, points_per_partition)
    while len(counts) > MAX_PARTITIONS:  # the source grew since it was counted
        points_per_partition = -(-sum(counts) // MAX_PARTITIONS)
        boundaries, counts = compute_boundaries(client, source_collection, points_per_partition)
    fingerprint = hashlib.sha256(
        json.dumps(
            [source_collection, points_per_partition, boundaries, counts], default=str
        ).encode()
    ).hexdigest()[:16]
    starts: list[PointId | None] = [None, *boundaries]
    ends: list[PointId | None] = [*boundaries, None]
    partitions = [
        Partition(i, start, end, count, fingerprint, migration_id, len(counts))
        for i, (start, end, count) in enumerate(zip(starts, ends, counts, strict=True))
    ]
    plans.put(
        PartitionPlan(
            migration_id=migration_id,
            fingerprint=fingerprint,
            source_collection=source_collection,
            points_per_partition=points_per_partition,
            total_points=sum(counts),
            partitions=partitions,
        )
    )
    log.info(
        "Planned %d partitions of ~%d points (%s)",
        len(partitions),
        points_per_partition,
        fingerprint,
    )
    return partitions


def partitions_for(client: QdrantClient, state: StateStore, plan: Plan) -> list[Partition]:
    """The partition plan of a migration, sized by its ``points_per_partition`` param."""
    return plan_partitions(
        client,
        state,
        migration_id=plan.migration_id,
        source_collection=plan.source.collection,
        points_per_partition=plan.spec.points_per_partition,
        expected_points=plan.source.points,
    )
