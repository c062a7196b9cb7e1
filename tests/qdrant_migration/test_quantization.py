"""Quantization: the configs the ``quantization`` param names, what each costs in RAM, and
the one sanctioned write to a source, a quantization change in place."""

from __future__ import annotations

from typing import Any

import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration import compatibility, quantization
from include.qdrant_migration.spec import Strategy
from include.qdrant_migration.state import STATE_COLLECTION, QdrantStateStore
from tests.fakes import HashingProvider
from tests.qdrant_migration.hashed import HASH_DIMENSION, OLD_MODEL, hash_spec
from tests.qdrant_migration.helpers import SEED_POINTS, NoEmbeddingProvider, snapshot


def test_quantization_only_plans_without_embedding_and_changes_only_the_config(
    fast_client: QdrantClient, old_model: HashingProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = fast_client
    spec = hash_spec(model=OLD_MODEL, source_model=OLD_MODEL, quantization="scalar_int8")
    before = snapshot(client, "articles_v1")

    plan = compatibility.assess(
        client, spec, NoEmbeddingProvider(old_model), QdrantStateStore(client)
    )

    assert plan.strategy is Strategy.QUANTIZATION_ONLY
    assert not plan.creates_target
    assert plan.target_collection == plan.source.collection == "articles_v1"
    assert plan.target_dimension == HASH_DIMENSION
    assert plan.source.quantization == "none"
    assert plan.target_lineage["model"] == OLD_MODEL
    assert plan.target_lineage["quantization"] == "scalar_int8"
    assert plan.migration_id == spec.migration_id("articles_v1", Strategy.QUANTIZATION_ONLY)
    assert plan.estimate.creates == [STATE_COLLECTION]
    assert plan.estimate.tokens == 0 and plan.estimate.vectors_copied == 0
    assert plan.estimate.target_ram_bytes * 4 == plan.estimate.ram_before_bytes
    assert snapshot(client, "articles_v1") == before

    calls: list[dict[str, Any]] = []
    real = client.update_collection

    def recording(name: str, **kwargs: Any) -> bool:
        calls.append({"collection": name, **kwargs})
        return real(name, **kwargs)

    monkeypatch.setattr(client, "update_collection", recording)
    result = quantization.requantize_source(client, "articles_v1", None, "scalar_int8")

    assert len(calls) == 1
    assert calls[0]["collection"] == "articles_v1"
    assert set(calls[0]) == {"collection", "quantization_config"}  # no vector has its own
    sent = calls[0]["quantization_config"]
    assert isinstance(sent, qm.ScalarQuantization) and sent.scalar.type == qm.ScalarType.INT8
    assert result["before"] == "none" and result["requested"] == "scalar_int8"
    assert result["collection"] == "articles_v1"
    after = snapshot(client, "articles_v1")
    assert after["points"] == before["points"] and after["aliases"] == before["aliases"]
    assert len(after["points"]) == SEED_POINTS


def test_quantization_configs_and_descriptions_round_trip() -> None:
    for name in ("scalar_int8", "binary", "product_x16"):
        assert quantization.describe(quantization.config_for(name)) == name
    assert quantization.config_for("none") is None
    assert quantization.config_for(None) is None
    assert quantization.describe(None) == "none"
    store = QdrantClient(":memory:")
    own = qm.BinaryQuantization(binary=qm.BinaryQuantizationConfig())
    store.create_collection(
        "named", vectors_config={"dense": qm.VectorParams(size=4, distance="Cosine")}
    )
    info = store.get_collection("named")
    info.config.params.vectors["dense"].quantization_config = own  # type: ignore[index]
    assert quantization.current(info, "dense") == "binary"  # as a server reports it
    info.config.quantization_config = quantization.config_for("scalar_int8")
    assert quantization.current(info, "dense") == "binary"  # the vector's own wins
    info.config.params.vectors["dense"].quantization_config = None  # type: ignore[index]
    assert quantization.current(info, "dense") == "scalar_int8"


@pytest.mark.parametrize(
    ("name", "ram"),
    [("none", 1_536_000), ("scalar_int8", 384_000), ("product_x16", 96_000), ("binary", 48_000)],
)
def test_ram_of_a_thousand_384_d_vectors(name: str, ram: int) -> None:
    assert quantization.ram_bytes(1000, 384, name) == ram


def test_a_target_keeps_the_sources_quantization_unless_another_is_asked() -> None:
    store = QdrantClient(":memory:")
    store.create_collection("c", vectors_config=qm.VectorParams(size=4, distance="Cosine"))
    info = store.get_collection("c")
    scalar = quantization.config_for("scalar_int8")
    info.config.quantization_config = scalar
    assert quantization.for_target(info, None) == scalar
    assert quantization.describe(quantization.for_target(info, "binary")) == "binary"
    assert quantization.for_target(info, "none") is None
    params = qm.VectorParams(size=4, distance="Cosine", quantization_config=scalar)
    assert quantization.vector_quantization(params, None) == scalar
    assert quantization.vector_quantization(params, "binary") is None


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
    vectors: Any = info.config.params.vectors
    if vectors["dense"].quantization_config is None:  # local mode drops it
        vectors["dense"].quantization_config = qm.BinaryQuantization(
            binary=qm.BinaryQuantizationConfig()
        )
        monkeypatch.setattr(store, "get_collection", lambda name: info)
    sent: dict[str, Any] = {}
    monkeypatch.setattr(store, "update_collection", lambda name, **kw: sent.update(kw))
    result = quantization.requantize_source(store, "named", "dense", "none")
    assert sent["quantization_config"] == qm.Disabled.DISABLED
    assert sent["vectors_config"]["dense"].quantization_config == qm.Disabled.DISABLED
    assert result["before"] == "binary" and result["requested"] == "none"
