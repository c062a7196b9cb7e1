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

import dataclasses
import logging
import time
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration import sparse
from include.qdrant_migration.choices import BadTextPolicy
from include.qdrant_migration.layout import point_vector
from include.qdrant_migration.plan import Plan
from include.qdrant_migration.providers import EmbeddingError, EmbeddingProvider
from include.qdrant_migration.qdrant import PointId, point_id, supports
from include.qdrant_migration.state import StateStore, now_iso
from include.qdrant_migration.sync.checkpoints import (
    BatchWork,
    Checkpoint,
    Checkpoints,
    add_sample,
)
from include.qdrant_migration.sync.fingerprints import Fingerprints
from include.qdrant_migration.sync.pacing import PacingSummary, QdrantPacer, unpaced
from include.qdrant_migration.sync.partitions import Partition, PartitionPlans
from include.qdrant_migration.sync.skips import record_skips
from include.qdrant_migration.texts import Skipped, extract_text, select_texts

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class BackfillSettings:
    batch_size: int = 128
    embed_concurrency: int = 2
    bad_text_policy: BadTextPolicy = "skip"
    progress_interval_s: float = 30.0
    #: The run doing the work: what earlier runs did is reported apart from it.
    run_id: str = ""

    @classmethod
    def of(cls, plan: Plan, run_id: str = "") -> BackfillSettings:
        spec = plan.spec
        return cls(spec.batch_size, spec.embed_concurrency, spec.bad_text_policy, run_id=run_id)


@dataclass
class Batch:
    records: list[qm.Record]
    skipped: list[Skipped]
    next_offset: PointId | None
    vectors: Future[list[list[float]]] | None
    tokens: int = 0
    truncated: int = 0
    #: Embedding calls this batch makes (0 when its vectors are derived from stored ones).
    requests: int = 0
    #: The state of every point of the page (written or skipped), recorded once written.
    states: list[tuple[PointId, str]] = field(default_factory=list)


@dataclass
class Progress:
    total: int
    done: int = 0
    embedded: int = 0
    transformed: int = 0
    tokens: int = 0
    truncated: int = 0
    requests: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    #: What earlier runs did (carried into every checkpoint of this run).
    earlier: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    last_log: float = field(default_factory=time.monotonic)
    history: list[list[Any]] = field(default_factory=list)
    #: What earlier tries' pacing recorded (their probes, their waits).
    pacing: PacingSummary | None = None

    @classmethod
    def resume(cls, total: int, checkpoint: Checkpoint | None, run_id: str) -> Progress:
        progress = cls(total=total)
        if checkpoint is not None:
            progress.done = checkpoint.done_points
            progress.embedded = checkpoint.embedded
            progress.transformed = checkpoint.transformed
            progress.tokens = checkpoint.tokens
            progress.truncated = checkpoint.truncated
            progress.requests = checkpoint.requests
            progress.skipped.update(checkpoint.skipped_by_reason)
            progress.earlier = checkpoint.earlier_than(run_id)
            progress.history = [list(sample) for sample in checkpoint.history]
            progress.pacing = checkpoint.pacing
        return progress

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
class PartitionResult:
    """What one backfill task did: the ``backfill_batch`` XCom."""

    partition: int
    label: str
    embedded: int = 0
    transformed: int = 0
    tokens: int = 0
    truncated: int = 0
    skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    embed_requests: int = 0
    resumed: bool = False
    seconds: float = 0.0
    #: When this run worked on it (None when a retry found it already finished).
    started_at: str | None = None
    finished_at: str | None = None
    #: The part of the totals above that earlier runs did (keys of ``Checkpoint.work``).
    earlier: dict[str, int] = field(default_factory=dict)
    #: The Qdrant budget's pacing and the source's probe latencies.
    pacing: PacingSummary = field(default_factory=PacingSummary)


