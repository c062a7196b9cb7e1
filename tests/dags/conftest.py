"""Fixtures for running the real DAG with ``dag.test()`` on a real metadata DB."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from scripts.approvals_client import ApprovalClient

DAG_ID = "qdrant_model_migration"


@pytest.fixture
def dagbag(airflow_db: Any) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    assert not bag.import_errors
    return bag


@pytest.fixture
def dag(dagbag: Any) -> Any:
    return dagbag.get_dag(DAG_ID)


@pytest.fixture
def lifecycle_dag(dagbag: Any) -> Any:
    return dagbag.get_dag("qdrant_migration_lifecycle")


@pytest.fixture
def reviewer(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], dict[str, Any]]]:
    """Answer the next approval through the REST API from a thread, like a human would.

    The API app runs in-process (it listens on no port), so auth is switched off for it.
    """
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
    seen: dict[str, Any] = {}
    threads: list[threading.Thread] = []

    def answer(option: str, before_answer: Callable[[], None] | None = None) -> dict[str, Any]:
        from airflow.api_fastapi.app import create_app
        from fastapi.testclient import TestClient

        def run() -> None:
            api = ApprovalClient(TestClient(create_app(apps="core")))
            try:
                detail = api.wait_for(timeout_s=300)
                seen["detail"] = detail
                if before_answer is not None:
                    before_answer()
                seen["answer"] = api.answer(detail, option)
            except Exception as error:  # surfaced by the test through `seen`
                seen["error"] = error

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        return seen

    yield answer
    for thread in threads:
        thread.join(timeout=30)


def task_states(run: Any) -> dict[str, str | None]:
    return {
        ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]": ti.state
        for ti in run.get_task_instances()
    }


from tests.standin import standin, standin_server  # noqa: E402, F401
