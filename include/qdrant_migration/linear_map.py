"""The learned map: old model's vectors -> new model's, fitted on a sample (opt-in).

Re-embedding a large collection costs a token for every stored token. A map costs a
sample: embed ``map_sample_size`` texts with the new model, fit a map from their old
vectors to their new ones, and map every stored vector without another embedding call.

Three affine families are fitted (:data:`KINDS`), each regularized on a validation split:
ridge regression, orthogonal Procrustes (a rotation and one scale, after centring and
optionally whitening) and reduced-rank ridge. Each sample document gets a query, a
passage from its middle (never its opening: a document that starts with its query is
found by any map), embedded with the new model. Every sample document is also mapped by
a map fitted without it (cross-fitting), so the documents are searched as unseen ones
are. The simplest family within one standard error of the best validation recall is
kept, and its **retention** (:data:`RETENTION_MEANS`) is measured on the held-out
documents. With the old model known, its queries over the stored vectors say what not
migrating gives: a map that would search worse (by more than ``quality_tolerance``) is
refused. With an evaluation set, its labeled queries also rank their relevant documents
(read from the source) among the held-out ones, mapped vs re-embedded: the nDCG@10 the
quality gate measures later, known before anything is created.

A refused map is not stored; every measurement is logged and stored as the migration's
report. An accepted map (weights and bias, float32) lives in the state store, in chunks,
with the measurements and the calibration documents' true vectors (written instead of
mapped ones while their text is unchanged); every backfill task loads them from there.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import math
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration import codec
from include.qdrant_migration.checks import quality
from include.qdrant_migration.plan import Plan
from include.qdrant_migration.providers import EmbeddingProvider
from include.qdrant_migration.qdrant import PointId, dense_vector, point_id
from include.qdrant_migration.state import (
    Migrations,
    RecordKind,
    ReportRecord,
    Reports,
    Repository,
    StateStore,
    now_iso,
)
from include.qdrant_migration.strategy import CompatibilityError
from include.qdrant_migration.texts import extract_text, select_texts

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    Matrix = NDArray[np.float64]
    Indexes = NDArray[np.intp]

log = logging.getLogger(__name__)

#: Ridge strengths tried on the validation split (the vectors are unit length).
LAMBDAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
#: The map families tried. Each is affine (new = old @ W + b), stored and applied alike. A
#: small residual MLP was measured too (``python -m bench.linear_map``): it kept less than
#: Procrustes on the demo corpus and took 30 s to fit 2,000 texts, so it is not tried here.
KINDS = ("ridge", "procrustes", "low_rank")
RANKS = (32, 64, 128, 256)
#: Folds of the cross-fitting that maps each sample document without having seen it.
FOLDS = 5
HELD_OUT_SHARE = 0.2
VALIDATION_SHARE = 0.15
MIN_TEXTS = 30
K = 10
SEED = 0
#: float32 values per stored chunk (1 MiB): a 3072 x 3072 map is 36 records.
CHUNK_VALUES = 262_144
#: Longest silence (seconds) between two progress lines while texts are embedded.
PROGRESS_SECONDS = 5.0
#: Ids per request when the evaluation set's documents are read from the source.
RETRIEVE_PAGE = 256
#: What each held-out document's query is (the known-item check and retention use it).
HELD_OUT_QUERY = (
    "a sentence from the middle of the document (a span of words from its middle when it "
    "has one sentence)"
)
#: The one definition of retention, as the gate, the report and docs/strategies.md state it.
RETENTION_MEANS = (
    "the share of {held_out} held-out sample documents that a query made from a passage in "
    "their middle (new model) finds in the top-{k} among all {pool} sample documents, over "
    "their mapped vectors (each mapped by a map fitted without it) relative to over their "
    "re-embedded ones:"
)
#: What it was for maps stored before the query was recorded.
FIRST_SENTENCE_QUERY = "the document's first sentence"
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class MapSummary:
    """How a fitted map was made and how well it did: stored with it, shown in the report."""

    migration_id: str
    sample: int
    train: int
    held_out: int
    lam: float
    validation_cosine: float
    retention: float
    k: int
    known_item: dict[str, float | None]
    min_retention: float
    tokens: int
    embedded: int
    queries_embedded: int
    seconds: float
    #: Embedding requests the fit made (documents and queries, ``batch`` texts each).
    requests: int = 0
    #: The map family chosen, its regularization, each family's validation known-item
    #: recall (the choice), and how many sample documents the retention searched among.
    kind: str = "ridge"
    setting: str = ""
    compared: dict[str, float] = field(default_factory=dict)
    pool: int = 0
    #: How much worse than the old model the map may search (``quality_tolerance``).
    old_model_tolerance: float = 0.0
    #: How each held-out document's query was made (:data:`HELD_OUT_QUERY`).
    held_out_query: str | None = None
    #: With an evaluation set: its labeled queries, the documents they ranked (their
    #: relevant ones and the held-out distractors), relevant ids without a point, text or
    #: vector in the source, mean nDCG@10 over mapped and over re-embedded vectors, the
    #: tolerance it was held to, and which evaluation set it was (sha256 of its rows).
    eval_queries: int = 0
    eval_documents: int = 0
    eval_missing: int = 0
    eval_ndcg10_mapped: float | None = None
    eval_ndcg10_reembedded: float | None = None
    quality_tolerance: float | None = None
    eval_set_sha256: str | None = None
    fitted_at: str = field(default_factory=now_iso)

    @property
    def eval_ndcg10_loss(self) -> float | None:
        """How much nDCG@10 the mapped vectors lose on the evaluation set (None: not measured)."""
        if self.eval_ndcg10_mapped is None or self.eval_ndcg10_reembedded is None:
            return None
        return round(self.eval_ndcg10_reembedded - self.eval_ndcg10_mapped, 4)


@dataclass(frozen=True)
class StoredMatrix:
    """The header of a matrix stored in chunks: a fitted map (named by its migration), or
    the calibration documents' true new vectors (``<migration>/calibration``)."""

    name: str
    migration_id: str
    shape: list[int]
    chunks: int
    #: Of the values' bytes, to refuse a matrix whose chunks are incomplete or damaged.
    sha256: str
    #: A map: whether mapped vectors are renormalized, and how it was fitted and did.
    normalize: bool = False
    summary: MapSummary | None = None
    #: Calibration vectors: the point of each row, and the hash of the text it was made from.
    ids: list[PointId] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.name


