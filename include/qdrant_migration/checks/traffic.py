"""The query-log replay: the users' own queries, old model on the old collection vs new
model on the new one, top-k side by side.

For each sampled query (``querylog.py``) both sides are searched as the application
searches them (the collection's index, dense vectors) and the two top-k lists compared:
overlap@k (how many results stay), rank-biased overlap (how much the order at the top
moves, ``ranking.rbo``), and how many of the new side's results the old one did not
return. The report shows both distributions (quantiles and a histogram), and the queries
that changed most (lowest RBO, then lowest overlap, then most new results) with both
result lists by title.

With a judge (a reranker, ``rerankers/``), each query's pool (the union of both top-10
lists) is scored, and each side's top 10 gets a judged nDCG@10 against the pool's ideal
order (``ranking.ndcg``); the report gives the mean of each side with a 95% bootstrap
interval over queries (paired, seeded) and the queries that lost most. The judged drop
gates like a labeled one (:func:`failures`, ``quality_tolerance``) unless a labeled
evaluation set is given: human labels then gate, and the judge's numbers are shown.

Privacy: queries and titles are kept cut to :data:`TRUNCATE` characters; nothing else of
a query or a document leaves this module (the documents' texts go to the judge only).
What is returned, and so the report, its XCom and the state store, holds only that.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration import querylog
from include.qdrant_migration.checks.quality import Side
from include.qdrant_migration.checks.ranking import (
    RBO_P,
    Distribution,
    Interval,
    ndcg,
    overlap_at_k,
    paired_bootstrap,
    rbo,
)
from include.qdrant_migration.plan import Plan
from include.qdrant_migration.providers import EmbeddingProvider
from include.qdrant_migration.qdrant import PointId, point_id
from include.qdrant_migration.rerankers import Reranker
from include.qdrant_migration.spec import MigrationSpec
from include.qdrant_migration.texts import extract_text

log = logging.getLogger(__name__)

#: Characters kept of a query or a title (the rest is cut, with an ellipsis).
TRUNCATE = 80
#: Queries shown that changed most, and judged queries named that lost most.
CHANGED_SHOWN = 10
WORST_JUDGED = 5
#: The depth the judge's nDCG looks at, and queries searched per request.
NDCG_AT = 10
SEARCH_BATCH = 64


def cut(text: str, limit: int = TRUNCATE) -> str:
    """``text`` on one line, at most ``limit`` characters (an ellipsis ends a cut one)."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


@dataclass(frozen=True)
class Result:
    """A result as the report shows it: its id, its title (cut), and the judge's score."""

    id: PointId
    title: str
    judged: float | None = None


@dataclass(frozen=True)
class ChangedQuery:
    """A query whose results changed much, with both top-k lists."""

    query: str
    overlap: float
    rbo: float
    #: New-side results the old top-k did not hold.
    new_results: int
    old: list[Result] = field(default_factory=list)
    new: list[Result] = field(default_factory=list)
    old_ndcg: float | None = None
    new_ndcg: float | None = None


@dataclass(frozen=True)
class JudgedQuery:
    query: str
    old_ndcg: float
    new_ndcg: float


@dataclass(frozen=True)
class Judged:
    """Judged nDCG@10 of both sides over the replayed queries."""

    judge: str
    queries: int
    old_ndcg: float
    new_ndcg: float
    #: 95% bootstrap intervals (queries resampled, paired) of each mean and of new - old.
    old_interval: Interval
    new_interval: Interval
    difference_interval: Interval
    #: Whether it gates the swap (no labeled evaluation set), and its tolerance.
    gates: bool
    tolerance: float
    #: Documents judged per query (the pool of both top-10 lists), calls and what they billed.
    pool: float = 0.0
    calls: int = 0
    billed: float | None = None
    billing_unit: str | None = None
    seconds: float = 0.0
    worst: list[JudgedQuery] = field(default_factory=list)


@dataclass(frozen=True)
class Replay:
    """What replaying the query log on both sides measured (texts cut to TRUNCATE)."""

    log: str
    #: Entries read from the log, those without text, distinct queries, queries replayed.
    entries: int
    skipped: int
    distinct: int
    queries: int
    k: int
    title_field: str | None
    overlap: Distribution
    rbo: Distribution
    rbo_p: float = RBO_P
    #: New-side top-k results in all, and those the old top-k of the same query lacked.
    results: int = 0
    new_results: int = 0
    #: Documents the new side returned that no old list of any replayed query held.
    unseen_documents: int = 0
    changed: list[ChangedQuery] = field(default_factory=list)
    judge: Judged | None = None


@dataclass(frozen=True)
class Prepared:
    """What ``assess_compatibility`` learned before the run: the sample (in memory only:
    it is priced and timed, never stored) and one call of the judge, timed."""

    sample: querylog.Sample
    judge: Reranker | None = None
    judge_call_s: float | None = None


