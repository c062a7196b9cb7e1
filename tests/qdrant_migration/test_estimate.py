"""The plan's estimate: tokens from the provider's tokenizer, cost from the dated price
table, duration from the budget or a measurement, storage, names. And a dry run writes
nothing."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from qdrant_client import QdrantClient

from include.qdrant_migration import compatibility, estimate, phases
from include.qdrant_migration.collections import create_target
from include.qdrant_migration.plan import Estimate, PhaseEstimate
from include.qdrant_migration.providers import Credentials, EmbeddingProvider, get_provider
from include.qdrant_migration.report import render_plan
from include.qdrant_migration.spec import Strategy
from include.qdrant_migration.state import STATE_COLLECTION, QdrantStateStore
from include.qdrant_migration.sync import fingerprints
from scripts.seeding import read_corpus
from tests.fakes import HashingProvider
from tests.qdrant_migration.hashed import HASH_DIMENSION, HASH_TARGET, OLD_MODEL, hash_spec
from tests.qdrant_migration.helpers import (
    SEED_POINTS,
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
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    plan = compatibility.assess(fast_client, hash_spec(), new_model, QdrantStateStore(fast_client))
    est = plan.estimate
    assert plan.strategy is Strategy.FULL_REEMBED
    assert est.points == est.texts_to_embed == est.token_sample == SEED_POINTS
    assert est.vectors_copied == 0
    texts = [p.payload["text"] for p in fast_client.scroll("articles_v1", limit=SEED_POINTS)[0]]  # type: ignore[index]
    counted = new_model.prepare(texts).total_tokens
    # every text was counted, but with an approximate counter: not exact
    assert est.tokens == counted and not est.tokens_exact
    assert est.tokens_per_text == round(counted / SEED_POINTS, 1)
    assert est.tokenizer == new_model.token_counter().description
    assert est.cost_usd == 0.0 and est.price_per_million_tokens == 0.0  # local/*
    assert est.prices_as_of == "2026-11"
    assert est.embed_requests == 7 + 7 + 3  # partitions of 100, 100, 40 in batches of 16
    assert est.duration_s is not None and est.duration_s > 0  # timed: see below
    vectors = SEED_POINTS * HASH_DIMENSION * 4
    payload = SEED_POINTS * est.payload_bytes_per_point
    assert est.target_disk_bytes == pytest.approx(vectors + payload, abs=SEED_POINTS)
    assert est.source_disk_bytes == est.target_disk_bytes  # same size, same payloads
    assert est.peak_disk_bytes == est.source_disk_bytes + est.target_disk_bytes
    assert est.target_ram_bytes == vectors + SEED_POINTS * estimate.HNSW_BYTES_PER_POINT
    assert est.ram_before_bytes is None
    # the target, the states the catch-up records (to tell who changed what), the state store
    synced = f"qdrant_migration_sync__{plan.migration_id}"
    assert synced == fingerprints.collection_name(plan.migration_id)
    assert est.creates == [HASH_TARGET, synced, STATE_COLLECTION]
    assert est.alias_change == f"articles: articles_v1 -> {HASH_TARGET} on approval"
    text = render_plan(plan)
    assert text.startswith("### Plan for alias `articles`: **full_reembed**")
    assert f"Would create: `{HASH_TARGET}`, `{synced}`, `{STATE_COLLECTION}`." in text
    assert "| cost | $0.0000 ($0.0/1M tokens, prices of 2026-11: check before quoting) |" in text


def test_a_resumed_migration_creates_nothing_new(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    state = QdrantStateStore(fast_client)
    plan = compatibility.assess(fast_client, hash_spec(), new_model, state)
    assert fingerprints.collection_name(plan.migration_id) in plan.estimate.creates
    create_target(fast_client, plan, state)
    again = compatibility.assess(fast_client, hash_spec(), new_model, state)
    assert again.migration_id == plan.migration_id
    assert again.estimate.creates == []  # the target, its states and the store: all reused
    assert "Would create: nothing." in render_plan(again)


class FakeClock:
    """Time that passes only when a provider embeds: a cold first call, then per text."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


class TimedHashing(HashingProvider):
    """The hashing model, taking 30 s to load on its first call, then 0.1 s per text
    (0.3 s per text in every third batch: a noisy machine)."""

    clock = FakeClock()
    sizes: ClassVar[list[int]] = []

    def embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        self.sizes.append(len(texts))
        slow = 3.0 if len(self.sizes) % 3 == 0 else 1.0
        self.clock.now += 30.0 if len(self.sizes) == 1 else 0.1 * slow * len(texts)
        return super().embed_queries(texts)


class RemoteTimed(TimedHashing):
    """The same behind an API: requests, not this machine's CPU, set the pace."""

    needs_connection: ClassVar[bool] = True


