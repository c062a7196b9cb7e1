"""The learned linear map: old model's vectors -> new model's, fitted on a sample (opt-in).

Re-embedding a large collection costs a token for every stored token. A linear map costs
a sample: embed ``map_sample_size`` texts with the new model, fit ridge regression from
their old vectors to their new ones (closed form, lambda chosen on a validation split),
and map every stored vector without another embedding call.

It is an approximation, so it is measured before it is used: on held-out sample
documents, queries (a query-sized piece of each held-out text, embedded with the new
model) search the held-out documents twice, once with their mapped vectors and once with
their truly re-embedded ones. **Retention** is the mean share of the re-embedded top-10
that the mapped search also finds. Below ``min_map_retention`` the map is refused and
nothing is created. The map (weights and bias, float32) lives in the state store, in
chunks, with the measurements; every backfill task loads it from there.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration.plan import Plan
from include.qdrant_migration.providers import EmbeddingProvider
from include.qdrant_migration.qdrant import dense_vector
from include.qdrant_migration.state import Doc, RecordKind, StateStore, now_iso
from include.qdrant_migration.strategy import CompatibilityError
from include.qdrant_migration.texts import query_like, select_texts

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    Matrix = NDArray[np.float64]
    Indexes = NDArray[np.intp]

log = logging.getLogger(__name__)

#: Ridge strengths tried on the validation split (the vectors are unit length).
LAMBDAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
HELD_OUT_SHARE = 0.2
VALIDATION_SHARE = 0.15
MIN_TEXTS = 30
K = 10
SEED = 0
#: float32 values per stored chunk (1 MiB): a 3072 x 3072 map is 36 records.
CHUNK_VALUES = 262_144


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
    known_item: dict[str, float]
    min_retention: float
    tokens: int
    embedded: int
    queries_embedded: int
    seconds: float
    fitted_at: str = field(default_factory=now_iso)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MapSummary:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


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
    """A fitted map and how well it did."""

    map: LinearMap
    lam: float
    validation_cosine: float
    retention: float
    known_item: dict[str, float]
    train: int
    held_out: int


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


def top_k(queries: Matrix, docs: Matrix, k: int) -> Indexes:
    """Indexes of each query's k nearest documents by cosine (ties in index order)."""
    import numpy as np

    scores = queries @ _unit(docs).T
    result: Indexes = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return result


def overlap_at_k(queries: Matrix, mapped: Matrix, true: Matrix, k: int = K) -> float:
    """Mean share of the true top-k that the mapped documents' top-k also holds."""
    k = min(k, len(true))
    ours, theirs = top_k(queries, mapped, k), top_k(queries, true, k)
    shares = [len(set(a) & set(b)) / k for a, b in zip(ours.tolist(), theirs.tolist(), strict=True)]
    return sum(shares) / len(shares) if shares else 0.0


def known_item(queries: Matrix, mapped: Matrix, true: Matrix, k: int = K) -> dict[str, float]:
    """Query i is made from document i: how often is it in the top-k, mapped vs true."""
    k = min(k, len(true))

    def hits(docs: Matrix) -> float:
        found = top_k(queries, docs, k)
        return sum(i in row for i, row in enumerate(found.tolist())) / len(found)

    mapped_hits, true_hits = hits(mapped), hits(true)
    return {
        "mapped_recall": round(mapped_hits, 4),
        "reembedded_recall": round(true_hits, 4),
        "ratio": round(mapped_hits / true_hits, 4) if true_hits else 0.0,
    }


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
    normalize: bool = True,
) -> Fit:
    """Choose lambda on validation, refit on train+validation, measure on held-out."""
    import numpy as np

    best = (-2.0, LAMBDAS[0])
    for lam in LAMBDAS:
        candidate = fit_ridge(old[train], new[train], lam, normalize)
        mapped = _unit(candidate.apply_array(old[validation]))
        cosine = float(np.mean(np.sum(mapped * _unit(new[validation]), axis=1)))
        best = max(best, (cosine, lam))
    cosine, lam = best
    fitted = fit_ridge(old[train + validation], new[train + validation], lam, normalize)
    mapped = fitted.apply_array(old[held_out])
    return Fit(
        map=fitted,
        lam=lam,
        validation_cosine=round(cosine, 4),
        retention=round(overlap_at_k(queries, mapped, new[held_out]), 4),
        known_item=known_item(queries, mapped, new[held_out]),
        train=len(train) + len(validation),
        held_out=len(held_out),
    )


def _sample(client: QdrantClient, plan: Plan) -> list[qm.Record]:
    size = min(plan.spec.map_sample_size, plan.source.points)
    found = client.query_points(
        plan.source.collection,
        query=qm.SampleQuery(sample=qm.Sample.RANDOM),
        limit=size,
        with_payload=True,
        with_vectors=[plan.vector_name] if plan.vector_name else True,
    ).points
    # Scored points carry what a record does; the map only needs id, payload and vector.
    return [qm.Record(id=p.id, payload=p.payload, vector=p.vector) for p in found]


