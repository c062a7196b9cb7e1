"""Cohere's Datasets and Embed Jobs APIs, as the stand-in serves them to the real SDK.

* ``POST /v1/datasets`` (query ``name``, ``type``, ``keep_fields``, ...; multipart ``data``),
  ``GET /v1/datasets`` (``datasetType``, ``limit``, ``offset``), ``GET /v1/datasets/{id}``
  (``{"dataset": ...}``), ``DELETE /v1/datasets/{id}``;
* ``POST /v1/embed-jobs`` (``model``, ``dataset_id``, ``input_type``, ``name``,
  ``embedding_types``, ``truncate``), ``GET /v1/embed-jobs``, ``GET /v1/embed-jobs/{id}``,
  ``POST /v1/embed-jobs/{id}/cancel``;
* ``GET`` :data:`PARTS_PATH` ``/{dataset}/{n}``: a part of an output dataset, Avro, at the
  part's ``url`` (as Cohere's signed download URLs, it needs no key).

A dataset moves with time: ``queued``, ``processing``, then (after :attr:`validation_s`)
``validated``, or ``failed`` with a ``validation_error`` when a row is not JSON, has no
``text`` string, lacks a ``keep_fields`` field, or the file is over 1.5 GB. Only an
``embed-input`` dataset of JSON lines is accepted. An embed job needs a validated dataset
and a v3.0 model (as Cohere's guide says); it is ``processing`` until :attr:`duration_s`
has passed since its creation, and the first look after that runs its rows: each embedded
like the online ``/v2/embed`` route would (the same deterministic vectors, texts over the
model's 512 tokens cut at the end), logged on :data:`JOB_PATH`. Its output dataset
(``embed-result``) holds one Avro row per row run, in the input's order: ``text``,
``embeddings`` (one array per requested type, the others null) and the kept fields, in
parts of :attr:`part_rows` rows.

Faults for the next job created (or job number ``job``, from 0, in creation order):
:meth:`CohereJobService.fail_rows_next` (its first rows fail: null embeddings, or left out
of the output), :meth:`CohereJobService.fail_job_next` (it ends ``failed`` having run only
its first rows). A cancelled job ends ``cancelled`` with no output. Lost replies and
dropped connections come from the stand-in's own faults (``lose_reply_next``,
``disconnect_next`` with a path such as ``"POST /v1/embed-jobs"``).
"""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qs

from include.qdrant_migration.providers.packing import ApproximateCounter

DATASETS_PATH, JOBS_PATH = "/v1/datasets", "/v1/embed-jobs"
#: Where output parts are downloaded from (not an API path: a stand-in for signed URLs).
PARTS_PATH = "/standin/dataset-parts"
PATHS = (DATASETS_PATH, JOBS_PATH, PARTS_PATH)
#: The path rows run by a job are logged under (``StandIn.requests(JOB_PATH)``).
JOB_PATH = "/v1/embed-jobs:embed"
MAX_DATASET_BYTES = 1536 * 1024 * 1024
JOB_MODELS = {
    "embed-english-v3.0": 1024,
    "embed-multilingual-v3.0": 1024,
    "embed-english-light-v3.0": 384,
    "embed-multilingual-light-v3.0": 384,
}
INPUT_TYPES = ("search_document", "search_query", "classification", "clustering")
EMBEDDING_TYPES = ("float", "int8", "uint8", "binary", "ubinary")
MAX_TOKENS = 512

#: ``log(path=, model=, texts=, tokens=, status=, input_type=)``: one line of the request log.
Log = Callable[..., None]


class JobApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _now() -> str:
    return datetime.now(tz=UTC).isoformat().replace("+00:00", "Z")


