"""The one small interface of a relevance judge: score documents for a query.

A reranker is not an embedding provider: it reads a query and documents together and
says how relevant each document is (a score, higher is more relevant). The query-log
replay (``checks/traffic.py``) asks it about the union of both models' results for each
query, so its scores are graded judgments the two rankings can be measured against.

Every backend shares the embedding providers' rate limiter and retries
(``providers/ratelimit.py``: budgets, ``Retry-After``, bounded retries, their option
keys) and how errors are told (401/403: the connection's key; other 4xx: at once; 429,
5xx, timeouts: retried). Its SDK is imported inside the backend's module, so importing
the registry costs nothing at DAG parse time. Secrets stay in :class:`Credentials`.
"""

from __future__ import annotations

import functools
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import include.qdrant_migration.providers.options as provider_options
import include.qdrant_migration.providers.ratelimit as ratelimit
from include.qdrant_migration.providers import Credentials, EmbeddingError, ProviderConfigError


@dataclass(frozen=True)
class Scores:
    """One call's answer: a score per document, in the documents' order, and what the
    provider billed for it (Cohere: search units; None when it does not say)."""

    scores: list[float]
    billed: float | None = None


class Reranker(ABC):
    """Base class: one subclass per backend, registered by ``name`` in ``RERANKERS``."""

    name: ClassVar[str]
    #: The option keys it reads: the limiter's budgets and retries.
    known_options: ClassVar[tuple[str, ...]] = ratelimit.OPTION_KEYS
    #: Documents one call may carry (more are split over calls).
    max_documents: ClassVar[int] = 1000
    #: What one call is billed in, and how many documents one unit covers (Cohere: a
    #: search unit is one query with up to 100 documents); None: not billed per call.
    billing_unit: ClassVar[str | None] = None
    documents_per_unit: ClassVar[int] = 100

    def __init__(
        self,
        model: str,
        *,
        options: Mapping[str, Any] | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.model = model
        self.options: Mapping[str, Any] = dict(options or {})
        self.credentials = credentials
        try:
            provider_options.check_keys(
                self.options, known=self.known_options, provider=f"Judge {self.name!r}"
            )
        except ProviderConfigError as error:
            raise ProviderConfigError(
                str(error).replace("provider_options", "judge.options")
            ) from None
        self.settings = ratelimit.LimiterSettings.from_options(self.options)
        self.conn_id = credentials.conn_id if credentials is not None else "<no connection>"
        self.what = f"judge {self.name} model {model!r} (Airflow connection {self.conn_id!r})"
        self._limiter = ratelimit.shared_limiter(
            ("rerank", self.name, self.conn_id, str(self.base_url()), model), self.settings.budget
        )
        self._sdk: Any = None
        self._sdk_lock = threading.Lock()
        self._configure()

    def _configure(self) -> None:  # noqa: B027 - optional hook
        """Check the model and options, and set up what the backend needs."""

    def base_url(self) -> str | None:
        return self.credentials.base_url if self.credentials is not None else None

    @property
    def api_key(self) -> str | None:
        return self.credentials.api_key if self.credentials is not None else None

    @property
    def concurrency(self) -> int:
        """Calls in flight at once (``max_concurrency``): the replay asks this many at a time."""
        return self.settings.budget.max_concurrency

    def score(self, query: str, documents: Sequence[str]) -> Scores:
        """How relevant each document is to ``query``, within the budgets, retried."""
        if not documents:
            return Scores([], 0.0)
        answers = [
            self._limiter.call(
                functools.partial(self._request, query, part),
                tokens=math.ceil((len(query) + sum(map(len, part))) / 4),  # an estimate
                retry=self.settings.retry,
                what=self.what,
            )
            for part in _parts(list(documents), self.max_documents)
        ]
        scores = [s for answer in answers for s in answer.scores]
        if len(scores) != len(documents):
            raise EmbeddingError(
                f"{self.what}: returned {len(scores)} scores for {len(documents)} documents."
            )
        billed = [a.billed for a in answers]
        return Scores(scores, None if None in billed else sum(b or 0.0 for b in billed))

    def units(self, documents: int) -> int:
        """Billing units of one query's call with ``documents`` documents (0: not billed)."""
        if self.billing_unit is None or documents <= 0:
            return 0
        return math.ceil(documents / self.documents_per_unit)

    def check_access(self) -> None:
        """One small call: a wrong key, host or model fails here, before any run."""
        self.score("connection check", ["connection check"])

    @abstractmethod
    def _request(self, query: str, documents: list[str], timeout: float) -> Scores:
        """One call; raises ``RetryableError`` for what may pass if retried."""

    def _refused(self, status: int, headers: Mapping[str, str], message: str) -> Exception:
        """An HTTP error answer as the limiter and the user need it."""
        return ratelimit.classify_http_error(
            status, headers, message, what=self.what, conn_id=self.conn_id, api_key=self.api_key
        )

    def _malformed(self, detail: object) -> EmbeddingError:
        said = ratelimit.redact(str(detail), self.api_key)[:200]
        return EmbeddingError(f"{self.what}: malformed response ({said}).")

    def close(self) -> None:
        with self._sdk_lock:
            if self._sdk is not None:
                self._sdk.close()
                self._sdk = None


@contextmanager
def transport_errors(timeout: float) -> Iterator[None]:
    """A timeout or a failed connection as the limiter retries them."""
    import httpx

    try:
        yield
    except httpx.TimeoutException:
        raise ratelimit.RetryableError(f"timed out after {timeout:.1f} s", kind="timeout") from None
    except httpx.TransportError as error:
        raise ratelimit.RetryableError(f"connection failed: {error}", kind="connection") from None


def _parts(documents: list[str], size: int) -> list[list[str]]:
    return [documents[i : i + size] for i in range(0, len(documents), size)]


def ordered(results: Sequence[tuple[int, float]], count: int, what: str) -> list[float]:
    """Scores in the documents' order from ``(index, score)`` pairs in any order."""
    scores: list[float | None] = [None] * count
    for index, score in results:
        if not 0 <= index < count or scores[index] is not None:
            raise EmbeddingError(f"{what}: a result names document {index} of {count}, or twice.")
        scores[index] = float(score)
    if any(s is None for s in scores):
        raise EmbeddingError(f"{what}: {scores.count(None)} of {count} documents have no score.")
    return [s for s in scores if s is not None]
