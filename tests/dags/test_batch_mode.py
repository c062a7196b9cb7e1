"""Batch mode through the real DAG: OpenAI's Batch API (the stand-in's Files and Batches
APIs) embeds the backfill, the partitions wait rescheduled (no worker slot), a try that
dies while its batch runs polls the same batch again, and failed requests and an expired
batch still end in a complete target."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from include.qdrant_migration.aliases import current_target
from include.qdrant_migration.qdrant import QdrantSettings, open_client
from tests.dags.conftest import return_value, task_states
from tests.qdrant_migration.helpers import all_points, seed_standin_source
from tests.standin import StandIn, expected_vector
from tests.standin.batches import BATCH_PATH

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MODEL, SIZE = "text-embedding-3-large", 256
CONF = {
    "alias": "docs",
    "provider": "openai",
    "model": MODEL,
    "dimensions": SIZE,
    "provider_conn_id": "embeddings",
    "embedding_mode": "batch",
    "batch_poll_seconds": 1,
    "points_per_partition": 100,
    "provider_options": {"max_inputs_per_request": 16},
    "recall_sample_size": 20,
}


class Watcher(threading.Thread):
    """Samples the state of each backfill task while its partition's batch runs."""

    def __init__(self, standin: StandIn) -> None:
        super().__init__(daemon=True)
        self.standin = standin
        self.while_running: Counter[str] = Counter()
        self.backfill_done_at: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        from airflow.models.dagrun import DagRun
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select

        while not self.stop.wait(0.2):
            with create_session() as session:  # this run's tasks (others may be in the DB)
                running = select(DagRun.run_id).where(
                    DagRun.dag_id == "qdrant_model_migration", DagRun.state == "running"
                )
                rows = session.execute(
                    select(TaskInstance.map_index, TaskInstance.state).where(
                        TaskInstance.task_id == "backfill_batch",
                        TaskInstance.run_id.in_(running),
                    )
                ).all()
            by_partition = {int(index): str(state) for index, state in rows}
            for batch in list(self.standin.batches.batches.values()):
                name = (batch.metadata or {}).get("qdrant_migration_file", "")
                part = re.search(r"-p(\d+)-f", name)
                if batch.status == "in_progress" and part and int(part[1]) in by_partition:
                    self.while_running[by_partition[int(part[1])]] += 1
            states = list(by_partition.values())
            if states and all(s == "success" for s in states):
                self.backfill_done_at = self.backfill_done_at or time.monotonic()


def test_batch_mode_end_to_end(
    qdrant_conn: Path,
    corpus: list[dict[str, Any]],
    openai_connection: StandIn,
    dagbag: Any,
    reviewer: Callable[[str], dict[str, Any]],
) -> None:
    standin = openai_connection
    with open_client(QdrantSettings(path=str(qdrant_conn))) as client:
        seed_standin_source(client, corpus, model="text-embedding-3-small", dimensions=512)
    standin.batches.duration_s = 3.0
    standin.batches.fail_requests_next(1, batch=0)  # one request fails inside the first
    standin.batches.expire_next(after=1, batch=1)  # the second expires having run one
    # a try dies while its batch runs: the connection drops on its first poll
    standin.disconnect_next(1, path="GET /v1/batches/batch_*")
    watcher = Watcher(standin)
    watcher.start()

    seen = reviewer("Approve")
    run = dagbag.get_dag("qdrant_model_migration").test(run_conf=CONF)
    watcher.stop.set()

    assert "error" not in seen, seen.get("error")
    assert run.state == "success", task_states(run)
    plan = return_value(run, "assess_compatibility")
    partitions = len(return_value(run, "plan_partitions"))
    print(f"\nbackfill task states sampled while a batch ran: {dict(watcher.while_running)}")
    # waiting held no worker: while its batch ran, a partition's task was rescheduled (or
    # waiting to retry after the dropped poll), running only for its short polls
    waiting = watcher.while_running["up_for_reschedule"]
    assert waiting > 0 and waiting > watcher.while_running["running"]
    # one batch per partition, one more for the expired one's unrun requests: no resubmission
    created = standin.batches.created
    assert len(created) == partitions + 1, created
    assert not standin.batches.files  # every request, output and error file deleted
    # every text of the source embedded exactly once, by a batch or its online retry
    assert watcher.backfill_done_at is not None
    online = [
        r
        for r in standin.requests("/v1/embeddings", status=200)
        if r.started < watcher.backfill_done_at
        and not r.texts[0].startswith("Timing sample")
        and r.texts != ["Qdrant model migration: connection and dimension check."]
    ]
    sent = Counter(t for r in standin.requests(BATCH_PATH, status=200) for t in r.texts)
    sent.update(t for r in online for t in r.texts)
    assert sent == Counter(r["text"] for r in corpus), sent - Counter(r["text"] for r in corpus)
    assert len(online) == 1  # the request that failed inside its batch
    with open_client(QdrantSettings(path=str(qdrant_conn))) as client:
        target = current_target(client, "docs")
        assert target == plan["target_collection"]
        points = all_points(client, target)
    assert len(points) == len(corpus)
    for point in points:
        want = expected_vector(MODEL, str((point.payload or {})["text"]), "", SIZE)
        np.testing.assert_allclose(point.vector, want, rtol=1e-5, atol=1e-6)
    body = seen["detail"]["body"]
    assert "embedding mode: online / batch" in body and "this run: batch" in body
