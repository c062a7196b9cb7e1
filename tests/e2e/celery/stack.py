"""docker-compose.yaml's celery profile on one machine, without Docker.

Postgres (Airflow's metadata DB and Celery's result backend) and Redis (the broker) run from
Debian's packages as throwaway instances on free ports; Qdrant is the engine-backed test
server (``tests/qdrant_server``); the embedding provider is the wire-level stand-in
(``tests/standin``), in the test process, so the tests read its request log. Airflow runs as
the compose file runs it: api-server, scheduler, dag-processor, triggerer and **two Celery
workers**, each a separate process in its own session.

Settings have one source of truth, the compose file's ``x-airflow-common`` environment
(:func:`service_env`). The tier's own ``.env`` (:func:`tier_dotenv`) fills its ``${...}``
as a user's would; :data:`LOCAL_EQUIVALENTS` lists every value that names a container (and
what replaces it), :data:`TIER_ONLY` every setting the compose file does not make, each with
its reason. ``tests/test_docker_compose.py`` fails when the two drift apart.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx
import psutil
import psycopg2

from include.qdrant_migration.qdrant import QdrantSettings
from tests.compose import airflow_environment, load_compose, load_env_example, script_invocations
from tests.e2e.conftest import AirflowServices, _login, stop_processes
from tests.standin import COHERE_KEY, OPENAI_KEY, StandIn

ROOT = Path(__file__).resolve().parents[3]
T = TypeVar("T")

WORKERS = ("worker-a", "worker-b")
#: Task slots per worker: four in all, more than the pool's, so that the pool and not the
#: number of workers is what bounds the backfill tasks running at once.
WORKER_CONCURRENCY = 2
#: The ``qdrant_backfill`` pool's slots and QMM_MAX_PARALLEL_PARTITIONS: equal, as docs/providers.md
#: says to set them when migrations share one provider account.
POOL_SLOTS = 2
#: The catch-up DAG every minute, so that the scheduler makes a run within the test.
CATCH_UP_SCHEDULE = "*/1 * * * *"
#: A worker whose task stops heartbeating is failed after this many seconds (Airflow's
#: default is 300): a killed worker's task is retried within the test.
HEARTBEAT_TIMEOUT_S = 20
STARTUP_TIMEOUT_S = 240.0
SIMPLE_AUTH_MANAGER = (
    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
)

#: Compose values that name a container, a path in the image or a provider the image has,
#: and why the tier replaces them. Every other setting is the compose file's, verbatim.
LOCAL_EQUIVALENTS: dict[str, str] = {
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "the postgres container: the tier's Postgres "
    "(same driver, user, password and database)",
    "AIRFLOW__CELERY__RESULT_BACKEND": "the postgres container: the tier's Postgres",
    "AIRFLOW__CELERY__BROKER_URL": "the redis container: the tier's Redis",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "the airflow-apiserver container: the tier's "
    "api-server",
    "AIRFLOW_CONN_QDRANT_DEFAULT": "the qdrant container: the engine-backed test server",
    "PYTHONPATH": "the image's /opt/airflow: the checkout",
    "AIRFLOW__CORE__AUTH_MANAGER": "FabAuthManager comes with the image, not with "
    "requirements*.txt: Airflow's SimpleAuthManager",
}
#: Settings the compose file does not make (the image or Docker does), and why the tier does.
TIER_ONLY: dict[str, str] = {
    "AIRFLOW_HOME": "the image's is /opt/airflow: a fresh temporary home",
    "AIRFLOW__CORE__DAGS_FOLDER": "compose mounts ./dags at the image's dags folder",
    "AIRFLOW__CORE__PLUGINS_FOLDER": "compose mounts ./plugins at the image's plugins folder",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "SimpleAuthManager's users, as the e2e tier's "
    "(airflow-init creates FAB's admin)",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "log in as that user, not as anyone",
    "AIRFLOW__API__BASE_URL": "where the tier's api-server listens",
    "AIRFLOW__API__WORKERS": "one api-server worker process on a 2-core machine",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": "a free port, not 8974: no "
    "container around the scheduler",
    "AIRFLOW__CELERY__WORKER_CONCURRENCY": "two slots per worker (four in all), more than the "
    "pool's two, so the pool is what bounds the backfill",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "a killed worker's task is failed "
    "after 20 s, not 300, so its retry runs within the test",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "checked every "
    "2 s, not 10",
    "TOKENIZERS_PARALLELISM": "set by the Dockerfile",
    "PYTHONUNBUFFERED": "component logs as they happen",
}
#: What each worker process alone gets: two workers share this machine (and its ports).
PER_WORKER = ("AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT",)


def _postgres_bin() -> Path | None:
    """Debian keeps initdb and postgres in /usr/lib/postgresql/<version>/bin, off the PATH."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists() and Path(candidate, "postgres").exists():
            return Path(candidate)
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


