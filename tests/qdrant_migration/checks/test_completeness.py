"""Completeness: every source point in the target with a vector, recorded skips accounted
for, extra points counted but allowed."""

from __future__ import annotations

import dataclasses

import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration.checks import CheckFailedError
from include.qdrant_migration.checks.completeness import (
    EXAMPLES,
    Completeness,
    measure,
    points_without_vector,
    reconcile_ids,
    require_complete,
)
from include.qdrant_migration.sync.skips import record_skips
from tests.qdrant_migration.hashed import HASH_DIMENSION
from tests.qdrant_migration.helpers import SEED_POINTS, Migrated

EXTRA_UUID = "5b0f6a5e-8d0c-4d57-9b1c-2a5b8d3c7e11"
VECTOR = [0.1] * HASH_DIMENSION


def test_reconcile_ids_finds_missing_extra_and_skipped(fast_migrated: Migrated) -> None:
    client, plan, state = fast_migrated.client, fast_migrated.plan, fast_migrated.state
    target = plan.target_collection
    client.delete(target, points_selector=[1, 50, 240], wait=True)
    record_skips(state, plan.migration_id, [(50, "empty")])
    client.upsert(
        target,
        [qm.PointStruct(id=100_000, vector=VECTOR), qm.PointStruct(id=EXTRA_UUID, vector=VECTOR)],
        wait=True,
    )
    tally = reconcile_ids(client, plan.source.collection, target, state, plan.migration_id)
    assert (tally.missing, tally.missing_examples) == (2, [1, 240])
    assert tally.skipped == 1
    # extra ids in Qdrant's order: integers before UUIDs
    assert (tally.extra, tally.extra_examples) == (2, [100_000, EXTRA_UUID])
    # a skip recorded by another migration does not excuse this one
    other = reconcile_ids(client, plan.source.collection, target, state, "mig-other")
    assert (other.missing, other.skipped) == (3, 0)


def test_examples_are_capped_but_counts_are_not(fast_migrated: Migrated) -> None:
    client, plan, state = fast_migrated.client, fast_migrated.plan, fast_migrated.state
    gone = list(range(101, 131))
    client.delete(plan.target_collection, points_selector=gone, wait=True)
    client.upsert(
        plan.target_collection,
        [qm.PointStruct(id=1000 + i, vector=VECTOR) for i in range(EXAMPLES + 5)],
        wait=True,
    )
    found = measure(client, plan, state)
    assert found.missing == 30 and found.missing_examples == gone[:EXAMPLES]
    assert found.extra == EXAMPLES + 5
    assert found.extra_examples == [1000 + i for i in range(EXAMPLES)]


def test_measure_a_complete_target(fast_migrated: Migrated) -> None:
    found = measure(fast_migrated.client, fast_migrated.plan, fast_migrated.state)
    assert found == Completeness(source_points=SEED_POINTS, target_points=SEED_POINTS)
    require_complete(fast_migrated.plan, found)  # does not raise


def test_measure_counts_what_the_target_lacks_and_holds_besides(fast_migrated: Migrated) -> None:
    client, plan, state = fast_migrated.client, fast_migrated.plan, fast_migrated.state
    client.delete(plan.target_collection, points_selector=[7, 8, 9], wait=True)
    record_skips(state, plan.migration_id, [(9, "empty text")])
    client.upsert(plan.target_collection, [qm.PointStruct(id=EXTRA_UUID, vector=VECTOR)])
    assert measure(client, plan, state) == Completeness(
        source_points=SEED_POINTS,
        target_points=SEED_POINTS - 2,
        missing=2,
        missing_examples=[7, 8],
        skipped=1,
        extra=1,
        extra_examples=[EXTRA_UUID],
        points_without_vector=0,
    )


def test_points_without_the_migrated_vector_are_counted() -> None:
    store = QdrantClient(":memory:")
    params = qm.VectorParams(size=2, distance=qm.Distance.COSINE)
    store.create_collection("named", vectors_config={"dense": params, "other": params})
    store.upsert(
        "named",
        [
            qm.PointStruct(id=1, vector={"dense": [1.0, 0.0]}),
            qm.PointStruct(id=2, vector={"other": [1.0, 0.0]}),
            qm.PointStruct(id=3, vector={}),
        ],
        wait=True,
    )
    assert points_without_vector(store, "named", "dense") == 2
    assert points_without_vector(store, "named", "other") == 2
    store.create_collection("plain", vectors_config=params)
    store.upsert("plain", [qm.PointStruct(id=1, vector=[1.0, 0.0])], wait=True)
    assert points_without_vector(store, "plain", None) == 0


def test_require_complete_refuses_missing_points_and_points_without_vector(
    fast_migrated: Migrated,
) -> None:
    plan = fast_migrated.plan
    target = plan.target_collection
    complete = Completeness(source_points=10, target_points=12, extra=2, skipped=3)
    require_complete(plan, complete)  # extra points and recorded skips are fine
    missing = dataclasses.replace(complete, missing=4, missing_examples=[1, 2, 3, 4])
    with pytest.raises(CheckFailedError) as error:
        require_complete(plan, missing)
    assert str(error.value).startswith(
        f"4 source points are missing from {target!r} (e.g. ids [1, 2, 3, 4]), not counting 3 "
        "recorded skips."
    )
    assert "Clear this run's catch_up task" in str(error.value)
    vectorless = dataclasses.replace(complete, points_without_vector=5)
    with pytest.raises(CheckFailedError, match=rf"^5 points of {target!r} have no vector\.$"):
        require_complete(plan, vectorless)
