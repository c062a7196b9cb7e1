"""The Qdrant budget's pacing: the bound on what the cluster sees, AIMD, the probe evidence.

Time is simulated (a clock that sleeping moves on), so the bounds are checked exactly and
fast; the backfill test runs the real loop on an embedded store with that clock.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Sequence
from typing import Any
from unittest.mock import Mock

import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration import codec
from include.qdrant_migration.budget import QdrantBudget
from include.qdrant_migration.providers import EmbeddingProvider
from include.qdrant_migration.state import QdrantStateStore
from include.qdrant_migration.strategies import plan_pacer
from include.qdrant_migration.sync.backfill import BackfillSummary, PartitionBackfill
from include.qdrant_migration.sync.pacing import (
    Aimd,
    LatencyHistogram,
    PacingSummary,
    ProbeTarget,
    QdrantPacer,
    WriteThrottle,
    measure_at_rest,
    unpaced,
)
from tests.qdrant_migration.helpers import prepare, settings_of
from tests.qdrant_migration.sync.support import fast_spec, hashed_memory_store


class Clock:
    """Simulated time: ``sleep`` moves it on, nothing else does."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.now += max(seconds, 0.0)

    def advance(self, seconds: float) -> None:
        self.sleep(seconds)


def _busiest_window(writes: Sequence[tuple[float, int]], window: float = 1.0) -> int:
    """The most points written in any ``window`` seconds (writes: (time, points))."""
    ordered = sorted(writes)
    best, total, start = 0, 0, 0
    for end in range(len(ordered)):
        total += ordered[end][1]
        while ordered[end][0] - ordered[start][0] >= window:
            total -= ordered[start][1]
            start += 1
        best = max(best, total)
    return best


def test_one_throttle_keeps_any_second_within_its_rate_plus_one_write() -> None:
    clock = Clock()
    throttle = WriteThrottle(200, first_write=32, clock=clock, sleep=clock.sleep)
    writes = []
    for _ in range(200):  # a writer faster than the budget
        throttle.acquire(32)
        writes.append((clock.now, 32))
        clock.advance(0.001)
    assert _busiest_window(writes) <= 200 + 32
    elapsed = writes[-1][0] - writes[0][0]
    assert elapsed == pytest.approx(199 * 32 / 200, abs=0.5)


def test_parallel_tasks_writing_their_shares_stay_within_the_budget_plus_one_sub_batch() -> None:
    """k tasks with no coordination, each at budget / k in writes of batch / k points, at
    random phases and with random write times: what the server sees in any second is at
    most the budget plus one sub-batch."""
    budget, batch = 300.0, 64
    for ways in (2, 3, 4):
        rng = random.Random(ways)
        share = QdrantBudget(points_per_second=budget).share(ways)
        chunk = math.ceil(batch / ways)
        writes: list[tuple[float, int]] = []
        for _ in range(ways):
            clock = Clock()
            clock.now += rng.uniform(0, 1)  # tasks start at different moments
            throttle = WriteThrottle(
                share.points_per_second, first_write=chunk, clock=clock, sleep=clock.sleep
            )
            for _ in range(120):
                throttle.acquire(chunk)
                writes.append((clock.now + rng.uniform(0, 0.02), chunk))  # the server sees it later
                clock.advance(rng.uniform(0.0, 0.05))  # the write itself, the next embedding
        assert _busiest_window(writes) <= budget + batch, ways


