"""``make bench``: the backfill's throughput and memory, measured side by side in one run.

Rows (each measured in this run, nothing carried over):

a. backfill vs tokens/min cap: the stand-in (300 ms per request) enforces a tokens/min
   cap over a short window; the backfill's ``openai`` provider has the same cap and
   window. The fraction of the cap it sustains is read from the stand-in's request log
   over the steady state (after the first window, whose burst the cap allows).
b. sequential scroll-embed-upsert loop (the tutorial pattern) on the same corpus and
   stand-in: texts/s of the backfill's steady state over the loop's.
c. backfill vs raw local model: multilingual-e5-small embedding the same texts in the
   same batch size, raw and through the backfill, alternately; ratio of the medians.
d. peak RSS of the backfill process at 10k vs 100k points, against the Qdrant façade
   (the store's data lives in the façade's process) with a zero-latency stand-in.
e. throughput vs ``embed_concurrency`` (1 to 8, 16 in the full profile) with a 300 ms
   stand-in and no cap: texts/s at each level over ``level`` x texts/s at 1 (1.0 is
   linear); the row is the worst level up to 8.
g. backfill points/s with an instant provider, 4 partitions at once (as the DAG maps
   them), over the store's own bulk-ingest rate of the same points with ready vectors and
   4 parallel upsert streams, at 20k points (100k and 1M in the full profile).
h. bulk-load deferral: seconds to load ready vectors (4 upsert streams) and have them
   indexed (green, every vector indexed), with indexing kept off during the load and
   restored after (as the backfill does) vs left on; the row is without / with.
f. partition planning (every id read once) at 10k, 100k (and 1M in the full profile)
   points: seconds per point at the largest size over seconds per point at the smallest
   (1.0 is linear).
i. serving during a no-embed backfill: a source of text-embedding-3-small vectors at 512
   dims (20k points, 100k in the full profile), HNSW-indexed, is truncated to 256 dims
   (Matryoshka, 4 partition processes) while a reader process searches it at 20 queries/s;
   p99 of the reader's latency during the backfill over p99 at rest (windows before each
   backfill, pooled), without the ``qdrant_budget`` and with it (adaptive, from that
   at-rest p99), alternated over rounds. The row is the ratio with the budget; without
   it, in its details.

The machine is shared and noisy: rows a/b, c and i alternate their two sides over several
rounds and report medians. ``--quick`` runs fewer and smaller rounds (~5 minutes, 3 of them
row i's, whose budgeted backfill is slow on purpose).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient

from bench.common import (
    ALIAS,
    MATRYOSHKA_MODEL,
    SOURCE,
    BackgroundWorker,
    cycled_records,
    drop_migration,
    median,
    run_worker,
    seed_ids,
    seed_matryoshka_source,
    seed_source,
    wait_indexed,
)
from include.qdrant_migration.providers.packing import ApproximateCounter, tiktoken_counter
from include.qdrant_migration.sync.pacing import LatencyHistogram
from tests.qdrant_server import running_server
from tests.standin.server import OPENAI_KEY, RequestRecord, StandIn

RESULTS = Path(__file__).resolve().parent / "results.md"
#: The façade reports the installed client's version: the modern (1.17+) write path, and
#: no client/server version-skew warnings.
SERVER_VERSION = importlib.metadata.version("qdrant-client")
OPENAI_MODEL = "text-embedding-3-small"
EMBEDDINGS = "/v1/embeddings"


@dataclass(frozen=True)
class Profile:
    """Sizes and settings of one benchmark run."""

    name: str
    rounds: int  # rounds of rows a/b (sequential, then backfill)
    steady_s: float  # target length of the backfill's steady state in row a
    sequential_points: int
    local_texts: int
    local_rounds: int
    rss_sizes: tuple[int, int]
    concurrency_levels: tuple[int, ...] = (1, 2, 4, 8)
    concurrency_steady_s: float = 5.0
    plan_sizes: tuple[int, ...] = (10_000, 100_000)
    ingest_sizes: tuple[int, ...] = (20_000,)
    load_points: int = 20_000
    load_dimensions: int = 128
    latency_s: float = 0.3
    tokens_per_minute: float = 1_800_000
    window_s: float = 6.0
    batch_size: int = 128
    #: Sub-batches in flight (embed_concurrency) = requests in flight (max_concurrency).
    concurrency: int = 4
    #: Target vector size (text-embedding-3 shortens vectors); keeps the façade's JSON light.
    dimensions: int = 256
    rss_dimensions: int = 64
    #: Row i: points of the Matryoshka source, rounds (without and with the budget, in
    #: alternating order), and seconds of each at-rest window.
    reads_points: int = 20_000
    reads_rounds: int = 1
    rest_s: float = 10.0


FULL = Profile(
    "full",
    rounds=3,
    steady_s=30.0,
    sequential_points=2048,
    local_texts=512,
    local_rounds=4,
    rss_sizes=(10_000, 100_000),
    concurrency_levels=(1, 2, 4, 8, 16),
    concurrency_steady_s=10.0,
    plan_sizes=(10_000, 100_000, 1_000_000),
    ingest_sizes=(100_000, 1_000_000),
    load_points=100_000,
    load_dimensions=384,
    reads_points=100_000,
    reads_rounds=2,
    rest_s=20.0,
)
QUICK = Profile(
    "quick",
    rounds=1,
    steady_s=12.0,
    sequential_points=1024,
    local_texts=256,
    local_rounds=2,
    rss_sizes=(4_000, 40_000),
)


@dataclass
class Row:
    metric: str
    measured: float
    target: float
    higher_is_better: bool = True
    details: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        if self.higher_is_better:
            return self.measured >= self.target
        return self.measured <= self.target

    def cells(self) -> list[str]:
        sign = "≥" if self.higher_is_better else "≤"
        return [
            self.metric,
            f"{self.measured:.3f}",
            f"{sign} {self.target:g}",
            "yes" if self.passed else "NO",
        ]


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- reading the stand-in's log ------------------------------------------------------------


def _embedding_requests(standin: StandIn, since: float) -> list[RequestRecord]:
    """Successful embedding requests received at or after ``since`` (monotonic clock)."""
    records = [r for r in standin.requests(EMBEDDINGS, status=200) if r.started >= since]
    return sorted(records, key=lambda r: r.started)


def steady_rate(
    records: Sequence[RequestRecord], *, skip_s: float, measure: Callable[[RequestRecord], int]
) -> tuple[float, float]:
    """Rate of ``measure`` over ``[first + skip_s, last)`` by request arrival; and its length.

    The last request only closes the interval (what it carries is not counted), and the
    first one counted is the first that arrives inside it: neither edge is favoured.
    """
    if len(records) < 3:
        raise RuntimeError(f"Too few requests ({len(records)}) to measure a steady rate.")
    start = records[0].started + skip_s
    end = records[-1].started
    if end - start < 1.0:
        raise RuntimeError(f"The steady state lasted {end - start:.2f} s: run more texts.")
    total = sum(measure(r) for r in records if start <= r.started < end)
    return total / (end - start), end - start


# -- rows a and b ----------------------------------------------------------------------


def _texts_for_tokens(tokens: float) -> int:
    """How many cycled texts carry ``tokens`` tokens (counted as the stand-in counts them)."""
    counter = tiktoken_counter("cl100k_base") or ApproximateCounter(3.0)
    total = count = 0
    for record in cycled_records(10**7):
        total += counter.count([record["text"]])[0]
        count += 1
        if total >= tokens:
            return count
    return count


def _openai_worker(
    qdrant_url: str, standin: StandIn, dimensions: int, batch_size: int
) -> dict[str, Any]:
    """A worker's config for the ``openai`` provider pointed at the stand-in."""
    return {
        "qdrant_url": qdrant_url,
        "base_url": standin.openai_base_url,
        "api_key": OPENAI_KEY,
        "provider": "openai",
        "model": OPENAI_MODEL,
        "dimensions": dimensions,
        "batch_size": batch_size,
    }