@dataclass(frozen=True)
class BackfillSummary:
    """The run's totals over every partition, for the checks and the report."""

    partitions: int = 0
    embedded: int = 0
    transformed: int = 0
    tokens: int = 0
    truncated: int = 0
    skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    embed_requests: int = 0
    resumed_partitions: int = 0
    wall_seconds: float | None = None
    #: The part of the totals that earlier runs of the migration did.
    earlier: dict[str, int] = field(default_factory=dict)
    #: Every partition's pacing and probe latencies, merged.
    pacing: PacingSummary = field(default_factory=PacingSummary)

    def this_run(self, key: str) -> int:
        """``embedded``, ``transformed``, ``tokens`` or ``requests`` done by this run."""
        total = self.embed_requests if key == "requests" else int(getattr(self, key))
        return total - self.earlier.get(key, 0)

    @classmethod
    def of(cls, results: Sequence[PartitionResult]) -> BackfillSummary:
        reasons: Counter[str] = Counter()
        earlier: Counter[str] = Counter()
        pacing = PacingSummary()
        for result in results:
            reasons.update(result.skipped_by_reason)
            earlier.update(result.earlier)
            pacing = pacing.merge(result.pacing)
        return cls(
            partitions=len(results),
            embedded=sum(r.embedded for r in results),
            transformed=sum(r.transformed for r in results),
            tokens=sum(r.tokens for r in results),
            truncated=sum(r.truncated for r in results),
            skipped=sum(reasons.values()),
            skipped_by_reason=dict(reasons),
            embed_requests=sum(r.embed_requests for r in results),
            resumed_partitions=sum(1 for r in results if r.resumed),
            wall_seconds=wall_seconds(results),
            earlier=dict(earlier),
            pacing=pacing,
        )


def wall_seconds(results: Sequence[PartitionResult]) -> float | None:
    """From the first partition's start to the last one's end (partitions run in parallel).

    Partitions a retry found already finished did no work in this run and are left out.
    """
    spans = [
        (datetime.fromisoformat(r.started_at), datetime.fromisoformat(r.finished_at))
        for r in results
        if r.started_at and r.finished_at
    ]
    if not spans:
        return None
    return (max(end for _, end in spans) - min(start for start, _ in spans)).total_seconds()


def forget_progress(client: QdrantClient, state: StateStore, migration_id: str) -> None:
    """A freshly created target holds nothing: drop the plan, checkpoints and recorded
    states of an older one."""
    Fingerprints(client, migration_id).drop()
    PartitionPlans(state).delete(migration_id)
    checkpoints = Checkpoints(state)
    for checkpoint in list(checkpoints.of(migration_id)):
        checkpoints.delete(checkpoint.key)


def partition_pages(
    client: QdrantClient,
    collection: str,
    partition: Partition,
    offset: PointId | None,
    size: int,
    vectors: bool | list[str] = False,
) -> Iterator[tuple[list[qm.Record], PointId | None]]:
    """Pages of the partition (payloads; vectors if asked) with the offset that follows each."""
    while True:
        points, following = client.scroll(
            collection, limit=size, offset=offset, with_payload=True, with_vectors=vectors
        )
        next_offset = None if following is None else point_id(following)
        inside = [p for p in points if partition.contains(point_id(p.id))]
        finished = (
            len(inside) < len(points) or next_offset is None or not partition.contains(next_offset)
        )
        if inside or finished:
            yield inside, None if finished else next_offset
        if finished:
            return
        offset = next_offset


def _read_ahead(pages: Iterator[T]) -> Iterator[T]:
    """``pages``, with the next one read in a thread while the caller handles this one."""
    with ThreadPoolExecutor(1, "read-ahead") as reader:
        upcoming = reader.submit(next, pages, None)
        while (page := upcoming.result()) is not None:
            upcoming = reader.submit(next, pages, None)
            yield page


WritePoints = qm.Batch | Sequence[qm.PointStruct]


