"""Opening Qdrant (the embedded store's lock, settings from a connection) and Qdrant's id order.

The lock tests observe the lock itself, never the clock: a second opener is seen being
refused the lock while the first holds it, and seen getting in only after the release.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration import qdrant as qdrant_module
from include.qdrant_migration.qdrant import (
    EmbeddedStoreLock,
    PointId,
    QdrantSettings,
    connect,
    create_once,
    dense_vector,
    embedded_lock,
    id_key,
    open_client,
    point_id,
    scroll_all,
    scroll_ids,
    server_version,
    supports,
)
from tests.qdrant_migration.helpers import SEED_POINTS, make_source

ROOT = Path(__file__).resolve().parents[2]
#: Generous bounds for the other side to reach a point it will reach; never a measurement.
PATIENCE_S = 60


class _FlockSpy:
    """Stands for the ``fcntl`` module in qdrant.py: sees each refused lock attempt."""

    def __init__(self) -> None:
        import fcntl

        self._fcntl = fcntl
        self.refused = threading.Event()
        self.LOCK_EX, self.LOCK_NB, self.LOCK_UN = fcntl.LOCK_EX, fcntl.LOCK_NB, fcntl.LOCK_UN

    def flock(self, fd: int, operation: int) -> None:
        try:
            self._fcntl.flock(fd, operation)
        except BlockingIOError:
            self.refused.set()
            raise


@pytest.fixture
def flock_spy(monkeypatch: pytest.MonkeyPatch) -> _FlockSpy:
    spy = _FlockSpy()
    monkeypatch.setattr(qdrant_module, "fcntl", spy)
    return spy


class _Opener(threading.Thread):
    """Opens the store in its own thread, recording when it got in and what it saw."""

    def __init__(self, settings: QdrantSettings, events: list[str]) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.events = events
        self.entered = threading.Event()
        self.points: int | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with open_client(self.settings) as client:
                self.events.append("second entered")
                self.points = client.count("articles", exact=True).count
                self.entered.set()
        except BaseException as error:  # reported by the test, not lost in the thread
            self.error = error
            self.entered.set()


def test_a_second_opener_in_another_thread_waits_until_the_first_releases(
    fast_store_path: Path, flock_spy: _FlockSpy
) -> None:
    settings = QdrantSettings(path=str(fast_store_path))
    events: list[str] = []
    second = _Opener(settings, events)

    with open_client(settings) as first:
        assert first.count("articles", exact=True).count == SEED_POINTS
        second.start()
        # The second opener reaches the lock and is refused it (it waits; it must not crash).
        assert flock_spy.refused.wait(PATIENCE_S), "the second opener never tried the lock"
        assert not second.entered.is_set(), "the second opener got in while the first held it"
        assert second.is_alive()
        assert first.count("articles", exact=True).count == SEED_POINTS  # first still works
        events.append("first releasing")
    assert second.entered.wait(PATIENCE_S), "the second opener never got the store"
    second.join(PATIENCE_S)
    assert second.error is None
    assert events == ["first releasing", "second entered"]
    assert second.points == SEED_POINTS


_HOLDER = """
import sys
from include.qdrant_migration.qdrant import QdrantSettings, open_client
with open_client(QdrantSettings(path=sys.argv[1])) as client:
    print("holding", client.count("articles").count, flush=True)
    sys.stdin.readline()  # hold the store until told to release it
