"""The whole DAG with ``dag.test()``: real Airflow, embedded Qdrant, real local models."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from include.qdrant_migration.aliases import current_target
from include.qdrant_migration.phases import LINEAR_MAP_FIT, ORDER, Timeline, actual_phases
from include.qdrant_migration.providers import get_provider
from include.qdrant_migration.qdrant import QdrantSettings, open_client
from include.qdrant_migration.state import (
    Leases,
    Migrations,
    MigrationStatus,
    QdrantStateStore,
    Reports,
)
from tests.conftest import SEED_POINTS, TARGET_MODEL
from tests.dags.conftest import return_value, task_states

pytestmark = pytest.mark.integration

CONF = {"alias": "articles", "points_per_partition": 100, "batch_size": 32}


def _snapshot(path: Path, collection: str) -> dict[Any, Any]:
    with open_client(QdrantSettings(path=str(path))) as client:
        points, _ = client.scroll(collection, limit=10_000, with_payload=True, with_vectors=True)
    return {p.id: (p.payload, np.round(np.asarray(p.vector), 6).tolist()) for p in points}


def test_approved_migration_moves_alias_to_new_model(
    dag: Any, qdrant_conn: Path, reviewer: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _snapshot(qdrant_conn, "articles_v1")
    seen = reviewer("Approve")

    run = dag.test(run_conf=CONF)

    assert "error" not in seen, seen.get("error")
    assert run.state == "success", task_states(run)
    # A clean run raises no alarm: no error-level line (dag.test logs tasks to stdout).
    logged = capsys.readouterr()
    alarms = [line for line in logged.out.splitlines() if "[error" in line]
    assert alarms == [], alarms
    assert "recall@10" in seen["detail"]["body"]  # the approver saw the evidence
    # Three partitions of <=100 points for 240 points.
    assert sum(1 for k in task_states(run) if k.startswith("backfill_batch[")) == 3
    with open_client(QdrantSettings(path=str(qdrant_conn))) as client:
        target = current_target(client, "articles")
        assert target == "articles_v1__multilingual-e5-small__v1"
        assert client.count(target, exact=True).count == SEED_POINTS
        info = client.get_collection(target)
        lineage = info.config.metadata["qdrant_migration"]
        assert lineage["model"] == TARGET_MODEL and lineage["source_collection"] == "articles_v1"
        points, _ = client.scroll(target, limit=20, with_payload=True, with_vectors=True)
    expected = get_provider("local", TARGET_MODEL).embed_documents(
        [p.payload["text"] for p in points]
    )
    assert np.allclose([p.vector for p in points], expected, atol=1e-4)
    # The source was never written to, and stays for rollback.
    assert _snapshot(qdrant_conn, "articles_v1") == before
    _every_phase_is_accounted_for(return_value(run, "build_report"))


def _every_phase_is_accounted_for(report: dict[str, Any]) -> None:
    """The plan estimated every phase the run went through, the run recorded when each
    ended, and the phases add up to the run up to its report (their timing is not tested:
    that is what the README's sample report shows)."""
    plan = [p["name"] for p in report["estimate"]["phases"]]
    assert plan == [p for p in ORDER if p != LINEAR_MAP_FIT], plan
    timeline = Timeline(**report["evidence"]["timeline"])
    took = actual_phases(timeline)
    assert list(took) == plan, (took, timeline)
    whole = datetime.fromisoformat(str(timeline.reported_at)) - datetime.fromisoformat(
        str(timeline.run_started_at)
    )
    assert sum(took.values()) == pytest.approx(whole.total_seconds(), abs=0.5)
    estimate = report["estimate"]
    assert estimate["duration_s"] == pytest.approx(
        sum(p["seconds"] for p in estimate["phases"]), abs=0.2
    )
    rows = [line for line in report["markdown"].splitlines() if line.startswith("| ")]
    for name in plan:  # each phase on its own line, planned beside actual
        assert any(line.startswith(f"| {name} | ") for line in rows), name


def test_rejected_migration_ends_and_leaves_alias(
    dag: Any, dagbag: Any, qdrant_conn: Path, reviewer: Any
) -> None:
    """A rejection ends the migration: recorded, not followed by the catch-up, retirable."""
    seen = reviewer("Reject")

    run = dag.test(run_conf=CONF)

    assert "error" not in seen, seen.get("error")
    states = task_states(run)
    assert states["swap_alias"] == "skipped"
    assert states["finish_migration"] == "success"
    finished = return_value(run, "finish_migration")
    assert finished["outcome"].startswith("rejected") and finished["approval"] == "Reject"
    with open_client(QdrantSettings(path=str(qdrant_conn))) as client:
        assert current_target(client, "articles") == "articles_v1"
        state = QdrantStateStore(client)
        (record,) = Migrations(state).all()
        assert record.status is MigrationStatus.REJECTED and record.rejected_at
        report = Reports(state).get(record.migration_id)
        assert report is not None and report.outcome and report.outcome.startswith("rejected")
        assert Leases(state).get(f"run/{record.migration_id}") is None  # freed

    nightly = dagbag.get_dag("qdrant_migration_catch_up").test()
    assert return_value(nightly, "migrations_to_catch_up") == []
    retired = dagbag.get_dag("qdrant_migration_lifecycle").test(
        run_conf={"action": "retire", "migration_id": record.migration_id}
    )
    assert retired.state == "success", task_states(retired)
    with open_client(QdrantSettings(path=str(qdrant_conn))) as client:
        names = {c.name for c in client.get_collections().collections}
    assert record.target_collection not in names and "articles_v1" in names


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"alias": "articles", "batch_size": "300"}, "batch_size"),
        ({"alias": "articles", "provider": "acme"}, "provider"),
        ({"alias": "articles", "recall_threshold": 2}, "recall_threshold"),
    ],
)
def test_bad_conf_is_refused_before_any_task(
    dag: Any, qdrant_conn: Path, conf: dict[str, Any], message: str
) -> None:
    from airflow.sdk.definitions.param import ParamValidationError

    with pytest.raises(ParamValidationError, match=message):
        dag.test(run_conf=conf)
    with open_client(QdrantSettings(path=str(qdrant_conn))) as client:
        names = {c.name for c in client.get_collections().collections}
    assert names == {"articles_v1"}


