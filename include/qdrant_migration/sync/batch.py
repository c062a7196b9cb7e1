"""backfill_batch in batch mode: one partition's texts embedded by OpenAI's Batch API.

Each step is checkpointed (``Checkpoint.batch``) before the next, so a killed or retried
task goes on where it stopped and never submits the same texts twice:

1. **plan**: the partition's usable points (the bad-text policy applied, skips recorded),
   packed into requests within the API's per-request limits and grouped into request
   files within its per-file limits. Only ids are kept;
2. **submit** each file: the texts as they are now (a hash of each recorded), uploaded and
   run as one batch. A try killed between the calls finds its upload and its batch again
   by name (:mod:`..providers.openai_batch`);
3. **wait**: while a batch runs, :meth:`BatchBackfill.run` returns :class:`Waiting` and the
   task reschedules itself: no worker slot is held, and the next try polls again;
4. **collect** a finished batch: the vectors of points whose text is still the one
   embedded are written insert-only (a point edited or deleted meanwhile is left to the
   catch-up); requests that failed inside the batch are embedded online, within the
   provider's budget, or the task fails naming them; requests an expired or cancelled batch
   never ran go into a new file; the batch's files are deleted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qdrant_client import models as qm

from include.qdrant_migration.providers import EmbeddingError
from include.qdrant_migration.providers.openai_batch import (
    MAX_FILE_BYTES,
    MAX_REQUESTS_PER_FILE,
    BatchState,
    OpenAIBatches,
)
from include.qdrant_migration.providers.openai_provider import OpenAIProvider
from include.qdrant_migration.providers.packing import check_vectors, plan_requests
from include.qdrant_migration.qdrant import PointId, point_id
from include.qdrant_migration.state import now_iso
from include.qdrant_migration.sync.backfill import (
    PartitionJob,
    PartitionResult,
    Progress,
    partition_pages,
)
from include.qdrant_migration.sync.checkpoints import BatchWork, Checkpoints, RequestFile
from include.qdrant_migration.sync.skips import record_skips
from include.qdrant_migration.texts import extract_text, select_texts

log = logging.getLogger(__name__)

#: Request files are kept under the API's 200 MB with room for texts edited before upload.
FILE_BUDGET_BYTES = int(MAX_FILE_BYTES * 0.9)
PAGE = 1000


def text_hash(text: str | None) -> str:
    return hashlib.blake2b((text or "").encode(), digest_size=8).hexdigest()


@dataclass(frozen=True)
class Waiting:
    """The partition's batches are still running: poll again after ``poll_s``."""

    label: str
    batches: list[str]
    poll_s: int