@dataclass(frozen=True)
class MatrixChunk:
    """Base64 of one slice of a stored matrix's float32 values."""

    #: The matrix's name (not always a migration id: the field keeps its first name).
    migration_id: str
    index: int
    data: str

    @property
    def key(self) -> str:
        return f"{self.migration_id}/{self.index}"


class LinearMaps(Repository[StoredMatrix]):
    """The headers of stored matrices (fitted maps and calibration vectors)."""

    def __init__(self, store: StateStore) -> None:
        super().__init__(store, RecordKind.LINEAR_MAP, StoredMatrix)


class LinearMapChunks(Repository[MatrixChunk]):
    """The chunks of stored matrices' values."""

    def __init__(self, store: StateStore) -> None:
        super().__init__(store, RecordKind.LINEAR_MAP_CHUNK, MatrixChunk)


class MapRetentionError(CompatibilityError):
    """The fitted map keeps too little of the new model's search results."""


@dataclass(frozen=True)
class LinearMap:
    """``new = old @ weights + bias``, renormalized when the new model's vectors are."""

    weights: Matrix
    bias: Matrix
    normalize: bool

    def apply_array(self, old: Matrix) -> Matrix:
        mapped = old @ self.weights + self.bias
        return _unit(mapped) if self.normalize else mapped

    def apply(self, vectors: Sequence[Sequence[float]]) -> list[list[float]]:
        import numpy as np

        if not vectors:
            return []
        result: list[list[float]] = self.apply_array(np.asarray(vectors, dtype=np.float64)).tolist()
        return result


@dataclass(frozen=True)
class Fit:
    """The chosen map, why it was chosen, and how well it did (see :func:`fit`)."""

    map: LinearMap
    kind: str
    setting: str
    lam: float
    validation_cosine: float
    #: Each family's known-item recall of the validation documents' queries: the choice.
    compared: dict[str, float]
    retention: float
    known_item: dict[str, float | None]
    train: int
    held_out: int
    pool: int


def _unit(matrix: Matrix) -> Matrix:
    import numpy as np

    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    result: Matrix = matrix / norms
    return result


def fit_ridge(old: Matrix, new: Matrix, lam: float, normalize: bool = True) -> LinearMap:
    """Closed-form ridge regression with an (unregularized) intercept."""
    import numpy as np

    old_mean, new_mean = old.mean(axis=0), new.mean(axis=0)
    x, y = old - old_mean, new - new_mean
    weights = np.linalg.solve(x.T @ x + lam * np.eye(old.shape[1]), x.T @ y)
    return LinearMap(weights, new_mean - old_mean @ weights, normalize)


def fit_procrustes(old: Matrix, new: Matrix, whiten: bool, normalize: bool = True) -> LinearMap:
    """Orthogonal Procrustes after centring (and, with ``whiten``, whitening the old
    vectors): the rotation (semi-orthogonal when the sizes differ) and one scale that best
    carry the old space onto the new one. It cannot distort distances, so it overfits less
    than ridge on a small sample."""
    import numpy as np

    old_mean, new_mean = old.mean(axis=0), new.mean(axis=0)
    x, y = old - old_mean, new - new_mean
    whitening = np.eye(old.shape[1])
    if whiten:
        covariance = x.T @ x / len(x)
        shrink = 1e-3 * np.trace(covariance) / len(covariance)
        values, vectors = np.linalg.eigh(covariance + shrink * np.eye(len(covariance)))
        whitening = vectors @ np.diag(values**-0.5) @ vectors.T
    xw = x @ whitening
    u, s, vt = np.linalg.svd(xw.T @ y, full_matrices=False)
    weights = whitening @ (u @ vt) * (s.sum() / max(float((xw**2).sum()), 1e-12))
    return LinearMap(weights, new_mean - old_mean @ weights, normalize)


def fit_low_rank(
    old: Matrix, new: Matrix, lam: float, rank: int, normalize: bool = True
) -> LinearMap:
    """Reduced-rank ridge: the ridge map kept to the ``rank`` directions its predictions
    use most (fewer parameters to learn from a small sample)."""
    import numpy as np

    ridge = fit_ridge(old, new, lam, normalize)
    old_mean = old.mean(axis=0)
    _, _, vt = np.linalg.svd((old - old_mean) @ ridge.weights, full_matrices=False)
    weights = ridge.weights @ (vt[:rank].T @ vt[:rank])
    return LinearMap(weights, new.mean(axis=0) - old_mean @ weights, normalize)


