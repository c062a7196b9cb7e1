"""The learned linear map: ridge regression, its retention test on held-out documents, its
storage in the state store, and refusing a map that loses too much.

Mechanics run with the hashing models (two unrelated vector spaces); how much a map keeps
between two real models is an integration test.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from qdrant_client import QdrantClient

from include.qdrant_migration import compatibility, linear_map
from include.qdrant_migration.linear_map import MapSummary
from include.qdrant_migration.providers import EmbeddingProvider
from include.qdrant_migration.spec import Strategy
from include.qdrant_migration.state import MemoryStateStore, QdrantStateStore, RecordKind
from include.qdrant_migration.strategy import CompatibilityError
from scripts.seeding import read_corpus
from tests.fakes import HashingProvider
from tests.qdrant_migration.hashed import HASH_DIMENSION, hash_spec
from tests.qdrant_migration.helpers import (
    CountingProvider,
    NoEmbeddingProvider,
    make_source,
    small_spec,
)


def _summary(**changes: object) -> MapSummary:
    fields: dict[str, object] = {
        "migration_id": "mig-1",
        "sample": 100,
        "train": 80,
        "held_out": 20,
        "lam": 0.1,
        "validation_cosine": 0.9,
        "retention": 0.9,
        "k": 10,
        "known_item": {"mapped_recall": 0.9, "reembedded_recall": 1.0, "ratio": 0.9},
        "min_retention": 0.85,
        "tokens": 1000,
        "embedded": 100,
        "queries_embedded": 20,
        "seconds": 1.5,
    }
    fields.update(changes)
    return MapSummary(**fields)  # type: ignore[arg-type]


def test_ridge_recovers_a_linear_relation_exactly() -> None:
    rng = np.random.default_rng(3)
    old = rng.standard_normal((400, 16))
    new = old @ rng.standard_normal((16, 12)) + 0.5
    train, validation, held_out = linear_map.split(400)
    queries = new[held_out] + 0.01 * rng.standard_normal((len(held_out), 12))
    fit = linear_map.fit(old, new, queries, held_out, train, validation, normalize=False)
    assert fit.lam == min(linear_map.LAMBDAS)
    np.testing.assert_allclose(fit.map.apply_array(old), new, atol=1e-2)
    assert fit.validation_cosine > 0.999
    assert fit.retention == 1.0
    assert fit.known_item["ratio"] == 1.0
    assert fit.held_out == len(held_out) == 80
    assert fit.train == len(train) + len(validation) == 320


def test_split_is_disjoint_complete_and_reproducible() -> None:
    train, validation, held_out = linear_map.split(100)
    assert (len(train), len(validation), len(held_out)) == (65, 15, 20)
    assert sorted(train + validation + held_out) == list(range(100))
    assert linear_map.split(100) == (train, validation, held_out)


def test_a_map_round_trips_through_the_state_store_in_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(linear_map, "CHUNK_VALUES", 100)
    rng = np.random.default_rng(0)
    fitted = linear_map.LinearMap(rng.standard_normal((20, 30)), rng.standard_normal(30), True)
    state = MemoryStateStore()
    summary = _summary()
    linear_map.store(state, "mig-1", fitted, summary)
    header = state.get(RecordKind.LINEAR_MAP, "mig-1")
    assert header is not None and header["chunks"] == 7 and header["shape"] == [20, 30]
    assert linear_map.summary_of(state, "mig-1") == summary
    assert linear_map.summary_of(state, "mig-other") is None
    loaded = linear_map.load(state, "mig-1")
    np.testing.assert_allclose(loaded.weights, fitted.weights.astype("f4"), rtol=1e-6)
    vectors = rng.standard_normal((3, 20)).tolist()
    np.testing.assert_allclose(loaded.apply(vectors), fitted.apply(vectors), atol=1e-5)
    assert loaded.apply([]) == []
    state.put(RecordKind.LINEAR_MAP_CHUNK, "mig-1/3", {"data": ""})
    with pytest.raises(CompatibilityError, match="incomplete or damaged"):
        linear_map.load(state, "mig-1")
    linear_map.forget(state, "mig-1")
    assert not state.records
    with pytest.raises(CompatibilityError, match="fit_linear_map must run first"):
        linear_map.load(state, "mig-1")


def test_a_summary_round_trips_as_json() -> None:
    summary = _summary()
    assert MapSummary.from_dict(json.loads(json.dumps(summary.to_dict()))) == summary
    # a stored header carries more than the summary
    assert MapSummary.from_dict(summary.to_dict() | {"chunks": 3, "sha256": "x"}) == summary


def test_fit_for_plan_embeds_the_sample_once_and_stores_the_map(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    state = QdrantStateStore(fast_client)
    spec = hash_spec(allow_linear_map=True, min_map_retention=0.0, map_sample_size=200)
    plan = compatibility.assess(fast_client, spec, new_model, state)
    assert plan.strategy is Strategy.LINEAR_MAP
    assert plan.estimate.texts_to_embed == 200
    counting = CountingProvider(new_model)

    fitted = linear_map.fit_for_plan(fast_client, plan, counting, state)

    assert (fitted.migration_id, fitted.sample, fitted.held_out, fitted.train) == (
        plan.migration_id,
        200,
        40,
        160,
    )
    assert fitted.k == 10 and fitted.min_retention == 0.0
    assert fitted.lam in linear_map.LAMBDAS
    assert 0.0 <= fitted.retention <= 1.0
    assert fitted.embedded == counting.texts_embedded == 200  # the sample, and nothing else
    assert fitted.queries_embedded == 40
    assert fitted.tokens > 0
    assert linear_map.summary_of(state, plan.migration_id) == fitted
    mapped = linear_map.load(state, plan.migration_id)
    assert mapped.weights.shape == (HASH_DIMENSION, HASH_DIMENSION) and mapped.normalize
    # a retried task reuses the stored map and pays for nothing
    again = linear_map.fit_for_plan(fast_client, plan, NoEmbeddingProvider(new_model), state)
    assert again == fitted


def test_a_map_below_the_minimum_retention_is_refused_and_not_stored(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    state = QdrantStateStore(fast_client)
    spec = hash_spec(allow_linear_map=True, min_map_retention=0.99)
    plan = compatibility.assess(fast_client, spec, new_model, state)
    with pytest.raises(linear_map.MapRetentionError) as error:
        linear_map.fit_for_plan(fast_client, plan, new_model, state)
    message = str(error.value)
    assert "keeps only" in message and "minimum 99%" in message
    assert "on 48 held-out sample documents" in message
    assert "Nothing was created" in message
    assert linear_map.summary_of(state, plan.migration_id) is None
    assert {c.name for c in fast_client.get_collections().collections} == {"articles_v1"}


def test_a_stored_map_is_checked_against_the_current_minimum(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    """A rerun with a stricter minimum refuses the map it stored, without embedding again."""
    state = QdrantStateStore(fast_client)
    loose = hash_spec(allow_linear_map=True, min_map_retention=0.0, map_sample_size=100)
    plan = compatibility.assess(fast_client, loose, new_model, state)
    fitted = linear_map.fit_for_plan(fast_client, plan, new_model, state)
    strict = dataclasses.replace(plan.spec, min_map_retention=fitted.retention + 0.01)
    retried = dataclasses.replace(plan, spec=strict)
    with pytest.raises(linear_map.MapRetentionError, match="keeps only"):
        linear_map.fit_for_plan(fast_client, retried, NoEmbeddingProvider(new_model), state)
    assert linear_map.summary_of(state, plan.migration_id) == fitted  # still stored


def test_too_few_texts_to_fit_a_map(new_model: HashingProvider) -> None:
    store = QdrantClient(":memory:")
    texts = [(r["id"], {"text": r["text"]}) for r in read_corpus(limit=20)]
    make_source(store, "docs_v1", texts, alias="docs", size=HASH_DIMENSION)
    state = QdrantStateStore(store)
    plan = compatibility.assess(
        store, hash_spec(alias="docs", allow_linear_map=True), new_model, state
    )
    with pytest.raises(CompatibilityError) as error:
        linear_map.fit_for_plan(store, plan, NoEmbeddingProvider(new_model), state)
    assert str(error.value).startswith(
        "Only 20 sampled points of 'docs_v1' have usable text; a linear map needs at least 30"
    )


@pytest.mark.integration
def test_a_map_between_two_real_models_is_refused_below_the_threshold(
    client: QdrantClient, e5: EmbeddingProvider
) -> None:
    state = QdrantStateStore(client)
    spec = small_spec(allow_linear_map=True, min_map_retention=0.99)
    plan = compatibility.assess(client, spec, e5, state)
    assert plan.strategy is Strategy.LINEAR_MAP
    with pytest.raises(linear_map.MapRetentionError) as error:
        linear_map.fit_for_plan(client, plan, e5, state)
    message = str(error.value)
    assert "keeps only" in message and "minimum 99%" in message
    assert "on 48 held-out sample documents" in message
    assert "Nothing was created" in message
    assert linear_map.summary_of(state, plan.migration_id) is None
    assert {c.name for c in client.get_collections().collections} == {"articles_v1"}
