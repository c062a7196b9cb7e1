"""What the benchmark's parts share: the corpus, seeding a source, workers, statistics."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from itertools import cycle, islice
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration.layout import METADATA_KEY
from scripts.seeding import read_corpus

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "bench_v1"
ALIAS = "bench"
#: The backfill never reads the source's vectors: small dummy ones keep seeding cheap.
SOURCE_DIMENSION = 8
SEED_BATCH = 1000
#: Qdrant's default ``indexing_threshold`` (KB of vectors a segment holds before it is indexed).
INDEXING_THRESHOLD_KB = 10_000
#: Row i's source: vectors of a Matryoshka-trained model (OpenAI's, from the stand-in).
MATRYOSHKA_MODEL = "text-embedding-3-small"


def cycled_records(count: int) -> Iterator[dict[str, Any]]:
    """``count`` records cycling the demo corpus, the id appended so every text is distinct."""
    for point_id, record in enumerate(islice(cycle(list(read_corpus())), count), start=1):
        yield record | {"id": point_id, "text": f"{record['text']} [{point_id}]"}


def _dummy_vector(record: dict[str, Any]) -> list[float]:
    point_id = int(record["id"])
    return [((point_id >> i) & 7) / 8 + 0.125 for i in range(SOURCE_DIMENSION)]


def seed_source(
    client: QdrantClient,
    records: Sequence[dict[str, Any]] | Iterator[Any],
    *,
    size: int = SOURCE_DIMENSION,
    vector: Callable[[dict[str, Any]], list[float]] = _dummy_vector,
    metadata: dict[str, Any] | None = None,
    optimizers: qm.OptimizersConfigDiff | None = None,
) -> int:
    """A source collection behind the alias, with the records' payloads and ``vector`` of
    each (small dummy ones by default); ``metadata``: the collection's (its lineage)."""
    client.create_collection(
        SOURCE,
        vectors_config=qm.VectorParams(size=size, distance=qm.Distance.COSINE),
        metadata=metadata,
        optimizers_config=optimizers,
    )
    total = 0
    iterator = iter(records)
    while batch := list(islice(iterator, SEED_BATCH)):
        client.upsert(
            SOURCE,
            qm.Batch(
                ids=[r["id"] for r in batch],
                vectors=[vector(r) for r in batch],
                payloads=[{k: v for k, v in r.items() if k != "id"} for r in batch],
            ),
            wait=True,
        )
        total += len(batch)
    client.update_collection_aliases(
        change_aliases_operations=[
            qm.CreateAliasOperation(
                create_alias=qm.CreateAlias(collection_name=SOURCE, alias_name=ALIAS)
            )
        ]
    )
    return total


def seed_matryoshka_source(client: QdrantClient, count: int, dimensions: int) -> int:
    """A source of :data:`MATRYOSHKA_MODEL` vectors at ``dimensions`` of ``count`` corpus
    texts, with that lineage in its metadata (as this tool would have written it): asked for
    fewer dimensions of the same model, ``assess`` chooses Matryoshka truncation.

    The vectors are what the stand-in (like OpenAI) returns for each text at ``dimensions``,
    so the truncated ones are what it returns at fewer. Indexing is off during the load and
    on after it, so that one build indexes every vector (:func:`wait_indexed`): a build
    started during the load leaves the points written meanwhile unindexed, below the
    threshold that would start another.
    """
    from tests.standin import expected_vector

    lineage = {"provider": "openai", "model": MATRYOSHKA_MODEL, "dimensions": dimensions}
    seeded = seed_source(
        client,
        cycled_records(count),
        size=dimensions,
        vector=lambda r: expected_vector(MATRYOSHKA_MODEL, r["text"], "", dimensions),
        metadata={METADATA_KEY: lineage | {"migration_id": "bench-earlier"}},
        optimizers=qm.OptimizersConfigDiff(indexing_threshold=0),
    )
    client.update_collection(
        SOURCE, optimizers_config=qm.OptimizersConfigDiff(indexing_threshold=INDEXING_THRESHOLD_KB)
    )
    return seeded


def wait_indexed(
    client: QdrantClient, collection: str, points: int, timeout_s: float = 900
) -> None:
    """Until the store reports ``collection`` green with every vector indexed."""
    deadline = time.monotonic() + timeout_s
    while True:
        info = client.get_collection(collection)
        if info.status == qm.CollectionStatus.GREEN and (info.indexed_vectors_count or 0) >= points:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{collection} was not indexed after {timeout_s:.0f} s: {info.status}"
            )
        time.sleep(0.2)


def seed_ids(client: QdrantClient, count: int) -> int:
    """A source behind the alias with ``count`` points and no payload: for id-only work."""
    records = ({"id": point_id} for point_id in range(1, count + 1))
    return seed_source(client, records)


def drop_migration(client: QdrantClient) -> None:
    """Forget every migration (targets, state): the next run starts from scratch."""
    for collection in client.get_collections().collections:
        if collection.name != SOURCE:
            client.delete_collection(collection.name)


def _worker_env(env: dict[str, str] | None) -> dict[str, str]:
    return (
        dict(os.environ)
        | (env or {})
        | {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )


def run_worker(
    job: str,
    config: dict[str, Any],
    *,
    env: dict[str, str] | None = None,
    timeout_s: float = 900,
) -> dict[str, Any]:
    """Run ``python -m bench.worker job`` in a fresh process; its last stdout line is JSON."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.worker", job, json.dumps(config)],
        cwd=ROOT,
        env=_worker_env(env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"bench worker {job!r} failed ({done.returncode}):\n{done.stderr[-4000:]}"
        )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


class BackgroundWorker:
    """``python -m bench.worker job`` running beside the measured work until :meth:`stop`.

    The job prints one line when it is ready, answers each line on its stdin with one
    (:meth:`ask`), and prints its JSON result once its stdin closes (:meth:`stop`).
    """

    def __init__(self, job: str, config: dict[str, Any]) -> None:
        self.job = job
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.worker", job, json.dumps(config)],
            cwd=ROOT,
            env=_worker_env(None),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        if not self.process.stdout.readline():
            self.stop()

    def __enter__(self) -> BackgroundWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:  # left by an error: the result is not wanted
            self.process.kill()
            self.process.communicate()

    def ask(self) -> dict[str, Any]:
        """What the job has to report so far: it answers each line on its stdin with one."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            return self.stop()  # it died: stop() says why
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stop(self, timeout_s: float = 60) -> dict[str, Any]:
        out, err = self.process.communicate(timeout=timeout_s)
        if self.process.returncode != 0 or not out.strip():
            raise RuntimeError(
                f"bench worker {self.job!r} failed ({self.process.returncode}):\n{err[-4000:]}"
            )
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))