def _capped(standin: StandIn, profile: Profile) -> None:
    """A fresh stand-in (empty log and window) with the profile's latency and cap."""
    standin.reset()
    standin.latency_s = profile.latency_s
    standin.set_limits(tokens_per_minute=profile.tokens_per_minute, window_s=profile.window_s)


def rows_cap_and_sequential(
    profile: Profile, standin: StandIn, qdrant_url: str, client: QdrantClient
) -> list[Row]:
    allowance = profile.tokens_per_minute * profile.window_s / 60
    tokens = allowance + profile.tokens_per_minute / 60 * profile.steady_s
    count = _texts_for_tokens(tokens)
    log(f"rows a/b: seeding {count} points ({tokens:,.0f} tokens)")
    seed_source(client, cycled_records(count))
    base = _openai_worker(qdrant_url, standin, profile.dimensions, profile.batch_size)
    backfill_config = base | {
        "embed_concurrency": profile.concurrency,
        "options": {
            "tokens_per_minute": profile.tokens_per_minute,
            "rate_window_s": profile.window_s,
            "max_concurrency": profile.concurrency,
        },
    }
    fractions: list[float] = []
    speedups: list[float] = []
    sequential_tokens: list[float] = []
    details: list[str] = []
    cap_per_s = profile.tokens_per_minute / 60
    for round_no in range(1, profile.rounds + 1):
        drop_migration(client)
        _capped(standin, profile)
        seq = run_worker("sequential", base | {"limit": profile.sequential_points})
        seq_requests = _embedding_requests(standin, seq["started"])
        seq_texts, _ = steady_rate(seq_requests, skip_s=0.0, measure=lambda r: r.n_texts)
        seq_tokens, _ = steady_rate(seq_requests, skip_s=0.0, measure=lambda r: r.tokens)
        seq_429 = len(standin.requests(EMBEDDINGS, status=429))
        sequential_tokens.append(seq_tokens)

        drop_migration(client)
        _capped(standin, profile)
        run = run_worker("backfill", backfill_config)
        requests = _embedding_requests(standin, run["started"])
        tokens_s, steady_len = steady_rate(
            requests, skip_s=profile.window_s, measure=lambda r: r.tokens
        )
        texts_s, _ = steady_rate(requests, skip_s=profile.window_s, measure=lambda r: r.n_texts)
        refused = len(standin.requests(EMBEDDINGS, status=429))
        fractions.append(tokens_s / cap_per_s)
        speedups.append(texts_s / seq_texts)
        details.append(
            f"round {round_no}: backfill {run['points']} pts in {run['seconds']:.1f} s, "
            f"steady {steady_len:.1f} s at {tokens_s:,.0f} tok/s ({texts_s:.0f} texts/s), "
            f"{refused} x 429, limiter waited {run['limiter'].get('waited_s', 0):.1f} s; "
            f"sequential {seq['points']} pts at {seq_texts:.0f} texts/s "
            f"({seq_tokens:,.0f} tok/s, {seq_429} x 429)"
        )
        log(details[-1])
    cap_row = Row(
        "a. backfill vs tokens/min cap: fraction of the cap sustained (steady state)",
        median(fractions),
        0.90,
        details=[
            f"cap {profile.tokens_per_minute:,.0f} tokens/min over a {profile.window_s:g} s window "
            f"(stand-in and provider `rate_window_s` alike), stand-in latency "
            f"{profile.latency_s * 1000:.0f} ms, batch {profile.batch_size}, "
            f"embed_concurrency = max_concurrency = {profile.concurrency}, "
            f"{OPENAI_MODEL} at {profile.dimensions} dims; per-round fractions "
            + ", ".join(f"{f:.3f}" for f in fractions),
            *details,
        ],
    )
    ideal = cap_per_s / median(sequential_tokens)
    seq_row = Row(
        "b. backfill / sequential scroll-embed-upsert loop (tutorial pattern): texts/s",
        median(speedups),
        1.0,
        details=[
            "no target was set for this row beyond beating the loop; at this cap the ideal "
            f"(cap-bound) ratio is about {ideal:.2f}; per-round ratios "
            + ", ".join(f"{s:.2f}" for s in speedups)
        ],
    )
    drop_migration(client)
    return [cap_row, seq_row]


