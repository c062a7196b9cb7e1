"""The one home for migration state: plans, checkpoints, skips and reports.

State lives in a small collection (``qdrant_migration_state``) in the same Qdrant as the
data. That choice is deliberate: it works for every Airflow executor (no shared disk
needed), survives a reset of Airflow's metadata DB, moves with the data when Qdrant is
backed up, and a checkpoint is written with the same client that acknowledged the points
it describes. The collection has no vectors; each record is one point whose id is derived
from ``(kind, key)`` and whose payload is the JSON document.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration.qdrant import scroll_all, supports

STATE_COLLECTION = "qdrant_migration_state"
_NAMESPACE = uuid.UUID("5b0f6a5e-8d0c-4d57-9b1c-2a5b8d3c7e11")


class StateStore(Protocol):
    """What the rest of the package needs from a state store."""

    def get(self, kind: str, key: str) -> dict[str, Any] | None: ...

    def put(self, kind: str, key: str, doc: dict[str, Any]) -> None: ...

    def delete(self, kind: str, key: str) -> None: ...

    def scan(self, kind: str, **match: str) -> Iterator[dict[str, Any]]: ...


def record_id(kind: str, key: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{kind}\x00{key}"))


def now_iso() -> str:
    return datetime.now(tz=UTC).isoformat(timespec="seconds")


class QdrantStateStore:
    """State records as vector-less points in a dedicated collection."""

    def __init__(self, client: QdrantClient, collection: str = STATE_COLLECTION) -> None:
        self.client = client
        self.collection = collection
        self._ready = False

    def _exists(self) -> bool:
        if not self._ready:
            self._ready = self.client.collection_exists(self.collection)
        return self._ready

    def _ensure(self) -> None:
        if not self._exists():
            self.client.create_collection(self.collection, vectors_config={})
            self._ready = True

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        if not self._exists():
            return None
        found = self.client.retrieve(self.collection, [record_id(kind, key)], with_payload=True)
        if not found or found[0].payload is None:
            return None
        doc = found[0].payload.get("doc")
        return dict(doc) if isinstance(doc, dict) else None

    def put(self, kind: str, key: str, doc: dict[str, Any]) -> None:
        self._ensure()
        payload = {"kind": kind, "key": key, "updated_at": now_iso(), "doc": doc}
        self.client.upsert(
            self.collection,
            [qm.PointStruct(id=record_id(kind, key), vector={}, payload=payload)],
            wait=True,
        )

    def delete(self, kind: str, key: str) -> None:
        if self._exists():
            self.client.delete(
                self.collection, qm.PointIdsList(points=[record_id(kind, key)]), wait=True
            )

    def try_acquire(self, key: str, owner: str, ttl_s: float) -> bool:
        current = self.get("lease", key)
        if current and current.get("owner") != owner and current["expires"] > time.time():
            return False
        if current:
            self._delete_if_unchanged(key, current)
        self._ensure()
        doc = {"owner": owner, "expires": time.time() + ttl_s, "since": now_iso()}
        point = qm.PointStruct(
            id=record_id("lease", key),
            vector={},
            payload={"kind": "lease", "key": key, "updated_at": now_iso(), "doc": doc},
        )
        if supports(self.client, (1, 17, 0)):
            self.client.upsert(
                self.collection, [point], wait=True, update_mode=qm.UpdateMode.INSERT_ONLY
            )
        else:  # older servers: last writer wins, read-back below still detects most races
            self.client.upsert(self.collection, [point], wait=True)
        return (self.get("lease", key) or {}).get("owner") == owner

    def _delete_if_unchanged(self, key: str, seen: dict[str, Any]) -> None:
        """Delete the lease only if it is still the one we read (not a rival's new one)."""
        self.client.delete(
            self.collection,
            qm.FilterSelector(
                filter=qm.Filter(
                    must=[
                        qm.HasIdCondition(has_id=[record_id("lease", key)]),
                        qm.FieldCondition(
                            key="doc.owner", match=qm.MatchValue(value=seen["owner"])
                        ),
                        qm.FieldCondition(
                            key="doc.expires",
                            range=qm.Range(gte=seen["expires"], lte=seen["expires"]),
                        ),
                    ]
                )
            ),
            wait=True,
        )

    def release(self, key: str, owner: str) -> None:
        if (self.get("lease", key) or {}).get("owner") == owner:
            self.delete("lease", key)

    def scan(self, kind: str, **match: str) -> Iterator[dict[str, Any]]:
        """Every record of ``kind`` whose document matches ``match`` (streamed)."""
        if not self._exists():
            return
        conditions = [qm.FieldCondition(key="kind", match=qm.MatchValue(value=kind))]
        conditions += [
            qm.FieldCondition(key=f"doc.{field}", match=qm.MatchValue(value=value))
            for field, value in match.items()
        ]
        records = scroll_all(
            self.client,
            self.collection,
            with_payload=True,
            scroll_filter=qm.Filter(must=conditions),
        )
        for point in records:
            doc = (point.payload or {}).get("doc")
            if isinstance(doc, dict):
                yield dict(doc)


class LeaseBusyError(RuntimeError):
    """Another task holds the lease (e.g. a catch-up of the same migration is running)."""


@contextmanager
def lease(
    store: QdrantStateStore, key: str, owner: str, *, ttl_s: float = 6 * 3600, wait_s: float = 0
) -> Iterator[None]:
    """Exclusive use of ``key`` (one migration's target) while the block runs.

    Catch-ups and the swap of one migration write the same target; a nightly catch-up and a
    manual run must never do so at once. Acquisition writes the lease with ``insert_only``
    (a no-op if somebody else's lease exists) and reads it back: only one writer can win.
    A lease left by a killed worker expires after ``ttl_s``; the same owner (a retry of the
    same task) takes its own lease back at once.
    """
    deadline = time.monotonic() + wait_s
    while not store.try_acquire(key, owner, ttl_s):
        if time.monotonic() >= deadline:
            holder = (store.get("lease", key) or {}).get("owner")
            raise LeaseBusyError(f"{key} is busy: {holder} is writing it")
        time.sleep(5)
    try:
        yield
    finally:
        store.release(key, owner)


class MemoryStateStore:
    """A dict-backed store for unit tests of code that only needs the interface."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], dict[str, Any]] = {}

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        doc = self.records.get((kind, key))
        return dict(doc) if doc is not None else None

    def put(self, kind: str, key: str, doc: dict[str, Any]) -> None:
        self.records[(kind, key)] = dict(doc)

    def delete(self, kind: str, key: str) -> None:
        self.records.pop((kind, key), None)

    def scan(self, kind: str, **match: str) -> Iterator[dict[str, Any]]:
        for (k, _), doc in list(self.records.items()):
            if k == kind and all(doc.get(f) == v for f, v in match.items()):
                yield dict(doc)
