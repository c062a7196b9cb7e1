"""The replay's arithmetic against values worked out by hand: overlap@k, RBO (extrapolated,
p = 0.9), graded nDCG against the pool's ideal, the distributions, the paired bootstrap."""

from __future__ import annotations

import math

import pytest

from include.qdrant_migration.checks.ranking import (
    Distribution,
    dcg,
    ndcg,
    overlap_at_k,
    paired_bootstrap,
    rbo,
)


def test_overlap_at_k_counts_the_shared_top_k_in_any_order() -> None:
    assert overlap_at_k([1, 2, 3], [3, 2, 1], 3) == 1.0
    assert overlap_at_k([1, 2, 3], [3, 4, 5], 3) == pytest.approx(1 / 3)
    assert overlap_at_k([1, 2, 3, 9], [3, 4, 5, 1], 3) == pytest.approx(1 / 3)  # top 3 only
    assert overlap_at_k([1, 2], [1, 2, 3], 3) == pytest.approx(2 / 3)  # over the longer list
    assert overlap_at_k([], [], 10) == 1.0


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # identical and disjoint
        ("abc", "abc", 1.0),
        ("abc", "xyz", 0.0),
        # X = 1, 1, 2: (0.1/0.9)(0.9 + 1/2 0.81 + 2/3 0.729) + 2/3 0.729 = 0.199 + 0.486
        ("abc", "acd", 0.685),
        # the top two swapped, X = 0, 2: (0.1/0.9)(2/2 0.81) + 2/2 0.81
        ("ab", "ba", 0.9),
        # uneven (s = 1, l = 2), X = 1, 1: (0.1/0.9)(0.9 + 0.405 + 1 (1/2) 0.81) + 1 0.81
        ("a", "ab", 1.0),
        # uneven, X = 0, 1: (0.1/0.9)(1/2 0.81) + (1/2 + 0) 0.81
        ("b", "ab", 0.45),
    ],
)
def test_rbo_matches_the_hand_computed_values(old: str, new: str, expected: float) -> None:
    assert rbo(list(old), list(new)) == pytest.approx(expected, abs=1e-9)
    assert rbo(list(new), list(old)) == pytest.approx(expected, abs=1e-9)  # symmetric


def test_rbo_weighs_the_top_ranks_more_than_overlap_does() -> None:
    ranks = list(range(10))
    first_lost = [99, *ranks[1:]]
    last_lost = [*ranks[:9], 99]
    assert overlap_at_k(ranks, first_lost, 10) == overlap_at_k(ranks, last_lost, 10) == 0.9
    assert rbo(ranks, first_lost) < rbo(ranks, last_lost) < 1.0
    assert rbo([], []) == 1.0 and rbo([], [1]) == 0.0


def test_graded_ndcg_against_the_pools_ideal() -> None:
    judged = {"a": 1.0, "b": 0.5, "c": 0.0, "d": 0.25}
    ideal = 1.0 + 0.5 / math.log2(3)
    assert dcg([1.0, 0.5]) == pytest.approx(ideal)
    assert ndcg(["a", "b"], judged, k=2) == pytest.approx(1.0)
    assert ndcg(["b", "a"], judged, k=2) == pytest.approx((0.5 + 1.0 / math.log2(3)) / ideal)
    # a document the judge did not score gains nothing
    assert ndcg(["x", "a"], judged, k=2) == pytest.approx((1.0 / math.log2(3)) / ideal)
    assert ndcg(["a"], {"a": 0.0}) == 0.0  # nothing relevant anywhere: 0, not a division by 0


def test_a_distribution_has_its_quantiles_and_a_histogram() -> None:
    values = [i / 10 for i in range(11)]  # 0.0, 0.1, ..., 1.0
    dist = Distribution.of(values)
    assert dist.mean == 0.5
    assert dist.quantiles == {"p10": 0.1, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p90": 0.9}
    assert dist.histogram == [1, 1, 1, 1, 1, 1, 1, 1, 1, 2]  # 1.0 falls in the last bin
    single = Distribution.of([0.4])
    assert set(single.quantiles.values()) == {0.4} and single.histogram[4] == 1
    assert Distribution.of([]) == Distribution()


def test_paired_bootstrap_intervals() -> None:
    old = [0.2, 0.4, 0.6, 0.8, 1.0]
    new = [v - 0.1 for v in old]
    old_ci, new_ci, difference = paired_bootstrap(old, new)
    assert old_ci[0] < 0.6 < old_ci[1] and new_ci[0] < 0.5 < new_ci[1]
    # paired: every resample's difference is exactly -0.1
    assert difference == pytest.approx((-0.1, -0.1))
    assert paired_bootstrap(old, new) == (old_ci, new_ci, difference)  # seeded
    # two values: resampled means are 0, 0.5 or 1 (1/4, 1/2, 1/4): the 95% interval is [0, 1]
    assert paired_bootstrap([0.0, 1.0], [0.0, 1.0])[0] == (0.0, 1.0)
    assert paired_bootstrap([0.3], [0.7]) == ((0.3, 0.3), (0.7, 0.7), (0.4, 0.4))
    with pytest.raises(ValueError, match="no values"):
        paired_bootstrap([], [])
