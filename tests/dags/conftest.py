"""Fixtures for running the real DAG with ``dag.test()`` on a real metadata DB."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from scripts.approvals_client import ApprovalClient

DAG_ID = "qdrant_model_migration"

#: What the live-writes test's readers measured, printed at the end of the session (pytest
#: shows no output of a passing test otherwise): docs/reads.md's numbers come from here.
READS: list[str] = []


def note(line: str) -> None:
    READS.append(line)
    print(line)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if READS:
        terminalreporter.section("Live reads: failed and mismatched queries, latency by phase")
        for line in READS:
            terminalreporter.write_line(line)


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
            api = ApprovalClient(TestClient(create_app(apps="core")), settle_s=0)
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


@pytest.fixture
def openai_connection(monkeypatch: pytest.MonkeyPatch, standin: Any) -> Any:  # noqa: F811
    """Airflow connection ``embeddings``: OpenAI's SDK pointed at the wire-level stand-in."""
    from include.qdrant_migration.providers import ratelimit
    from tests.standin import OPENAI_KEY

    ratelimit.reset_shared_limiters()
    monkeypatch.setenv(
        "AIRFLOW_CONN_EMBEDDINGS",
        json.dumps(
            {
                "conn_type": "generic",
                "password": OPENAI_KEY,
                "extra": {"base_url": standin.openai_base_url},
            }
        ),
    )
    return standin


@pytest.fixture
def server_conn(qdrant_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:  # noqa: F811
    """The engine-backed test server, emptied, as the connection ``qdrant_default``."""
    qdrant_server.reset()
    monkeypatch.setenv("AIRFLOW_CONN_QDRANT_DEFAULT", json.dumps(qdrant_server.connection()))
    return qdrant_server


def return_value(run: Any, task_id: str) -> Any:
    """A task's XCom return value in a finished ``dag.test()`` run (None if it has none)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(
                run_id=run.run_id, dag_ids=run.dag_id, task_ids=task_id, key="return_value"
            )
        ).first()
        return XComModel.deserialize_value(row) if row is not None else None


def task_states(run: Any) -> dict[str, str | None]:
    return {
        ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]": ti.state
        for ti in run.get_task_instances()
    }


from tests.qdrant_server import qdrant_server  # noqa: E402, F401
from tests.standin import standin, standin_server  # noqa: E402, F401
