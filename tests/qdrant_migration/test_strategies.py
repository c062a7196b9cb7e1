"""The cheaper strategies end to end in a real embedded store: truncation against the OpenAI
stand-in, quantization in place, and the learned linear map with the real local models."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration import collections, compatibility, linear_map, quantization
from include.qdrant_migration.backfill import BackfillSettings, summarize
from include.qdrant_migration.partitions import plan_partitions
from include.qdrant_migration.providers import Credentials, EmbeddingProvider, get_provider
from include.qdrant_migration.state import MemoryStateStore, QdrantStateStore
from include.qdrant_migration.transform import PartitionTransform, transform_for, truncate
from tests.qdrant_migration.helpers import (
    SEED_POINTS,
    SOURCE_MODEL,
    CountingProvider,
    NoEmbeddingProvider,
    all_points,
    seed_standin_source,
    small_spec,
    snapshot,
)
from tests.standin import OPENAI_KEY, StandIn, expected_vector, standin, standin_server  # noqa: F401

MODEL = "text-embedding-3-small"


@pytest.fixture
def openai_256(standin: StandIn) -> Iterator[EmbeddingProvider]:  # noqa: F811
    provider = get_provider(
        "openai",
        MODEL,
        dimensions=256,
        credentials=Credentials("standin", api_key=OPENAI_KEY, base_url=standin.openai_base_url),
    )
    yield provider
    provider.close()


def _transform_all(client: QdrantClient, plan: compatibility.Plan, state: Any) -> dict[str, Any]:
    collections.create_target(client, plan, state)
    parts = plan_partitions(
        client,
        state,
        migration_id=plan.migration_id,
        source_collection=plan.source.collection,
        points_per_partition=100,
        expected_points=plan.source.points,
    )
    derive = transform_for(plan, state)
    settings = BackfillSettings(batch_size=32)
    return summarize(
        [PartitionTransform(client, plan, p, derive, state, settings).run() for p in parts]
    )


@pytest.mark.parametrize("source_size", [1536, 512])
def test_truncation_writes_exactly_what_the_model_returns_for_fewer_dimensions(
    corpus: list[dict[str, Any]],
    standin: StandIn,  # noqa: F811
    openai_256: EmbeddingProvider,
    source_size: int,
) -> None:
    client = QdrantClient(":memory:")
    seed_standin_source(client, corpus, dimensions=source_size)
    state = QdrantStateStore(client)
    spec = small_spec(
        alias="docs", provider="openai", model=MODEL, dimensions=256, provider_conn_id="standin"
    )

    plan = compatibility.assess(client, spec, openai_256, state)
    assert plan.strategy == "matryoshka_truncation"
    assert plan.target_dimension == 256
    assert plan.target_lineage["dimensions"] == 256
    assert plan.target_lineage["strategy"] == "matryoshka_truncation"
    assert plan.target_lineage["truncated_from"] == source_size
    assert plan.estimate["texts_to_embed"] == 0 and plan.estimate["tokens"] == 0
    assert plan.estimate["vectors_copied"] == SEED_POINTS
    probe_only = len(standin.requests())
    assert probe_only == 1  # the dimension probe, one fixed query; no document

    totals = _transform_all(client, plan, state)

    assert len(standin.requests()) == probe_only  # not one embedding call for the documents
    assert totals["transformed"] == SEED_POINTS
    assert totals["embedded"] == totals["embed_requests"] == totals["tokens"] == 0
    target = all_points(client, plan.target_collection)
    assert len(target) == SEED_POINTS
    assert [p.payload for p in target] == [p.payload for p in all_points(client, "docs_v1")]
    got = np.array([p.vector for p in target])
    want = np.array([expected_vector(MODEL, p.payload["text"], "", 256) for p in target])
    np.testing.assert_allclose(got, want, atol=1e-6)
    # ... which is what the stand-in (like OpenAI) returns when asked for 256 dimensions
    asked = openai_256.embed_documents([target[0].payload["text"]])[0]
    np.testing.assert_allclose(got[0], asked, atol=1e-6)
    meta = client.get_collection(plan.target_collection).config.metadata["qdrant_migration"]
    assert meta["dimensions"] == 256 and meta["model"] == MODEL


def test_truncate_renormalizes_the_prefix() -> None:
    vectors = [[3.0, 4.0, 12.0], [0.0, 0.0, 1.0]]
    np.testing.assert_allclose(truncate(vectors, 2), [[0.6, 0.8], [0.0, 0.0]])
    assert truncate([], 2) == []


def test_quantization_only_plans_without_embedding_and_changes_only_the_config(
    client: QdrantClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    minilm = NoEmbeddingProvider(get_provider("local", SOURCE_MODEL))
    spec = small_spec(
        model=SOURCE_MODEL,
        source_provider="local",
        source_model=SOURCE_MODEL,
        quantization="scalar_int8",
    )
    before = snapshot(client, "articles_v1")

    plan = compatibility.assess(client, spec, minilm, QdrantStateStore(client))

    assert plan.strategy == "quantization_only"
    assert not plan.creates_target
    assert plan.target_collection == "articles_v1"
    assert plan.source.quantization == "none"
    assert plan.estimate["creates"] == ["qdrant_migration_state"]
    assert plan.estimate["tokens"] == 0 and plan.estimate["vectors_copied"] == 0
    assert plan.estimate["target_ram_bytes"] * 4 == plan.estimate["ram_before_bytes"]
    assert snapshot(client, "articles_v1") == before

    calls: list[dict[str, Any]] = []
    real = client.update_collection

    def recording(name: str, **kwargs: Any) -> bool:
        calls.append({"collection": name, **kwargs})
        return real(name, **kwargs)

    monkeypatch.setattr(client, "update_collection", recording)
    result = quantization.apply_in_place(client, "articles_v1", None, "scalar_int8")

    assert len(calls) == 1
    assert calls[0]["collection"] == "articles_v1"
    sent = calls[0]["quantization_config"]
    assert isinstance(sent, qm.ScalarQuantization) and sent.scalar.type == qm.ScalarType.INT8
    assert result["before"] == "none" and result["requested"] == "scalar_int8"
    after = snapshot(client, "articles_v1")
    assert after["points"] == before["points"] and after["aliases"] == before["aliases"]


def test_quantization_configs_and_descriptions_round_trip() -> None:
    for name in ("scalar_int8", "binary", "product_x16"):
        assert quantization.describe(quantization.config_for(name)) == name
    assert quantization.config_for("none") is None
    assert quantization.describe(None) == "none"
    store = QdrantClient(":memory:")
    own = qm.BinaryQuantization(binary=qm.BinaryQuantizationConfig())
    store.create_collection(
        "named", vectors_config={"dense": qm.VectorParams(size=4, distance="Cosine")}
    )
    info = store.get_collection("named")
    info.config.params.vectors["dense"].quantization_config = own  # as a server reports it
    assert quantization.current(info, "dense") == "binary"
    assert quantization.ram_bytes(1000, 384, "binary") == 48_000


def test_a_vectors_own_quantization_is_updated_too(monkeypatch: pytest.MonkeyPatch) -> None:
    store = QdrantClient(":memory:")
    store.create_collection(
        "named",
        vectors_config={
            "dense": qm.VectorParams(
                size=4,
                distance="Cosine",
                quantization_config=qm.BinaryQuantization(binary=qm.BinaryQuantizationConfig()),
            )
        },
    )
    info = store.get_collection("named")
    if info.config.params.vectors["dense"].quantization_config is None:  # local mode drops it
        info.config.params.vectors["dense"].quantization_config = qm.BinaryQuantization(
            binary=qm.BinaryQuantizationConfig()
        )
        monkeypatch.setattr(store, "get_collection", lambda name: info)
    sent: dict[str, Any] = {}
    monkeypatch.setattr(store, "update_collection", lambda name, **kw: sent.update(kw))
    quantization.apply_in_place(store, "named", "dense", "none")
    assert sent["quantization_config"] == qm.Disabled.DISABLED
    assert sent["vectors_config"]["dense"].quantization_config == qm.Disabled.DISABLED


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


def test_a_map_round_trips_through_the_state_store_in_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(linear_map, "CHUNK_VALUES", 100)
    rng = np.random.default_rng(0)
    fitted = linear_map.LinearMap(rng.standard_normal((20, 30)), rng.standard_normal(30), True)
    state = MemoryStateStore()
    linear_map.store(state, "mig-1", fitted, {"retention": 0.9})
    header = state.get("linear_map", "mig-1")
    assert header is not None and header["chunks"] == 7 and header["shape"] == [20, 30]
    loaded = linear_map.load(state, "mig-1")
    np.testing.assert_allclose(loaded.weights, fitted.weights.astype("f4"), rtol=1e-6)
    vectors = rng.standard_normal((3, 20)).tolist()
    np.testing.assert_allclose(loaded.apply(vectors), fitted.apply(vectors), atol=1e-5)
    state.put("linear_map_chunk", "mig-1/3", {"data": ""})
    with pytest.raises(compatibility.CompatibilityError, match="incomplete or damaged"):
        linear_map.load(state, "mig-1")
    linear_map.forget(state, "mig-1")
    assert not state.records


def test_linear_map_is_refused_below_the_threshold_and_stores_nothing(
    client: QdrantClient, e5: EmbeddingProvider
) -> None:
    state = QdrantStateStore(client)
    spec = small_spec(allow_linear_map=True, min_map_retention=0.99)
    plan = compatibility.assess(client, spec, e5, state)
    assert plan.strategy == "linear_map"
    with pytest.raises(linear_map.MapRetentionError) as error:
        linear_map.fit_for_plan(client, plan, e5, state)
    message = str(error.value)
    assert "keeps only" in message and "minimum 99%" in message
    assert "on 48 held-out sample documents" in message
    assert "Nothing was created" in message
    assert state.get("linear_map", plan.migration_id) is None
    assert {c.name for c in client.get_collections().collections} == {"articles_v1"}


def test_linear_map_maps_every_vector_without_embedding_them(
    client: QdrantClient, e5: EmbeddingProvider
) -> None:
    state = QdrantStateStore(client)
    spec = small_spec(allow_linear_map=True, min_map_retention=0.3, map_sample_size=200)
    plan = compatibility.assess(client, spec, e5, state)
    assert plan.estimate["texts_to_embed"] == 200
    counting = CountingProvider(e5)

    fitted = linear_map.fit_for_plan(client, plan, counting, state)

    assert fitted["sample"] == 200 and fitted["held_out"] == 40 and fitted["k"] == 10
    assert 0.3 <= fitted["retention"] <= 1.0
    assert counting.texts_embedded == 200  # the sample, and nothing else
    assert fitted["tokens"] > 0
    # a retried task reuses the stored map and pays for nothing
    again = linear_map.fit_for_plan(client, plan, NoEmbeddingProvider(e5), state)
    assert again["retention"] == fitted["retention"]

    totals = _transform_all(client, plan, state)

    assert counting.texts_embedded == 200
    assert totals["transformed"] == SEED_POINTS and totals["embed_requests"] == 0
    source = all_points(client, "articles_v1")
    target = all_points(client, plan.target_collection)
    assert [p.id for p in target] == [p.id for p in source]
    mapped = linear_map.load(state, plan.migration_id).apply([p.vector for p in source])
    np.testing.assert_allclose([p.vector for p in target], mapped, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm([p.vector for p in target], axis=1), 1, atol=1e-5)
