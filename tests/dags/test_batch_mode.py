"""Batch mode through the real DAG, for each provider with a batch API: OpenAI's Batch API
(the stand-in's Files and Batches APIs) and Cohere's embed jobs (its Datasets and Embed
Jobs APIs) embed the backfill, the partitions wait rescheduled (no worker slot), a try
that dies while its job runs polls the same job again, and texts that failed inside a job
and a job that ended early still end in a complete target, each text embedded once."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from include.qdrant_migration.aliases import current_target
from include.qdrant_migration.providers import ratelimit
from include.qdrant_migration.qdrant import QdrantSettings, open_client
from tests.dags.conftest import return_value, task_states
from tests.qdrant_migration.helpers import all_points, seed_standin_source
from tests.standin import COHERE_KEY, OPENAI_KEY, StandIn, expected_vector
from tests.standin.batch_apis import jobs_created, left_behind
from tests.standin.batches import BATCH_PATH
from tests.standin.cohere_jobs import JOB_PATH

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

COMMON = {
    "alias": "docs",
    "provider_conn_id": "embeddings",
    "embedding_mode": "batch",
    "batch_poll_seconds": 1,
    "points_per_partition": 100,
    "provider_options": {"max_inputs_per_request": 16},
    "recall_sample_size": 20,
}


@dataclass(frozen=True)
class Side:
    """One provider's batch API as the run is set up, faulted and checked."""

    provider: str
    model: str
    dimensions: int | None
    input_type: str
    online_path: str
    run_path: str
    #: Why the dry run recommends online for this small corpus (both modes are shown).
    mode_reason: str

    def connect(self, monkeypatch: pytest.MonkeyPatch, standin: StandIn) -> dict[str, Any]:
        """Airflow connection ``embeddings`` (generic for OpenAI, as the other DAG tests; of
        type ``cohere`` for Cohere: the key in the password, the base URL in the host), and
        the old model's (the source's vectors are OpenAI's): the run's params."""
        openai = {
            "conn_type": "generic",
            "password": OPENAI_KEY,
            "extra": {"base_url": standin.openai_base_url},
        }
        conf = {**COMMON, "provider": self.provider, "model": self.model}
        if self.dimensions:
            conf["dimensions"] = self.dimensions
        if self.provider == "openai":
            monkeypatch.setenv("AIRFLOW_CONN_EMBEDDINGS", json.dumps(openai))
            return conf
        cohere = {"conn_type": "cohere", "password": COHERE_KEY, "host": standin.cohere_base_url}
        monkeypatch.setenv("AIRFLOW_CONN_EMBEDDINGS", json.dumps(cohere))
        monkeypatch.setenv("AIRFLOW_CONN_OLD_MODEL", json.dumps(openai))
        return {**conf, "source_provider_conn_id": "old_model"}

    def fault(self, standin: StandIn) -> None:
        """Texts failing inside the first job, the second ending early, a try dying on its
        first poll (the connection drops)."""
        if self.provider == "openai":
            standin.batches.duration_s = 3.0
            standin.batches.fail_requests_next(1, batch=0)  # one request of 16 texts
            standin.batches.expire_next(after=1, batch=1)  # expires having run one request
            standin.disconnect_next(1, path="GET /v1/batches/batch_*")
        else:
            standin.cohere_jobs.validation_s, standin.cohere_jobs.duration_s = 1.0, 3.0
            standin.cohere_jobs.fail_rows_next(10, job=0)  # ten texts, across requests' bounds
            standin.cohere_jobs.fail_job_next(after=24, job=1)  # fails having run 24 texts
            standin.disconnect_next(1, path="GET /v1/embed-jobs/*")

    def running(self, standin: StandIn) -> list[str]:
        """The names of the jobs running now."""
        if self.provider == "openai":
            batches = list(standin.batches.batches.values())
            return [
                (b.metadata or {}).get("qdrant_migration_file", "")
                for b in batches
                if b.status == "in_progress"
            ]
        jobs = list(standin.cohere_jobs.jobs.values())
        return [str(j.name) for j in jobs if j.status == "processing"]

    def documents_online(self, standin: StandIn, before: float) -> list[Any]:
        """Stored texts embedded online during the backfill (not the connection check, the
        estimate's timing sample, nor the checks' queries)."""
        return [
            r
            for r in standin.requests(self.online_path, status=200)
            if r.started < before
            and r.input_type in (None, "search_document")
            and not r.texts[0].startswith("Timing sample")
            and r.texts != ["Qdrant model migration: connection and dimension check."]
        ]


