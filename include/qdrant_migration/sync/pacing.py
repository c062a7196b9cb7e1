"""How fast a migration writes to Qdrant, and what the cluster's searches felt meanwhile.

A backfill or catch-up task asks its :class:`QdrantPacer` before every write. The pacer

* paces writes to its share of ``qdrant_budget.points_per_second`` (:class:`WriteThrottle`,
  the generic cell rate algorithm: write *n* starts no earlier than the points before it
  allow, so any window of *T* seconds holds at most ``rate * T`` points plus one write),
  in writes of at most :attr:`QdrantPacer.chunk` points: with *k* tasks writing at once,
  each writes ``batch_size / k`` at a time, and what the cluster sees from all of them
  stays within the budget plus one sub-batch, with no coordination between workers. The
  reads that feed the writes go in pieces of the same size, no faster than the writes
  (:meth:`QdrantPacer.paced_reads`): a read of many stored vectors holds a server as long
  as a write of as many, and the pipeline's read-ahead would otherwise read several
  sub-batches in a burst at the start;
* searches the source every ``probe_interval_s`` as the application does
  (:class:`SourceProbe`), records the latency (:class:`LatencyHistogram`: the evidence in
  the report and on the migrations page) and, in the adaptive mode, feeds it to
  :class:`Aimd`, which starts one step above nothing (not at the ceiling: the probes
  report a burst only once it has hurt), halves the rate when a probe is slower than
  ``max_search_p99_ms`` and adds a step back while they are not.

Nothing is paced without a budget; probes run anyway, every second, for the evidence.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration import codec
from include.qdrant_migration.budget import QdrantBudget
from include.qdrant_migration.qdrant import PointId

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], None]
#: A page of a scroll: its records and the offset that follows it (None: the last page).
Page = tuple[list[qm.Record], PointId | None]

#: Histogram buckets grow by 5%: a percentile read from them is within 2.5% of the truth.
_GROWTH = 1.05
_SMALLEST_MS = 0.05
#: The write rate is measured over this many recent seconds.
RATE_WINDOW_S = 5.0
#: Probe queries: the top this many, as a typical application search.
PROBE_LIMIT = 10
#: Sample vectors the probes cycle through (read once from the source).
PROBE_VECTORS = 16


@dataclass
class LatencyHistogram:
    """Latencies in log-spaced buckets: mergeable across tasks, a few hundred bytes in JSON."""

    counts: dict[str, int] = field(default_factory=dict)
    max_ms: float = 0.0

    def add(self, ms: float) -> None:
        bucket = 0 if ms <= _SMALLEST_MS else int(math.log(ms / _SMALLEST_MS, _GROWTH)) + 1
        self.counts[str(bucket)] = self.counts.get(str(bucket), 0) + 1
        self.max_ms = max(self.max_ms, ms)

    def merge(self, other: LatencyHistogram) -> LatencyHistogram:
        counts = dict(self.counts)
        for bucket, n in other.counts.items():
            counts[bucket] = counts.get(bucket, 0) + n
        return LatencyHistogram(counts, max(self.max_ms, other.max_ms))

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile in ms (the middle of its bucket); None without samples."""
        total = self.count
        if not total:
            return None
        rank, seen = max(1, math.ceil(q * total)), 0
        for bucket in sorted(self.counts, key=int):
            seen += self.counts[bucket]
            if seen >= rank:
                index = int(bucket)
                if index == 0:
                    return _SMALLEST_MS
                middle = _SMALLEST_MS * float(_GROWTH ** (index - 0.5))
                return round(min(middle, self.max_ms), 2)
        return round(self.max_ms, 2)

    def percentiles(self) -> dict[str, float | None]:
        return {"p50": self.quantile(0.5), "p95": self.quantile(0.95), "p99": self.quantile(0.99)}

    def to_dict(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "max_ms": round(self.max_ms, 3)}


