"""backfill_batch in batch mode: one partition's texts embedded by its provider's batch API
(OpenAI's Batch API, Cohere's embed jobs: :mod:`..providers.batching`).

Each step is checkpointed (``Checkpoint.batch``) before the next, so a killed or retried
task goes on where it stopped and never submits the same texts twice:

1. **plan**: the partition's usable points (the bad-text policy applied, skips recorded),
   packed into requests within the provider's per-request limits and grouped into request
   files within the API's per-file limits. Only ids are kept;
2. **submit** each file: the texts as they are now (a hash of each recorded), uploaded and
   run as one job. A try killed between the calls finds its upload and its job again by
   name; an upload the API is still validating is run on a later poll;
3. **wait**: while a job runs (or its input is validated), :meth:`BatchBackfill.run`
   returns :class:`Waiting` and the task reschedules itself: no worker slot is held, and
   the next try polls again;
4. **collect** a finished job, text by text: the vectors of points whose text is still
   the one embedded are written insert-only (a point edited or deleted meanwhile is left
   to the catch-up); texts that failed inside the job are embedded online, within the
   provider's budget, or the task fails naming their requests; texts an expired, failed or
   cancelled job never ran go into a new file (at most :data:`MAX_SUBMISSIONS` times);
   what the job left on the provider's side is deleted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qdrant_client import models as qm

from include.qdrant_migration.providers import EmbeddingError, EmbeddingProvider
from include.qdrant_migration.providers.batching import BatchAPI, BatchResults, BatchState
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

#: Request files are kept under the API's size limit with room for texts edited before upload.
FILE_BUDGET = 0.9
PAGE = 1000
#: A request whose texts a job never ran is submitted again, up to this many times in all.
MAX_SUBMISSIONS = 3


def text_hash(text: str | None) -> str:
    return hashlib.blake2b((text or "").encode(), digest_size=8).hexdigest()


@dataclass(frozen=True)
class Waiting:
    """The partition's jobs are still running (or their inputs being validated): poll again
    after ``poll_s``."""

    label: str
    batches: list[str]
    poll_s: int


class BatchBackfill:
    """One partition in batch mode; reads, writes and checkpoints through ``job``."""

    def __init__(self, job: PartitionJob, provider: EmbeddingProvider) -> None:
        self.job = job
        self.provider = provider
        self.api: BatchAPI = provider.batches()
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
        validating = [f.name for f in work.files if f.state == "planned"]
        if work.running or validating:
            log.info(
                "%s: %d job(s) running (%s), %d input(s) being validated; checking again in %d s",
                job.partition.label,
                len(work.running),
                ", ".join(work.running),
                len(validating),
                self.plan.spec.batch_poll_seconds,
            )
            waiting_on = work.running + validating
            return Waiting(job.partition.label, waiting_on, self.plan.spec.batch_poll_seconds)
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
            sizes += [len(t.encode()) + self.api.text_overhead_bytes for t in usable.texts]
        limits = self.provider.limits
        requests = plan_requests(
            tokens,
            max_inputs=limits.max_inputs_per_request,
            max_tokens=limits.max_tokens_per_request,
        )
        work = BatchWork()
        current: list[str] = []
        current_bytes = current_texts = 0
        max_bytes = int(self.api.max_file_bytes * FILE_BUDGET)
        max_texts = self.api.max_texts_per_file(self.plan.target_dimension)
        for number, part in enumerate(requests):
            custom_id = f"p{job.partition.index}-r{number}"
            work.requests[custom_id] = [[here, ""] for here in ids[part.start : part.stop]]
            size = sum(sizes[part.start : part.stop]) + self.api.request_overhead_bytes
            full = (
                len(current) >= self.api.max_requests_per_file
                or current_bytes + size > max_bytes
                or (max_texts is not None and current_texts + len(part) > max_texts)
            )
            if current and full:
                self._add_file(work, current)
                current, current_bytes, current_texts = [], 0, 0
            current.append(custom_id)
            current_bytes += size
            current_texts += len(part)
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
        """Upload the file's texts as they are now and start its job (once the API has
        accepted the upload: an input still being validated stays planned)."""
        if request_file.input_file_id is None:
            lines: list[str] = []
            for custom_id in list(request_file.requests):
                work.requests[custom_id], texts = self._texts_now(
                    work.requests[custom_id], progress
                )
                if texts:
                    lines += self.api.request_lines(custom_id, texts)
                else:  # every point of it was deleted or lost its text meanwhile
                    request_file.requests.remove(custom_id)
            if not lines:
                request_file.state = "done"
                self._save(work, progress)
                return
            self._save(work, progress)  # the hashes of what is sent, before it is sent
            request_file.input_file_id = self.api.upload(request_file.name, lines)
            self._save(work, progress)
        created = self.api.create(request_file.input_file_id, request_file.name)
        if created is None:
            log.info("%s is being validated by %s", request_file.name, self.api.title)
            return
        request_file.batch_id = created
        request_file.state = "submitted"
        work.batches += 1
        self._save(work, progress)
        log.info("Submitted %s to %s: job %s", request_file.name, self.api.title, created)

    def _texts_now(
        self, entries: list[list[Any]], progress: Progress
    ) -> tuple[list[list[Any]], list[str]]:
        """``entries``' points whose text is usable now, each with its text's hash, and
        those texts."""
        found = {
            point_id(p.id): p
            for p in self.job.client.retrieve(
                self.plan.source.collection, [e[0] for e in entries], with_payload=True
            )
        }
        records = [found[e[0]] for e in entries if e[0] in found]
        usable = self._usable(records, progress) if records else None
        if usable is None or not usable.records:
            return [], []
        now = [
            [point_id(r.id), text_hash(extract_text(r.payload, self.field)[0])]
            for r in usable.records
        ]
        return now, list(usable.texts)

    # -- 4. collect ----------------------------------------------------------------------

    def _collect(
        self, work: BatchWork, request_file: RequestFile, found: BatchState, progress: Progress
    ) -> None:
        if found.refused:
            raise EmbeddingError(
                f"{self.api.title} refused job {found.id} ({request_file.name}): "
                f"{found.errors or 'no reason given'}. Nothing of it was written."
            )
        requests = {c: len(work.requests[c]) for c in request_file.requests}
        results = self.api.results(found, requests)
        retry = [c for c in request_file.requests if results.not_run.get(c)]
        self._check_submissions(work, retry, found)  # before anything is written or paid
        failed: dict[str, list[int]] = {}
        for custom_id in request_file.requests:
            entries = work.requests[custom_id]
            vectors = results.vectors.get(custom_id) or [None] * len(entries)
            unrun = set(results.not_run.get(custom_id, ()))
            done = [p for p, v in enumerate(vectors) if v is not None]
            if done:
                written = [v for v in vectors if v is not None]
                tokens = results.tokens.get(custom_id, 0)
                self._write(custom_id, [entries[p] for p in done], written, tokens, progress)
            lost = [p for p, v in enumerate(vectors) if v is None and p not in unrun]
            if lost:
                failed[custom_id] = lost
        if failed:
            self._online(work, failed, results, progress)
        if retry:  # expired, failed or cancelled: only what never ran goes again
            self._resubmit(work, retry, found, results)
        request_file.state = "done"
        self._save(work, progress)
        self.api.cleanup(request_file.input_file_id, found)

    def _check_submissions(self, work: BatchWork, retry: list[str], found: BatchState) -> None:
        """Fail when a request to resubmit was already submitted :data:`MAX_SUBMISSIONS`
        times: a job that keeps ending early would otherwise be paid for forever."""
        tries = {c: sum(c in f.requests for f in work.files) for c in retry}
        spent = sorted(c for c, n in tries.items() if n >= MAX_SUBMISSIONS)
        if spent:
            raise EmbeddingError(
                f"{self.api.title} never ran request(s) {', '.join(spent[:5])} in "
                f"{MAX_SUBMISSIONS} submissions (the last, job {found.id}, ended "
                f"{found.status}). Nothing of that job is written; a retry of this task "
                "collects it again."
            )

    def _resubmit(
        self, work: BatchWork, retry: list[str], found: BatchState, results: BatchResults
    ) -> None:
        """A new file of the texts the job never ran (each request cut to those texts)."""
        texts = 0
        for custom_id in retry:
            entries = work.requests[custom_id]
            work.requests[custom_id] = [entries[p] for p in sorted(results.not_run[custom_id])]
            texts += len(work.requests[custom_id])
        self._add_file(work, retry)
        log.warning(
            "%s: job %s ended %s with %d text(s) of %d request(s) not run: resubmitted as %s",
            self.api.title,
            found.id,
            found.status,
            texts,
            len(retry),
            work.files[-1].name,
        )

    def _online(
        self,
        work: BatchWork,
        failed: dict[str, list[int]],
        results: BatchResults,
        progress: Progress,
    ) -> None:
        """Texts that failed inside a job, embedded online now (in one go: the provider
        packs them into requests within its limits and budget)."""
        why = {c: results.failed.get(c, "no vector returned") for c in failed}
        log.warning(
            "%d text(s) of %d request(s) failed inside the job (%s); embedding them online",
            sum(map(len, failed.values())),
            len(failed),
            "; ".join(f"{c}: {why[c]}" for c in list(failed)[:3]),
        )
        now: dict[str, tuple[list[list[Any]], list[str]]] = {}
        for custom_id, positions in failed.items():
            entries = work.requests[custom_id]
            now[custom_id] = self._texts_now([entries[p] for p in positions], progress)
        texts = [t for _, request_texts in now.values() for t in request_texts]
        try:
            vectors = self.provider.embed_documents(texts) if texts else []
        except Exception as error:
            names = ", ".join(failed)
            raise EmbeddingError(
                f"Requests {names} failed inside their job ({'; '.join(why.values())}) and "
                f"again online: {error}. Their points are not written; a retry of this task "
                "embeds them again (nothing else is resubmitted)."
            ) from error
        start = 0
        for custom_id, (entries, request_texts) in now.items():
            if entries:
                answer = vectors[start : start + len(entries)]
                self._write(custom_id, entries, answer, 0, progress, online=True)
                start += len(request_texts)
            work.retried_online += 1

    def _write(
        self,
        custom_id: str,
        entries: list[list[Any]],
        vectors: Sequence[Sequence[float]],
        tokens: int,
        progress: Progress,
        *,
        online: bool = False,
    ) -> None:
        """Write the points of ``entries`` (of request ``custom_id``, each ``[point id,
        hash of the text embedded]``) whose text is still the one embedded (insert-only)."""
        job = self.job
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
