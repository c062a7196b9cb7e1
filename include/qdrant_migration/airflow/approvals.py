"""The swap approval on Airflow's REST API: where pending approvals are listed and answered.

Airflow's CLI cannot answer a human-in-the-loop task; its REST API can. The terminal client
(``scripts/approvals_client.py``) and the UI plugin (``ui_app.py``) both go through these
paths, so an answer from either is the same ``PATCH`` Airflow records with its user. Both
wait before answering an approval that has just appeared (``workarounds.seconds_to_settle``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

DAG_ID = "qdrant_model_migration"
APPROVAL_TASK = "approve_swap"
LIFECYCLE_DAG_ID = "qdrant_migration_lifecycle"
APPROVE, REJECT = "Approve", "Reject"


def pending_path(dag_id: str = DAG_ID) -> str:
    """``GET`` it with ``response_received=false`` for the unanswered approvals of every run."""
    return f"/api/v2/dags/{quote(dag_id, safe='~')}/dagRuns/~/hitlDetails"


def answer_path(detail: dict[str, Any]) -> str:
    """``PATCH`` it with :func:`answer_body` to answer ``detail`` (one pending approval)."""
    ti = detail.get("task_instance", detail)
    dag_id, run_id, task_id = (quote(ti[k], safe="") for k in ("dag_id", "dag_run_id", "task_id"))
    return (
        f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"
        f"/taskInstances/{task_id}/{ti.get('map_index', -1)}/hitlDetails"
    )


def answer_body(option: str) -> dict[str, Any]:
    return {"chosen_options": [option], "params_input": {}}


def run_of(detail: dict[str, Any]) -> str:
    return str(detail.get("task_instance", detail)["dag_run_id"])