@dataclass(frozen=True)
class Candidate:
    """One map family with its setting chosen on the validation split."""

    kind: str
    setting: str
    lam: float
    validation_cosine: float
    make: Callable[[Matrix, Matrix], LinearMap]


def _cosine(fitted: LinearMap, old: Matrix, new: Matrix) -> float:
    import numpy as np

    return float(np.mean(np.sum(_unit(fitted.apply_array(old)) * _unit(new), axis=1)))


def candidates(
    old: Matrix, new: Matrix, train: list[int], validation: list[int], normalize: bool
) -> list[Candidate]:
    """Each family's regularization, chosen by the mean cosine of mapped to true vectors of
    the validation documents."""

    def best(options: Sequence[tuple[str, float, Callable[[Matrix, Matrix], LinearMap]]]) -> Any:
        scored = [
            (_cosine(make(old[train], new[train]), old[validation], new[validation]), i)
            for i, (_, _, make) in enumerate(options)
        ]
        cosine, index = max(scored)
        setting, lam, make = options[index]
        return setting, lam, make, cosine

    found = []
    setting, lam, make, cosine = best(
        [(f"lambda {x:g}", x, partial(fit_ridge, lam=x, normalize=normalize)) for x in LAMBDAS]
    )
    found.append(Candidate("ridge", setting, lam, round(cosine, 4), make))
    whitened = [
        (label, 0.0, partial(fit_procrustes, whiten=w, normalize=normalize))
        for label, w in (("centred", False), ("centred, whitened", True))
    ]
    setting, _, make, cosine = best(whitened)
    found.append(Candidate("procrustes", setting, 0.0, round(cosine, 4), make))
    ranks = [r for r in RANKS if r < min(old.shape[1], new.shape[1])]
    if ranks:
        setting, _, make, cosine = best(
            [
                (
                    f"rank {r}, lambda {lam:g}",
                    lam,
                    partial(fit_low_rank, lam=lam, rank=r, normalize=normalize),
                )
                for r in ranks
            ]
        )
        found.append(Candidate("low_rank", setting, lam, round(cosine, 4), make))
    return found


#: From the fewest free parameters to the most: a rotation and a scale, a rank-limited
#: affine map, a full affine map.
SIMPLER_FIRST = ("procrustes", "low_rank", "ridge")


def _simplest_of_the_best(
    found: Sequence[Candidate], compared: dict[str, float], queries: int
) -> Candidate:
    """The family with the fewest parameters among those within one standard error of the
    best validation recall: with a few hundred validation queries, a smaller difference is
    noise, and the simpler map generalizes better to the documents it has not seen."""
    top = max(compared.values())
    error = math.sqrt(max(top * (1 - top), 1e-6) / max(queries, 1))
    close = [c for c in found if compared[c.kind] >= top - error]
    return min(close, key=lambda c: SIMPLER_FIRST.index(c.kind))


def cross_fitted(make: Callable[[Matrix, Matrix], LinearMap], old: Matrix, new: Matrix) -> Matrix:
    """Every document's mapped vector from a map fitted without it (``FOLDS`` folds): what
    mapping unseen documents gives, without the optimism of mapping the training ones."""
    import numpy as np

    result = np.zeros((len(old), new.shape[1]))
    rows = np.arange(len(old))
    for fold in np.array_split(np.random.default_rng(SEED).permutation(len(old)), FOLDS):
        fitted = make(old[np.setdiff1d(rows, fold)], new[np.setdiff1d(rows, fold)])
        result[fold] = fitted.apply_array(old[fold])
    mapped: Matrix = result
    return mapped


def recall_of_own(queries: Matrix, docs: Matrix, own: Sequence[int], k: int = K) -> float:
    """Known item: how often query i finds its document ``own[i]`` in the top-k of ``docs``."""
    found = top_k(queries, docs, min(k, len(docs)))
    return sum(o in row for o, row in zip(own, found.tolist(), strict=True)) / max(len(own), 1)


def top_k(queries: Matrix, docs: Matrix, k: int) -> Indexes:
    """Indexes of each query's k nearest documents by cosine (ties in index order)."""
    import numpy as np

    scores = queries @ _unit(docs).T
    result: Indexes = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return result


