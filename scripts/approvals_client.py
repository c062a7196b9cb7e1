"""Answering the swap approval over Airflow's REST API.

Airflow's CLI cannot answer a human-in-the-loop task; its REST API can. This is the small
client behind ``scripts/approvals.py``, the demo and the tests: list pending approvals with
the report they show, and answer one.
"""

from __future__ import annotations

import time
from typing import Any, Protocol, cast

from include.qdrant_migration.airflow.approvals import (
    DAG_ID,
    answer_body,
    answer_path,
    pending_path,
    run_of,
)
from include.qdrant_migration.airflow.workarounds import APPROVAL_SETTLE_S, seconds_to_settle

__all__ = ["DAG_ID", "ApprovalClient", "ApprovalError"]


class HttpClient(Protocol):
    """What of httpx.Client (and FastAPI's TestClient, which is one) this client uses."""

    def get(self, url: str, *, params: Any = ..., headers: Any = ...) -> Any: ...

    def patch(self, url: str, *, json: Any = ..., headers: Any = ...) -> Any: ...


class ApprovalError(RuntimeError):
    """The API refused or no approval appeared in time."""


class ApprovalClient:
    """List and answer pending approvals through ``/api/v2``."""

    def __init__(
        self,
        http: HttpClient,
        headers: dict[str, str] | None = None,
        *,
        settle_s: float = APPROVAL_SETTLE_S,
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
            pending_path(dag_id),
            params={"response_received": "false"},
            headers=self.headers,
        )
        _raise_for(response, "list pending approvals")
        return list(response.json().get("hitl_details", []))

    def answer(self, detail: dict[str, Any], option: str) -> dict[str, Any]:
        time.sleep(seconds_to_settle(detail, self.settle_s))
        response = self.http.patch(
            answer_path(detail), json=answer_body(option), headers=self.headers
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
                if run_id is None or run_of(detail) == run_id:
                    return detail
            time.sleep(0.5)
        raise ApprovalError(f"No pending approval for {dag_id} appeared within {timeout_s:.0f}s")


def _raise_for(response: Any, what: str) -> None:
    if response.status_code >= 400:
        raise ApprovalError(f"Could not {what}: HTTP {response.status_code} {response.text[:300]}")
