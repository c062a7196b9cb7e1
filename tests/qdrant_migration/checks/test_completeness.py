"""Completeness while the source keeps changing: the target as of the last catch-up.

A source point changed after the catch-up copied it (edited, inserted, deleted) is **lag**:
the next pass copies it, and the check passes. A target point that is not what the
backfill or the catch-up recorded writing (deleted, altered, written where nothing was
copied) is **damage**: waiting cannot repair it, and the check fails naming the ids.
"""

from __future__ import annotations

import dataclasses

import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration import codec
from include.qdrant_migration.checks import CheckFailedError
from include.qdrant_migration.checks.completeness import (
    EXAMPLES,
    Completeness,
    measure,
    points_without_vector,
    require_complete,
)
from include.qdrant_migration.sync.catchup import CatchUp, CatchUpJob, CatchUpResult
from include.qdrant_migration.sync.fingerprints import Fingerprints
from include.qdrant_migration.sync.skips import forget_skip, record_skips, skipped_ids
from tests.fakes import HashingProvider
from tests.qdrant_migration.hashed import HASH_DIMENSION
from tests.qdrant_migration.helpers import SEED_POINTS, Migrated

EXTRA_UUID = "5b0f6a5e-8d0c-4d57-9b1c-2a5b8d3c7e11"
VECTOR = [0.1] * HASH_DIMENSION


def _catch_up(migrated: Migrated, model: HashingProvider) -> CatchUpResult:
    """One forward catch-up pass, as the catch_up task runs it."""
    job = CatchUpJob.forward(migrated.plan, model)
    return CatchUp(migrated.client, job, migrated.state).run()


def _payload(client: QdrantClient, collection: str, point: int) -> dict[str, object]:
    return dict(client.retrieve(collection, [point], with_payload=True)[0].payload or {})


def _edit(client: QdrantClient, collection: str, point: int, **changes: object) -> None:
    """The application rewrites a point's payload (a text edit or a payload-only edit)."""
    client.overwrite_payload(
        collection, _payload(client, collection, point) | changes, points=[point], wait=True
    )


def _insert(client: QdrantClient, collection: str, point: int | str, text: str) -> None:
    client.upsert(
        collection, [qm.PointStruct(id=point, vector=VECTOR, payload={"text": text})], wait=True
    )


def _measure(migrated: Migrated) -> Completeness:
    return measure(migrated.client, migrated.plan, migrated.state)


# -- a target as the migration left it ----------------------------------------------------


def test_measure_a_complete_target(fast_migrated: Migrated) -> None:
    found = _measure(fast_migrated)
    assert found == Completeness(source_points=SEED_POINTS, target_points=SEED_POINTS)
    require_complete(fast_migrated.plan, found)  # does not raise


def test_the_backfill_records_what_it_wrote(fast_migrated: Migrated) -> None:
    """Without recorded states a changed target could not be told from a changed source."""
    states = dict(Fingerprints(fast_migrated.client, fast_migrated.plan.migration_id).stream())
    assert len(states) == SEED_POINTS


# -- lag: the source moved on after the catch-up -----------------------------------------


def test_source_writes_after_the_catch_up_are_lag_not_damage(
    fast_migrated: Migrated, new_model: HashingProvider
) -> None:
    client, plan = fast_migrated.client, fast_migrated.plan
    source = plan.source.collection
    _edit(client, source, 3, text="an edit the catch-up copies")
    copied = _catch_up(fast_migrated, new_model)
    assert copied.reembedded == 1
    assert _measure(fast_migrated) == Completeness(SEED_POINTS, SEED_POINTS)

    # the application keeps writing after that pass
    _edit(client, source, 3, text="edited again after the catch-up")  # a text edit
    _edit(client, source, 4, module="moved")  # a payload-only edit
    client.delete(source, points_selector=[5], wait=True)  # a deletion
    _insert(client, source, 10_000, "inserted after the catch-up")  # an insert
    _insert(client, source, EXTRA_UUID, "inserted after the catch-up, a uuid")

    found = _measure(fast_migrated)
    assert found == Completeness(
        source_points=SEED_POINTS + 1,
        target_points=SEED_POINTS,
        lag=5,
        lag_examples=[3, 4, 5, 10_000, EXTRA_UUID],  # Qdrant's id order
    )
    require_complete(plan, found)  # lag is what the next pass copies: not a failure

    # ...and it is exactly what the next pass finds and copies
    nxt = _catch_up(fast_migrated, new_model)
    assert (nxt.reembedded, nxt.payload_updated, nxt.deleted, nxt.inserted) == (1, 1, 1, 2)
    assert nxt.changes == found.lag and nxt.drift == 0
    assert _measure(fast_migrated) == Completeness(SEED_POINTS + 1, SEED_POINTS + 1)


