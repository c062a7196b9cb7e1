"""``recall_check`` against Qdrant's engine: it waits while the target's index builds, then
measures the recall the engine's HNSW gives (nothing here is 1.000 by construction).

The test server (``tests/qdrant_server``, engine backend) builds indexes in the background
as a server does; the test holds those builds until the sensor has rescheduled once, so
the wait is certain rather than a race with a fast build.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

import pytest
from qdrant_client import models as qm

from include.qdrant_migration.aliases import current_target
from include.qdrant_migration.providers import get_provider
from include.qdrant_migration.qdrant import open_client
from scripts.seeding import read_corpus, seed_collection
from tests.conftest import SOURCE_MODEL
from tests.dags.conftest import return_value, task_states
from tests.qdrant_migration.helpers import seed_standin_source
from tests.qdrant_server import QdrantServer

pytestmark = pytest.mark.integration

ALIAS, SOURCE = "docs", "docs_v1"
CONF = {
    "alias": ALIAS,
    "provider": "openai",
    "model": "text-embedding-3-large",
    "dimensions": 256,
    "provider_conn_id": "embeddings",
    "points_per_partition": 100,
    "batch_size": 32,
    "recall_sample_size": 50,
}


def _reschedules(run: Any, task_id: str) -> int:
    from airflow.models.taskreschedule import TaskReschedule
    from airflow.utils.session import create_session

    (ti,) = [t for t in run.get_task_instances() if t.task_id == task_id]
    with create_session() as session:
        return int(session.query(TaskReschedule).filter(TaskReschedule.ti_id == ti.id).count())


def test_recall_check_waits_for_the_index_then_measures_the_engines_recall(
    server_conn: QdrantServer,
    corpus: list[dict[str, Any]],
    openai_connection: None,
    dagbag: Any,
    reviewer: Callable[[str], dict[str, Any]],
) -> None:
    with open_client(server_conn.settings()) as client:
        seed_standin_source(client, corpus, collection=SOURCE, alias=ALIAS, dimensions=256)
        # Small segments are searched exactly on a server; these settings (copied to the
        # target) make this small collection use, and so wait for, a real HNSW index.
        client.update_collection(
            SOURCE,
            optimizers_config=qm.OptimizersConfigDiff(indexing_threshold=1),
            hnsw_config=qm.HnswConfigDiff(full_scan_threshold=1),
        )
    server_conn.hold_indexing(True)
    dag = dagbag.get_dag("qdrant_model_migration")
    release = threading.Event()

    def release_after_a_reschedule() -> None:
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session

        while not release.wait(1.0):
            with create_session() as session:
                waiting = (
                    session.query(TaskInstance)
                    .filter(
                        TaskInstance.task_id == "recall_check",
                        TaskInstance.state == "up_for_reschedule",
                    )
                    .count()
                )
            if waiting:
                server_conn.hold_indexing(False)
                return

    watcher = threading.Thread(target=release_after_a_reschedule, daemon=True)
    watcher.start()
    target = f"{SOURCE}__text-embedding-3-large-256d__v1"
    during: dict[str, Any] = {}

    def index_settings_while_approval_waits() -> None:
        with open_client(server_conn.settings()) as client:
            during["target"] = client.get_collection(target).config
            during["source"] = client.get_collection(SOURCE).config

    seen = reviewer("Approve", index_settings_while_approval_waits)
    try:
        run = dag.test(run_conf=CONF)
    finally:
        release.set()
        server_conn.hold_indexing(False)
        watcher.join(timeout=10)

    assert "error" not in seen, seen.get("error")
    assert run.state == "success", task_states(run)
    assert _reschedules(run, "recall_check") >= 1  # it waited while the index was built
    body = seen["detail"]["body"]
    # Until the swap the target's index was built with the budget's cap (1 thread, one
    # optimization job); the served source was never touched; the swap lifted the cap.
    capped, source = during["target"], during["source"]
    assert capped.hnsw_config.max_indexing_threads == 1
    assert capped.optimizer_config.max_optimization_threads == 1
    assert source.hnsw_config.max_indexing_threads == 0
    assert source.optimizer_config.max_optimization_threads is None
    with open_client(server_conn.settings()) as client:
        assert current_target(client, ALIAS) == target
        info = client.get_collection(target)
        assert info.status == qm.CollectionStatus.GREEN
        assert info.indexed_vectors_count and info.indexed_vectors_count >= info.points_count
        assert info.config.hnsw_config.max_indexing_threads == 0  # the source's: Qdrant chooses
        assert info.config.optimizer_config.max_optimization_threads is None  # "auto"
    swapped = return_value(run, "swap_alias")
    assert swapped["index_threads"] == {"max_indexing_threads": 0, "max_optimization_threads": None}
    builds = [b for b in server_conn.stats()["builds"] if b["collection"] == target]
    assert builds, server_conn.stats()["builds"]  # the engine built the target's HNSW
    # the approval shows what the engine measured, on an index it says is complete
    row = next(line for line in body.splitlines() if line.startswith("| recall@10 ANN vs exact"))
    assert "(threshold 0.95, 50 queries)" in row, row
    print(f"\n[engine] reschedules {_reschedules(run, 'recall_check')}; {row}; {builds[-1]}")
    index_row = next(line for line in body.splitlines() if line.startswith("| index |"))
    assert index_row.startswith("| index | green, "), index_row


#: At least 20,000 real embeddings: 12-word windows (stride 3) over the demo corpus.
WINDOWS = 20_000


def _windows(corpus: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    words = " ".join(record["text"] for record in read_corpus()).split()
    texts = [" ".join(words[i : i + 12]) for i in range(0, len(words) - 12, 3)][:count]
    assert len(texts) == count, len(texts)
    return [{"id": i + 1, "text": text} for i, text in enumerate(texts)]


def test_a_weak_index_fails_recall_check_and_the_alias_stays(
    server_conn: QdrantServer,
    corpus: list[dict[str, Any]],
    dagbag: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """20,000 all-MiniLM-L6-v2 embeddings behind an index far too weak for them (m=4,
    ef_construct=8, copied from the source to the target): the engine's approximate search
    misses, recall_check fails with the recall it measured, and no approval is offered."""
    with open_client(server_conn.settings()) as client:
        seed_collection(
            client,
            collection="windows_v1",
            alias="windows",
            records=_windows(corpus, WINDOWS),
            provider=get_provider("local", SOURCE_MODEL),
            batch_size=256,
        )
        client.update_collection(
            "windows_v1",
            hnsw_config=qm.HnswConfigDiff(m=4, ef_construct=8, full_scan_threshold=10),
            optimizers_config=qm.OptimizersConfigDiff(indexing_threshold=10),
        )
    run = dagbag.get_dag("qdrant_model_migration").test(
        run_conf={
            "alias": "windows",
            "strategy": "linear_map",  # the stored vectors, mapped: no 20,000 embeddings
            "allow_linear_map": True,
            "min_map_retention": 0.0,
            "quality_tolerance": 1.0,  # the map is accepted whatever the old model finds
            "map_sample_size": 200,
            "points_per_partition": 10_000,
            "batch_size": 256,
            "recall_sample_size": 50,
        }
    )

    states = task_states(run)
    assert run.state == "failed", states
    assert states["recall_check"] == "failed", states
    assert states["build_report"] in {"upstream_failed", None}, states
    assert states["approve_swap"] in {"upstream_failed", None}, states  # never offered
    out = capsys.readouterr().out
    message = next(line for line in out.splitlines() if "of approximate vs exact search" in line)
    found = re.search(r"is (\d\.\d{3}), below the threshold 0\.95", message)
    assert found is not None, message
    assert float(found.group(1)) < 0.95
    print(f"\n[engine] weak index over {WINDOWS} embeddings: recall@10 {found.group(1)}")
    with open_client(server_conn.settings()) as client:
        assert current_target(client, "windows") == "windows_v1"  # the alias did not move
        target = client.get_collection("windows_v1__multilingual-e5-small__v1")
        assert target.config.hnsw_config.m == 4 and target.points_count == WINDOWS