def split(n: int, seed: int = SEED) -> tuple[list[int], list[int], list[int]]:
    """Shuffled (train, validation, held-out) indexes."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(n).tolist()
    held = max(1, math.ceil(n * HELD_OUT_SHARE))
    val = max(1, math.ceil(n * VALIDATION_SHARE))
    return order[held + val :], order[held : held + val], order[:held]


def fit(
    old: Matrix,
    new: Matrix,
    queries: Matrix,
    held_out: list[int],
    train: list[int],
    validation: list[int],
    *,
    validation_queries: Matrix,
    old_queries: Matrix | None = None,
    normalize: bool = True,
) -> Fit:
    """Choose the map, measure its retention, and fit it on train + validation.

    Each family gets its regularization on the validation split (:func:`candidates`); the
    family whose cross-fitted vectors let the validation documents' queries find their
    documents best among all sample documents is chosen. **Retention** is then measured
    the same way with the held-out documents' queries: the share found among the
    cross-fitted mapped vectors over the share found among the truly re-embedded ones.
    With ``old_queries`` (the same queries embedded with the old model), the old model's
    share over the stored vectors too: what not migrating gives.
    """
    found = candidates(old, new, train, validation, normalize)
    mapped = {c.kind: cross_fitted(c.make, old, new) for c in found}
    compared = {
        kind: round(recall_of_own(validation_queries, vectors, validation), 4)
        for kind, vectors in mapped.items()
    }
    best = _simplest_of_the_best(found, compared, len(validation))
    ours = recall_of_own(queries, mapped[best.kind], held_out)
    theirs = recall_of_own(queries, new, held_out)
    before = recall_of_own(old_queries, old, held_out) if old_queries is not None else None
    retention = round(ours / theirs, 4) if theirs else 0.0
    return Fit(
        map=best.make(old[train + validation], new[train + validation]),
        kind=best.kind,
        setting=best.setting,
        lam=best.lam,
        validation_cosine=best.validation_cosine,
        compared=compared,
        retention=retention,
        known_item={
            "mapped_recall": round(ours, 4),
            "reembedded_recall": round(theirs, 4),
            "old_recall": None if before is None else round(before, 4),
            "ratio": retention,
        },
        train=len(train) + len(validation),
        held_out=len(held_out),
        pool=len(old),
    )


def known_item_query(text: str, limit: int = 160) -> str:
    """A query-sized piece of ``text`` that is not its opening.

    The sentence in the middle when it has several; else a span of words from its middle.
    A query the document starts with (its first sentence) is found by almost any map, so
    it would not test the map.
    """
    opening = text.strip()
    sentences = [s.strip() for s in text.split(". ") if s.strip()]
    middle = len(sentences) // 2
    # Nearest the middle first, and never one the document starts with (a first
    # sentence repeated further on).
    for index in sorted(range(1, len(sentences)), key=lambda i: abs(i - middle)):
        if not opening.startswith(piece := sentences[index][:limit]):
            return piece
    words = [m.span() for m in _WORD.finditer(text)]
    if len(words) < 2:
        return text.strip()[:limit]
    first = max(1, len(words) // 4)
    start = words[first][0]
    ends = [end for _, end in words[first : first + len(words) // 2] if end - start <= limit]
    return text[start : ends[-1] if ends else start + limit]


def ndcg_at_10(hits: Sequence[PointId], relevant: set[PointId]) -> float:
    """nDCG@10 of one ranking, defined as the quality gate defines it (checks/quality.py):
    binary gain over the first 10 hits, ideal = every relevant id ranked first."""
    dcg = sum(1 / math.log2(rank + 1) for rank, i in enumerate(hits[:10], 1) if i in relevant)
    ideal = sum(1 / math.log2(rank + 1) for rank in range(1, min(len(relevant), 10) + 1))
    return dcg / ideal if ideal else 0.0


def ndcg10(
    queries: Matrix, docs: Matrix, ids: Sequence[PointId], relevant: Sequence[set[PointId]]
) -> float:
    """Mean nDCG@10 of each query's ranking of ``docs`` by cosine."""
    found = top_k(queries, docs, min(10, len(ids)))
    scores = [
        ndcg_at_10([ids[i] for i in row], wanted)
        for row, wanted in zip(found.tolist(), relevant, strict=True)
    ]
    return round(sum(scores) / len(scores), 4) if scores else 0.0


def eval_set_fingerprint(labeled: Sequence[quality.EvalQuery]) -> str | None:
    """Which evaluation set a map was measured on (None: none)."""
    if not labeled:
        return None
    rows = [[q.query, q.relevant_ids] for q in labeled]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def _embed(
    texts: Sequence[str],
    embed: Callable[[Sequence[str]], list[list[float]]],
    batch: int,
    what: str,
) -> Matrix:
    """Embed ``texts`` ``batch`` at a time, saying how far it got every few seconds."""
    import numpy as np

    if texts:
        log.info("Linear map: embedding %d %s, %d per request", len(texts), what, batch)
    vectors: list[list[float]] = []
    said = time.monotonic()
    for start in range(0, len(texts), batch):
        vectors += embed(texts[start : start + batch])
        done = min(start + batch, len(texts))
        if done == len(texts) or time.monotonic() - said >= PROGRESS_SECONDS:
            log.info("Linear map: embedded %d/%d %s", done, len(texts), what)
            said = time.monotonic()
    result: Matrix = np.asarray(vectors, dtype=np.float64)
    return result


def _batch_size(plan: Plan, provider: EmbeddingProvider) -> int:
    return max(1, min(plan.spec.batch_size, provider.limits.max_inputs_per_request))


def _with_vectors(plan: Plan) -> list[str] | bool:
    return [plan.vector_name] if plan.vector_name else True


def _sample(client: QdrantClient, plan: Plan, size: int | None = None) -> list[qm.Record]:
    size = min(size or plan.spec.map_sample_size, plan.source.points)
    found = client.query_points(
        plan.source.collection,
        query=qm.SampleQuery(sample=qm.Sample.RANDOM),
        limit=size,
        with_payload=True,
        with_vectors=_with_vectors(plan),
    ).points
    # Scored points carry what a record does; the map only needs id, payload and vector.
    return [qm.Record(id=p.id, payload=p.payload, vector=p.vector) for p in found]


@dataclass(frozen=True)
class Sample:
    """The sampled documents with usable text: their texts, old and new vectors."""

    records: list[qm.Record]
    texts: list[str]
    old: Matrix
    new: Matrix


