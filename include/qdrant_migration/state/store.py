"""The state store: where every record lives, as a JSON document per ``(kind, key)``.

State lives in a small collection (``qdrant_migration_state``) in the same Qdrant as the
data. That choice is deliberate: it works for every Airflow executor (no shared disk
needed), survives a reset of Airflow's metadata DB, moves with the data when Qdrant is
backed up, and a checkpoint is written with the same client that acknowledged the points
it describes. The collection has no vectors; each record is one point whose id is derived
from ``(kind, key)`` and whose payload is the JSON document.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration.qdrant import create_once, is_local, scroll_all, supports

STATE_COLLECTION = "qdrant_migration_state"
#: Keyword indexes that let a server answer :meth:`QdrantStateStore.scan` without reading
#: every record (skips and map chunks can be many): the UI plugin scans on every refresh.
INDEXED_FIELDS = ("kind", "doc.migration_id")
_NAMESPACE = uuid.UUID("5b0f6a5e-8d0c-4d57-9b1c-2a5b8d3c7e11")

#: A record's JSON document.
Doc = dict[str, Any]
#: A value a conditional delete compares a document's field with.
Matched = str | int | float


class RecordKind(StrEnum):
    """Every kind of record the store holds, and so every kind of progress there is.

    Each has one record type and one repository (``schemas.py`` lists where).
    """

    #: One per migration: its status, collections, plan and lineage.
    MIGRATION = "migration"
    #: A migration's partition plan.
    PARTITION_PLAN = "plan"
    #: Where one partition's backfill stands.
    CHECKPOINT = "checkpoint"
    #: A point left out on purpose, with the reason.
    SKIP = "skip"
    #: Where one direction of catch-up got to.
    WATERMARK = "watermark"
    #: What the last catch-up pass of one direction did, and when.
    CATCH_UP = "catch_up"
    #: Exclusive use of a migration by one run or one writer.
    LEASE = "lease"
    #: The report the approval showed.
    REPORT = "report"
    #: A fitted linear map's (or its calibration vectors') header, and the chunks of its values.
    LINEAR_MAP = "linear_map"
    LINEAR_MAP_CHUNK = "linear_map_chunk"


class StateStore(Protocol):
    """Documents by ``(kind, key)``: what the repositories are built on."""

    def get(self, kind: RecordKind, key: str) -> Doc | None: ...

    def put(self, kind: RecordKind, key: str, doc: Doc) -> None: ...

    def insert(self, kind: RecordKind, key: str, doc: Doc) -> None:
        """Write ``doc`` only if no record of ``(kind, key)`` exists (else leave it)."""
        ...

    def delete(self, kind: RecordKind, key: str) -> None: ...

    def delete_if(self, kind: RecordKind, key: str, **equal: Matched) -> None:
        """Delete the record only if its document's fields still have these values."""
        ...

    def scan(self, kind: RecordKind, **match: str) -> Iterator[tuple[str, Doc]]:
        """``(key, doc)`` of every record of ``kind`` whose document matches ``match``."""
        ...


