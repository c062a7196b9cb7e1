"""The plugin's HTML: what a person reads, escaped, with its charts and its refresh."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration import codec
from include.qdrant_migration.checks.ranking import Distribution
from include.qdrant_migration.checks.traffic import ChangedQuery, Judged, Replay, Result
from include.qdrant_migration.spec import Strategy
from include.qdrant_migration.state import (
    MemoryStateStore,
    Migrations,
    MigrationStatus,
    ReportRecord,
    Reports,
)
from include.qdrant_migration.sync.checkpoints import (
    BatchWork,
    Checkpoints,
    FileState,
    RequestFile,
)
from include.qdrant_migration.ui import pages, views
from include.qdrant_migration.ui.views import AirflowFacts, PendingApproval, RunFacts
from tests.qdrant_migration.ui.helpers import DAG, T0, at, loading

LINKS = pages.Links(base="/qdrant-migrations", airflow="", dag_id=DAG)
ADMIN = pages.Viewer("admin", can_answer=True, can_trigger=True)
VIEWER = pages.Viewer("viewer", can_answer=False, can_trigger=False)
REPORT = """# Migration report

| metric | old | new |
| --- | --- | --- |
| nDCG@10 | 0.81 | 0.86 |

Queries that regressed most:

- '<script>alert(1)</script>': 0.9 → 0.4
"""


def a_page(*, approval: bool) -> views.MigrationPage:
    store = MemoryStateStore()
    record = loading(store, {0: [[at(0), 0], [at(10), 50], [at(20), 100]], 1: [[at(0), 0]]})
    if approval:
        Migrations(store).transition(record, MigrationStatus.READY)
    Reports(store).put(
        ReportRecord(
            migration_id="mig-1",
            strategy=Strategy.FULL_REEMBED,
            markdown=REPORT,
            run_id="run-1",
            evidence={"quality": {"old": {"ndcg@10": 0.81}, "new": {"ndcg@10": 0.86}}},
        )
    )
    client = QdrantClient(location=":memory:")
    client.create_collection("docs_v1", vectors_config={})
    client.update_collection_aliases(
        change_aliases_operations=[
            qm.CreateAliasOperation(
                create_alias=qm.CreateAlias(collection_name="docs_v1", alias_name="docs")
            )
        ]
    )
    facts = AirflowFacts(
        DAG,
        runs={"run-1": RunFacts("run-1", "running")},
        approvals={"run-1": PendingApproval("run-1", "approve_swap", -1, ("Approve", "Reject"))}
        if approval
        else {},
    )
    page = views.migration_page(store, client, "mig-1", facts, now=T0 + timedelta(seconds=20))
    assert page is not None
    return page


def test_the_report_is_rendered_and_nothing_in_it_runs() -> None:
    html = pages.migration_html(a_page(approval=True), LINKS, ADMIN, None)
    assert "<table>" in html and "<td>0.86</td>" in html  # the markdown table
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<svg") == 2  # throughput and quality
    assert 'data-action="approve"' in html and 'data-action="reject"' in html
    assert 'data-refresh="5"' in html  # awaiting approval: refreshes often
    assert 'href="/dags/qdrant_model_migration/runs/run-1"' in html


def test_batch_mode_partitions_show_their_files() -> None:
    store = MemoryStateStore()
    loading(store, {0: [[at(0), 0]]})
    checkpoints = Checkpoints(store)
    checkpoint = checkpoints.get("mig-1/f1/0")
    assert checkpoint is not None
    states: list[FileState] = ["done", "submitted", "submitted"]
    files = [RequestFile("a", [], state) for state in states]
    checkpoints.put(dataclasses.replace(checkpoint, batch=BatchWork(files=files)))
    client = QdrantClient(location=":memory:")
    page = views.migration_page(store, client, "mig-1", AirflowFacts(DAG))
    assert page is not None and page.partitions[0].batch_files == {"done": 1, "submitted": 2}
    html = pages.migration_html(page, LINKS, ADMIN, None)
    assert "Batch API files: 1 done, 2 submitted" in html


def test_a_viewer_sees_the_actions_disabled() -> None:
    html = pages.migration_html(a_page(approval=True), LINKS, VIEWER, None)
    approve = html[html.index('data-action="approve"') :]
    assert "disabled" in approve[: approve.index(">")]


def test_the_list_shows_progress_rate_and_money() -> None:
    row = a_page(approval=False).row
    html = pages.list_page([row], LINKS, ADMIN, "Airflow's API could not be read: 503")
    assert "100 / 200 points (50%)" in html
    assert "5.0 points/s" in html and "ETA 20s" in html
    assert 'href="/qdrant-migrations/migrations/mig-1"' in html
    assert "Airflow&#39;s API could not be read: 503" in html  # the problem is said, not hidden


def test_an_empty_list_says_how_to_start() -> None:
    html = pages.list_page([], LINKS, ADMIN, None)
    assert "No migration is recorded yet" in html and 'data-refresh="60"' in html


def _replayed() -> Replay:
    """What a replay of 40 queries keeps: distributions, a judge, changed queries by title."""
    overlap = Distribution.of([i / 10 for i in range(10)] * 4)
    changed = [
        ChangedQuery(
            query=f"query number {n}",
            overlap=0.1 * n,
            rbo=0.05 * n,
            new_results=10 - n,
            old=[Result(i, f"old title {n}.{i}") for i in range(3)],
            new=[Result(i + n, f"new title {n}.{i}") for i in range(3)],
            old_ndcg=0.8,
            new_ndcg=0.6,
        )
        for n in range(10)
    ]
    changed[0] = dataclasses.replace(
        changed[0], new=[Result(99, "<script>alert(2)</script>"), *changed[0].new[1:]]
    )
    judged = Judged(
        "cohere/rerank-v3.5", 40, 0.71, 0.64, (0.66, 0.76), (0.59, 0.69), (-0.1, -0.04), True, 0.02
    )
    return Replay(
        "file '/logs/q.jsonl'",
        52,
        2,
        45,
        40,
        10,
        "title",
        overlap,
        overlap,
        results=400,
        new_results=123,
        changed=changed,
        judge=judged,
    )


def test_the_page_shows_the_replayed_traffic() -> None:
    page = dataclasses.replace(a_page(approval=True), replay=_replayed())
    html = pages.migration_html(page, LINKS, ADMIN, None)
    assert 'aria-label="replayed queries by overlap and RBO"' in html
    assert html.count('<rect class="overlap"') == 11 and html.count('<rect class="rbo"') == 11
    assert "Real traffic: 40 production queries, old vs new top 10" in html
    assert "<td>overlap@10</td><td>0.450</td>" in html and "<td>RBO (p=0.9)</td>" in html
    assert (
        "Judged nDCG@10 (cohere/rerank-v3.5, 40 queries): old <b>0.710</b> [0.660, 0.760]" in html
    )
    assert "gates the swap at tolerance 0.02" in html
    changed = html[html.index('id="changed"') :]
    assert changed.count("<tr><td>query number") == 10
    assert "<li>old title 3.0</li>" in changed and "<li>★ new title 3.0</li>" in changed
    assert "<li>new title 0.1</li>" in changed  # id 1 was in the old list: no star
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in changed and "<script>alert(2)" not in html


def test_the_page_reads_the_replay_from_the_report() -> None:
    store = MemoryStateStore()
    loading(store, {0: [[at(0), 0]]})
    evidence = {"quality": {"skipped": "x"}, "replay": codec.encode(_replayed())}
    Reports(store).put(ReportRecord("mig-1", Strategy.FULL_REEMBED, "report", evidence=evidence))
    page = views.migration_page(
        store, QdrantClient(location=":memory:"), "mig-1", AirflowFacts(DAG)
    )
    assert page is not None and page.replay == _replayed()
    assert page.quality == {"judged nDCG@10": (0.71, 0.64)}