def _embed_sample(
    client: QdrantClient,
    plan: Plan,
    provider: EmbeddingProvider,
    batch: int,
    size: int | None = None,
    what: str = "sample texts",
) -> Sample:
    import numpy as np

    usable = select_texts(
        _sample(client, plan, size),
        provider,
        text_field=plan.spec.text_field,
        policy="skip",
        collection=plan.source.collection,
    )
    if len(usable.texts) < MIN_TEXTS:
        raise CompatibilityError(
            f"Only {len(usable.texts)} sampled points of {plan.source.collection!r} have usable "
            f"text; a linear map needs at least {MIN_TEXTS} to be fitted and tested. Use a "
            "full re-embed."
        )
    old = np.asarray([dense_vector(r, plan.vector_name) for r in usable.records], dtype=np.float64)
    new = _embed(usable.texts, provider.embed_documents, batch, what)
    return Sample(usable.records, usable.texts, old, new)


@dataclass(frozen=True)
class Evaluation:
    """The evaluation set's nDCG@10 over mapped vs re-embedded vectors, and what it cost."""

    queries: int = 0
    documents: int = 0
    missing: int = 0
    ndcg10_mapped: float | None = None
    ndcg10_reembedded: float | None = None
    documents_embedded: int = 0
    queries_embedded: int = 0
    tokens: int = 0


@dataclass(frozen=True)
class Pool:
    """What the evaluation queries rank: their relevant documents and held-out distractors."""

    ids: list[PointId]
    old: Matrix
    new: Matrix
    #: Texts embedded for it: relevant documents outside the sample.
    embedded: list[str]
    #: Relevant ids without a point, usable text or vector in the source.
    missing: int


def _is_point_id(value: PointId) -> bool:
    if isinstance(value, int):
        return value >= 0
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _fetch(client: QdrantClient, plan: Plan, ids: Sequence[PointId]) -> list[qm.Record]:
    valid = [i for i in ids if _is_point_id(i)]
    found: list[qm.Record] = []
    for start in range(0, len(valid), RETRIEVE_PAGE):
        found += client.retrieve(
            plan.source.collection,
            valid[start : start + RETRIEVE_PAGE],
            with_payload=True,
            with_vectors=_with_vectors(plan),
        )
    return found


def _pool(
    client: QdrantClient,
    plan: Plan,
    provider: EmbeddingProvider,
    sample: Sample,
    held_out: list[int],
    wanted: list[PointId],
    batch: int,
) -> Pool:
    """Relevant documents already in the sample reuse its vectors; the others are read from
    the source (old vector) and embedded (new vector)."""
    import numpy as np

    position = {point_id(r.id): i for i, r in enumerate(sample.records)}
    usable = select_texts(
        _fetch(client, plan, [i for i in wanted if i not in position]),
        provider,
        text_field=plan.spec.text_field,
        policy="skip",
        collection=plan.source.collection,
    )
    size = sample.old.shape[1]
    kept = [
        (r, t, v)
        for r, t in zip(usable.records, usable.texts, strict=True)
        if len(v := dense_vector(r, plan.vector_name)) == size
    ]
    rows = list(dict.fromkeys([position[i] for i in wanted if i in position] + held_out))
    ids = [point_id(sample.records[i].id) for i in rows] + [point_id(r.id) for r, _, _ in kept]
    old, new = sample.old[rows], sample.new[rows]
    texts = [t for _, t, _ in kept]
    if kept:
        old = np.vstack([old, np.asarray([v for _, _, v in kept], dtype=np.float64)])
        new = np.vstack([new, _embed(texts, provider.embed_documents, batch, "evaluation texts")])
    inside = sum(1 for i in wanted if i in position)
    return Pool(ids, old, new, texts, len(wanted) - inside - len(kept))


def _evaluate(
    client: QdrantClient,
    plan: Plan,
    provider: EmbeddingProvider,
    labeled: Sequence[quality.EvalQuery],
    sample: Sample,
    held_out: list[int],
    fitted: LinearMap,
    batch: int,
) -> Evaluation:
    """nDCG@10 of the evaluation set over the pool, mapped vs truly re-embedded."""
    wanted = list(dict.fromkeys(i for q in labeled for i in q.relevant_ids))
    pool = _pool(client, plan, provider, sample, held_out, wanted, batch)
    texts = [q.query for q in labeled]
    queries = _embed(texts, provider.embed_queries, batch, "evaluation queries")
    relevant = [set(q.relevant_ids) for q in labeled]
    return Evaluation(
        queries=len(labeled),
        documents=len(pool.ids),
        missing=pool.missing,
        ndcg10_mapped=ndcg10(queries, fitted.apply_array(pool.old), pool.ids, relevant),
        ndcg10_reembedded=ndcg10(queries, pool.new, pool.ids, relevant),
        documents_embedded=len(pool.embedded),
        queries_embedded=len(texts),
        tokens=provider.count_tokens(pool.embedded) + provider.count_tokens(texts),
    )


