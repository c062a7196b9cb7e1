"""A worker SIGKILLed mid-partition resumes exactly where it stopped, repeating one sub-batch.

Real processes, the real new model, a real kill: the worker is held (see kill_worker.py)
right after the provider returned a sub-batch it will never write, and killed there.
"""

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

from include.qdrant_migration import codec
from include.qdrant_migration.providers import EmbeddingProvider
from include.qdrant_migration.qdrant import QdrantSettings, open_client
from include.qdrant_migration.state import QdrantStateStore
from include.qdrant_migration.sync.backfill import Checkpoint
from include.qdrant_migration.sync.checkpoints import Checkpoints
from tests.qdrant_migration.helpers import SEED_POINTS, all_points, prepare, small_spec

pytestmark = pytest.mark.integration

BATCH = 16
#: The embedding call the first worker is killed in: five sub-batches are written by then.
KILLED_IN_CALL = 6


def _batches(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line]


def _worker(
    store: Path, plan: dict[str, Any], partition: dict[str, Any], log: Path, *hold: int
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.qdrant_migration.sync.kill_worker",
            str(store),
            json.dumps(plan),
            json.dumps(partition),
            str(log),
            *map(str, hold),
        ],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _stderr(worker: subprocess.Popen[bytes]) -> str:
    assert worker.stderr is not None
    return worker.stderr.read().decode()[-2000:]


def test_sigkill_midway_then_resume(
    store_path: Path, tmp_path: Path, e5: EmbeddingProvider
) -> None:
    spec = small_spec(points_per_partition=1000, batch_size=BATCH, embed_concurrency=1)
    with open_client(QdrantSettings(path=str(store_path))) as client:
        run = prepare(client, spec, e5, QdrantStateStore(client))
    plan, partition = codec.encode_dict(run.plan), codec.encode_dict(run.partitions[0])
    assert run.partitions[0].points == SEED_POINTS
    first_log, second_log = tmp_path / "first.jsonl", tmp_path / "second.jsonl"

    worker = _worker(store_path, plan, partition, first_log, KILLED_IN_CALL)
    try:
        # The log grows one line per paid call; the worker hangs in call KILLED_IN_CALL.
        deadline = time.monotonic() + 300
        while len(_batches(first_log)) < KILLED_IN_CALL:
            assert worker.poll() is None, _stderr(worker)
            assert time.monotonic() < deadline, "the worker never reached the kill point"
            time.sleep(0.05)
        assert worker.poll() is None, "the worker must still be running when it is killed"
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    assert worker.returncode == -signal.SIGKILL
    before = [t for batch in _batches(first_log) for t in batch]
    assert len(before) == KILLED_IN_CALL * BATCH  # paid for, the last sub-batch never written

    with open_client(QdrantSettings(path=str(store_path))) as client:
        doc = Checkpoints(QdrantStateStore(client)).get(Checkpoint.key_of(run.partitions[0]))
        written = client.count(run.plan.target_collection, exact=True).count
    assert doc is not None
    checkpoint = doc
    assert not checkpoint.done
    assert checkpoint.done_points == written == (KILLED_IN_CALL - 1) * BATCH

    again = _worker(store_path, plan, partition, second_log)
    assert again.wait(timeout=300) == 0, _stderr(again)
    after = [t for batch in _batches(second_log) for t in batch]

    repeated = set(before) & set(after)
    # At most the sub-batches in flight (one at embed_concurrency=1) are paid twice; killed
    # between paying for one and writing it, that one is.
    assert len(repeated) <= BATCH, f"{len(repeated)} texts were embedded twice"
    assert len(repeated) == BATCH
    assert len(after) == SEED_POINTS - written  # it resumed at the checkpoint
    assert len(before) + len(after) - len(repeated) == SEED_POINTS
    with open_client(QdrantSettings(path=str(store_path))) as client:
        source = all_points(client, "articles_v1", vectors=False)
        target = all_points(client, run.plan.target_collection)
    assert [p.id for p in target] == [p.id for p in source]
    assert [p.payload for p in target] == [p.payload for p in source]
    expected = e5.embed_documents([p.payload["text"] for p in source])  # type: ignore[index]
    np.testing.assert_allclose([p.vector for p in target], expected, atol=1e-4)
