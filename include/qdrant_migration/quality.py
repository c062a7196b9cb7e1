"""Search quality of the old collection with the old model vs the new one with the new model.

Index recall (approximate vs exact) says the new index finds what the new vectors say is
nearest; it says nothing about whether the new model is better. With an evaluation set
(queries with the ids that should be found) we measure recall@k, MRR and nDCG@10 for both
sides, list the queries that regressed most, and fail when the new side is worse by more
than a tolerance. Without labels we report how much the two top-k lists overlap and how
the score distribution moved: score thresholds tuned for the old model do not carry over.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient

from include.qdrant_migration.providers import EmbeddingProvider

WORST = 5


class QualityRegressionError(RuntimeError):
    """The new model retrieves worse than the old one by more than the tolerance."""


@dataclass(frozen=True)
class EvalQuery:
    query: str
    relevant_ids: list[Any]


@dataclass(frozen=True)
class Side:
    """One side of the comparison: a collection searched with the model that built it."""

    collection: str
    provider: EmbeddingProvider
    vector_name: str | None


def load_eval_set(value: str | list[dict[str, Any]] | None) -> list[EvalQuery]:
    """An evaluation set from a JSONL path, inline JSONL text, or a list of objects."""
    if not value:
        return []
    if isinstance(value, str):
        path = Path(value)
        text = path.read_text(encoding="utf-8") if path.is_file() else value
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        rows = list(value)
    queries = []
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not row.get("query") or not row.get("relevant_ids"):
            raise ValueError(
                f"Evaluation set row {number} must be an object with 'query' (text) and "
                f"'relevant_ids' (a list of point ids); got {str(row)[:120]!r}."
            )
        queries.append(EvalQuery(str(row["query"]), list(row["relevant_ids"])))
    return queries


def _ranked(client: QdrantClient, side: Side, texts: Sequence[str], k: int) -> list[list[Any]]:
    vectors = side.provider.embed_queries(list(texts))
    results = []
    for vector in vectors:
        found = client.query_points(side.collection, query=vector, using=side.vector_name, limit=k)
        results.append(found.points)
    return results


def _metrics(hits: list[Any], relevant: set[Any], k: int) -> dict[str, float]:
    ids = hits[:k]
    found = [i for i in ids if i in relevant]
    first = next((rank for rank, i in enumerate(ids, 1) if i in relevant), None)
    dcg = sum(1 / math.log2(rank + 1) for rank, i in enumerate(ids[:10], 1) if i in relevant)
    ideal = sum(1 / math.log2(rank + 1) for rank in range(1, min(len(relevant), 10) + 1))
    return {
        "recall": len(found) / len(relevant),
        "mrr": 1 / first if first else 0.0,
        "ndcg10": dcg / ideal if ideal else 0.0,
    }


def compare_labeled(
    client: QdrantClient, old: Side, new: Side, queries: list[EvalQuery], k: int, tolerance: float
) -> dict[str, Any]:
    """Side-by-side metrics; raises QualityRegressionError past the tolerance."""
    texts = [q.query for q in queries]
    old_hits = _ranked(client, old, texts, max(k, 10))
    new_hits = _ranked(client, new, texts, max(k, 10))
    rows: list[dict[str, Any]] = []
    for query, o, n in zip(queries, old_hits, new_hits, strict=True):
        relevant = set(query.relevant_ids)
        rows.append(
            {
                "query": query.query,
                "old": _metrics([p.id for p in o], relevant, k),
                "new": _metrics([p.id for p in n], relevant, k),
            }
        )
    table = {
        side: {m: round(statistics.fmean(r[side][m] for r in rows), 4) for m in rows[0][side]}
        for side in ("old", "new")
    }
    worst = sorted(rows, key=lambda r: r["new"]["ndcg10"] - r["old"]["ndcg10"])[:WORST]
    result = {
        "labeled": True,
        "queries": len(rows),
        "k": k,
        "old": table["old"],
        "new": table["new"],
        "tolerance": tolerance,
        "worst_regressions": [
            {
                "query": r["query"],
                "old_ndcg10": round(r["old"]["ndcg10"], 3),
                "new_ndcg10": round(r["new"]["ndcg10"], 3),
            }
            for r in worst
            if r["new"]["ndcg10"] < r["old"]["ndcg10"]
        ],
    }
    drop = table["old"]["ndcg10"] - table["new"]["ndcg10"]
    if drop > tolerance:
        raise QualityRegressionError(
            f"nDCG@10 falls from {table['old']['ndcg10']:.3f} (old model) to "
            f"{table['new']['ndcg10']:.3f} (new model) on {len(rows)} evaluation queries, more "
            f"than the tolerance {tolerance}. Worst query: {worst[0]['query']!r}. Keep the old "
            "model, or raise quality_tolerance if the trade-off is intended."
        )
    return result


def compare_unlabeled(
    client: QdrantClient, old: Side, new: Side, texts: list[str], k: int
) -> dict[str, Any]:
    """Overlap of old and new top-k, and how the score distribution moved."""
    old_hits = _ranked(client, old, texts, k)
    new_hits = _ranked(client, new, texts, k)
    overlaps = [
        len({p.id for p in o} & {p.id for p in n}) / k
        for o, n in zip(old_hits, new_hits, strict=True)
    ]

    return {
        "labeled": False,
        "queries": len(texts),
        "k": k,
        "mean_overlap_at_k": round(statistics.fmean(overlaps), 4) if overlaps else None,
        "old_top1_scores": _score_quantiles(old_hits, 0),
        "new_top1_scores": _score_quantiles(new_hits, 0),
        "old_topk_scores": _score_quantiles(old_hits, k - 1),
        "new_topk_scores": _score_quantiles(new_hits, k - 1),
        "note": "Scores are not comparable across models: re-tune any score_threshold "
        "from the new distribution.",
    }


def _score_quantiles(hits: list[list[Any]], rank: int) -> dict[str, float]:
    values = [h[rank].score for h in hits if len(h) > rank]
    if not values:
        return {}
    cuts = statistics.quantiles(values, n=10) if len(values) > 1 else values * 9
    return {
        "p10": round(cuts[0], 4),
        "p50": round(statistics.median(values), 4),
        "p90": round(cuts[-1], 4),
    }


def query_like(text: str, limit: int = 160) -> str:
    """A query-sized piece of a document: its first sentence, capped."""
    return text.split(". ")[0][:limit]
