"""Per-process request and token budgets, bounded concurrency, and bounded retries.

The backfill embeds from several threads at once; one :class:`RateLimiter` per
(provider, connection, model, budget) is shared by all of them in a process
(:func:`shared_limiter`), so the budgets below hold for the whole process. Budgets across
parallel Airflow tasks are a pool's job, not this module's.

Budgets (from provider options, see :meth:`LimiterSettings.from_options`):

* ``requests_per_minute`` / ``tokens_per_minute``: exact sliding windows. In any window of
  ``rate_window_s`` seconds (60 by default) at most ``budget * rate_window_s / 60`` requests
  (tokens) are started. A sliding window is a token bucket whose refill is the expiry of
  what was spent one window ago, so the cap is never exceeded, not even by a burst after
  an idle minute. A smaller window paces more smoothly at the same average rate.
  A single request larger than the whole token allowance is let through alone, once
  nothing else is in the window, rather than never.
* ``paced_start`` (false unless set; the backfill tasks set it, see
  ``MigrationSpec.backfill_options``): the limiter starts as if its budget had been spent
  evenly over the last window, so its first requests are paced instead of sent in one
  burst. A task that takes over a pool slot from one that has just spent its share then
  adds nothing to that window: the pool's tasks together stay within the budget in every
  window, not only on average. It costs one request's spacing (window / allowance) at start.
* ``max_concurrency``: requests in flight at once.
* The server's view wins when it is stricter: a 429 pauses every caller for its
  ``Retry-After`` (``retry-after-ms`` and fractional seconds honoured), and
  ``x-ratelimit-remaining-*`` / ``x-ratelimit-reset-*`` headers hold requests that would
  not fit until the server's reset time.

Retries (``max_retries``, ``retry_deadline_s``, ``timeout_s``, ``backoff_base_s``,
``backoff_max_s``): 429, 5xx, timeouts and connection errors (raised by the provider as
:class:`RetryableError`) are retried with exponential backoff and jitter, at most
``max_retries`` times and never past ``retry_deadline_s`` after the first attempt
started: a retry whose wait would end past the deadline is not made, and each attempt's
timeout is cut to the time left (at least one second). Anything else the attempt
raises (400/401/403/404 become :class:`EmbeddingError` in the provider) propagates at
once. Every retry is logged at WARNING and counted in :meth:`RateLimiter.stats`.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from include.qdrant_migration.providers.errors import AuthError, EmbeddingError, ProviderConfigError
from include.qdrant_migration.providers.options import bool_option, float_option, int_option

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Option keys this module reads from a provider's ``options``.
OPTION_KEYS = (
    "requests_per_minute",
    "tokens_per_minute",
    "max_concurrency",
    "rate_window_s",
    "paced_start",
    "max_retries",
    "retry_deadline_s",
    "timeout_s",
    "backoff_base_s",
    "backoff_max_s",
)

#: A paced start spreads the token allowance over this many pieces of the window.
_PACED_START_PIECES = 60

#: No attempt gets less time than this, even close to the deadline.
MIN_ATTEMPT_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Budget:
    """What one process may spend. ``None`` means no local cap (the server's 429s still count)."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_concurrency: int = 4
    window_s: float = 60.0
    #: Start as if the budget had been spent evenly over the last window (no first burst).
    paced_start: bool = False

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ProviderConfigError("max_concurrency must be at least 1.")
        if self.window_s <= 0:
            raise ProviderConfigError("rate_window_s must be positive.")
        for name, value in (
            ("requests", self.requests_per_minute),
            ("tokens", self.tokens_per_minute),
        ):
            if value is not None and value <= 0:
                raise ProviderConfigError(f"{name}_per_minute must be positive (or unset).")
        if self.request_allowance is not None and self.request_allowance < 1:
            raise ProviderConfigError(
                "requests_per_minute * rate_window_s / 60 must be at least 1 request per window."
            )

    @property
    def request_allowance(self) -> float | None:
        """Requests allowed in any one window."""
        rpm = self.requests_per_minute
        return None if rpm is None else rpm * self.window_s / 60.0

    @property
    def token_allowance(self) -> float | None:
        """Tokens allowed in any one window."""
        tpm = self.tokens_per_minute
        return None if tpm is None else tpm * self.window_s / 60.0


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often one request is retried."""

    max_retries: int = 6
    deadline_s: float = 300.0
    timeout_s: float = 60.0
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ProviderConfigError("max_retries must be 0 or more.")
        if self.deadline_s <= 0 or self.timeout_s <= 0:
            raise ProviderConfigError("retry_deadline_s and timeout_s must be positive.")
        if self.backoff_base_s < 0 or self.backoff_max_s < self.backoff_base_s:
            raise ProviderConfigError("Need 0 <= backoff_base_s <= backoff_max_s.")

    def backoff(self, failures: int, rng: random.Random) -> float:
        """Exponential backoff with jitter in [50 %, 100 %] of the step, so callers spread out."""
        step = min(self.backoff_max_s, self.backoff_base_s * 2.0 ** (failures - 1))
        return step * rng.uniform(0.5, 1.0)


@dataclass(frozen=True)
class LimiterSettings:
    budget: Budget
    retry: RetryPolicy

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], *, default_timeout_s: float = 60.0
    ) -> LimiterSettings:
        """Read the budget and retry keys of a provider's options (see :data:`OPTION_KEYS`)."""
        budget = Budget(
            requests_per_minute=_budget(options, "requests_per_minute"),
            tokens_per_minute=_budget(options, "tokens_per_minute"),
            max_concurrency=int_option(options, "max_concurrency", 4, minimum=1),
            window_s=float_option(options, "rate_window_s", 60.0, minimum=0, inclusive=False),
            paced_start=bool_option(options, "paced_start", False),
        )
        retry = RetryPolicy(
            max_retries=int_option(options, "max_retries", 6, minimum=0),
            deadline_s=float_option(options, "retry_deadline_s", 300.0, minimum=0, inclusive=False),
            timeout_s=float_option(
                options, "timeout_s", default_timeout_s, minimum=0, inclusive=False
            ),
            backoff_base_s=float_option(options, "backoff_base_s", 1.0, minimum=0),
            backoff_max_s=float_option(options, "backoff_max_s", 60.0, minimum=0),
        )
        return cls(budget, retry)


def _budget(options: Mapping[str, Any], key: str) -> float | None:
    """A per-minute budget: a positive number, or unset (None, "" or 0: no local cap)."""
    if options.get(key) in (None, "", 0):
        return None
    return float_option(options, key, minimum=0, inclusive=False)


class RetryableError(Exception):
    """Raised by an attempt for a failure that may pass if retried.

    ``kind`` is ``rate_limited`` (429), ``server`` (5xx), ``timeout`` or ``connection``.
    """

    def __init__(
        self,
        reason: str,
        *,
        kind: str,
        status: int | None = None,
        retry_after_s: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(reason)
        self.kind = kind
        self.status = status
        self.retry_after_s = retry_after_s
        self.headers: Mapping[str, str] = headers or {}


class RetriesExhaustedError(EmbeddingError):
    """A request kept failing with retryable errors until the count or time bound was hit."""


class _Spend:
    """One request's entry in the token window; ``tokens`` is corrected by ``settle``."""

    __slots__ = ("live", "t", "tokens")

    def __init__(self, t: float, tokens: int) -> None:
        self.t = t
        self.tokens = tokens
        self.live = True


class RateLimiter:
    """Thread-safe budgets, concurrency and retries for one provider endpoint.

    ``clock`` and ``sleep`` are injectable so tests can run windows on a fake clock.
    """

    def __init__(
        self,
        budget: Budget,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.budget = budget
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        # One waiter at a time computes and sleeps; the others queue behind it, which keeps
        # big requests from being starved by small ones.
        self._turnstile = threading.Lock()
        self._slots = threading.BoundedSemaphore(budget.max_concurrency)
        self._requests: deque[float] = deque()
        self._spends: deque[_Spend] = deque()
        self._tokens_in_window = 0
        self._paused_until = 0.0
        self._server: dict[str, tuple[float, float]] = {}  # kind -> (remaining, reset_at)
        if budget.paced_start:
            self._spent_evenly_until(clock())
        self._stats: dict[str, float] = dict.fromkeys(
            (
                "requests",
                "succeeded",
                "retries",
                "rate_limited",
                "server_errors",
                "timeouts",
                "connection_errors",
                "gave_up",
                "tokens",
                "waited_s",
            ),
            0.0,
        )

    # -- budgets -------------------------------------------------------------------------

    def _spent_evenly_until(self, now: float) -> None:
        """Fill the window as if the whole allowance had been spent at an even pace up to
        ``now`` (``paced_start``): what expires next frees one request's (one piece's)
        room at a time, so the first requests go out at the budget's pace, not at once."""
        window = self.budget.window_s
        if (requests := self.budget.request_allowance) is not None:
            count = int(requests)
            self._requests.extend(now - window + (i + 1) * window / count for i in range(count))
        if (tokens := self.budget.token_allowance) is not None:
            pieces = _PACED_START_PIECES
            for i in range(pieces):
                spend = _Spend(now - window + (i + 1) * window / pieces, int(tokens // pieces))
                self._spends.append(spend)
                self._tokens_in_window += spend.tokens

    def acquire(self, tokens: int) -> _Spend:
        """Block until a request of ``tokens`` fits every budget, then record it."""
        with self._turnstile:
            started = self._clock()
            while True:
                with self._lock:
                    now = self._clock()
                    self._expire(now)
                    wait = self._wait_needed(now, tokens)
                    if wait <= 0:
                        self._stats["waited_s"] += now - started
                        return self._record(now, tokens)
                self._sleep(wait)

    def settle(self, spend: _Spend, actual_tokens: int | None) -> None:
        """Replace a request's estimated tokens with what the server reported."""
        if actual_tokens is None or actual_tokens < 0:
            return
        with self._lock:
            if spend.live:
                self._tokens_in_window += actual_tokens - spend.tokens
            self._stats["tokens"] += actual_tokens - spend.tokens
            spend.tokens = actual_tokens

    def pause(self, seconds: float) -> None:
        """Hold every caller of this limiter for ``seconds`` (a 429's Retry-After)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def observe_headers(self, headers: Mapping[str, str]) -> None:
        """Learn the server's remaining budget from ``x-ratelimit-*`` headers (OpenAI style)."""
        lowered = {k.lower(): v for k, v in headers.items()}
        now = self._clock()
        updates: dict[str, tuple[float, float]] = {}
        for kind in ("requests", "tokens"):
            remaining = lowered.get(f"x-ratelimit-remaining-{kind}")
            reset = parse_duration(lowered.get(f"x-ratelimit-reset-{kind}"))
            if remaining is None or reset is None:
                continue
            try:
                updates[kind] = (float(remaining), now + reset)
            except ValueError:
                continue
        if updates:
            with self._lock:
                self._server.update(updates)

    def stats(self) -> dict[str, float]:
        """Counters since creation: requests, retries, 429s, waits (for logs and benchmarks)."""
        with self._lock:
            return dict(self._stats)

    def _expire(self, now: float) -> None:
        horizon = now - self.budget.window_s
        while self._requests and self._requests[0] <= horizon:
            self._requests.popleft()
        while self._spends and self._spends[0].t <= horizon:
            spend = self._spends.popleft()
            spend.live = False
            self._tokens_in_window -= spend.tokens

    def _wait_needed(self, now: float, tokens: int) -> float:
        waits = [self._paused_until - now]
        window = self.budget.window_s
        allowance = self.budget.request_allowance
        if allowance is not None and len(self._requests) + 1 > allowance + 1e-9:
            # The request that must expire before one more fits.
            oldest_blocking = self._requests[len(self._requests) - int(allowance)]
            waits.append(oldest_blocking + window - now)
        waits.append(self._token_wait(now, tokens))
        local = {"requests": allowance, "tokens": self.budget.token_allowance}
        for kind, need in (("requests", 1), ("tokens", tokens)):
            if local[kind] is not None:
                # The local sliding window already paces this kind exactly. The server's
                # reset header is the time until the budget is *fully* restored: waiting for
                # it after every burst would idle a whole window (half the throughput);
                # a 429 with Retry-After still pauses everyone.
                continue
            remaining, reset_at = self._server.get(kind, (math.inf, 0.0))
            if now < reset_at and remaining < need:
                waits.append(reset_at - now)
        return max(waits)

    def _token_wait(self, now: float, tokens: int) -> float:
        allowance = self.budget.token_allowance
        if allowance is None or not self._spends:
            return 0.0
        excess = self._tokens_in_window + tokens - allowance
        if excess <= 0:
            return 0.0
        freed = 0
        for spend in self._spends:
            freed += spend.tokens
            if freed >= excess:
                return spend.t + self.budget.window_s - now
        # Larger than the whole allowance: wait until the window is empty.
        return self._spends[-1].t + self.budget.window_s - now

    def _record(self, now: float, tokens: int) -> _Spend:
        self._requests.append(now)
        spend = _Spend(now, tokens)
        if self.budget.token_allowance is not None:
            self._spends.append(spend)
            self._tokens_in_window += tokens
        else:
            spend.live = False
        for kind, need in (("requests", 1), ("tokens", tokens)):
            if kind in self._server:
                remaining, reset_at = self._server[kind]
                self._server[kind] = (remaining - need, reset_at)
        self._stats["requests"] += 1
        self._stats["tokens"] += tokens
        return spend

    # -- retries -------------------------------------------------------------------------

    def call(
        self,
        attempt: Callable[[float], T],
        *,
        tokens: int,
        retry: RetryPolicy,
        what: str,
        actual_tokens: Callable[[T], int | None] | None = None,
    ) -> T:
        """Run ``attempt(timeout_s)`` within the budgets, retrying :class:`RetryableError`.

        ``what`` names the request in logs and errors (provider, connection id, model);
        it must not contain secrets.
        """
        started: float | None = None
        failures = 0
        while True:
            with self._slots:
                spend = self.acquire(tokens)
                if started is None:
                    started = self._clock()
                left = retry.deadline_s - (self._clock() - started)
                try:
                    result = attempt(min(retry.timeout_s, max(left, MIN_ATTEMPT_TIMEOUT_S)))
                except RetryableError as exc:
                    failure = exc
                else:
                    if actual_tokens is not None:
                        self.settle(spend, actual_tokens(result))
                    self._count("succeeded")
                    return result
            failures += 1
            delay = self._plan_retry(failure, failures, started, retry, what)
            self._sleep(delay)

    def _plan_retry(
        self, failure: RetryableError, failures: int, started: float, retry: RetryPolicy, what: str
    ) -> float:
        """Count the failure and return how long to wait, or raise when a bound is hit."""
        self._count(_STAT_BY_KIND.get(failure.kind, "server_errors"))
        self.observe_headers(failure.headers)
        if failure.retry_after_s is not None and failure.retry_after_s >= 0:
            # Honour the server, plus a little jitter so waiting threads do not stampede.
            delay = failure.retry_after_s * (1.0 + self._rng.uniform(0.0, 0.1))
        else:
            delay = retry.backoff(failures, self._rng)
        if failure.kind == "rate_limited":
            self.pause(failure.retry_after_s if failure.retry_after_s is not None else delay)
        elapsed = self._clock() - started
        if failures > retry.max_retries or elapsed + delay > retry.deadline_s:
            self._count("gave_up")
            bound = (
                f"{retry.max_retries} retries"
                if failures > retry.max_retries
                else f"the {retry.deadline_s:g} s retry deadline (next wait {delay:.2f} s)"
            )
            raise RetriesExhaustedError(
                f"{what}: gave up after {failures} failed attempt(s) in {elapsed:.1f} s, "
                f"bounded by {bound}; last error: {failure}. Lower the load (tokens_per_minute, "
                f"max_concurrency) or raise max_retries / retry_deadline_s."
            ) from failure
        self._count("retries")
        log.warning(
            "%s: %s; retry %d/%d in %.2f s", what, failure, failures, retry.max_retries, delay
        )
        return delay

    def _count(self, key: str, amount: float = 1.0) -> None:
        with self._lock:
            self._stats[key] += amount


_STAT_BY_KIND = {
    "rate_limited": "rate_limited",
    "server": "server_errors",
    "timeout": "timeouts",
    "connection": "connection_errors",
}

_limiters: dict[tuple[Any, ...], RateLimiter] = {}
_limiters_lock = threading.Lock()


def shared_limiter(key: tuple[str, ...], budget: Budget) -> RateLimiter:
    """The process-wide limiter for ``key`` and ``budget``, created on first use.

    Provider instances built for the same endpoint and budget in one process share it,
    so the budget is per process, not per instance.
    """
    full_key = (*key, budget)
    with _limiters_lock:
        limiter = _limiters.get(full_key)
        if limiter is None:
            limiter = _limiters[full_key] = RateLimiter(budget)
        return limiter


def reset_shared_limiters() -> None:
    """Forget every shared limiter (tests: budgets and pauses must not leak between them)."""
    with _limiters_lock:
        _limiters.clear()


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | None) -> float | None:
    """Seconds in an OpenAI reset header ("1s", "6m0s", "20ms", "1h2m3.5s") or a plain number."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds, fractional, or date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        return max(0.0, email.utils.mktime_tz(parsed) - time.time())


def redact(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` (an API key) replaced, for error messages built from bodies."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    return text


def classify_http_error(
    status: int,
    headers: Mapping[str, str],
    server_message: str,
    *,
    what: str,
    conn_id: str,
    api_key: str | None,
) -> Exception:
    """Turn an HTTP error answer into a :class:`RetryableError` or a fail-fast error.

    429, 408, 409 and 5xx are retryable; 401/403 raise :class:`AuthError` and other 4xx
    :class:`EmbeddingError` at once, naming the Airflow connection and what to check.
    The server's message is shown only for errors that are not about the key (some
    providers echo part of it), and the key itself is always redacted.
    """
    said = redact(server_message, api_key).strip()[:300]
    if status == 429:
        return RetryableError(
            "HTTP 429 rate limited",
            kind="rate_limited",
            status=status,
            retry_after_s=parse_retry_after(headers),
            headers=headers,
        )
    if status in (408, 409) or status >= 500:
        return RetryableError(
            f"HTTP {status}: {said}",
            kind="server",
            status=status,
            retry_after_s=parse_retry_after(headers),
            headers=headers,
        )
    if status in (401, 403):
        return AuthError(
            f"{what}: the provider refused the credentials (HTTP {status}). Check the API key "
            f"(password) of Airflow connection {conn_id!r}"
            + (", and that its organization/project may use this model." if status == 403 else ".")
        )
    if status == 404:
        return EmbeddingError(
            f"{what}: HTTP 404 ({said}). Check the model name and the host of Airflow connection "
            f"{conn_id!r} (an OpenAI-compatible base URL ends in /v1; Cohere's is the host root)."
        )
    return EmbeddingError(
        f"{what}: the provider rejected the request (HTTP {status}): {said}. Check the model, "
        f"dimensions and options configured for Airflow connection {conn_id!r}."
    )
