"""Opening Qdrant (a server, or the embedded local-mode store on disk) and Qdrant's id order.

The embedded store allows exactly one opener at a time, across processes and within one
process (qdrant-client raises ``Storage folder ... is already accessed``). Every opener
goes through :func:`connect` (or :func:`open_client`), which holds an exclusive ``flock``
on a file beside the store until the client is closed: parallel tasks under the
LocalExecutor, a ``dag.test()`` run and the demo script then take turns instead of crashing.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import UnexpectedResponse

log = logging.getLogger(__name__)
#: Lock files held by each thread here (opening twice in one thread would wait on itself).
_held: set[tuple[str, int]] = set()

#: A point id as this package handles it (Qdrant's are unsigned integers or UUID strings).
PointId = int | str


def point_id(value: qm.ExtendedPointId) -> PointId:
    """A point id as returned by qdrant-client, as :data:`PointId`."""
    return value if isinstance(value, int) else str(value)


def id_key(value: PointId) -> tuple[int, int]:
    """Qdrant's id order: integers first (numerically), then UUIDs (by value)."""
    if isinstance(value, int):
        return (0, value)
    return (1, uuid.UUID(value).int)


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

    @classmethod
    def from_connection(
        cls,
        *,
        host: str | None,
        port: int | None,
        password: str | None,
        extra: Mapping[str, Any],
    ) -> QdrantSettings:
        """Settings from an Airflow connection's fields, read the Qdrant provider's way.

        ``extra.path`` selects the embedded store. Otherwise the Qdrant provider's
        connection fields apply: host/port or extra ``url``, the API key as password,
        extras ``grpc_port``, ``prefer_gprc`` (the provider's spelling; ``prefer_grpc``
        too), ``https``, ``prefix``, and ``timeout`` (seconds).
        """
        if extra.get("path"):
            return cls(path=str(extra["path"]))
        https = extra.get("https")
        return cls(
            url=extra.get("url") or None,
            host=host or None,
            port=port or 6333,
            grpc_port=int(extra.get("grpc_port", 6334)),
            prefer_grpc=bool(extra.get("prefer_gprc", extra.get("prefer_grpc", False))),
            https=None if https is None else bool(https),
            prefix=extra.get("prefix") or None,
            api_key=password or None,
            timeout=int(extra.get("timeout", 60)),
        )


class EmbeddedStoreLock:
    """The exclusive lock that serializes every opener of one embedded store."""

    def __init__(self, path: str, *, timeout_s: float = 3600.0) -> None:
        self.path = path
        self.lock_path = Path(f"{os.path.abspath(path).rstrip('/')}.lock")
        self.timeout_s = timeout_s
        self._handle: IO[str] | None = None
        self._owner = (str(self.lock_path), threading.get_ident())

    def acquire(self) -> None:
        if self._owner in _held:
            raise RuntimeError(
                f"This thread already has the embedded store {self.path} open; close that "
                "client first (local mode allows one opener)."
            )
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.lock_path, "a+")  # noqa: SIM115 - held until release()
        deadline = time.monotonic() + self.timeout_s
        announced = False
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not announced:
                    log.info("Waiting for another task to release the embedded store %s", self.path)
                    announced = True
                if time.monotonic() > deadline:
                    handle.close()
                    raise TimeoutError(
                        f"The embedded Qdrant store {self.path} stayed locked by another "
                        f"process for {self.timeout_s:.0f}s. Only one task can open an embedded "
                        "store at a time; check for a stuck task or use a Qdrant server."
                    ) from None
                time.sleep(0.2)
        self._handle = handle
        _held.add(self._owner)

    def release(self) -> None:
        if self._handle is None:
            return
        _held.discard(self._owner)
        fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None


@contextmanager
def embedded_lock(path: str, *, timeout_s: float = 3600.0) -> Iterator[None]:
    """Hold the embedded store's lock for the duration of a block."""
    lock = EmbeddedStoreLock(path, timeout_s=timeout_s)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