POSTGRES_BIN = _postgres_bin()
REDIS_SERVER = shutil.which("redis-server")


def missing_services() -> list[str]:
    """The Debian packages this tier needs and this machine lacks."""
    missing = []
    if POSTGRES_BIN is None:
        missing.append("postgresql")
    if REDIS_SERVER is None:
        missing.append("redis-server")
    return missing


@dataclass(frozen=True)
class Addresses:
    """Where the tier's services listen (all on 127.0.0.1)."""

    postgres_port: int
    redis_port: int
    api_port: int
    scheduler_health_port: int
    qdrant_url: str


def tier_dotenv(openai_base_url: str, cohere_base_url: str) -> dict[str, str]:
    """The tier's .env: .env.example with the Celery lines set, fresh secrets, the pool and
    schedule of the tests, and the provider connections pointed at the stand-in."""
    dotenv = load_env_example()
    dotenv.update(
        {
            "AIRFLOW_EXECUTOR": "CeleryExecutor",
            "COMPOSE_PROFILES": "celery",
            "AIRFLOW_JWT_SECRET": secrets.token_urlsafe(64),
            "AIRFLOW_API_SECRET_KEY": secrets.token_urlsafe(64),
            "QDRANT_BACKFILL_POOL_SLOTS": str(POOL_SLOTS),
            "QMM_MAX_PARALLEL_PARTITIONS": str(POOL_SLOTS),
            "QMM_CATCH_UP_SCHEDULE": CATCH_UP_SCHEDULE,
            "AIRFLOW_CONN_OPENAI_DEFAULT": json.dumps(
                {
                    "conn_type": "generic",
                    "password": OPENAI_KEY,
                    "extra": {"base_url": openai_base_url},
                }
            ),
            "AIRFLOW_CONN_COHERE_DEFAULT": json.dumps(
                {
                    "conn_type": "generic",
                    "password": COHERE_KEY,
                    "extra": {"base_url": cohere_base_url},
                }
            ),
        }
    )
    return dotenv


def _swap(key: str, value: str, container: str, local: str) -> str:
    if container not in value:
        raise AssertionError(f"docker-compose.yaml's {key} no longer names {container!r}: {value}")
    return value.replace(container, local)


def localize(key: str, value: str, at: Addresses) -> str:
    """The tier's value of a compose setting named in :data:`LOCAL_EQUIVALENTS`."""
    if key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND"):
        return _swap(key, value, "@postgres/", f"@127.0.0.1:{at.postgres_port}/")
    if key == "AIRFLOW__CELERY__BROKER_URL":
        return _swap(key, value, "@redis:6379/", f"@127.0.0.1:{at.redis_port}/")
    if key == "AIRFLOW__CORE__EXECUTION_API_SERVER_URL":
        return _swap(key, value, "//airflow-apiserver:8080/", f"//127.0.0.1:{at.api_port}/")
    if key == "AIRFLOW_CONN_QDRANT_DEFAULT":
        conn = json.loads(value)
        assert conn["host"] == "qdrant", value
        url = urlsplit(at.qdrant_url)
        return json.dumps({**conn, "host": url.hostname, "port": url.port})
    if key == "PYTHONPATH":
        return _swap(key, value, "/opt/airflow", str(ROOT))
    if key == "AIRFLOW__CORE__AUTH_MANAGER":
        return SIMPLE_AUTH_MANAGER
    raise KeyError(key)