print("released", flush=True)
"""


def test_the_lock_serializes_openers_across_processes(
    fast_store_path: Path, flock_spy: _FlockSpy
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(fast_store_path)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    events: list[str] = []
    second = _Opener(QdrantSettings(path=str(fast_store_path)), events)
    try:
        assert holder.stdin is not None and holder.stdout is not None
        assert holder.stdout.readline().split() == ["holding", str(SEED_POINTS)]
        second.start()
        assert flock_spy.refused.wait(PATIENCE_S), "this process never tried the lock"
        assert not second.entered.is_set(), "opened while another process held the store"
        assert holder.poll() is None  # the other process still holds it

        events.append("other process releasing")
        holder.stdin.write("release\n")
        holder.stdin.flush()
        assert second.entered.wait(PATIENCE_S), "never got the store after the release"
        assert holder.stdout.readline().strip() == "released"
        assert holder.wait(timeout=PATIENCE_S) == 0
    finally:
        holder.kill()
        holder.wait()
    second.join(PATIENCE_S)
    assert second.error is None
    assert events == ["other process releasing", "second entered"]
    assert second.points == SEED_POINTS


def test_without_the_lock_a_second_client_is_refused(fast_store_path: Path) -> None:
    """Why the lock exists: local mode refuses a second opener outright."""
    with open_client(QdrantSettings(path=str(fast_store_path))), pytest.raises(RuntimeError):
        QdrantClient(path=str(fast_store_path))


def test_the_client_from_connect_holds_the_lock_until_closed(fast_store_path: Path) -> None:
    store = str(fast_store_path)
    client = connect(QdrantSettings(path=store))
    try:
        assert client.count("articles").count == SEED_POINTS
        with pytest.raises(RuntimeError, match="already has"), embedded_lock(store):
            pass
    finally:
        client.close()
    with embedded_lock(store, timeout_s=0.1):  # released by close()
        pass


def _open_while_another_client_has_the_store(store: str) -> None:
    unlocked = QdrantClient(path=store)  # an opener that bypassed the lock
    try:
        with pytest.raises(RuntimeError, match="already accessed"):
            connect(QdrantSettings(path=store))
    finally:
        unlocked.close()
    gc.collect()  # the half-made client is collected here, not in some later test


def test_a_failed_open_releases_the_lock(
    fast_store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _open_while_another_client_has_the_store(str(fast_store_path))
    with open_client(QdrantSettings(path=str(fast_store_path))) as client:  # not left locked
        assert client.count("articles").count == SEED_POINTS


def test_a_failed_open_leaves_no_error_behind(
    fast_store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", errors.append)
    _open_while_another_client_has_the_store(str(fast_store_path))
    assert [repr(e.exc_value) for e in errors] == []


def test_an_in_memory_store_needs_no_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_client(QdrantSettings(path=":memory:")) as one:
        two = connect(QdrantSettings(path=":memory:"))  # a second opener at once: no wait
        try:
            one.create_collection("c", vectors_config=qm.VectorParams(size=2, distance="Cosine"))
            assert not two.collection_exists("c")  # two separate stores
        finally:
            two.close()
    assert list(tmp_path.iterdir()) == []  # and no lock file


def test_lock_times_out_with_advice(tmp_path: Path, flock_spy: _FlockSpy) -> None:
    store = str(tmp_path / "store")
    outcome: dict[str, Any] = {}

    def other_task() -> None:
        started = time.monotonic()
        try:
            with embedded_lock(store, timeout_s=0.3):
                outcome["entered"] = True
        except TimeoutError as error:
            outcome["error"] = str(error)
        outcome["waited"] = time.monotonic() - started

    with embedded_lock(store):
        worker = threading.Thread(target=other_task)
        worker.start()
        worker.join(timeout=PATIENCE_S)
    assert flock_spy.refused.is_set()
    assert "entered" not in outcome
    assert "Only one task can open an embedded store" in outcome["error"]
    assert outcome["waited"] >= 0.3  # it gave up only after its timeout
    with embedded_lock(store, timeout_s=0.1):  # released: free again at once
        pass
    assert (tmp_path / "store.lock").exists()


def test_opening_twice_in_one_thread_fails_at_once(tmp_path: Path, flock_spy: _FlockSpy) -> None:
    store = str(tmp_path / "store")
    with (
        embedded_lock(store),
        pytest.raises(RuntimeError, match="already has"),
        embedded_lock(store, timeout_s=PATIENCE_S),
    ):
        pass
    assert not flock_spy.refused.is_set()  # refused before it ever waited on itself


def test_lock_is_released_when_the_block_raises(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    with pytest.raises(ValueError), embedded_lock(store):
        raise ValueError("task failed")
    with embedded_lock(store, timeout_s=0.1):
        pass
    lock = EmbeddedStoreLock(store)
    lock.release()  # releasing a lock never acquired is harmless
    lock.acquire()
    lock.release()
    lock.release()


# -- settings ----------------------------------------------------------------------------


def test_settings_never_show_the_api_key() -> None:
    settings = QdrantSettings(url="https://qdrant.example:6333", api_key="sk-very-secret")
    for text in (repr(settings), str(settings), settings.describe(), f"{settings!r}"):
        assert "sk-very-secret" not in text
        assert "qdrant.example" in text
    assert settings.client_kwargs()["api_key"] == "sk-very-secret"  # but the client gets it
    assert not settings.embedded


def test_embedded_settings() -> None:
    settings = QdrantSettings(path="/data/qdrant", api_key="unused")
    assert settings.embedded
    assert settings.client_kwargs() == {"path": "/data/qdrant"}
    assert repr(settings) == "QdrantSettings(embedded store at /data/qdrant)"
    host = QdrantSettings(host="qdrant", port=6333)
    assert host.describe() == "Qdrant server at qdrant:6333"
    assert host.client_kwargs()["host"] == "qdrant"
    assert QdrantSettings(url="http://q:6333", host="ignored").client_kwargs()["host"] is None


def test_settings_from_an_airflow_connection() -> None:
    embedded = QdrantSettings.from_connection(
        host="ignored", port=1, password="unused", extra={"path": "/data/qdrant"}
    )
    assert embedded == QdrantSettings(path="/data/qdrant")

    server = QdrantSettings.from_connection(
        host="qdrant.internal",
        port=None,
        password="sk-secret",
        extra={"grpc_port": "6335", "prefer_gprc": True, "https": 1, "timeout": "30"},
    )
    assert server == QdrantSettings(
        host="qdrant.internal",
        port=6333,
        grpc_port=6335,
        prefer_grpc=True,
        https=True,
        api_key="sk-secret",
        timeout=30,
    )
    by_url = QdrantSettings.from_connection(
        host=None,
        port=None,
        password=None,
        extra={"url": "https://q.example", "prefer_grpc": True, "prefix": "qdrant"},
    )
    assert (by_url.url, by_url.host, by_url.api_key) == ("https://q.example", None, None)
    assert by_url.prefer_grpc and by_url.prefix == "qdrant" and by_url.https is None
    assert by_url.client_kwargs()["url"] == "https://q.example"
    defaults = QdrantSettings.from_connection(host="", port=0, password="", extra={"path": ""})
    assert defaults == QdrantSettings(path=None, host=None, port=6333)


def test_embedded_store_counts_as_supporting_every_feature(fast_client: QdrantClient) -> None:
    assert server_version(fast_client) is None
    assert supports(fast_client, (1, 17, 0))
    assert supports(fast_client, (99, 0, 0))


# -- ids, scrolling, vectors --------------------------------------------------------------

INT_IDS = [i * 7 + 3 for i in range(150)]
UUID_IDS = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"doc-{i}")) for i in range(150)]


@pytest.fixture
def mixed() -> Iterator[QdrantClient]:
    """300 points: 150 integer ids, then 150 UUIDs (Qdrant orders ints first)."""
    client = QdrantClient(":memory:")
    ids: list[PointId] = [*INT_IDS, *UUID_IDS]
    make_source(client, "mixed", [(i, {"n": n}) for n, i in enumerate(reversed(ids))])
    yield client
    client.close()


def test_id_key_matches_qdrants_scroll_order(mixed: QdrantClient) -> None:
    scrolled = list(scroll_ids(mixed, "mixed", page=64))
    assert scrolled == sorted([*INT_IDS, *UUID_IDS], key=id_key)
    assert id_key(10**12) < id_key("00000000-0000-0000-0000-000000000000")
    assert id_key(2) < id_key(10)  # numerically, not as text
    # UUIDs compare by value, whatever their spelling
    upper = "5B0F6A5E-8D0C-4D57-9B1C-2A5B8D3C7E11"
    assert id_key(upper) == id_key(upper.lower())


def test_point_id_keeps_ints_and_spells_uuids_as_strings() -> None:
    value = uuid.UUID("5b0f6a5e-8d0c-4d57-9b1c-2a5b8d3c7e11")
    assert point_id(7) == 7 and type(point_id(7)) is int
    assert point_id(str(value)) == str(value)
    assert point_id(value) == str(value)  # type: ignore[arg-type]


def test_scroll_all_streams_every_page_without_vectors(mixed: QdrantClient) -> None:
    records = list(scroll_all(mixed, "mixed", with_payload=True, page=64))  # 5 pages
    assert [point_id(r.id) for r in records] == sorted([*INT_IDS, *UUID_IDS], key=id_key)
    assert all(r.vector is None for r in records)
    assert sorted(r.payload["n"] for r in records if r.payload) == list(range(300))
    assert all(r.payload is None or r.payload == {} for r in scroll_all(mixed, "mixed", page=64))
    wanted = qm.Filter(must=[qm.FieldCondition(key="n", range=qm.Range(lt=10))])
    some = list(scroll_all(mixed, "mixed", with_payload=True, scroll_filter=wanted, page=3))
    assert sorted(r.payload["n"] for r in some if r.payload) == list(range(10))
    make_source(mixed, "empty", [])
    assert list(scroll_all(mixed, "empty")) == []


def test_dense_vector_reads_the_unnamed_or_the_named_vector() -> None:
    client = QdrantClient(":memory:")
    make_source(client, "plain", [(1, {})], size=3)
    client.create_collection(
        "named",
        vectors_config={"dense": qm.VectorParams(size=2, distance=qm.Distance.COSINE)},
        sparse_vectors_config={"words": qm.SparseVectorParams()},
    )
    client.upsert(
        "named",
        [
            qm.PointStruct(
                id=1,
                vector={"dense": [0.6, 0.8], "words": qm.SparseVector(indices=[3], values=[1.0])},
            ),
            qm.PointStruct(id=2, vector={"words": qm.SparseVector(indices=[1], values=[1.0])}),
        ],
    )
    plain = client.retrieve("plain", [1], with_vectors=True)[0]
    assert len(dense_vector(plain, None)) == 3
    assert dense_vector(plain, "dense") == []  # no vector of that name
    one, two = client.retrieve("named", [1, 2], with_vectors=True)
    assert dense_vector(one, "dense") == pytest.approx([0.6, 0.8])
    assert dense_vector(one, None) == []  # the unnamed one does not exist here
    assert dense_vector(one, "words") == []  # sparse: not a dense vector
    assert dense_vector(two, "dense") == []  # this point has none
    without = client.retrieve("named", [1], with_vectors=False)[0]
    assert dense_vector(without, "dense") == []


def test_create_once_is_fine_when_another_process_created_it_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Parallel backfill tasks race to create the companion collections on first write."""
    client = QdrantClient(":memory:")
    assert create_once(client, "states", vectors_config={}) is True
    answers = iter([False, True])  # "not there" when asked, then it is: the other task won
    monkeypatch.setattr(client, "collection_exists", lambda name: next(answers))
    assert create_once(client, "states", vectors_config={}) is False
    monkeypatch.undo()
    assert create_once(client, "states", vectors_config={}) is False