# -- row c -----------------------------------------------------------------------------


def row_local_model(profile: Profile) -> Row:
    log(
        f"row c: multilingual-e5-small, {profile.local_texts} texts x {profile.local_rounds} rounds"
    )
    result = run_worker(
        "local",
        {
            "provider": "local",
            "model": "multilingual-e5-small",
            "texts": profile.local_texts,
            "rounds": profile.local_rounds,
            "batch_size": profile.batch_size,
            "embed_concurrency": 1,
        },
        # The model's OpenMP threads otherwise spin-wait between parallel regions. On a
        # shared machine that spinning took ~30% of the raw side's CPU (the model runs on
        # the main thread there, in a pool thread in the backfill) and made the backfill
        # look faster than the model itself; passive waiting treats both sides alike.
        env={"OMP_WAIT_POLICY": "PASSIVE"},
    )
    texts = result["texts"]
    raw = [texts / s for s in result["raw_seconds"]]
    backfill = [texts / s for s in result["backfill_seconds"]]
    pairs = [b / r for b, r in zip(backfill, raw, strict=True)]
    cpu = median(result["raw_cpu_seconds"]) / median(result["backfill_cpu_seconds"])
    row = Row(
        "c. backfill vs raw local model (multilingual-e5-small): throughput ratio",
        median(backfill) / median(raw),
        0.90,
        details=[
            f"{texts} corpus texts per side and round, {len(raw)} rounds in ABBA order, batch "
            f"{profile.batch_size}, embed_concurrency 1 (the model's C engine already uses "
            "every core), in-process store, OMP_WAIT_POLICY=PASSIVE; texts/s raw "
            + ", ".join(f"{r:.1f}" for r in raw)
            + "; backfill "
            + ", ".join(f"{b:.1f}" for b in backfill)
            + "; per-round ratios "
            + ", ".join(f"{p:.2f}" for p in pairs)
            + f"; CPU-time ratio raw/backfill {cpu:.3f} (less sensitive to other tenants)"
        ],
    )
    log(row.details[0])
    return row


