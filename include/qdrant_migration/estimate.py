"""The plan's estimate: what a migration will cost before it runs, for the dry run and the
report (which puts the actuals next to it).

* **Tokens** are counted with the provider's own tokenizer (tiktoken for OpenAI, offline)
  on a random sample of the source's texts, after the provider's too-long and empty-text
  rules, and extrapolated to the point count (exact when the sample is the whole source).
* **Cost** is tokens times the price in ``data/prices.json`` (one file, with its date).
* **Duration** follows the rate budget in ``provider_options`` (``tokens_per_minute``,
  ``requests_per_minute``) when there is one (a lower bound); otherwise sample texts are
  embedded in several batches after a warm-up call and timed, giving a range (median to
  slowest batch) and saying how it was measured. Strategies that only copy vectors are
  bounded by Qdrant's write rate.
* **Disk and RAM**: points x dimensions x 4 bytes plus the sampled payload size, for the
  new collection; about twice the source while both exist.

Nothing here writes anything.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration import linear_map, phases, quantization, sparse
from include.qdrant_migration.checks import quality, traffic
from include.qdrant_migration.phases import ModelTiming
from include.qdrant_migration.plan import Estimate, PhaseEstimate, Plan
from include.qdrant_migration.providers import EmbeddingProvider, batch_api_of
from include.qdrant_migration.qdrant import is_local
from include.qdrant_migration.spec import Strategy, batch_unavailable
from include.qdrant_migration.strategies import strategy_of
from include.qdrant_migration.sync.pacing import ProbeTarget, measure_at_rest
from include.qdrant_migration.texts import extract_text, query_like

PRICES = Path(__file__).resolve().parent / "data" / "prices.json"
#: Texts whose tokens are counted (a random sample; the whole source if smaller).
TOKEN_SAMPLE = 1000
#: Texts embedded to measure a local model's throughput (after a warm-up call), and a
#: hosted one's request latency when no rate budget is given (those cost a little).
THROUGHPUT_SAMPLE = 96
HOSTED_THROUGHPUT_SAMPLE = 32
#: Points per second Qdrant reads and writes when nothing is embedded (Qdrant's own
#: migration tool copies about 880/s sequentially; an embedded store on disk about 685/s).
COPY_POINTS_PER_S = 700.0
#: Bytes of HNSW links per point in RAM (m=16: two layers of 16 four-byte ids, rounded up).
HNSW_BYTES_PER_POINT = 128


@cache
def load_prices(path: Path = PRICES) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8")))


def price_per_million(provider: str, model: str, table: str = "prices") -> float | None:
    """USD per 1M tokens from the price table; None when it has no price for the model.
    ``table="rerank"``: a judge's USD per 1,000 billed units."""
    prices = load_prices().get(table, {})
    for key in (f"{provider}/{model}", f"{provider}/*"):
        if key in prices:
            return float(prices[key])
    return None


@dataclass(frozen=True)
class TextSample:
    """What a random sample of the source says about all of it."""

    points: int  # sampled points
    usable: int  # of which the provider would embed
    tokens: int  # tokens of the usable texts, as sent
    query_tokens: int  # tokens of query-sized pieces of them (the linear map's queries)
    payload_bytes: float  # mean JSON size of a payload
    texts: list[str]

    @property
    def tokens_per_text(self) -> float:
        return self.tokens / self.usable if self.usable else 0.0

    @property
    def usable_share(self) -> float:
        return self.usable / self.points if self.points else 1.0


def sample_texts(
    client: QdrantClient, collection: str, text_field: str, provider: EmbeddingProvider
) -> TextSample:
    found = client.query_points(
        collection,
        query=qm.SampleQuery(sample=qm.Sample.RANDOM),
        limit=TOKEN_SAMPLE,
        with_payload=True,
    ).points
    texts = [t for p in found if (t := extract_text(p.payload, text_field)[0]) is not None]
    prepared = provider.prepare(texts) if texts else None
    sent = list(prepared.texts) if prepared is not None else []
    counter = provider.token_counter()
    queries = [query_like(t) for t in sent]
    return TextSample(
        points=len(found),
        usable=len(sent),
        tokens=prepared.total_tokens if prepared is not None else 0,
        query_tokens=sum(counter.count(queries)) if queries else 0,
        payload_bytes=statistics.fmean(len(json.dumps(p.payload or {})) for p in found)
        if found
        else 0.0,
        texts=sent,
    )


