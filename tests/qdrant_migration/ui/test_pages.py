"""The plugin's HTML: what a person reads, escaped, with its charts and its refresh."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from qdrant_client import QdrantClient
from qdrant_client import models as qm

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
