"""Search quality of the old collection with the old model vs the new one with the new model.

Index recall (approximate vs exact) says the new index finds what the new vectors say is
nearest; it says nothing about whether the new model is better. With an evaluation set
(queries with the ids that should be found) we measure recall@k, MRR@k and nDCG@10 for both
sides, list the queries that regressed most, and fail when the new side is worse by more
than a tolerance. Without labels we report how much the two top-k lists overlap and how
the score distribution moved: score thresholds tuned for the old model do not carry over.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration import sparse
from include.qdrant_migration.plan import Plan
from include.qdrant_migration.providers import EmbeddingProvider
from include.qdrant_migration.qdrant import PointId, is_local, point_id
from include.qdrant_migration.spec import EvalRow, parse_eval_set
from include.qdrant_migration.texts import extract_text, query_like

WORST = 5


class QualityRegressionError(RuntimeError):
    """The new model retrieves worse than the old one by more than the tolerance."""


@dataclass(frozen=True)
class EvalQuery:
    query: str
    relevant_ids: list[PointId]


@dataclass(frozen=True)
class Regression:
    query: str
    old_ndcg_at_10: float
    new_ndcg_at_10: float


@dataclass(frozen=True)
class Quality:
    """Old model on the old collection vs new model on the new one.

    ``labeled``: measured on an evaluation set (recall@k, MRR@k, nDCG@10 per side); otherwise
    the overlap of both top-k lists and how the scores moved; ``skipped`` says why there
    was no comparison at all.
    """

    labeled: bool = False
    skipped: str | None = None
    queries: int = 0
    k: int = 0
    old: dict[str, float] = field(default_factory=dict)
    new: dict[str, float] = field(default_factory=dict)
    tolerance: float | None = None
    worst_regressions: list[Regression] = field(default_factory=list)
    mean_overlap_at_k: float | None = None
    old_top1_scores: dict[str, float] = field(default_factory=dict)
    new_top1_scores: dict[str, float] = field(default_factory=dict)
    old_topk_scores: dict[str, float] = field(default_factory=dict)
    new_topk_scores: dict[str, float] = field(default_factory=dict)
    #: Labeled: the same metrics for hybrid search (the dense vector fused by RRF with the
    #: sparse one named in ``hybrid_vector``) on each side that has it; empty otherwise.
    hybrid_vector: str | None = None
    hybrid_old: dict[str, float] = field(default_factory=dict)
    hybrid_new: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SelfRetrieval:
    """How often a document's own text, as a new-model query, finds it first."""

    queries: int = 0
    hit_at_1: float | None = None
    #: MRR@k: the mean of 1/rank of the document in its own query's top k (0 if absent).
    mrr_at_k: float | None = None
    k: int = 0


@dataclass(frozen=True)
class Side:
    """One side of the comparison: a collection searched with the model that built it."""

    collection: str
    provider: EmbeddingProvider
    vector_name: str | None
    #: A BM25 sparse vector to fuse with the dense results (hybrid search); None: dense only.
    sparse: str | None = None

    def hybrid(self, sparse: str | None) -> Side | None:
        return dataclasses.replace(self, sparse=sparse) if sparse else None


def load_eval_set(value: str | Sequence[EvalRow] | None) -> list[EvalQuery]:
    """An evaluation set from a JSONL path, inline JSONL, or a list of objects.

    The spec already parsed and checked it in the first task (:func:`spec.parse_eval_set`);
    a spec restored from an older record may still hold the raw value.
    """
    queries = []
    for row in parse_eval_set(value):
        ids = row["relevant_ids"]
        assert isinstance(ids, list)  # parse_eval_set checked it
        queries.append(
            EvalQuery(str(row["query"]), [i if isinstance(i, int) else str(i) for i in ids])
        )
    return queries


def _ranked(
    client: QdrantClient, side: Side, texts: Sequence[str], k: int
) -> list[list[qm.ScoredPoint]]:
    vectors = side.provider.embed_queries(list(texts))
    results = []
    for text, vector in zip(texts, vectors, strict=True):
        if side.sparse is None:
            found = client.query_points(
                side.collection, query=vector, using=side.vector_name, limit=k
            )
        else:  # hybrid: both result lists fused by reciprocal rank
            found = client.query_points(
                side.collection,
                prefetch=[
                    qm.Prefetch(query=vector, using=side.vector_name, limit=HYBRID_DEPTH),
                    qm.Prefetch(
                        query=sparse.query(client, text), using=side.sparse, limit=HYBRID_DEPTH
                    ),
                ],
                query=qm.FusionQuery(fusion=qm.Fusion.RRF),
                limit=k,
            )
        results.append(found.points)
    return results


#: Candidates each side of a hybrid search contributes to the fusion.
HYBRID_DEPTH = 50


#: The key of nDCG@10 in a metrics table (the other keys carry the run's k).
NDCG = "ndcg@10"


def metric_names(k: int) -> tuple[str, str, str]:
    """The keys of a metrics table: recall@k, MRR@k, nDCG@10."""
    return f"recall@{k}", f"mrr@{k}", NDCG