def _fit_and_measure(
    client: QdrantClient,
    plan: Plan,
    provider: EmbeddingProvider,
    labeled: Sequence[quality.EvalQuery],
    old_provider: EmbeddingProvider | None,
) -> tuple[LinearMap, MapSummary, Sample]:
    started = time.monotonic()
    batch = _batch_size(plan, provider)
    sample = _embed_sample(client, plan, provider, batch)
    result, query_texts = _fit_sample(sample, provider, batch, old_provider)
    _, _, held_out = split(len(sample.texts))  # the same split as the fit's
    measured = (
        _evaluate(client, plan, provider, labeled, sample, held_out, result.map, batch)
        if labeled
        else Evaluation()
    )
    tokens = provider.count_tokens(sample.texts) + provider.count_tokens(query_texts)
    embedded = (
        len(sample.texts),
        len(query_texts),
        measured.documents_embedded,
        measured.queries_embedded,
    )
    summary = MapSummary(
        migration_id=plan.migration_id,
        sample=len(sample.texts),
        train=result.train,
        held_out=result.held_out,
        lam=result.lam,
        validation_cosine=result.validation_cosine,
        retention=result.retention,
        kind=result.kind,
        setting=result.setting,
        compared=result.compared,
        pool=result.pool,
        old_model_tolerance=plan.spec.quality_tolerance,
        k=min(K, result.held_out),
        known_item=result.known_item,
        min_retention=plan.spec.min_map_retention,
        tokens=tokens + measured.tokens,
        embedded=len(sample.texts) + measured.documents_embedded,
        queries_embedded=len(query_texts) + measured.queries_embedded,
        seconds=round(time.monotonic() - started, 2),
        requests=sum(math.ceil(n / batch) for n in embedded),
        held_out_query=HELD_OUT_QUERY,
        eval_queries=measured.queries,
        eval_documents=measured.documents,
        eval_missing=measured.missing,
        eval_ndcg10_mapped=measured.ndcg10_mapped,
        eval_ndcg10_reembedded=measured.ndcg10_reembedded,
        quality_tolerance=plan.spec.quality_tolerance if labeled else None,
        eval_set_sha256=eval_set_fingerprint(labeled),
    )
    return result.map, summary, sample


def _fit_sample(
    sample: Sample,
    provider: EmbeddingProvider,
    batch: int,
    old_provider: EmbeddingProvider | None,
    what: str = "held-out and validation queries",
) -> tuple[Fit, list[str]]:
    """Embed the held-out and validation documents' queries (and, with ``old_provider``,
    the held-out ones with the old model), then :func:`fit`; with the query texts."""
    train, validation, held_out = split(len(sample.texts))
    texts = [known_item_query(sample.texts[i]) for i in held_out + validation]
    both = _embed(texts, provider.embed_queries, batch, what)
    old_queries = None
    if old_provider is not None:  # what not migrating gives, on the same queries
        held = texts[: len(held_out)]
        old_queries = _embed(held, old_provider.embed_queries, batch, "old-model queries")
    fitted = fit(
        sample.old,
        sample.new,
        both[: len(held_out)],
        held_out,
        train,
        validation,
        validation_queries=both[len(held_out) :],
        old_queries=old_queries,
        normalize=provider.model_info().normalized,
    )
    return fitted, texts


#: Texts the dry run embeds to preview the map's retention.
PREVIEW_TEXTS = 200


def preview(client: QdrantClient, plan: Plan, provider: EmbeddingProvider) -> Fit | None:
    """The map fitted and measured on a small sample, as the dry run shows it: a first,
    cheap look at whether the shortcut is likely to pass (a fit on ``map_sample_size`` texts
    usually keeps more). None when the source has too few usable texts."""
    batch = _batch_size(plan, provider)
    try:
        sample = _embed_sample(client, plan, provider, batch, PREVIEW_TEXTS, "preview texts")
    except CompatibilityError:
        return None
    return _fit_sample(sample, provider, batch, None, "preview queries")[0]


def fit_for_plan(
    client: QdrantClient,
    plan: Plan,
    provider: EmbeddingProvider,
    state: StateStore,
    old_provider: EmbeddingProvider | None = None,
) -> MapSummary:
    """Fit, measure and store the map of ``plan``; refuse it below the retention threshold
    or, with an evaluation set, past the quality tolerance.

    A map this migration already stored is reused (a retried task pays for nothing) and
    held to the current thresholds.
    """
    labeled = quality.load_eval_set(plan.spec.eval_set)
    stored = summary_of(state, plan.migration_id)
    if stored is not None:
        log.info("Reusing the linear map fitted at %s", stored.fitted_at)
        _warn_if_measured_elsewhere(stored, labeled)
        measured = stored.eval_ndcg10_loss is not None
        current = dataclasses.replace(
            stored,
            min_retention=plan.spec.min_map_retention,
            quality_tolerance=plan.spec.quality_tolerance if measured else None,
            old_model_tolerance=plan.spec.quality_tolerance,
        )
        _check(client, plan, current, state)
        return stored
    fitted, summary, sample = _fit_and_measure(client, plan, provider, labeled, old_provider)
    log.info("Linear map of %s:\n%s", plan.migration_id, summary_markdown(summary))
    _check(client, plan, summary, state)
    store_calibration(state, plan.migration_id, sample, plan.spec.text_field)
    store(state, plan.migration_id, fitted, summary)
    return summary


def _warn_if_measured_elsewhere(stored: MapSummary, labeled: Sequence[quality.EvalQuery]) -> None:
    fingerprint = eval_set_fingerprint(labeled)
    if fingerprint is None or fingerprint == stored.eval_set_sha256:
        return
    log.warning(
        "The stored linear map of %s was measured on %s, not on this run's evaluation set. "
        "It is reused as it is (a map fitted again would differ from the one the target may "
        "already hold); the quality check after the backfill measures this evaluation set.",
        stored.migration_id,
        "another evaluation set" if stored.eval_set_sha256 else "no evaluation set",
    )


class Refusal(NamedTuple):
    """One reason to refuse a map."""

    #: One line, for the stored outcome.
    outcome: str
    #: What the map loses, for the error message.
    detail: str
    #: The setting that would accept the loss.
    setting: str


