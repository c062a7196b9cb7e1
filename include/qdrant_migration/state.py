"""The one home for migration state: plans, checkpoints, skips and reports.

State lives in a small collection (``qdrant_migration_state``) in the same Qdrant as the
data. That choice is deliberate: it works for every Airflow executor (no shared disk
needed), survives a reset of Airflow's metadata DB, moves with the data when Qdrant is
backed up, and a checkpoint is written with the same client that acknowledged the points
it describes. The collection has no vectors; each record is one point whose id is derived
from ``(kind, key)`` and whose payload is the JSON document.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration.plan import Lineage, Plan
from include.qdrant_migration.qdrant import create_once, is_local, scroll_all, supports
from include.qdrant_migration.spec import Strategy

log = logging.getLogger(__name__)

STATE_COLLECTION = "qdrant_migration_state"
#: Keyword indexes that let a server answer :meth:`QdrantStateStore.scan` without reading
#: every record (skips and map chunks can be many): the UI plugin scans on every refresh.
INDEXED_FIELDS = ("kind", "doc.migration_id")
_NAMESPACE = uuid.UUID("5b0f6a5e-8d0c-4d57-9b1c-2a5b8d3c7e11")

#: A record's JSON document.
Doc = dict[str, Any]


class RecordKind(StrEnum):
    """Every kind of record the store holds, and so every kind of progress there is."""

    #: One per migration: its status, collections, plan and lineage (:class:`MigrationRecord`).
    MIGRATION = "migration"
    #: A migration's partition plan (sync/partitions.py).
    PARTITION_PLAN = "plan"
    #: Where one partition's backfill stands (sync/backfill.py).
    CHECKPOINT = "checkpoint"
    #: A point left out on purpose, with the reason (sync/skips.py).
    SKIP = "skip"
    #: Where one direction of catch-up got to (sync/catchup.py).
    WATERMARK = "watermark"
    #: What the last catch-up pass of one direction did, and when (sync/catchup.py).
    CATCH_UP = "catch_up"
    #: Exclusive use of a migration's target by one task (:func:`lease`).
    LEASE = "lease"
    #: The report the approval showed.
    REPORT = "report"
    #: A fitted linear map's header and its weights, in chunks (linear_map.py).
    LINEAR_MAP = "linear_map"
    LINEAR_MAP_CHUNK = "linear_map_chunk"


class MigrationStatus(StrEnum):
    """Where a migration is in its life; :data:`TRANSITIONS` says where it may go next."""

    #: The target exists and is being filled.
    LOADING = "loading"
    #: The target is complete and caught up: waiting for approval.
    READY = "ready"
    #: The alias serves the target; the old collection is kept for rollback.
    SWAPPED = "swapped"
    #: The alias was moved back to the old collection.
    ROLLED_BACK = "rolled_back"
    #: The source's quantization was changed in place (no target).
    QUANTIZED = "quantized"
    #: The approval was rejected (or timed out): the migration ended, the alias stayed.
    REJECTED = "rejected"
    #: The unused collection was deleted; nothing more happens to this migration.
    RETIRED = "retired"

    @property
    def kept_in_sync(self) -> bool:
        """Whether the catch-up DAG keeps this migration's two collections level."""
        return self in (MigrationStatus.READY, MigrationStatus.SWAPPED, MigrationStatus.ROLLED_BACK)


_S = MigrationStatus
#: The status machine. A fresh target (a first run, or a rerun after the target was
#: deleted) always starts at LOADING; a new run of a rejected or rolled-back migration
#: makes it READY again once its target is caught up.
TRANSITIONS: dict[MigrationStatus, frozenset[MigrationStatus]] = {
    _S.LOADING: frozenset({_S.READY, _S.RETIRED}),
    _S.READY: frozenset({_S.READY, _S.SWAPPED, _S.REJECTED, _S.RETIRED}),
    _S.SWAPPED: frozenset({_S.ROLLED_BACK, _S.RETIRED}),
    _S.ROLLED_BACK: frozenset({_S.READY, _S.RETIRED}),
    _S.REJECTED: frozenset({_S.READY, _S.RETIRED}),
    _S.QUANTIZED: frozenset(),
    _S.RETIRED: frozenset(),
}


class StatusError(RuntimeError):
    """A migration cannot go from its status to the one asked for; nothing was changed."""


class StateStore(Protocol):
    """What the rest of the package needs from a state store."""

    def get(self, kind: RecordKind, key: str) -> Doc | None: ...

    def put(self, kind: RecordKind, key: str, doc: Doc) -> None: ...

    def delete(self, kind: RecordKind, key: str) -> None: ...

    def scan(self, kind: RecordKind, **match: str) -> Iterator[Doc]: ...


