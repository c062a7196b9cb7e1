"""The backfill of the strategies that derive vectors from stored ones: truncation and the
linear map, through the same partitions, checkpoints and summary as the re-embed.

The end-to-end runs of these strategies (against the OpenAI stand-in, with a map fitted
on the real models) are in tests/qdrant_migration/test_strategies.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration import collections, compatibility, linear_map
from include.qdrant_migration.plan import Plan
from include.qdrant_migration.spec import Strategy
from include.qdrant_migration.state import (
    MemoryStateStore,
    QdrantStateStore,
    StateStore,
)
from include.qdrant_migration.strategies import strategy_of
from include.qdrant_migration.strategies.new_collection import DerivedVectors
from include.qdrant_migration.strategy import CompatibilityError
from include.qdrant_migration.sync.backfill import BackfillSettings, BackfillSummary, Checkpoint
from include.qdrant_migration.sync.checkpoints import Checkpoints
from include.qdrant_migration.sync.partitions import partitions_for
from include.qdrant_migration.sync.skips import skipped_ids
from include.qdrant_migration.sync.transform import (
    NO_VECTOR,
    PartitionTransform,
    Transform,
    truncate,
)
from tests.fakes import HashingProvider
from tests.qdrant_migration.helpers import (
    SEED_POINTS,
    SimulatedCrashError,
    all_points,
    dummy_vector,
    make_source,
)
from tests.qdrant_migration.sync.support import fast_spec

SETTINGS = BackfillSettings(batch_size=32)


def _summary() -> linear_map.MapSummary:
    return linear_map.MapSummary(
        migration_id="mig-1",
        sample=200,
        train=160,
        held_out=40,
        lam=0.1,
        validation_cosine=0.9,
        retention=0.9,
        k=10,
        known_item={"ratio": 1.0},
        min_retention=0.85,
        tokens=0,
        embedded=200,
        queries_embedded=40,
        seconds=1.0,
    )


def _random_map(rows: int, cols: int) -> linear_map.LinearMap:
    rng = np.random.default_rng(7)
    return linear_map.LinearMap(rng.standard_normal((rows, cols)), rng.standard_normal(cols), True)


def _plan_for(
    client: QdrantClient, provider: HashingProvider, state: StateStore, **changes: object
) -> Plan:
    """The assessed plan of the seeded store, with the strategy (and size) under test."""
    plan = compatibility.assess(client, fast_spec(), provider, state)
    return dataclasses.replace(plan, **changes)  # type: ignore[arg-type]


def _transform_all(
    client: QdrantClient, plan: Plan, state: StateStore, transform: Transform | None = None
) -> BackfillSummary:
    collections.create_target(client, plan, state)
    derive = transform or derived(plan).transform(state)
    return BackfillSummary.of(
        [
            PartitionTransform(client, plan, p, derive, state, SETTINGS).run()
            for p in partitions_for(client, state, plan)
        ]
    )


# -- truncate ----------------------------------------------------------------------------


def test_truncate_renormalizes_the_prefix() -> None:
    vectors = [[3.0, 4.0, 12.0], [0.0, 0.0, 1.0]]
    np.testing.assert_allclose(truncate(vectors, 2), [[0.6, 0.8], [0.0, 0.0]])
    assert truncate([], 2) == []
    # a prefix of a unit vector is not a unit vector; truncate makes it one again
    rng = np.random.default_rng(1)
    unit = rng.standard_normal((5, 16))
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    cut = np.array(truncate(unit.tolist(), 8))
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0)
    np.testing.assert_allclose(cut * np.linalg.norm(unit[:, :8], axis=1)[:, None], unit[:, :8])


# -- each strategy's transform -----------------------------------------------------------


def derived(plan: Plan) -> DerivedVectors:
    strategy = strategy_of(plan)
    assert isinstance(strategy, DerivedVectors)
    return strategy


def test_the_strategies_that_derive_vectors_transform_them(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    state = MemoryStateStore()
    plan = _plan_for(fast_client, new_model, state)
    assert plan.strategy is Strategy.FULL_REEMBED
    assert not isinstance(strategy_of(plan), DerivedVectors)  # it embeds instead

    vectors = np.random.default_rng(2).standard_normal((3, 64)).tolist()
    matryoshka = dataclasses.replace(
        plan, strategy=Strategy.MATRYOSHKA_TRUNCATION, target_dimension=24
    )
    np.testing.assert_allclose(derived(matryoshka).transform(state)(vectors), truncate(vectors, 24))

    mapped = dataclasses.replace(plan, strategy=Strategy.LINEAR_MAP, target_dimension=48)
    with pytest.raises(CompatibilityError, match="No linear map is stored"):
        derived(mapped).transform(state)
    fitted = _random_map(64, 48)
    linear_map.store(state, plan.migration_id, fitted, _summary())
    np.testing.assert_allclose(
        derived(mapped).transform(state)(vectors), fitted.apply(vectors), atol=1e-5
    )


# -- PartitionTransform ------------------------------------------------------------------


@pytest.mark.parametrize("strategy", [Strategy.MATRYOSHKA_TRUNCATION, Strategy.LINEAR_MAP])
def test_every_stored_vector_is_transformed_without_embedding(
    fast_client: QdrantClient, new_model: HashingProvider, strategy: Strategy
) -> None:
    state = QdrantStateStore(fast_client)
    dimension = 24 if strategy is Strategy.MATRYOSHKA_TRUNCATION else 48
    plan = _plan_for(fast_client, new_model, state, strategy=strategy, target_dimension=dimension)
    fitted = _random_map(64, dimension)
    if strategy is Strategy.LINEAR_MAP:
        linear_map.store(state, plan.migration_id, fitted, _summary())
    calls_before = new_model.calls

    totals = _transform_all(fast_client, plan, state)

    assert new_model.calls == calls_before  # not one embedding call
    assert totals.partitions == 3
    assert totals.transformed == SEED_POINTS
    assert totals.embedded == totals.embed_requests == totals.tokens == totals.skipped == 0
    source = all_points(fast_client, plan.source.collection)
    target = all_points(fast_client, plan.target_collection)
    assert [p.id for p in target] == [p.id for p in source]
    assert [p.payload for p in target] == [p.payload for p in source]
    stored = [p.vector for p in source]
    want = truncate(stored, 24) if strategy is Strategy.MATRYOSHKA_TRUNCATION else None
    if want is None:
        want = linear_map.load(state, plan.migration_id).apply(stored)
        np.testing.assert_allclose(want, fitted.apply(stored), atol=1e-4)  # float32 storage
    got = np.array([p.vector for p in target])
    assert got.shape == (SEED_POINTS, dimension)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)


def test_points_without_a_stored_vector_are_skipped_and_recorded(
    new_model: HashingProvider,
) -> None:
    """A named vector missing from a point: nothing to transform, and nothing needs its text."""
    client = QdrantClient(":memory:")
    make_source(
        client,
        "named_v1",
        [(i, {"text": f"note {i}"} if i % 2 else {}) for i in range(1, 11)],
        alias="named",
        vector_name="dense",
        size=8,
    )
    client.upsert("named_v1", [qm.PointStruct(id=11, vector={}, payload={"text": "note 11"})])
    state = MemoryStateStore()
    plan = compatibility.assess(client, fast_spec(alias="named"), new_model, state)
    plan = dataclasses.replace(plan, strategy=Strategy.MATRYOSHKA_TRUNCATION, target_dimension=4)
    assert plan.vector_name == "dense"

    totals = _transform_all(client, plan, state)

    assert totals.transformed == 10  # with or without text: the stored vector is enough
    assert (totals.skipped, totals.skipped_by_reason) == (1, {NO_VECTOR: 1})
    assert skipped_ids(state, plan.migration_id) == {"11"}
    target = {p.id: p.vector for p in all_points(client, plan.target_collection)}
    assert sorted(target) == list(range(1, 11))
    for pid, vector in target.items():
        assert isinstance(vector, dict)
        np.testing.assert_allclose(vector["dense"], truncate([dummy_vector(pid, 8)], 4)[0])


def test_a_crashed_transform_resumes_from_its_checkpoint(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    state = QdrantStateStore(fast_client)
    plan = _plan_for(
        fast_client, new_model, state, strategy=Strategy.MATRYOSHKA_TRUNCATION, target_dimension=16
    )
    collections.create_target(fast_client, plan, state)
    first = partitions_for(fast_client, state, plan)[0]
    pages: list[int] = []

    def crashing(vectors: Sequence[Sequence[float]]) -> list[list[float]]:
        pages.append(len(vectors))
        if len(pages) == 3:
            raise SimulatedCrashError("worker died while transforming")
        return truncate(vectors, 16)

    with pytest.raises(SimulatedCrashError):
        PartitionTransform(fast_client, plan, first, crashing, state, SETTINGS).run()
    written = fast_client.count(plan.target_collection, exact=True).count
    doc = Checkpoints(state).get(Checkpoint.key_of(first))
    assert doc is not None
    checkpoint = doc
    # what was written is checkpointed; the page transformed but not yet written is not
    assert 0 < checkpoint.done_points == checkpoint.transformed == written < first.points
    assert not checkpoint.done

    result = PartitionTransform(
        fast_client, plan, first, derived(plan).transform(state), state, SETTINGS
    ).run()

    assert result.resumed and result.transformed == first.points
    assert pages[-1] != 0 and len(pages) == 3  # the broken transform was not called again
    assert result.embedded == result.embed_requests == 0
    source = all_points(fast_client, plan.source.collection)[: first.points]
    target = all_points(fast_client, plan.target_collection)
    assert [p.id for p in target] == [p.id for p in source]
    np.testing.assert_allclose(
        [p.vector for p in target], truncate([p.vector for p in source], 16), atol=1e-6
    )