def refusals(summary: MapSummary) -> list[Refusal]:
    """Why the map of ``summary`` must not be used under its thresholds (empty: it may)."""
    found = []
    known = summary.known_item
    mapped, before = known.get("mapped_recall"), known.get("old_recall")
    if summary.retention < summary.min_retention:
        found.append(
            Refusal(
                f"retention {summary.retention:.1%} is below the minimum "
                f"{summary.min_retention:.0%}",
                f"keeps only {summary.retention:.1%} of a full re-embed's retrieval: "
                + _retention_means(summary)
                + f" {_num(mapped)} mapped vs {_num(known.get('reembedded_recall'))} re-embedded "
                f"(minimum {summary.min_retention:.0%})",
                "lower min_map_retention",
            )
        )
    tolerance_old = summary.old_model_tolerance
    if (
        isinstance(mapped, int | float)
        and isinstance(before, int | float)
        and mapped < before - tolerance_old
    ):
        found.append(
            Refusal(
                f"worse than not migrating: {mapped:.2f} mapped vs {before:.2f} with the old model",
                f"would make search worse than not migrating at all: the same queries find "
                f"{mapped:.2f} of their documents over the mapped vectors and {before:.2f} "
                f"with the old model over the stored ones (quality_tolerance {tolerance_old:g})",
                "raise quality_tolerance (how much worse than the old model is accepted)",
            )
        )
    loss, tolerance = summary.eval_ndcg10_loss, summary.quality_tolerance
    if loss is not None and tolerance is not None and loss > tolerance:
        ndcg = f"{summary.eval_ndcg10_mapped:.3f} mapped vs {summary.eval_ndcg10_reembedded:.3f}"
        found.append(
            Refusal(
                f"evaluation-set nDCG@10 {ndcg} re-embedded (tolerance {tolerance:g})",
                f"loses nDCG@10 on the evaluation set: {ndcg} re-embedded on "
                f"{summary.eval_queries} labeled queries over {summary.eval_documents} "
                f"documents, more than the tolerance {tolerance:g}",
                "raise quality_tolerance",
            )
        )
    return found


def _retention_means(summary: MapSummary) -> str:
    pool = summary.pool or summary.sample
    return RETENTION_MEANS.format(k=summary.k, held_out=summary.held_out, pool=pool)


