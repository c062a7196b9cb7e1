"""The one small interface a provider's batch API implements (``embedding_mode`` ``batch``).

:class:`~include.qdrant_migration.sync.batch.BatchBackfill` drives every batch API the
same way: a partition's texts are grouped into *requests* (each a ``custom_id`` and its
texts, in order), requests into *input files*, and each file runs as one *job*. What
differs from one API to the next lives in one subclass each, named by its provider
(``EmbeddingProvider.batch_api``): OpenAI's Batch API (:mod:`.openai_batch`), Cohere's
embed jobs (:mod:`.cohere_jobs`).

Every subclass keeps the same promises, so the backfill never submits twice:

* :meth:`BatchAPI.upload` and :meth:`BatchAPI.create` are idempotent by name: a try
  killed between two calls finds what it already uploaded or started;
* :meth:`BatchAPI.results` answers per text: a vector, or why none (it ran and failed:
  embedded online; it never ran: resubmitted);
* :meth:`BatchAPI.cleanup` deletes everything a job left on the provider's side.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class BatchState:
    """A job as its API reports it."""

    id: str
    status: str
    #: Still on its way: poll again later.
    running: bool
    #: Refused as a whole (its input broke the API's rules): nothing of it ran, and
    #: resubmitting the same input would be refused again.
    refused: bool = False
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: str = ""
    #: Tokens the job billed in all (when the API reports a total, not per request).
    tokens: int = 0


@dataclass
class BatchResults:
    """What one finished job answered, by ``custom_id``.

    A request's texts are answered one by one: ``vectors[custom_id][i]`` is the vector of
    its ``i``-th text, or None when that text got none. A text without a vector either
    never ran (its position is in ``not_run``: resubmitted) or ran and failed (embedded
    online; ``failed`` says why). A request absent from ``vectors`` got no vector at all.
    """

    vectors: dict[str, list[list[float] | None]] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    #: Requests with texts that ran and failed: why.
    failed: dict[str, str] = field(default_factory=dict)
    #: Requests with texts that never ran (the job expired, failed or was cancelled first):
    #: their positions.
    not_run: dict[str, list[int]] = field(default_factory=dict)


class BatchAPI(ABC):
    """One provider's batch API, bound to a provider (its model, options, connection)."""

    #: What logs, plans and errors call it ("OpenAI's Batch API").
    title: ClassVar[str]
    #: Its price relative to online requests, and where that figure comes from.
    price_factor: ClassVar[float]
    price_basis: ClassVar[str]
    #: Within how long a job is done (None: the API promises no window).
    window_s: ClassVar[int | None]
    #: Why to prefer it when online would take more than a day (the dry run's reason).
    beyond_a_day: ClassVar[str]
    #: Limits of one input file: requests and bytes; ``max_texts_per_file`` adds texts.
    max_requests_per_file: ClassVar[int]
    max_file_bytes: ClassVar[int]
    #: Bytes an input file spends besides the texts: per text, and per request.
    text_overhead_bytes: ClassVar[int]
    request_overhead_bytes: ClassVar[int]
    #: The models it runs (None: every model of its provider).
    models: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, provider: Any) -> None:
        self.provider = provider

    @classmethod
    def unavailable_for(cls, model: str) -> str | None:
        """Why this API cannot embed with ``model`` (None: it can)."""
        if cls.models is None or model in cls.models:
            return None
        return f"{model!r} is not among the models {cls.title} run ({', '.join(cls.models)})"

    def max_texts_per_file(self, dimension: int) -> int | None:
        """At most this many texts per input file for vectors of ``dimension`` (None: the
        request and byte limits are the only ones)."""
        return None

    @abstractmethod
    def request_lines(self, custom_id: str, texts: Sequence[str]) -> list[str]:
        """The input file's lines for one request."""

    @abstractmethod
    def upload(self, name: str, lines: Sequence[str]) -> str:
        """The id of the input file ``name``: uploaded now, or found from before."""

    @abstractmethod
    def create(self, input_id: str, name: str) -> str | None:
        """The id of the job of ``name``: created now, or found from before; None while the
        input is not ready to run yet (being validated): ask again on the next poll."""

    @abstractmethod
    def state(self, job_id: str) -> BatchState:
        """The job as the API reports it now."""

    @abstractmethod
    def results(self, state: BatchState, requests: Mapping[str, int]) -> BatchResults:
        """The answers of a finished job to ``requests`` (``custom_id`` -> its text count)."""

    @abstractmethod
    def cleanup(self, input_id: str | None, state: BatchState) -> None:
        """Delete what the job left on the provider's side: its input and its output (one
        already gone is fine)."""