def fit_for_plan(
    client: QdrantClient, plan: Plan, provider: EmbeddingProvider, state: StateStore
) -> MapSummary:
    """Fit, measure and store the map of ``plan``; refuse it below the retention threshold.

    A map this migration already stored is reused (a retried task pays for nothing).
    """
    import numpy as np

    minimum = plan.spec.min_map_retention
    stored = summary_of(state, plan.migration_id)
    if stored is not None:
        log.info("Reusing the linear map fitted at %s", stored.fitted_at)
        _check_retention(plan, stored, minimum)
        return stored
    started = time.monotonic()
    usable = select_texts(
        _sample(client, plan),
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
    new = np.asarray(provider.embed_documents(usable.texts), dtype=np.float64)
    train, validation, held_out = split(len(usable.texts))
    query_texts = [query_like(usable.texts[i]) for i in held_out]
    queries = np.asarray(provider.embed_queries(query_texts), dtype=np.float64)
    result = fit(
        old,
        new,
        queries,
        held_out,
        train,
        validation,
        normalize=provider.model_info().normalized,
    )
    summary = MapSummary(
        migration_id=plan.migration_id,
        sample=len(usable.texts),
        train=result.train,
        held_out=result.held_out,
        lam=result.lam,
        validation_cosine=result.validation_cosine,
        retention=result.retention,
        k=min(K, result.held_out),
        known_item=result.known_item,
        min_retention=minimum,
        tokens=usable.tokens + provider.count_tokens(query_texts),
        embedded=len(usable.texts),
        queries_embedded=len(query_texts),
        seconds=round(time.monotonic() - started, 2),
    )
    log.info("Linear map: %s", summary)
    _check_retention(plan, summary, minimum)
    store(state, plan.migration_id, result.map, summary)
    return summary


def _check_retention(plan: Plan, summary: MapSummary, minimum: float) -> None:
    if summary.retention >= minimum:
        return
    raise MapRetentionError(
        f"The linear map from the source's vectors to {plan.target_lineage.get('model')} keeps "
        f"only {summary.retention:.1%} of the re-embedded top-{summary.k} on "
        f"{summary.held_out} held-out sample documents (minimum {minimum:.0%}; known-item "
        f"recall {summary.known_item['mapped_recall']:.2f} mapped vs "
        f"{summary.known_item['reembedded_recall']:.2f} re-embedded). Nothing was created. "
        "Re-embed instead (allow_linear_map=false), raise map_sample_size, or lower "
        "min_map_retention if that loss is acceptable."
    )


def store(state: StateStore, migration_id: str, linear: LinearMap, summary: MapSummary) -> None:
    """Chunks first, header last: a header always points at complete chunks."""
    import numpy as np

    values = np.concatenate([linear.weights.ravel(), linear.bias.ravel()]).astype("<f4")
    raw = values.tobytes()
    step = CHUNK_VALUES * 4
    chunks = [raw[i : i + step] for i in range(0, len(raw), step)]
    for index, chunk in enumerate(chunks):
        state.put(
            RecordKind.LINEAR_MAP_CHUNK,
            f"{migration_id}/{index}",
            {
                "migration_id": migration_id,
                "index": index,
                "data": base64.b64encode(chunk).decode(),
            },
        )
    header = summary.to_dict() | {
        "shape": list(linear.weights.shape),
        "normalize": linear.normalize,
        "chunks": len(chunks),
        "sha256": hashlib.sha256(raw).hexdigest(),
    }
    state.put(RecordKind.LINEAR_MAP, migration_id, header)


def summary_of(state: StateStore, migration_id: str) -> MapSummary | None:
    """The stored map's summary, or None when no map was stored for the migration."""
    header = state.get(RecordKind.LINEAR_MAP, migration_id)
    return MapSummary.from_dict(header) if header is not None else None


def load(state: StateStore, migration_id: str) -> LinearMap:
    import numpy as np

    header = state.get(RecordKind.LINEAR_MAP, migration_id)
    if header is None:
        raise CompatibilityError(
            f"No linear map is stored for migration {migration_id}: fit_linear_map must run "
            "first. Clear that task to fit it again."
        )
    raw = b"".join(
        base64.b64decode(_chunk(state, migration_id, i).get("data", ""))
        for i in range(int(header["chunks"]))
    )
    if hashlib.sha256(raw).hexdigest() != header["sha256"]:
        raise CompatibilityError(
            f"The stored linear map of {migration_id} is incomplete or damaged. Clear "
            "fit_linear_map after deleting its state records to fit it again."
        )
    rows, cols = (int(n) for n in header["shape"])
    values = np.frombuffer(raw, dtype="<f4").astype(np.float64)
    return LinearMap(
        values[: rows * cols].reshape(rows, cols), values[rows * cols :], bool(header["normalize"])
    )


def _chunk(state: StateStore, migration_id: str, index: int) -> Doc:
    return state.get(RecordKind.LINEAR_MAP_CHUNK, f"{migration_id}/{index}") or {}


def forget(state: StateStore, migration_id: str) -> None:
    header = state.get(RecordKind.LINEAR_MAP, migration_id)
    if header is None:
        return
    for index in range(int(header["chunks"])):
        state.delete(RecordKind.LINEAR_MAP_CHUNK, f"{migration_id}/{index}")
    state.delete(RecordKind.LINEAR_MAP, migration_id)
