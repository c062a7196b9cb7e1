"""What the UI shows, read from a real migrated store and from hand-made progress records."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from qdrant_client import QdrantClient

from include.qdrant_migration.state import (
    MemoryStateStore,
    Migrations,
    MigrationStatus,
    ReportRecord,
    Reports,
)
from include.qdrant_migration.sync import checkpoints
from include.qdrant_migration.sync.checkpoints import add_sample
from include.qdrant_migration.ui import views
from include.qdrant_migration.ui.views import AirflowFacts, PendingApproval, RunFacts
from tests.qdrant_migration.helpers import SEED_POINTS, SOURCE_MODEL, Migrated
from tests.qdrant_migration.ui.helpers import DAG, T0, at, loading


def test_rate_and_eta_come_from_the_recent_samples() -> None:
    store = MemoryStateStore()
    loading(store, {0: [[at(0), 0], [at(10), 20], [at(20), 40]], 1: [[at(0), 0], [at(20), 20]]})
    facts = AirflowFacts(DAG, runs={"run-1": RunFacts("run-1", "running")})

    (row,) = views.migration_rows(store, facts, now=T0 + timedelta(seconds=20))

    assert (row.points_done, row.points_total) == (60, 200)
    assert row.rate == pytest.approx(3.0)  # 60 points in 20 s
    assert row.eta_s == pytest.approx(140 / 3.0)
    assert row.money.tokens == 600
    assert (row.run_id, row.run_state, row.status) == ("run-1", "running", "loading")
    assert row.active


def test_a_stalled_backfill_has_rate_zero_and_no_eta() -> None:
    store = MemoryStateStore()
    loading(store, {0: [[at(0), 0], [at(20), 40]]})
    (row,) = views.migration_rows(store, AirflowFacts(DAG), now=T0 + timedelta(minutes=10))
    assert row.rate == 0.0 and row.eta_s is None


def test_samples_stay_few_and_cover_the_whole_run() -> None:
    history: list[list[Any]] = []
    for done in range(1, 301):
        add_sample(history, done, final=True)
    assert len(history) <= checkpoints.HISTORY_SAMPLES
    assert history[0][1] == 1 and history[-1][1] == 300
    assert [d for _, d in history] == sorted(d for _, d in history)
    add_sample(history, 300)  # nothing new: not sampled again
    assert history[-1][1] == 300 and len(history) <= checkpoints.HISTORY_SAMPLES


def test_pending_approval_is_shown_with_what_approving_does() -> None:
    store = MemoryStateStore()
    record = loading(store, {0: [[at(0), 100]], 1: [[at(0), 100]]})
    Migrations(store).transition(record, MigrationStatus.READY)
    approval = PendingApproval("run-1", "approve_swap", -1, ("Approve", "Reject"))
    client = QdrantClient(location=":memory:")
    client.create_collection("docs_v1", vectors_config={})
    facts = AirflowFacts(DAG, approvals={"run-1": approval})

    page = views.migration_page(store, client, "mig-1", facts)

    assert page is not None and page.row.status == views.AWAITING_APPROVAL
    assert [a.name for a in page.actions] == ["approve", "reject"]
    assert "'docs_v1__m__v1'" in page.actions[0].confirm
    assert page.approval == approval and page.serving is None  # no alias yet
    assert [p.fraction for p in page.partitions] == [1.0, 1.0]


def test_a_migrated_store_reads_back(migrated: Migrated) -> None:
    state, plan = migrated.state, migrated.plan
    Reports(state).put(
        ReportRecord(
            migration_id=plan.migration_id,
            strategy=plan.strategy,
            markdown="# Report",
            run_id="run-9",
            evidence={
                "quality": {"old": {"ndcg@10": 0.8}, "new": {"ndcg@10": 0.9}},
                "reported_at": "2026-11-30T12:00:00+00:00",
            },
        )
    )
    facts = AirflowFacts(DAG, runs={"run-9": RunFacts("run-9", "success")})
    lineage = {"provider": "local", "model": SOURCE_MODEL, "dimensions": 384}
    migrated.client.update_collection(
        plan.source.collection, metadata={"qdrant_migration": lineage}
    )

    page = views.migration_page(state, migrated.client, plan.migration_id, facts)

    assert page is not None
    row = page.row
    assert row.points_done == row.points_total == SEED_POINTS
    assert row.money.tokens == sum(r.tokens for r in migrated.results) > 0
    assert row.money.planned_tokens == plan.estimate.tokens
    # The seeded source records no lineage and the params name no old model: unknown.
    assert (row.model, row.source_model, row.run_id) == (plan.spec.model, None, "run-9")
    assert len(page.partitions) == len(migrated.results)
    assert all(p.done and p.resumes_at is None for p in page.partitions)
    assert page.throughput[-1][1] == SEED_POINTS
    assert page.quality == {"ndcg@10": (0.8, 0.9)}
    assert page.serving == plan.source.collection
    assert page.lineage[0].collection == plan.source.collection
    assert page.lineage[0].model == SOURCE_MODEL
    assert dict((w, p) for w, p, _ in page.plan_vs_actual)["tokens"] == f"{plan.estimate.tokens:,}"
    # loading, and the run that loaded it is over (nobody resumed it): only retire applies
    assert [a.name for a in page.actions] == ["retire"]
    running = AirflowFacts(DAG, runs={"run-9": RunFacts("run-9", "running")})
    page = views.migration_page(state, migrated.client, plan.migration_id, running)
    assert page is not None and page.actions == []  # a run drives it: nothing to do yet
    swapped = dataclasses.replace(
        Migrations(state).require(plan.migration_id),
        status=MigrationStatus.SWAPPED,
        previous_collection=plan.source.collection,
    )
    assert [a.name for a in views.actions(swapped, row, None, plan.target_collection)] == [
        "rollback",
        "retire",
    ]
    as_json = views.as_dict(page)
    assert as_json["row"]["fraction"] == 1.0 and as_json["row"]["active"] is True  # loading