def write_points(client: QdrantClient, collection: str, points: WritePoints) -> None:
    """Write without ever overwriting newer data already in the target.

    ``update_mode=insert_only`` (server 1.17+, and the embedded store) leaves points that
    already exist untouched. Older servers get the same effect by writing only the ids that
    are not there yet. A :class:`~qdrant_client.models.Batch` (columns) costs the client
    and the server less per point than a list of points.
    """
    ids = points.ids if isinstance(points, qm.Batch) else [p.id for p in points]
    if not ids:
        return
    if supports(client, (1, 17, 0)):
        client.upsert(collection, points, wait=True, update_mode=qm.UpdateMode.INSERT_ONLY)
        return
    existing = {point_id(p.id) for p in client.retrieve(collection, list(ids), with_payload=False)}
    if not existing:
        client.upsert(collection, points, wait=True)
        return
    listed = _as_points(points) if isinstance(points, qm.Batch) else list(points)
    fresh = [p for p in listed if point_id(p.id) not in existing]
    if fresh:
        client.upsert(collection, fresh, wait=True)


def _as_points(batch: qm.Batch) -> list[qm.PointStruct]:
    vectors: Any = batch.vectors
    payloads: list[Any] = list(batch.payloads or [])
    payloads += [None] * (len(batch.ids) - len(payloads))
    rows = (
        [{name: column[i] for name, column in vectors.items()} for i in range(len(batch.ids))]
        if isinstance(vectors, dict)
        else vectors
    )
    return [
        qm.PointStruct(id=i, vector=v, payload=p)
        for i, v, p in zip(batch.ids, rows, payloads, strict=True)
    ]


