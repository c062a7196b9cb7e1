"""The measured processes: ``python -m bench.worker <job> '<json config>'``.

Each job runs in a fresh process (its memory is its own, its clock is the system's
monotonic clock, shared with the stand-in's request log) and prints one JSON line.

* ``backfill``: the migration as the DAG runs it (assess, create_target, plan_partitions,
  PartitionBackfill over every partition, or PartitionTransform where the strategy derives
  the vectors, e.g. Matryoshka truncation; with ``qdrant_budget``, paced and probing as
  backfill_batch does) against a Qdrant URL, with the ``openai`` provider pointed at the
  stand-in. Reports the backfill's window, its pacing and the process's peak RSS.
* ``sequential``: the tutorial loop (scroll a page, embed it with the OpenAI SDK, upsert
  it, repeat) on the same source and stand-in.
* ``ingest``: the store's own bulk-ingest rate (ready vectors, parallel upsert streams).
* ``load``: ready vectors loaded and indexed, with indexing deferred during the load or not.
* ``plan``: partition planning of the source (every id read once), timed.
* ``reader``: searches the source at a steady rate until told to stop, every query's
  latency with its time (the application beside a migration, row i).
* ``local``: rounds alternating the raw local model (``embed_documents`` batch by batch)
  and the backfill with the same model, texts and batch size, on an in-process store.
"""

from __future__ import annotations

import json
import multiprocessing
import queue
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import psutil
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from bench.common import ALIAS, SOURCE, drop_migration, seed_source, wait_indexed
from include.qdrant_migration import codec, collections, compatibility
from include.qdrant_migration.plan import Plan
from include.qdrant_migration.providers import (
    Credentials,
    EmbeddingProvider,
    ModelInfo,
    ProviderLimits,
    get_provider,
)
from include.qdrant_migration.qdrant import QdrantSettings, open_client
from include.qdrant_migration.spec import MigrationSpec
from include.qdrant_migration.state import QdrantStateStore
from include.qdrant_migration.strategies import strategy_of
from include.qdrant_migration.sync import partitions
from include.qdrant_migration.sync.backfill import (
    BackfillSettings,
    BackfillSummary,
    PartitionJob,
    PartitionResult,
)
from scripts.seeding import read_corpus

CONN_ID = "bench_standin"


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


