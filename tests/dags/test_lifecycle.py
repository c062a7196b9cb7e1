"""Evidence gates the swap; rollback is one step; retire waits for the observation period."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import models as qm

from include.qdrant_migration import tasks
from include.qdrant_migration.aliases import current_target
from include.qdrant_migration.qdrant import QdrantSettings, open_client
from include.qdrant_migration.state import QdrantStateStore
from tests.dags.conftest import task_states

pytestmark = pytest.mark.integration

CONF = {"alias": "articles", "points_per_partition": 100, "batch_size": 32}
NEW = "articles_v1__multilingual-e5-small__v1"


def _store(path: Path) -> Any:
    return open_client(QdrantSettings(path=str(path)))


def test_approve_then_rollback_then_retire(
    dag: Any, lifecycle_dag: Any, qdrant_conn: Path, reviewer: Any
) -> None:
    reviewer("Approve")
    assert dag.test(run_conf=CONF).state == "success"
    with _store(qdrant_conn) as client:
        assert current_target(client, "articles") == NEW
        migration_id = next(QdrantStateStore(client).scan("migration"))["migration_id"]

    too_early = lifecycle_dag.test(
        run_conf={"action": "retire", "migration_id": migration_id, "observation_days": 7}
    )
    assert too_early.state == "failed"  # the old collection is kept for rollback
    rolled = lifecycle_dag.test(run_conf={"action": "rollback", "alias": "articles"})
    assert rolled.state == "success"
    with _store(qdrant_conn) as client:
        assert current_target(client, "articles") == "articles_v1"
        assert client.collection_exists(NEW)

    retired = lifecycle_dag.test(
        run_conf={"action": "retire", "migration_id": migration_id, "observation_days": 0}
    )
    assert retired.state == "success"
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
    assert "4 source points are missing" in capfd.readouterr().out
    with _store(qdrant_conn) as client:
        assert current_target(client, "articles") == "articles_v1"


def test_nightly_run_catches_up_a_migration_waiting_for_approval(
    dag: Any, qdrant_conn: Path, reviewer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the approval waits, the source changes and a scheduled (no-conf) run catches up."""
    seen: dict[str, Any] = {}

    def before_answer() -> None:
        with _store(qdrant_conn) as client:
            client.set_payload("articles_v1", {"text": "A rewritten docstring."}, points=[2])
            client.delete("articles_v1", points_selector=[4])
        nightly = subprocess.run(
            [sys.executable, "-m", "airflow", "dags", "test", "qdrant_model_migration"],
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
    assert "catch_up_all" in nightly.stdout + nightly.stderr
    # The nightly run had already brought the waiting migration's target level.
    assert seen["after"] == {2: seen["after"][2]}
    assert seen["after"][2]["text"] == "A rewritten docstring."
