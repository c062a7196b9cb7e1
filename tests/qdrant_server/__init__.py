"""A Qdrant REST façade in its own process, and the pytest fixture that starts it.

Reuse from any test folder by importing the fixture into its ``conftest.py``::

    from tests.qdrant_server import qdrant_server  # noqa: F401

``qdrant_server`` is session-scoped: one façade process per reported version. The default
reports :data:`DEFAULT_VERSION`; parametrize it indirectly for another::

    @pytest.mark.parametrize("qdrant_server", ["1.15.0", "1.17.0"], indirect=True)
    def test_something(qdrant_server: QdrantServer) -> None:
        qdrant_server.reset()
        with open_client(qdrant_server.settings()) as client:
            ...

The backend is :data:`DEFAULT_BACKEND` (``engine``: Qdrant's Rust engine with real HNSW
indexes); a tuple ``(version, backend)`` picks another::

    @pytest.mark.parametrize("qdrant_server", [("1.17.0", "local")], indirect=True)

The store is shared by the session's tests: call :meth:`QdrantServer.reset` first.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.qdrant_server.server import (
    BACKENDS,
    DEFAULT_BACKEND,
    DEFAULT_VERSION,
    QdrantServer,
    running_server,
)


@pytest.fixture(scope="session")
def qdrant_server(request: pytest.FixtureRequest) -> Iterator[QdrantServer]:
    """A façade reporting ``request.param``: a version, or ``(version, backend)``."""
    param = getattr(request, "param", DEFAULT_VERSION)
    version, backend = param if isinstance(param, tuple) else (param, DEFAULT_BACKEND)
    with running_server(version=str(version), backend=backend) as server:
        yield server


__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "DEFAULT_VERSION",
    "QdrantServer",
    "qdrant_server",
    "running_server",
]
