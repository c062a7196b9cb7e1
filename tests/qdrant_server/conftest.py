from __future__ import annotations

from tests.qdrant_server import qdrant_server  # noqa: F401
