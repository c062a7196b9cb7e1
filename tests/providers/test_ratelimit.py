"""The limiter: exact sliding-window budgets, server hints, bounded retries, thread safety.

Budgets run on a fake clock, from one thread or many: instant, exact, and free of
wall-clock bounds that a loaded machine could break. Concurrency is checked with events.
"""

from __future__ import annotations

import email.utils
import random
import threading
import types
from collections.abc import Callable, Sequence

import pytest

from include.qdrant_migration.providers import ratelimit
from include.qdrant_migration.providers.errors import AuthError, EmbeddingError, ProviderConfigError
from include.qdrant_migration.providers.ratelimit import (
    Budget,
    LimiterSettings,
    RateLimiter,
    RetriesExhaustedError,
    RetryableError,
    RetryPolicy,
    classify_http_error,
    parse_duration,
    parse_retry_after,
    shared_limiter,
)


class FakeClock:
    """A clock that only moves when someone sleeps (safe to share between threads)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += max(0.0, seconds)


def fake_limiter(budget: Budget) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock()
    return RateLimiter(budget, clock=clock, sleep=clock.sleep, rng=random.Random(1)), clock


def max_in_window(
    times: Sequence[float], window: float, weights: Sequence[float] | None = None
) -> float:
    """The most spent in any half-open window (t - window, t]."""
    weights = weights or [1.0] * len(times)
    return max(
        sum(w for u, w in zip(times, weights, strict=True) if t - window < u <= t) for t in times
    )


# -- budgets on a fake clock ---------------------------------------------------------------


def test_requests_per_minute_is_exact_over_any_window() -> None:
    limiter, clock = fake_limiter(Budget(requests_per_minute=5))
    times = [limiter.acquire(1).t for _ in range(12)]
    assert max_in_window(times, 60.0) == 5
    assert times[5] == times[0] + 60.0  # the sixth waits exactly for the first to expire
    assert clock.now - 1000.0 == 120.0


def test_smaller_window_paces_the_same_rate_more_smoothly() -> None:
    limiter, _ = fake_limiter(Budget(requests_per_minute=60, window_s=1.0))
    times = [limiter.acquire(1).t for _ in range(10)]
    assert max_in_window(times, 1.0) == 1
    assert times[-1] - times[0] == 9.0


def test_paced_start_sends_no_first_burst() -> None:
    """A task taking over a pool slot from one that spent its share evenly until now:
    together they stay within the allowance in every window (no burst at the handover)."""
    limiter, _ = fake_limiter(Budget(requests_per_minute=60, window_s=6.0, paced_start=True))
    times = [limiter.acquire(1).t for _ in range(12)]
    assert times == [1000.0 + i for i in range(1, 13)]  # one a second from the first
    previous = [1000.0 - 6.0 + i for i in range(1, 7)]  # the slot's last window, evenly
    assert max_in_window(previous + times, 6.0) == 6
    cold, _ = fake_limiter(Budget(requests_per_minute=60, window_s=6.0))
    burst = [cold.acquire(1).t for _ in range(12)]
    assert max_in_window(previous + burst, 6.0) == 12  # what a paced start prevents


def test_paced_start_paces_tokens() -> None:
    limiter, _ = fake_limiter(Budget(tokens_per_minute=600, window_s=6.0, paced_start=True))
    times = [limiter.acquire(10).t for _ in range(12)]  # 60 tokens a window, 10 a request
    assert times == pytest.approx([1000.0 + i for i in range(1, 13)])
    previous = [1000.0 - 6.0 + i for i in range(1, 7)]
    assert max_in_window(previous + times, 6.0, [10.0] * 18) <= 60


def test_tokens_per_minute_is_exact_and_an_oversized_request_goes_alone() -> None:
    limiter, _ = fake_limiter(Budget(tokens_per_minute=100))
    sizes = [40, 40, 40, 30, 100, 150, 10]
    spends = [limiter.acquire(n) for n in sizes]
    times = [s.t for s in spends]
    normal = [(t, n) for t, n in zip(times, sizes, strict=True) if n <= 100]
    assert max_in_window([t for t, _ in normal], 60.0, [n for _, n in normal]) <= 100
    big = times[sizes.index(150)]
    assert all(not big - 60.0 < t <= big for t in times if t != big)  # alone in its window


def test_settle_corrects_the_estimate() -> None:
    limiter, clock = fake_limiter(Budget(tokens_per_minute=100))
    spend = limiter.acquire(80)
    limiter.settle(spend, 10)  # the server billed far less than estimated
    limiter.acquire(80)
    assert clock.now == 1000.0
    assert limiter.stats()["tokens"] == 90


def test_pause_holds_every_caller() -> None:
    limiter, clock = fake_limiter(Budget())
    limiter.pause(5.0)
    limiter.acquire(1)
    assert clock.now == 1005.0


def test_ratelimit_headers_hold_requests_until_the_server_resets() -> None:
    limiter, clock = fake_limiter(Budget())
    limiter.observe_headers(
        {
            "x-ratelimit-remaining-requests": "10",
            "x-ratelimit-reset-requests": "2s",
            "X-RateLimit-Remaining-Tokens": "50",
            "X-RateLimit-Reset-Tokens": "500ms",
        }
    )
    limiter.acquire(10)
    assert clock.now == 1000.0  # fits what the server has left
    limiter.acquire(100)
    assert clock.now == 1000.5  # 40 tokens left < 100: wait for the token reset


def test_budget_validation() -> None:
    with pytest.raises(ProviderConfigError):
        Budget(max_concurrency=0)
    with pytest.raises(ProviderConfigError):
        Budget(requests_per_minute=1, window_s=10)  # less than one request per window
    with pytest.raises(ProviderConfigError):
        LimiterSettings.from_options({"max_retries": "lots"})
    settings = LimiterSettings.from_options(
        {"requests_per_minute": "300", "tokens_per_minute": 1e6, "retry_deadline_s": 5}
    )
    assert settings.budget.requests_per_minute == 300.0
    assert settings.retry.deadline_s == 5.0


def test_shared_limiter_is_one_per_endpoint_and_budget() -> None:
    a = shared_limiter(("openai", "conn", "m"), Budget(requests_per_minute=10))
    assert shared_limiter(("openai", "conn", "m"), Budget(requests_per_minute=10)) is a
    assert shared_limiter(("openai", "conn", "m"), Budget(requests_per_minute=20)) is not a
    assert shared_limiter(("openai", "other", "m"), Budget(requests_per_minute=10)) is not a


# -- retries on a fake clock ---------------------------------------------------------------


def always(error: Exception, attempts: list[float]):  # type: ignore[no-untyped-def]
    def attempt(timeout: float) -> str:
        attempts.append(timeout)
        raise error

    return attempt


def test_retries_are_bounded_in_count() -> None:
    limiter, clock = fake_limiter(Budget())
    attempts: list[float] = []
    policy = RetryPolicy(max_retries=3, deadline_s=1000, backoff_base_s=1, backoff_max_s=8)
    with pytest.raises(RetriesExhaustedError, match="3 retries"):
        limiter.call(
            always(RetryableError("HTTP 500", kind="server"), attempts),
            tokens=1,
            retry=policy,
            what="test",
        )
    assert len(attempts) == 4
    assert 3.5 <= clock.now - 1000.0 <= 7.0  # backoffs of ~1, ~2, ~4 s with jitter
    stats = limiter.stats()
    assert (stats["retries"], stats["server_errors"], stats["gave_up"]) == (3, 4, 1)


def test_retries_are_bounded_in_time() -> None:
    limiter, clock = fake_limiter(Budget())
    attempts: list[float] = []
    policy = RetryPolicy(max_retries=1000, deadline_s=30, timeout_s=8, backoff_base_s=1)
    with pytest.raises(RetriesExhaustedError, match="30 s retry deadline"):
        limiter.call(
            always(RetryableError("timed out", kind="timeout"), attempts),
            tokens=1,
            retry=policy,
            what="test",
        )
    assert clock.now - 1000.0 <= 30.0
    assert attempts[0] == 8.0
    assert all(1.0 <= t <= 8.0 for t in attempts)  # cut to the time left, at least 1 s


def test_retry_after_beyond_the_deadline_gives_up_at_once() -> None:
    limiter, clock = fake_limiter(Budget())
    attempts: list[float] = []
    error = RetryableError("HTTP 429", kind="rate_limited", retry_after_s=120)
    with pytest.raises(RetriesExhaustedError, match="next wait 12"):
        limiter.call(always(error, attempts), tokens=1, retry=RetryPolicy(deadline_s=60), what="t")
    assert len(attempts) == 1 and clock.sleeps == []


def test_retry_after_is_honoured_and_pauses_other_callers() -> None:
    limiter, clock = fake_limiter(Budget())
    failures = [RetryableError("HTTP 429", kind="rate_limited", retry_after_s=2.5)]

    def attempt(timeout: float) -> str:
        if failures:
            raise failures.pop()
        return "ok"

    assert limiter.call(attempt, tokens=1, retry=RetryPolicy(), what="t") == "ok"
    assert 2.5 <= clock.now - 1000.0 <= 2.75
    assert limiter.stats()["rate_limited"] == 1

    limiter.pause(1.0)  # a 429 seen by one caller holds the next one too
    before = clock.now
    limiter.acquire(1)
    assert clock.now == before + 1.0


def test_fail_fast_errors_are_not_retried() -> None:
    limiter, _ = fake_limiter(Budget())
    attempts: list[float] = []
    with pytest.raises(AuthError):
        limiter.call(always(AuthError("no"), attempts), tokens=1, retry=RetryPolicy(), what="t")
    assert len(attempts) == 1


def test_actual_tokens_settle_the_window() -> None:
    limiter, _ = fake_limiter(Budget(tokens_per_minute=1000))
    limiter.call(lambda timeout: 7, tokens=50, retry=RetryPolicy(), what="t", actual_tokens=int)
    assert limiter.stats()["tokens"] == 7


# -- headers and errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.25", 0.25)],
)
def test_parse_duration(value: str, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


def test_parse_duration_rejects_garbage() -> None:
    assert parse_duration("soon") is None
    assert parse_duration(None) is None


def test_parse_retry_after_variants(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_retry_after({"Retry-After": "0.35"}) == pytest.approx(0.35)
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({}) is None
    now = 1_700_000_000  # an HTTP date is relative to the wall clock: pin it
    monkeypatch.setattr(ratelimit, "time", types.SimpleNamespace(time=lambda: float(now)))
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after({"retry-after": date}) == 30.0
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after({"retry-after": past}) == 0.0


def test_classify_http_error() -> None:
    kwargs = {"what": "openai model 'm'", "conn_id": "my_conn", "api_key": "sk-secret-123"}
    rate = classify_http_error(429, {"retry-after": "2"}, "slow down", **kwargs)  # type: ignore[arg-type]
    assert isinstance(rate, RetryableError) and rate.retry_after_s == 2.0
    assert isinstance(classify_http_error(503, {}, "busy", **kwargs), RetryableError)  # type: ignore[arg-type]
    auth = classify_http_error(401, {}, "bad key sk-secret-123", **kwargs)  # type: ignore[arg-type]
    assert isinstance(auth, AuthError) and "my_conn" in str(auth)
    assert "sk-secret-123" not in str(auth)
    bad = classify_http_error(400, {}, "echo sk-secret-123 too long", **kwargs)  # type: ignore[arg-type]
    assert type(bad) is EmbeddingError and "my_conn" in str(bad) and "sk-secret" not in str(bad)
    missing = classify_http_error(404, {}, "no such model", **kwargs)  # type: ignore[arg-type]
    assert "/v1" in str(missing) and "my_conn" in str(missing)


# -- many threads ------------------------------------------------------------------------


def run_threads(count: int, target: Callable[[], None]) -> None:
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()


def test_concurrent_acquires_keep_the_request_budget() -> None:
    # 5 requests per 0.25 s window: 24 requests from 6 threads start in 5 windows.
    limiter, clock = fake_limiter(Budget(requests_per_minute=1200, window_s=0.25))
    times: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(4):
            t = limiter.acquire(1).t
            with lock:
                times.append(t)

    run_threads(6, worker)
    assert sorted(times) == [1000.0 + 0.25 * (i // 5) for i in range(24)]
    assert max_in_window(sorted(times), 0.25) == 5
    assert clock.now == 1001.0


def test_concurrent_acquires_keep_the_token_budget() -> None:
    limiter, _ = fake_limiter(Budget(tokens_per_minute=24_000, window_s=0.25))  # 100 a window
    spent: list[tuple[float, int]] = []
    lock = threading.Lock()

    def worker() -> None:
        for size in (30, 20, 30):
            t = limiter.acquire(size).t
            with lock:
                spent.append((t, size))

    run_threads(5, worker)
    spent.sort()
    assert len(spent) == 15
    assert max_in_window([t for t, _ in spent], 0.25, [n for _, n in spent]) <= 100
    assert spent[-1][0] - spent[0][0] >= 0.75  # 400 tokens at 100 a window: four windows


def test_max_concurrency_bounds_requests_in_flight() -> None:
    limiter = RateLimiter(Budget(max_concurrency=3))
    in_flight = 0
    peak = 0
    changed = threading.Condition()
    release = threading.Event()

    def attempt(timeout: float) -> None:
        nonlocal in_flight, peak
        with changed:
            in_flight += 1
            peak = max(peak, in_flight)
            changed.notify_all()
        release.wait(timeout=30)  # held until the test has looked
        with changed:
            in_flight -= 1

    def worker() -> None:
        for _ in range(3):
            limiter.call(attempt, tokens=1, retry=RetryPolicy(), what="t")

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        with changed:
            assert changed.wait_for(lambda: in_flight >= 3, timeout=30)
            # Eight threads are trying: none of the other five may get in while three hold
            # their slots (with a correct limiter this wait always times out).
            assert not changed.wait_for(lambda: in_flight > 3, timeout=0.1)
    finally:
        release.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert peak == 3
    assert limiter.stats()["succeeded"] == 24
