"""Real Airflow services for the end-to-end tests, started once per session.

``airflow api-server``, ``scheduler``, ``dag-processor`` and ``triggerer`` run as separate
processes, as in production, each in its own session (``setsid``) with a private
AIRFLOW_HOME, a SQLite metadata DB and the LocalExecutor. Airflow 3.3 allows the
LocalExecutor on SQLite (it is even the default: the SequentialExecutor is gone), so
mapped backfill tasks really run in parallel worker processes here.

The Qdrant connection points at the test server backed by Qdrant's engine
(``tests/qdrant_server``, real HNSW and optimizer), seeded with real texts embedded with
all-MiniLM-L6-v2 behind the alias ``articles`` -> ``articles_v1``. ``E2E_QDRANT=embedded``
runs the same tests on an embedded store instead, where the parallel workers take turns
through the lock in ``include/qdrant_migration/qdrant.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import httpx
import psutil
import pytest

from include.qdrant_migration.providers import get_provider
from include.qdrant_migration.qdrant import QdrantSettings, open_client
from scripts.approvals_client import ApprovalClient
from scripts.seeding import read_corpus, seed_collection
from tests.qdrant_server import running_server

ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "qdrant_model_migration"
ALIAS = "articles"
SOURCE_COLLECTION = "articles_v1"
SOURCE_MODEL = "all-MiniLM-L6-v2"
#: 200 points at 100 points per partition: two mapped backfill tasks.
E2E_POINTS = 200
COMPONENTS: dict[str, list[str]] = {
    "scheduler": ["scheduler"],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer"],
}
STARTUP_TIMEOUT_S = 180.0
STOP_GRACE_S = 10.0
TERMINAL_RUN_STATES = {"success", "failed"}


@dataclass
class AirflowServices:
    """Handles on the running services: CLI, REST API, the store, and the logs."""

    home: Path
    url: str
    env: dict[str, str]
    #: How the tests reach the store the tasks use.
    qdrant: QdrantSettings
    password: str = field(repr=False)
    token: str = field(default="", repr=False)
    #: The generated password of ``viewer`` (role viewer: may read, not trigger or answer).
    viewer_password: str = field(default="", repr=False)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    # --- CLI -------------------------------------------------------------------------
    def airflow(self, *args: str, timeout_s: float = 180.0) -> subprocess.CompletedProcess[str]:
        """Run an ``airflow`` CLI command against these services (never raises on rc != 0)."""
        return subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def approvals_script(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``scripts/approvals.py`` with the admin credentials in its environment."""
        env = {
            **self.env,
            "AIRFLOW_API_URL": self.url,
            "AIRFLOW_API_USER": "admin",
            "AIRFLOW_API_PASSWORD": self.password,
        }
        return subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "approvals.py"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    # --- REST API --------------------------------------------------------------------
    def http(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )

    def run_url(self, run_id: str) -> str:
        return f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}"

    def dag_run(self, run_id: str) -> dict[str, Any] | None:
        with self.http() as http:
            response = http.get(self.run_url(run_id))
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return dict(response.json())

    def dag_run_ids(self) -> set[str]:
        with self.http() as http:
            response = http.get(f"/api/v2/dags/{DAG_ID}/dagRuns", params={"limit": 100})
        response.raise_for_status()
        return {run["dag_run_id"] for run in response.json()["dag_runs"]}

    def task_states(self, run_id: str) -> dict[str, str | None]:
        with self.http() as http:
            response = http.get(f"{self.run_url(run_id)}/taskInstances", params={"limit": 100})
        response.raise_for_status()
        return {
            ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['map_index']}]": (
                ti["state"]
            )
            for ti in response.json()["task_instances"]
        }

    def wait_for_run(self, run_id: str, timeout_s: float = 240.0) -> dict[str, Any]:
        """Poll ``GET .../dagRuns/{run_id}`` until the run has finished."""
        deadline = time.monotonic() + timeout_s
        run: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            run = self.dag_run(run_id)
            if run and run["state"] in TERMINAL_RUN_STATES:
                return run
            time.sleep(2)
        pytest.fail(
            f"Run {run_id} did not finish in {timeout_s:.0f}s (state "
            f"{run and run['state']}, tasks {self.task_states(run_id)})\n{self.diagnostics(run_id)}"
        )

    def wait_for_approval(self, run_id: str, timeout_s: float = 240.0) -> dict[str, Any]:
        """The run's pending approval; fails at once, with the logs, if the run ends first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.http() as http:
                pending = ApprovalClient(http).pending(DAG_ID)
            for detail in pending:
                if detail.get("task_instance", detail).get("dag_run_id") == run_id:
                    return detail
            run = self.dag_run(run_id)
            if run and run["state"] in TERMINAL_RUN_STATES:
                pytest.fail(
                    f"Run {run_id} ended {run['state']} before asking for approval: "
                    f"{self.task_states(run_id)}\n{self.diagnostics(run_id)}"
                )
            time.sleep(2)
        pytest.fail(
            f"No approval for {run_id} within {timeout_s:.0f}s: {self.task_states(run_id)}\n"
            f"{self.diagnostics(run_id)}"
        )

    def wait_for_any_approval(self, run_ids: list[str], timeout_s: float = 300.0) -> dict[str, Any]:
        """The first pending approval of any of ``run_ids``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.http() as http:
                for detail in ApprovalClient(http).pending(DAG_ID):
                    if detail.get("task_instance", detail).get("dag_run_id") in run_ids:
                        return detail
            time.sleep(2)
        pytest.fail(f"No approval for {run_ids} within {timeout_s:.0f}s\n{self.diagnostics()}")

    def pending_approvals(self) -> list[str]:
        """Run ids with an unanswered approval."""
        with self.http() as http:
            pending = ApprovalClient(http).pending(DAG_ID)
        return [d.get("task_instance", d)["dag_run_id"] for d in pending]

    def task_log(self, run_id: str, task_id: str) -> str:
        """Every attempt's log of a task, as one text ('' when it never ran)."""
        run_dir = (
            self.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}"
        )
        return "\n".join(p.read_text(errors="replace") for p in sorted(run_dir.glob("**/*.log")))

    def xcom(self, run_id: str, task_id: str, map_index: int = -1) -> Any:
        """A task's return value, through the REST API."""
        with self.http() as http:
            response = http.get(
                f"{self.run_url(run_id)}/taskInstances/{task_id}/xcomEntries/return_value",
                params={"map_index": map_index},
            )
        response.raise_for_status()
        value = response.json()["value"]
        return json.loads(value) if isinstance(value, str) else value

    # --- Qdrant ----------------------------------------------------------------------
    def alias_target(self, alias: str = ALIAS) -> str | None:
        """Where ``alias`` points. An embedded store's lock is taken: call it only while no
        task runs."""
        with open_client(self.qdrant) as client:
            return {a.alias_name: a.collection_name for a in client.get_aliases().aliases}.get(
                alias
            )

    def collection_points(self, collection: str) -> int:
        with open_client(self.qdrant) as client:
            return client.count(collection, exact=True).count

    # --- Diagnostics -----------------------------------------------------------------
    def diagnostics(self, run_id: str | None = None, lines: int = 40) -> str:
        """The tails of the components' logs (and of a run's task logs) for failure messages."""
        parts = [_tail(self.home / f"{name}.log", lines) for name in self.processes]
        if run_id:
            run_dir = self.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}"
            parts += [_tail(log, lines) for log in sorted(run_dir.glob("task_id=*/**/*.log"))]
        return "\n".join(parts)


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError as error:
        return f"--- {path}: {error}"
    return f"--- {path.relative_to(path.parents[1])} (last {len(text)} lines)\n" + "\n".join(text)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _service_env(home: Path, qdrant: QdrantSettings, port: int) -> dict[str, str]:
    """The components' own environment: nothing inherited from the in-process test setup."""
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "PYTEST", "HF_", "TOKENIZERS"))
    }
    url = f"http://127.0.0.1:{port}"
    return {
        **inherited,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        # A viewer too: the UI plugin's actions must be refused to someone who may only read.
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        # Every component must sign and accept the same JWTs.
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW_CONN_QDRANT_DEFAULT": json.dumps(
            {"conn_type": "qdrant", "extra": {"url": qdrant.url}}
            if qdrant.url
            else {"conn_type": "qdrant", "extra": {"path": qdrant.path}}
        ),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "QMM_RECALL_POKE_S": "5",
        # Airflow puts dags/ on sys.path, not the root that `include` lives in.
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
    }