# -- damage: somebody else changed the target ---------------------------------------------


def test_target_points_deleted_altered_or_stray_are_damage(
    fast_migrated: Migrated, new_model: HashingProvider
) -> None:
    client, plan = fast_migrated.client, fast_migrated.plan
    target = plan.target_collection
    _catch_up(fast_migrated, new_model)
    client.delete(target, points_selector=[7], wait=True)  # deleted
    _edit(client, target, 8, text="changed behind the catch-up's back")  # altered
    _edit(client, target, 9, module="retagged")  # altered, payload only
    _insert(client, target, 100_000, "written where nothing was copied")  # stray
    _insert(client, target, EXTRA_UUID, "a stray uuid")

    found = _measure(fast_migrated)
    assert found == Completeness(
        source_points=SEED_POINTS,
        target_points=SEED_POINTS + 1,
        damaged=5,
        damaged_examples=[7, 8, 9, 100_000, EXTRA_UUID],  # integers before uuids
    )
    with pytest.raises(CheckFailedError) as error:
        require_complete(plan, found)
    message = str(error.value)
    assert message.startswith(
        f"5 points of {target!r} are not what the catch-up wrote (e.g. ids "
        f"[7, 8, 9, 100000, {EXTRA_UUID!r}]): something else deleted or changed them."
    )
    assert "clear this run's catch_up task" in message


def test_a_point_changed_on_both_sides_is_damage(
    fast_migrated: Migrated, new_model: HashingProvider
) -> None:
    """The source's change would be lag, but the target's own change is not ours."""
    client, plan = fast_migrated.client, fast_migrated.plan
    _catch_up(fast_migrated, new_model)
    _edit(client, plan.source.collection, 11, text="the application's edit")
    _edit(client, plan.target_collection, 11, text="somebody else's edit")
    _edit(client, plan.source.collection, 12, text="the application's edit")
    _edit(client, plan.target_collection, 12, text="the application's edit")  # the same
    found = _measure(fast_migrated)
    assert (found.lag, found.damaged, found.damaged_examples) == (0, 1, [11])


def test_lag_and_damage_are_told_apart_in_one_pass(
    fast_migrated: Migrated, new_model: HashingProvider
) -> None:
    client, plan = fast_migrated.client, fast_migrated.plan
    _catch_up(fast_migrated, new_model)
    client.delete(plan.source.collection, points_selector=[20, 21], wait=True)
    client.delete(plan.target_collection, points_selector=[21, 22], wait=True)
    found = _measure(fast_migrated)
    # 21 is gone from both: they agree again; 20 is lag, 22 is damage
    assert (found.lag, found.lag_examples) == (1, [20])
    assert (found.damaged, found.damaged_examples) == (1, [22])
    assert (found.source_points, found.target_points) == (SEED_POINTS - 2, SEED_POINTS - 2)


def test_examples_are_capped_but_counts_are_not(fast_migrated: Migrated) -> None:
    client, plan = fast_migrated.client, fast_migrated.plan
    gone = list(range(101, 131))
    client.delete(plan.target_collection, points_selector=gone, wait=True)
    edited = list(range(1, EXAMPLES + 6))
    for point in edited:
        _edit(client, plan.source.collection, point, text=f"edit {point}")
    found = _measure(fast_migrated)
    assert found.damaged == 30 and found.damaged_examples == gone[:EXAMPLES]
    assert found.lag == EXAMPLES + 5 and found.lag_examples == edited[:EXAMPLES]


