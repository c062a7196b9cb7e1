"""The state store's documents by (kind, key): both stores through the same tests (the
embedded store on disk, and the in-memory one of unit tests), and a server's indexes.

Records are read and written through the repositories (test_repository.py); these tests
are of what the repositories are built on.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient

from include.qdrant_migration.qdrant import QdrantSettings, open_client
from include.qdrant_migration.state import (
    INDEXED_FIELDS,
    STATE_COLLECTION,
    QdrantStateStore,
    RecordKind,
    StateStore,
    record_id,
)
from tests.qdrant_server import QdrantServer, qdrant_server  # noqa: F401 (fixture)

DOC: dict[str, Any] = {
    "migration_id": "mig-1",
    "next_offset": 1234,
    "uuid_offset": "5b0f6a5e-8d0c-4d57-9b1c-2a5b8d3c7e11",
    "ratio": 0.25,
    "done": False,
    "nothing": None,
    "skipped_by_reason": {"empty": 2, "missing": 1},
    "ids": [1, "a", 2.5],
}


# -- documents -----------------------------------------------------------------------------


def test_put_get_round_trips_json_types(store: StateStore) -> None:
    store.put(RecordKind.CHECKPOINT, "mig-1/fp/0", DOC)
    got = store.get(RecordKind.CHECKPOINT, "mig-1/fp/0")
    assert got == DOC
    assert type(got and got["next_offset"]) is int  # an int offset must not come back as 1234.0


def test_put_replaces_and_kinds_are_separate(store: StateStore) -> None:
    store.put(RecordKind.PARTITION_PLAN, "k", {"v": 1})
    store.put(RecordKind.CHECKPOINT, "k", {"v": 2})
    store.put(RecordKind.PARTITION_PLAN, "k", {"v": 3})
    assert store.get(RecordKind.PARTITION_PLAN, "k") == {"v": 3}
    assert store.get(RecordKind.CHECKPOINT, "k") == {"v": 2}
    assert store.get(RecordKind.PARTITION_PLAN, "other") is None


def test_returned_documents_are_copies(store: StateStore) -> None:
    store.put(RecordKind.PARTITION_PLAN, "k", {"v": 1})
    got = store.get(RecordKind.PARTITION_PLAN, "k")
    assert got is not None
    got["v"] = 99
    assert store.get(RecordKind.PARTITION_PLAN, "k") == {"v": 1}


def test_delete(store: StateStore) -> None:
    store.put(RecordKind.SKIP, "a", {"x": 1})
    store.put(RecordKind.SKIP, "b", {"x": 2})
    store.delete(RecordKind.SKIP, "a")
    store.delete(RecordKind.SKIP, "never-written")
    assert store.get(RecordKind.SKIP, "a") is None
    assert store.get(RecordKind.SKIP, "b") == {"x": 2}


def test_scan_filters_by_kind_and_fields(store: StateStore) -> None:
    for i in range(5):
        store.put(
            RecordKind.SKIP, f"m1/{i}", {"migration_id": "m1", "point_id": i, "reason": "empty"}
        )
    store.put(RecordKind.SKIP, "m2/0", {"migration_id": "m2", "point_id": 0, "reason": "empty"})
    store.put(RecordKind.CHECKPOINT, "m1/x", {"migration_id": "m1"})
    skips = list(store.scan(RecordKind.SKIP, migration_id="m1"))
    assert sorted(d["point_id"] for _, d in skips) == list(range(5))
    assert sorted(key for key, _ in skips) == [f"m1/{i}" for i in range(5)]
    assert len(list(store.scan(RecordKind.SKIP))) == 6
    assert list(store.scan(RecordKind.SKIP, migration_id="m3")) == []
    assert list(store.scan(RecordKind.REPORT)) == []


def test_scan_streams_past_one_page() -> None:
    store = QdrantStateStore(QdrantClient(":memory:"))
    for i in range(300):  # scan pages by 256
        store.put(RecordKind.SKIP, f"m/{i}", {"migration_id": "m", "point_id": i})
    found = [d["point_id"] for _, d in store.scan(RecordKind.SKIP, migration_id="m")]
    assert sorted(found) == list(range(300))


def test_absent_collection_reads_as_empty_and_is_not_created(fast_client: QdrantClient) -> None:
    store = QdrantStateStore(fast_client)
    assert store.get(RecordKind.MIGRATION, "mig-1") is None
    assert list(store.scan(RecordKind.SKIP, migration_id="mig-1")) == []
    store.delete(RecordKind.CHECKPOINT, "x")
    store.delete_if(RecordKind.LEASE, "target/mig-1", owner="nobody")
    assert not fast_client.collection_exists(STATE_COLLECTION)
    store.put(RecordKind.MIGRATION, "mig-1", {"status": "loading"})
    assert fast_client.collection_exists(STATE_COLLECTION)


def test_state_survives_reopening_the_store(tmp_path: Path) -> None:
    settings = QdrantSettings(path=str(tmp_path / "state"))
    with open_client(settings) as client:
        QdrantStateStore(client).put(RecordKind.MIGRATION, "mig-1", DOC)
    with open_client(settings) as client:
        store = QdrantStateStore(client)
        assert store.get(RecordKind.MIGRATION, "mig-1") == DOC
        record = client.retrieve(STATE_COLLECTION, [record_id(RecordKind.MIGRATION, "mig-1")])[0]
        assert record.payload is not None
        assert record.payload["kind"] == "migration" and record.payload["key"] == "mig-1"
        assert record.payload["updated_at"].endswith("+00:00")


def test_record_ids_are_stable_and_distinct() -> None:
    assert record_id(RecordKind.PARTITION_PLAN, "a") == record_id(RecordKind.PARTITION_PLAN, "a")
    keys = ["a", "b", "a/b", "b/c", "", "mig-1/0", "mig-1/0/1"]
    ids = {record_id(kind, key) for kind, key in itertools.product(RecordKind, keys)}
    assert len(ids) == len(RecordKind) * len(keys)
    # ids of records written before the kinds were an enum: stores made then still read
    assert record_id(RecordKind.PARTITION_PLAN, "mig-1") == "18b0c785-efb1-51c4-928f-0e944343209f"
    assert record_id(RecordKind.CHECKPOINT, "mig-1/fp/0") == "03c95c28-7f6e-52eb-89a1-0662cde1d847"


def test_record_kinds_keep_their_stored_names() -> None:
    """Records already in users' stores are found by these names: they must never change."""
    assert {kind.name: kind.value for kind in RecordKind} == {
        "MIGRATION": "migration",
        "PARTITION_PLAN": "plan",
        "CHECKPOINT": "checkpoint",
        "SKIP": "skip",
        "WATERMARK": "watermark",
        "LEASE": "lease",
        "REPORT": "report",
        "LINEAR_MAP": "linear_map",
        "LINEAR_MAP_CHUNK": "linear_map_chunk",
        "CATCH_UP": "catch_up",
    }


def test_a_server_store_scans_by_indexed_fields(qdrant_server: QdrantServer) -> None:  # noqa: F811
    """The UI scans kinds and migrations on every refresh: a server answers from indexes."""
    qdrant_server.reset()
    with open_client(qdrant_server.settings()) as client:
        store = QdrantStateStore(client)
        store.put(RecordKind.MIGRATION, "mig-1", {"migration_id": "mig-1"})
        schema = client.get_collection(STATE_COLLECTION).payload_schema
        assert set(INDEXED_FIELDS) <= set(schema)
        client.delete_payload_index(STATE_COLLECTION, "kind", wait=True)  # an older store
        QdrantStateStore(client).ensure_indexes()
        assert "kind" in client.get_collection(STATE_COLLECTION).payload_schema
        assert [d["migration_id"] for _, d in store.scan(RecordKind.MIGRATION)] == ["mig-1"]