def prepare(
    client: QdrantClient,
    spec: MigrationSpec,
    inline: Sequence[object] | None,
    judge: Reranker | None,
) -> Prepared | None:
    """Read and check the query log, and call the judge twice: the first call checks it (a
    wrong key, host or model fails now), the second is timed (the first pays for the
    connection, and any wait a 429 imposes). None without a query log."""
    if spec.query_log is None:
        return None
    sample = querylog.read(client, spec.query_log, inline, spec.query_log_sample)
    took = None
    if judge is not None:
        judge.check_access()
        # A call the size of a replay's: a query and a pool of the source's documents.
        points, _ = client.scroll(spec.alias, limit=2 * NDCG_AT, with_payload=[spec.text_field])
        texts = [extract_text(p.payload, spec.text_field)[0] for p in points]
        started = time.monotonic()
        judge.score(sample.queries[0], [t for t in texts if t] or sample.queries[:1])
        took = time.monotonic() - started
    return Prepared(sample, judge, took)


@dataclass
class _Row:
    """One replayed query, in memory: its full text and both rankings."""

    query: str
    old: list[PointId]
    new: list[PointId]
    overlap: float
    rbo: float
    new_results: int
    old_ndcg: float | None = None
    new_ndcg: float | None = None
    judged: dict[PointId, float] = field(default_factory=dict)


def replay(
    client: QdrantClient,
    plan: Plan,
    models: tuple[EmbeddingProvider, EmbeddingProvider],
    sample: querylog.Sample,
    judge: Reranker | None = None,
) -> Replay:
    """Search every sampled query on both sides, compare, and judge (``models``: the old
    model, then the new one)."""
    spec = plan.spec
    k = spec.recall_k
    depth = max(k, NDCG_AT) if judge is not None else k
    wanted = [f for f in (spec.title_field, spec.text_field if judge else None) if f]
    old = Side(plan.source.collection, models[0], plan.vector_name)
    new = Side(plan.target_collection, models[1], plan.new_vector)
    payloads: dict[PointId, dict[str, Any]] = {}
    old_hits = _search(client, old, sample.queries, depth, wanted, payloads)
    new_hits = _search(client, new, sample.queries, depth, wanted, payloads)
    rows = []
    for query, o, n in zip(sample.queries, old_hits, new_hits, strict=True):
        fresh = len(set(n[:k]) - set(o[:k]))
        rows.append(_Row(query, o, n, overlap_at_k(o, n, k), rbo(o[:k], n[:k]), fresh))
    judged = _judge(judge, rows, payloads, spec) if judge is not None else None
    old_seen = {i for r in rows for i in r.old[:k]}
    new_seen = {i for r in rows for i in r.new[:k]}
    log.info(
        "Replayed %d queries of the query log on both models (%d new results of %d)",
        len(rows),
        sum(r.new_results for r in rows),
        sum(len(r.new[:k]) for r in rows),
    )
    return Replay(
        log=spec.query_log.describe() if spec.query_log else "",
        entries=sample.entries,
        skipped=sample.skipped,
        distinct=sample.distinct,
        queries=len(rows),
        k=k,
        title_field=spec.title_field,
        overlap=Distribution.of([r.overlap for r in rows]),
        rbo=Distribution.of([r.rbo for r in rows]),
        results=sum(len(r.new[:k]) for r in rows),
        new_results=sum(r.new_results for r in rows),
        unseen_documents=len(new_seen - old_seen),
        changed=[_changed(r, k, spec, payloads) for r in _most_changed(rows)],
        judge=judged,
    )


def _search(
    client: QdrantClient,
    side: Side,
    queries: Sequence[str],
    limit: int,
    fields: list[str],
    payloads: dict[PointId, dict[str, Any]],
) -> list[list[PointId]]:
    """Each query's ranked ids on ``side``; the payload fields wanted land in ``payloads``."""
    vectors = side.provider.embed_queries(list(queries))
    ranked: list[list[PointId]] = []
    selector: bool | list[str] = sorted({f.split(".")[0] for f in fields}) or False
    for start in range(0, len(vectors), SEARCH_BATCH):
        requests = [
            qm.QueryRequest(query=v, using=side.vector_name, limit=limit, with_payload=selector)
            for v in vectors[start : start + SEARCH_BATCH]
        ]
        for answer in client.query_batch_points(side.collection, requests=requests):
            ids = []
            for point in answer.points:
                pid = point_id(point.id)
                payloads.setdefault(pid, point.payload or {})
                ids.append(pid)
            ranked.append(ids)
    return ranked


def _most_changed(rows: list[_Row]) -> list[_Row]:
    """Lowest RBO first; ties by lowest overlap, then by most new results."""
    order = sorted(rows, key=lambda r: (r.rbo, r.overlap, -r.new_results, r.query))
    return order[:CHANGED_SHOWN]