def service_env(dotenv: Mapping[str, str], at: Addresses, home: Path) -> dict[str, str]:
    """The environment of every Airflow process of the tier: the compose file's, localized.

    Nothing Airflow reads is inherited from the test process (its own Airflow home and
    settings); PATH and the like are.
    """
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "PYTEST", "HF_", "TOKENIZERS", "QMM_", "_AIRFLOW"))
    }
    compose = airflow_environment(load_compose(dotenv), dotenv)
    env = {
        key: localize(key, value, at) if key in LOCAL_EQUIVALENTS else value
        for key, value in compose.items()
    }
    tier = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{at.api_port}",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(at.scheduler_health_port),
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_S),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    }
    assert set(tier) == set(TIER_ONLY), set(tier) ^ set(TIER_ONLY)
    return {**inherited, **env, **tier}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    check: Callable[[], T | None], timeout_s: float, what: str, poll_s: float = 1.0
) -> T:
    """``check()``'s first truthy value, polled until ``timeout_s``; else AssertionError."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f}s")
        time.sleep(poll_s)


# --- Postgres and Redis ---------------------------------------------------------------------


def _as_postgres_user(argv: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as Debian's postgres user then."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


#: A throwaway cluster: reachable on 127.0.0.1 only (no Unix socket, whose default folder
#: needs the packaged service), with no durability, which tests do not need.
POSTGRES_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
}


def start_postgres(port: int, logs: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """A fresh cluster with trust auth and the ``airflow`` user and database that the
    compose file's URLs name. Returns the server and its data folder."""
    assert POSTGRES_BIN is not None
    # Outside pytest's private (0700) temporary folder: the postgres user must reach it.
    data = Path(tempfile.mkdtemp(prefix="qmm-celery-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    initdb = [str(POSTGRES_BIN / "initdb"), "-D", str(data), "-U", "airflow", "--auth=trust"]
    done = subprocess.run(
        _as_postgres_user([*initdb, "--encoding=UTF8", "--no-sync"]),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    settings = [arg for key, value in POSTGRES_SETTINGS.items() for arg in ("-c", f"{key}={value}")]
    server = [str(POSTGRES_BIN / "postgres"), "-D", str(data), "-p", str(port), *settings]
    with open(logs / "postgres.log", "wb") as log:
        process = subprocess.Popen(
            _as_postgres_user(server),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def connect(dbname: str) -> Any:
        return psycopg2.connect(host="127.0.0.1", port=port, user="airflow", dbname=dbname)

    def accepts() -> bool:
        try:
            connect("postgres").close()
        except psycopg2.OperationalError:
            if process.poll() is not None:
                log = (logs / "postgres.log").read_text()
                raise RuntimeError(f"postgres exited: {log}") from None
            return False
        return True

    wait_until(accepts, 60, "Postgres accepting connections", poll_s=0.2)
    with contextlib.closing(connect("postgres")) as connection:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE airflow")
    return process, data


def start_redis(port: int, logs: Path) -> subprocess.Popen[bytes]:
    """A Redis with nothing on disk (no snapshots, no append-only file)."""
    assert REDIS_SERVER is not None
    argv = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    with open(logs / "redis.log", "wb") as log:
        process = subprocess.Popen(
            [*argv, "--appendonly", "no", "--dir", str(logs)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def pong() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited: {(logs / 'redis.log').read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    wait_until(pong, 30, "Redis answering PING", poll_s=0.1)
    return process


# --- Airflow on Celery ----------------------------------------------------------------------


@dataclass
class CeleryStack(AirflowServices):
    """The running tier: the e2e helpers (CLI, REST, logs) plus workers, DAG-generic REST
    calls, and the stand-in."""

    standin: StandIn | None = None
    #: Each worker's own settings (its log server port).
    worker_env: dict[str, dict[str, str]] = field(default_factory=dict)

    # --- processes -------------------------------------------------------------------
    def start(self, name: str, args: list[str], env: Mapping[str, str] | None = None) -> None:
        with open(self.home / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "airflow", *args],
                env={**self.env, **(env or {})},
                cwd=self.home,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # setsid: its own session, as on its own machine
            )

    def start_worker(self, name: str) -> None:
        """``airflow celery worker`` (the compose file's ``command: celery worker``), named
        and with its own pid file: two workers share this machine and its AIRFLOW_HOME."""
        named = ["--celery-hostname", f"{name}@%h", "--pid", str(self.home / f"{name}.pid")]
        self.start(name, ["celery", "worker", *named], self.worker_env[name])

    def worker_ready(self, name: str) -> bool:
        """Whether the worker has joined the broker (Celery logs "<name>@<host> ready.")."""
        process = self.processes[name]
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}\n{self.diagnostics()}")
        return re.search(rf"{re.escape(name)}@\S+ ready\.", self.log_of(name)) is not None

    def kill_worker(self, name: str) -> int:
        """SIGKILL every process of the worker's session, as if its machine died: the Celery
        worker, its pool processes, and the task supervisors and task processes under them
        (which sit in process groups of their own). Returns how many were killed."""
        killed = _kill_sessions(self.processes[name].pid)
        self.processes[name].wait(timeout=30)
        return killed

    def log_of(self, name: str) -> str:
        return (self.home / f"{name}.log").read_text(errors="replace")

    def executions(
        self, dag_id: str, run_id: str, task_id: str, map_index: int, try_number: int
    ) -> list[str]:
        """The workers that executed this try of the task, one entry per execution, from
        Celery's "Executing workload in Celery: ... log_path='...'" lines. A try runs more
        than once when it waits between executions (a sensor's reschedule, an approval)."""
        mapped = f"/map_index={map_index}" if map_index >= 0 else ""
        attempt = f"/task_id={task_id}{mapped}/attempt={try_number}.log'"
        path = f"log_path='dag_id={dag_id}/run_id={run_id}{attempt}"
        return [
            name
            for name in WORKERS
            for line in self.log_of(name).splitlines()
            if "Executing workload in Celery" in line and path in line
        ]

    # --- REST, for any DAG -----------------------------------------------------------
    def get(self, path: str, **params: Any) -> Any:
        with self.http() as http:
            response = http.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def trigger(self, dag_id: str, run_id: str, conf: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /api/v2/dags/{dag_id}/dagRuns``, as the UI's Trigger button does."""
        with self.http() as http:
            response = http.post(
                f"/api/v2/dags/{dag_id}/dagRuns",
                json={"dag_run_id": run_id, "logical_date": None, "conf": dict(conf)},
            )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def set_paused(self, dag_id: str, paused: bool) -> None:
        with self.http() as http:
            response = http.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": paused})
        assert response.status_code == 200, response.text

    def run_of(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.get(f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"))

    def runs_of(self, dag_id: str) -> list[dict[str, Any]]:
        return list(self.get(f"/api/v2/dags/{dag_id}/dagRuns", limit=100)["dag_runs"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        found = self.get(
            f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances", limit=200
        )
        return list(found["task_instances"])

    def tries(self, dag_id: str, run_id: str, task_id: str, map_index: int) -> list[dict[str, Any]]:
        """Every try of one task instance (``.../tries``), oldest first."""
        found = self.get(
            f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/"
            f"{task_id}/{map_index}/tries"
        )
        return sorted(found["task_instances"], key=lambda ti: ti["try_number"])

    def wait_for_state(
        self, dag_id: str, run_id: str, states: set[str], timeout_s: float
    ) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            run = self.run_of(dag_id, run_id)
            return run if run["state"] in states else None

        try:
            return wait_until(finished, timeout_s, f"{dag_id}/{run_id} in {states}", poll_s=2)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.diagnostics(run_id)}") from None


def _kill_sessions(*sessions: int) -> int:
    """SIGKILL every process of these sessions; how many there were."""
    killed: set[int] = set()
    for _ in range(5):  # a process forked while we kill is caught by the next round
        found = [p for p in psutil.process_iter() if _session_of(p) in sessions]
        if not found:
            break
        for process in found:
            with contextlib.suppress(psutil.Error):
                process.kill()
                killed.add(process.pid)
        time.sleep(0.2)
    return len(killed)


def _session_of(process: psutil.Process) -> int | None:
    try:
        return os.getsid(process.pid)
    except (ProcessLookupError, PermissionError):
        return None


def _airflow(stack: CeleryStack, *args: str) -> None:
    """An ``airflow`` command the setup needs; its output in the error when it fails."""
    done = stack.airflow(*args, timeout_s=300)
    if done.returncode != 0:
        output = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        raise RuntimeError(f"airflow {' '.join(args)} failed ({done.returncode}):\n{output}")


def init_commands(dotenv: Mapping[str, str]) -> list[list[str]]:
    """What airflow-init does: ``airflow db migrate`` (the image's entrypoint, for
    _AIRFLOW_DB_MIGRATE) and the ``airflow ...`` lines of its script except ``version``
    (the pools)."""
    init = load_compose(dotenv)["services"]["airflow-init"]
    assert init["environment"]["_AIRFLOW_DB_MIGRATE"] == "true"
    script = [argv for argv in script_invocations(str(init["command"][1])) if argv != ["version"]]
    return [["db", "migrate"], *script]


@contextlib.contextmanager
def running_stack(base: Path, qdrant_url: str, standin: StandIn) -> Iterator[CeleryStack]:
    """Postgres, Redis and the Airflow services with two Celery workers, until the block ends."""
    home = base / "airflow"
    home.mkdir()
    at = Addresses(
        postgres_port=free_port(),
        redis_port=free_port(),
        api_port=free_port(),
        scheduler_health_port=free_port(),
        qdrant_url=qdrant_url,
    )
    dotenv = tier_dotenv(standin.openai_base_url, standin.cohere_base_url)
    stack = CeleryStack(
        home=home,
        url=f"http://127.0.0.1:{at.api_port}",
        env=service_env(dotenv, at, home),
        qdrant=QdrantSettings(url=qdrant_url),
        password="",
        standin=standin,
        worker_env={name: {key: str(free_port()) for key in PER_WORKER} for name in WORKERS},
    )
    services: dict[str, subprocess.Popen[bytes]] = {}
    data: Path | None = None
    try:
        services["postgres"], data = start_postgres(at.postgres_port, home)
        services["redis"] = start_redis(at.redis_port, home)
        for argv in init_commands(dotenv):
            _airflow(stack, *argv)
        stack.start("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(at.api_port)])
        for name in ("scheduler", "dag-processor", "triggerer"):
            stack.start(name, [name])
        for name in WORKERS:
            stack.start_worker(name)
        _wait_healthy(stack)
        _login(stack)  # the e2e tier's: the generated passwords, a JWT for the REST calls
        # The dag-processor parses the DAG folder as it starts.
        wait_until(lambda: len(stack.get("/api/v2/dags")["dags"]) >= 3, 120, "DAGs parsed")
        yield stack
    finally:
        # Nothing of this Airflow is kept, so nothing is worth waiting for (a Celery worker's
        # warm shutdown waits for its tasks): KILL, then stop Postgres and Redis cleanly.
        _kill_sessions(*(process.pid for process in stack.processes.values()))
        stop_processes(stack.processes)
        stop_processes(services)
        if data is not None:
            shutil.rmtree(data, ignore_errors=True)


def _wait_healthy(stack: CeleryStack) -> None:
    """Until the API reports every component healthy and both workers have joined Redis."""

    def healthy() -> bool:
        for name, process in stack.processes.items():
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {process.returncode}\n{stack.diagnostics()}"
                )
        try:
            health = httpx.get(f"{stack.url}/api/v2/monitor/health", timeout=5).json()
        except (httpx.HTTPError, ValueError):
            return False
        parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        return all((health.get(part) or {}).get("status") == "healthy" for part in parts) and all(
            stack.worker_ready(name) for name in WORKERS
        )

    try:
        wait_until(healthy, STARTUP_TIMEOUT_S, "Airflow healthy and both workers ready")
    except AssertionError as error:
        raise RuntimeError(f"{error}\n{stack.diagnostics()}") from None


def as_seconds(value: str | None) -> float | None:
    """An API timestamp as epoch seconds."""
    from datetime import datetime

    return None if value is None else datetime.fromisoformat(value).timestamp()