class BatchBackfill:
    """One partition in batch mode; reads, writes and checkpoints through ``job``."""

    def __init__(self, job: PartitionJob, provider: OpenAIProvider) -> None:
        self.job = job
        self.provider = provider
        self.api: OpenAIBatches = provider.batches()
        self.plan = job.plan
        self.field = job.plan.spec.text_field

    def run(self) -> PartitionResult | Waiting:
        job, run_id = self.job, self.job.settings.run_id
        saved = Checkpoints(job.state).get(job.key)
        if saved is not None and saved.done:
            log.info("%s already finished; nothing to do", job.partition.label)
            return job.partition_result(saved, resumed=True, earlier=saved.earlier_than(run_id))
        progress = Progress.resume(job.partition.points, saved, run_id)
        work = saved.batch if saved is not None else None
        if work is None:  # a partition begun online goes on from where that stopped
            start = saved.next_offset if saved is not None else job.partition.start
            work = self._plan(start, progress)
        for request_file in work.files:
            if request_file.state == "submitted":
                found = self.api.state(str(request_file.batch_id))
                if not found.running:
                    self._collect(work, request_file, found, progress)
        for request_file in work.files:  # planned ones, resubmissions included
            if request_file.state == "planned":
                self._submit(work, request_file, progress)
        if work.running:
            log.info(
                "%s: %d batch(es) running (%s); checking again in %d s",
                job.partition.label,
                len(work.running),
                ", ".join(work.running),
                self.plan.spec.batch_poll_seconds,
            )
            return Waiting(job.partition.label, work.running, self.plan.spec.batch_poll_seconds)
        final = job.save_checkpoint(None, progress, done=True, batch=work)
        log.info(progress.line(job.partition.label))
        result = job.partition_result(final, resumed=saved is not None, earlier=progress.earlier)
        return dataclasses.replace(result, started_at=work.started_at, finished_at=now_iso())

    # -- 1. plan -------------------------------------------------------------------------

    def _plan(self, start: PointId | None, progress: Progress) -> BatchWork:
        job = self.job
        ids: list[PointId] = []
        tokens: list[int] = []
        sizes: list[int] = []
        counter = self.provider.token_counter()
        pages = partition_pages(job.client, self.plan.source.collection, job.partition, start, PAGE)
        for records, _ in pages:
            usable = self._usable(records, progress)
            ids += [point_id(r.id) for r in usable.records]
            tokens += counter.count(usable.texts)
            sizes += [len(t.encode()) + 8 for t in usable.texts]  # quotes, comma: JSON
        limits = self.provider.limits
        requests = plan_requests(
            tokens,
            max_inputs=limits.max_inputs_per_request,
            max_tokens=limits.max_tokens_per_request,
        )
        work = BatchWork()
        current: list[str] = []
        current_bytes = 0
        for number, part in enumerate(requests):
            custom_id = f"p{job.partition.index}-r{number}"
            work.requests[custom_id] = [[here, ""] for here in ids[part.start : part.stop]]
            size = sum(sizes[part.start : part.stop]) + 300
            full = len(current) >= MAX_REQUESTS_PER_FILE or current_bytes + size > FILE_BUDGET_BYTES
            if current and full:
                self._add_file(work, current)
                current, current_bytes = [], 0
            current.append(custom_id)
            current_bytes += size
        if current:
            self._add_file(work, current)
        self._save(work, progress)
        log.info(
            "%s: %d texts in %d requests, %d request file(s)",
            job.partition.label,
            len(ids),
            len(requests),
            len(work.files),
        )
        return work

    def _usable(self, records: list[qm.Record], progress: Progress) -> Any:
        job = self.job
        usable = select_texts(
            records,
            self.provider,
            text_field=self.field,
            policy=job.settings.bad_text_policy,
            collection=self.plan.source.collection,
        )
        record_skips(job.state, self.plan.migration_id, usable.skipped)
        progress.skipped.update(reason for _, reason in usable.skipped)
        progress.done += len(usable.skipped)
        return usable

    def _add_file(self, work: BatchWork, requests: list[str]) -> None:
        part = self.job.partition
        name = f"{self.plan.migration_id}-{part.fingerprint}-p{part.index}-f{len(work.files)}.jsonl"
        work.files.append(RequestFile(name, list(requests)))

    # -- 2. submit -----------------------------------------------------------------------

    def _submit(self, work: BatchWork, request_file: RequestFile, progress: Progress) -> None:
        """Upload the file's texts as they are now and start its batch."""
        if request_file.input_file_id is None:
            lines: list[str] = []
            for custom_id in list(request_file.requests):
                texts = self._texts_now(work, custom_id, progress)
                if texts:
                    lines.append(self.api.request_line(custom_id, texts))
                else:  # every point of it was deleted or lost its text meanwhile
                    request_file.requests.remove(custom_id)
            if not lines:
                request_file.state = "done"
                self._save(work, progress)
                return
            self._save(work, progress)  # the hashes of what is sent, before it is sent
            request_file.input_file_id = self.api.upload(request_file.name, lines)
            self._save(work, progress)
        request_file.batch_id = self.api.create(request_file.input_file_id, request_file.name)
        request_file.state = "submitted"
        work.batches += 1
        self._save(work, progress)
        log.info("Submitted %s as batch %s", request_file.name, request_file.batch_id)

    def _texts_now(self, work: BatchWork, custom_id: str, progress: Progress) -> list[str]:
        entries = work.requests[custom_id]
        found = {
            point_id(p.id): p
            for p in self.job.client.retrieve(
                self.plan.source.collection, [e[0] for e in entries], with_payload=True
            )
        }
        records = [found[e[0]] for e in entries if e[0] in found]
        usable = self._usable(records, progress) if records else None
        if usable is None or not usable.records:
            work.requests[custom_id] = []
            return []
        work.requests[custom_id] = [
            [point_id(r.id), text_hash(extract_text(r.payload, self.field)[0])]
            for r in usable.records
        ]
        return list(usable.texts)

    # -- 4. collect ----------------------------------------------------------------------

    def _collect(
        self, work: BatchWork, request_file: RequestFile, found: BatchState, progress: Progress
    ) -> None:
        if found.status == "failed":
            raise EmbeddingError(
                f"Batch {found.id} ({request_file.name}) was refused by the Batch API: "
                f"{found.errors or 'no reason given'}. Nothing of it was written."
            )
        results = self.api.results(found, request_file.requests)
        for custom_id in request_file.requests:
            if custom_id in results.vectors:
                tokens = results.tokens.get(custom_id, 0)
                self._write(work, custom_id, results.vectors[custom_id], tokens, progress)
        if results.failed:
            self._online(work, sorted(results.failed), results.failed, progress)
        if results.not_run:  # expired or cancelled: only what never ran goes again
            retry = [c for c in request_file.requests if c in results.not_run]
            self._add_file(work, retry)
            log.warning(
                "Batch %s ended %s with %d of %d requests not run: resubmitted as %s",
                found.id,
                found.status,
                len(retry),
                len(request_file.requests),
                work.files[-1].name,
            )
        request_file.state = "done"
        self._save(work, progress)
        self.api.delete_files(
            [request_file.input_file_id, found.output_file_id, found.error_file_id]
        )

    def _online(
        self, work: BatchWork, custom_ids: Sequence[str], why: dict[str, str], progress: Progress
    ) -> None:
        """Requests that failed inside a batch, embedded online now."""
        log.warning(
            "%d request(s) failed inside the batch (%s); embedding them online",
            len(custom_ids),
            "; ".join(f"{c}: {why[c]}" for c in list(custom_ids)[:3]),
        )
        for custom_id in custom_ids:
            texts = self._texts_now(work, custom_id, progress)
            if not texts:
                continue
            try:
                vectors = self.provider.embed_documents(texts)
            except Exception as error:
                raise EmbeddingError(
                    f"Requests {', '.join(custom_ids)} failed inside their batch "
                    f"({why[custom_id]}) and again online: {error}. Their points are not "
                    "written; a retry of this task embeds them again (nothing else is "
                    "resubmitted)."
                ) from error
            self._write(work, custom_id, vectors, 0, progress, online=True)
            work.retried_online += 1

    def _write(
        self,
        work: BatchWork,
        custom_id: str,
        vectors: list[list[float]],
        tokens: int,
        progress: Progress,
        *,
        online: bool = False,
    ) -> None:
        """Write the request's points whose text is still the one embedded (insert-only)."""
        job = self.job
        entries = work.requests[custom_id]
        checked = check_vectors(
            vectors,
            expected_count=len(entries),
            dimension=self.plan.target_dimension,
            what=f"batch request {custom_id}",
        )
        held = {
            point_id(p.id): p
            for p in job.client.retrieve(
                self.plan.source.collection,
                [e[0] for e in entries],
                with_payload=True,
                with_vectors=job.vectors_to_read(),
            )
        }
        keep = [
            (held[here], vector)
            for (here, sent), vector in zip(entries, checked, strict=True)
            if here in held and text_hash(extract_text(held[here].payload, self.field)[0]) == sent
        ]
        if keep:
            job.paced_write([r for r, _ in keep], [v for _, v in keep])
            job.fingerprints.record([(point_id(r.id), job.state_of(r)) for r, _ in keep])
        progress.embedded += len(entries)
        progress.tokens += tokens
        progress.requests += 1
        progress.done += len(entries)
        job.heartbeat()
        if online:
            log.info("%s: %d points embedded online", custom_id, len(keep))

    def _save(self, work: BatchWork, progress: Progress) -> None:
        self.job.save_checkpoint(None, progress, done=False, batch=work)
