"""qdrant_budget: what it accepts, what it refuses and how, and each task's share."""

from __future__ import annotations

from typing import Any

import pytest

from include.qdrant_migration.budget import (
    ADAPTIVE_PROBE_INTERVAL_S,
    DEFAULT_INDEXING_THREADS,
    DEFAULT_PROBE_INTERVAL_S,
    BudgetError,
    QdrantBudget,
)
from include.qdrant_migration.spec import MigrationSpec, SpecError


def test_no_budget_paces_nothing_but_caps_the_index_threads() -> None:
    for empty in (None, {}):
        budget = QdrantBudget.from_options(empty)
        assert not budget.paces and not budget.adaptive
        assert budget.max_indexing_threads == DEFAULT_INDEXING_THREADS
        assert budget.probe_every_s == DEFAULT_PROBE_INTERVAL_S
        assert "writes not paced" in budget.describe()


def test_a_full_budget_is_read_and_described() -> None:
    budget = QdrantBudget.from_options(
        {
            "points_per_second": 400,
            "max_search_p99_ms": 25.5,
            "min_points_per_second": 20,
            "max_indexing_threads": 0,
        }
    )
    assert budget.paces and budget.adaptive
    assert budget.probe_every_s == ADAPTIVE_PROBE_INTERVAL_S
    assert budget.describe() == (
        "at most 400 points/s written; slower while probe searches of the source take over "
        "25.5 ms (AIMD, never below 20 points/s); index threads not capped"
    )


def test_each_parallel_task_gets_an_equal_share_of_the_rates() -> None:
    budget = QdrantBudget.from_options(
        {"points_per_second": 300, "max_search_p99_ms": 40, "min_points_per_second": 30}
    )
    share = budget.share(3)
    assert (share.points_per_second, share.min_points_per_second) == (100, 10)
    assert share.max_search_p99_ms == 40  # a latency is not divided
    # three tasks probe a third as often each: the migration's probes load the cluster alike
    assert share.probe_every_s == pytest.approx(3 * budget.probe_every_s)
    assert budget.share(0) == budget.share(1)  # never divided by zero
    assert budget.share(1).points_per_second == budget.points_per_second


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"points_per_second": -5}, "qdrant_budget.points_per_second must be a positive number"),
        ({"points_per_second": 0}, "must be a positive number; got 0"),
        (
            {"points_per_second": "500"},
            "must be a number, not str '500' (write points_per_second: 500, not \"500\")",
        ),
        ({"points_per_second": "fast"}, "must be a number, not str 'fast'"),
        ({"points_per_second": True}, "must be a number, not bool True"),
        ({"points_per_second": float("nan")}, "must be a positive number; got nan"),
        ({"points_per_second": float("inf")}, "must be a positive number; got inf"),
        ({"max_search_p99_ms": -1}, "qdrant_budget.max_search_p99_ms must be a positive number"),
        ({"probe_interval_s": 0}, "qdrant_budget.probe_interval_s must be a positive number"),
        ({"points_per_secnd": 5}, "'points_per_secnd' (did you mean 'points_per_second'?)"),
        ({"max_indexing_threads": -1}, "max_indexing_threads must be a whole number"),
        ({"max_indexing_threads": 1.5}, "max_indexing_threads must be a whole number"),
        ({"min_points_per_second": 5}, "set max_search_p99_ms too"),
        (
            {"points_per_second": 10, "max_search_p99_ms": 5, "min_points_per_second": 50},
            "min_points_per_second (50) is above points_per_second (10)",
        ),
        (500, "qdrant_budget must be a JSON object"),
    ],
)
def test_a_bad_budget_says_what_is_wrong(options: Any, says: str) -> None:
    with pytest.raises(BudgetError) as refused:
        QdrantBudget.from_options(options)
    assert says in str(refused.value)


def test_the_spec_refuses_a_bad_budget_before_anything_runs() -> None:
    with pytest.raises(SpecError, match="points_per_second must be a positive number"):
        MigrationSpec.from_params({"alias": "articles", "qdrant_budget": {"points_per_second": -1}})
    spec = MigrationSpec.from_params(
        {"alias": "articles", "qdrant_budget": {"points_per_second": 50}}
    )
    assert spec.budget.points_per_second == 50
