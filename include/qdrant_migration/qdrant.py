"""Opening Qdrant: a server (url or host/port) or the embedded local-mode store on disk.

The embedded store allows exactly one opener at a time, across processes and within one
process (qdrant-client raises ``Storage folder ... is already accessed``). Every task opens
it through :func:`open_client`, which holds an exclusive ``flock`` on a file beside the
store for as long as the client is open: parallel tasks under the LocalExecutor, a
``dag.test()`` run and the demo script then take turns instead of crashing.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient

log = logging.getLogger(__name__)
#: Lock files held by each thread here (opening twice in one thread would wait on itself).
_held: set[tuple[str, int]] = set()


@dataclass(frozen=True)
class QdrantSettings:
    """Where Qdrant is. ``path`` selects the embedded store; otherwise a server."""

    path: str | None = None
    url: str | None = None
    host: str | None = None
    port: int | None = 6333
    grpc_port: int = 6334
    prefer_grpc: bool = False
    https: bool | None = None
    prefix: str | None = None
    api_key: str | None = None
    timeout: int = 60

    @property
    def embedded(self) -> bool:
        return self.path is not None

    def describe(self) -> str:
        """A human-readable location, never including the API key."""
        if self.path:
            return f"embedded store at {self.path}"
        return f"Qdrant server at {self.url or f'{self.host}:{self.port}'}"

    def client_kwargs(self) -> dict[str, Any]:
        if self.path:
            return {"path": self.path}
        return {
            "url": self.url,
            "host": None if self.url else self.host,
            "port": self.port,
            "grpc_port": self.grpc_port,
            "prefer_grpc": self.prefer_grpc,
            "https": self.https,
            "prefix": self.prefix,
            "api_key": self.api_key,
            "timeout": self.timeout,
        }

    def __repr__(self) -> str:
        return f"QdrantSettings({self.describe()})"


@contextmanager
def embedded_lock(path: str, *, timeout_s: float = 3600.0) -> Iterator[None]:
    """Hold the exclusive lock that serializes every opener of one embedded store."""
    lock_path = Path(f"{os.path.abspath(path).rstrip('/')}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    mine = (str(lock_path), threading.get_ident())
    if mine in _held:
        raise RuntimeError(
            f"This thread already has the embedded store {path} open; close that client "
            "first (local mode allows one opener)."
        )
    with open(lock_path, "a+") as handle:
        deadline = time.monotonic() + timeout_s
        announced = False
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not announced:
                    log.info("Waiting for another task to release the embedded store %s", path)
                    announced = True
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"The embedded Qdrant store {path} stayed locked by another process for "
                        f"{timeout_s:.0f}s. Only one task can open an embedded store at a time; "
                        "check for a stuck task or use a Qdrant server."
                    ) from None
                time.sleep(0.2)
        _held.add(mine)
        try:
            yield
        finally:
            _held.discard(mine)
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextmanager
def open_client(settings: QdrantSettings) -> Iterator[QdrantClient]:
    """Open a client for the duration of a block, serializing embedded-store access."""
    if settings.path and settings.path != ":memory:":
        with embedded_lock(settings.path):
            client = QdrantClient(path=settings.path)
            try:
                yield client
            finally:
                client.close()
        return
    client = QdrantClient(**settings.client_kwargs())
    try:
        yield client
    finally:
        client.close()


_versions: weakref.WeakKeyDictionary[QdrantClient, tuple[int, int, int] | None] = (
    weakref.WeakKeyDictionary()
)


def scroll_all(
    client: QdrantClient,
    collection: str,
    *,
    with_payload: bool = False,
    scroll_filter: Any = None,
    page: int = 256,
) -> Iterator[Any]:
    """Every point of ``collection`` (no vectors) in Qdrant's id order, a page at a time."""
    offset: Any = None
    while True:
        points, offset = client.scroll(
            collection,
            limit=page,
            offset=offset,
            with_payload=with_payload,
            with_vectors=False,
            scroll_filter=scroll_filter,
        )
        yield from points
        if offset is None:
            return


def server_version(client: QdrantClient) -> tuple[int, int, int] | None:
    """The server's version, or None for the embedded store (which has every local feature).

    Asked once per client: the backfill checks it before every write.
    """
    if client not in _versions:
        _versions[client] = _ask_version(client)
    return _versions[client]


def _ask_version(client: QdrantClient) -> tuple[int, int, int] | None:
    if _is_local(client):
        return None
    raw = client.info().version
    try:
        parts = [int(p) for p in raw.split("-")[0].split(".")[:3]]
    except ValueError:  # a development build ("dev"): assume every feature
        return (999, 0, 0)
    while len(parts) < 3:
        parts.append(0)
    return (parts[0], parts[1], parts[2])


def supports(client: QdrantClient, minimum: tuple[int, int, int]) -> bool:
    """Whether the server is at least ``minimum`` (the embedded store counts as new enough)."""
    version = server_version(client)
    return version is None or version >= minimum


def _is_local(client: QdrantClient) -> bool:
    inner = getattr(client, "_client", None)
    return type(inner).__name__ == "QdrantLocal"
