from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient

from include.qdrant_migration.qdrant import (
    QdrantSettings,
    embedded_lock,
    open_client,
    server_version,
    supports,
)
from tests.qdrant_migration.helpers import SEED_POINTS

ROOT = Path(__file__).resolve().parents[2]


def test_a_second_opener_in_another_thread_waits_until_the_first_releases(
    store_path: Path,
) -> None:
    settings = QdrantSettings(path=str(store_path))
    entered = threading.Event()
    seen: dict[str, float | int] = {}

    def second() -> None:
        with open_client(settings) as client:
            seen["entered_at"] = time.monotonic()
            seen["points"] = client.count("articles", exact=True).count
            entered.set()

    with open_client(settings) as first:
        assert first.count("articles", exact=True).count == SEED_POINTS
        worker = threading.Thread(target=second)
        worker.start()
        # While the first client is open the second must not get in (and must not crash).
        assert not entered.wait(0.6)
        released_at = time.monotonic()
    worker.join(timeout=30)
    assert entered.is_set(), "the second opener never got the store"
    assert seen["entered_at"] >= released_at
    assert seen["points"] == SEED_POINTS


def test_the_lock_serializes_openers_across_processes(store_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from include.qdrant_migration.qdrant import QdrantSettings, open_client\n"
            "with open_client(QdrantSettings(path=sys.argv[1])) as c:\n"
            "    print(c.count('articles').count, flush=True)\n"
            "    time.sleep(1.0)\n",
            str(store_path),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == str(SEED_POINTS)  # the child holds it now
        asked = time.monotonic()
        with open_client(QdrantSettings(path=str(store_path))) as client:
            waited = time.monotonic() - asked
            assert client.count("articles").count == SEED_POINTS
        assert holder.wait(timeout=30) == 0
    finally:
        holder.kill()
        holder.wait()
    assert waited >= 0.5, f"opened after {waited:.2f}s while another process held the store"


def test_without_the_lock_a_second_client_is_refused(store_path: Path) -> None:
    """Why the lock exists: local mode refuses a second opener outright."""
    with open_client(QdrantSettings(path=str(store_path))), pytest.raises(RuntimeError):
        QdrantClient(path=str(store_path))


def test_lock_times_out_with_advice(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    outcome: dict[str, Any] = {}

    def other_task() -> None:
        started = time.monotonic()
        try:
            with embedded_lock(store, timeout_s=0.3):
                pass
        except TimeoutError as error:
            outcome["error"] = str(error)
        outcome["waited"] = time.monotonic() - started

    with embedded_lock(store):
        worker = threading.Thread(target=other_task)
        worker.start()
        worker.join(timeout=10)
    assert "Only one task can open an embedded store" in outcome["error"]
    assert outcome["waited"] >= 0.3
    with embedded_lock(store, timeout_s=0.1):  # released: free again at once
        pass
    assert (tmp_path / "store.lock").exists()


def test_opening_twice_in_one_thread_fails_at_once(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    started = time.monotonic()
    with (
        embedded_lock(store),
        pytest.raises(RuntimeError, match="already has"),
        embedded_lock(store, timeout_s=30),
    ):
        pass
    assert time.monotonic() - started < 5  # not a wait on itself


def test_lock_is_released_when_the_block_raises(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    with pytest.raises(ValueError), embedded_lock(store):
        raise ValueError("task failed")
    with embedded_lock(store, timeout_s=0.1):
        pass


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


def test_embedded_store_counts_as_supporting_every_feature(client: QdrantClient) -> None:
    assert server_version(client) is None
    assert supports(client, (1, 17, 0))
    assert supports(client, (99, 0, 0))