@dataclass
class _Dataset:
    id: str
    name: str
    type: str
    content: bytes
    filename: str
    keep_fields: list[str]
    created: float = field(default_factory=time.monotonic)
    created_at: str = field(default_factory=_now)
    status: str = "queued"
    error: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: Output datasets: the Avro schema and the parts' bytes.
    schema: dict[str, Any] | None = None
    parts: list[tuple[bytes, int]] = field(default_factory=list)

    def view(self, base_url: str) -> dict[str, Any]:
        parts = [
            {
                "id": f"{self.id}-part-{n}",
                "name": f"{self.name}-{n}.avro",
                "url": f"{base_url}{PARTS_PATH}/{self.id}/{n}",
                "index": n,
                "size_bytes": len(data),
                "num_rows": rows,
            }
            for n, (data, rows) in enumerate(self.parts)
        ]
        return {
            "id": self.id,
            "name": self.name,
            "created_at": self.created_at,
            "updated_at": self.created_at,
            "dataset_type": self.type,
            "validation_status": self.status,
            "validation_error": self.error,
            "schema": json.dumps(self.schema) if self.schema else None,
            "required_fields": ["text"],
            "preserve_fields": list(self.keep_fields),
            "dataset_parts": parts,
            "validation_warnings": [],
        }


@dataclass
class _Job:
    id: str
    name: str | None
    dataset_id: str
    model: str
    input_type: str
    embedding_types: list[str]
    truncate: str
    created: float = field(default_factory=time.monotonic)
    created_at: str = field(default_factory=_now)
    status: str = "processing"
    output_dataset_id: str | None = None
    tokens: int = 0
    fail_rows: int = 0
    drop_failed: bool = False
    fail_after: int | None = None

    def view(self) -> dict[str, Any]:
        return {
            "job_id": self.id,
            "name": self.name,
            "status": self.status,
            "created_at": self.created_at,
            "input_dataset_id": self.dataset_id,
            "output_dataset_id": self.output_dataset_id,
            "model": self.model,
            "truncate": self.truncate,
            "meta": {
                "api_version": {"version": "1"},
                "billed_units": {"input_tokens": self.tokens},
            },
        }


