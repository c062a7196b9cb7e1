"""A worker SIGKILLed mid-partition resumes exactly where it stopped, repeating one sub-batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from include.qdrant_migration.providers import EmbeddingProvider
from include.qdrant_migration.qdrant import QdrantSettings, open_client
from include.qdrant_migration.state import QdrantStateStore
from tests.qdrant_migration.helpers import all_points, prepare, small_spec

pytestmark = pytest.mark.integration

BATCH = 16


def _batches(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line]


def _worker(store: Path, plan: dict[str, Any], partition: dict[str, Any], log: Path) -> Any:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.qdrant_migration.kill_worker",
            str(store),
            json.dumps(plan),
            json.dumps(partition),
            str(log),
        ],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_sigkill_midway_then_resume(
    store_path: Path, tmp_path: Path, e5: EmbeddingProvider
) -> None:
    spec = small_spec(points_per_partition=1000, batch_size=BATCH, embed_concurrency=1)
    with open_client(QdrantSettings(path=str(store_path))) as client:
        run = prepare(client, spec, e5, QdrantStateStore(client))
    plan, partition = run.plan.to_dict(), run.partitions[0].to_dict()
    first_log, second_log = tmp_path / "first.jsonl", tmp_path / "second.jsonl"

    worker = _worker(store_path, plan, partition, first_log)
    deadline = time.monotonic() + 120
    while len(_batches(first_log)) < 5 and time.monotonic() < deadline:
        assert worker.poll() is None, worker.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    before = [t for batch in _batches(first_log) for t in batch]
    assert 5 * BATCH <= len(before) < 240, "the kill must land midway"

    again = _worker(store_path, plan, partition, second_log)
    assert again.wait(timeout=300) == 0, again.stderr.read().decode()[-2000:]
    after = [t for batch in _batches(second_log) for t in batch]

    repeated = set(before) & set(after)
    assert len(repeated) <= BATCH, f"{len(repeated)} texts were embedded twice"
    assert len(before) + len(after) - len(repeated) == 240
    with open_client(QdrantSettings(path=str(store_path))) as client:
        source = all_points(client, "articles_v1", vectors=False)
        target = all_points(client, run.plan.target_collection)
    assert [p.id for p in target] == [p.id for p in source]
    assert [p.payload for p in target] == [p.payload for p in source]
    expected = e5.embed_documents([p.payload["text"] for p in source])  # type: ignore[index]
    np.testing.assert_allclose([p.vector for p in target], expected, atol=1e-4)