def definitions(k: int) -> list[str]:
    """What each metric of the labeled comparison means, for the report."""
    return [
        f"recall@{k}: share of a query's relevant points found in its top {k}",
        f"MRR@{k}: mean of 1/rank of the first relevant point in the top {k} (0 if none)",
        "nDCG@10: rank-discounted gain of the relevant points in the top 10, 1 = ideal order",
    ]


def _metrics(hits: list[PointId], relevant: set[PointId], k: int) -> dict[str, float]:
    """recall@k and MRR@k over the first k hits; nDCG@10 over the first 10, whatever k is."""
    ids = hits[:k]
    found = [i for i in ids if i in relevant]
    first = next((rank for rank, i in enumerate(ids, 1) if i in relevant), None)
    dcg = sum(1 / math.log2(rank + 1) for rank, i in enumerate(hits[:10], 1) if i in relevant)
    ideal = sum(1 / math.log2(rank + 1) for rank in range(1, min(len(relevant), 10) + 1))
    recall_k, mrr_k, ndcg = metric_names(k)
    return {
        recall_k: len(found) / len(relevant),
        mrr_k: 1 / first if first else 0.0,
        ndcg: dcg / ideal if ideal else 0.0,
    }


def _table(
    client: QdrantClient, side: Side | None, queries: list[EvalQuery], k: int
) -> dict[str, float]:
    """One side's mean metrics over the evaluation set (empty without a side)."""
    if side is None:
        return {}
    hits = _ranked(client, side, [q.query for q in queries], max(k, 10))
    rows = [
        _metrics([point_id(p.id) for p in found], set(q.relevant_ids), k)
        for q, found in zip(queries, hits, strict=True)
    ]
    return {m: round(statistics.fmean(r[m] for r in rows), 4) for m in rows[0]}


def compare_labeled(
    client: QdrantClient,
    old: Side,
    new: Side,
    queries: list[EvalQuery],
    k: int,
    tolerance: float,
    hybrid: tuple[Side | None, Side | None] = (None, None),
) -> Quality:
    """Side-by-side metrics (:func:`failure` says whether they pass), and hybrid search's
    where a side has a BM25 vector (``hybrid``: the old and the new side as fused)."""
    texts = [q.query for q in queries]
    old_hits = _ranked(client, old, texts, max(k, 10))
    new_hits = _ranked(client, new, texts, max(k, 10))
    rows: list[tuple[str, dict[str, float], dict[str, float]]] = []
    for query, o, n in zip(queries, old_hits, new_hits, strict=True):
        relevant = set(query.relevant_ids)
        rows.append(
            (
                query.query,
                _metrics([point_id(p.id) for p in o], relevant, k),
                _metrics([point_id(p.id) for p in n], relevant, k),
            )
        )
    metrics = list(rows[0][1])
    old_table = {m: round(statistics.fmean(r[1][m] for r in rows), 4) for m in metrics}
    new_table = {m: round(statistics.fmean(r[2][m] for r in rows), 4) for m in metrics}
    worst = sorted(rows, key=lambda r: r[2][NDCG] - r[1][NDCG])[:WORST]
    hybrid_old, hybrid_new = hybrid
    named = hybrid_new or hybrid_old
    return Quality(
        labeled=True,
        queries=len(rows),
        k=k,
        old=old_table,
        new=new_table,
        hybrid_vector=named.sparse if named is not None else None,
        hybrid_old=_table(client, hybrid_old, queries, k),
        hybrid_new=_table(client, hybrid_new, queries, k),
        tolerance=tolerance,
        worst_regressions=[
            Regression(text, round(o[NDCG], 3), round(n[NDCG], 3))
            for text, o, n in worst
            if n[NDCG] < o[NDCG]
        ],
    )


def failure(quality: Quality) -> str | None:
    """Why the labeled comparison fails its tolerance, or None when it passes."""
    if not quality.labeled or quality.tolerance is None:
        return None
    old, new = quality.old[NDCG], quality.new[NDCG]
    if old - new <= quality.tolerance:
        return None
    regressed = quality.worst_regressions
    worst = f" Worst query: {regressed[0].query!r}." if regressed else ""
    return (
        f"nDCG@10 falls from {old:.3f} (old model) to {new:.3f} (new model) on "
        f"{quality.queries} evaluation queries, more than the tolerance {quality.tolerance}."
        f"{worst} Keep the old model, or raise quality_tolerance if the trade-off is intended."
    )


def compare_unlabeled(
    client: QdrantClient, old: Side, new: Side, texts: list[str], k: int
) -> Quality:
    """Overlap of old and new top-k, and how the score distribution moved."""
    old_hits = _ranked(client, old, texts, k)
    new_hits = _ranked(client, new, texts, k)
    # Over the longer list: a collection smaller than k returns fewer than k hits.
    overlaps = [
        len({p.id for p in o} & {p.id for p in n}) / max(len(o), len(n), 1)
        for o, n in zip(old_hits, new_hits, strict=True)
    ]

    return Quality(
        labeled=False,
        queries=len(texts),
        k=k,
        mean_overlap_at_k=round(statistics.fmean(overlaps), 4) if overlaps else None,
        old_top1_scores=_score_quantiles(old_hits, 0),
        new_top1_scores=_score_quantiles(new_hits, 0),
        old_topk_scores=_score_quantiles(old_hits, k - 1),
        new_topk_scores=_score_quantiles(new_hits, k - 1),
    )


