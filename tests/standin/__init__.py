"""Wire-level stand-ins for paid embedding APIs, and pytest fixtures that start them.

Reuse from any test folder by importing the fixtures into its ``conftest.py``::

    from tests.standin import standin, standin_server  # noqa: F401

``standin_server`` starts one server per test session; ``standin`` hands it to a test
with faults, caps and the request log reset before and after.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.standin.server import (
    COHERE_KEY,
    OPENAI_KEY,
    RequestRecord,
    StandIn,
    cohere_values,
    expected_vector,
)


@pytest.fixture(scope="session")
def standin_server() -> Iterator[StandIn]:
    """One stand-in server (OpenAI and Cohere routes) for the whole session."""
    with StandIn() as server:
        yield server


@pytest.fixture
def standin(standin_server: StandIn) -> Iterator[StandIn]:
    """The session's stand-in, reset (no faults, caps, latency or log) around the test."""
    standin_server.reset()
    yield standin_server
    standin_server.reset()


__all__ = [
    "COHERE_KEY",
    "OPENAI_KEY",
    "RequestRecord",
    "StandIn",
    "cohere_values",
    "expected_vector",
    "standin",
    "standin_server",
]
