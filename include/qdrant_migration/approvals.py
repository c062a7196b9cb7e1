"""Answering the swap approval over Airflow's REST API.

Airflow's CLI cannot answer a human-in-the-loop task; its REST API can. This is the small
client behind ``scripts/approvals.py``, the demo and the tests: list pending approvals with
the report they show, and answer one.
"""

from __future__ import annotations

import time
from typing import Any, Protocol
from urllib.parse import quote

DAG_ID = "qdrant_model_migration"
APPROVAL_TASK = "approve_swap"


class HttpClient(Protocol):
    def get(self, url: str, **kwargs: Any) -> Any: ...

    def patch(self, url: str, **kwargs: Any) -> Any: ...


class ApprovalError(RuntimeError):
    """The API refused or no approval appeared in time."""


class ApprovalClient:
    """List and answer pending approvals through ``/api/v2``."""

    def __init__(self, http: HttpClient, headers: dict[str, str] | None = None) -> None:
        self.http = http
        self.headers = headers or {}

    def pending(self, dag_id: str = DAG_ID) -> list[dict[str, Any]]:
        response = self.http.get(
            f"/api/v2/dags/{quote(dag_id, safe='~')}/dagRuns/~/hitlDetails",
            params={"response_received": "false"},
            headers=self.headers,
        )
        _raise_for(response, "list pending approvals")
        return list(response.json().get("hitl_details", []))

    def answer(self, detail: dict[str, Any], option: str) -> dict[str, Any]:
        ti = detail.get("task_instance", detail)
        dag_id, run_id, task_id = (
            quote(ti[k], safe="") for k in ("dag_id", "dag_run_id", "task_id")
        )
        url = (
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"
            f"/taskInstances/{task_id}/{ti.get('map_index', -1)}/hitlDetails"
        )
        response = self.http.patch(
            url, json={"chosen_options": [option], "params_input": {}}, headers=self.headers
        )
        _raise_for(response, f"answer {option!r}")
        return dict(response.json())

    def wait_for(
        self, run_id: str | None = None, *, dag_id: str = DAG_ID, timeout_s: float = 600.0
    ) -> dict[str, Any]:
        """The first pending approval (of ``run_id`` if given), waiting until it appears."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for detail in self.pending(dag_id):
                ti = detail.get("task_instance", detail)
                if run_id is None or ti.get("dag_run_id") == run_id:
                    return detail
            time.sleep(0.5)
        raise ApprovalError(f"No pending approval for {dag_id} appeared within {timeout_s:.0f}s")


def _raise_for(response: Any, what: str) -> None:
    if response.status_code >= 400:
        raise ApprovalError(f"Could not {what}: HTTP {response.status_code} {response.text[:300]}")
