"""OpenAI's Files and Batches APIs, as the stand-in serves them (``/v1/files``, ``/v1/batches``).

* ``POST /v1/files`` (multipart: ``purpose``, ``file``), ``GET /v1/files`` (``purpose``),
  ``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``, ``DELETE /v1/files/{id}``;
* ``POST /v1/batches`` (``input_file_id``, ``endpoint`` ``/v1/embeddings``,
  ``completion_window`` ``24h``, ``metadata``), ``GET /v1/batches`` (``after``, ``limit``),
  ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``.

A batch moves with time: ``validating``, then ``in_progress`` until :attr:`duration_s` has
passed since its creation; the first retrieve after that runs its requests (each logged
like an online request, on path :data:`BATCH_PATH`) and it is ``completed``, with an output
file (one line per request that succeeded) and an error file (one per request that
failed). A file that breaks the Batch API's rules (a line that is not a request to the
batch's endpoint, a repeated ``custom_id``, more than 50,000 requests or 200 MB) fails the
batch at validation, with the real ``errors`` object.

Faults for the next batch created: :meth:`BatchService.fail_requests_next` (some requests
answer 500 inside the batch), :meth:`BatchService.expire_next` (the batch expires after
running only its first requests; the rest are in the error file as ``batch_expired``).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qs

#: The path batch-run requests are logged under (``StandIn.requests(BATCH_PATH)``).
BATCH_PATH = "/v1/batches:embeddings"
MAX_REQUESTS = 50_000
MAX_FILE_BYTES = 200 * 1024 * 1024


@dataclass
class _File:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }


@dataclass
class _Batch:
    id: str
    input_file_id: str
    endpoint: str
    metadata: dict[str, str] | None
    created: float
    status: str = "validating"
    fail_requests: int = 0
    expire_after: int | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: dict[str, Any] | None = None
    counts: dict[str, int] = field(
        default_factory=lambda: {"total": 0, "completed": 0, "failed": 0}
    )
    stamps: dict[str, int] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        created = int(self.created)
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": self.errors,
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": created,
            "expires_at": created + 24 * 3600,
            "request_counts": dict(self.counts),
            "metadata": self.metadata,
            **self.stamps,
        }


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class BatchService:
    """The state behind the routes; ``embed(body)`` answers one embeddings request body
    (``(status, response body, texts, tokens)``), as the online route would."""

    def __init__(
        self,
        embed: Callable[[Mapping[str, Any]], tuple[int, dict[str, Any], list[str], int]],
        log: Callable[[str | None, list[str], int, int], None],
    ) -> None:
        self._embed = embed
        self._log = log
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.files: dict[str, _File] = {}
            self.batches: dict[str, _Batch] = {}
            self.duration_s = 2.0
            #: Faults by the number (from 0) of the batch they hit, in creation order.
            self._fail_requests: dict[int, int] = {}
            self._expire_after: dict[int, int] = {}
            #: Every batch created, in order (a test counts submissions).
            self.created: list[str] = []

    # -- faults --------------------------------------------------------------------------

    def fail_requests_next(self, count: int, *, batch: int | None = None) -> None:
        """In the next batch created (or batch number ``batch``, from 0), the first ``count``
        requests fail (500 in the error file)."""
        with self._lock:
            self._fail_requests[len(self.created) if batch is None else batch] = count

    def expire_next(self, after: int, *, batch: int | None = None) -> None:
        """The next batch created (or batch number ``batch``) expires having run only its
        first ``after`` requests."""
        with self._lock:
            self._expire_after[len(self.created) if batch is None else batch] = after

    # -- routes --------------------------------------------------------------------------

    def handle(
        self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, Any]:
        """``(status, JSON body or raw bytes)`` for one request to the Files/Batches API."""
        parts = [p for p in path.split("/") if p][1:]  # drop "v1"
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        with self._lock:
            if parts == ["files"] and method == "POST":
                return 200, self._upload(headers, body)
            if parts == ["files"] and method == "GET":
                purpose = params.get("purpose")
                data = [f.view() for f in self.files.values() if purpose in (None, f.purpose)]
                return 200, {"object": "list", "data": data, "has_more": False}
            if len(parts) >= 2 and parts[0] == "files":
                found = self.files.get(parts[1])
                if found is None:
                    raise ApiError(404, f"No such File object: {parts[1]}")
                if method == "DELETE":
                    del self.files[parts[1]]
                    return 200, {"id": found.id, "object": "file", "deleted": True}
                if parts[2:] == ["content"]:
                    return 200, found.content
                return 200, found.view()
            if parts == ["batches"] and method == "POST":
                return 200, self._create(json.loads(body or b"{}"))
            if parts == ["batches"] and method == "GET":
                return 200, self._list(params)
            if len(parts) >= 2 and parts[0] == "batches":
                batch = self.batches.get(parts[1])
                if batch is None:
                    raise ApiError(404, f"No batch found with id '{parts[1]}'.")
                if parts[2:] == ["cancel"] and method == "POST":
                    if batch.status in ("validating", "in_progress"):
                        batch.status = "cancelling"
                        batch.stamps["cancelling_at"] = int(time.time())
                    return 200, batch.view()
                self._advance(batch)
                return 200, batch.view()
        raise ApiError(404, f"Unknown path {path}")

    def _upload(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        head = f"Content-Type: {headers.get('content-type', '')}\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(head + body)
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            fields[str(name)] = (
                part.get_filename(),
                payload if isinstance(payload, bytes) else b"",
            )
        if "file" not in fields or "purpose" not in fields:
            raise ApiError(400, "Missing required parameter: 'file' and 'purpose'.")
        filename, content = fields["file"]
        created = _File(
            f"file-{uuid.uuid4().hex[:24]}",
            filename or "upload.jsonl",
            fields["purpose"][1].decode(),
            content,
        )
        self.files[created.id] = created
        return created.view()

    def _create(self, request: Mapping[str, Any]) -> dict[str, Any]:
        file_id = str(request.get("input_file_id"))
        if file_id not in self.files:
            raise ApiError(400, f"Invalid 'input_file_id': '{file_id}'. File not found.")
        if request.get("endpoint") != "/v1/embeddings" or request.get("completion_window") != "24h":
            raise ApiError(400, "The stand-in batches /v1/embeddings with a 24h window only.")
        batch = _Batch(
            f"batch_{uuid.uuid4().hex[:24]}",
            file_id,
            str(request["endpoint"]),
            request.get("metadata"),
            time.monotonic(),
            fail_requests=self._fail_requests.pop(len(self.created), 0),
            expire_after=self._expire_after.pop(len(self.created), None),
        )
        self.batches[batch.id] = batch
        self.created.append(batch.id)
        return batch.view()

    def _list(self, params: Mapping[str, str]) -> dict[str, Any]:
        ordered = list(reversed(list(self.batches.values())))  # newest first, as the API
        after = params.get("after")
        if after:
            ids = [b.id for b in ordered]
            ordered = ordered[ids.index(after) + 1 :] if after in ids else []
        limit = int(params.get("limit", 20))
        page = ordered[:limit]
        return {
            "object": "list",
            "data": [b.view() for b in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(ordered) > limit,
        }

    # -- running a batch -----------------------------------------------------------------

    def _advance(self, batch: _Batch) -> None:
        elapsed = time.monotonic() - batch.created
        if batch.status == "cancelling":
            self._finish(batch, run=0, status="cancelled", code="batch_cancelled")
        elif batch.status == "validating" and elapsed >= 0.1 * self.duration_s:
            lines = self._validate(batch)
            if lines is not None:
                batch.status = "in_progress"
                batch.stamps["in_progress_at"] = int(time.time())
                batch.counts["total"] = len(lines)
        elif batch.status == "in_progress" and elapsed >= self.duration_s:
            lines = self._lines(batch)
            if batch.expire_after is not None:
                self._finish(batch, run=batch.expire_after, status="expired", code="batch_expired")
            else:
                self._finish(batch, run=len(lines), status="completed", code=None)

    def _lines(self, batch: _Batch) -> list[dict[str, Any]]:
        content = self.files[batch.input_file_id].content
        return [json.loads(line) for line in content.splitlines() if line.strip()]

    def _validate(self, batch: _Batch) -> list[dict[str, Any]] | None:
        content = self.files[batch.input_file_id].content
        problems: list[dict[str, Any]] = []
        seen: set[str] = set()
        lines: list[dict[str, Any]] = []
        for number, raw in enumerate(content.splitlines(), start=1):
            try:
                line = json.loads(raw)
            except ValueError:
                problems.append(
                    {"code": "invalid_json_line", "line": number, "message": "Not JSON."}
                )
                continue
            custom_id = line.get("custom_id")
            if line.get("url") != batch.endpoint or line.get("method") != "POST":
                problems.append(
                    {
                        "code": "mismatched_endpoint",
                        "line": number,
                        "message": f"The url must be {batch.endpoint}.",
                    }
                )
            if not custom_id or custom_id in seen:
                problems.append(
                    {"code": "duplicate_custom_id", "line": number, "message": "Bad custom_id."}
                )
            seen.add(str(custom_id))
            lines.append(line)
        if len(lines) > MAX_REQUESTS or len(content) > MAX_FILE_BYTES:
            problems.append(
                {"code": "too_large", "line": None, "message": "More than 50,000 requests."}
            )
        if problems:
            batch.status = "failed"
            batch.errors = {"object": "list", "data": problems}
            batch.stamps["failed_at"] = int(time.time())
            return None
        return lines

    def _finish(self, batch: _Batch, *, run: int, status: str, code: str | None) -> None:
        output: list[str] = []
        errors: list[str] = []
        for position, line in enumerate(self._lines(batch)):
            custom_id = line["custom_id"]
            if position >= run:
                message = "This request could not be executed before the batch ended."
                entry = {"code": code, "message": message}
                errors.append(_line(custom_id, None, entry))
                batch.counts["failed"] += 1
                continue
            if position < batch.fail_requests:
                answer = {"error": {"message": "The server had an error.", "type": "server_error"}}
                errors.append(_line(custom_id, {"status_code": 500, "body": answer}, None))
                self._log(line["body"].get("model"), [], 0, 500)
                batch.counts["failed"] += 1
                continue
            status_code, body, texts, tokens = self._embed(line["body"])
            self._log(line["body"].get("model"), texts, tokens, status_code)
            target = output if status_code == 200 else errors
            target.append(_line(custom_id, {"status_code": status_code, "body": body}, None))
            batch.counts["completed" if status_code == 200 else "failed"] += 1
        batch.output_file_id = self._store(batch, "output", output)
        batch.error_file_id = self._store(batch, "error", errors)
        batch.status = status
        batch.stamps[f"{status}_at"] = int(time.time())

    def _store(self, batch: _Batch, kind: str, lines: list[str]) -> str | None:
        if not lines:
            return None
        made = _File(
            f"file-{uuid.uuid4().hex[:24]}",
            f"{batch.id}_{kind}.jsonl",
            "batch_output",
            ("\n".join(lines) + "\n").encode(),
        )
        self.files[made.id] = made
        return made.id


def _line(custom_id: str, response: Any, error: Any) -> str:
    request_id = f"req_{uuid.uuid4().hex[:12]}"
    if response is not None:
        response = {"request_id": request_id, **response}
    return json.dumps(
        {
            "id": f"batch_req_{uuid.uuid4().hex[:12]}",
            "custom_id": custom_id,
            "response": response,
            "error": error,
        }
    )