# -- recorded skips --------------------------------------------------------------------------


def test_a_recorded_skip_is_accounted_for(
    fast_migrated: Migrated, new_model: HashingProvider
) -> None:
    """A text that became unusable: the catch-up removes the stale point and records why."""
    client, plan = fast_migrated.client, fast_migrated.plan
    _edit(client, plan.source.collection, 30, text="")
    copied = _catch_up(fast_migrated, new_model)
    assert copied.skipped == 1 and not client.retrieve(plan.target_collection, [30])
    assert skipped_ids(fast_migrated.state, plan.migration_id) == {"30"}

    found = _measure(fast_migrated)
    assert found == Completeness(SEED_POINTS, SEED_POINTS - 1, skipped=1)
    require_complete(plan, found)
    # the same missing point, were it not recorded as skipped, is damage
    forget_skip(fast_migrated.state, plan.migration_id, 30)
    assert _measure(fast_migrated) == Completeness(
        SEED_POINTS, SEED_POINTS - 1, damaged=1, damaged_examples=[30]
    )


def test_a_skip_recorded_for_another_migration_does_not_excuse_this_one(
    fast_migrated: Migrated,
) -> None:
    client, plan, state = fast_migrated.client, fast_migrated.plan, fast_migrated.state
    client.delete(plan.target_collection, points_selector=[40, 41], wait=True)
    record_skips(state, plan.migration_id, [(40, "empty")])
    record_skips(state, "mig-other", [(41, "empty")])
    found = _measure(fast_migrated)
    assert found.skipped == 1
    assert (found.damaged, found.damaged_examples) == (1, [41])


def test_a_skipped_point_edited_after_the_catch_up_is_lag(
    fast_migrated: Migrated, new_model: HashingProvider
) -> None:
    client, plan = fast_migrated.client, fast_migrated.plan
    _edit(client, plan.source.collection, 31, text="")
    _catch_up(fast_migrated, new_model)
    _edit(client, plan.source.collection, 31, text="usable again, after the catch-up")
    found = _measure(fast_migrated)
    assert (found.lag, found.lag_examples, found.damaged) == (1, [31], 0)
    require_complete(plan, found)


# -- points without vectors and require_complete ----------------------------------------


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


def test_require_complete_refuses_damage_and_points_without_vector(
    fast_migrated: Migrated,
) -> None:
    plan = fast_migrated.plan
    target = plan.target_collection
    lagging = Completeness(
        source_points=10, target_points=12, lag=7, lag_examples=[1, 2], skipped=3
    )
    require_complete(plan, lagging)  # lag and recorded skips are fine
    damaged = dataclasses.replace(lagging, damaged=4, damaged_examples=[1, 2, 3, 4])
    with pytest.raises(CheckFailedError) as error:
        require_complete(plan, damaged)
    assert str(error.value).startswith(
        f"4 points of {target!r} are not what the catch-up wrote (e.g. ids [1, 2, 3, 4])"
    )
    assert "Waiting will not repair them" in str(error.value)
    vectorless = dataclasses.replace(lagging, points_without_vector=5)
    with pytest.raises(CheckFailedError, match=rf"^5 points of {target!r} have no vector\.$"):
        require_complete(plan, vectorless)


def test_measure_counts_target_points_without_a_vector(fast_migrated: Migrated) -> None:
    client, plan = fast_migrated.client, fast_migrated.plan
    client.delete_vectors(plan.target_collection, vectors=[""], points=[50, 51], wait=True)
    found = _measure(fast_migrated)
    assert found.points_without_vector == 2 and found.damaged == 0  # payloads unchanged
    with pytest.raises(CheckFailedError, match=r"^2 points of .* have no vector"):
        require_complete(plan, found)


def test_completeness_round_trips_as_a_dict() -> None:
    found = Completeness(
        source_points=3,
        target_points=4,
        lag=1,
        lag_examples=[EXTRA_UUID],
        damaged=2,
        damaged_examples=[1, 2],
        skipped=1,
        points_without_vector=0,
    )
    assert Completeness(**codec.encode_dict(found)) == found