def _seed_store(qdrant: QdrantSettings) -> None:
    with open_client(qdrant) as client:
        seed_collection(
            client,
            collection=SOURCE_COLLECTION,
            alias=ALIAS,
            records=read_corpus(limit=E2E_POINTS),
            provider=get_provider("local", SOURCE_MODEL),
        )


def _prepare(env: dict[str, str], home: Path) -> None:
    """Metadata DB, the DAG serialized now (no wait for the dag-processor), unpaused."""
    for args in (
        ["db", "migrate"],
        ["dags", "reserialize"],
        ["dags", "unpause", DAG_ID],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            env=env,
            cwd=home,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"airflow {' '.join(args)} failed ({done.returncode}):\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )


def _start(services: AirflowServices, name: str, args: list[str], logs: list[IO[bytes]]) -> None:
    log = open(services.home / f"{name}.log", "wb")  # noqa: SIM115 (closed at teardown)
    logs.append(log)
    services.processes[name] = subprocess.Popen(
        [sys.executable, "-m", "airflow", *args],
        env=services.env,
        cwd=services.home,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # setsid: its own session and process group
    )


def _wait_healthy(services: AirflowServices) -> None:
    """Until the API answers and the scheduler, dag-processor and triggerer report healthy."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last: Any = None
    while time.monotonic() < deadline:
        for name, process in services.processes.items():
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {process.returncode} during startup\n"
                    f"{services.diagnostics()}"
                )
        try:
            last = httpx.get(f"{services.url}/api/v2/monitor/health", timeout=5).json()
        except (httpx.HTTPError, ValueError) as error:
            last = error
        else:
            statuses = {
                part: (last.get(part) or {}).get("status")
                for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")
            }
            if all(status == "healthy" for status in statuses.values()):
                return
        time.sleep(1)
    raise RuntimeError(
        f"Airflow not healthy after {STARTUP_TIMEOUT_S:.0f}s: {last}\n{services.diagnostics()}"
    )


def _login(services: AirflowServices) -> None:
    """Read the generated admin password and get a JWT from ``POST /auth/token``."""
    passwords_file = services.home / "simple_auth_manager_passwords.json.generated"
    deadline = time.monotonic() + 60
    while not passwords_file.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    passwords = json.loads(passwords_file.read_text())
    services.password, services.viewer_password = passwords["admin"], passwords["viewer"]
    response = httpx.post(
        f"{services.url}/auth/token",
        json={"username": "admin", "password": services.password},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    services.token = response.json()["access_token"]


def _our_processes(sessions: set[int]) -> list[psutil.Process]:
    """Every live process in the sessions we started (task processes make their own
    process groups inside them, and outlive a killed parent)."""
    found = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) in sessions and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return found


def stop_processes(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    """TERM every process group, wait a grace period, then KILL whatever is left.

    LocalExecutor workers ignore SIGTERM, and task processes sit in process groups of their
    own, so the KILL goes to every process still in one of our sessions.
    """
    sessions = {p.pid for p in processes.values()}
    for process in processes.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # kill -TERM -- -PGID
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and _our_processes(sessions):
        for process in processes.values():
            process.poll()  # reap the leaders
        time.sleep(0.5)
    stragglers = _our_processes(sessions)
    for pgid in sessions:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    for straggler in stragglers:
        with contextlib.suppress(psutil.Error):
            straggler.kill()
    if stragglers:
        print(f"e2e teardown: SIGKILL for {len(stragglers)} processes that outlived SIGTERM")
    for process in processes.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)


@contextlib.contextmanager
def _qdrant(base: Path) -> Iterator[QdrantSettings]:
    """The store the services use: the engine-backed test server unless E2E_QDRANT=embedded."""
    if os.environ.get("E2E_QDRANT", "server") == "embedded":
        yield QdrantSettings(path=str(base / "qdrant" / "store"))
        return
    with running_server(path=str(base / "qdrant")) as server:
        yield server.settings()


@pytest.fixture(scope="session")
def airflow_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowServices]:
    """api-server, scheduler, dag-processor and triggerer on a fresh home and seeded store."""
    base = tmp_path_factory.mktemp("e2e")
    home = base / "airflow"
    home.mkdir()
    (base / "qdrant").mkdir()
    port = _free_port()
    with _qdrant(base) as qdrant:
        services = AirflowServices(
            home=home,
            url=f"http://127.0.0.1:{port}",
            env=_service_env(home, qdrant, port),
            qdrant=qdrant,
            password="",
        )
        logs: list[IO[bytes]] = []
        try:
            _seed_store(qdrant)
            _prepare(services.env, home)
            _start(
                services,
                "api-server",
                ["api-server", "--host", "127.0.0.1", "--port", str(port)],
                logs,
            )
            for name, args in COMPONENTS.items():
                _start(services, name, args, logs)
            _wait_healthy(services)
            _login(services)
            yield services
        finally:
            stop_processes(services.processes)
            for log in logs:
                log.close()
