"""The plan's estimate: tokens from the provider's tokenizer, cost from the dated price
table, duration from the budget or a measurement, storage, names. And a dry run writes
nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from qdrant_client import QdrantClient

from include.qdrant_migration import compatibility, estimate
from include.qdrant_migration.demo import read_corpus
from include.qdrant_migration.providers import Credentials, EmbeddingProvider, get_provider
from include.qdrant_migration.report import render_plan
from include.qdrant_migration.state import STATE_COLLECTION, QdrantStateStore
from tests.qdrant_migration.helpers import (
    SEED_POINTS,
    SOURCE_MODEL,
    NoEmbeddingProvider,
    make_source,
    seed_standin_source,
    small_spec,
)
from tests.standin import OPENAI_KEY, StandIn, standin, standin_server  # noqa: F401


def _store_snapshot(client: QdrantClient) -> dict[str, Any]:
    """Every collection with its config and points, and the aliases."""
    collections: dict[str, Any] = {}
    for c in client.get_collections().collections:
        points, _ = client.scroll(c.name, limit=100_000, with_payload=True, with_vectors=True)
        collections[c.name] = (
            client.get_collection(c.name).config.model_dump(),
            [(p.id, p.payload, p.vector) for p in points],
        )
    aliases = sorted((a.alias_name, a.collection_name) for a in client.get_aliases().aliases)
    return {"collections": collections, "aliases": aliases}


@pytest.fixture
def openai(standin: StandIn) -> Iterator[EmbeddingProvider]:  # noqa: F811
    provider = get_provider(
        "openai",
        "text-embedding-3-small",
        credentials=Credentials("standin", api_key=OPENAI_KEY, base_url=standin.openai_base_url),
    )
    yield provider
    provider.close()


def test_price_table_is_one_dated_file() -> None:
    prices = json.loads(estimate.PRICES.read_text())
    assert prices["as_of"] == "2026-11"
    assert "check before quoting" in prices["note"].lower()
    assert estimate.price_per_million("openai", "text-embedding-3-small") == 0.02
    assert estimate.price_per_million("openai", "text-embedding-3-large") == 0.13
    assert estimate.price_per_million("openai", "text-embedding-ada-002") == 0.10
    assert estimate.price_per_million("cohere", "embed-v4.0") == 0.12
    assert estimate.price_per_million("cohere", "embed-english-v3.0") == 0.10
    assert estimate.price_per_million("local", "multilingual-e5-small") == 0.0
    assert estimate.price_per_million("openai_compatible", "anything") is None


def test_estimate_of_a_full_reembed_with_a_local_model(
    client: QdrantClient, e5: EmbeddingProvider
) -> None:
    plan = compatibility.assess(client, small_spec(), e5, QdrantStateStore(client))
    est = plan.estimate
    assert est["strategy"] == "full_reembed"
    assert est["points"] == est["texts_to_embed"] == est["token_sample"] == SEED_POINTS
    assert est["tokens"] > 20 * SEED_POINTS
    assert est["cost_usd"] == 0.0 and est["prices_as_of"] == "2026-11"
    assert est["embed_requests"] == 7 + 7 + 3  # partitions of 100, 100, 40 in batches of 16
    assert est["duration_s"] > 0 and est["duration_basis"].startswith("measured")
    vectors = SEED_POINTS * 384 * 4
    payload = SEED_POINTS * est["payload_bytes_per_point"]
    assert est["target_disk_bytes"] == pytest.approx(vectors + payload, abs=SEED_POINTS)
    assert est["peak_disk_bytes"] == est["source_disk_bytes"] + est["target_disk_bytes"]
    assert est["target_ram_bytes"] == vectors + SEED_POINTS * estimate.HNSW_BYTES_PER_POINT
    assert est["creates"] == [plan.target_collection, STATE_COLLECTION]
    assert est["alias"] == f"articles: articles_v1 -> {plan.target_collection} on approval"
    text = render_plan(plan.to_dict())
    assert text.startswith("### Plan for alias `articles`: **full_reembed**")
    assert f"Would create: `{plan.target_collection}`, `{STATE_COLLECTION}`." in text
    assert "| cost | $0.0000 ($0.0/1M tokens, prices of 2026-11: check before quoting) |" in text


def test_tokens_are_counted_with_tiktoken_and_extrapolated_within_10_percent(
    openai: EmbeddingProvider,
) -> None:
    """2,817 real texts, a random sample of 1,000 counted: close to the exact total."""
    records = list(read_corpus())
    client = QdrantClient(":memory:")
    make_source(client, "docs_v1", [(r["id"], {"text": r["text"]}) for r in records], alias="docs")
    budget = {"tokens_per_minute": 1_000_000, "requests_per_minute": 3000}
    spec = small_spec(
        alias="docs",
        provider="openai",
        model="text-embedding-3-small",
        provider_conn_id="standin",
        provider_options=budget,
        points_per_partition=1000,
        batch_size=128,
    )
    plan = compatibility.assess(client, spec, openai, QdrantStateStore(client))
    est = plan.estimate
    exact = openai.prepare([r["text"] for r in records]).total_tokens
    assert est["token_sample"] == estimate.TOKEN_SAMPLE < len(records)
    assert est["tokenizer"].startswith("tiktoken cl100k_base") and not est["tokens_exact"]
    assert abs(est["tokens"] - exact) / exact < 0.10
    assert est["cost_usd"] == pytest.approx(est["tokens"] * 0.02 / 1e6, rel=1e-3)
    assert est["embed_requests"] == 8 + 8 + 7  # partitions of 1000, 1000, 817; batches of 128
    # the duration follows the budget: whichever of tokens and requests runs out first
    minutes = max(est["tokens"] / 1_000_000, est["embed_requests"] / 3000)
    assert est["duration_s"] == pytest.approx(minutes * 60, rel=0.02)
    assert (
        "the rate budget (tokens_per_minute=1000000, requests_per_minute=3000)"
        in (est["duration_basis"])
    )


def test_estimate_of_a_truncation_costs_nothing(
    corpus: list[dict[str, Any]],
    standin: StandIn,  # noqa: F811
) -> None:
    client = QdrantClient(":memory:")
    seed_standin_source(client, corpus)
    provider = get_provider(
        "openai",
        "text-embedding-3-small",
        dimensions=512,
        credentials=Credentials("standin", api_key=OPENAI_KEY, base_url=standin.openai_base_url),
    )
    spec = small_spec(
        alias="docs",
        provider="openai",
        model="text-embedding-3-small",
        dimensions=512,
        provider_conn_id="standin",
    )
    est = compatibility.assess(client, spec, provider, QdrantStateStore(client)).estimate
    assert est["strategy"] == "matryoshka_truncation"
    assert est["tokens"] == est["cost_usd"] == est["embed_requests"] == 0
    assert est["duration_basis"].startswith(f"writing {SEED_POINTS} points at about")
    assert est["target_disk_bytes"] < est["source_disk_bytes"]  # 512-d instead of 1536-d


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"allow_linear_map": True},
        {
            "model": SOURCE_MODEL,
            "source_provider": "local",
            "source_model": SOURCE_MODEL,
            "quantization": "binary",
        },
    ],
    ids=["full_reembed", "linear_map", "quantization_only"],
)
def test_a_dry_run_writes_nothing(
    client: QdrantClient, e5: EmbeddingProvider, overrides: dict[str, Any]
) -> None:
    provider = (
        e5 if "model" not in overrides else NoEmbeddingProvider(get_provider("local", SOURCE_MODEL))
    )
    before = _store_snapshot(client)
    plan = compatibility.assess(
        client, small_spec(dry_run=True, **overrides), provider, QdrantStateStore(client)
    )
    assert plan.estimate["creates"]  # what it would create...
    assert _store_snapshot(client) == before  # ...and did not
    assert STATE_COLLECTION not in before["collections"]