def record_id(kind: RecordKind, key: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{kind}\x00{key}"))


def now_iso() -> str:
    return datetime.now(tz=UTC).isoformat(timespec="seconds")


@dataclass
class MigrationRecord:
    """The one record of a migration: what it moves where, how far it is, and its history."""

    migration_id: str
    alias: str
    source_collection: str
    status: MigrationStatus
    strategy: Strategy
    #: The collection the new vectors go to (the source itself for a quantization change).
    target_collection: str
    #: The plan the migration runs on; the catch-up DAG works from it.
    plan: Plan | None = None
    lineage: Lineage = field(default_factory=lambda: Lineage())
    #: The source's indexing threshold, restored on the target once it is loaded.
    indexing_threshold: int | None = None
    created_at: str = field(default_factory=now_iso)
    swapped_at: str | None = None
    #: Where the alias pointed before the swap (what a rollback returns to).
    previous_collection: str | None = None
    rolled_back_at: str | None = None
    retired_at: str | None = None
    deleted_collection: str | None = None
    quantized_at: str | None = None
    quantization: dict[str, str] | None = None
    #: The DAG run driving the migration now (None between runs): another run of the
    #: same migration stops instead of doing the same work twice.
    run_id: str | None = None
    rejected_at: str | None = None

    def __post_init__(self) -> None:
        self.strategy = Strategy(self.strategy)  # a record's doc holds its value

    @property
    def key(self) -> str:
        return self.migration_id

    def to_doc(self) -> Doc:
        doc = dataclasses.asdict(self)
        doc["status"] = self.status.value
        doc["strategy"] = self.strategy.value
        doc["plan"] = self.plan.to_dict() if self.plan is not None else None
        return doc

    @classmethod
    def from_doc(cls, doc: Doc) -> MigrationRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in doc.items() if k in names}
        fields["status"] = MigrationStatus(doc["status"])
        fields["plan"] = Plan.from_dict(doc["plan"]) if doc.get("plan") else None
        fields.setdefault("strategy", "full_reembed")
        fields.setdefault("target_collection", doc.get("source_collection", ""))
        return cls(**fields)


class Migrations:
    """The migration records of a store, and the only code that changes their status."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def get(self, migration_id: str) -> MigrationRecord | None:
        doc = self.store.get(RecordKind.MIGRATION, migration_id)
        return MigrationRecord.from_doc(doc) if doc is not None else None

    def require(self, migration_id: str) -> MigrationRecord:
        record = self.get(migration_id)
        if record is None:
            raise StatusError(f"No migration {migration_id!r} is recorded.")
        return record

    def put(self, record: MigrationRecord) -> None:
        self.store.put(RecordKind.MIGRATION, record.key, record.to_doc())

    def all(self, **match: str) -> Iterator[MigrationRecord]:
        for doc in self.store.scan(RecordKind.MIGRATION, **match):
            yield MigrationRecord.from_doc(doc)

    def transition(
        self, record: MigrationRecord, status: MigrationStatus, **changes: Any
    ) -> MigrationRecord:
        """Move ``record`` to ``status`` (with ``changes``) and store it, or refuse."""
        if status not in TRANSITIONS[record.status]:
            raise StatusError(
                f"Migration {record.migration_id} is {record.status.value}; it cannot become "
                f"{status.value}."
            )
        updated = dataclasses.replace(record, status=status, **changes)
        self.put(updated)
        log.info("Migration %s: %s -> %s", record.migration_id, record.status, status)
        return updated


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

    def delete(self, kind: RecordKind, key: str) -> None:
        if self._exists():
            self.client.delete(
                self.collection, qm.PointIdsList(points=[record_id(kind, key)]), wait=True
            )

    def scan(self, kind: RecordKind, **match: str) -> Iterator[Doc]:
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
            doc = (point.payload or {}).get("doc")
            if isinstance(doc, dict):
                yield dict(doc)

    # -- leases (leases.py): an atomic take-over needs insert-only writes ------------------

    def try_acquire(self, key: str, owner: str, ttl_s: float, now: float) -> bool:
        """Take or renew the lease ``key`` for ``owner``; False while another holds it."""
        current = self.get(RecordKind.LEASE, key)
        doc = lease_doc(current, owner, ttl_s, now)
        mine = current is not None and current.get("owner") == owner
        if mine and current and current["expires"] > now:  # a renewal while it is ours
            self.put(RecordKind.LEASE, key, doc)
            return True
        if current and current["expires"] > now:
            return False
        if current:  # expired (ours or not): a take-over, which a rival may race
            self._delete_if_unchanged(key, current)
        self._ensure()
        point = _point(RecordKind.LEASE, key, doc)
        if supports(self.client, (1, 17, 0)):
            self.client.upsert(
                self.collection, [point], wait=True, update_mode=qm.UpdateMode.INSERT_ONLY
            )
        else:  # older servers: last writer wins, read-back below still detects most races
            self.client.upsert(self.collection, [point], wait=True)
        return (self.get(RecordKind.LEASE, key) or {}).get("owner") == owner

    def _delete_if_unchanged(self, key: str, seen: Doc) -> None:
        """Delete the lease only if it is still the one we read (not a rival's new one)."""
        self.client.delete(
            self.collection,
            qm.FilterSelector(
                filter=qm.Filter(
                    must=[
                        qm.HasIdCondition(has_id=[record_id(RecordKind.LEASE, key)]),
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
        if (self.get(RecordKind.LEASE, key) or {}).get("owner") == owner:
            self.delete(RecordKind.LEASE, key)


def lease_doc(current: Doc | None, owner: str, ttl_s: float, now: float) -> Doc:
    """The lease record after ``owner`` takes or renews it at ``now`` (a Unix time)."""
    mine = current is not None and current.get("owner") == owner
    return {
        "owner": owner,
        "since": current["since"] if mine and current else now_iso(),
        "renewed": now,
        "expires": now + ttl_s,
    }


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

    def delete(self, kind: RecordKind, key: str) -> None:
        self.records.pop((str(kind), key), None)

    def scan(self, kind: RecordKind, **match: str) -> Iterator[Doc]:
        for (k, _), doc in list(self.records.items()):
            if k == str(kind) and all(doc.get(f) == v for f, v in match.items()):
                yield dict(doc)

    def try_acquire(self, key: str, owner: str, ttl_s: float, now: float) -> bool:
        current = self.get(RecordKind.LEASE, key)
        if current and current.get("owner") != owner and current["expires"] > now:
            return False
        self.put(RecordKind.LEASE, key, lease_doc(current, owner, ttl_s, now))
        return True

    def release(self, key: str, owner: str) -> None:
        if (self.get(RecordKind.LEASE, key) or {}).get("owner") == owner:
            self.delete(RecordKind.LEASE, key)
