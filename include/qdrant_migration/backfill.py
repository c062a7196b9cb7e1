"""backfill_batch: scroll one partition of the source, embed its texts, write the target.

The loop is a small pipeline: while the provider embeds the next sub-batches (up to
``embed_concurrency`` in flight), the task writes finished ones to Qdrant and reads more
from the source, so the provider stays busy and throughput is bounded by it, not by us.

The same loop serves the strategies that derive vectors from the stored ones instead of
embedding texts (``transform.PartitionTransform``): :class:`PartitionJob` holds reading,
writing, checkpoints and the summary; :class:`PartitionBackfill` embeds.

Every sub-batch is written with ``wait=True`` and only then is the checkpoint advanced, so a
killed worker repeats at most the sub-batches that were in flight, never skips one. Nothing
is held beyond the sub-batches in flight: memory is flat whatever the collection's size.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration.compatibility import Plan
from include.qdrant_migration.partitions import Partition, PointId
from include.qdrant_migration.providers import EmbeddingError, EmbeddingProvider
from include.qdrant_migration.qdrant import supports
from include.qdrant_migration.state import StateStore, now_iso
from include.qdrant_migration.texts import extract_text

log = logging.getLogger(__name__)


class BadTextError(ValueError):
    """A point has no usable text and bad_text_policy is 'fail'."""


@dataclass(frozen=True)
class BackfillSettings:
    batch_size: int = 128
    embed_concurrency: int = 2
    bad_text_policy: str = "skip"
    progress_interval_s: float = 30.0


@dataclass
class Batch:
    records: list[Any]
    skipped: list[tuple[PointId, str]]
    next_offset: PointId | None
    vectors: Future[list[list[float]]] | None
    tokens: int = 0
    truncated: int = 0
    #: Embedding calls this batch makes (0 when its vectors are derived from stored ones).
    requests: int = 0


@dataclass
class Progress:
    total: int
    done: int = 0
    embedded: int = 0
    transformed: int = 0
    tokens: int = 0
    truncated: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    last_log: float = field(default_factory=time.monotonic)

    def line(self, label: str) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.done / elapsed
        left = max(self.total - self.done, 0)
        eta = f"{left / rate:.0f}s" if rate > 0 else "?"
        made = (
            f"{self.transformed} transformed" if self.transformed else f"{self.embedded} embedded"
        )
        return (
            f"{label}: {self.done}/{self.total} points ({made}, "
            f"{sum(self.skipped.values())} skipped), {rate:.1f} pts/s, ETA {eta}"
        )


@dataclass(frozen=True)
class UsableTexts:
    """The records worth embedding, the texts to send, and what was left out and why."""

    records: list[Any]
    texts: list[str]
    skipped: list[tuple[PointId, str]]
    tokens: int = 0
    truncated: int = 0


def select_texts(
    records: Sequence[Any],
    provider: EmbeddingProvider,
    *,
    text_field: str,
    policy: str,
    collection: str,
) -> UsableTexts:
    """Apply the bad-data policy (missing, empty, non-string, too long) to a page of points.

    Under ``policy='fail'`` the first bad point raises :class:`BadTextError`; under
    ``'skip'`` it is returned in ``skipped`` with its reason, for the caller to record.
    """
    candidates: list[Any] = []
    texts: list[str] = []
    skipped: list[tuple[PointId, str]] = []
    for record in records:
        text, reason = extract_text(record.payload, text_field)
        if text is None:
            skipped.append((record.id, reason or "unknown"))
        else:
            candidates.append(record)
            texts.append(text)
    prepared = provider.prepare(texts) if texts else None
    if prepared is not None:
        skipped += [(candidates[s.index].id, s.reason) for s in prepared.skipped]
    if skipped and policy == "fail":
        point_id, reason = skipped[0]
        raise BadTextError(
            f"Point {point_id!r} of {collection!r} has no usable text in {text_field!r} "
            f"({reason}). Fix the point, or trigger with bad_text_policy='skip' to record and "
            "skip such points."
        )
    if prepared is None:
        return UsableTexts([], [], skipped)
    return UsableTexts(
        [candidates[i] for i in prepared.indexes],
        list(prepared.texts),
        skipped,
        prepared.total_tokens,
        len(prepared.truncated),
    )


def skipped_ids(state: StateStore, migration_id: str) -> set[str]:
    """Ids (as strings) of the points a migration recorded as skipped."""
    return {str(doc["point_id"]) for doc in state.scan("skip", migration_id=migration_id)}


def record_skips(
    state: StateStore, migration_id: str, skipped: Sequence[tuple[PointId, str]]
) -> None:
    for point_id, reason in skipped:
        state.put(
            "skip",
            f"{migration_id}/{point_id}",
            {"migration_id": migration_id, "point_id": point_id, "reason": reason},
        )


def checkpoint_key(partition: Partition) -> str:
    return f"{partition.migration_id}/{partition.fingerprint}/{partition.index}"


def _pages(
    client: QdrantClient,
    collection: str,
    partition: Partition,
    offset: Any,
    size: int,
    vectors: bool | list[str] = False,
) -> Iterator[tuple[list[Any], PointId | None]]:
    """Pages of the partition (payloads; vectors if asked) with the offset that follows each."""
    while True:
        points, next_offset = client.scroll(
            collection, limit=size, offset=offset, with_payload=True, with_vectors=vectors
        )
        inside = [p for p in points if partition.contains(p.id)]
        finished = (
            len(inside) < len(points) or next_offset is None or not partition.contains(next_offset)
        )
        if inside or finished:
            yield inside, None if finished else next_offset
        if finished:
            return
        offset = next_offset


def write_points(client: QdrantClient, collection: str, points: Sequence[qm.PointStruct]) -> None:
    """Write without ever overwriting newer data already in the target.

    ``update_mode=insert_only`` (server 1.17+, and the embedded store) leaves points that
    already exist untouched. Older servers get the same effect by writing only the ids that
    are not there yet.
    """
    if not points:
        return
    if supports(client, (1, 17, 0)):
        client.upsert(collection, list(points), wait=True, update_mode=qm.UpdateMode.INSERT_ONLY)
        return
    existing = {
        p.id for p in client.retrieve(collection, [p.id for p in points], with_payload=False)
    }
    fresh = [p for p in points if p.id not in existing]
    if fresh:
        client.upsert(collection, fresh, wait=True)


def _vector(plan: Plan, values: list[float]) -> Any:
    name = plan.source.vector_name
    return values if name is None else {name: values}


class PartitionJob(ABC):
    """One partition's run: resume from its checkpoint, stream, checkpoint after each write.

    Subclasses decide where a page's vectors come from (:meth:`_prepare`): embedding its
    texts (:class:`PartitionBackfill`) or deriving them from the stored vectors
    (``transform.PartitionTransform``). Reading, writing, checkpoints and the summary are
    shared.
    """

    #: Whether pages are read with their stored vectors.
    reads_vectors: bool = False

    def __init__(
        self,
        client: QdrantClient,
        plan: Plan,
        partition: Partition,
        state: StateStore,
        settings: BackfillSettings,
    ) -> None:
        self.client = client
        self.plan = plan
        self.partition = partition
        self.state = state
        self.settings = settings
        self.key = checkpoint_key(partition)
        self.dimension = plan.target_dimension

    def run(self) -> dict[str, Any]:
        checkpoint = self.state.get("checkpoint", self.key) or {}
        if checkpoint.get("done"):
            log.info("%s already finished; nothing to do", self.partition.label)
            return self._summary(checkpoint, resumed=True, calls=0, seconds=0.0)
        offset = checkpoint.get("next_offset", self.partition.start)
        progress = Progress(total=self.partition.points, done=int(checkpoint.get("done_points", 0)))
        progress.embedded = int(checkpoint.get("embedded", 0))
        progress.transformed = int(checkpoint.get("transformed", 0))
        progress.tokens = int(checkpoint.get("tokens", 0))
        progress.truncated = int(checkpoint.get("truncated", 0))
        progress.skipped.update(checkpoint.get("skipped_by_reason", {}))
        if checkpoint:
            log.info(
                "Resuming %s at offset %s (%d done)", self.partition.label, offset, progress.done
            )
        calls = 0
        started_at = now_iso()
        inflight: deque[Batch] = deque()
        pool = ThreadPoolExecutor(self.settings.embed_concurrency, "embed")
        try:
            pages = _pages(
                self.client,
                self.plan.source.collection,
                self.partition,
                offset,
                self.settings.batch_size,
                vectors=self._vectors_to_read(),
            )
            for records, next_offset in pages:
                # At most embed_concurrency sub-batches are embedded but not yet written, so
                # a killed worker repeats at most that many: the price of keeping the
                # provider busy while Qdrant writes.
                while len(inflight) >= self.settings.embed_concurrency:
                    self._commit(inflight.popleft(), progress)
                batch = self._prepare(records, next_offset, pool)
                calls += batch.requests
                inflight.append(batch)
            while inflight:
                self._commit(inflight.popleft(), progress)
        finally:
            # After an error, do not pay for embeddings that would be thrown away.
            pool.shutdown(wait=True, cancel_futures=True)
        final = self._checkpoint(None, progress, done=True)
        log.info(progress.line(self.partition.label))
        summary = self._summary(
            final,
            resumed=bool(checkpoint),
            calls=calls,
            seconds=time.monotonic() - progress.started,
        )
        return summary | {"started_at": started_at, "finished_at": now_iso()}

    def _vectors_to_read(self) -> bool | list[str]:
        if not self.reads_vectors:
            return False
        name = self.plan.source.vector_name
        return [name] if name else True

    @abstractmethod
    def _prepare(
        self, records: list[Any], next_offset: PointId | None, pool: ThreadPoolExecutor
    ) -> Batch:
        """Start making the vectors of one page (in ``pool`` when that is slow)."""

    def _commit(self, batch: Batch, progress: Progress) -> None:
        vectors = batch.vectors.result() if batch.vectors is not None else []
        if len(vectors) != len(batch.records) or any(len(v) != self.dimension for v in vectors):
            raise EmbeddingError(
                f"Provider returned {len(vectors)} vectors for {len(batch.records)} texts "
                f"(expected {self.dimension}-d each); nothing from this batch was written."
            )
        points = [
            qm.PointStruct(id=r.id, vector=_vector(self.plan, v), payload=r.payload or {})
            for r, v in zip(batch.records, vectors, strict=True)
        ]
        write_points(self.client, self.plan.target_collection, points)
        record_skips(self.state, self.plan.migration_id, batch.skipped)
        progress.skipped.update(reason for _, reason in batch.skipped)
        if batch.requests:
            progress.embedded += len(points)
        else:
            progress.transformed += len(points)
        progress.tokens += batch.tokens
        progress.truncated += batch.truncated
        progress.done += len(points) + len(batch.skipped)
        self._checkpoint(batch.next_offset, progress, done=False)
        now = time.monotonic()
        if now - progress.last_log >= self.settings.progress_interval_s:
            progress.last_log = now
            log.info(progress.line(self.partition.label))

    def _checkpoint(
        self, next_offset: PointId | None, progress: Progress, *, done: bool
    ) -> dict[str, Any]:
        doc = {
            "migration_id": self.plan.migration_id,
            "fingerprint": self.partition.fingerprint,
            "partition": self.partition.index,
            "next_offset": next_offset,
            "done": done or next_offset is None,
            "done_points": progress.done,
            "embedded": progress.embedded,
            "transformed": progress.transformed,
            "tokens": progress.tokens,
            "truncated": progress.truncated,
            "skipped_by_reason": dict(progress.skipped),
            "updated_at": now_iso(),
        }
        self.state.put("checkpoint", self.key, doc)
        return doc

    def _summary(
        self, checkpoint: dict[str, Any], *, resumed: bool, calls: int, seconds: float
    ) -> dict[str, Any]:
        skipped = dict(checkpoint.get("skipped_by_reason", {}))
        return {
            "partition": self.partition.index,
            "label": self.partition.label,
            "embedded": int(checkpoint.get("embedded", 0)),
            "transformed": int(checkpoint.get("transformed", 0)),
            "tokens": int(checkpoint.get("tokens", 0)),
            "truncated": int(checkpoint.get("truncated", 0)),
            "skipped": sum(skipped.values()),
            "skipped_by_reason": skipped,
            "embed_requests": calls,
            "resumed": resumed,
            "seconds": round(seconds, 2),
        }


class PartitionBackfill(PartitionJob):
    """The full re-embed: embed each page's texts with the new model."""

    def __init__(
        self,
        client: QdrantClient,
        plan: Plan,
        partition: Partition,
        provider: EmbeddingProvider,
        state: StateStore,
        settings: BackfillSettings,
    ) -> None:
        super().__init__(client, plan, partition, state, settings)
        self.provider = provider

    def _prepare(
        self, records: list[Any], next_offset: PointId | None, pool: ThreadPoolExecutor
    ) -> Batch:
        """Apply the bad-data policies, then start embedding what is left."""
        usable = select_texts(
            records,
            self.provider,
            text_field=self.plan.spec["text_field"],
            policy=self.settings.bad_text_policy,
            collection=self.plan.source.collection,
        )
        if not usable.records:
            return Batch([], usable.skipped, next_offset, None)
        future = pool.submit(self.provider.embed_documents, usable.texts)
        return Batch(
            usable.records,
            usable.skipped,
            next_offset,
            future,
            usable.tokens,
            usable.truncated,
            requests=1,
        )


def summarize(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The run's totals over every partition, for recall_check and the report."""
    reasons: Counter[str] = Counter()
    for result in results:
        reasons.update(result.get("skipped_by_reason", {}))
    return {
        "partitions": len(results),
        "embedded": sum(int(r.get("embedded", 0)) for r in results),
        "transformed": sum(int(r.get("transformed", 0)) for r in results),
        "tokens": sum(int(r.get("tokens", 0)) for r in results),
        "truncated": sum(int(r.get("truncated", 0)) for r in results),
        "skipped": sum(reasons.values()),
        "skipped_by_reason": dict(reasons),
        "embed_requests": sum(int(r.get("embed_requests", 0)) for r in results),
        "resumed_partitions": sum(1 for r in results if r.get("resumed")),
        "wall_seconds": wall_seconds(results),
    }


def wall_seconds(results: Sequence[dict[str, Any]]) -> float | None:
    """From the first partition's start to the last one's end (partitions run in parallel).

    Partitions a retry found already finished did no work in this run and are left out.
    """
    spans = [
        (datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"]))
        for r in results
        if r.get("started_at") and r.get("finished_at")
    ]
    if not spans:
        return None
    return (max(end for _, end in spans) - min(start for start, _ in spans)).total_seconds()