# -- row d -----------------------------------------------------------------------------


def row_peak_rss(profile: Profile, standin: StandIn, server: Any, client: QdrantClient) -> Row:
    small, large = profile.rss_sizes
    config = _openai_worker(server.url, standin, profile.rss_dimensions, profile.batch_size) | {
        "embed_concurrency": 2
    }
    peaks: dict[int, list[int]] = {small: [], large: []}
    details: list[str] = []
    for size in (small, large, small):
        server.reset()
        standin.reset()  # no latency, no caps, empty log
        started = time.monotonic()
        seed_source(client, cycled_records(size))
        seeded = time.monotonic() - started
        run = run_worker("backfill", config)
        peaks[size].append(run["peak_rss"])
        server_rss = server.stats()["rss_bytes"]
        details.append(
            f"{size:,} pts: seeded in {seeded:.1f} s, backfill {run['seconds']:.1f} s "
            f"({run['points'] / run['seconds']:.0f} pts/s, one partition), peak RSS "
            f"{run['peak_rss'] / 2**20:.0f} MiB (after imports {run['rss_imported'] / 2**20:.0f}"
            f" MiB, before the backfill {run['rss_before_backfill'] / 2**20:.0f} MiB); "
            f"façade RSS {server_rss / 2**20:.0f} MiB"
        )
        log(details[-1])
    server.reset()
    standin.reset()
    ratio = median(peaks[large]) / median(peaks[small])
    return Row(
        f"d. peak RSS of the backfill process, {large // 1000}k / {small // 1000}k points",
        ratio,
        1.20,
        higher_is_better=False,
        details=[
            f"{OPENAI_MODEL} at {profile.rss_dimensions} dims from a zero-latency stand-in, "
            f"batch {profile.batch_size}, embed_concurrency 2; store in the façade process",
            *details,
        ],
    )


# -- rows e and f ----------------------------------------------------------------------

#: Texts per request in row e: small requests reach a steady state quickly.
SWEEP_BATCH = 32


def row_concurrency(profile: Profile, standin: StandIn, server: Any, client: QdrantClient) -> Row:
    rates: dict[int, float] = {}
    details: list[str] = []
    per_stream = SWEEP_BATCH / profile.latency_s  # texts/s one request stream can carry
    for level in profile.concurrency_levels:
        count = max(1000, int(level * per_stream * (profile.concurrency_steady_s + 2)))
        server.reset()
        standin.reset()
        standin.latency_s = profile.latency_s
        seed_source(client, cycled_records(count))
        run = run_worker(
            "backfill",
            _openai_worker(server.url, standin, profile.rss_dimensions, SWEEP_BATCH)
            | {
                "embed_concurrency": level,
                "options": {"max_concurrency": level},
            },
        )
        requests = _embedding_requests(standin, run["started"])
        rates[level], steady = steady_rate(requests, skip_s=1.0, measure=lambda r: r.n_texts)
        details.append(
            f"embed_concurrency {level}: {count:,} pts, {rates[level]:.0f} texts/s over a "
            f"{steady:.1f} s steady state ({rates[level] / (level * rates[1]):.2f} of linear)"
        )
        log(details[-1])
    server.reset()
    standin.reset()
    worst = min(rates[c] / (c * rates[1]) for c in rates if c <= 8)
    return Row(
        "e. throughput vs embed_concurrency, worst level up to 8: share of linear",
        worst,
        0.85,
        details=[
            f"{profile.latency_s * 1000:.0f} ms per request, {SWEEP_BATCH} texts per request, "
            "no cap; the stand-in's request log gives texts/s after the first second",
            *details,
        ],
    )


