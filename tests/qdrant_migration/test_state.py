from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient

from include.qdrant_migration.qdrant import QdrantSettings, open_client
from include.qdrant_migration.state import (
    STATE_COLLECTION,
    MemoryStateStore,
    QdrantStateStore,
    StateStore,
    record_id,
)

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


@pytest.fixture(params=["qdrant", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "memory":
        yield MemoryStateStore()
        return
    with open_client(QdrantSettings(path=str(tmp_path / "state"))) as client:
        yield QdrantStateStore(client)


def test_put_get_round_trips_json_types(store: StateStore) -> None:
    store.put("checkpoint", "mig-1/fp/0", DOC)
    got = store.get("checkpoint", "mig-1/fp/0")
    assert got == DOC
    assert type(got and got["next_offset"]) is int  # an int offset must not come back as 1234.0


def test_put_replaces_and_kinds_are_separate(store: StateStore) -> None:
    store.put("plan", "k", {"v": 1})
    store.put("checkpoint", "k", {"v": 2})
    store.put("plan", "k", {"v": 3})
    assert store.get("plan", "k") == {"v": 3}
    assert store.get("checkpoint", "k") == {"v": 2}
    assert store.get("plan", "other") is None


def test_returned_documents_are_copies(store: StateStore) -> None:
    store.put("plan", "k", {"v": 1})
    got = store.get("plan", "k")
    assert got is not None
    got["v"] = 99
    assert store.get("plan", "k") == {"v": 1}


def test_delete(store: StateStore) -> None:
    store.put("skip", "a", {"x": 1})
    store.put("skip", "b", {"x": 2})
    store.delete("skip", "a")
    store.delete("skip", "never-written")
    assert store.get("skip", "a") is None
    assert store.get("skip", "b") == {"x": 2}


def test_scan_filters_by_kind_and_fields(store: StateStore) -> None:
    for i in range(5):
        store.put("skip", f"m1/{i}", {"migration_id": "m1", "point_id": i, "reason": "empty"})
    store.put("skip", "m2/0", {"migration_id": "m2", "point_id": 0, "reason": "empty"})
    store.put("checkpoint", "m1/x", {"migration_id": "m1"})
    assert sorted(d["point_id"] for d in store.scan("skip", migration_id="m1")) == list(range(5))
    assert len(list(store.scan("skip"))) == 6
    assert list(store.scan("skip", migration_id="m3")) == []
    assert list(store.scan("report")) == []


def test_scan_streams_past_one_page() -> None:
    store = QdrantStateStore(QdrantClient(":memory:"))
    for i in range(300):  # scan pages by 256
        store.put("skip", f"m/{i}", {"migration_id": "m", "point_id": i})
    found = [d["point_id"] for d in store.scan("skip", migration_id="m")]
    assert sorted(found) == list(range(300))


def test_absent_collection_reads_as_empty_and_is_not_created(client: QdrantClient) -> None:
    store = QdrantStateStore(client)
    assert store.get("migration", "mig-1") is None
    assert list(store.scan("skip", migration_id="mig-1")) == []
    store.delete("checkpoint", "x")
    assert not client.collection_exists(STATE_COLLECTION)
    store.put("migration", "mig-1", {"status": "loading"})
    assert client.collection_exists(STATE_COLLECTION)


def test_state_survives_reopening_the_store(tmp_path: Path) -> None:
    settings = QdrantSettings(path=str(tmp_path / "state"))
    with open_client(settings) as client:
        QdrantStateStore(client).put("migration", "mig-1", DOC)
    with open_client(settings) as client:
        store = QdrantStateStore(client)
        assert store.get("migration", "mig-1") == DOC
        record = client.retrieve(STATE_COLLECTION, [record_id("migration", "mig-1")])[0]
        assert record.payload is not None
        assert record.payload["kind"] == "migration" and record.payload["key"] == "mig-1"
        assert record.payload["updated_at"].endswith("+00:00")


def test_record_ids_are_stable_and_distinct() -> None:
    assert record_id("plan", "a") == record_id("plan", "a")
    assert len({record_id("plan", "a"), record_id("checkpoint", "a"), record_id("plan", "b")}) == 3
    # the separator keeps ("a", "b/c") and ("a/b", "c") apart
    assert record_id("a", "b/c") != record_id("a/b", "c")
