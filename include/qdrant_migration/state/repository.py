"""Typed records over the state store: one repository per record kind, one generic code.

A repository reads a document, upgrades it to its kind's current schema
(``schemas.upgrade``) and decodes it into the kind's record type (``codec.decode``); it
writes a record encoded (``codec.encode``) with the current version. Each kind's
repository is a small subclass that names its kind and record type, beside the record
type (``schemas.py`` lists them); callers see records, never documents.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

from include.qdrant_migration import codec
from include.qdrant_migration.state.schemas import SCHEMA, upgrade, version_of
from include.qdrant_migration.state.store import Doc, RecordKind, StateStore


class Keyed(Protocol):
    """A record that knows its key in the store."""

    @property
    def key(self) -> str: ...


R = TypeVar("R", bound=Keyed)


class Repository(Generic[R]):
    """The records of one kind in ``store``: ``get``, ``put``, ``delete``, ``scan``."""

    def __init__(self, store: StateStore, kind: RecordKind, record: type[R]) -> None:
        self.store = store
        self.kind = kind
        self.record = record

    def get(self, key: str) -> R | None:
        doc = self.store.get(self.kind, key)
        return None if doc is None else self.decode(key, doc)

    def put(self, record: R) -> None:
        self.store.put(self.kind, record.key, self.encode(record))

    def delete(self, key: str) -> None:
        self.store.delete(self.kind, key)

    def scan(self, **match: str) -> Iterator[R]:
        """Every record whose stored fields equal ``match`` (``migration_id`` is indexed)."""
        for key, doc in self.store.scan(self.kind, **match):
            yield self.decode(key, doc)

    def encode(self, record: R) -> Doc:
        doc: Doc = codec.encode(record)
        doc[SCHEMA] = version_of(self.kind)
        return doc

    def decode(self, key: str, doc: Doc) -> R:
        current = upgrade(self.kind, key, doc)
        return codec.decode(self.record, current, where=f"{self.kind} {key!r}")