class CohereJobService:
    """The state behind the routes; rows run are reported through ``log``."""

    def __init__(self, log: Log) -> None:
        self._log = log
        self._lock = threading.Lock()
        self._counter = ApproximateCounter(3.0)  # as the online route counts
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.datasets: dict[str, _Dataset] = {}
            self.jobs: dict[str, _Job] = {}
            self.validation_s = 0.2
            self.duration_s = 1.0
            self.part_rows = 1000
            self._fail_rows: dict[int, tuple[int, bool]] = {}
            self._fail_after: dict[int, int] = {}
            #: Every job created, in order (a test counts submissions).
            self.created: list[str] = []

    # -- faults --------------------------------------------------------------------------

    def fail_rows_next(self, count: int, *, job: int | None = None, dropped: bool = False) -> None:
        """In the next job created (or job number ``job``), the first ``count`` rows fail:
        their output rows have null embeddings (``dropped``: they are left out)."""
        with self._lock:
            self._fail_rows[len(self.created) if job is None else job] = (count, dropped)

    def fail_job_next(self, after: int, *, job: int | None = None) -> None:
        """The next job created (or job number ``job``) ends ``failed`` having run only its
        first ``after`` rows."""
        with self._lock:
            self._fail_after[len(self.created) if job is None else job] = after

    # -- routes --------------------------------------------------------------------------

    def handle(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
        base_url: str,
    ) -> tuple[int, Any]:
        """``(status, JSON body or raw bytes)`` for one request."""
        params = parse_qs(query)
        with self._lock:
            if path.startswith(PARTS_PATH):
                return 200, self._part(path)
            parts = [p for p in path.split("/") if p][1:]  # drop "v1"
            if parts[0] == "datasets":
                return self._datasets(method, parts[1:], params, headers, body, base_url)
            return self._jobs(method, parts[1:], body)

    def _datasets(
        self,
        method: str,
        rest: list[str],
        params: dict[str, list[str]],
        headers: Mapping[str, str],
        body: bytes,
        base_url: str,
    ) -> tuple[int, Any]:
        if not rest and method == "POST":
            return 200, {"id": self._upload(params, headers, body)}
        if not rest and method == "GET":
            kind = params.get("datasetType", [None])[-1]
            found = [d for d in self.datasets.values() if kind in (None, d.type)]
            offset = int(float(params.get("offset", ["0"])[-1]))
            limit = int(float(params.get("limit", ["10"])[-1]))
            for dataset in found:
                self._validate(dataset)
            page = found[offset : offset + limit]
            return 200, {"datasets": [d.view(base_url) for d in page]}
        dataset = self.datasets.get(rest[0])
        if dataset is None:
            raise JobApiError(404, f"dataset {rest[0]} not found")
        if method == "DELETE":
            del self.datasets[dataset.id]
            return 200, {}
        self._validate(dataset)
        return 200, {"dataset": dataset.view(base_url)}

    def _upload(self, params: dict[str, list[str]], headers: Mapping[str, str], body: bytes) -> str:
        name, kind = params.get("name", [""])[-1], params.get("type", [""])[-1]
        if not name or not kind:
            raise JobApiError(400, "invalid request: name and type are required")
        head = f"Content-Type: {headers.get('content-type', '')}\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(head + body)
        files = {
            str(part.get_param("name", header="content-disposition")): part
            for part in message.iter_parts()
        }
        if "data" not in files:
            raise JobApiError(400, "invalid request: a data file is required")
        payload = files["data"].get_payload(decode=True)
        slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")[:40]
        made = _Dataset(
            f"{slug}-{uuid.uuid4().hex[:6]}",
            name,
            kind,
            payload if isinstance(payload, bytes) else b"",
            str(files["data"].get_filename() or ""),
            params.get("keep_fields", []),
        )
        self.datasets[made.id] = made
        return made.id

    def _validate(self, dataset: _Dataset) -> None:
        """Move an input dataset along: queued, processing, then validated or failed."""
        if dataset.status not in ("queued", "processing"):
            return
        elapsed = time.monotonic() - dataset.created
        if elapsed < self.validation_s:
            if elapsed >= 0.3 * self.validation_s:
                dataset.status = "processing"
            return
        problem = self._problem(dataset)
        dataset.status, dataset.error = ("failed", problem) if problem else ("validated", None)

    def _problem(self, dataset: _Dataset) -> str | None:
        if dataset.type != "embed-input":
            return f"the stand-in validates embed-input datasets only, not {dataset.type}"
        if not dataset.filename.endswith(".jsonl"):
            return f"unsupported file {dataset.filename!r}: the stand-in reads .jsonl only"
        if len(dataset.content) > MAX_DATASET_BYTES:
            return "the dataset is larger than 1.5GB"
        rows: list[dict[str, Any]] = []
        for number, raw in enumerate(dataset.content.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except ValueError:
                return f"row {number} is not valid JSON"
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                return f"row {number}: missing required field 'text'"
            missing = [f for f in dataset.keep_fields if f not in row]
            if missing:
                return f"row {number}: missing keep_fields {missing}"
            rows.append({k: row[k] for k in ("text", *dataset.keep_fields)})
        if not rows:
            return "the dataset has no rows"
        dataset.rows = rows
        return None

    def _part(self, path: str) -> bytes:
        dataset_id, _, number = path.removeprefix(PARTS_PATH + "/").partition("/")
        dataset = self.datasets.get(dataset_id)
        if dataset is None or not number.isdigit() or int(number) >= len(dataset.parts):
            raise JobApiError(404, f"no part {path}")
        return dataset.parts[int(number)][0]

    def _jobs(self, method: str, rest: list[str], body: bytes) -> tuple[int, Any]:
        if not rest and method == "POST":
            return 200, {"job_id": self._create(json.loads(body or b"{}"))}
        if not rest and method == "GET":
            for job in self.jobs.values():
                self._advance(job)
            return 200, {"embed_jobs": [j.view() for j in self.jobs.values()]}
        job = self.jobs.get(rest[0])
        if job is None:
            raise JobApiError(404, f"embed job {rest[0]} not found")
        if rest[1:] == ["cancel"] and method == "POST":
            if job.status == "processing":
                job.status = "cancelling"
            return 200, {}
        self._advance(job)
        return 200, job.view()

    def _create(self, request: Mapping[str, Any]) -> str:
        dataset = self.datasets.get(str(request.get("dataset_id")))
        if dataset is None:
            raise JobApiError(404, f"dataset {request.get('dataset_id')} not found")
        self._validate(dataset)
        if dataset.status != "validated" or dataset.type != "embed-input":
            raise JobApiError(400, f"invalid request: dataset {dataset.id} is not validated")
        model = str(request.get("model"))
        if model not in JOB_MODELS:
            raise JobApiError(400, f"invalid request: model {model} is not supported by embed jobs")
        if request.get("input_type") not in INPUT_TYPES:
            raise JobApiError(400, "invalid request: valid input_type must be provided")
        types = list(request.get("embedding_types") or ["float"])
        if any(t not in EMBEDDING_TYPES for t in types):
            raise JobApiError(400, "invalid request: invalid embedding_types")
        truncate = str(request.get("truncate") or "END")
        if truncate not in ("START", "END"):
            raise JobApiError(400, "invalid request: truncate must be START or END")
        number = len(self.created)
        fail_rows, dropped = self._fail_rows.pop(number, (0, False))
        job = _Job(
            str(uuid.uuid4()),
            request.get("name"),
            dataset.id,
            model,
            str(request["input_type"]),
            types,
            truncate,
            fail_rows=fail_rows,
            drop_failed=dropped,
            fail_after=self._fail_after.pop(number, None),
        )
        self.jobs[job.id] = job
        self.created.append(job.id)
        return job.id

    # -- running a job -------------------------------------------------------------------

    def _advance(self, job: _Job) -> None:
        if job.status == "cancelling":
            job.status = "cancelled"
        elif job.status == "processing" and time.monotonic() - job.created >= self.duration_s:
            self._run(job)

    def _run(self, job: _Job) -> None:
        from tests.standin.server import cohere_values, expected_vector  # (it imports this)

        dataset = self.datasets.get(job.dataset_id)
        rows = dataset.rows if dataset is not None else []
        ran = rows if job.fail_after is None else rows[: job.fail_after]
        output: list[dict[str, Any]] = []
        embedded: list[str] = []
        dimension = JOB_MODELS[job.model]
        for position, row in enumerate(ran):
            kept = {k: v for k, v in row.items() if k != "text"}
            empty = dict.fromkeys(EMBEDDING_TYPES)
            if position < job.fail_rows:
                if not job.drop_failed:
                    output.append({"text": row["text"], "embeddings": empty, **kept})
                continue
            text = str(row["text"])
            if self._counter.count([text])[0] > MAX_TOKENS:
                cut = self._counter.truncate(text, MAX_TOKENS)
            else:
                cut = text
            vector = expected_vector(job.model, cut, job.input_type, dimension)
            values = {kind: cohere_values(vector, kind) for kind in job.embedding_types}
            output.append({"text": text, "embeddings": {**empty, **values}, **kept})
            embedded.append(text)
        job.tokens = sum(min(MAX_TOKENS, c) for c in self._counter.count(embedded))
        if embedded:
            self._log(
                path=JOB_PATH,
                model=job.model,
                texts=embedded,
                tokens=job.tokens,
                status=200,
                input_type=job.input_type,
            )
        if output:
            job.output_dataset_id = self._store(job, output, dataset)
        job.status = "complete" if job.fail_after is None else "failed"

    def _store(self, job: _Job, rows: list[dict[str, Any]], source: _Dataset | None) -> str:
        import fastavro

        kept = list(source.keep_fields) if source is not None else []
        schema = _output_schema(kept)
        parsed = fastavro.parse_schema(schema)
        parts: list[tuple[bytes, int]] = []
        for start in range(0, len(rows), max(1, self.part_rows)):
            chunk = rows[start : start + self.part_rows]
            buffer = io.BytesIO()
            fastavro.writer(buffer, parsed, chunk)
            parts.append((buffer.getvalue(), len(chunk)))
        name = f"{job.name or job.id}-output"
        made = _Dataset(
            f"{uuid.uuid4().hex[:12]}-output",
            name,
            "embed-result",
            b"",
            "",
            kept,
            status="validated",
            schema=schema,
            parts=parts,
        )
        self.datasets[made.id] = made
        return made.id


def _output_schema(kept: list[str]) -> dict[str, Any]:
    """The Avro schema of an embed job's output rows (with the kept fields, as strings)."""
    numbers = {"float": "double"}
    embeddings = [
        {
            "name": kind,
            "type": ["null", {"type": "array", "items": numbers.get(kind, "int")}],
            "default": None,
        }
        for kind in EMBEDDING_TYPES
    ]
    return {
        "type": "record",
        "name": "EmbedOutput",
        "fields": [
            {"name": "text", "type": "string"},
            {
                "name": "embeddings",
                "type": {"type": "record", "name": "Embeddings", "fields": embeddings},
            },
            *({"name": name, "type": ["null", "string"], "default": None} for name in kept),
        ],
    }