def _scale(value: float, sample: TextSample, points: int) -> int:
    return round(value * points / sample.points) if sample.points else 0


def _work(plan: Plan, sample: TextSample) -> tuple[int, int, int]:
    """(texts embedded as documents, tokens of documents and queries, vectors copied)."""
    points = plan.source.points
    if plan.strategy in (Strategy.FULL_REEMBED, Strategy.IN_PLACE):
        return _scale(sample.usable, sample, points), _scale(sample.tokens, sample, points), 0
    if plan.strategy is Strategy.LINEAR_MAP:
        fit = round(min(plan.spec.map_sample_size, points) * sample.usable_share)
        # held-out and validation documents get a query each (retention and the choice)
        held_out = math.ceil(fit * linear_map.HELD_OUT_SHARE) + math.ceil(
            fit * linear_map.VALIDATION_SHARE
        )
        per_query = sample.query_tokens / sample.usable if sample.usable else 0.0
        tokens = fit * sample.tokens_per_text + held_out * per_query
        return fit, round(tokens), points
    if plan.strategy is Strategy.QUANTIZATION_ONLY:
        return 0, 0, 0
    return 0, 0, points  # truncation


def _requests(plan: Plan, provider: EmbeddingProvider, texts: int, tokens: int) -> int:
    """Embedding requests: sub-batches of each partition, split by the provider's limits."""
    if not texts:
        return 0
    limits = provider.limits
    per_request = min(plan.spec.batch_size, limits.max_inputs_per_request)
    if plan.strategy is Strategy.LINEAR_MAP:
        return math.ceil(texts / per_request)
    points, size = plan.source.points, plan.spec.points_per_partition
    share = texts / points if points else 1.0
    partitions = [size] * (points // size) + ([points % size] if points % size else [])
    by_count = sum(math.ceil(part * share / per_request) for part in partitions)
    by_tokens = (
        math.ceil(tokens / limits.max_tokens_per_request) if limits.max_tokens_per_request else 0
    )
    return max(by_count, by_tokens)


@dataclass(frozen=True)
class Throughput:
    """Timed sample batches, after a warm-up call (a model load or a cold connection)."""

    texts: int
    batches: list[tuple[int, float]]  # (texts, seconds) per timed batch

    @property
    def rates(self) -> list[float]:
        return [n / max(s, 1e-6) for n, s in self.batches]

    @property
    def latencies(self) -> list[float]:
        return [s for _, s in self.batches]


def measure_throughput(provider: EmbeddingProvider, texts: list[str], batch: int) -> Throughput:
    """Embed ``texts`` in batches of ``batch``, timing each after a warm-up call.

    They are embedded as queries: assessing never embeds a stored document (the model's
    cost per text is the same either way).
    """
    provider.embed_queries(texts[:2])  # loads the model / opens the connection: not timed
    timed = []
    for start in range(0, len(texts), batch):
        part = texts[start : start + batch]
        started = time.monotonic()
        provider.embed_queries(part)
        timed.append((len(part), time.monotonic() - started))
    return Throughput(len(texts), timed)


@dataclass(frozen=True)
class EmbedTime:
    """The backfill's embedding: expected and slow-end seconds, how they were found, and the
    timed batches as a per-document timing (None: nothing timed)."""

    seconds: float | None
    slow_s: float | None
    basis: str
    documents: ModelTiming | None = None


def _embed_seconds(
    plan: Plan, provider: EmbeddingProvider, sample: TextSample, texts: int, requests: int
) -> EmbedTime:
    """Time to embed ``texts``: the rate budget, else measured."""
    if not texts:
        return EmbedTime(0.0, None, "no embedding")
    options = plan.spec.provider_options
    tpm, rpm = options.get("tokens_per_minute"), options.get("requests_per_minute")
    if tpm or rpm:
        tokens = texts * sample.tokens_per_text
        minutes = max(tokens / float(tpm) if tpm else 0.0, requests / float(rpm) if rpm else 0.0)
        basis = ", ".join(
            f"{k}={options[k]}"
            for k in ("tokens_per_minute", "requests_per_minute")
            if options.get(k)
        )
        return EmbedTime(minutes * 60, None, f"at least: the rate budget ({basis}) caps it")
    local = not provider.needs_connection
    probe = sample.texts[: THROUGHPUT_SAMPLE if local else HOSTED_THROUGHPUT_SAMPLE]
    if plan.spec.embedding_mode == "batch":  # no source text is sent twice: stand-ins
        probe = [
            f"Timing sample {i}. " + "lorem ipsum " * (len(t) // 12) for i, t in enumerate(probe)
        ]
    if not probe:
        return EmbedTime(None, None, "no sample text to measure")
    size = max(
        1, min(plan.spec.batch_size, provider.limits.max_inputs_per_request, len(probe) // 3 or 1)
    )
    measured = measure_throughput(provider, probe, size)
    how = f"{len(measured.batches)} batches of up to {size} sample texts timed after a warm-up call"
    if local:  # bounded by this worker's CPU, whatever else runs on it
        rates = measured.rates
        fast, slow = statistics.median(rates), min(rates)
        return EmbedTime(
            texts / fast,
            texts / slow,
            f"measured {fast:.0f} texts/s (slowest batch {slow:.0f}/s): {how}; a worker "
            "busy with other tasks, or larger texts than the sample's, make it slower",
            ModelTiming(1 / fast, 1 / slow, 0.0),
        )
    partitions = math.ceil(plan.source.points / plan.spec.points_per_partition)
    parallel = plan.spec.embed_concurrency * plan.spec.parallel_tasks(partitions)
    typical, worst = statistics.median(measured.latencies), max(measured.latencies)
    basis = (
        f"measured {typical:.2f} s per request (slowest {worst:.2f} s): {how}; {parallel} "
        "requests in flight, no rate budget set (the provider's own limits may slow it)"
    )
    documents = ModelTiming(typical / size, worst / size, 0.0, size, typical)
    return EmbedTime(requests * typical / parallel, requests * worst / parallel, basis, documents)


def _stored_bytes(vector: Any) -> int:
    """Bytes of one stored vector: 8 per sparse entry (index and value), 4 per float."""
    if isinstance(vector, qm.SparseVector):
        return 8 * len(vector.indices)
    if vector and isinstance(vector[0], list):
        return 4 * sum(len(row) for row in vector)
    return 4 * len(vector)


def other_vector_bytes(client: QdrantClient, plan: Plan, sample: TextSample) -> tuple[float, float]:
    """Mean bytes per point of the carried vectors (in both collections) and of the BM25
    vector ``add_sparse`` adds (in the new one), from a random sample."""
    carried = 0.0
    if plan.source.carried:
        found = client.query_points(
            plan.source.collection,
            query=qm.SampleQuery(sample=qm.Sample.RANDOM),
            limit=TOKEN_SAMPLE,
            with_vectors=plan.carried.read(),
        ).points
        if found:
            sizes = [sum(_stored_bytes(v) for v in plan.carried.of(p).values()) for p in found]
            carried = statistics.fmean(sizes)
    added = 0.0
    if plan.add_sparse and sample.texts:
        made = sparse.computed(sample.texts)
        added = statistics.fmean(_stored_bytes(v) for v in made) * sample.usable_share
    return carried, added


def _storage(
    plan: Plan, sample: TextSample, other: tuple[float, float] = (0.0, 0.0)
) -> dict[str, Any]:
    points = plan.source.points
    payload = round(points * sample.payload_bytes)
    carried, added = round(points * other[0]), round(points * other[1])
    source_disk = points * plan.source.size * 4 + payload + carried
    if plan.strategy is Strategy.QUANTIZATION_ONLY:
        wanted = plan.spec.quantization or "none"
        extra = 0 if wanted == "none" else quantization.ram_bytes(points, plan.source.size, wanted)
        return {
            "source_disk_bytes": source_disk,
            "target_disk_bytes": extra,
            "peak_disk_bytes": source_disk + extra,
            "ram_before_bytes": quantization.ram_bytes(
                points, plan.source.size, plan.source.quantization
            ),
            "target_ram_bytes": quantization.ram_bytes(points, plan.source.size, wanted),
        }
    kept: str = plan.spec.quantization or plan.source.quantization
    new_vectors = points * plan.target_dimension * 4
    # A new collection holds a second copy of the payloads and the carried vectors; a new
    # named vector (in place) holds only the new vectors.
    copies = strategy_of(plan).copies_points
    target_disk = new_vectors + (payload + carried + added if copies else 0)
    both = {
        Strategy.FULL_REEMBED.value: source_disk + new_vectors + payload + carried + added,
        Strategy.IN_PLACE.value: source_disk + new_vectors,
    }
    return {
        "source_disk_bytes": source_disk,
        "target_disk_bytes": target_disk,
        "peak_disk_bytes": source_disk + target_disk,
        "target_ram_bytes": quantization.ram_bytes(points, plan.target_dimension, kept)
        + points * HNSW_BYTES_PER_POINT
        + (carried + added if copies else 0),
        "peak_disk_by_strategy": both if plan.strategy in _RE_EMBEDDING else {},
    }


#: The strategies that embed every text: the dry run shows the disk of both side by side.
_RE_EMBEDDING = (Strategy.FULL_REEMBED, Strategy.IN_PLACE)


def _names(client: QdrantClient, plan: Plan) -> tuple[list[str], str]:
    """The collections a run would create, and what happens to the alias."""
    strategy = strategy_of(plan)
    return strategy.creates(client), strategy.alias_change()


def _duration(
    plan: Plan, provider: EmbeddingProvider, sample: TextSample, work: tuple[int, int, int]
) -> EmbedTime:
    """The backfill's wall time: embedding and copying overlap, so the slower."""
    texts, _, copied = work
    if plan.strategy is Strategy.QUANTIZATION_ONLY:
        return EmbedTime(
            0.0, None, "nothing copied or embedded; Qdrant re-quantizes in the background"
        )
    requests = _requests(plan, provider, texts, work[1])
    embedded = _embed_seconds(plan, provider, sample, texts, requests)
    embed_s, slow_s, basis = embedded.seconds, embedded.slow_s, embedded.basis
    written = copied or plan.source.points
    copy_s = written / COPY_POINTS_PER_S
    if embed_s is None:
        return embedded
    if copy_s >= embed_s:
        basis = f"writing {written} points at about {COPY_POINTS_PER_S:.0f} points/s"
    budget = plan.spec.budget
    paced_s = written / budget.points_per_second if budget.points_per_second else 0.0
    if paced_s > max(embed_s, copy_s):
        basis = (
            f"the Qdrant budget: {written} points at {budget.points_per_second:g} points/s "
            f"(the provider alone would take {_human(max(embed_s, copy_s))})"
        )
    if budget.adaptive:
        basis += "; the adaptive budget slows the writes while the cluster's searches are slow"
    slow = None if slow_s is None else round(max(slow_s, copy_s, paced_s), 1)
    return EmbedTime(round(max(embed_s, copy_s, paced_s), 1), slow, basis, embedded.documents)


#: Savings (USD) from which batch mode is recommended even when online is fast enough.
BATCH_WORTH_USD = 10.0
BATCH_WINDOW_S = 24 * 3600


def _human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _modes(plan: Plan, cost: float | None, duration: float | None) -> dict[str, Any]:
    """Online vs batch: the batch's cost (the provider's batch API's price), and which mode
    to use and why."""
    refused = batch_unavailable(plan.spec.provider, plan.spec.model)
    api = batch_api_of(plan.spec.provider)
    if refused is not None or api is None:
        return {"batch_cost_usd": None, "recommended_mode": "online", "mode_reason": refused or ""}
    if not cost:
        return {
            "batch_cost_usd": 0.0 if cost == 0 else None,
            "recommended_mode": "online",
            "mode_reason": "nothing to embed, or no price known: batch mode saves nothing",
        }
    batch = round(cost * api.price_factor, 8)
    saved = cost - batch
    online = "an unknown time" if duration is None else f"about {_human(duration)}"
    window = f"{api.window_s / 3600:g} h" if api.window_s else "an unknown time"
    if duration is not None and duration > BATCH_WINDOW_S:
        mode, why = "batch", f"online would take {online}, {api.beyond_a_day}"
    elif api.price_factor >= 1:
        mode, why = (
            "online",
            f"{api.title} cost what online requests cost ({api.price_basis}); online takes "
            f"{online}",
        )
    elif saved >= BATCH_WORTH_USD:
        mode, why = "batch", f"saves ${saved:,.2f}; done within {window} instead of {online} online"
    else:
        mode, why = (
            "online",
            f"batch would save only ${saved:,.2f} and take up to {window}; online takes {online}",
        )
    return {"batch_cost_usd": batch, "recommended_mode": mode, "mode_reason": why}


def _phases(
    client: QdrantClient,
    plan: Plan,
    provider: EmbeddingProvider,
    old_model: EmbeddingProvider | None,
    sample: TextSample,
    backfill: EmbedTime,
    shared_process: bool,
    started: float | None,
    replay: traffic.Prepared | None = None,
) -> list[PhaseEstimate]:
    """Every phase of the run up to the report, from what is timed here (phases.py)."""
    if not strategy_of(plan).rebuilds or backfill.seconds is None:
        return []
    labeled = quality.load_eval_set(plan.spec.eval_set)
    replayed = replay.sample.queries if replay is not None and old_model is not None else []
    queries = [q.query for q in labeled] or replayed or [query_like(t) for t in sample.texts]
    probe = queries[: phases.REPLAY_QUERY_SAMPLE if replayed else phases.QUERY_SAMPLE]

    def timed(model: EmbeddingProvider) -> phases.ModelTiming | None:
        # A hosted model is timed (two requests) only for many queries (an eval set, a
        # query log); otherwise its few requests are priced at a typical latency.
        if model.needs_connection and not (labeled or replayed):
            return phases.assumed_latency(model)
        return phases.time_queries(model, probe)

    new_queries = timed(provider)
    old_queries = timed(old_model) if old_model is not None else None
    if not labeled and not replayed and old_model is not None:
        labeled_count = min(quality.UNLABELED_QUERIES, plan.spec.recall_sample_size)
    else:
        labeled_count = len(labeled)
    judge = replay.judge if replay is not None and replayed else None
    fit = None
    if plan.strategy is Strategy.LINEAR_MAP and backfill.documents is not None:
        fitting = min(plan.spec.map_sample_size, plan.source.points)
        fit = (backfill.documents.seconds(fitting), backfill.documents.seconds(fitting, slow=True))
    measured = phases.Measured(
        assess_s=time.monotonic() - started if started is not None else 0.0,
        store=phases.StoreTiming.measure(client, plan),
        backfill=(backfill.seconds, backfill.slow_s or backfill.seconds, backfill.basis),
        documents=backfill.documents or new_queries,
        new_queries=new_queries,
        old_queries=old_queries,
        shared_process=shared_process,
        eval_queries=labeled_count if old_model is not None else 0,
        fit=fit,
        replay_queries=len(replayed),
        judge_calls=len(replayed) if judge is not None else 0,
        judge_concurrency=judge.concurrency if judge is not None else 1,
        judge_call_s=replay.judge_call_s if replay is not None else None,
        timed_queries=len(probe),
    )
    return phases.estimate_phases(plan, measured)


def source_search_ms(client: QdrantClient, plan: Plan) -> dict[str, Any]:
    """The source's search latency before the migration writes (probe queries): the
    baseline the backfill's probes are compared with. Not on the embedded store: one
    process opens it at a time, so no application searches it beside the migration."""
    if is_local(client):
        return {"probes": 0, "embedded": True}
    at_rest = measure_at_rest(client, ProbeTarget(plan.source.collection, plan.vector_name))
    return {**at_rest.percentiles(), "probes": at_rest.count}


def now() -> float:
    """The estimate's clock (``time.monotonic``; tests replace ``time`` here)."""
    return time.monotonic()


def build(
    client: QdrantClient,
    plan: Plan,
    provider: EmbeddingProvider,
    *,
    old_model: EmbeddingProvider | None = None,
    shared_process: bool = False,
    started: float | None = None,
    replay: traffic.Prepared | None = None,
) -> Estimate:
    """The estimate of ``plan`` (``started``: when assess began, on ``time.monotonic()``;
    ``shared_process``: every task runs in this process, as under ``dag.test()``;
    ``replay``: the query log sampled, and the judge, to price and time)."""
    sample = sample_texts(client, plan.source.collection, plan.spec.text_field, provider)
    work = _work(plan, sample)
    texts, tokens, copied = work
    backfill = _duration(plan, provider, sample, work)
    phases = _phases(
        client, plan, provider, old_model, sample, backfill, shared_process, started, replay
    )
    duration = round(sum(p.seconds for p in phases), 1) if phases else backfill.seconds
    duration_max = round(sum(p.max_seconds for p in phases), 1) if phases else None
    basis = (
        "the phases below, up to the report; the approval's wait is not estimated (a person "
        "decides), nor the swap after it"
        if phases
        else backfill.basis
    )
    price = price_per_million(plan.spec.provider, provider.model)
    counter = provider.token_counter()
    creates, alias_change = _names(client, plan)
    return Estimate(
        points=plan.source.points,
        texts_to_embed=texts,
        vectors_copied=copied,
        tokens=tokens,
        tokens_per_text=round(sample.tokens_per_text, 1),
        token_sample=sample.points,
        tokens_exact=sample.points >= plan.source.points and counter.exact,
        tokenizer=counter.description,
        embed_requests=_requests(plan, provider, texts, tokens),
        price_per_million_tokens=price,
        prices_as_of=str(load_prices()["as_of"]),
        cost_usd=None if price is None else round(tokens * price / 1e6, 8),
        **_modes(plan, None if price is None else tokens * price / 1e6, backfill.seconds),
        duration_s=duration,
        duration_max_s=duration_max,
        duration_basis=basis,
        phases=phases,
        payload_bytes_per_point=round(sample.payload_bytes),
        creates=creates,
        alias_change=alias_change,
        source_search_ms=source_search_ms(client, plan),
        **_storage(plan, sample, other_vector_bytes(client, plan, sample)),
        **_map_preview(client, plan, provider, sample, price),
        **_replay_costs(plan, provider, old_model, replay),
    )


def _replay_costs(
    plan: Plan,
    provider: EmbeddingProvider,
    old_model: EmbeddingProvider | None,
    replay: traffic.Prepared | None,
) -> dict[str, Any]:
    """The replay's queries embedded by both models, and the judge's calls, priced."""
    if replay is None or old_model is None:
        return {}
    queries = replay.sample.queries
    new_tokens, old_tokens = provider.count_tokens(queries), old_model.count_tokens(queries)
    prices = (
        price_per_million(plan.spec.provider, provider.model),
        price_per_million(old_model.name, old_model.model),
    )
    cost = None
    if prices[0] is not None and prices[1] is not None:
        cost = round((new_tokens * prices[0] + old_tokens * prices[1]) / 1e6, 8)
    found: dict[str, Any] = {
        "replay_queries": len(queries),
        "replay_tokens": new_tokens + old_tokens,
        "replay_cost_usd": cost,
    }
    judge = replay.judge
    if judge is not None:
        # One call per query, over the union of both top-10 lists: 20 documents at most.
        units = len(queries) * judge.units(2 * traffic.NDCG_AT)
        price = price_per_million(judge.name, judge.model, table="rerank")
        found |= {
            "judge_calls": len(queries),
            "judge_units": units,
            "judge_price_per_1k": price,
            "judge_cost_usd": None if price is None else round(units * price / 1000, 6),
        }
    return found


def _map_preview(
    client: QdrantClient,
    plan: Plan,
    provider: EmbeddingProvider,
    sample: TextSample,
    price: float | None,
) -> dict[str, Any]:
    """A linear map's retention on a small sample, and what it saves against a re-embed."""
    if plan.strategy is not Strategy.LINEAR_MAP:
        return {}
    points = plan.source.points
    fitted = linear_map.preview(client, plan, provider)
    full = _scale(sample.tokens, sample, points)
    _, sample_tokens, _ = _work(plan, sample)
    saved = None if price is None else round((full - sample_tokens) * price / 1e6, 6)
    return {
        "map_retention_preview": None if fitted is None else fitted.retention,
        "map_preview_texts": 0 if fitted is None else fitted.pool,
        "map_saved_usd": saved,
    }
