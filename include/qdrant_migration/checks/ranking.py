"""How two rankings of the same query differ, and how good a ranking is by graded judgments.

Pure arithmetic on lists of point ids and numbers, for the query-log replay
(``checks/traffic.py``):

* :func:`overlap_at_k`: the share of the top k both lists hold, whatever their order.
* :func:`rbo`: rank-biased overlap (Webber, Moffat and Zobel, "A similarity measure for
  indefinite rankings", 2010), the **extrapolated** form for finite lists (their eq. 32,
  which takes lists of different lengths): the agreement at each depth d, weighted by
  ``p^(d-1)``, with the agreement seen at the deepest rank assumed to hold below it. With
  ``p = 0.9`` the top 10 ranks carry about 86% of the weight: a change at rank 1 moves RBO
  far more than one at rank 9, which overlap@k does not see at all. 1 for identical lists,
  0 for disjoint ones.
* :func:`ndcg`: nDCG@k with graded gains (the judge's relevance scores, linear gain), the
  ideal order taken from every judged document of the query (the pool of both lists), so
  the old and the new list of a query are measured against the same ideal.
* :func:`paired_bootstrap`: percentile intervals of two paired means and of their
  difference, from the same resamples of queries, seeded.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

K = TypeVar("K", bound=Hashable)

#: RBO's persistence: the weight of rank d is proportional to p^(d-1).
RBO_P = 0.9
#: Quantiles shown of a distribution, and the width of a histogram's bins.
QUANTILES = ("p10", "p25", "p50", "p75", "p90")
BINS = 10


def overlap_at_k(old: Sequence[Hashable], new: Sequence[Hashable], k: int) -> float:
    """|top-k of both| / k (over the longer list when a collection holds fewer than k)."""
    a, b = old[:k], new[:k]
    if not a and not b:
        return 1.0
    return len(set(a) & set(b)) / max(len(a), len(b))


def rbo(old: Sequence[Hashable], new: Sequence[Hashable], p: float = RBO_P) -> float:
    """Extrapolated rank-biased overlap of two finite rankings (Webber et al. 2010, eq. 32).

    With ``s`` the shorter length and ``l`` the longer, ``X_d`` the overlap of both lists'
    first d items (the shorter list whole, past its end):

    ``(1-p)/p * (sum_{d<=l} X_d/d p^d + sum_{s<d<=l} X_s (d-s)/(s d) p^d)
    + ((X_l - X_s)/l + X_s/s) p^l``
    """
    short, long_ = (old, new) if len(old) <= len(new) else (new, old)
    s, n = len(short), len(long_)  # the paper's s and l
    if n == 0:
        return 1.0
    if s == 0:
        return 0.0
    overlaps = [len(set(short[:d]) & set(long_[:d])) for d in range(1, n + 1)]
    x_s, x_l = overlaps[s - 1], overlaps[n - 1]
    seen = sum(overlaps[d - 1] / d * p**d for d in range(1, n + 1))
    beyond = sum(x_s * (d - s) / (s * d) * p**d for d in range(s + 1, n + 1))
    return (1 - p) / p * (seen + beyond) + ((x_l - x_s) / n + x_s / s) * p**n


def dcg(gains: Sequence[float]) -> float:
    """Discounted cumulative gain: the gain at rank r divided by log2(r + 1)."""
    return sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, 1))


def ndcg(ranked: Sequence[K], judged: Mapping[K, float], k: int = 10) -> float:
    """nDCG@k of ``ranked`` with graded gains ``judged`` (documents not judged gain 0); the
    ideal is the best k of ``judged``. 0 when nothing judged has any gain."""
    ideal = dcg(sorted(judged.values(), reverse=True)[:k])
    if ideal <= 0:
        return 0.0
    return dcg([judged.get(doc, 0.0) for doc in ranked[:k]]) / ideal


@dataclass(frozen=True)
class Distribution:
    """Values in [0, 1]: their mean, quantiles and a histogram of ``BINS`` equal bins (the
    last one closed: 1.0 falls in it)."""

    mean: float = 0.0
    quantiles: dict[str, float] = field(default_factory=dict)
    histogram: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, values: Sequence[float]) -> Distribution:
        if not values:
            return cls()
        if len(values) == 1:
            cuts = [values[0]] * 19
        else:  # 19 cut points at 5% steps, read at 10, 25, 50, 75 and 90%
            cuts = statistics.quantiles(values, n=20, method="inclusive")
        picks = {"p10": 1, "p25": 4, "p50": 9, "p75": 14, "p90": 17}
        histogram = [0] * BINS
        for value in values:
            histogram[min(BINS - 1, max(0, int(value * BINS + 1e-9)))] += 1
        return cls(
            mean=round(statistics.fmean(values), 4),
            quantiles={name: round(cuts[i], 4) for name, i in picks.items()},
            histogram=histogram,
        )


Interval = tuple[float, float]

#: Resamples of the bootstrap, and its seed (the same evidence gives the same interval).
RESAMPLES = 1000
SEED = 0


def paired_bootstrap(
    old: Sequence[float],
    new: Sequence[float],
    *,
    level: float = 0.95,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> tuple[Interval, Interval, Interval]:
    """Percentile intervals of the mean of ``old``, of ``new`` and of ``new - old``, from
    the same resamples of the (paired) items."""
    import numpy as np

    pairs = np.asarray([old, new], dtype=float)
    n = pairs.shape[1]
    if n == 0:
        raise ValueError("no values to resample")
    rng = np.random.default_rng(seed)
    means = np.empty((resamples, 2))
    for start in range(0, resamples, 100):  # bounded memory for large samples
        rows = min(100, resamples - start)
        picks = rng.integers(0, n, size=(rows, n))
        means[start : start + rows] = pairs[:, picks].mean(axis=2).T
    tails = [(1 - level) / 2, 1 - (1 - level) / 2]

    def interval(values: Any) -> Interval:
        low, high = np.quantile(values, tails)
        return round(float(low), 4), round(float(high), 4)

    return interval(means[:, 0]), interval(means[:, 1]), interval(means[:, 1] - means[:, 0])