def test_a_paced_start_adds_no_burst_to_what_a_predecessor_wrote() -> None:
    clock = Clock()
    first = WriteThrottle(100, first_write=10, clock=clock, sleep=clock.sleep)
    writes = []
    for _ in range(10):
        first.acquire(10)
        writes.append((clock.now, 10))
    successor = WriteThrottle(100, first_write=10, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        successor.acquire(10)
        writes.append((clock.now, 10))
    assert _busiest_window(writes) <= 100 + 10


def test_no_rate_means_no_wait_and_the_rate_can_change_while_writing() -> None:
    clock = Clock()
    throttle = WriteThrottle(None, clock=clock, sleep=clock.sleep)
    assert sum(throttle.acquire(100) for _ in range(50)) == 0
    throttle.set_rate(50)
    throttle.acquire(50)
    assert throttle.acquire(50) == pytest.approx(1.0)
    assert throttle.points == 5100


def _aimd(clock: Clock, *, ceiling: float | None, rate: float | None) -> tuple[Aimd, WriteThrottle]:
    throttle = WriteThrottle(rate, clock=clock, sleep=clock.sleep)
    return Aimd(throttle, target_ms=20, ceiling=ceiling, floor=10), throttle


def _write_for(throttle: WriteThrottle, clock: Clock, seconds: float, points: int = 10) -> None:
    end = clock.now + seconds
    while clock.now < end:
        throttle.acquire(points)
        clock.advance(0.001)


def test_aimd_halves_when_probes_are_slow_and_steps_back_up_when_they_are_not() -> None:
    clock = Clock()
    aimd, throttle = _aimd(clock, ceiling=400, rate=400)
    _write_for(throttle, clock, 6)
    for _ in range(3):
        aimd.observe(50)  # a slow probe halves; the next ones still feel the old rate
    assert throttle.rate == pytest.approx(200)
    assert aimd.backoffs == 1
    for _ in range(3):  # held for a window of probes: the halving must show first
        aimd.observe(50)
    assert throttle.rate == pytest.approx(100) and aimd.backoffs == 2
    for _ in range(2):
        aimd.observe(5)  # the rest of the hold: not judged
    assert throttle.rate == pytest.approx(100)
    aimd.observe(5)
    # Once a back-off has shown where the limit is, the steps are small (1% of the ceiling).
    assert throttle.rate == pytest.approx(100 + Aimd.SETTLED_STEP * 400)
    for _ in range(200):
        aimd.observe(5)
    assert aimd.lowest == pytest.approx(100) and aimd.backoffs == 2
    assert throttle.rate == 400  # never above the ceiling


def test_one_slow_probe_among_fast_ones_is_enough_the_target_is_a_tail() -> None:
    """A p99 bound is broken by one query in fifty: a median of probes would not see it."""
    clock = Clock()
    aimd, throttle = _aimd(clock, ceiling=400, rate=400)
    _write_for(throttle, clock, 6)
    for ms in (5, 5, 5, 21, 5, 5):
        aimd.observe(ms)
    assert aimd.backoffs == 1 and throttle.rate == pytest.approx(200)


def test_aimd_halves_from_what_is_really_written_and_never_below_its_floor() -> None:
    clock = Clock()
    aimd, throttle = _aimd(clock, ceiling=10_000, rate=10_000)
    _write_for(throttle, clock, 6, points=1)  # the provider allows ~1000 points/s only
    written = throttle.recent_rate()
    assert written < 2000
    aimd.observe(100)  # one probe over twice the target is enough
    assert throttle.rate == pytest.approx(written / 2, rel=0.05)
    for _ in range(40):
        aimd.observe(100)
    assert throttle.rate == 10  # the floor


def test_a_task_seconds_old_is_not_taken_for_a_slow_one() -> None:
    """The written rate of a task younger than the rate window is over its own age: its
    first back-off halves what it really writes, not a fraction of it (down to the floor)."""
    clock = Clock()
    aimd, throttle = _aimd(clock, ceiling=400, rate=400)
    _write_for(throttle, clock, 1.5)  # 1.5 s at 400 points/s
    assert throttle.recent_rate() == pytest.approx(400, rel=0.05)
    aimd.observe(100)
    assert throttle.rate == pytest.approx(200, rel=0.05)


def test_the_adaptive_mode_starts_one_step_up_and_climbs_while_probes_are_fast() -> None:
    """No burst at the start: the probes only report one once it has hurt."""
    clock = Clock()
    pacer = QdrantPacer(
        QdrantBudget(points_per_second=1000, max_search_p99_ms=20),
        chunk=10,
        clock=clock,
        sleep=clock.sleep,
    )
    assert pacer.aimd is not None and pacer.throttle.rate == 1000 * Aimd.STEP
    for _ in range(round(1 / Aimd.STEP)):
        pacer.aimd.observe(5)
    assert pacer.throttle.rate == 1000  # then at the ceiling, never above
    fixed = QdrantPacer(QdrantBudget(points_per_second=1000), chunk=10)
    assert fixed.throttle.rate == 1000  # a fixed rate is what it says from the start
    floor = QdrantPacer(
        QdrantBudget(points_per_second=1000, max_search_p99_ms=20, min_points_per_second=200),
        chunk=10,
    )
    assert floor.throttle.rate == 200  # never below the floor
    assert QdrantPacer(QdrantBudget(max_search_p99_ms=20), chunk=10).throttle.rate is None


def test_aimd_at_its_floor_warns_once_that_the_cluster_is_slow_without_the_migration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    aimd, throttle = _aimd(clock, ceiling=None, rate=10)
    for _ in range(20):
        aimd.observe(500)
    assert throttle.rate == 10
    warnings = [r for r in caplog.records if "even at the floor" in r.getMessage()]
    assert len(warnings) == 1


def test_without_a_ceiling_the_limit_is_lifted_once_it_no_longer_bites() -> None:
    clock = Clock()
    aimd, throttle = _aimd(clock, ceiling=None, rate=None)
    _write_for(throttle, clock, 6, points=5)
    aimd.observe(100)
    assert throttle.rate is not None
    for _ in range(200):
        _write_for(throttle, clock, 0.05, points=5)
        aimd.observe(1)
    assert throttle.rate is None


def test_histogram_percentiles_are_within_a_few_percent_and_merge() -> None:
    rng = np.random.default_rng(3)
    samples = rng.lognormal(mean=1.5, sigma=0.6, size=4000)
    first, second = LatencyHistogram(), LatencyHistogram()
    for i, ms in enumerate(samples):
        (first if i % 2 else second).add(float(ms))
    merged = codec.decode(LatencyHistogram, first.merge(second).to_dict())
    assert merged.count == 4000
    for q in (0.5, 0.95, 0.99):
        assert merged.quantile(q) == pytest.approx(np.quantile(samples, q), rel=0.05)
    assert LatencyHistogram().quantile(0.99) is None


def test_pieces_split_a_sub_batch_only_while_paced() -> None:
    paced = QdrantPacer(QdrantBudget(points_per_second=100), chunk=30)
    assert [(s.start, s.stop) for s in paced.pieces(64)] == [(0, 30), (30, 60), (60, 64)]
    assert [(s.start, s.stop) for s in unpaced().pieces(64)] == [(0, 64)]
    assert list(unpaced().pieces(0)) == []


def test_summaries_of_partitions_add_up() -> None:
    one = PacingSummary(budget="b", points=10, waited_s=1.5, probes=2, backoffs=1, lowest_rate=50)
    two = PacingSummary(points=5, waited_s=0.5, probes=1, lowest_rate=20)
    both = one.merge(two)
    assert (both.points, both.waited_s, both.probes, both.backoffs, both.lowest_rate) == (
        15,
        2.0,
        3,
        1,
        20,
    )
    assert PacingSummary().merge(PacingSummary()) == PacingSummary()


def _backfill(
    client: QdrantClient,
    new_model: EmbeddingProvider,
    pacer: QdrantPacer,
    batch: int = 40,
    clock: Clock | None = None,
) -> tuple[Any, list[tuple[float, int]], list[tuple[float, int]]]:
    """The first partition backfilled with ``pacer``: its result, ``(time, points)`` of each
    write, and ``(time, points asked for)`` of each page read."""
    spec = fast_spec(batch_size=batch)
    state = QdrantStateStore(client)
    run = prepare(client, spec, new_model, state)
    writes: list[tuple[float, int]] = []
    reads: list[tuple[float, int]] = []
    job = PartitionBackfill(
        client, run.plan, run.partitions[0], new_model, state, settings_of(spec)
    )
    write, scroll = job.write, client.scroll

    def now() -> float:
        return clock() if clock else 0.0

    def write_logged(records: Any, vectors: Any) -> None:
        writes.append((now(), len(records)))
        write(records, vectors)

    def scroll_logged(collection: str, **kwargs: Any) -> Any:
        if kwargs.get("with_payload"):  # the partition's pages (not the probes' vectors)
            reads.append((now(), kwargs["limit"]))
        return scroll(collection, **kwargs)

    job.write = write_logged  # type: ignore[method-assign]
    client.scroll = scroll_logged  # type: ignore[method-assign]
    job.pacer = pacer
    return job.run(), writes, reads


def test_a_paced_backfill_reads_and_writes_in_pieces_at_its_rate_and_records_its_probes(
    corpus: list[dict[str, Any]], old_model: EmbeddingProvider, new_model: EmbeddingProvider
) -> None:
    client = hashed_memory_store(corpus[:200], old_model)
    clock = Clock()
    pacer = QdrantPacer(
        QdrantBudget(points_per_second=100, probe_interval_s=0.001),
        chunk=20,
        probe=ProbeTarget("articles_v1", None),
        clock=clock,
        sleep=clock.sleep,
    )
    started = clock.now
    result, writes, reads = _backfill(client, new_model, pacer, clock=clock)
    assert {n for _, n in writes} == {20} and sum(n for _, n in writes) == 100  # partition 0
    # Sub-batches of 40 are read in pieces of 20, and neither reads nor writes go faster
    # than 100 points/s: no read-ahead burst at the start either.
    assert {limit for _, limit in reads} == {20}
    assert _busiest_window(reads) <= 100 + 20 and _busiest_window(writes) <= 100 + 20
    # (The simulated clock adds up the waits of the reading and writing threads, which
    # overlap in real time: the run takes at least the budget's second, a little more here.)
    assert clock.now - started >= 100 / 100 - 0.2
    summary = result.pacing
    assert summary.points == 100 and summary.waited_s > 0
    assert summary.probes >= 1  # the probe thread searched the source meanwhile
    assert BackfillSummary.of([result]).pacing.probes == summary.probes


def test_an_unpaced_backfill_writes_whole_sub_batches(
    corpus: list[dict[str, Any]], old_model: EmbeddingProvider, new_model: EmbeddingProvider
) -> None:
    client = hashed_memory_store(corpus[:100], old_model)
    result, writes, reads = _backfill(client, new_model, unpaced())
    assert [n for _, n in writes] == [40, 40, 20] and {limit for _, limit in reads} == {40}
    assert result.pacing.probes == 0


def test_at_rest_probes_search_the_source_and_an_empty_one_gives_no_samples(
    corpus: list[dict[str, Any]], old_model: EmbeddingProvider
) -> None:
    client = hashed_memory_store(corpus[:50], old_model)
    assert measure_at_rest(client, ProbeTarget("articles_v1", None), probes=5).count == 5
    client.create_collection(
        "empty", vectors_config=client.get_collection("articles_v1").config.params.vectors
    )  # type: ignore[arg-type]
    assert measure_at_rest(client, ProbeTarget("empty", None)).count == 0


def test_a_plans_pacer_probes_what_the_alias_serves_and_nothing_on_the_embedded_store(
    corpus: list[dict[str, Any]], old_model: EmbeddingProvider, new_model: EmbeddingProvider
) -> None:
    client = hashed_memory_store(corpus[:20], old_model)
    spec = fast_spec(qdrant_budget={"points_per_second": 400})
    plan = prepare(client, spec, new_model, QdrantStateStore(client)).plan
    assert plan_pacer(client, plan).probe is None  # the embedded store serves nobody else
    server = Mock(spec=QdrantClient)
    server.get_aliases.return_value = qm.CollectionsAliasesResponse(
        aliases=[qm.AliasDescription(alias_name="articles", collection_name="articles_v2")]
    )
    pacer = plan_pacer(server, plan, ways=4)
    assert pacer.probe == ProbeTarget("articles_v2", plan.vector_name)  # after a swap, too
    assert pacer.throttle.rate == 100 and pacer.chunk == math.ceil(spec.batch_size / 4)