def _score_quantiles(hits: list[list[qm.ScoredPoint]], rank: int) -> dict[str, float]:
    values = [h[rank].score for h in hits if len(h) > rank]
    if not values:
        return {}
    cuts = statistics.quantiles(values, n=10) if len(values) > 1 else values * 9
    return {
        "p10": round(cuts[0], 4),
        "p50": round(statistics.median(values), 4),
        "p90": round(cuts[-1], 4),
    }


def self_retrieval(
    client: QdrantClient,
    side: Side,
    samples: Sequence[qm.ScoredPoint | qm.Record],
    text_field: str,
    k: int,
) -> SelfRetrieval:
    """Embed each sampled document's own text as a query with the new model: where does it rank?

    Proves the vectors really come from the new model (a vector from another model would
    not find its document) and gives a first, label-free quality signal.
    """
    texts, ids = [], []
    for point in samples:
        text, _ = extract_text(point.payload, text_field)
        if text is not None:
            texts.append(text)
            ids.append(point.id)
    if not texts:
        return SelfRetrieval(k=k)
    queries = side.provider.embed_queries(texts)
    ranks = []
    for wanted, query in zip(ids, queries, strict=True):
        found = client.query_points(
            side.collection,
            query=query,
            using=side.vector_name,
            limit=k,
            # exact on a server; the embedded store searches exactly anyway (and warns)
            search_params=None if is_local(client) else qm.SearchParams(exact=True),
        )
        hits = [p.id for p in found.points]
        ranks.append(hits.index(wanted) + 1 if wanted in hits else None)
    return SelfRetrieval(
        queries=len(ranks),
        hit_at_1=round(sum(1 for r in ranks if r == 1) / len(ranks), 4),
        mrr_at_k=round(statistics.fmean(1 / r if r else 0.0 for r in ranks), 4),
        k=k,
    )


#: Sample documents whose first sentence is a query of the label-free comparison.
UNLABELED_QUERIES = 50
#: Why a label-free comparison was not made: the query log's replay made it instead.
REPLAYED = "compared on the query log's replayed queries instead"


def evaluate(
    client: QdrantClient,
    plan: Plan,
    new_model: EmbeddingProvider,
    old_model: EmbeddingProvider | None,
) -> tuple[SelfRetrieval, Quality]:
    """Self-retrieval with the new model, and old vs new quality, all measured.

    Reads both collections and embeds queries (never stored documents) with both models.
    Nothing raises on a bad result: :func:`failures` says which gates fail, so the
    reviewer gets every measurement either way.
    """
    spec = plan.spec
    name = plan.vector_name
    samples = client.query_points(
        plan.target_collection,
        query=qm.SampleQuery(sample=qm.Sample.RANDOM),
        limit=spec.recall_sample_size,
        with_payload=True,
    ).points
    new = Side(plan.target_collection, new_model, plan.new_vector)
    own = self_retrieval(client, new, samples, spec.text_field, spec.recall_k)
    if old_model is None:
        skipped = "the old model is unknown: set source_provider and source_model"
        return own, Quality(skipped=skipped)
    old = Side(plan.source.collection, old_model, name)
    labeled = load_eval_set(spec.eval_set)
    if labeled:
        # BM25 the target gains, or one both carry: hybrid search is measured too.
        bm25 = plan.source.carried_bm25
        hybrid = (old.hybrid(bm25), new.hybrid(plan.add_sparse or bm25))
        return own, compare_labeled(
            client, old, new, labeled, spec.recall_k, spec.quality_tolerance, hybrid
        )
    if spec.query_log is not None:
        # Without labels, the replayed query log compares old and new on real queries:
        # no sample documents' sentences are needed (checks/traffic.py).
        return own, Quality(skipped=REPLAYED)
    texts = [
        query_like(text)
        for point in samples
        if (text := extract_text(point.payload, spec.text_field)[0]) is not None
    ]
    return own, compare_unlabeled(client, old, new, texts[:UNLABELED_QUERIES], spec.recall_k)


def failures(plan: Plan, own: SelfRetrieval, quality: Quality) -> list[str]:
    """The quality gates that fail, each with what to do; empty when all pass."""
    spec = plan.spec
    found = []
    if own.hit_at_1 is not None and own.hit_at_1 < spec.min_self_retrieval:
        found.append(
            f"Only {own.hit_at_1:.0%} of {own.queries} sampled documents are found first "
            f"by a query of their own text embedded with {plan.target_lineage.get('model')} "
            f"(minimum {spec.min_self_retrieval:.0%}): the target's vectors do not look like "
            "this model's. Check that the target was not written by another model."
        )
    regression = failure(quality)
    if regression is not None:
        found.append(regression)
    return found