def _cpu_s() -> float:
    """CPU seconds of this process so far, every thread counted."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux


def _spec(config: dict[str, Any], points_per_partition: int) -> MigrationSpec:
    return MigrationSpec.from_params(
        {
            "alias": ALIAS,
            "provider": config["provider"],
            "model": config["model"],
            "dimensions": config.get("dimensions"),
            "provider_conn_id": CONN_ID if config["provider"] != "local" else None,
            "provider_options": config.get("options", {}),
            "points_per_partition": points_per_partition,
            "batch_size": config["batch_size"],
            "embed_concurrency": config["embed_concurrency"],
            "qdrant_budget": config.get("qdrant_budget") or {},
        }
    )


class InstantProvider(EmbeddingProvider):
    """A provider that answers at once (a cheap vector per text): the backfill's own
    overhead, with the embedding taken out."""

    name: ClassVar[str] = "instant"
    needs_connection: ClassVar[bool] = False

    @property
    def limits(self) -> ProviderLimits:
        return ProviderLimits(max_inputs_per_request=2048)

    def model_info(self) -> ModelInfo:
        return ModelInfo(self.model, native_dimension=self.requested_dimensions or 64)

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        return [instant_vector(len(t), self.dimension) for t in texts]

    def embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        return self.embed_documents(texts)


def instant_vector(seed: int, size: int) -> list[float]:
    return [((seed >> (i % 16)) & 7) / 8 + 0.125 for i in range(size)]


def _provider(config: dict[str, Any]) -> EmbeddingProvider:
    if config["provider"] == "instant":
        return InstantProvider(config["model"], dimensions=config.get("dimensions"))
    credentials = None
    if config["provider"] != "local":
        credentials = Credentials(
            conn_id=CONN_ID, api_key=config["api_key"], base_url=config["base_url"]
        )
    return get_provider(
        config["provider"],
        config["model"],
        dimensions=config.get("dimensions"),
        options=config.get("options", {}),
        credentials=credentials,
    )


def migrate(
    client: QdrantClient, config: dict[str, Any], provider: EmbeddingProvider
) -> dict[str, Any]:
    """assess -> create_target -> plan_partitions -> every partition's backfill, timed.

    With ``parallel`` > 1 the partitions run at once in as many processes, as the DAG's
    mapped tasks run on their workers (each its own interpreter, client and provider).
    """
    state = QdrantStateStore(client)
    total = client.count(ALIAS, exact=True).count
    spec = _spec(config, int(config.get("points_per_partition") or max(total, 1)))
    plan = compatibility.assess(client, spec, provider, state)
    collections.create_target(client, plan, state)
    parts = partitions.partitions_for(client, state, plan)
    rss_before = _rss()
    parallel = int(config.get("parallel", 1))
    if parallel > 1:
        runs = in_processes(
            parallel,
            _backfill_partition,
            [(config, codec.encode_dict(plan), part) for part in parts],
        )
        started, finished = min(r["started"] for r in runs), max(r["finished"] for r in runs)
        cpu = sum(r["cpu_seconds"] for r in runs)
        results = [codec.decode(PartitionResult, r["result"]) for r in runs]
        rates = [r["rates"] for r in runs]
    else:
        rates = []
        started, cpu = time.monotonic(), _cpu_s()
        results = [
            _partition_job(client, config, plan, part, state, provider).run() for part in parts
        ]
        finished, cpu = time.monotonic(), _cpu_s() - cpu
    summary = BackfillSummary.of(results)
    return {
        "started": started,
        "finished": finished,
        "seconds": finished - started,
        "cpu_seconds": cpu,
        "points": summary.embedded + summary.transformed + summary.skipped,
        "embedded": summary.embedded,
        "partitions": len(parts),
        "rss_before_backfill": rss_before,
        "target": plan.target_collection,
        "strategy": plan.strategy.value,
        "pacing": codec.encode_dict(summary.pacing),
        "backoffs": [r.pacing.backoffs for r in results],
        "rates": rates,
    }


def _partition_job(
    client: QdrantClient,
    config: dict[str, Any],
    plan: Plan,
    part: partitions.Partition,
    state: QdrantStateStore,
    provider: EmbeddingProvider | None,
) -> PartitionJob:
    """One partition's job as ``backfill_batch`` builds it: a transform for the strategies
    that derive vectors, else the backfill with ``provider``. With ``qdrant_budget`` in the
    config, its pacer too (the budget's share, probing what the alias serves)."""
    strategy = strategy_of(plan)
    job = strategy.backfill_job(
        client, part, state, BackfillSettings.of(plan), lambda: provider or _provider(config)
    )
    if "qdrant_budget" in config:
        job.pacer = strategy.pacer(client, ways=plan.spec.parallel_tasks(part.of))
    return job


# -- work spread over processes, timed from when all are ready ----------------------------

_start_line: Any = None


def _join_start_line(barrier: Any) -> None:
    global _start_line
    _start_line = barrier


def ready() -> None:
    """Wait until every process of :func:`in_processes` has set up: the clock starts now."""
    _start_line.wait()


def in_processes(
    count: int, job: Callable[..., dict[str, Any]], calls: list[tuple[Any, ...]]
) -> list[dict[str, Any]]:
    """``job(*call)`` for each call, ``count`` processes at once (fresh interpreters).

    Each job sets up (imports, clients, its data), calls :func:`ready`, then does the
    timed work and reports ``started``/``finished`` (the system's monotonic clock, shared
    by every process). Jobs beyond ``count`` wait for a free process: only the first
    ``count`` meet at the start line.
    """
    context = multiprocessing.get_context("spawn")
    start_line = context.Barrier(min(count, len(calls)))
    with ProcessPoolExecutor(
        count, mp_context=context, initializer=_join_start_line, initargs=(start_line,)
    ) as processes:
        return list(processes.map(job, *zip(*calls, strict=True)))


def _backfill_partition(
    config: dict[str, Any], plan_dict: dict[str, Any], part: partitions.Partition
) -> dict[str, Any]:
    plan = codec.decode(Plan, plan_dict)
    provider = None if plan.strategy.derives_vectors else _provider(config)
    with open_client(QdrantSettings(url=config["qdrant_url"], timeout=300)) as client:
        job = _partition_job(client, config, plan, part, QdrantStateStore(client), provider)
        ready()
        started, cpu = time.monotonic(), _cpu_s()
        with _rates_of(job) as rates:
            result = job.run()
        return {
            "started": started,
            "finished": time.monotonic(),
            "cpu_seconds": _cpu_s() - cpu,
            "result": codec.encode_dict(result),
            "rates": rates,
        }


@contextmanager
def _rates_of(job: PartitionJob, every_s: float = 0.5) -> Iterator[list[tuple[float, float]]]:
    """``[time, rate]`` of the job's write limit every ``every_s`` while the block runs (0:
    no limit): how the adaptive budget moved."""
    rates: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(every_s):
            rates.append((time.monotonic(), job.pacer.throttle.rate or 0.0))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield rates
    finally:
        stop.set()
        sampler.join()


def backfill(config: dict[str, Any]) -> dict[str, Any]:
    provider = _provider(config)
    rss_imported = _rss()
    with open_client(QdrantSettings(url=config["qdrant_url"], timeout=300)) as client:
        result = migrate(client, config, provider)
    stats = getattr(provider, "limiter_stats", None)
    return result | {
        "rss_imported": rss_imported,
        "peak_rss": _peak_rss(),
        "limiter": stats() if callable(stats) else {},
    }


def sequential(config: dict[str, Any]) -> dict[str, Any]:
    """The loop of Qdrant's "migrate to a new embedding model" tutorial, one step at a time."""
    import openai

    sdk = openai.OpenAI(api_key=config["api_key"], base_url=config["base_url"])
    client = QdrantClient(url=config["qdrant_url"], timeout=300)
    target = f"{SOURCE}__sequential"
    client.create_collection(
        target,
        vectors_config=qm.VectorParams(size=config["dimensions"], distance=qm.Distance.COSINE),
    )
    limit = int(config["limit"])
    offset: Any = None
    done = 0
    started = time.monotonic()
    while done < limit:
        records, offset = client.scroll(
            ALIAS, limit=min(config["batch_size"], limit - done), offset=offset, with_payload=True
        )
        if not records:
            break
        answer = sdk.embeddings.create(
            model=config["model"],
            input=[(r.payload or {})["text"] for r in records],
            dimensions=config["dimensions"],
        )
        client.upsert(
            target,
            [
                qm.PointStruct(id=r.id, vector=item.embedding, payload=r.payload)
                for r, item in zip(records, answer.data, strict=True)
            ],
            wait=True,
        )
        done += len(records)
        if offset is None:
            break
    finished = time.monotonic()
    client.delete_collection(target)
    client.close()
    return {"started": started, "finished": finished, "seconds": finished - started, "points": done}


def _timed(action: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and CPU seconds (all threads) of ``action``."""
    started, cpu = time.perf_counter(), _cpu_s()
    action()
    return time.perf_counter() - started, _cpu_s() - cpu


def local(config: dict[str, Any]) -> dict[str, Any]:
    """Alternate the raw model and the backfill on the same texts; seconds of each round."""
    records = list(read_corpus(limit=int(config["texts"])))
    texts = [r["text"] for r in records]
    batch = int(config["batch_size"])
    provider = _provider(config)
    provider.embed_documents(texts[:batch])  # load and warm the model outside the timings

    def raw() -> None:
        for i in range(0, len(texts), batch):
            provider.embed_documents(texts[i : i + batch])

    client = QdrantClient(":memory:")
    seed_source(client, records)
    raw_s: list[float] = []
    raw_cpu: list[float] = []
    backfill_s: list[float] = []
    backfill_cpu: list[float] = []

    def through_raw() -> None:
        wall, cpu = _timed(raw)
        raw_s.append(wall)
        raw_cpu.append(cpu)

    def through_backfill() -> None:
        drop_migration(client)
        run = migrate(client, config, provider)
        backfill_s.append(run["seconds"])
        backfill_cpu.append(run["cpu_seconds"])

    for round_no in range(int(config["rounds"])):
        # ABBA order: whichever side runs second does not always meet the same drift.
        sides = (
            (through_raw, through_backfill)
            if round_no % 2 == 0
            else (through_backfill, through_raw)
        )
        for side in sides:
            side()
    client.close()
    return {
        "texts": len(texts),
        "raw_seconds": raw_s,
        "backfill_seconds": backfill_s,
        "raw_cpu_seconds": raw_cpu,
        "backfill_cpu_seconds": backfill_cpu,
    }


def ingest(config: dict[str, Any]) -> dict[str, Any]:
    """The store's own bulk-ingest rate: the source's points, with ready vectors, upserted
    into a new collection as batches of ``batch_size`` (wait=True) by ``parallel``
    processes at once, each over its share of the ids; no embedding, no bookkeeping."""
    size = int(config["dimensions"])
    target = f"{SOURCE}__ingest"
    parallel = int(config.get("parallel", 1))
    with open_client(QdrantSettings(url=config["qdrant_url"], timeout=300)) as client:
        client.create_collection(
            target, vectors_config=qm.VectorParams(size=size, distance=qm.Distance.COSINE)
        )
        total = client.count(ALIAS, exact=True).count
        share = -(-total // parallel)
        shares = [(config, target, 1 + k * share, 1 + (k + 1) * share) for k in range(parallel)]
        runs = in_processes(parallel, _ingest_share, shares)
        client.delete_collection(target)
    seconds = max(r["finished"] for r in runs) - min(r["started"] for r in runs)
    return {"seconds": seconds, "points": sum(r["points"] for r in runs)}


def _ingest_share(config: dict[str, Any], target: str, start: int, end: int) -> dict[str, Any]:
    """Upsert the points with ids in ``[start, end)`` (read before the clock starts)."""
    size, batch = int(config["dimensions"]), int(config["batch_size"])
    pages: list[qm.Batch] = []
    with open_client(QdrantSettings(url=config["qdrant_url"], timeout=300)) as client:
        offset: Any = start
        while offset is not None:
            records, offset = client.scroll(ALIAS, limit=batch, offset=offset, with_payload=True)
            records = [r for r in records if int(r.id) < end]
            if records:
                text = [str((r.payload or {}).get("text", "")) for r in records]
                pages.append(
                    qm.Batch(
                        ids=[r.id for r in records],
                        vectors=[instant_vector(len(t), size) for t in text],
                        payloads=[r.payload or {} for r in records],
                    )
                )
            if offset is not None and int(offset) >= end:
                break
        ready()
        started = time.monotonic()
        for page in pages:
            client.upsert(target, page, wait=True)
        return {
            "started": started,
            "finished": time.monotonic(),
            "points": sum(len(p.ids) for p in pages),
        }


def load(config: dict[str, Any]) -> dict[str, Any]:
    """Load ``points`` ready vectors into a new collection, ``parallel`` upsert streams, then
    wait until the store reports it green and fully indexed: with indexing deferred during
    the load (threshold 0, restored after, as the backfill does) or not."""
    size, count = int(config["dimensions"]), int(config["points"])
    deferred = bool(config["deferred"])
    threshold = int(config.get("indexing_threshold_kb", 1000))
    rng = np.random.default_rng(0)
    name = f"{SOURCE}__load"
    with open_client(QdrantSettings(url=config["qdrant_url"], timeout=300)) as client:
        client.create_collection(
            name,
            vectors_config=qm.VectorParams(size=size, distance=qm.Distance.COSINE),
            optimizers_config=qm.OptimizersConfigDiff(
                indexing_threshold=0 if deferred else threshold
            ),
        )
        batch = int(config["batch_size"])
        pages = [
            [
                qm.PointStruct(id=i, vector=rng.normal(size=size).tolist())
                for i in range(start, min(start + batch, count))
            ]
            for start in range(0, count, batch)
        ]
        started = time.monotonic()
        with ThreadPoolExecutor(int(config.get("parallel", 1))) as streams:
            list(streams.map(lambda page: client.upsert(name, page, wait=True), pages))
        loaded = time.monotonic()
        if deferred:
            client.update_collection(
                name, optimizers_config=qm.OptimizersConfigDiff(indexing_threshold=threshold)
            )
        wait_indexed(client, name, count)
        indexed = time.monotonic()
        client.delete_collection(name)
    return {"load_s": loaded - started, "total_s": indexed - started, "points": count}


def plan(config: dict[str, Any]) -> dict[str, Any]:
    """Time partition planning (reading every id once) of the source behind the alias."""
    with open_client(QdrantSettings(url=config["qdrant_url"], timeout=300)) as client:
        started = time.perf_counter()
        _, counts = partitions.compute_boundaries(
            client, SOURCE, int(config["points_per_partition"])
        )
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "points": sum(counts), "partitions": len(counts)}


#: Stored vectors the reader cycles through as its queries (spread over the ids).
READER_QUERIES = 200


def reader(config: dict[str, Any]) -> dict[str, Any]:
    """Search ``collection`` at ``rate`` queries/s as an application does, until stdin closes.

    Open loop: query *n* is due at ``start + n / rate`` whatever the earlier ones took, and
    its latency counts from when it was due. A slow answer delays the queries behind it,
    and that wait is counted, as the users behind it would count it (timing from the send
    instead would hide exactly the stalls this row is about). Queries are stored vectors,
    top 10 without payload (as the budget's probes search); one thread, one connection.

    Each line read from stdin asks for the samples so far: ``{"samples": [[due, sent,
    answered], ...]}`` (the system's monotonic clock) on a line of stdout, and they are
    forgotten; the last ones come as the job's result.
    """
    rate, collection = float(config["rate"]), str(config["collection"])
    with open_client(QdrantSettings(url=config["qdrant_url"], timeout=60)) as client:
        total = client.count(collection, exact=True).count
        ids = list(range(1, total + 1, max(1, total // READER_QUERIES)))[:READER_QUERIES]
        vectors = [p.vector for p in client.retrieve(collection, ids, with_vectors=True)]

        def search(n: int) -> None:
            client.query_points(
                collection, query=vectors[n % len(vectors)], limit=10, with_payload=False
            )

        for n in range(20):  # connection and caches warm, outside the samples
            search(n)
        asked: queue.Queue[bool] = queue.Queue()
        threading.Thread(target=_listen, args=(asked,), daemon=True).start()
        print(json.dumps({"ready": True}), flush=True)
        samples: list[tuple[float, float, float]] = []
        failed, n, start = 0, 0, time.monotonic()
        while True:
            due = start + n / rate
            try:
                more = asked.get(timeout=max(0.0, due - time.monotonic()))
            except queue.Empty:
                pass
            else:
                if not more:
                    break
                print(json.dumps({"samples": samples}), flush=True)
                samples = []
                continue
            sent = time.monotonic()
            try:
                search(n)
                samples.append((due, sent, time.monotonic()))
            except Exception:  # counted, and the schedule goes on
                failed += 1
            n += 1
    return {"samples": samples, "failed": failed, "queries": len(vectors)}


def _listen(asked: queue.Queue[bool]) -> None:
    """True for each line on stdin, then False once it closes."""
    for _ in sys.stdin:
        asked.put(True)
    asked.put(False)


JOBS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "backfill": backfill,
    "ingest": ingest,
    "load": load,
    "plan": plan,
    "sequential": sequential,
    "local": local,
    "reader": reader,
}


def main(argv: Sequence[str]) -> None:
    job, raw_config = argv
    result = JOBS[job](json.loads(raw_config))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
