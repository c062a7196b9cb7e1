"""The in-place strategy on the embedded store: a new named vector of the same collection,
filled, kept level with the application's writes, switched, rolled back and retired.

The hashing "models" stand for the old and new models (the model is not what is tested).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration import compatibility
from include.qdrant_migration.aliases import LifecycleError
from include.qdrant_migration.plan import Plan
from include.qdrant_migration.spec import Strategy
from include.qdrant_migration.state import Migrations, MigrationStatus, QdrantStateStore
from include.qdrant_migration.strategies import in_place
from include.qdrant_migration.strategy import CompatibilityError
from tests.fakes import HashingProvider
from tests.qdrant_migration.hashed import fill_in_place, in_place_spec
from tests.qdrant_migration.helpers import all_points, layout_vectors, seed_layout

SOURCE = "articles_v1"


@pytest.fixture
def hybrid(corpus: list[dict[str, Any]], old_model: HashingProvider) -> QdrantClient:
    """A hybrid source (named dense ``dense`` + BM25 ``bm25``) of 60 points."""
    client = QdrantClient(":memory:")
    seed_layout(client, "hybrid", corpus[:60], old_model)
    return client


def _filled(client: QdrantClient, provider: HashingProvider) -> tuple[QdrantStateStore, Plan]:
    """Assessed, the new vector added and filled by the backfill."""
    state = QdrantStateStore(client)
    plan = compatibility.assess(client, in_place_spec(), provider, state)
    fill_in_place(client, plan, provider, state)
    return state, plan


def _vectors(client: QdrantClient) -> dict[Any, dict[str, Any]]:
    return {p.id: dict(p.vector) for p in all_points(client, SOURCE)}  # type: ignore[arg-type]


def _assert_made_by(
    client: QdrantClient, name: str, provider: HashingProvider, only: set[Any] | None = None
) -> None:
    for point in all_points(client, SOURCE):
        if only is not None and point.id not in only:
            continue
        assert isinstance(point.vector, dict) and name in point.vector, (point.id, name)
        want = provider.vector(str((point.payload or {})["text"]))
        np.testing.assert_allclose(point.vector[name], want, rtol=1e-5, atol=1e-6)


def _meta(client: QdrantClient) -> dict[str, Any]:
    return dict((client.get_collection(SOURCE).config.metadata or {})["qdrant_migration"])


def test_the_new_model_gets_a_named_vector_of_the_same_collection(
    hybrid: QdrantClient, new_model: HashingProvider
) -> None:
    state = QdrantStateStore(hybrid)
    before = _vectors(hybrid)
    plan = compatibility.assess(hybrid, in_place_spec(), new_model, state)
    assert plan.strategy is Strategy.IN_PLACE
    assert (plan.target_collection, plan.vector_name, plan.target_vector) == (
        SOURCE,
        "dense",
        "hash-new",
    )
    # the dry run shows the disk of both strategies on the same data
    disk = plan.estimate.peak_disk_by_strategy
    assert disk["in_place"] < disk["full_reembed"]
    fill_in_place(hybrid, plan, new_model, state)

    assert [c.name for c in hybrid.get_collections().collections if c.name == SOURCE] == [SOURCE]
    _assert_made_by(hybrid, "hash-new", new_model)
    after = _vectors(hybrid)
    for here, vectors in before.items():  # the old vector and the sparse one are untouched
        assert after[here]["bm25"] == vectors["bm25"]
        np.testing.assert_array_equal(after[here]["dense"], vectors["dense"])
    meta = _meta(hybrid)
    assert meta["active_vector"] == "dense" and meta["model"] == "hash-old"
    assert meta["vectors"]["hash-new"]["role"] == "filling"
    assert meta["vectors"]["hash-new"]["model"] == "hash-new"
    found = in_place.measure(hybrid, plan, state)
    assert (found.source_points, found.target_points, found.lag) == (60, 60, 0)
    # a rerun assesses the same migration: the new vector is neither migrated nor carried
    again = compatibility.assess(hybrid, in_place_spec(), new_model, state)
    assert (again.migration_id, again.target_vector) == (plan.migration_id, "hash-new")
    assert again.vector_name == "dense" and again.source.carried == ["bm25"]


def test_catch_up_re_embeds_what_the_application_wrote(
    hybrid: QdrantClient, new_model: HashingProvider, old_model: HashingProvider
) -> None:
    state, plan = _filled(hybrid, new_model)
    ids = sorted(p.id for p in all_points(hybrid, SOURCE))

    def upsert(here: int, text: str) -> None:  # the application knows only the old vector
        vectors = layout_vectors("hybrid", text, old_model.vector(text))
        hybrid.upsert(SOURCE, [qm.PointStruct(id=here, vector=vectors, payload={"text": text})])

    upsert(ids[0], "an edited text about vector search")  # edit: the new vector is dropped
    upsert(ids[1], str(all_points(hybrid, SOURCE)[1].payload["text"]))  # same text rewritten
    upsert(10_000, "a new article about migrations")  # insert
    hybrid.set_payload(SOURCE, {"text": "text edited in place"}, points=[ids[2]])
    hybrid.set_payload(SOURCE, {"tag": "payload only"}, points=[ids[3]])
    hybrid.delete(SOURCE, [ids[4]])
    lagging = in_place.measure(hybrid, plan, state)
    assert lagging.lag == 4 and set(lagging.lag_examples) == {ids[0], ids[1], 10_000, ids[2]}

    fill = in_place.VectorFill("hash-new", new_model, plan.migration_id)
    result = in_place.InPlaceSync(hybrid, plan, [fill], state).run()
    assert (result.inserted, result.reembedded, result.deleted) == (3, 1, 1)
    assert result.embedded == 4
    _assert_made_by(hybrid, "hash-new", new_model)
    assert in_place.measure(hybrid, plan, state).lag == 0
    again = in_place.InPlaceSync(hybrid, plan, [fill], state).run()
    assert again.changes == 0 and again.embedded == 0


def test_an_unusable_text_loses_the_vector_of_its_old_text(
    hybrid: QdrantClient, new_model: HashingProvider
) -> None:
    state, plan = _filled(hybrid, new_model)
    here = all_points(hybrid, SOURCE)[0].id
    hybrid.set_payload(SOURCE, {"text": "   "}, points=[here])
    fill = in_place.VectorFill("hash-new", new_model, plan.migration_id)
    result = in_place.InPlaceSync(hybrid, plan, [fill], state).run()
    assert result.skipped == 1
    assert "hash-new" not in _vectors(hybrid)[here]
    found = in_place.measure(hybrid, plan, state)
    assert (found.lag, found.skipped) == (0, 1)
    assert in_place.InPlaceSync(hybrid, plan, [fill], state).run().changes == 0


def test_switch_rollback_and_retire(
    hybrid: QdrantClient, new_model: HashingProvider, old_model: HashingProvider
) -> None:
    state, plan = _filled(hybrid, new_model)
    migrations = Migrations(state)
    record = migrations.transition(migrations.require(plan.migration_id), MigrationStatus.READY)

    forward = [in_place.VectorFill("hash-new", new_model, plan.migration_id)]
    switched = in_place.switch(
        hybrid, state, record, final=in_place.InPlaceSync(hybrid, plan, forward, state)
    )
    assert (switched.move.from_vector, switched.move.to_vector) == ("dense", "hash-new")
    meta = _meta(hybrid)
    assert meta["active_vector"] == "hash-new" and meta["model"] == "hash-new"
    assert meta["vectors"]["dense"]["role"] == "standby"
    assert in_place.active_vector(hybrid, plan) == "hash-new"

    # after the switch the application writes the new vector only: the old one follows
    text = "written after the switch"
    hybrid.upsert(
        SOURCE,
        [
            qm.PointStruct(
                id=20_000, vector={"hash-new": new_model.vector(text)}, payload={"text": text}
            )
        ],
    )
    record = migrations.require(plan.migration_id)
    fills = in_place.fills_for(plan, record, "hash-new", new_model, old_model)
    assert [(f.vector, f.follows) for f in fills] == [("dense", True), ("hash-new", False)]
    result = in_place.InPlaceSync(hybrid, plan, fills, state).run()
    # only that point: the old vector was recorded as served when the switch was made
    assert (result.inserted, result.reembedded, result.embedded) == (1, 0, 1)
    _assert_made_by(hybrid, "dense", old_model, only={20_000})
    with pytest.raises(LifecycleError, match="kept for rollback until"):
        in_place.retire(hybrid, state, record, observation_days=7)

    # rollback: the old vector is served again, nothing written meanwhile is missing there
    back = [in_place.VectorFill("dense", old_model, in_place.scope_of(plan, "dense"))]
    rolled = in_place.switch(
        hybrid, state, record, rollback=True, final=in_place.InPlaceSync(hybrid, plan, back, state)
    )
    assert rolled.move.to_vector == "dense" and _meta(hybrid)["active_vector"] == "dense"
    assert _meta(hybrid)["model"] == "hash-old"
    record = migrations.require(plan.migration_id)
    assert record.status is MigrationStatus.ROLLED_BACK
    # retire after a rollback deletes the new vector, never the active one
    in_place.retire(hybrid, state, record, observation_days=7)
    params = hybrid.get_collection(SOURCE).config.params
    assert isinstance(params.vectors, dict) and sorted(params.vectors) == ["dense"]
    assert "hash-new" not in _meta(hybrid)["vectors"]
    assert migrations.require(plan.migration_id).status is MigrationStatus.RETIRED
    assert hybrid.count(SOURCE).count == 61  # nothing lost, the write after the switch kept


def test_retire_after_the_observation_period_deletes_the_old_vector(
    hybrid: QdrantClient, new_model: HashingProvider
) -> None:
    state, plan = _filled(hybrid, new_model)
    migrations = Migrations(state)
    record = migrations.transition(migrations.require(plan.migration_id), MigrationStatus.READY)
    in_place.switch(hybrid, state, record)
    record = migrations.require(plan.migration_id)
    later = datetime.now(tz=UTC) + timedelta(days=8)
    in_place.retire(hybrid, state, record, observation_days=7, now=later)
    params = hybrid.get_collection(SOURCE).config.params
    assert isinstance(params.vectors, dict) and sorted(params.vectors) == ["hash-new"]
    assert params.sparse_vectors and "bm25" in params.sparse_vectors
    assert _meta(hybrid)["active_vector"] == "hash-new"


def test_refusals(
    corpus: list[dict[str, Any]],
    old_model: HashingProvider,
    new_model: HashingProvider,
    hybrid: QdrantClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unnamed = QdrantClient(":memory:")
    seed_layout(unnamed, "hybrid_unnamed", corpus[:20], old_model)
    state = QdrantStateStore(unnamed)
    with pytest.raises(CompatibilityError, match="needs named vectors"):
        compatibility.assess(unnamed, in_place_spec(), new_model, state)
    state = QdrantStateStore(hybrid)
    with pytest.raises(CompatibilityError, match="needs a new collection"):
        compatibility.assess(hybrid, in_place_spec(add_sparse="bm25_new"), new_model, state)
    monkeypatch.setattr(in_place, "server_version", lambda client: (1, 17, 2))
    with pytest.raises(CompatibilityError, match=r"needs Qdrant 1\.18\.0 or later.*is 1\.17\.2"):
        compatibility.assess(hybrid, in_place_spec(), new_model, state)
    # auto never chooses it
    auto = compatibility.assess(
        hybrid, in_place_spec(strategy="auto"), new_model, QdrantStateStore(hybrid)
    )
    assert auto.strategy is Strategy.FULL_REEMBED
