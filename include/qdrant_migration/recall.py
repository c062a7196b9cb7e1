"""recall_check: evidence that the new collection is complete, indexed and searches well.

Each call of :func:`check_target` is one poke of the sensor. It answers "not yet" while
Qdrant is still optimizing or indexing, and raises :class:`CheckFailedError` as soon as a
check can no longer pass by waiting (points missing after the backfill finished, points
without vectors, recall below the threshold on a fully indexed collection).
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration.backfill import skipped_ids
from include.qdrant_migration.compatibility import Plan
from include.qdrant_migration.partitions import PointId, id_key, scroll_ids
from include.qdrant_migration.providers import EmbeddingProvider
from include.qdrant_migration.qdrant import server_version
from include.qdrant_migration.quality import query_like
from include.qdrant_migration.state import StateStore
from include.qdrant_migration.texts import extract_text

log = logging.getLogger(__name__)

EXAMPLES = 10


class CheckFailedError(RuntimeError):
    """The target can never pass as it is; the message says what is wrong."""


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str


def reconcile_ids(
    client: QdrantClient, source: str, target: str, state: StateStore, migration_id: str
) -> dict[str, Any]:
    """Merge both id streams in Qdrant's id order: what is missing, what is extra.

    Streams both collections once, holding only a few example ids in memory.
    """
    skips = skipped_ids(state, migration_id)
    missing = skipped = extra = 0
    missing_examples: list[PointId] = []
    extra_examples: list[PointId] = []
    src, tgt = scroll_ids(client, source), scroll_ids(client, target)
    s, t = next(src, None), next(tgt, None)
    while s is not None or t is not None:
        if t is None or (s is not None and id_key(s) < id_key(t)):
            assert s is not None
            if str(s) in skips:
                skipped += 1
            else:
                missing += 1
                if len(missing_examples) < EXAMPLES:
                    missing_examples.append(s)
            s = next(src, None)
        elif s is None or id_key(t) < id_key(s):
            extra += 1
            if len(extra_examples) < EXAMPLES:
                extra_examples.append(t)
            t = next(tgt, None)
        else:
            s, t = next(src, None), next(tgt, None)
    return {
        "missing": missing,
        "missing_examples": missing_examples,
        "skipped": skipped,
        "extra": extra,
        "extra_examples": extra_examples,
    }


def readiness(client: QdrantClient, collection: str) -> Readiness:
    """Green, and (on a server) HNSW built for every vector that should be indexed."""
    info = client.get_collection(collection)
    if info.status != qm.CollectionStatus.GREEN:
        return Readiness(False, f"collection status is {info.status.value} (optimizing)")
    if server_version(client) is None:
        return Readiness(True, "embedded store: searches are exact, there is no index to build")
    points = info.points_count or 0
    threshold_kb = info.config.optimizer_config.indexing_threshold or 0
    indexed = info.indexed_vectors_count or 0
    vectors = info.config.params.vectors
    params = (
        vectors if isinstance(vectors, qm.VectorParams) else next(iter((vectors or {}).values()))
    )
    size_kb = points * params.size * 4 / 1024
    # The server indexes segments above indexing_threshold KB of vectors; smaller ones are
    # searched exactly, which is what recall is measured against anyway.
    if threshold_kb and size_kb >= threshold_kb and indexed < points:
        return Readiness(False, f"{indexed}/{points} vectors indexed")
    return Readiness(True, f"green, {indexed}/{points} vectors indexed")


def _vector_name(plan: Plan) -> str:
    return plan.source.vector_name or ""


def index_recall(client: QdrantClient, plan: Plan, samples: list[qm.ScoredPoint], k: int) -> float:
    """Mean recall@k of approximate search against exact search, sampled vectors as queries."""
    using = plan.source.vector_name
    recalls = []
    for point in samples:
        vector = point.vector if using is None else (point.vector or {})[using]  # type: ignore[index,call-overload]
        ann = client.query_points(plan.target_collection, query=vector, using=using, limit=k)
        exact = client.query_points(
            plan.target_collection,
            query=vector,
            using=using,
            limit=k,
            search_params=qm.SearchParams(exact=True),
        )
        truth = {p.id for p in exact.points}
        recalls.append(len(truth & {p.id for p in ann.points}) / max(len(truth), 1))
    return statistics.fmean(recalls) if recalls else 1.0


def self_retrieval(
    client: QdrantClient,
    plan: Plan,
    provider: EmbeddingProvider,
    samples: list[qm.ScoredPoint],
    k: int,
) -> dict[str, Any]:
    """Embed each sampled document's own text as a query with the new model: where does it rank?

    Proves the vectors really come from the new model (a vector from another model would
    not find its document) and gives a first, label-free quality signal.
    """
    texts, ids = [], []
    for point in samples:
        text, _ = extract_text(point.payload, plan.spec["text_field"])
        if text is not None:
            texts.append(text)
            ids.append(point.id)
    if not texts:
        return {"queries": 0, "hit_at_1": None, "mrr": None}
    queries = provider.embed_queries(texts)
    ranks = []
    for point_id, query in zip(ids, queries, strict=True):
        found = client.query_points(
            plan.target_collection,
            query=query,
            using=plan.source.vector_name,
            limit=k,
            search_params=qm.SearchParams(exact=True),
        )
        hits = [p.id for p in found.points]
        ranks.append(hits.index(point_id) + 1 if point_id in hits else None)
    return {
        "queries": len(ranks),
        "hit_at_1": round(sum(1 for r in ranks if r == 1) / len(ranks), 4),
        "mrr": round(statistics.fmean(1 / r if r else 0.0 for r in ranks), 4),
        "k": k,
    }


def check_target(
    client: QdrantClient,
    plan: Plan,
    backfill: dict[str, Any],
    provider: EmbeddingProvider,
    state: StateStore,
) -> dict[str, Any] | None:
    """One poke: None while not ready yet, the evidence when every check passes."""
    spec = plan.spec
    target = plan.target_collection
    ready = readiness(client, target)
    if not ready.ready:
        log.info("%s not ready: %s", target, ready.reason)
        return None
    source_count = client.count(plan.source.collection, exact=True).count
    target_count = client.count(target, exact=True).count
    ids = reconcile_ids(client, plan.source.collection, target, state, plan.migration_id)
    if ids["missing"]:
        raise CheckFailedError(
            f"{ids['missing']} source points are missing from {target!r} (e.g. ids "
            f"{ids['missing_examples']}), not counting {ids['skipped']} recorded skips. "
            "The backfill and catch-up have finished, so waiting will not add them. Clear "
            "this run's catch_up task to copy them again; if the target was damaged, delete "
            "it and re-run the migration."
        )
    without_vector = client.count(
        target,
        count_filter=qm.Filter(must_not=[qm.HasVectorCondition(has_vector=_vector_name(plan))]),
        exact=True,
    ).count
    if without_vector:
        raise CheckFailedError(f"{without_vector} points of {target!r} have no vector.")
    k = int(spec["recall_k"])
    samples = client.query_points(
        target,
        query=qm.SampleQuery(sample=qm.Sample.RANDOM),
        limit=int(spec["recall_sample_size"]),
        with_vectors=True,
        with_payload=True,
    ).points
    recall = index_recall(client, plan, samples, k)
    threshold = float(spec["recall_threshold"])
    evidence = {
        "source_points": source_count,
        "target_points": target_count,
        "reconciliation": ids,
        "points_without_vector": without_vector,
        "readiness": ready.reason,
        "recall_at_k": round(recall, 4),
        "k": k,
        "recall_threshold": threshold,
        "sample_queries": len(samples),
        "self_retrieval": self_retrieval(client, plan, provider, samples, k),
        "backfill": backfill,
        # Query-sized texts for the label-free quality comparison (not kept in the report).
        "_sample_texts": [
            query_like(t) for p in samples if (t := extract_text(p.payload, spec["text_field"])[0])
        ][:50],
    }
    own = evidence["self_retrieval"]
    minimum = float(spec.get("min_self_retrieval", 0.0))
    if own.get("hit_at_1") is not None and own["hit_at_1"] < minimum:
        raise CheckFailedError(
            f"Only {own['hit_at_1']:.0%} of {own['queries']} sampled documents are found first "
            f"by a query of their own text embedded with {plan.target_lineage.get('model')} "
            f"(minimum {minimum:.0%}): the target's vectors do not look like this model's. "
            "Check that the target was not written by another model."
        )
    if recall < threshold:
        raise CheckFailedError(
            f"recall@{k} of approximate vs exact search on {target!r} is {recall:.3f}, below "
            f"the threshold {threshold}. Raise hnsw_ef/ef_construct or m on the collection, "
            "or lower recall_threshold if that is acceptable."
        )
    return evidence