def _num(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "n/a"


def summary_markdown(summary: MapSummary) -> str:
    """Every measurement of a fitted map, as a small markdown table."""
    known = summary.known_item
    rows = [
        (
            "sample texts (fitted on / held out)",
            f"{summary.sample} ({summary.train} / {summary.held_out})",
        ),
        (
            "map (chosen on validation)",
            f"{summary.kind}, {summary.setting or f'lambda {summary.lam:g}'}; validation "
            "known-item recall "
            + (", ".join(f"{k} {v:.3f}" for k, v in summary.compared.items()) or "n/a"),
        ),
        ("validation cosine", f"{summary.validation_cosine:.4f}"),
        (
            "retention",
            f"{summary.retention:.4f} (minimum {summary.min_retention:g}): "
            + _retention_means(summary)
            + f" {_num(known.get('mapped_recall'))} mapped vs "
            f"{_num(known.get('reembedded_recall'))} re-embedded",
        ),
        (
            "the old model on the same queries",
            f"{_num(known.get('old_recall'))}"
            + ("" if known.get("old_recall") is not None else " (old model unknown)"),
        ),
        ("evaluation set: nDCG@10", _eval_cell(summary)),
        ("embedded", f"{summary.embedded} documents, {summary.queries_embedded} queries"),
        ("tokens", f"{summary.tokens:,}"),
        ("seconds", f"{summary.seconds:g}"),
    ]
    lines = ["| measurement | value |", "| --- | --- |"]
    return "\n".join(lines + [f"| {name} | {value} |" for name, value in rows])


def _eval_cell(summary: MapSummary) -> str:
    if summary.eval_ndcg10_loss is None:
        return "not measured (no eval_set)"
    tolerance = (
        "" if summary.quality_tolerance is None else f"; tolerance {summary.quality_tolerance:g}"
    )
    return (
        f"{summary.eval_ndcg10_mapped:.4f} mapped vs {summary.eval_ndcg10_reembedded:.4f} "
        f"re-embedded ({summary.eval_queries} labeled queries over {summary.eval_documents} "
        f"documents, {summary.eval_missing} relevant ids not in the source{tolerance})"
    )


def _check(client: QdrantClient, plan: Plan, summary: MapSummary, state: StateStore) -> None:
    """Refuse the map of ``summary``: log and store every measurement, then raise."""
    found = refusals(summary)
    if not found:
        return
    outcome = "failed: linear map refused: " + "; ".join(r.outcome for r in found)
    markdown = f"**Linear map refused** ({outcome}).\n\n{summary_markdown(summary)}"
    log.error("Linear map of %s refused:\n%s", plan.migration_id, markdown)
    Reports(state).put(
        ReportRecord(
            migration_id=plan.migration_id,
            strategy=plan.strategy,
            markdown=markdown,
            alias=plan.alias,
            source_collection=plan.source.collection,
            target_collection=plan.target_collection,
            outcome=outcome,
            linear_map=codec.encode(summary),
            evidence={"linear_map": codec.encode(summary)},
        )
    )
    raise MapRetentionError(
        f"The linear map from the source's vectors to {plan.target_lineage.get('model')} "
        + " and ".join(r.detail for r in found)
        + f". {_target_note(client, plan, state)} Every measurement is logged and stored as "
        f"the report of {plan.migration_id} in the state store. Re-embed instead "
        f"(allow_linear_map=false), raise map_sample_size, or "
        f"{' or '.join(r.setting for r in found)} if that loss is acceptable."
    )


def _target_note(client: QdrantClient, plan: Plan, state: StateStore) -> str:
    """What exists of the migration's target (a rerun may find one an earlier run made)."""
    target = plan.target_collection
    if not client.collection_exists(target):
        return "No collection was created."
    serving = [a.alias_name for a in client.get_aliases().aliases if a.collection_name == target]
    record = Migrations(state).get(plan.migration_id)
    if serving or record is None or record.target_collection != target:
        made = f"serves {', '.join(serving)}" if serving else "was not made by this migration"
        return f"The target collection {target!r} already exists ({made}); it is left as it was."
    return (
        f"The target collection {target!r}, made by an earlier run, is left as it was; to "
        "delete it, trigger the qdrant_migration_lifecycle DAG with "
        f'{{"action": "retire", "migration_id": "{plan.migration_id}"}}.'
    )


def _put_matrix(state: StateStore, header: StoredMatrix, raw: bytes) -> None:
    """Chunks first, header last: a header always points at complete chunks."""
    step = CHUNK_VALUES * 4
    pieces = [raw[i : i + step] for i in range(0, len(raw), step)]
    chunks = LinearMapChunks(state)
    for index, piece in enumerate(pieces):
        chunks.put(MatrixChunk(header.name, index, base64.b64encode(piece).decode()))
    done = dataclasses.replace(header, chunks=len(pieces), sha256=hashlib.sha256(raw).hexdigest())
    LinearMaps(state).put(done)


def _get_matrix(state: StateStore, name: str, what: str) -> tuple[StoredMatrix, bytes]:
    header = LinearMaps(state).get(name)
    if header is None:
        raise CompatibilityError(
            f"No {what} is stored for migration {name.split('/')[0]}: fit_linear_map must run "
            "first. Clear that task to fit it again."
        )
    chunks = LinearMapChunks(state)
    raw = b"".join(
        base64.b64decode(chunk.data if (chunk := chunks.get(f"{name}/{i}")) else "")
        for i in range(header.chunks)
    )
    if hashlib.sha256(raw).hexdigest() != header.sha256:
        raise CompatibilityError(
            f"The stored {what} of {name.split('/')[0]} is incomplete or damaged. Clear "
            "fit_linear_map after deleting its state records to fit it again."
        )
    return header, raw


def store(state: StateStore, migration_id: str, linear: LinearMap, summary: MapSummary) -> None:
    import numpy as np

    values = np.concatenate([linear.weights.ravel(), linear.bias.ravel()]).astype("<f4")
    header = StoredMatrix(
        name=migration_id,
        migration_id=migration_id,
        shape=[int(n) for n in linear.weights.shape],
        chunks=0,
        sha256="",
        normalize=linear.normalize,
        summary=summary,
    )
    _put_matrix(state, header, values.tobytes())


def calibration_key(migration_id: str) -> str:
    return f"{migration_id}/calibration"


def store_calibration(
    state: StateStore, migration_id: str, sample: Sample, text_field: str
) -> None:
    """The calibration documents' true new vectors, with a hash of the text each was made
    from: the backfill writes them instead of mapped ones while the text is unchanged
    (measured: mixing them in keeps more than mapping them, ``bench/linear_map.py``)."""
    header = StoredMatrix(
        name=calibration_key(migration_id),
        migration_id=migration_id,
        shape=[int(n) for n in sample.new.shape],
        chunks=0,
        sha256="",
        ids=[point_id(r.id) for r in sample.records],
        hashes=[text_hash(extract_text(r.payload, text_field)[0]) for r in sample.records],
    )
    _put_matrix(state, header, sample.new.astype("<f4").tobytes())


def load_calibration(
    state: StateStore, migration_id: str
) -> dict[PointId, tuple[str, list[float]]]:
    """``{id: (text hash, true vector)}`` of the calibration documents (empty: none stored)."""
    import numpy as np

    if LinearMaps(state).get(calibration_key(migration_id)) is None:
        return {}
    header, raw = _get_matrix(state, calibration_key(migration_id), "calibration vectors")
    rows, cols = header.shape
    vectors = np.frombuffer(raw, dtype="<f4").astype(np.float64).reshape(rows, cols)
    return {
        i: (h, vector.tolist())
        for i, h, vector in zip(header.ids, header.hashes, vectors, strict=True)
    }


def text_hash(text: str | None) -> str:
    return hashlib.blake2b((text or "").encode(), digest_size=8).hexdigest()


def summary_of(state: StateStore, migration_id: str) -> MapSummary | None:
    """The stored map's summary, or None when no map was stored for the migration."""
    header = LinearMaps(state).get(migration_id)
    return header.summary if header is not None else None


def load(state: StateStore, migration_id: str) -> LinearMap:
    import numpy as np

    header, raw = _get_matrix(state, migration_id, "linear map")
    rows, cols = header.shape
    values = np.frombuffer(raw, dtype="<f4").astype(np.float64)
    return LinearMap(
        values[: rows * cols].reshape(rows, cols), values[rows * cols :], header.normalize
    )


def forget(state: StateStore, migration_id: str) -> None:
    headers, chunks = LinearMaps(state), LinearMapChunks(state)
    for name in (migration_id, calibration_key(migration_id)):
        header = headers.get(name)
        if header is None:
            continue
        for index in range(header.chunks):
            chunks.delete(f"{name}/{index}")
        headers.delete(name)
