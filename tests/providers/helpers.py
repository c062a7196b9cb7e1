"""What the provider tests share: fast retry options, numbered texts, the closing fixture's type."""

from __future__ import annotations

from collections.abc import Callable

from include.qdrant_migration.providers import EmbeddingProvider

#: Fast retries so fault tests take milliseconds; a timeout far above any stand-in answer.
FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 5}


def texts(n: int, prefix: str = "text") -> list[str]:
    """``n`` distinct short texts, so the stand-in's log shows which were embedded."""
    return [f"{prefix} number {i}" for i in range(n)]


#: The ``closing`` fixture: hand it a provider and it is closed after the test.
Closing = Callable[[EmbeddingProvider], None]