def columns(
    name: str | None, ids: list[qm.ExtendedPointId], vectors: list[list[float]], payloads: list[Any]
) -> qm.Batch:
    """Points as one batch of columns, the vectors bare or under ``name``."""
    column: Any = vectors
    return qm.Batch(
        ids=ids, vectors={name: column} if name is not None else column, payloads=payloads
    )


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
        self.key = Checkpoint.key_of(partition)
        self.dimension = plan.target_dimension
        self.fingerprints = Fingerprints(client, plan.migration_id)
        #: Called after every sub-batch written: renews the writer's lease.
        self.heartbeat: Callable[[], None] = lambda: None
        #: The Qdrant budget the writes keep to, and the probes of the source.
        self.pacer: QdrantPacer = unpaced()
        #: Sub-batches whose target states are read back (after a resume).
        self._read_back = 0
        #: A sub-batch failed on the writer thread: the ones after it are not written.
        self._failed = False

    def run(self) -> PartitionResult:
        saved = Checkpoints(self.state).get(self.key)
        run_id = self.settings.run_id
        if saved is not None and saved.done:
            log.info("%s already finished; nothing to do", self.partition.label)
            return self.partition_result(saved, resumed=True, earlier=saved.earlier_than(run_id))
        offset = saved.next_offset if saved is not None else self.partition.start
        progress = Progress.resume(self.partition.points, saved, run_id)
        if saved is not None:
            log.info(
                "Resuming %s at offset %s (%d done)", self.partition.label, offset, progress.done
            )
            # The killed try may have written the next sub-batches already (insert-only
            # leaves them as it wrote them): record what the target really holds for them.
            self._read_back = self.settings.embed_concurrency
        started_at = now_iso()
        add_sample(progress.history, progress.done)  # where this try starts, for the rate
        # Three stages overlap: the next page is read while this one is prepared, up to
        # embed_concurrency sub-batches are embedded at once, and one writer thread writes,
        # records and checkpoints them in order (so a checkpoint still follows its write).
        # At most embed_concurrency + 1 sub-batches are embedded but not yet written: a
        # killed worker repeats at most that many, the price of keeping the provider busy.
        self._failed = False
        pending: deque[Future[None]] = deque()
        pool = ThreadPoolExecutor(self.settings.embed_concurrency, "embed")
        writer = ThreadPoolExecutor(1, "write")
        try:
            self._pipeline(offset, progress, pending, pool, writer)
        finally:
            # After an error: nothing is written past the failed sub-batch, and no
            # embedding is paid for that would be thrown away.
            writer.shutdown(wait=True, cancel_futures=True)
            pool.shutdown(wait=True, cancel_futures=True)
        final = self.save_checkpoint(None, progress, done=True)
        log.info(progress.line(self.partition.label))
        result = self.partition_result(
            final,
            resumed=saved is not None,
            earlier=progress.earlier,
            seconds=time.monotonic() - progress.started,
        )
        return dataclasses.replace(result, started_at=started_at, finished_at=now_iso())

    def _pipeline(
        self,
        offset: PointId | None,
        progress: Progress,
        pending: deque[Future[None]],
        pool: ThreadPoolExecutor,
        writer: ThreadPoolExecutor,
    ) -> None:
        """Read, prepare and hand sub-batches to the writer, probing the source meanwhile
        (within the budget, the reads too: in pieces, no faster than the writes)."""
        with self.pacer.probing(self.client):
            pieces = partition_pages(
                self.client,
                self.plan.source.collection,
                self.partition,
                offset,
                self.pacer.read_size(self.settings.batch_size),
                vectors=self.vectors_to_read(),
            )
            pages = self.pacer.paced_reads(pieces, self.settings.batch_size)
            for records, next_offset in _read_ahead(pages):
                while len(pending) > self.settings.embed_concurrency:
                    pending.popleft().result()  # a failed write stops the loop here
                batch = self._prepare(records, next_offset, pool)
                batch.states = [(point_id(r.id), self.state_of(r)) for r in records]
                pending.append(writer.submit(self._commit_in_order, batch, progress))
            while pending:
                pending.popleft().result()

    def vectors_to_read(self) -> bool | list[str]:
        """The carried vectors, and the migrated one when the new vectors derive from it."""
        return self.plan.carried.read(self.plan.vector_name, with_migrated=self.reads_vectors)

    @abstractmethod
    def _prepare(
        self, records: list[qm.Record], next_offset: PointId | None, pool: ThreadPoolExecutor
    ) -> Batch:
        """Start making the vectors of one page (in ``pool`` when that is slow)."""

    def _commit_in_order(self, batch: Batch, progress: Progress) -> None:
        """:meth:`_commit` on the writer thread; after a failure, later sub-batches are not
        written (their checkpoint would skip the one that failed)."""
        if self._failed:
            raise RuntimeError("an earlier sub-batch failed: not written")
        try:
            self._commit(batch, progress)
        except BaseException:
            self._failed = True
            raise

    def _commit(self, batch: Batch, progress: Progress) -> None:
        """Write the sub-batch's points, then record their states, then the checkpoint.

        Each sub-batch is committed alone: merging the ones that queue up behind the
        writer would save bookkeeping requests, but the big write it makes holds the
        oldest sub-batch's slot, and the provider idles meanwhile (measured: half the
        throughput at embed_concurrency 8).
        """
        vectors = batch.vectors.result() if batch.vectors is not None else []
        if len(vectors) != len(batch.records) or any(len(v) != self.dimension for v in vectors):
            raise EmbeddingError(
                f"Provider returned {len(vectors)} vectors for {len(batch.records)} texts "
                f"(expected {self.dimension}-d each); nothing from this batch was written."
            )
        self.paced_write(batch.records, vectors)
        record_skips(self.state, self.plan.migration_id, batch.skipped)
        self.fingerprints.record(self._states_written(batch))
        progress.skipped.update(reason for _, reason in batch.skipped)
        if batch.requests:
            progress.embedded += len(batch.records)
        else:
            progress.transformed += len(batch.records)
        progress.tokens += batch.tokens
        progress.truncated += batch.truncated
        progress.requests += batch.requests
        progress.done += len(batch.records) + len(batch.skipped)
        self.save_checkpoint(batch.next_offset, progress, done=False)
        self.heartbeat()
        now = time.monotonic()
        if now - progress.last_log >= self.settings.progress_interval_s:
            progress.last_log = now
            log.info(progress.line(self.partition.label))

    def state_of(self, record: qm.Record) -> str:
        """The state recorded for a point once its vector is written (``.fingerprints``)."""
        return self.plan.carried.state(record)

    def paced_write(self, records: list[qm.Record], vectors: list[list[float]]) -> None:
        """:meth:`write` within the Qdrant budget: in pieces of the pacer's size, each when
        the budget allows it."""
        for piece in self.pacer.pieces(len(records)):
            self.pacer.acquire(piece.stop - piece.start)
            self.write(records[piece], vectors[piece])

    def write(self, records: list[qm.Record], vectors: list[list[float]]) -> None:
        """Insert the points into the target (never over what is there already)."""
        write_points(self.client, self.plan.target_collection, self._points(records, vectors))

    def _points(self, records: list[qm.Record], vectors: list[list[float]]) -> WritePoints:
        """The points to write: as columns when each has only its new vector; else one by one
        with the carried vectors it has and the added BM25 vector of its text."""
        name, carried, added = self.plan.vector_name, self.plan.carried, self.plan.add_sparse
        if not carried and not added:
            payloads = [r.payload or {} for r in records]
            return columns(name, [r.id for r in records], vectors, payloads)
        extra: list[dict[str, Any]] = [{} for _ in records]
        if added:
            field = self.plan.spec.text_field
            texts = {
                i: t for i, r in enumerate(records) if (t := extract_text(r.payload, field)[0])
            }
            made = sparse.documents(self.client, list(texts.values()))
            for i, vector in zip(texts, made, strict=True):
                extra[i] = {added: vector}
        return [
            qm.PointStruct(
                id=r.id, vector=point_vector(name, v, carried.of(r), more), payload=r.payload or {}
            )
            for r, v, more in zip(records, vectors, extra, strict=True)
        ]

    def _states_written(self, batch: Batch) -> list[tuple[PointId, str | None]]:
        states: list[tuple[PointId, str | None]] = list(batch.states)
        if self._read_back <= 0 or not batch.records:
            return states
        self._read_back -= 1
        carried = self.plan.carried
        held = {
            point_id(p.id): carried.state(p)
            for p in self.client.retrieve(
                self.plan.target_collection,
                [r.id for r in batch.records],
                with_payload=True,
                with_vectors=carried.read(),
            )
        }
        return [(here, held.get(here, state)) for here, state in states]

    def save_checkpoint(
        self,
        next_offset: PointId | None,
        progress: Progress,
        *,
        done: bool,
        batch: BatchWork | None = None,
    ) -> Checkpoint:
        checkpoint = Checkpoint(
            migration_id=self.plan.migration_id,
            fingerprint=self.partition.fingerprint,
            partition=self.partition.index,
            next_offset=next_offset,
            done=done or (next_offset is None and batch is None),
            batch=batch,
            done_points=progress.done,
            embedded=progress.embedded,
            transformed=progress.transformed,
            tokens=progress.tokens,
            truncated=progress.truncated,
            skipped_by_reason=dict(progress.skipped),
            requests=progress.requests,
            run_id=self.settings.run_id,
            earlier=progress.earlier,
            history=add_sample(progress.history, progress.done, final=done),
            pacing=self.pacer.summary(progress.pacing),
        )
        Checkpoints(self.state).put(checkpoint)
        return checkpoint

    def partition_result(
        self,
        checkpoint: Checkpoint,
        *,
        resumed: bool,
        earlier: dict[str, int],
        seconds: float = 0.0,
    ) -> PartitionResult:
        return PartitionResult(
            partition=self.partition.index,
            label=self.partition.label,
            embedded=checkpoint.embedded,
            transformed=checkpoint.transformed,
            tokens=checkpoint.tokens,
            truncated=checkpoint.truncated,
            skipped=sum(checkpoint.skipped_by_reason.values()),
            skipped_by_reason=dict(checkpoint.skipped_by_reason),
            embed_requests=checkpoint.requests,
            resumed=resumed,
            seconds=round(seconds, 2),
            earlier=earlier,
            pacing=checkpoint.pacing,
        )


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
        self, records: list[qm.Record], next_offset: PointId | None, pool: ThreadPoolExecutor
    ) -> Batch:
        """Apply the bad-data policies, then start embedding what is left."""
        usable = select_texts(
            records,
            self.provider,
            text_field=self.plan.spec.text_field,
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