def _title(pid: PointId, payload: dict[str, Any], title_field: str | None) -> str:
    title = extract_text(payload, title_field)[0] if title_field else None
    return cut(title) if title else f"#{pid}"


def _changed(
    row: _Row, k: int, spec: MigrationSpec, payloads: dict[PointId, dict[str, Any]]
) -> ChangedQuery:
    def results(ids: list[PointId]) -> list[Result]:
        return [
            Result(i, _title(i, payloads.get(i, {}), spec.title_field), row.judged.get(i))
            for i in ids[:k]
        ]

    return ChangedQuery(
        query=cut(row.query),
        overlap=round(row.overlap, 4),
        rbo=round(row.rbo, 4),
        new_results=row.new_results,
        old=results(row.old),
        new=results(row.new),
        old_ndcg=None if row.old_ndcg is None else round(row.old_ndcg, 4),
        new_ndcg=None if row.new_ndcg is None else round(row.new_ndcg, 4),
    )


def _judge(
    judge: Reranker, rows: list[_Row], payloads: dict[PointId, dict[str, Any]], spec: MigrationSpec
) -> Judged | None:
    """Score each query's pool with the judge (its calls in parallel, within its budget)."""

    def pool(row: _Row) -> list[tuple[PointId, str]]:
        ids = dict.fromkeys([*row.old[:NDCG_AT], *row.new[:NDCG_AT]])
        texts = ((i, extract_text(payloads.get(i), spec.text_field)[0]) for i in ids)
        return [(i, text) for i, text in texts if text is not None]

    def score(row: _Row) -> float | None:
        documents = pool(row)
        if not documents:
            return 0.0
        answer = judge.score(row.query, [text for _, text in documents])
        row.judged = {i: s for (i, _), s in zip(documents, answer.scores, strict=True)}
        row.old_ndcg = ndcg(row.old, row.judged, NDCG_AT)
        row.new_ndcg = ndcg(row.new, row.judged, NDCG_AT)
        return answer.billed

    started = time.monotonic()
    calls = ThreadPoolExecutor(max_workers=judge.concurrency)
    try:
        billed = list(calls.map(score, rows))
    finally:  # a call that failed for good: the queued ones are not made
        calls.shutdown(cancel_futures=True)
    if not rows:
        return None
    old = [r.old_ndcg or 0.0 for r in rows]
    new = [r.new_ndcg or 0.0 for r in rows]
    old_ci, new_ci, difference = paired_bootstrap(old, new)
    worst = sorted(rows, key=lambda r: ((r.new_ndcg or 0.0) - (r.old_ndcg or 0.0), r.query))
    return Judged(
        judge=f"{judge.name}/{judge.model}",
        queries=len(rows),
        old_ndcg=round(statistics.fmean(old), 4),
        new_ndcg=round(statistics.fmean(new), 4),
        old_interval=old_ci,
        new_interval=new_ci,
        difference_interval=difference,
        gates=not spec.eval_set,
        tolerance=spec.quality_tolerance,
        pool=round(statistics.fmean(len(r.judged) for r in rows), 2),
        calls=len(rows),
        billed=None if None in billed else sum(b or 0.0 for b in billed),
        billing_unit=judge.billing_unit,
        seconds=round(time.monotonic() - started, 2),
        worst=[
            JudgedQuery(cut(r.query), round(r.old_ndcg or 0.0, 4), round(r.new_ndcg or 0.0, 4))
            for r in worst[:WORST_JUDGED]
            if (r.new_ndcg or 0.0) < (r.old_ndcg or 0.0)
        ],
    )


def failures(replay: Replay | None) -> list[str]:
    """The judged gate, when it gates and fails: what fell, the queries that lost most,
    what to do. Empty when it passes or does not gate."""
    judged = replay.judge if replay is not None else None
    if judged is None or not judged.gates:
        return []
    if judged.old_ndcg - judged.new_ndcg <= judged.tolerance:
        return []
    worst = "; ".join(f"{w.query!r} ({w.old_ndcg:.2f} → {w.new_ndcg:.2f})" for w in judged.worst)
    return [
        f"Judged nDCG@10 falls from {judged.old_ndcg:.3f} {_interval(judged.old_interval)} "
        f"(old model) to {judged.new_ndcg:.3f} {_interval(judged.new_interval)} (new model) "
        f"on {judged.queries} replayed production queries, as {judged.judge} judges them: "
        f"more than the tolerance {judged.tolerance}. Queries that lost most: {worst}. Keep "
        "the old model, or raise quality_tolerance if the trade-off is intended."
    ]


def _interval(interval: Interval) -> str:
    return f"[95% {interval[0]:.3f} to {interval[1]:.3f}]"