class WriteThrottle:
    """At most ``rate`` points per second (None: no limit), for one task's writes.

    The generic cell rate algorithm: each write is scheduled at the theoretical arrival
    time the previous ones left (``tat``), and moves it on by ``points / rate``. A window of
    *T* seconds then holds at most ``rate * T`` points plus the one write that opened it.
    It starts paced (``tat`` one write ahead): a task that takes over a pool slot adds no
    burst to the window its predecessor wrote in. The rate may change at any time
    (:class:`Aimd`); the writes already scheduled keep their slots.
    """

    def __init__(
        self,
        rate: float | None,
        *,
        first_write: int = 1,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        self._rate = rate
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        now = clock()
        self._started = now
        self._tat = now + (first_write / rate if rate else 0.0)
        self._recent: deque[tuple[float, int]] = deque()
        self.points = 0
        self.waited_s = 0.0

    @property
    def rate(self) -> float | None:
        return self._rate

    def set_rate(self, rate: float | None) -> None:
        with self._lock:
            self._rate = rate

    def acquire(self, points: int) -> float:
        """Wait until ``points`` may be written; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            start = max(now, self._tat) if self._rate else now
            if self._rate:
                self._tat = start + points / self._rate
            self._recent.append((start, points))
            self.points += points
            wait = start - now
            self.waited_s += wait
        if wait > 0:
            self._sleep(wait)
        return wait

    def recent_rate(self) -> float:
        """Points per second written (or scheduled) over the last :data:`RATE_WINDOW_S`, or
        since the throttle was made when that is shorter (at least a second): a task seconds
        old is not taken for one writing a fraction of its rate."""
        with self._lock:
            now = self._clock()
            while self._recent and self._recent[0][0] < now - RATE_WINDOW_S:
                self._recent.popleft()
            span = min(RATE_WINDOW_S, max(1.0, now - self._started))
            return sum(n for _, n in self._recent) / span


class Aimd:
    """Additive increase, multiplicative decrease of a throttle's rate by probe latency.

    ``max_search_p99_ms`` bounds a tail, so the signal is a single probe slower than it
    (a median of probes stays low while one query in fifty waits behind the migration).
    Over the target: the rate halves, from what is really written when that is lower (a
    limit far above the real rate would take many halvings to bite), then holds for
    ``window`` probes so the effect can show. Under it: a step up per probe, up to the
    ceiling: 5% of the ceiling (or of the fastest rate seen) until the first back-off, as
    a task starts (one step up, :meth:`start`) and climbs to the rate the cluster takes;
    1% after it, so that the rate stays near where searches slowed down instead of
    overshooting again and again. Without a ceiling, pacing ends once the rate is twice
    what is really written.
    """

    STEP = 0.05
    #: The step once a back-off has shown where the cluster's limit is: a slow probe then
    #: comes about every 2 * SETTLED_STEP * ceiling / rate probes (a few percent of them).
    SETTLED_STEP = 0.01
    DECREASE = 0.5

    @classmethod
    def start(cls, ceiling: float | None, floor: float) -> float | None:
        """The rate to start at: one step of the ceiling (at least the floor), not the
        ceiling itself, so that a task begins gently and finds its rate by the probes'
        latency instead of with a burst the probes would only report afterwards. Without
        a ceiling: no limit until the probes ask for one."""
        if ceiling is None:
            return None
        return min(ceiling, max(floor, cls.STEP * ceiling))

    def __init__(
        self,
        throttle: WriteThrottle,
        *,
        target_ms: float,
        ceiling: float | None,
        floor: float,
        window: int = 3,
    ) -> None:
        self.throttle = throttle
        self.target_ms, self.ceiling, self.floor = target_ms, ceiling, floor
        self.window = window
        self._hold = 0
        self._fastest = 0.0
        self.backoffs = 0
        self.lowest: float | None = throttle.rate
        self._warned = False

    def observe(self, ms: float) -> None:
        written = self.throttle.recent_rate()
        self._fastest = max(self._fastest, written)
        if self._hold:  # the probes right after a back-off still feel the rate before it
            self._hold -= 1
        elif ms > self.target_ms:
            self._back_off(written, ms)
        else:
            self._speed_up(written)

    def _back_off(self, written: float, signal: float) -> None:
        rate = self.throttle.rate
        base = min(rate, written) if rate and written > 0 else (rate or written)
        slower = max(self.floor, (base or self.floor) * self.DECREASE)
        if rate is not None and slower >= rate and rate <= self.floor:
            if not self._warned:
                log.warning(
                    "Probe searches of the source take %.1f ms, over the budget's %.1f ms, even "
                    "at the floor of %.3g points/s: the cluster is slow without this "
                    "migration's writes. Raise max_search_p99_ms or lower min_points_per_second.",
                    signal,
                    self.target_ms,
                    self.floor,
                )
                self._warned = True
            return
        self.throttle.set_rate(slower)
        self.backoffs += 1
        self._hold = self.window
        self.lowest = slower if self.lowest is None else min(self.lowest, slower)
        log.info(
            "Probe searches at %.1f ms (budget %.1f ms): writing at %.3g points/s",
            signal,
            self.target_ms,
            slower,
        )

    def _speed_up(self, written: float) -> None:
        rate = self.throttle.rate
        if rate is None:
            return
        reference = self.ceiling or max(self._fastest, self.floor)
        faster = rate + (self.SETTLED_STEP if self.backoffs else self.STEP) * reference
        if self.ceiling is not None:
            self.throttle.set_rate(min(self.ceiling, faster))
        elif faster >= 2 * max(written, self.floor):
            self.throttle.set_rate(None)  # the writes are slower than the limit: lift it
        else:
            self.throttle.set_rate(faster)


@dataclass(frozen=True)
class ProbeTarget:
    """What probes search: the collection the application is served from, and its vector."""

    collection: str
    vector_name: str | None


def probe_vectors(client: QdrantClient, target: ProbeTarget) -> list[list[float]]:
    """A few stored vectors of the source, as query vectors like the application's."""
    using: bool | list[str] = [target.vector_name] if target.vector_name else True
    points, _ = client.scroll(target.collection, limit=PROBE_VECTORS, with_vectors=using)
    found = []
    for point in points:
        vector: Any = point.vector
        if isinstance(vector, dict):
            vector = vector.get(target.vector_name or "")
        if isinstance(vector, list) and vector and isinstance(vector[0], float):
            found.append(vector)
    return found


def search_once(
    client: QdrantClient, target: ProbeTarget, vector: list[float], clock: Clock = time.perf_counter
) -> float:
    """One probe search (approximate, top 10, no payload); its latency in ms."""
    started = clock()
    client.query_points(
        target.collection,
        query=vector,
        using=target.vector_name,
        limit=PROBE_LIMIT,
        with_payload=False,
    )
    return (clock() - started) * 1000


def measure_at_rest(
    client: QdrantClient, target: ProbeTarget, probes: int = 30
) -> LatencyHistogram:
    """The source's search latency before the migration writes anything (the plan's baseline)."""
    histogram = LatencyHistogram()
    vectors = probe_vectors(client, target)
    for i in range(probes if vectors else 0):
        histogram.add(search_once(client, target, vectors[i % len(vectors)]))
    return histogram


class SourceProbe:
    """A thread searching the source every ``interval_s``; each latency goes to ``observe``."""

    def __init__(
        self,
        client: QdrantClient,
        target: ProbeTarget,
        interval_s: float,
        observe: Callable[[float], None],
    ) -> None:
        self.client, self.target, self.interval_s = client, target, interval_s
        self.observe = observe
        self.failed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        vectors = probe_vectors(self.client, self.target)
        if not vectors:
            return
        self._thread = threading.Thread(
            target=self._run, args=(vectors,), name="source-probe", daemon=True
        )
        self._thread.start()

    def _run(self, vectors: list[list[float]]) -> None:
        i = 0
        while not self._stop.wait(self.interval_s):
            try:
                self.observe(search_once(self.client, self.target, vectors[i % len(vectors)]))
            except Exception as error:  # a probe must never fail the migration
                self.failed += 1
                log.info("Probe search of %s failed: %s", self.target.collection, error)
            i += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


@dataclass(frozen=True)
class PacingSummary:
    """What a task's pacing did and what its probes saw: part of its result and checkpoint."""

    budget: str = ""
    points: int = 0
    waited_s: float = 0.0
    probes: int = 0
    failed_probes: int = 0
    latency: dict[str, Any] = field(default_factory=dict)
    backoffs: int = 0
    lowest_rate: float | None = None

    @property
    def histogram(self) -> LatencyHistogram:
        return codec.decode(LatencyHistogram, self.latency, "latency")

    def merge(self, other: PacingSummary) -> PacingSummary:
        lows = [r for r in (self.lowest_rate, other.lowest_rate) if r is not None]
        return PacingSummary(
            budget=self.budget or other.budget,
            points=self.points + other.points,
            waited_s=round(self.waited_s + other.waited_s, 3),
            probes=self.probes + other.probes,
            failed_probes=self.failed_probes + other.failed_probes,
            latency=self.histogram.merge(other.histogram).to_dict()
            if self.latency or other.latency
            else {},
            backoffs=self.backoffs + other.backoffs,
            lowest_rate=min(lows) if lows else None,
        )


class QdrantPacer:
    """One task's Qdrant budget: :meth:`acquire` before each write, probes while running."""

    def __init__(
        self,
        budget: QdrantBudget,
        *,
        chunk: int,
        probe: ProbeTarget | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.budget = budget
        #: Points per write (and per read) while paced (whole sub-batches when not).
        self.chunk = max(1, chunk) if budget.paces else 0
        self.probe = probe
        ceiling = budget.points_per_second
        floor = budget.min_points_per_second or max(1.0, chunk / 10)
        adaptive = budget.max_search_p99_ms is not None
        self.throttle = WriteThrottle(
            Aimd.start(ceiling, floor) if adaptive else ceiling,
            first_write=max(1, chunk),
            clock=clock,
            sleep=sleep,
        )
        #: Reads go no faster than the writes may (the rate follows the write limit): the
        #: pipeline's read-ahead would otherwise read several sub-batches at once at start.
        self.reads = WriteThrottle(ceiling, first_write=0, clock=clock, sleep=sleep)
        self.aimd: Aimd | None = None
        if budget.max_search_p99_ms is not None:
            self.aimd = Aimd(
                self.throttle, target_ms=budget.max_search_p99_ms, ceiling=ceiling, floor=floor
            )
        self.histogram = LatencyHistogram()
        self._lock = threading.Lock()
        self._probe: SourceProbe | None = None

    def acquire(self, points: int) -> None:
        self.throttle.acquire(points)

    def read_size(self, page: int) -> int:
        """Points per read: pieces of :attr:`chunk` while paced (a read of many points holds
        the server's attention as long as a write of as many), else whole pages."""
        return min(page, self.chunk) if self.chunk else page

    def paced_reads(self, pieces: Iterator[Page], page: int) -> Iterator[Page]:
        """``pieces`` (pages of :meth:`read_size` and the offset after each, the last one's
        None) read no faster than the writes may go, and joined back into pages of ``page``
        points (a sub-batch embeds at once)."""
        if not self.chunk:
            yield from pieces
            return
        joined: list[qm.Record] = []
        while True:
            self.reads.set_rate(self.throttle.rate)
            self.reads.acquire(self.chunk)
            piece = next(pieces, None)
            if piece is None:
                return
            records, following = piece
            joined += records
            if following is None or len(joined) >= page:
                yield joined, following
                joined = []
            if following is None:
                return

    def pieces(self, total: int) -> Iterator[slice]:
        """``range(total)`` in writes of at most :attr:`chunk` points (one write unpaced)."""
        step = self.chunk or max(total, 1)
        for start in range(0, total, step):
            yield slice(start, min(total, start + step))

    def _observe(self, ms: float) -> None:
        with self._lock:
            self.histogram.add(ms)
        if self.aimd is not None:
            self.aimd.observe(ms)

    @contextmanager
    def probing(self, client: QdrantClient) -> Iterator[QdrantPacer]:
        """Probe the source while the block runs (nothing to probe: just run it)."""
        if self.probe is None:
            yield self
            return
        self._probe = SourceProbe(client, self.probe, self.budget.probe_every_s, self._observe)
        self._probe.start()
        try:
            yield self
        finally:
            self._probe.stop()

    def summary(self, earlier: PacingSummary | None = None) -> PacingSummary:
        """This task's pacing so far, added to what earlier tries of it recorded."""
        with self._lock:
            latency = self.histogram.to_dict()
            probes = self.histogram.count
        mine = PacingSummary(
            budget=self.budget.describe(),
            points=self.throttle.points,
            waited_s=round(self.throttle.waited_s, 3),
            probes=probes,
            failed_probes=self._probe.failed if self._probe is not None else 0,
            latency=latency,
            backoffs=self.aimd.backoffs if self.aimd is not None else 0,
            lowest_rate=self.aimd.lowest
            if self.aimd is not None
            else self.budget.points_per_second,
        )
        return earlier.merge(mine) if earlier is not None else mine


def pacer_for(
    budget: QdrantBudget, batch_size: int, *, served: ProbeTarget | None, ways: int = 1
) -> QdrantPacer:
    """The budget of one of ``ways`` tasks writing at once, probing ``served``.

    Each writes ``batch_size / ways`` points at a time at ``budget / ways``, so what the
    cluster sees from all of them together stays within the budget plus one sub-batch.
    """
    return QdrantPacer(budget.share(ways), chunk=math.ceil(batch_size / ways), probe=served)


def unpaced() -> QdrantPacer:
    """No budget and no probes (unit tests, and jobs built without a plan's budget)."""
    return QdrantPacer(QdrantBudget(max_indexing_threads=0), chunk=0)