def test_unknown_alias_fails_in_assess_without_writing(dag: Any, qdrant_conn: Path) -> None:
    run = dag.test(run_conf={"alias": "nope"})

    states = task_states(run)
    assert run.state == "failed"
    assert states["assess_compatibility"] == "failed"
    assert states["create_collection"] in {"upstream_failed", None}
    with open_client(QdrantSettings(path=str(qdrant_conn))) as client:
        assert {c.name for c in client.get_collections().collections} == {"articles_v1"}


def test_add_sparse_gives_the_new_collection_bm25_and_the_report_measures_hybrid(
    dag: Any, qdrant_conn: Path, reviewer: Any
) -> None:
    import json

    from tests.conftest import ROOT

    rows = [json.loads(line) for line in (ROOT / "demo" / "eval_queries.jsonl").open()]
    seeded = [r for r in rows if max(r["relevant_ids"]) <= SEED_POINTS]
    seen = reviewer("Approve")
    conf = CONF | {
        "add_sparse": "bm25",
        "source_provider": "local",
        "source_model": "all-MiniLM-L6-v2",
        "eval_set": seeded,
    }

    run = dag.test(run_conf=conf)

    assert run.state == "success", task_states(run)
    body = seen["detail"]["body"]
    header = next(line for line in body.splitlines() if line.startswith("| metric | old"))
    assert header == "| metric | old | new | old hybrid | new hybrid |", header
    ndcg = next(line for line in body.splitlines() if line.startswith("| nDCG@10 |"))
    cells = [c.strip() for c in ndcg.strip("|").split("|")]
    assert cells[3] == "n/a" and float(cells[4]) > 0, ndcg  # only the new side has BM25
    print(f"\n[add_sparse] {len(seeded)} queries: {ndcg}")
    with open_client(QdrantSettings(path=str(qdrant_conn))) as client:
        target = current_target(client, "articles")
        assert target is not None
        sparse = client.get_collection(target).config.params.sparse_vectors or {}
        assert str(sparse["bm25"].modifier) in ("idf", "Modifier.IDF")
        points, _ = client.scroll(target, limit=SEED_POINTS, with_vectors=["bm25"])
        assert all(isinstance(p.vector, dict) and p.vector.get("bm25") for p in points)