class _LockedLocalClient(QdrantClient):
    """A local-mode client that holds its store's lock until it is closed."""

    def __init__(self, path: str, lock: EmbeddedStoreLock) -> None:
        self._store_lock = lock  # first: close() needs it even if opening fails
        super().__init__(path=path)

    def close(self, grpc_grace: float | None = None, **kwargs: Any) -> None:
        try:
            super().close(grpc_grace=grpc_grace, **kwargs)
        finally:
            self._store_lock.release()


def connect(settings: QdrantSettings) -> QdrantClient:
    """A client for ``settings``; the caller closes it (which releases an embedded lock)."""
    if settings.path and settings.path != ":memory:":
        lock = EmbeddedStoreLock(settings.path)
        lock.acquire()
        try:
            return _LockedLocalClient(settings.path, lock)
        except BaseException:
            lock.release()
            raise
    return QdrantClient(**settings.client_kwargs())


@contextmanager
def open_client(settings: QdrantSettings) -> Iterator[QdrantClient]:
    """A client for the duration of a block, serializing embedded-store access."""
    client = connect(settings)
    try:
        yield client
    finally:
        client.close()


_versions: weakref.WeakKeyDictionary[QdrantClient, tuple[int, int, int] | None] = (
    weakref.WeakKeyDictionary()
)


def create_once(client: QdrantClient, collection: str, **config: Any) -> bool:
    """Create ``collection`` unless it exists; False when another process created it first.

    Parallel backfill tasks create the migration's companion collections on their first
    write: the loser of that race finds the collection there, which is what it wanted.
    """
    if client.collection_exists(collection):
        return False
    try:
        client.create_collection(collection, **config)
    except (UnexpectedResponse, ValueError) as error:
        status = getattr(error, "status_code", None)
        if status not in (None, 409) or not client.collection_exists(collection):
            raise
        return False
    return True


def scroll_all(
    client: QdrantClient,
    collection: str,
    *,
    with_payload: bool | list[str] = False,
    with_vectors: bool | list[str] = False,
    scroll_filter: qm.Filter | None = None,
    page: int = 256,
) -> Iterator[qm.Record]:
    """Every point of ``collection`` in Qdrant's id order, a page at a time."""
    offset: qm.ExtendedPointId | None = None
    while True:
        points, offset = client.scroll(
            collection,
            limit=page,
            offset=offset,
            with_payload=with_payload,
            with_vectors=with_vectors,
            scroll_filter=scroll_filter,
        )
        yield from points
        if offset is None:
            return


def dense_vector(point: qm.Record | qm.ScoredPoint, name: str | None) -> list[float]:
    """A point's stored dense vector called ``name`` (None: the unnamed one); empty if none."""
    stored: object = point.vector
    if isinstance(stored, dict):
        stored = stored.get(name or "")
    elif name is not None:
        stored = None
    if isinstance(stored, list) and stored and isinstance(stored[0], int | float):
        return cast("list[float]", stored)
    return []


def scroll_ids(client: QdrantClient, collection: str, page: int = 10_000) -> Iterator[PointId]:
    """Every id of ``collection`` in Qdrant's order, reading ids only."""
    return (point_id(point.id) for point in scroll_all(client, collection, page=page))


def server_version(client: QdrantClient) -> tuple[int, int, int] | None:
    """The server's version, or None for the embedded store (which has every local feature).

    Asked once per client: the backfill checks it before every write.
    """
    if client not in _versions:
        _versions[client] = _ask_version(client)
    return _versions[client]


def _ask_version(client: QdrantClient) -> tuple[int, int, int] | None:
    if is_local(client):
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


def is_local(client: QdrantClient) -> bool:
    """Whether ``client`` is qdrant-client's embedded (local mode) store."""
    inner = getattr(client, "_client", None)
    return type(inner).__name__ == "QdrantLocal"
