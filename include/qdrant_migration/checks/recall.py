"""What the ``recall_check`` sensor measures: the target is indexed, complete, and its
approximate search finds what exact search finds.

Each call of :func:`poke` is one poke of the sensor and only reads. It answers "not yet"
(None) while Qdrant is still optimizing or indexing, and raises
:class:`~include.qdrant_migration.checks.CheckFailedError` as soon as waiting cannot help
(points missing, points without vectors, recall below the threshold on a fully indexed
collection).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration.checks import CheckFailedError
from include.qdrant_migration.checks.completeness import Completeness, require_complete
from include.qdrant_migration.plan import Plan
from include.qdrant_migration.qdrant import dense_vector, is_local, server_version
from include.qdrant_migration.state import StateStore, now_iso
from include.qdrant_migration.strategies import strategy_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str


@dataclass(frozen=True)
class RecallResult:
    """The sensor's evidence: the ``recall_check`` XCom."""

    readiness: str
    recall_at_k: float | None
    k: int
    threshold: float
    sample_queries: int
    completeness: Completeness
    #: When the check that passed ended, and how long it took (the report's timeline).
    checked_at: str | None = None
    check_seconds: float | None = None


def _vector_params(info: qm.CollectionInfo, name: str | None) -> qm.VectorParams | None:
    vectors = info.config.params.vectors
    if isinstance(vectors, qm.VectorParams):
        return vectors
    return (vectors or {}).get(name or "")


def readiness(client: QdrantClient, collection: str, vector_name: str | None = None) -> Readiness:
    """Green, and (on a server) HNSW built for every vector that should be indexed."""
    info = client.get_collection(collection)
    if info.status != qm.CollectionStatus.GREEN:
        return Readiness(False, f"collection status is {info.status.value} (optimizing)")
    if server_version(client) is None:
        return Readiness(True, "embedded store: searches are exact, there is no index to build")
    points = info.points_count or 0
    threshold_kb = info.config.optimizer_config.indexing_threshold or 0
    indexed = info.indexed_vectors_count or 0
    params = _vector_params(info, vector_name)
    size_kb = points * (params.size if params is not None else 0) * 4 / 1024
    # The server indexes segments above indexing_threshold KB of vectors; smaller ones are
    # searched exactly, which is what recall is measured against anyway.
    if threshold_kb and size_kb >= threshold_kb and indexed < points:
        return Readiness(False, f"{indexed}/{points} vectors indexed")
    return Readiness(True, f"green, {indexed}/{points} vectors indexed")


def sample_points(
    client: QdrantClient, collection: str, size: int, vector_name: str | None
) -> list[qm.ScoredPoint]:
    """A random sample of points with payloads and the migrated vector."""
    return client.query_points(
        collection,
        query=qm.SampleQuery(sample=qm.Sample.RANDOM),
        limit=size,
        with_vectors=[vector_name] if vector_name else True,
        with_payload=True,
    ).points


def index_recall(
    client: QdrantClient,
    collection: str,
    vector_name: str | None,
    queries: list[list[float]],
    k: int,
    params: qm.SearchParams | None = None,
) -> float | None:
    """Mean recall@k of approximate search (with ``params``) against exact search (None:
    no queries)."""
    recalls = []
    # The embedded store searches exactly whatever the params say (and warns that they do
    # nothing): ask it without them.
    exactly = None if is_local(client) else qm.SearchParams(exact=True)
    params = None if is_local(client) else params
    for vector in queries:
        ann = client.query_points(
            collection, query=vector, using=vector_name, limit=k, search_params=params
        )
        exact = client.query_points(
            collection, query=vector, using=vector_name, limit=k, search_params=exactly
        )
        truth = {p.id for p in exact.points}
        recalls.append(len(truth & {p.id for p in ann.points}) / max(len(truth), 1))
    return statistics.fmean(recalls) if recalls else None


def poke(client: QdrantClient, plan: Plan, state: StateStore) -> RecallResult | None:
    """One poke: None while not indexed yet, the evidence once every check passes."""
    started = time.monotonic()
    spec = plan.spec
    target, vector = plan.target_collection, plan.new_vector
    ready = readiness(client, target, vector)
    if not ready.ready:
        log.info("%s not ready: %s", target, ready.reason)
        return None
    completeness = strategy_of(plan).measure(client, state)
    require_complete(plan, completeness)
    samples = sample_points(client, target, spec.recall_sample_size, vector)
    queries = [v for p in samples if (v := dense_vector(p, vector))]
    recall = index_recall(client, target, vector, queries, spec.recall_k)
    if recall is not None and recall < spec.recall_threshold:
        raise CheckFailedError(
            f"recall@{spec.recall_k} of approximate vs exact search on {target!r} is "
            f"{recall:.3f}, below the threshold {spec.recall_threshold}. Raise hnsw_ef/"
            "ef_construct or m on the collection, or lower recall_threshold if that is "
            "acceptable."
        )
    return RecallResult(
        readiness=ready.reason,
        recall_at_k=None if recall is None else round(recall, 4),
        k=spec.recall_k,
        threshold=spec.recall_threshold,
        sample_queries=len(queries),
        completeness=completeness,
        checked_at=now_iso(),
        check_seconds=round(time.monotonic() - started, 2),
    )


@dataclass(frozen=True)
class QuantizedRecall:
    """recall@k of approximate search on quantized vectors, with rescoring by the original
    vectors (oversampling :data:`RESCORE_OVERSAMPLING`) and without, against exact search:
    what a quantization change costs, and what rescoring buys back."""

    readiness: str
    k: int
    sample_queries: int
    rescored: float | None
    not_rescored: float | None


#: Candidates fetched per result when rescoring with the original vectors (rescoring the
#: top k alone only reorders them; Qdrant suggests oversampling 2-3 for binary codes).
RESCORE_OVERSAMPLING = 3.0
#: Seconds a quantization change may take to be applied before recall is measured anyway.
QUANTIZED_WAIT_S = 600.0


def quantized_recall(
    client: QdrantClient,
    collection: str,
    vector_name: str | None,
    *,
    k: int,
    sample_size: int,
    wait_s: float = QUANTIZED_WAIT_S,
    heartbeat: Callable[[], None] = lambda: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> QuantizedRecall:
    """Once the collection is re-quantized (green, indexed), recall@k with and without
    rescoring; measured on whatever is there after ``wait_s`` (and says so)."""
    deadline = clock() + wait_s
    ready = readiness(client, collection, vector_name)
    while not ready.ready and clock() < deadline:
        heartbeat()
        sleep(2.0)
        ready = readiness(client, collection, vector_name)
    state = ready.reason if ready.ready else f"still not ready after {wait_s:.0f}s: {ready.reason}"
    samples = sample_points(client, collection, sample_size, vector_name)
    queries = [v for p in samples if (v := dense_vector(p, vector_name))]

    def measured(rescore: bool) -> float | None:
        quantized = (
            qm.QuantizationSearchParams(rescore=True, oversampling=RESCORE_OVERSAMPLING)
            if rescore
            else qm.QuantizationSearchParams(rescore=False)
        )
        params = qm.SearchParams(quantization=quantized)
        found = index_recall(client, collection, vector_name, queries, k, params)
        return None if found is None else round(found, 4)

    return QuantizedRecall(state, k, len(queries), measured(True), measured(False))
