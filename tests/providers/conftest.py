"""Provider tests talk to the wire-level stand-in through the real SDKs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from include.qdrant_migration.providers import EmbeddingProvider, ratelimit
from tests.providers.helpers import Closing
from tests.standin import standin, standin_server  # noqa: F401


@pytest.fixture(autouse=True)
def _fresh_limiters() -> Iterator[None]:
    """Limiters are shared per process by design; a test must not inherit another's pauses."""
    ratelimit.reset_shared_limiters()
    yield
    ratelimit.reset_shared_limiters()


@pytest.fixture
def closing() -> Iterator[Closing]:
    """Register providers to be closed after the test, pass or fail (SDK clients hold sockets)."""
    built: list[EmbeddingProvider] = []
    yield built.append
    for provider in built:
        provider.close()
