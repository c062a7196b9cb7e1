"""Evidence gates the swap; rollback is one step and published; retire waits for the
observation period; the catch-up DAG keeps a waiting migration level."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import models as qm

from include.qdrant_migration.airflow import tasks
from include.qdrant_migration.aliases import current_target
from include.qdrant_migration.qdrant import QdrantSettings, open_client
from include.qdrant_migration.state import Migrations, QdrantStateStore
from tests.dags.conftest import task_states

pytestmark = pytest.mark.integration

CONF = {"alias": "articles", "points_per_partition": 100, "batch_size": 32}
#: With the old model known, the catch-up mirrors to the old collection and a rollback
#: copies back what was written since the swap.
KNOWN_OLD = {"source_provider": "local", "source_model": "all-MiniLM-L6-v2"}
NEW = "articles_v1__multilingual-e5-small__v1"


def _store(path: Path) -> Any:
    return open_client(QdrantSettings(path=str(path)))


def _alias_events(alias: str) -> list[dict[str, Any]]:
    """The extras of the Asset events published for ``alias``, oldest first."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == f"x-qdrant-alias://{alias}")
            .order_by(AssetEvent.id)
        ).all()
        return [dict(row.extra) for row in rows]


def test_approve_then_rollback_then_retire(
    dag: Any, lifecycle_dag: Any, qdrant_conn: Path, reviewer: Any
) -> None:
    published_before = len(_alias_events("articles"))
    reviewer("Approve")
    assert dag.test(run_conf=CONF | KNOWN_OLD).state == "success"
    with _store(qdrant_conn) as client:
        assert current_target(client, "articles") == NEW
        (record,) = Migrations(QdrantStateStore(client)).all()
        migration_id = record.migration_id
    swap = _alias_events("articles")[published_before:]
    assert [(e["action"], e["from_collection"], e["to_collection"]) for e in swap] == [
        ("swap", "articles_v1", NEW)
    ]
    assert swap[0]["migration_id"] == migration_id

    too_early = lifecycle_dag.test(
        run_conf={"action": "retire", "migration_id": migration_id, "observation_days": 7}
    )
    assert too_early.state == "failed"  # the old collection is kept for rollback
    rolled = lifecycle_dag.test(run_conf={"action": "rollback", "alias": "articles"})
    assert rolled.state == "success"
    assert task_states(rolled)["retire"] == "skipped"
    with _store(qdrant_conn) as client:
        assert current_target(client, "articles") == "articles_v1"
        assert client.collection_exists(NEW)
    back = _alias_events("articles")[published_before + 1 :]
    assert [(e["action"], e["from_collection"], e["to_collection"]) for e in back] == [
        ("rollback", NEW, "articles_v1")
    ]

    retired = lifecycle_dag.test(
        run_conf={"action": "retire", "migration_id": migration_id, "observation_days": 0}
    )
    assert retired.state == "success"
    assert len(_alias_events("articles")) == published_before + 2  # retiring moves no alias
    with _store(qdrant_conn) as client:
        names = {c.name for c in client.get_collections().collections}
        assert "articles_v1" in names and NEW not in names  # the unused new one went
        assert current_target(client, "articles") == "articles_v1"


def test_damaged_target_fails_recall_check_and_alias_stays(
    dag: Any, qdrant_conn: Path, monkeypatch: pytest.MonkeyPatch, capfd: Any
) -> None:
    real_catch_up = tasks.catch_up

    def catch_up_then_damage(plan: dict[str, Any]) -> dict[str, Any]:
        result = real_catch_up(plan)
        with _store(qdrant_conn) as client:  # somebody deletes points after the catch-up
            client.delete(plan["target_collection"], qm.PointIdsList(points=[3, 5, 7, 11]))
        return result

    monkeypatch.setattr(tasks, "catch_up", catch_up_then_damage)

    run = dag.test(run_conf=CONF, mark_success_pattern="approve_.*")

    states = task_states(run)
    assert states["recall_check"] == "failed"
    assert states["swap_alias"] in {"upstream_failed", None}
    out = capfd.readouterr().out
    assert (
        "4 points of" in out and "are not what the catch-up wrote (e.g. ids [3, 5, 7, 11])" in out
    )
    with _store(qdrant_conn) as client:
        assert current_target(client, "articles") == "articles_v1"


def test_catch_up_dag_catches_up_a_migration_waiting_for_approval(
    dag: Any, qdrant_conn: Path, reviewer: Any
) -> None:
    """While the approval waits, the source changes and the catch-up DAG brings it level."""
    seen: dict[str, Any] = {}

    def before_answer() -> None:
        with _store(qdrant_conn) as client:
            client.set_payload("articles_v1", {"text": "A rewritten docstring."}, points=[2])
            client.delete("articles_v1", points_selector=[4])
        nightly = subprocess.run(
            [sys.executable, "-m", "airflow", "dags", "test", "qdrant_migration_catch_up"],
            env=os.environ.copy(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        seen["nightly"] = nightly
        with _store(qdrant_conn) as client:
            seen["after"] = {p.id: p.payload for p in client.retrieve(NEW, [2, 4])}

    reviewer("Approve", before_answer=before_answer)

    run = dag.test(run_conf=CONF)

    assert run.state == "success", task_states(run)
    nightly = seen["nightly"]
    assert nightly.returncode == 0, nightly.stdout[-3000:] + nightly.stderr[-3000:]
    assert "catch_up_migration" in nightly.stdout + nightly.stderr
    # The nightly run had already brought the waiting migration's target level.
    assert seen["after"] == {2: seen["after"][2]}
    assert seen["after"][2]["text"] == "A rewritten docstring."
