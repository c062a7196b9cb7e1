"""Cohere's embed jobs: a partition's texts embedded on Cohere's side, outside the per-minute
limits, at the price of online requests.

One input file is one dataset (type ``embed-input``, JSON lines, one text per row) and one
embed job. What differs from OpenAI's Batch API (:mod:`.openai_batch`):

* **Rows keep no id of their own.** Each row carries a field :data:`ROW_ID`
  (``<custom_id>/<position>``) that the dataset is told to keep (``keep_fields``): Cohere
  copies kept fields into the job's output rows, so every vector is matched to its text by
  that id, not by order (Cohere documents that the output keeps the input's order; that is
  only the fallback, used when no output row has the id and the counts agree).
* **A dataset is validated before it can run.** :meth:`CohereEmbedJobs.create` answers None
  while the dataset is ``queued`` or ``processing``: the partition waits (rescheduled) and
  creates the job on a later poll. A dataset that fails validation fails the task with
  Cohere's reason; it is left for inspection (Cohere deletes datasets after 30 days).
* **Results are a dataset too**: Avro files at the download URLs of its parts, read with
  ``fastavro`` (as the SDK's own ``save_dataset`` does). A row whose embedding is missing
  or null in the output of a ``complete`` job failed: it is embedded online. Rows a
  ``failed`` or ``cancelled`` job never wrote never ran: they are resubmitted.
* **Names**: the dataset and the job are both named after the input file, so a try killed
  between two calls finds them (``datasets.list``, ``embed_jobs.list``) instead of paying
  twice. Both datasets, input and output, are deleted once the vectors are written.
* **Only the v3.0 models** run as embed jobs (Cohere's guide says so), with
  ``input_type="search_document"`` and ``truncate="END"`` (``NONE`` is not offered: under
  the ``skip`` and ``error`` policies too-long texts were already left out by the
  approximate count). ``embed-v4.0`` is refused at validation, with that reason.

Limits (docs.cohere.com/docs/datasets): a dataset up to 1.5 GB, 10 GB of datasets per
organization (outputs included), datasets deleted after 30 days. No row limit is
documented; a job is sized so that its output (8-byte doubles per dimension) stays near
:data:`OUTPUT_BUDGET_BYTES`, which keeps several partitions' jobs within the organization's
storage and one job's vectors within a worker's memory.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from include.qdrant_migration.providers.batching import BatchAPI, BatchResults, BatchState
from include.qdrant_migration.providers.errors import EmbeddingError

if TYPE_CHECKING:
    import cohere

log = logging.getLogger(__name__)

#: The field of each row that says which request and position it is.
ROW_ID = "qmm_row"
DATASET_TYPE = "embed-input"
MAX_DATASET_BYTES = 1536 * 1024 * 1024
#: About this many bytes of vectors per job's output dataset.
OUTPUT_BUDGET_BYTES = 256 * 1024 * 1024
#: The models embed jobs run (Cohere: "only compatible with our embed v3.0 models").
EMBED_JOB_MODELS = (
    "embed-english-v3.0",
    "embed-multilingual-v3.0",
    "embed-english-light-v3.0",
    "embed-multilingual-light-v3.0",
)
#: A job still on its way; a dataset still being validated.
RUNNING = ("processing", "cancelling")
VALIDATING = ("queued", "processing")
PAGE = 100


class JobsProvider(Protocol):
    """What the embed-job calls need of their provider (``CohereProvider`` is one).

    Declared here, so that this module never imports the provider's: the provider imports
    this one (its ``batch_api``), one way.
    """

    @property
    def model(self) -> str: ...

    @property
    def what(self) -> str: ...

    @property
    def embedding_type(self) -> str: ...

    def document_input_type(self) -> str: ...

    def sdk_client(self) -> cohere.ClientV2: ...

    def api_error(self, exc: Exception) -> Exception: ...

    def vector_of(self, values: Sequence[Any]) -> list[float]: ...


class CohereEmbedJobs(BatchAPI):
    """The Datasets and Embed Jobs API calls of one provider (its model, type, client)."""

    title: ClassVar[str] = "Cohere's embed jobs"
    price_factor: ClassVar[float] = 1.0
    price_basis: ClassVar[str] = (
        "Cohere publishes no discount for them: docs.cohere.com/docs/how-does-cohere-pricing-work, "
        "November 2026"
    )
    window_s: ClassVar[int | None] = None
    beyond_a_day: ClassVar[str] = (
        "longer than a day; an embed job runs on Cohere's side, outside the per-minute "
        "limits, at the same price"
    )
    #: No limit of its own: bytes and texts (:meth:`max_texts_per_file`) bound a dataset.
    max_requests_per_file: ClassVar[int] = sys.maxsize
    max_file_bytes: ClassVar[int] = MAX_DATASET_BYTES
    #: A row's envelope: ``{"text": "", "qmm_row": "p123-r12345/95"}`` and its newline.
    text_overhead_bytes: ClassVar[int] = 48
    request_overhead_bytes: ClassVar[int] = 0
    models: ClassVar[tuple[str, ...] | None] = EMBED_JOB_MODELS

    def __init__(self, provider: JobsProvider) -> None:
        super().__init__(provider)
        self.provider: JobsProvider = provider

    @property
    def _client(self) -> Any:
        return self.provider.sdk_client()

    def max_texts_per_file(self, dimension: int) -> int | None:
        return max(1, OUTPUT_BUDGET_BYTES // (8 * max(1, dimension)))

    def request_lines(self, custom_id: str, texts: Sequence[str]) -> list[str]:
        return [
            json.dumps({"text": text, ROW_ID: f"{custom_id}/{position}"}, ensure_ascii=False)
            for position, text in enumerate(texts)
        ]

    # -- submitting ----------------------------------------------------------------------

    def upload(self, name: str, lines: Sequence[str]) -> str:
        """The id of the dataset ``name``: uploaded now, or found from before."""
        for found in self._datasets():
            if found.name == name:
                return str(found.id)
        content = ("\n".join(lines) + "\n").encode()
        if len(content) > MAX_DATASET_BYTES:
            raise EmbeddingError(f"Dataset {name} is {len(content)} bytes, over 1.5 GB.")
        made = self._call(
            lambda: self._client.datasets.create(
                name=name,
                type=DATASET_TYPE,
                data=(name, content, "application/jsonl"),
                keep_fields=[ROW_ID],
            )
        )
        if not made.id:
            raise EmbeddingError(f"{self.provider.what}: dataset {name} created without an id.")
        return str(made.id)

    def _datasets(self) -> Iterator[Any]:
        offset = 0
        while True:
            page = self._call(
                lambda o=offset: self._client.datasets.list(
                    dataset_type=DATASET_TYPE, limit=PAGE, offset=o
                )
            )
            found = list(page.datasets or [])
            yield from found
            if len(found) < PAGE:
                return
            offset += len(found)

    def create(self, input_id: str, name: str) -> str | None:
        """The id of the embed job of ``name``: created now, or found from before; None
        while its dataset is still being validated."""
        dataset = self._call(lambda: self._client.datasets.get(input_id)).dataset
        status = str(dataset.validation_status)
        if status in VALIDATING:
            return None
        if status != "validated":
            raise EmbeddingError(
                f"Dataset {name} ({input_id}) failed Cohere's validation ({status}): "
                f"{dataset.validation_error or 'no reason given'}. Nothing of it ran; the "
                "dataset is left for inspection (Cohere deletes datasets after 30 days)."
            )
        listed = self._call(lambda: self._client.embed_jobs.list())
        for job in listed.embed_jobs or []:
            if job.name == name:
                return str(job.job_id)
        made = self._call(
            lambda: self._client.embed_jobs.create(
                model=self.provider.model,
                dataset_id=input_id,
                input_type=self.provider.document_input_type(),
                embedding_types=[self.provider.embedding_type],
                truncate="END",
                name=name,
            )
        )
        return str(made.job_id)

    # -- waiting and collecting ----------------------------------------------------------

    def state(self, job_id: str) -> BatchState:
        job = self._call(lambda: self._client.embed_jobs.get(job_id))
        status = str(job.status)
        billed = getattr(getattr(job.meta, "billed_units", None), "input_tokens", None)
        return BatchState(
            str(job.job_id),
            status,
            running=status in RUNNING,
            output_file_id=job.output_dataset_id,
            tokens=int(billed or 0),
        )

    def results(self, state: BatchState, requests: Mapping[str, int]) -> BatchResults:
        """The vectors in the job's output dataset, matched to requests by :data:`ROW_ID`."""
        rows = list(self._output_rows(state.output_file_id)) if state.output_file_id else []
        found, null = self._match(rows, requests)
        complete = state.status == "complete"
        results = BatchResults()
        for custom_id, count in requests.items():
            vectors = [found.get((custom_id, position)) for position in range(count)]
            if any(v is not None for v in vectors):
                results.vectors[custom_id] = vectors
            missing = [p for p, v in enumerate(vectors) if v is None]
            unrun = [] if complete else [p for p in missing if (custom_id, p) not in null]
            failed = len(missing) - len(unrun)
            if failed:
                results.failed[custom_id] = (
                    f"{failed} text(s) without an embedding in the output of embed job "
                    f"{state.id} ({state.status})"
                )
            if unrun:
                results.not_run[custom_id] = unrun
        self._share_tokens(state.tokens, results)
        return results

    def _output_rows(self, dataset_id: str) -> Iterator[dict[str, Any]]:
        import fastavro
        import httpx

        dataset = self._call(lambda: self._client.datasets.get(dataset_id)).dataset
        for part in dataset.dataset_parts or []:
            if not part.url:
                raise EmbeddingError(
                    f"{self.provider.what}: part {part.name} of output dataset {dataset_id} "
                    "has no download URL."
                )
            # A signed download URL: Cohere's key is not sent to whoever serves it.
            with tempfile.TemporaryFile() as spool:
                try:
                    with httpx.stream("GET", part.url, timeout=120.0) as answer:
                        answer.raise_for_status()
                        for chunk in answer.iter_bytes():
                            spool.write(chunk)
                except httpx.HTTPError as exc:
                    raise EmbeddingError(
                        f"{self.provider.what}: could not download part {part.name} of output "
                        f"dataset {dataset_id}: {exc}"
                    ) from exc
                spool.seek(0)
                for record in fastavro.reader(spool):
                    if isinstance(record, dict):
                        yield record

    def _match(
        self, rows: list[dict[str, Any]], requests: Mapping[str, int]
    ) -> tuple[dict[tuple[str, int], list[float]], set[tuple[str, int]]]:
        """Vectors by (custom_id, position), and the rows that came back without one."""
        keys: list[tuple[str, int] | None] = [_row_key(row.get(ROW_ID)) for row in rows]
        sent = [(c, p) for c, count in requests.items() for p in range(count)]
        if rows and not any(keys):
            if len(rows) != len(sent):
                log.warning(
                    "The output of %s has no %r field and %d rows for %d texts: none matched",
                    self.title,
                    ROW_ID,
                    len(rows),
                    len(sent),
                )
                return {}, set()
            log.warning("The output has no %r field: rows matched by order", ROW_ID)
            keys = list(sent)
        found: dict[tuple[str, int], list[float]] = {}
        null: set[tuple[str, int]] = set()
        for key, row in zip(keys, rows, strict=True):
            if key is None:
                continue
            values = (row.get("embeddings") or {}).get(self.provider.embedding_type)
            if values:
                found[key] = self.provider.vector_of(values)
            else:
                null.add(key)
        return found, null

    @staticmethod
    def _share_tokens(total: int, results: BatchResults) -> None:
        """The job's billed tokens, shared among its requests by the vectors they got."""
        counts = {c: sum(v is not None for v in vs) for c, vs in results.vectors.items()}
        texts = sum(counts.values())
        if not total or not texts:
            return
        for custom_id, count in counts.items():
            results.tokens[custom_id] = total * count // texts
        first = next(iter(counts))
        results.tokens[first] += total - sum(results.tokens.values())

    def cleanup(self, input_id: str | None, state: BatchState) -> None:
        """Delete the job's input and output datasets (one already gone is fine)."""
        import httpx
        from cohere.core.api_error import ApiError
        from cohere.errors import NotFoundError

        for dataset_id in (input_id, state.output_file_id):
            if not dataset_id:
                continue
            try:
                self._client.datasets.delete(dataset_id)
            except NotFoundError:
                continue
            except (ApiError, httpx.TransportError) as exc:
                raise self._mapped(exc) from exc

    def _call(self, call: Any) -> Any:
        """One API call; an HTTP error becomes the provider's error (key redacted)."""
        import httpx
        from cohere.core.api_error import ApiError

        try:
            return call()
        except (ApiError, httpx.TransportError) as exc:
            raise self._mapped(exc) from exc

    def _mapped(self, exc: Exception) -> Exception:
        import httpx

        if isinstance(exc, httpx.TransportError):
            return EmbeddingError(f"{self.provider.what}: {self.title} unreachable: {exc}")
        return self.provider.api_error(exc)


def _row_key(value: Any) -> tuple[str, int] | None:
    """``(custom_id, position)`` of a row's :data:`ROW_ID`, or None."""
    if not isinstance(value, str) or "/" not in value:
        return None
    custom_id, _, position = value.rpartition("/")
    return (custom_id, int(position)) if position.isdigit() else None