def record_id(kind: RecordKind, key: str) -> str:
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
            if create_once(self.client, self.collection, vectors_config={}):
                self.ensure_indexes()
            self._ready = True

    def ensure_indexes(self) -> None:
        """Create the keyword indexes of :data:`INDEXED_FIELDS` that are missing (a store
        created by an older version has none). Local mode keeps no payload indexes."""
        if not self._exists() or is_local(self.client):
            return
        have = self.client.get_collection(self.collection).payload_schema
        for name in INDEXED_FIELDS:
            if name not in have:
                self.client.create_payload_index(
                    self.collection, name, qm.PayloadSchemaType.KEYWORD, wait=True
                )

    def get(self, kind: RecordKind, key: str) -> Doc | None:
        if not self._exists():
            return None
        found = self.client.retrieve(self.collection, [record_id(kind, key)], with_payload=True)
        if not found or found[0].payload is None:
            return None
        doc = found[0].payload.get("doc")
        return dict(doc) if isinstance(doc, dict) else None

    def put(self, kind: RecordKind, key: str, doc: Doc) -> None:
        self._ensure()
        self.client.upsert(self.collection, [_point(kind, key, doc)], wait=True)

    def insert(self, kind: RecordKind, key: str, doc: Doc) -> None:
        """Insert-only where Qdrant has it (1.17+, the embedded store); on older servers the
        last writer wins, and a reader that reads the record back still sees most races."""
        self._ensure()
        point = _point(kind, key, doc)
        if supports(self.client, (1, 17, 0)):
            self.client.upsert(
                self.collection, [point], wait=True, update_mode=qm.UpdateMode.INSERT_ONLY
            )
        else:
            self.client.upsert(self.collection, [point], wait=True)

    def delete(self, kind: RecordKind, key: str) -> None:
        if self._exists():
            self.client.delete(
                self.collection, qm.PointIdsList(points=[record_id(kind, key)]), wait=True
            )

    def delete_if(self, kind: RecordKind, key: str, **equal: Matched) -> None:
        if not self._exists():
            return
        conditions: list[qm.Condition] = [qm.HasIdCondition(has_id=[record_id(kind, key)])]
        for name, value in equal.items():
            where = f"doc.{name}"
            conditions.append(
                qm.FieldCondition(key=where, match=qm.MatchValue(value=value))
                if isinstance(value, str)
                else qm.FieldCondition(key=where, range=qm.Range(gte=value, lte=value))
            )
        selector = qm.FilterSelector(filter=qm.Filter(must=conditions))
        self.client.delete(self.collection, selector, wait=True)

    def scan(self, kind: RecordKind, **match: str) -> Iterator[tuple[str, Doc]]:
        """Every record of ``kind`` whose document matches ``match`` (streamed)."""
        if not self._exists():
            return
        conditions: list[qm.Condition] = [
            qm.FieldCondition(key="kind", match=qm.MatchValue(value=str(kind)))
        ]
        conditions += [
            qm.FieldCondition(key=f"doc.{name}", match=qm.MatchValue(value=value))
            for name, value in match.items()
        ]
        records = scroll_all(
            self.client,
            self.collection,
            with_payload=True,
            scroll_filter=qm.Filter(must=conditions),
        )
        for point in records:
            payload = point.payload or {}
            doc = payload.get("doc")
            if isinstance(doc, dict):
                yield str(payload.get("key", "")), dict(doc)


def _point(kind: RecordKind, key: str, doc: Doc) -> qm.PointStruct:
    payload = {"kind": str(kind), "key": key, "updated_at": now_iso(), "doc": doc}
    return qm.PointStruct(id=record_id(kind, key), vector={}, payload=payload)


class MemoryStateStore:
    """A dict-backed store for unit tests of code that only needs the interface."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], Doc] = {}

    def get(self, kind: RecordKind, key: str) -> Doc | None:
        doc = self.records.get((str(kind), key))
        return dict(doc) if doc is not None else None

    def put(self, kind: RecordKind, key: str, doc: Doc) -> None:
        self.records[(str(kind), key)] = dict(doc)

    def insert(self, kind: RecordKind, key: str, doc: Doc) -> None:
        self.records.setdefault((str(kind), key), dict(doc))

    def delete(self, kind: RecordKind, key: str) -> None:
        self.records.pop((str(kind), key), None)

    def delete_if(self, kind: RecordKind, key: str, **equal: Matched) -> None:
        doc = self.records.get((str(kind), key))
        if doc is not None and all(doc.get(name) == value for name, value in equal.items()):
            self.delete(kind, key)

    def scan(self, kind: RecordKind, **match: str) -> Iterator[tuple[str, Doc]]:
        for (k, key), doc in list(self.records.items()):
            if k == str(kind) and all(doc.get(f) == v for f, v in match.items()):
                yield key, dict(doc)