def row_planning(profile: Profile, server: Any, client: QdrantClient) -> Row:
    per_point: dict[int, float] = {}
    details: list[str] = []
    for size in profile.plan_sizes:
        server.reset()
        seeded = time.monotonic()
        seed_ids(client, size)
        seeded = time.monotonic() - seeded
        run = run_worker("plan", {"qdrant_url": server.url, "points_per_partition": 50_000})
        per_point[size] = run["seconds"] / size
        details.append(
            f"{size:,} pts (seeded in {seeded:.1f} s): planned {run['partitions']} partitions "
            f"in {run['seconds']:.2f} s ({run['seconds'] / size * 1e6:.1f} µs per point)"
        )
        log(details[-1])
    server.reset()
    small, large = min(per_point), max(per_point)
    return Row(
        f"f. partition planning, {large // 1000}k / {small // 1000}k points: time per point",
        per_point[large] / per_point[small],
        1.5,
        higher_is_better=False,
        details=details,
    )


#: Parallel partitions of row g, and the store's parallel upsert streams beside them.
STREAMS = 4


def row_ingest(profile: Profile, server: Any, client: QdrantClient) -> Row:
    ratios: list[float] = []
    details: list[str] = []
    for size in profile.ingest_sizes:
        server.reset()
        seed_source(client, cycled_records(size))
        common = {
            "qdrant_url": server.url,
            "dimensions": profile.rss_dimensions,
            "batch_size": profile.batch_size,
            "parallel": STREAMS,
        }
        store = run_worker("ingest", common)
        ours = run_worker(
            "backfill",
            common
            | {
                "provider": "instant",
                "model": "instant",
                "embed_concurrency": 2,
                "points_per_partition": -(-size // STREAMS),
            },
        )
        store_rate = store["points"] / store["seconds"]
        our_rate = ours["points"] / ours["seconds"]
        ratios.append(our_rate / store_rate)
        details.append(
            f"{size:,} pts: backfill {our_rate:,.0f} pts/s ({ours['partitions']} partitions), "
            f"store bulk ingest {store_rate:,.0f} pts/s ({STREAMS} streams of "
            f"{profile.batch_size}): {ratios[-1]:.2f}"
        )
        log(details[-1])
    server.reset()
    return Row(
        "g. backfill with an instant provider / the store's own bulk ingest: points/s",
        min(ratios),
        0.8,
        details=details,
    )


def row_deferral(profile: Profile, server: Any) -> Row:
    times: dict[bool, list[float]] = {True: [], False: []}
    details: list[str] = []
    for deferred in (False, True, False, True):  # alternated: the machine is noisy
        server.reset()
        run = run_worker(
            "load",
            {
                "qdrant_url": server.url,
                "points": profile.load_points,
                "dimensions": profile.load_dimensions,
                "batch_size": profile.batch_size,
                "parallel": STREAMS,
                "deferred": deferred,
            },
        )
        times[deferred].append(run["total_s"])
        details.append(
            f"{'deferred' if deferred else 'indexing on'}: loaded in {run['load_s']:.1f} s, "
            f"green and indexed after {run['total_s']:.1f} s"
        )
        log(details[-1])
    server.reset()
    return Row(
        "h. load and index, indexing left on / deferred during the load: seconds",
        median(times[False]) / median(times[True]),
        1.0,
        details=[
            f"{profile.load_points:,} random {profile.load_dimensions}-d vectors, "
            f"{STREAMS} streams of {profile.batch_size}, indexing_threshold 1000 KB",
            *details,
        ],
    )


# -- row i -----------------------------------------------------------------------------

#: Row i's source and target sizes (text-embedding-3-small, truncated by the migration).
READS_SOURCE_DIMENSIONS = 512
READS_TARGET_DIMENSIONS = 256
#: The application beside the migration: queries/s (open loop) against the source.
READS_RATE = 20.0
#: The budget a production user would write: the p99 they see at rest (their monitoring's
#: number) with some headroom as ``max_search_p99_ms``, under a ceiling on points/s.
BUDGET_HEADROOM = 1.25
BUDGET_CEILING = 1000
#: Seconds between dropping the last migration and the next at-rest window.
SETTLE_S = 2.0


def _latencies_ms(samples: Sequence[Sequence[float]], start: float, end: float) -> list[float]:
    """Latency from when each query was due, of the queries due in ``[start, end)``."""
    return [(answered - due) * 1000 for due, _, answered in samples if start <= due < end]


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class ReadSide:
    """One backfill of row i beside the reader, and the at-rest window just before it."""

    budgeted: bool
    budget: dict[str, Any]
    rest: list[float]
    during: list[float]
    run: dict[str, Any]

    @property
    def p99(self) -> float:
        return _percentile(self.during, 0.99)

    @property
    def rate(self) -> float:
        return float(self.run["points"] / self.run["seconds"])

    def limit(self) -> float:
        """The write limit over the run: each task's median, summed."""
        return sum(median([r for _, r in rates]) for rates in self.run["rates"] if rates)

    def line(self) -> str:
        pacing = self.run["pacing"]
        probes = LatencyHistogram.from_dict(pacing.get("latency")).quantile(0.99)
        said = (
            f"budget {json.dumps(self.budget)}: AIMD backed off {sum(self.run['backoffs'])} "
            f"times (per task {self.run['backoffs']}), limit {self.limit():,.0f} pts/s "
            f"(the tasks' medians summed), a task's lowest {pacing.get('lowest_rate') or 0:.1f}"
            f" pts/s, waited {pacing['waited_s']:.0f} task-s"
            if self.budgeted
            else "no budget"
        )
        rest_p99 = _percentile(self.rest, 0.99)
        return (
            f"{said}: at rest just before p50 {_percentile(self.rest, 0.5):.1f} / p99 "
            f"{rest_p99:.1f} ms ({len(self.rest)} queries); during the backfill p50 "
            f"{_percentile(self.during, 0.5):.1f} / p99 {self.p99:.1f} ms, max "
            f"{max(self.during):.0f} ms ({len(self.during)} queries; {self.p99 / rest_p99:.2f}x "
            f"that window); {self.run['points']:,} pts in {self.run['seconds']:.1f} s "
            f"({self.rate:,.0f} pts/s); the tasks' probes p99 {probes or 0:.1f} ms"
        )


def _read_side(
    reader: BackgroundWorker,
    client: QdrantClient,
    config: dict[str, Any],
    budgeted: bool,
    rest_s: float,
    rested: list[float],
) -> ReadSide:
    """An at-rest window (added to ``rested``), then the backfill (without or with the
    budget) beside the reader."""
    drop_migration(client)  # the target and the state: the migration starts from scratch
    # Dropping holds the server for a few hundred ms, and the reader's queries due
    # meanwhile go out late: let that pass and forget those queries.
    time.sleep(SETTLE_S)
    reader.ask()
    time.sleep(rest_s)
    rest = [(a - due) * 1000 for due, _, a in reader.ask()["samples"]]
    rested += rest
    budget: dict[str, Any] = {}
    if budgeted:
        target = round(_percentile(rested, 0.99) * BUDGET_HEADROOM, 1)
        budget = {"points_per_second": BUDGET_CEILING, "max_search_p99_ms": target}
    run = run_worker("backfill", config | {"qdrant_budget": budget})
    during = _latencies_ms(reader.ask()["samples"], run["started"], run["finished"])
    side = ReadSide(budgeted, budget, rest, during, run)
    log(side.line())
    return side


def row_reads(profile: Profile, standin: StandIn, server: Any, client: QdrantClient) -> Row:
    size = profile.reads_points
    server.reset()
    standin.reset()
    started = time.monotonic()
    seed_matryoshka_source(client, size, READS_SOURCE_DIMENSIONS)
    seeded = time.monotonic() - started
    wait_indexed(client, SOURCE, size)
    indexed = time.monotonic() - started - seeded
    log(f"row i: {size:,} points seeded in {seeded:.1f} s, indexed in {indexed:.1f} s more")
    config = _openai_worker(server.url, standin, READS_TARGET_DIMENSIONS, profile.batch_size) | {
        "embed_concurrency": 2,
        "parallel": STREAMS,
        "points_per_partition": -(-size // STREAMS),
    }
    sides: dict[bool, list[ReadSide]] = {False: [], True: []}
    details: list[str] = []
    rested: list[float] = []
    reading = {"qdrant_url": server.url, "collection": ALIAS, "rate": READS_RATE}
    with BackgroundWorker("reader", reading) as reader:
        for round_no in range(1, profile.reads_rounds + 1):
            # Alternated: whichever side runs second does not always meet the same drift.
            for budgeted in (False, True) if round_no % 2 else (True, False):
                side = _read_side(reader, client, config, budgeted, profile.rest_s, rested)
                sides[budgeted].append(side)
                details.append(f"round {round_no}, {side.line()}")
        reader.stop()
    drop_migration(client)
    server.reset()
    without, with_budget = sides[False], sides[True]
    at_rest = _percentile(rested, 0.99)
    rate_without = median([s.rate for s in without])
    rate_with = median([s.rate for s in with_budget])
    return Row(
        "i. source's search p99 during a no-embed backfill (Matryoshka truncation) with the "
        "budget / at rest",
        median([s.p99 / at_rest for s in with_budget]),
        1.5,
        higher_is_better=False,
        details=[
            f"{size:,} points of {MATRYOSHKA_MODEL} at {READS_SOURCE_DIMENSIONS} dims (the "
            f"stand-in's vectors of the corpus texts), HNSW-indexed; truncated to "
            f"{READS_TARGET_DIMENSIONS} by {STREAMS} partition processes, batch "
            f"{profile.batch_size}; a reader process searches the source at {READS_RATE:g} "
            "queries/s (open loop, latency from when each query was due, top 10). At rest: "
            f"the {len(rested)} queries of the {profile.rest_s:g} s windows before each "
            "backfill, pooled (one window is a noisy p99 on a shared machine). The budget is "
            f"max_search_p99_ms = {BUDGET_HEADROOM:g} x the p99 at rest measured so far, "
            f"under points_per_second {BUDGET_CEILING}",
            f"at rest: p50 {_percentile(rested, 0.5):.1f} ms, p99 {at_rest:.1f} ms; p99 during "
            "the backfill without the budget "
            + ", ".join(f"{s.p99:.1f} ms ({s.p99 / at_rest:.2f}x)" for s in without)
            + ", with it "
            + ", ".join(f"{s.p99:.1f} ms ({s.p99 / at_rest:.2f}x)" for s in with_budget)
            + f"; backfill {rate_without:,.0f} pts/s without, {rate_with:,.0f} with "
            f"({rate_with / rate_without:.0%} of it; medians)",
            *details,
        ],
    )


# -- the table -------------------------------------------------------------------------


def render(rows: Sequence[Row], profile: Profile, seconds: float) -> str:
    lines = [
        "| metric | measured | target | pass |",
        "| --- | --- | --- | --- |",
        *("| " + " | ".join(row.cells()) + " |" for row in rows),
    ]
    notes = [
        "",
        f"Profile `{profile.name}`, measured in one run of {seconds / 60:.1f} min "
        f"({time.strftime('%Y-%m-%d %H:%M')}).",
        "",
    ]
    for row in rows:
        notes.append(f"- **{row.metric.split(':')[0]}**")
        notes += [f"  - {d}" for d in row.details]
    return "\n".join(lines + notes) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller, single rounds (~5 min)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="markdown file to write")
    parser.add_argument(
        "--rows", default="abcdefghi", help="which rows to measure (letters, default all)"
    )
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    started = time.monotonic()
    rows: list[Row] = []
    with StandIn() as standin, running_server(version=SERVER_VERSION) as server:
        client = QdrantClient(url=server.url, timeout=300)
        try:
            if {"a", "b"} & set(args.rows):
                rows += rows_cap_and_sequential(profile, standin, server.url, client)
            if "c" in args.rows:
                rows.append(row_local_model(profile))
            if "d" in args.rows:
                rows.append(row_peak_rss(profile, standin, server, client))
            if "e" in args.rows:
                rows.append(row_concurrency(profile, standin, server, client))
            if "f" in args.rows:
                rows.append(row_planning(profile, server, client))
            if "g" in args.rows:
                rows.append(row_ingest(profile, server, client))
            if "h" in args.rows:
                rows.append(row_deferral(profile, server))
            if "i" in args.rows:
                rows.append(row_reads(profile, standin, server, client))
        finally:
            client.close()
    table = render(rows, profile, time.monotonic() - started)
    print(table)
    args.out.write_text(table, encoding="utf-8")
    return 0 if all(row.passed for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
