"""Each record kind's schema version, and the upgrades that bring older records to it.

Every document the repositories write carries its kind's version under ``"schema"``. A
document without one was written before versions existed (the releases up to commit
ea95164): it is version 1. Reading applies the kind's upgrades in order (version n to
n + 1), so the code only ever sees the current shape; writing stores that shape with the
current version. A document from a version newer than this code knows is refused, with
what to do, never read half-understood.

An upgrade is a plain function of the document (and of the record's key, which some
version-1 documents hold only there). It must not use today's record classes: they
change, and the upgrade must keep converting what it converted when it was written.

When a record type's stored shape changes (a field renamed, retyped, moved or removed,
or added where an older release rewriting the record would lose something that matters):
append an upgrade below, and the fixture test of the releases before
(``tests/qdrant_migration/state/test_release_records.py``) proves old records still read.
A field added with a default needs no upgrade: older documents take the default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from include.qdrant_migration.state.store import Doc, RecordKind

#: The document key that holds the schema version.
SCHEMA = "schema"
#: An upgrade: a document of version n, and its record's key, to the document of n + 1.
Upgrade = Callable[[Doc, str], Doc]


class NewerSchemaError(RuntimeError):
    """A record was written by a newer release than the one reading it; nothing was read."""


@dataclass(frozen=True)
class Schema:
    """A kind's upgrades, oldest first: its current version is one more than their number."""

    upgrades: tuple[Upgrade, ...] = ()

    @property
    def version(self) -> int:
        return len(self.upgrades) + 1


# -- version 1 -> 2 of the kinds whose shape this release changed ------------------------


def _migration_v2(doc: Doc, key: str) -> Doc:
    """Records of releases before strategies and in-place migrations: a full re-embed whose
    target held the new vectors (the patches ``MigrationRecord.from_doc`` used to apply)."""
    doc.setdefault("strategy", "full_reembed")
    doc.setdefault("target_collection", doc.get("source_collection", ""))
    doc["plan"] = doc.get("plan") or None
    return doc


def _watermark_v2(doc: Doc, key: str) -> Doc:
    """A watermark names its migration and direction (version 1 had them in its key only),
    and its ``field`` is called ``updated_at_field``, as the param it comes from."""
    migration_id, _, direction = key.rpartition("/")
    doc.setdefault("migration_id", migration_id)
    doc.setdefault("direction", direction)
    if "field" in doc:
        doc["updated_at_field"] = doc.pop("field")
    return doc


def _catch_up_v2(doc: Doc, key: str) -> Doc:
    """A pass record holds the pass's result under ``result`` (version 1: beside its own
    fields)."""
    if "result" in doc:
        return doc
    migration_id, _, direction = key.rpartition("/")
    own = {
        "migration_id": doc.pop("migration_id", migration_id),
        "at": doc.pop("at", ""),
        "direction": doc.get("direction", direction),
    }
    return own | {"result": doc}


def _lease_v2(doc: Doc, key: str) -> Doc:
    """A lease names itself (version 1: in its key only)."""
    doc.setdefault("name", key)
    return doc


#: The header fields of a stored matrix; version 1 kept a map's summary beside them.
_MATRIX_FIELDS = ("shape", "normalize", "chunks", "sha256", "ids", "hashes")
#: How held-out queries were made before ``held_out_query`` was recorded.
_FIRST_SENTENCE_QUERY = "the document's first sentence"


def _linear_map_v2(doc: Doc, key: str) -> Doc:
    """A matrix header names itself and its migration; a fitted map's summary moves under
    ``summary`` (version 1: beside the header's fields). Summaries from before the held-out
    query was recorded were measured with the first sentence."""
    header = {k: doc.pop(k) for k in _MATRIX_FIELDS if k in doc}
    header["name"] = key
    header["migration_id"] = key.split("/")[0]
    if "retention" in doc:  # a fitted map (not the calibration vectors)
        doc.setdefault("held_out_query", _FIRST_SENTENCE_QUERY)
        header["summary"] = doc
    return header


SCHEMAS: dict[RecordKind, Schema] = {
    RecordKind.MIGRATION: Schema((_migration_v2,)),
    RecordKind.PARTITION_PLAN: Schema(),
    RecordKind.CHECKPOINT: Schema(),
    RecordKind.SKIP: Schema(),
    RecordKind.WATERMARK: Schema((_watermark_v2,)),
    RecordKind.CATCH_UP: Schema((_catch_up_v2,)),
    RecordKind.LEASE: Schema((_lease_v2,)),
    RecordKind.REPORT: Schema(),
    RecordKind.LINEAR_MAP: Schema((_linear_map_v2,)),
    RecordKind.LINEAR_MAP_CHUNK: Schema(),
}


def version_of(kind: RecordKind) -> int:
    """The version this release writes ``kind`` records at."""
    return SCHEMAS[kind].version


def upgrade(kind: RecordKind, key: str, doc: Doc) -> Doc:
    """``doc`` (as stored, any version up to the current one) in the current shape, without
    its version key. Refuses a newer version (:class:`NewerSchemaError`)."""
    schema = SCHEMAS[kind]
    found = doc.pop(SCHEMA, 1)
    if not isinstance(found, int) or isinstance(found, bool) or found < 1:
        raise NewerSchemaError(f"The {kind} record {key!r} has a bad schema version {found!r}.")
    if found > schema.version:
        raise NewerSchemaError(
            f"The {kind} record {key!r} was written with schema version {found}, and this "
            f"release of qdrant-model-migration reads {kind} records up to version "
            f'{schema.version}: a newer release wrote it (docs/development.md, "State", '
            "lists the release each version came with). Run that release or a later one "
            "everywhere this store is used (the Airflow workers, the scheduler's DAG "
            "processor and the UI plugin). Nothing was read or changed."
        )
    for step in schema.upgrades[found - 1 :]:
        doc = step(doc, key)
    return doc