OPENAI = Side(
    "openai",
    "text-embedding-3-large",
    256,
    "",
    "/v1/embeddings",
    BATCH_PATH,
    "batch would save only $0.00",
)
COHERE = Side(
    "cohere",
    "embed-english-light-v3.0",
    None,
    "search_document",
    "/v2/embed",
    JOB_PATH,
    "Cohere's embed jobs cost what online requests cost",
)


class Watcher(threading.Thread):
    """Samples the state of each backfill task while its partition's job runs."""

    def __init__(self, side: Side, standin: StandIn) -> None:
        # Airflow's models imported and SQLAlchemy's mappers configured here, in the main
        # thread: this thread's first query and the reviewer's thread (its auth manager
        # imports models) doing both at once deadlocked (an import lock against
        # SQLAlchemy's configure mutex) when this test ran first in its session.
        from airflow.models import Connection, DagModel, Pool, Variable  # noqa: F401
        from sqlalchemy.orm import configure_mappers

        configure_mappers()
        super().__init__(daemon=True)
        self.side = side
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
            for name in self.side.running(self.standin):
                part = re.search(r"-p(\d+)-f", name)
                if part and int(part[1]) in by_partition:
                    self.while_running[by_partition[int(part[1])]] += 1
            states = list(by_partition.values())
            if states and all(s == "success" for s in states):
                self.backfill_done_at = self.backfill_done_at or time.monotonic()


@pytest.mark.parametrize("side", [OPENAI, COHERE], ids=["openai", "cohere"])
def test_batch_mode_end_to_end(
    side: Side,
    qdrant_conn: Path,
    corpus: list[dict[str, Any]],
    standin: StandIn,
    monkeypatch: pytest.MonkeyPatch,
    dagbag: Any,
    reviewer: Callable[[str], dict[str, Any]],
) -> None:
    ratelimit.reset_shared_limiters()
    conf = side.connect(monkeypatch, standin)
    with open_client(QdrantSettings(path=str(qdrant_conn))) as client:
        seed_standin_source(client, corpus, model="text-embedding-3-small", dimensions=512)
    side.fault(standin)
    watcher = Watcher(side, standin)
    watcher.start()

    seen = reviewer("Approve")
    run = dagbag.get_dag("qdrant_model_migration").test(run_conf=conf)
    watcher.stop.set()

    assert "error" not in seen, seen.get("error")
    assert run.state == "success", task_states(run)
    plan = return_value(run, "assess_compatibility")
    partitions = len(return_value(run, "plan_partitions"))
    print(f"\nbackfill task states sampled while a job ran: {dict(watcher.while_running)}")
    # waiting held no worker: while its job ran, a partition's task was rescheduled (or
    # waiting to retry after the dropped poll), running only for its short polls
    waiting = watcher.while_running["up_for_reschedule"]
    assert waiting > 0 and waiting > watcher.while_running["running"]
    # one job per partition, one more for the early-ended one's unrun texts: no resubmission
    created = jobs_created(standin, side.provider)
    assert len(created) == partitions + 1, created
    assert not left_behind(standin, side.provider)  # every input and output deleted
    # every text of the source embedded exactly once, by a job or its online retry
    assert watcher.backfill_done_at is not None
    online = side.documents_online(standin, watcher.backfill_done_at)
    sent = Counter(t for r in standin.requests(side.run_path, status=200) for t in r.texts)
    sent.update(t for r in online for t in r.texts)
    assert sent == Counter(r["text"] for r in corpus), sent - Counter(r["text"] for r in corpus)
    assert len(online) == 1  # the texts that failed inside their job, in one request
    with open_client(QdrantSettings(path=str(qdrant_conn))) as client:
        target = current_target(client, "docs")
        assert target == plan["target_collection"]
        points = all_points(client, target)
    assert len(points) == len(corpus)
    for point in points:
        text = str((point.payload or {})["text"])
        want = expected_vector(side.model, text, side.input_type, side.dimensions)
        np.testing.assert_allclose(point.vector, want, rtol=1e-5, atol=1e-6)
    body = seen["detail"]["body"]
    assert "embedding mode: online / batch" in body and "this run: batch" in body
    assert side.mode_reason in body
