"""Answering the swap approval over Airflow's REST API.

Airflow's CLI cannot answer a human-in-the-loop task; its REST API can. This is the small
client behind ``scripts/approvals.py``, the demo and the tests: list pending approvals with
the report they show, and answer one.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Protocol, cast
from urllib.parse import quote

DAG_ID = "qdrant_model_migration"
APPROVAL_TASK = "approve_swap"


class HttpClient(Protocol):
    """What of httpx.Client (and FastAPI's TestClient, which is one) this client uses."""

    def get(self, url: str, *, params: Any = ..., headers: Any = ...) -> Any: ...

    def patch(self, url: str, *, json: Any = ..., headers: Any = ...) -> Any: ...


class ApprovalError(RuntimeError):
    """The API refused or no approval appeared in time."""


#: Seconds an approval must have been waiting before it is answered. Airflow 3.3's
#: scheduler can lose an answer given before it has processed the exit of the worker that
#: parked the task (it re-queues the task on the answer, then takes the parking worker's
#: exit for a task killed externally, retries it, and the retry asks again with the answer
#: already spent). A person never answers that fast; scripts and tests do. 5 s was not
#: always enough on a busy 2-core machine (the parking worker's exit was processed later).
SETTLE_S = 15.0


class ApprovalClient:
    """List and answer pending approvals through ``/api/v2``."""

    def __init__(
        self, http: HttpClient, headers: dict[str, str] | None = None, *, settle_s: float = SETTLE_S
    ) -> None:
        self.http = http
        self.headers = headers or {}
        self.settle_s = settle_s

    @classmethod
    def from_server(
        cls, url: str, user: str, password: str, *, timeout_s: float = 30.0
    ) -> ApprovalClient:
        """A client for a running api-server, logged in as ``user`` (SimpleAuthManager).

        ``POST /auth/token`` with a JSON ``{"username", "password"}`` body answers 201 with
        ``{"access_token": ...}``, a JWT sent as ``Authorization: Bearer`` afterwards.
        """
        import httpx

        http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s)
        try:
            response = http.post("/auth/token", json={"username": user, "password": password})
        except httpx.HTTPError as error:
            http.close()
            raise ApprovalError(f"Could not reach the Airflow API at {url}: {error}") from error
        if response.status_code >= 400:
            http.close()
        _raise_for(response, f"log in to {url} as {user!r}")
        token = str(response.json()["access_token"])
        # httpx.Client has get/patch with precise keyword signatures, which a Protocol
        # taking **kwargs cannot spell; it is an HttpClient at run time.
        return cls(cast(HttpClient, http), headers={"Authorization": f"Bearer {token}"})

    def close(self) -> None:
        """Close the underlying HTTP client, if it can be closed."""
        close = getattr(self.http, "close", None)
        if callable(close):
            close()

    def pending(self, dag_id: str = DAG_ID) -> list[dict[str, Any]]:
        response = self.http.get(
            f"/api/v2/dags/{quote(dag_id, safe='~')}/dagRuns/~/hitlDetails",
            params={"response_received": "false"},
            headers=self.headers,
        )
        _raise_for(response, "list pending approvals")
        return list(response.json().get("hitl_details", []))

    def answer(self, detail: dict[str, Any], option: str) -> dict[str, Any]:
        self._settle(detail)
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

    def _settle(self, detail: dict[str, Any]) -> None:
        """Wait until the approval has been pending for :data:`SETTLE_S` (see there)."""
        created = detail.get("created_at")
        if not created or not self.settle_s:
            return
        age = (datetime.now(tz=UTC) - datetime.fromisoformat(str(created))).total_seconds()
        if age < self.settle_s:
            time.sleep(self.settle_s - age)

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
