"""Run the Qdrant REST façade in its own process, and talk to it from tests and benchmarks.

The façade runs under uvicorn in a separate Python process, on 127.0.0.1 and a port the
kernel picks (the child binds the socket itself and reports the port on its first stdout
line, so there is no race for a free port). Keeping the store in another process means the
code under test talks HTTP exactly as to a real server, and a benchmark measuring the
backfill's memory does not count the store's data.

    with running_server(version="1.15.0") as server:
        settings = server.settings()          # QdrantSettings(url=...)
        ...
        server.stats()                        # requests per route, server RSS

Two backends (:data:`BACKENDS`): ``engine`` (the default, Qdrant's Rust engine with real
HNSW indexes built in the background, :mod:`tests.qdrant_server.engine`) and ``local``
(qdrant-client's local mode, exact search only). ``running_server(backend="local")``
picks one; ``QDRANT_FACADE_BACKEND=local`` changes the default.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import httpx

from include.qdrant_migration.qdrant import QdrantSettings

if TYPE_CHECKING:
    from tests.qdrant_server.app import BaseFacade

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VERSION = "1.17.0"
START_TIMEOUT_S = 60.0
#: The façade's backends: name -> ``module:class`` (a :class:`~tests.qdrant_server.app.
#: BaseFacade`), imported in the façade's process only.
BACKENDS = {
    "engine": "tests.qdrant_server.engine:EngineFacade",
    "local": "tests.qdrant_server.app:Facade",
}
DEFAULT_BACKEND = os.environ.get("QDRANT_FACADE_BACKEND", "engine")


class QdrantServer:
    """A façade process: start it, point clients at :attr:`url`, stop it."""

    def __init__(
        self,
        *,
        version: str = DEFAULT_VERSION,
        backend: str = DEFAULT_BACKEND,
        path: str | None = None,
        strict: bool = True,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"Unknown façade backend {backend!r}: one of {', '.join(BACKENDS)}")
        self.version = version
        self.backend = backend
        self.path = path
        self.strict = strict
        self.port = 0
        self._process: subprocess.Popen[str] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> QdrantServer:
        command = [sys.executable, "-m", "tests.qdrant_server", "--version", self.version]
        command += ["--backend", self.backend]
        if self.path:
            command += ["--path", self.path]
        if not self.strict:
            command.append("--lenient")
        env = os.environ | {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        }
        self._process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        try:
            self.port = self._read_port()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _read_port(self) -> int:
        assert self._process is not None and self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], START_TIMEOUT_S)
        line = self._process.stdout.readline() if ready else ""
        if not line:
            code = self._process.poll()
            raise RuntimeError(f"The Qdrant façade did not start (exit code {code}).")
        return int(json.loads(line)["port"])

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if httpx.get(self.url, timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"The Qdrant façade at {self.url} never answered.")
            time.sleep(0.05)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> QdrantServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- use -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._process is not None, "start() the façade first"
        return self._process.pid

    def settings(self, **overrides: Any) -> QdrantSettings:
        """Where the façade is, as the migration's code takes it."""
        return QdrantSettings(url=self.url, **overrides)

    def connection(self) -> dict[str, Any]:
        """The Airflow connection (``AIRFLOW_CONN_*`` JSON) of the façade."""
        return {"conn_type": "qdrant", "extra": {"url": self.url}}

    def reset(self) -> None:
        """Drop every collection and alias, and zero the request counters."""
        httpx.post(f"{self.url}/__facade__/reset", timeout=60).raise_for_status()

    def hold_indexing(self, hold: bool = True) -> None:
        """Engine backend: keep index builds waiting (collections stay yellow), or resume."""
        response = httpx.post(f"{self.url}/__facade__/indexing", json={"hold": hold}, timeout=30)
        response.raise_for_status()

    def stats(self) -> dict[str, Any]:
        """``{"version", "backend", "rss_bytes", "counts": {"METHOD /path": n, ...}}``.

        Counts are per route template (``POST /collections/{collection_name}/points`` is a
        retrieve) plus the writes that carried ``update_mode`` or ``update_filter``
        (``"upsert.update_mode.insert_only": n``), and ``writes``: ``[epoch seconds,
        collection, points]`` of each upsert and vector update. The ``engine`` backend
        adds ``builds`` (one entry per finished background index build: collection,
        points, indexed, seconds) and ``building`` (the collections being indexed now).
        """
        response = httpx.get(f"{self.url}/__facade__/stats", timeout=30)
        response.raise_for_status()
        result: dict[str, Any] = response.json()["result"]
        return result


@contextmanager
def running_server(
    *,
    version: str = DEFAULT_VERSION,
    backend: str = DEFAULT_BACKEND,
    path: str | None = None,
    strict: bool = True,
) -> Iterator[QdrantServer]:
    """A façade process for the duration of a block (what the benchmarks use)."""
    with QdrantServer(version=version, backend=backend, path=path, strict=strict) as server:
        yield server


def make_facade(
    backend: str, *, version: str, path: str | None = None, strict: bool = True
) -> BaseFacade:
    """The backend named ``backend`` (see :data:`BACKENDS`)."""
    module, _, name = BACKENDS[backend].partition(":")
    facade: BaseFacade = getattr(importlib.import_module(module), name)(
        version=version, path=path, strict=strict
    )
    return facade


def serve(argv: Sequence[str] | None = None) -> None:
    """The child process: build the façade, bind a free port, report it, serve."""
    import uvicorn

    from tests.qdrant_server.app import build_app

    parser = argparse.ArgumentParser(description="Qdrant REST façade (Qdrant's HTTP API)")
    parser.add_argument("--version", default=DEFAULT_VERSION, help="version GET / reports")
    parser.add_argument("--backend", default=DEFAULT_BACKEND, choices=sorted(BACKENDS))
    parser.add_argument(
        "--path",
        default=None,
        help="local: the store on disk (default: memory); engine: where its temporary "
        "shard folder goes (default: the system's temporary folder)",
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--lenient", action="store_true", help="accept fields newer than version")
    args = parser.parse_args(argv)

    # Local mode warns about what a server would do (indexes, search params, big collections);
    # the façade emulates those, so its stderr stays for real errors.
    warnings.simplefilter("ignore", UserWarning)
    facade = make_facade(
        args.backend, version=args.version, path=args.path, strict=not args.lenient
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(128)
    print(json.dumps({"port": sock.getsockname()[1]}), flush=True)
    config = uvicorn.Config(
        build_app(facade),
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_keep_alive=60,
    )
    # uvicorn re-raises the signal that stopped it once it has shut down: exit through
    # Python then, so that the backend closes (the engine removes its temporary shards).
    signal.signal(signal.SIGTERM, _exit)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        facade.close()


def _exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)