@pytest.fixture
def timed(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(TimedHashing, "clock", clock)
    monkeypatch.setattr(TimedHashing, "sizes", [])
    monkeypatch.setattr(estimate, "time", clock)
    monkeypatch.setenv("QMM_MAX_PARALLEL_PARTITIONS", "4")
    return clock


def test_without_a_budget_the_duration_is_measured_after_a_warm_up_with_a_range(
    fast_client: QdrantClient, timed: FakeClock
) -> None:
    """The 30 s model load is not timed; the slow batches give the range's slow end."""
    state = QdrantStateStore(fast_client)
    local = compatibility.assess(fast_client, hash_spec(), TimedHashing("hash-new"), state)
    est = local.estimate
    # 10 texts/s typical, 3.3/s in the slowest batch: 240 texts in 24 s to 72 s, after the
    # scheduler starts the task (the backfill phase runs from the end of the setup)
    backfill = phase(est, "backfill")
    assert (backfill.seconds, backfill.max_seconds) == (24.0 + GAP, 72.0 + 2 * GAP)
    assert backfill.basis.startswith("measured 10 texts/s (slowest batch 3/s): ")
    assert "batches of up to" in backfill.basis and "after a warm-up call" in backfill.basis
    assert est.duration_s == round(sum(p.seconds for p in est.phases), 1)
    assert TimedHashing.sizes[:2] == [1, 2]  # the dimension probe, the warm-up, the batches
    assert "| backfill | 28s to 1m 20s | measured 10 texts/s" in render_plan(local)

    remote = compatibility.assess(fast_client, hash_spec(), RemoteTimed("hash-new"), state)
    # an API is bounded by requests in flight: 17 requests, 2 per task x 3 tasks
    sizes = [n for n in RemoteTimed.sizes[-4:]]
    backfill = phase(remote.estimate, "backfill")
    assert backfill.basis.startswith("measured ")
    assert "s per request (slowest " in backfill.basis
    assert "6 requests in flight, no rate budget set" in backfill.basis
    typical = 0.1 * sizes[0]
    assert backfill.seconds == round(17 * typical / 6 + GAP, 1)
    assert backfill.max_seconds > backfill.seconds


def test_when_embedding_is_fast_writing_bounds_the_duration(
    fast_client: QdrantClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks = itertools.count(step=0.001)  # 16 texts in a millisecond
    monkeypatch.setattr(estimate, "time", SimpleNamespace(monotonic=lambda: next(ticks)))
    state = QdrantStateStore(fast_client)
    est = compatibility.assess(fast_client, hash_spec(), HashingProvider("hash-new"), state)
    backfill = phase(est.estimate, "backfill")
    assert backfill.seconds == round(SEED_POINTS / estimate.COPY_POINTS_PER_S + GAP, 1)
    assert backfill.basis == f"writing {SEED_POINTS} points at about 700 points/s"


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
    assert est.token_sample == estimate.TOKEN_SAMPLE < len(records)
    assert est.tokenizer.startswith("tiktoken cl100k_base") and not est.tokens_exact
    assert abs(est.tokens - exact) / exact < 0.10
    assert est.price_per_million_tokens == 0.02
    assert est.cost_usd == pytest.approx(est.tokens * 0.02 / 1e6, rel=1e-3)
    assert est.embed_requests == 8 + 8 + 7  # partitions of 1000, 1000, 817; batches of 128
    # the duration follows the budget: whichever of tokens and requests runs out first
    minutes = max(est.tokens / 1_000_000, est.embed_requests / 3000)
    backfill = phase(est, "backfill")
    assert backfill.seconds - GAP == pytest.approx(minutes * 60, rel=0.02)
    assert backfill.basis == (
        "at least: the rate budget (tokens_per_minute=1000000, requests_per_minute=3000) caps it"
    )


GAP = phases.TASK_GAP_S


def phase(est: Estimate, name: str) -> PhaseEstimate:
    return next(p for p in est.phases if p.name == name)


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
    plan = compatibility.assess(client, spec, provider, QdrantStateStore(client))
    est = plan.estimate
    assert plan.strategy is Strategy.MATRYOSHKA_TRUNCATION
    assert est.tokens == est.cost_usd == est.embed_requests == est.texts_to_embed == 0
    assert est.vectors_copied == SEED_POINTS
    assert est.token_sample == SEED_POINTS and est.tokens_exact  # tiktoken, every text
    backfill = phase(est, "backfill")
    assert backfill.basis == f"writing {SEED_POINTS} points at about 700 points/s"
    assert backfill.seconds == round(SEED_POINTS / estimate.COPY_POINTS_PER_S + GAP, 1)
    payload = SEED_POINTS * est.payload_bytes_per_point
    assert est.source_disk_bytes == pytest.approx(SEED_POINTS * 1536 * 4 + payload, abs=SEED_POINTS)
    assert est.target_disk_bytes == pytest.approx(SEED_POINTS * 512 * 4 + payload, abs=SEED_POINTS)
    provider.close()


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"allow_linear_map": True},
        {"model": OLD_MODEL, "source_model": OLD_MODEL, "quantization": "binary"},
    ],
    ids=["full_reembed", "linear_map", "quantization_only"],
)
def test_a_dry_run_writes_nothing(
    fast_client: QdrantClient,
    new_model: HashingProvider,
    old_model: HashingProvider,
    overrides: dict[str, Any],
) -> None:
    provider = new_model if "model" not in overrides else NoEmbeddingProvider(old_model)
    before = _store_snapshot(fast_client)
    plan = compatibility.assess(
        fast_client, hash_spec(dry_run=True, **overrides), provider, QdrantStateStore(fast_client)
    )
    assert plan.estimate.creates  # what it would create...
    assert _store_snapshot(fast_client) == before  # ...and did not
    assert STATE_COLLECTION not in before["collections"]


