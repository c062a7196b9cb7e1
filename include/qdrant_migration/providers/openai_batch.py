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
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from include.qdrant_migration.providers.batching import BatchAPI, BatchResults, BatchState
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


class OpenAIBatches(BatchAPI):
    """The Files and Batches API calls of one provider (its model, dimensions, client)."""

    title: ClassVar[str] = "OpenAI's Batch API"
    price_factor: ClassVar[float] = PRICE_FACTOR
    price_basis: ClassVar[str] = "half the online price, as OpenAI publishes it"
    window_s: ClassVar[int | None] = 24 * 3600
    beyond_a_day: ClassVar[str] = "longer than the Batch API's 24 h window, at twice the price"
    max_requests_per_file: ClassVar[int] = MAX_REQUESTS_PER_FILE
    max_file_bytes: ClassVar[int] = MAX_FILE_BYTES
    #: A JSON string's quotes and comma; the request line's envelope.
    text_overhead_bytes: ClassVar[int] = 8
    request_overhead_bytes: ClassVar[int] = 300

    def __init__(self, provider: BatchingProvider) -> None:
        super().__init__(provider)
        self.provider: BatchingProvider = provider

    @property
    def _client(self) -> Any:
        return self.provider.sdk_client()

    def request_lines(self, custom_id: str, texts: Sequence[str]) -> list[str]:
        body: dict[str, Any] = {
            "model": self.provider.model,
            "input": list(texts),
            "encoding_format": "float",
        }
        if (dimensions := self.provider.dimensions_to_send()) is not None:
            body["dimensions"] = dimensions
        line = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}
        return [json.dumps(line, ensure_ascii=False)]

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

    def create(self, input_id: str, name: str) -> str:
        """The id of the batch of ``name``: created now, or found from before (an uploaded
        file is ready to run at once)."""
        for found in self._batches():
            if (found.metadata or {}).get(METADATA_KEY) == name:
                return str(found.id)
        made = self._call(
            lambda: self._client.batches.create(
                input_file_id=input_id,
                endpoint=ENDPOINT,
                completion_window="24h",
                metadata={METADATA_KEY: name},
            )
        )
        return str(made.id)

    def _batches(self) -> Iterator[Any]:
        page = self._call(lambda: self._client.batches.list(limit=100))
        yield from page  # the SDK's pages follow ``after`` on their own

    def state(self, job_id: str) -> BatchState:
        found = self._call(lambda: self._client.batches.retrieve(job_id))
        errors = getattr(found, "errors", None)
        described = "; ".join(
            f"line {e.line}: {e.message}" for e in (getattr(errors, "data", None) or [])
        )
        status = str(found.status)
        return BatchState(
            str(found.id),
            status,
            running=status in RUNNING,
            refused=status == "failed",  # failed validation: nothing ran
            output_file_id=found.output_file_id,
            error_file_id=found.error_file_id,
            errors=described,
        )

    def results(self, state: BatchState, requests: Mapping[str, int]) -> BatchResults:
        """The answers in the batch's output and error files (read as JSON lines); a
        request is answered as a whole (all its vectors, or none)."""
        results = BatchResults()
        for file_id in (state.output_file_id, state.error_file_id):
            if not file_id:
                continue
            text = self._call(lambda f=file_id: self._client.files.content(f).text)
            for raw in text.splitlines():
                if raw.strip():
                    self._read_line(json.loads(raw), results)
        answered = set(results.vectors) | set(results.failed)
        not_run = {c for c in requests if c not in answered} | {
            c for c, why in results.failed.items() if why.startswith("not run")
        }
        for custom_id in not_run:
            results.failed.pop(custom_id, None)
        results.not_run = {c: list(range(requests[c])) for c in not_run if c in requests}
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

    def cleanup(self, input_id: str | None, state: BatchState) -> None:
        """Delete the batch's request, output and error files (one already gone is fine)."""
        import openai

        for file_id in (input_id, state.output_file_id, state.error_file_id):
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
