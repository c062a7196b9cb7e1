"""How long a run takes, phase by phase: the plan's estimate and the report's actuals.

A run spends its time in more than the backfill: it assesses, creates the target and
plans the partitions (**setup**), fits a linear map (**linear map fit**), embeds or
transforms every point (**backfill**), copies what changed meanwhile (**catch-up**),
waits for the new index (**index build**, on a server), checks completeness and recall
(**recall check**), and compares both models' search quality (**quality comparison**,
with the eval set's queries embedded by both models). The approval's wait is a person's
and is not estimated; the swap comes after it.

The estimate of each phase comes from what ``assess_compatibility`` measured on this
worker and this store: the backfill's timed batches (or, for hosted providers, the
measured request latency and the rate budgets), a page scrolled and a few searches of the
source timed, the eval set's queries embedded by the new model and by the old one (with
the old model's first call, its load), and the time assess itself took. Its range comes
from that measurement's spread: the slowest timed batch against the typical one. What is
not measured (a server's index build, the scheduler's gaps between tasks) is a rule of
thumb, and its range is wide.

The actuals are a timeline the tasks record (:class:`Timeline`): the run's start, the
backfill's first start and last end, the end of catch-up, of restore_indexing and of the
recall check, and the report. Each phase runs from the end of the one before it to its
own end, so the scheduler's gaps land in the phase that waited for them, and the phases
add up to the whole run.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from qdrant_client import QdrantClient

from include.qdrant_migration.checks.recall import RecallResult
from include.qdrant_migration.linear_map import MapSummary
from include.qdrant_migration.plan import PhaseEstimate, Plan
from include.qdrant_migration.providers import EmbeddingProvider
from include.qdrant_migration.qdrant import is_local
from include.qdrant_migration.sync.backfill import PartitionResult
from include.qdrant_migration.sync.pacing import ProbeTarget, probe_vectors

SETUP = "setup"
LINEAR_MAP_FIT = "linear map fit"
BACKFILL = "backfill"
CATCH_UP = "catch-up"
INDEX_BUILD = "index build"
RECALL_CHECK = "recall check"
QUALITY = "quality comparison"
#: In the order a run goes through them.
ORDER = (SETUP, LINEAR_MAP_FIT, BACKFILL, CATCH_UP, INDEX_BUILD, RECALL_CHECK, QUALITY)

#: Seconds between one task's end and the next one's start, when every task is a new
#: process (a worker starts Python, imports Airflow and parses the DAG file), and when
#: they share one (``dag.test()``). Rules of thumb, measured on the 2-core development
#: machine; a busy scheduler is slower.
TASK_GAP_S = 4.0
SHARED_PROCESS_GAP_S = 0.3
#: HNSW vectors a server indexes per second and per thread, at 384 dimensions (the
#: engine-backed test server built 100k 384-d vectors in about 60 s on 2 threads).
HNSW_VECTORS_PER_THREAD_S = 830.0
#: Points whose sample texts a page of the timing scroll holds.
SCROLL_PAGE = 256
#: Queries timed per model for the quality comparison, and for a query log's replay (small
#: calls overstate a local model's time per query: all-MiniLM-L6-v2 embeds 1,000 short
#: queries at 3 ms each, timed at 18 ms on 32 of them and 7 ms on 128, on 2 cores).
QUERY_SAMPLE = 32
REPLAY_QUERY_SAMPLE = 128
#: Range of a rule-of-thumb phase (not measured here): half to twice.
GUESS = (0.5, 2.0)


@dataclass(frozen=True)
class ModelTiming:
    """A model's query embedding as timed: per query (local) or per request (hosted)."""

    #: Seconds per query text, typical and slowest of the timed calls.
    per_query_s: float
    per_query_slow_s: float
    #: The first call's extra seconds (a model load, a cold connection).
    first_call_s: float
    #: Hosted: texts per request and seconds per request (a latency, not this CPU).
    per_request: int | None = None
    per_request_s: float | None = None

    def seconds(self, queries: int, *, slow: bool = False) -> float:
        if not queries:
            return 0.0
        if self.per_request and self.per_request_s is not None:
            requests = math.ceil(queries / self.per_request)
            slower = self.per_query_slow_s / self.per_query_s if slow and self.per_query_s else 1.0
            return requests * self.per_request_s * slower
        return queries * (self.per_query_slow_s if slow else self.per_query_s)


