"""The migration on the CeleryExecutor, as docker-compose.yaml's celery profile runs it.

One stack for the tier (``conftest.py``): Postgres as the metadata DB, Redis as the broker,
two Celery workers in separate processes, the engine-backed Qdrant test server, and the
embedding stand-in, whose request log is the provider's bill. The tests run in this order
and build on each other's state (the catch-up test follows the first test's swap; the kill
test, last, leaves one worker).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections import Counter
from typing import Any

import httpx
import psycopg2
import pytest
from qdrant_client import models as qm

from include.qdrant_migration.qdrant import open_client
from include.qdrant_migration.spec import MigrationSpec
from include.qdrant_migration.state import Migrations, QdrantStateStore
from include.qdrant_migration.sync.checkpoints import Checkpoints
from scripts.approvals_client import ApprovalClient
from tests.e2e.celery.conftest import (
    DIMENSIONS,
    NEW_MODEL,
    OLD_MODEL,
    SOURCES,
    migration_conf,
    note,
    requires_services,
)
from tests.e2e.celery.stack import (
    CATCH_UP_SCHEDULE,
    POOL_SLOTS,
    WORKERS,
    CeleryStack,
    as_seconds,
    wait_until,
)
from tests.e2e.conftest import DAG_ID
from tests.standin import expected_vector

pytestmark = [pytest.mark.e2e, pytest.mark.celery, requires_services]


def new_run_id(kind: str) -> str:
    return f"celery:{kind}+{secrets.token_hex(3)}"


def documents_embedded(stack: CeleryStack, texts: set[str]) -> Counter[str]:
    """How often each of ``texts`` was embedded as a stored text (``search_document``)."""
    return Counter(
        text
        for record in stack.standin.requests("/v2/embed", status=200)
        if record.input_type == "search_document"
        for text in record.texts
        if text in texts
    )


def test_partitions_run_on_both_workers(
    celery_stack: CeleryStack, source_texts: dict[str, list[dict[str, Any]]]
) -> None:
    """Triggered from the CLI, approved over REST: the four partitions ran on both
    workers, every text was embedded once, the alias moved."""
    stack = celery_stack
    stack.standin.reset()
    stack.standin.latency_s = 0.2  # each partition embeds for a second or so
    run_id = new_run_id("both-workers")
    conf = migration_conf("docs", points_per_partition=100, batch_size=25)
    started = time.monotonic()
    triggered = stack.airflow(
        "dags", "trigger", DAG_ID, "--run-id", run_id, "--conf", json.dumps(conf)
    )
    assert triggered.returncode == 0, triggered.stdout + triggered.stderr

    detail = stack.wait_for_approval(run_id, timeout_s=300)
    api = ApprovalClient.from_server(stack.url, "admin", stack.password)
    try:
        assert api.answer(detail, "Approve")["chosen_options"] == ["Approve"]
    finally:
        api.close()
    run = stack.wait_for_state(DAG_ID, run_id, {"success", "failed"}, timeout_s=240)
    took = time.monotonic() - started

    tis = stack.task_instances(DAG_ID, run_id)
    assert run["state"] == "success", stack.diagnostics(run_id)
    partitions = sorted(
        (ti for ti in tis if ti["task_id"] == "backfill_batch"), key=lambda ti: ti["map_index"]
    )
    assert len(partitions) == SOURCES["docs"] // 100
    ran_on = {
        ti["rendered_map_index"] or str(ti["map_index"]): stack.executions(
            DAG_ID, run_id, "backfill_batch", ti["map_index"], ti["try_number"]
        )
        for ti in partitions
    }
    every_task = Counter(
        worker
        for ti in tis
        for worker in stack.executions(
            DAG_ID, run_id, ti["task_id"], ti["map_index"], ti["try_number"]
        )
    )
    note(
        f"partitions on workers: {ran_on}; all tasks of the run by worker: {dict(every_task)} "
        f"(run {took:.0f} s, trigger to success)"
    )
    assert all(len(workers) == 1 for workers in ran_on.values()), ran_on  # once each
    assert {workers[0] for workers in ran_on.values()} == set(WORKERS), ran_on
    assert all(ti["pool"] == "qdrant_backfill" for ti in partitions)

    texts = {r["text"] for r in source_texts["docs"]}
    embedded = documents_embedded(stack, texts)
    assert set(embedded) == texts
    assert set(embedded.values()) == {1}, "a text was embedded twice"
    target = stack.alias_target("docs")
    assert target not in (None, "docs_v1")
    assert stack.collection_points(str(target)) == SOURCES["docs"]


#: The provider account's limit that both migrations of the pool test are given, in the
#: windows its limiter counts (``rate_window_s``): at most 12 requests in any 6 s, so each
#: of the pool's two tasks sends one a second.
BUDGET_RPM = 120
WINDOW_S = 6.0


def busiest_window(starts: list[float], window_s: float) -> int:
    """The most requests started within any ``window_s`` seconds (a sliding window)."""
    starts = sorted(starts)
    first, most = 0, 0
    for last, at in enumerate(starts):
        while at - starts[first] >= window_s:
            first += 1
        most = max(most, last - first + 1)
    return most


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most intervals open at one time."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def test_two_migrations_share_the_pool_budget(
    celery_stack: CeleryStack, source_texts: dict[str, list[dict[str, Any]]]
) -> None:
    """Two migrations triggered together, each given the account's whole budget, with four
    worker slots free: the pool (2 slots = QMM_MAX_PARALLEL_PARTITIONS) runs two of their
    four backfill tasks at once, each at half the budget, so the provider sees the budget."""
    stack = celery_stack
    stack.standin.reset()
    stack.standin.latency_s = 0.05
    options = {"requests_per_minute": BUDGET_RPM, "rate_window_s": WINDOW_S}
    run_ids = {alias: new_run_id(f"pool-{alias}") for alias in ("notes", "pages")}
    for alias, run_id in run_ids.items():
        # Ten requests a task: each outlasts a window, so a task that took over a slot
        # bursting on top of its predecessor's last window would show (20 in 6 s measured
        # without paced_start).
        conf = migration_conf(
            alias, points_per_partition=100, batch_size=10, provider_options=options
        )
        stack.trigger(DAG_ID, run_id, conf)

    def backfilled() -> list[dict[str, Any]] | None:
        tis = [
            ti
            for run_id in run_ids.values()
            for ti in stack.task_instances(DAG_ID, run_id)
            if ti["task_id"] in ("assess_compatibility", "create_collection", "backfill_batch")
        ]
        failed = [ti for ti in tis if ti["state"] in ("failed", "upstream_failed")]
        assert not failed, (failed, stack.diagnostics(next(iter(run_ids.values()))))
        backfill = [ti for ti in tis if ti["task_id"] == "backfill_batch"]
        done = len(backfill) == 4 and all(ti["state"] == "success" for ti in backfill)
        return backfill if done else None

    partitions = wait_until(backfilled, 300, "both migrations backfilled", poll_s=2)

    texts = {r["text"] for alias in run_ids for r in source_texts[alias]}
    requests = [
        record
        for record in stack.standin.requests("/v2/embed", status=200)
        if record.input_type == "search_document" and set(record.texts) <= texts
    ]
    assert sum(len(r.texts) for r in requests) == len(texts)  # each text once
    starts = [r.started for r in requests]
    allowance = BUDGET_RPM * WINDOW_S / 60
    peak = busiest_window(starts, WINDOW_S)
    sustained = (len(starts) - 1) / (max(starts) - min(starts)) * 60
    spans = [(as_seconds(ti["start_date"]), as_seconds(ti["end_date"])) for ti in partitions]
    at_once = most_at_once([(float(a), float(b)) for a, b in spans if a and b])
    waited = [
        float(as_seconds(ti["queued_when"]) or 0) - float(as_seconds(ti["scheduled_when"]) or 0)
        for ti in partitions
    ]
    note(
        f"pool: {len(starts)} backfill requests of 2 migrations; busiest {WINDOW_S:.0f} s window "
        f"{peak} requests vs the budget's {allowance:.0f} ({BUDGET_RPM} requests/min); "
        f"sustained {sustained:.0f} requests/min; "
        f"backfill tasks at once {at_once} (pool slots {POOL_SLOTS}, worker slots 4); waits "
        f"for a pool slot {', '.join(f'{w:.0f} s' for w in sorted(waited))}"
    )
    assert at_once <= POOL_SLOTS
    assert max(waited) > 1, "no task waited for the pool: it did not bound anything"
    # Tolerance: one request per task running at once. A task's limiter counts a request
    # when it lets it go, the stand-in when it arrives: later by a connection's setup for a
    # task's first request, by the test process's own work (the stand-in runs in it) for
    # any. A request can so share a window with the one its limiter spaced a window after
    # it, as long as that delay is under one spacing (1 s here).
    assert peak <= allowance + POOL_SLOTS, f"{peak} requests in {WINDOW_S} s"
    assert sustained <= BUDGET_RPM * 1.05


#: The Qdrant budget of the paced migration, in points written per second, and its
#: sub-batch: the cluster must see at most the budget plus one sub-batch in any second.
QDRANT_BUDGET = 100
PACED_BATCH = 40


def busiest_second(writes: list[tuple[float, int]]) -> int:
    """The most points written within any one second (a sliding window)."""
    writes = sorted(writes)
    first, total, most = 0, 0, 0
    for at, points in writes:
        total += points
        while at - writes[first][0] >= 1.0:
            total -= writes[first][1]
            first += 1
        most = max(most, total)
    return most


def test_the_qdrant_budget_holds_across_both_workers(
    celery_stack: CeleryStack, source_texts: dict[str, list[dict[str, Any]]]
) -> None:
    """A migration with qdrant_budget.points_per_second: its four partitions run two at a
    time on both workers, each paced to half the budget in half sub-batches, with nothing
    shared between them; the Qdrant server's own log of the writes it received shows at
    most the budget plus one sub-batch in any second."""
    stack = celery_stack
    stack.standin.reset()
    stack.standin.latency_s = 0.0  # the provider is not the bound: Qdrant's budget is
    run_id = new_run_id("qdrant-budget")
    conf = migration_conf(
        "paced",
        points_per_partition=200,
        batch_size=PACED_BATCH,
        qdrant_budget={"points_per_second": QDRANT_BUDGET},
    )
    stack.trigger(DAG_ID, run_id, conf)

    def backfilled() -> list[dict[str, Any]] | None:
        tis = stack.task_instances(DAG_ID, run_id)
        failed = [ti for ti in tis if ti["state"] in ("failed", "upstream_failed")]
        assert not failed, (failed, stack.diagnostics(run_id))
        backfill = [ti for ti in tis if ti["task_id"] == "backfill_batch"]
        done = len(backfill) == 4 and all(ti["state"] == "success" for ti in backfill)
        return backfill if done else None

    partitions = wait_until(backfilled, 300, "the paced migration backfilled", poll_s=2)
    migration_id = MigrationSpec.from_params(conf).migration_id("paced_v1")
    with open_client(stack.qdrant) as client:
        record = Migrations(QdrantStateStore(client)).require(migration_id)
    collection = record.target_collection
    stats = httpx.get(f"{stack.qdrant.url}/__facade__/stats", timeout=30).json()["result"]
    writes = [
        (float(at), int(points)) for at, name, points in stats["writes"] if name == collection
    ]
    ran_on = {
        worker
        for ti in partitions
        for worker in stack.executions(
            DAG_ID, run_id, "backfill_batch", ti["map_index"], ti["try_number"]
        )
    }
    spans = [(as_seconds(ti["start_date"]), as_seconds(ti["end_date"])) for ti in partitions]
    at_once = most_at_once([(float(a), float(b)) for a, b in spans if a and b])
    written = sum(points for _, points in writes)
    peak = busiest_second(writes)
    took = max(at for at, _ in writes) - min(at for at, _ in writes)
    note(
        f"qdrant budget: {written} points written to {collection} by {at_once} backfill "
        f"tasks at once on {sorted(ran_on)}, in {len(writes)} writes of "
        f"{sorted({p for _, p in writes})} points; busiest second {peak} points vs the "
        f"budget {QDRANT_BUDGET} + one sub-batch {PACED_BATCH}; sustained "
        f"{written / took:.0f} points/s over {took:.1f} s"
    )
    assert written == SOURCES["paced"]
    assert ran_on == set(WORKERS), ran_on  # both workers wrote
    assert at_once >= 2  # the budget was shared, not merely serialized
    assert peak <= QDRANT_BUDGET + PACED_BATCH, f"{peak} points in one second"
    assert written / took <= QDRANT_BUDGET * 1.05


CATCH_UP_DAG = "qdrant_migration_catch_up"


def test_the_scheduler_runs_the_catch_up_dag_on_postgres(celery_stack: CeleryStack) -> None:
    """After the first test's swap, the application writes a point through the alias; the
    catch-up DAG, run by the scheduler on its cron schedule, mirrors it into the old
    collection with the old model (so a rollback would lose nothing)."""
    stack = celery_stack
    target = stack.alias_target("docs")
    assert target not in (None, "docs_v1"), "runs after test_partitions_run_on_both_workers"
    text = "Written through the alias after the swap, to be mirrored back by the catch-up."
    written = 10_000_001
    with open_client(stack.qdrant) as client:
        vector = expected_vector(NEW_MODEL, text, "search_document", DIMENSIONS)
        client.upsert(
            "docs", [qm.PointStruct(id=written, vector=vector, payload={"text": text})], wait=True
        )
    before = {run["dag_run_id"] for run in stack.runs_of(CATCH_UP_DAG)}
    stack.set_paused(CATCH_UP_DAG, False)
    unpaused = time.monotonic()
    try:

        def scheduled_run() -> dict[str, Any] | None:
            runs = [r for r in stack.runs_of(CATCH_UP_DAG) if r["dag_run_id"] not in before]
            done = [r for r in runs if r["state"] in ("success", "failed")]
            return done[0] if done else None

        run = wait_until(scheduled_run, 240, "a scheduled catch-up run", poll_s=2)
    finally:
        stack.set_paused(CATCH_UP_DAG, True)
    took = time.monotonic() - unpaused
    states = {
        f"{ti['task_id']}[{ti['rendered_map_index'] or ti['map_index']}]": ti["state"]
        for ti in stack.task_instances(CATCH_UP_DAG, run["dag_run_id"])
    }
    assert run["run_type"] == "scheduled", run
    assert run["state"] == "success", (states, stack.diagnostics(run["dag_run_id"]))
    with open_client(stack.qdrant) as client:
        (mirrored,) = client.retrieve("docs_v1", [written], with_vectors=True)
    old = expected_vector(OLD_MODEL, text, "", DIMENSIONS)
    assert mirrored.payload == {"text": text}
    assert max(abs(a - b) for a, b in zip(mirrored.vector, old, strict=True)) < 1e-6  # type: ignore[arg-type]
    # The run is a row of the Postgres metadata DB, as the scheduler wrote it.
    dsn = stack.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("+psycopg2", "")
    with contextlib.closing(psycopg2.connect(dsn)) as db, db.cursor() as cursor:
        cursor.execute(
            "SELECT run_type, state FROM dag_run WHERE dag_id = %s AND run_id = %s",
            (CATCH_UP_DAG, run["dag_run_id"]),
        )
        row = cursor.fetchone()
    assert row == ("scheduled", "success"), row
    note(
        f"catch-up DAG: scheduled run {run['dag_run_id']} ({CATCH_UP_SCHEDULE}) {run['state']} "
        f"{took:.0f} s after unpausing, in Postgres' dag_run table; tasks {states}; the "
        "point written after the swap is in the old collection with the old model's vector"
    )


def test_a_killed_worker_s_task_resumes_on_the_other(
    celery_stack: CeleryStack, source_texts: dict[str, list[dict[str, Any]]]
) -> None:
    """SIGKILL the worker running a partition, mid-partition: Airflow fails the task when
    its heartbeats stop, retries it on the other worker, and the retry resumes from the
    checkpoint; the texts embedded twice are one sub-batch at most."""
    stack = celery_stack
    stack.standin.reset()
    stack.standin.latency_s = 1.0  # a sub-batch a second: the kill lands mid-partition
    batch_size = 10
    conf = migration_conf(
        "slow", points_per_partition=1000, batch_size=batch_size, embed_concurrency=1
    )
    run_id = new_run_id("kill")
    stack.trigger(DAG_ID, run_id, conf)
    spec = MigrationSpec.from_params(conf)
    migration_id = spec.migration_id("slow_v1")

    def progress() -> int:
        with open_client(stack.qdrant) as client:
            found = list(Checkpoints(QdrantStateStore(client)).of(migration_id))
        return max((checkpoint.done_points for checkpoint in found), default=0)

    # Kill right after a checkpoint moved, while the next sub-batch is being embedded.
    wait_until(lambda: progress() >= 2 * batch_size, 240, "two sub-batches checkpointed", 0.5)
    seen = progress()
    wait_until(lambda: progress() > seen, 30, "the next checkpoint", poll_s=0.05)
    (first_try,) = stack.executions(DAG_ID, run_id, "backfill_batch", 0, 1)
    killed = stack.kill_worker(first_try)
    killed_at = time.time()
    stack.standin.latency_s = 0.05  # the kill has landed: the rest may go fast
    at_kill = progress()
    (survivor,) = set(WORKERS) - {first_try}

    def retried() -> list[dict[str, Any]] | None:
        tries = stack.tries(DAG_ID, run_id, "backfill_batch", 0)
        return tries if tries[-1]["state"] == "success" else None

    tries = wait_until(retried, 240, "backfill_batch[0] retried to success", poll_s=2)
    retried_after = float(as_seconds(tries[-1]["start_date"]) or 0) - killed_at
    second = stack.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}"
    second = second / "task_id=backfill_batch" / "map_index=0" / "attempt=2.log"
    resumed = [line for line in second.read_text().splitlines() if "Resuming" in line]
    result = stack.xcom(run_id, "backfill_batch", 0)
    texts = {r["text"] for r in source_texts["slow"]}
    embedded = documents_embedded(stack, texts)
    twice = sum(1 for count in embedded.values() if count > 1)
    note(
        f"kill: {first_try} SIGKILLed ({killed} processes) with the partition at "
        f"{at_kill}/{SOURCES['slow']} points; try 2 ran on {survivor} "
        f"{retried_after:.0f} s after the kill and resumed at {at_kill}; texts embedded "
        f"twice: {twice} (one sub-batch is {batch_size})"
    )
    assert 2 * batch_size <= at_kill < SOURCES["slow"]  # mid-partition
    assert [t["state"] for t in tries] == ["failed", "success"], tries
    assert stack.executions(DAG_ID, run_id, "backfill_batch", 0, 2) == [survivor]
    # The retry started from the checkpoint the killed try left, not from the beginning.
    assert len(resumed) == 1 and f"({at_kill} done)" in resumed[0], resumed
    assert result["resumed"] is True
    assert set(embedded) == texts  # every text embedded
    assert twice <= batch_size, embedded
