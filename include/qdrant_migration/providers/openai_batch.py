"""OpenAI's Batch API for embeddings: half the online price, its own large queue instead of
the per-minute limits, done within 24 h.

One request file (JSONL, one ``/v1/embeddings`` request per line, each with a
``custom_id``) is uploaded through the Files API and run as one batch. Submitting is made
idempotent by names: a file is uploaded under a name that says what it holds, and a batch
is created with that name in its metadata, so a task killed between two calls finds what
it already submitted (:meth:`OpenAIBatches.upload`, :meth:`OpenAIBatches.create`) instead
of paying twice.

The SDK is called directly: the OpenAI Airflow provider's hook helpers cover uploading and
creating, but not finding an earlier upload or batch by name, nor downloading output
files; its client (built by ``OpenAIHook`` for an ``openai`` connection) is what is used.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from include.qdrant_migration.providers.errors import EmbeddingError

if TYPE_CHECKING:
    import openai

ENDPOINT = "/v1/embeddings"
#: The Batch API's limits on one input file.
MAX_REQUESTS_PER_FILE = 50_000
MAX_FILE_BYTES = 200 * 1024 * 1024
#: Statuses of a batch still on its way.
RUNNING = ("validating", "in_progress", "finalizing", "cancelling")
#: The price of the Batch API relative to online requests.
PRICE_FACTOR = 0.5
METADATA_KEY = "qdrant_migration_file"


@dataclass(frozen=True)
class BatchState:
    """A batch as the API reports it."""

    id: str
    status: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: str = ""

    @property
    def running(self) -> bool:
        return self.status in RUNNING


@dataclass
class BatchResults:
    """What one finished batch answered, by ``custom_id``."""

    vectors: dict[str, list[list[float]]] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    #: Requests that ran and failed (a status other than 200): why.
    failed: dict[str, str] = field(default_factory=dict)
    #: Requests that never ran (the batch expired or was cancelled first).
    not_run: set[str] = field(default_factory=set)


class BatchingProvider(Protocol):
    """What the Batch API calls need of their provider (``OpenAIProvider`` is one).

    Declared here, so that this module never imports the provider's: the provider imports
    this one (:meth:`OpenAIProvider.batches`), one way.
    """

    @property
    def model(self) -> str: ...

    @property
    def what(self) -> str: ...

    def sdk_client(self) -> openai.OpenAI: ...

    def dimensions_to_send(self) -> int | None: ...

    def status_error(self, exc: openai.APIStatusError) -> Exception: ...


class OpenAIBatches:
    """The Files and Batches API calls of one provider (its model, dimensions, client)."""

    def __init__(self, provider: BatchingProvider) -> None:
        self.provider = provider

    @property
    def _client(self) -> Any:
        return self.provider.sdk_client()

    def request_line(self, custom_id: str, texts: Sequence[str]) -> str:
        body: dict[str, Any] = {
            "model": self.provider.model,
            "input": list(texts),
            "encoding_format": "float",
        }
        if (dimensions := self.provider.dimensions_to_send()) is not None:
            body["dimensions"] = dimensions
        line = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}
        return json.dumps(line, ensure_ascii=False)

    def upload(self, name: str, lines: Sequence[str]) -> str:
        """The id of the request file ``name``: uploaded now, or found from before."""
        for found in self._call(lambda: self._client.files.list(purpose="batch")):
            if found.filename == name:
                return str(found.id)
        content = ("\n".join(lines) + "\n").encode()
        if len(content) > MAX_FILE_BYTES:
            raise EmbeddingError(f"Request file {name} is {len(content)} bytes, over 200 MB.")
        made = self._call(lambda: self._client.files.create(file=(name, content), purpose="batch"))
        return str(made.id)

    def create(self, file_id: str, name: str) -> str:
        """The id of the batch of ``name``: created now, or found from before."""
        for found in self._batches():
            if (found.metadata or {}).get(METADATA_KEY) == name:
                return str(found.id)
        made = self._call(
            lambda: self._client.batches.create(
                input_file_id=file_id,
                endpoint=ENDPOINT,
                completion_window="24h",
                metadata={METADATA_KEY: name},
            )
        )
        return str(made.id)

    def _batches(self) -> Iterator[Any]:
        page = self._call(lambda: self._client.batches.list(limit=100))
        yield from page  # the SDK's pages follow ``after`` on their own

    def state(self, batch_id: str) -> BatchState:
        found = self._call(lambda: self._client.batches.retrieve(batch_id))
        errors = getattr(found, "errors", None)
        described = "; ".join(
            f"line {e.line}: {e.message}" for e in (getattr(errors, "data", None) or [])
        )
        return BatchState(
            str(found.id),
            str(found.status),
            found.output_file_id,
            found.error_file_id,
            described,
        )

    def results(self, state: BatchState, custom_ids: Sequence[str]) -> BatchResults:
        """The answers in the batch's output and error files (read as JSON lines)."""
        results = BatchResults()
        for file_id in (state.output_file_id, state.error_file_id):
            if not file_id:
                continue
            text = self._call(lambda f=file_id: self._client.files.content(f).text)
            for raw in text.splitlines():
                if raw.strip():
                    self._read_line(json.loads(raw), results)
        answered = set(results.vectors) | set(results.failed)
        results.not_run = {c for c in custom_ids if c not in answered} | {
            c for c, why in results.failed.items() if why.startswith("not run")
        }
        for custom_id in results.not_run:
            results.failed.pop(custom_id, None)
        return results

    def _read_line(self, line: dict[str, Any], results: BatchResults) -> None:
        custom_id = str(line.get("custom_id"))
        response = line.get("response") or {}
        error = line.get("error")
        if error and not response:  # never ran: expired or cancelled
            results.failed[custom_id] = f"not run: {error.get('code')}"
            return
        body = response.get("body") or {}
        if response.get("status_code") != 200:
            message = (body.get("error") or {}).get("message") or json.dumps(body)[:200]
            results.failed[custom_id] = f"status {response.get('status_code')}: {message}"
            return
        data = sorted(body.get("data") or [], key=lambda item: int(item["index"]))
        results.vectors[custom_id] = [list(item["embedding"]) for item in data]
        results.tokens[custom_id] = int((body.get("usage") or {}).get("prompt_tokens") or 0)

    def delete_files(self, file_ids: Sequence[str | None]) -> None:
        """Delete files of a finished batch (one already gone is fine)."""
        import openai

        for file_id in file_ids:
            if not file_id:
                continue
            try:
                self._client.files.delete(file_id)
            except openai.NotFoundError:
                continue
            except openai.APIStatusError as exc:
                raise self.provider.status_error(exc) from exc

    def _call(self, call: Any) -> Any:
        """One API call; an HTTP error becomes the provider's error (key redacted)."""
        import openai

        try:
            return call()
        except openai.APIStatusError as exc:
            raise self.provider.status_error(exc) from exc
        except openai.APIConnectionError as exc:
            raise EmbeddingError(f"{self.provider.what}: Batch API unreachable: {exc}") from exc