def time_queries(provider: EmbeddingProvider, texts: Sequence[str]) -> ModelTiming | None:
    """Embed ``texts`` as queries in two calls after a first one, timing each."""
    if not texts:
        return None
    started = time.monotonic()
    provider.embed_queries(list(texts[:1]))
    first = time.monotonic() - started
    half = max(1, len(texts) // 2)
    calls = []
    for part in (texts[:half], texts[half:]):
        if not part:
            continue
        started = time.monotonic()
        provider.embed_queries(list(part))
        calls.append((len(part), time.monotonic() - started))
    per = [s / n for n, s in calls]
    typical, slowest = statistics.median(per), max(per)
    hosted = provider.needs_connection
    limit = provider.limits.max_inputs_per_request
    return ModelTiming(
        per_query_s=typical,
        per_query_slow_s=slowest,
        first_call_s=max(0.0, first - typical),
        per_request=limit if hosted else None,
        per_request_s=statistics.median(s for _, s in calls) if hosted else None,
    )


#: A hosted provider's request latency when it is not timed (a few requests at most).
ASSUMED_LATENCY_S = (0.5, 2.0)


def assumed_latency(provider: EmbeddingProvider) -> ModelTiming:
    """A hosted model's query requests at a typical latency (not measured)."""
    low, high = ASSUMED_LATENCY_S
    limit = provider.limits.max_inputs_per_request
    return ModelTiming(low / limit, high / limit, 0.0, limit, low)


@dataclass(frozen=True)
class StoreTiming:
    """The store, as timed: a page scrolled, a few searches of the source."""

    scan_s_per_point: float
    search_s: float
    embedded: bool

    @classmethod
    def measure(cls, client: QdrantClient, plan: Plan) -> StoreTiming:
        started = time.monotonic()
        page, _ = client.scroll(
            plan.source.collection, limit=SCROLL_PAGE, with_payload=True, with_vectors=False
        )
        scan = (time.monotonic() - started) / max(len(page), 1)
        if is_local(client):
            search = _brute_force_s(plan.source.points, plan.source.size)
            return cls(scan, search, embedded=True)
        target = ProbeTarget(plan.source.collection, plan.vector_name)
        searches = []
        for vector in probe_vectors(client, target)[:3]:
            started = time.monotonic()
            client.query_points(target.collection, query=vector, using=target.vector_name, limit=10)
            searches.append(time.monotonic() - started)
        return cls(scan, statistics.median(searches) if searches else 0.0, embedded=False)


#: Rows of the matrix :func:`_brute_force_s` times (scaled to the collection's size).
_TIMED_ROWS = 20_000


def _brute_force_s(points: int, dimension: int) -> float:
    """One search of the embedded store, which compares the query with every vector: the
    same product timed on random vectors here, scaled to ``points``. (A real query would
    do, but the embedded store then hands back its vectors rounded to float32, which is
    not the "reads nothing it changes" assess promises.)"""
    import numpy as np

    rows = max(1, min(points, _TIMED_ROWS))
    matrix = np.random.default_rng(0).standard_normal((rows, dimension)).astype(np.float32)
    query = matrix[0].copy()
    started = time.monotonic()
    for _ in range(3):
        scores = matrix @ query
        np.argpartition(-scores, min(10, rows - 1))
    return (time.monotonic() - started) / 3 * points / rows


@dataclass(frozen=True)
class Measured:
    """Everything the phase estimates are made from (assess measured it)."""

    #: Seconds assess_compatibility had run when the estimate was made.
    assess_s: float
    store: StoreTiming
    #: The backfill's phase, as estimate.py computes it: (expected, slow end, basis).
    backfill: tuple[float, float, str]
    #: Stored documents' texts embedded (self-retrieval embeds them as queries): the
    #: backfill's timed batches.
    documents: ModelTiming | None
    new_queries: ModelTiming | None
    old_queries: ModelTiming | None
    #: dag.test(): every task in this one process (models stay loaded, no task start-up).
    shared_process: bool = False
    #: Eval queries, and how many times each side embeds them (hybrid search embeds again).
    eval_queries: int = 0
    #: The query log's replayed queries (embedded and searched once per side), the judge's
    #: calls (one per query), how many it makes at once and one call as timed (None: not
    #: timed, a typical latency is assumed).
    replay_queries: int = 0
    judge_calls: int = 0
    judge_concurrency: int = 1
    judge_call_s: float | None = None
    #: Queries each model's time per query was measured on.
    timed_queries: int = QUERY_SAMPLE
    #: The linear map's fit: (expected, slow end) seconds, when the strategy fits one.
    fit: tuple[float, float] | None = None


def _phase(name: str, low: float, high: float, basis: str) -> PhaseEstimate:
    return PhaseEstimate(name, round(low, 1), round(max(low, high), 1), basis)


def estimate_phases(plan: Plan, m: Measured) -> list[PhaseEstimate]:
    """The run's phases up to the report, each with its range and how it was found."""
    spec, points = plan.spec, plan.source.points
    gap = SHARED_PROCESS_GAP_S if m.shared_process else TASK_GAP_S
    loads_new = 0.0 if m.shared_process or m.new_queries is None else m.new_queries.first_call_s
    scan = points * m.store.scan_s_per_point
    scale = plan.target_dimension / max(plan.source.size, 1)
    search = m.store.search_s * (scale if m.store.embedded else 1.0)
    phases = [
        _phase(
            SETUP,
            m.assess_s + 4 * gap + scan / 10,
            m.assess_s + 4 * gap * GUESS[1] + scan / 5,
            f"assess_compatibility took {m.assess_s:.0f} s; then creating the target and "
            f"planning the partitions (their ids read), {4} task starts",
        )
    ]
    if m.fit is not None:
        basis = "the map's sample embedded at the backfill's measured rate, then fitted"
        phases.append(_phase(LINEAR_MAP_FIT, m.fit[0] + gap, m.fit[1] + gap * 2, basis))
    embed, embed_slow, basis = m.backfill
    partitions = math.ceil(points / spec.points_per_partition)
    loads = math.ceil(partitions / spec.parallel_tasks(partitions)) * loads_new  # per wave
    phases.append(_phase(BACKFILL, embed + loads + gap, embed_slow + loads + gap * 2, basis))
    passes = 1 if spec.updated_at_field else 3  # a compare pass reads both sides and the states
    phases.append(
        _phase(
            CATCH_UP,
            gap + loads_new + passes * scan,
            gap * 2 + loads_new + passes * scan * 2,
            f"one pass with no changes: {points} points read "
            f"{'by timestamp' if spec.updated_at_field else 'on both sides'} "
            f"({m.store.scan_s_per_point * 1000:.2f} ms a point, timed); each change "
            "written meanwhile adds its embedding",
        )
    )
    phases.append(_index_phase(plan, m, gap))
    checks = spec.recall_sample_size
    phases.append(
        _phase(
            RECALL_CHECK,
            3 * scan + 2 * checks * search,
            2 * (3 * scan + 2 * checks * search),
            f"both collections compared ({points} points) and {checks} queries searched "
            f"approximately and exactly ({search * 1000:.1f} ms a search, timed)",
        )
    )
    phases.append(_quality_phase(plan, m, gap, loads_new, search))
    return phases


def _index_phase(plan: Plan, m: Measured, gap: float) -> PhaseEstimate:
    if m.store.embedded:
        return _phase(INDEX_BUILD, 2 * gap, 4 * gap, "embedded store: no index to build")
    threads = plan.spec.budget.max_indexing_threads or 2
    vectors_s = HNSW_VECTORS_PER_THREAD_S * threads * 384 / max(plan.target_dimension, 1)
    build = plan.source.points / vectors_s
    return _phase(
        INDEX_BUILD,
        2 * gap + build * GUESS[0],
        2 * gap + build * GUESS[1],
        f"a rule of thumb, not measured: about {vectors_s:.0f} vectors/s with {threads} "
        "indexing thread(s); a server with more free cores is faster, one busy with "
        "production traffic slower",
    )


def _quality_phase(
    plan: Plan, m: Measured, gap: float, loads_new: float, search: float
) -> PhaseEstimate:
    spec = plan.spec
    sample = spec.recall_sample_size
    own = (m.documents.seconds(sample) if m.documents else 0.0) + sample * search
    queries, replayed = m.eval_queries, m.replay_queries
    hybrid_new = bool(plan.add_sparse or plan.source.carried_bm25)
    hybrid_old = bool(plan.source.carried_bm25)
    new_times = queries * (1 + hybrid_new) + replayed
    old_times = queries * (1 + hybrid_old) + replayed
    searches = queries * (2 + 2 * hybrid_new + 2 * hybrid_old) + 2 * replayed
    low = high = gap + loads_new + own + searches * search
    high += gap
    basis = [f"{sample} sampled documents searched with their own text"]
    if replayed:
        basis.append(f"{replayed} queries of the query log replayed on both sides")
    judge = _judge_seconds(m)
    if judge is not None:
        low, high = low + judge[0], high + judge[1]
        basis.append(judge[2])
    if m.old_queries is None:
        basis.append("no old model known: nothing compared")
    else:
        new = m.new_queries
        low += (new.seconds(new_times) if new else 0.0) + m.old_queries.seconds(old_times)
        high += (new.seconds(new_times, slow=True) if new else 0.0) + m.old_queries.seconds(
            old_times, slow=True
        )
        load_old = 0.0 if m.shared_process else m.old_queries.first_call_s
        low, high = low + load_old, high + load_old
        basis.append(
            f"{new_times} queries embedded by the new model and {old_times} by the old one, "
            f"timed on {m.timed_queries} of them; {searches} searches"
        )
    return _phase(QUALITY, low, high * 1.1, "; ".join(basis))


#: A judge's call when it is not timed: Cohere's rerank of about 20 short documents takes
#: 0.1 to 0.2 s on a dedicated instance; a shared API adds the network and queueing.
JUDGE_CALL_S = (0.2, 1.0)


def _judge_seconds(m: Measured) -> tuple[float, float, str] | None:
    """The judge's calls, ``judge_concurrency`` at a time: (expected, slow end, basis)."""
    if not m.judge_calls:
        return None
    waves = math.ceil(m.judge_calls / max(m.judge_concurrency, 1))
    if m.judge_call_s is not None:
        low, high = m.judge_call_s, m.judge_call_s * GUESS[1]
        how = f"{m.judge_call_s:.2f} s a call (one timed)"
    else:
        low, high = JUDGE_CALL_S
        how = f"{low:g} to {high:g} s a call (not timed)"
    basis = f"{m.judge_calls} judge calls, {m.judge_concurrency} at a time, {how}"
    return waves * low, waves * high, basis


# -- the actuals ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Timeline:
    """When each phase of a run ended, as its tasks recorded it (ISO 8601, UTC)."""

    run_started_at: str | None = None
    backfill_started_at: str | None = None
    backfill_finished_at: str | None = None
    caught_up_at: str | None = None
    indexing_restored_at: str | None = None
    recall_checked_at: str | None = None
    recall_check_s: float | None = None
    reported_at: str | None = None
    #: The linear map's fit, when this run fitted one.
    fit_s: float | None = None

    @classmethod
    def of(
        cls,
        run_started_at: str | None,
        partitions: Sequence[PartitionResult],
        caught_up: Mapping[str, Any],
        restored: Mapping[str, Any] | None,
        checked: RecallResult,
        reported_at: str,
        fitted: MapSummary | None,
    ) -> Timeline:
        """The timeline the run's tasks recorded, as build_report finds it in their XComs."""
        this_run = fitted is not None and run_started_at and fitted.fitted_at >= run_started_at
        return cls(
            run_started_at=run_started_at,
            backfill_started_at=min(
                (p.started_at for p in partitions if p.started_at), default=None
            ),
            backfill_finished_at=max(
                (p.finished_at for p in partitions if p.finished_at), default=None
            ),
            caught_up_at=caught_up.get("caught_up_at"),
            indexing_restored_at=(restored or {}).get("restored_at"),
            recall_checked_at=checked.checked_at,
            recall_check_s=checked.check_seconds,
            reported_at=reported_at,
            fit_s=fitted.seconds if this_run and fitted is not None else None,
        )


def _between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return max(0.0, (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds())


def actual_phases(t: Timeline) -> dict[str, float]:
    """Each phase's seconds, from the end of the one before it to its own end."""
    found: dict[str, float | None] = {
        SETUP: _between(t.run_started_at, t.backfill_started_at),
        BACKFILL: _between(t.backfill_started_at, t.backfill_finished_at),
        CATCH_UP: _between(t.backfill_finished_at, t.caught_up_at),
    }
    setup = found[SETUP]
    if t.fit_s is not None and setup is not None:
        found[SETUP] = max(0.0, setup - t.fit_s)
        found[LINEAR_MAP_FIT] = t.fit_s
    checked = t.recall_checked_at
    index = _between(t.caught_up_at, checked)
    if index is not None and t.recall_check_s is not None:
        found[INDEX_BUILD] = max(0.0, index - t.recall_check_s)
        found[RECALL_CHECK] = t.recall_check_s
    found[QUALITY] = _between(checked, t.reported_at)
    return {name: round(v, 1) for name in ORDER if (v := found.get(name)) is not None}