def test_estimate_of_a_linear_map(fast_client: QdrantClient, new_model: HashingProvider) -> None:
    """The sample is embedded (documents, and held-out queries); every vector is copied."""
    spec = hash_spec(allow_linear_map=True, map_sample_size=100)
    plan = compatibility.assess(fast_client, spec, new_model, QdrantStateStore(fast_client))
    est = plan.estimate
    assert plan.strategy is Strategy.LINEAR_MAP
    assert est.texts_to_embed == 100 and est.vectors_copied == SEED_POINTS
    assert est.embed_requests == 7  # 100 sample texts in requests of 16
    # 100 documents and 35 held-out and validation queries (passages: fewer tokens each)
    assert 100 * est.tokens_per_text < est.tokens < 135 * est.tokens_per_text
    # the dry run previews the map on a small sample, and what it saves
    assert est.map_preview_texts == 200 and est.map_retention_preview is not None
    lines = render_plan(plan).splitlines()
    assert any(line.startswith("| linear map: retention previewed") for line in lines)


def test_estimate_of_a_quantization_change(
    fast_client: QdrantClient, old_model: HashingProvider
) -> None:
    spec = hash_spec(model=OLD_MODEL, source_model=OLD_MODEL, quantization="scalar_int8")
    plan = compatibility.assess(
        fast_client, spec, NoEmbeddingProvider(old_model), QdrantStateStore(fast_client)
    )
    est = plan.estimate
    assert plan.strategy is Strategy.QUANTIZATION_ONLY
    assert (est.texts_to_embed, est.vectors_copied, est.tokens, est.embed_requests) == (0, 0, 0, 0)
    assert est.duration_s == 0.0 and "re-quantizes in the background" in est.duration_basis
    floats = SEED_POINTS * HASH_DIMENSION * 4
    assert est.ram_before_bytes == floats
    assert est.target_ram_bytes == est.target_disk_bytes == floats // 4
    assert est.peak_disk_bytes == est.source_disk_bytes + est.target_disk_bytes
    assert est.creates == [STATE_COLLECTION]
    assert est.alias_change == "articles: stays on articles_v1"


def test_an_empty_estimate_prices_nothing() -> None:
    assert Estimate().cost_usd is None and Estimate().creates == []


@pytest.mark.parametrize(
    ("provider", "model", "cost", "duration", "mode", "why", "batch_cost"),
    [
        ("openai", "text-embedding-3-small", 0.01, 4.0, "online", "would save only $0.01", 0.005),
        (
            "openai",
            "text-embedding-3-small",
            3250.0,
            17 * 86400.0,
            "batch",
            "longer than the Batch API's 24 h window",
            1625.0,
        ),
        ("openai", "text-embedding-3-small", 32.5, 3600.0, "batch", "saves $16.25", 16.25),
        # Cohere's embed jobs: the online price (no discount published), worth it only for
        # a backfill that online requests would stretch past a day
        (
            "cohere",
            "embed-english-v3.0",
            32.5,
            3600.0,
            "online",
            "cost what online requests cost",
            32.5,
        ),
        (
            "cohere",
            "embed-multilingual-light-v3.0",
            3250.0,
            17 * 86400.0,
            "batch",
            "outside the per-minute limits, at the same price",
            3250.0,
        ),
        ("cohere", "embed-v4.0", 32.5, 3600.0, "online", "not among the models", None),
        ("local", "all-MiniLM-L6-v2", 0.0, 10.0, "online", "no batch API", None),
    ],
)
def test_online_vs_batch_is_recommended_from_cost_and_time(
    provider: str,
    model: str,
    cost: float,
    duration: float,
    mode: str,
    why: str,
    batch_cost: float | None,
) -> None:
    plan = SimpleNamespace(spec=SimpleNamespace(provider=provider, model=model))
    chosen = estimate._modes(plan, cost, duration)  # type: ignore[arg-type]
    assert chosen["recommended_mode"] == mode and why in chosen["mode_reason"]
    assert chosen["batch_cost_usd"] == (None if batch_cost is None else pytest.approx(batch_cost))
