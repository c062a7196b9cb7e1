"""``python -m tests.qdrant_server --version 1.15.0 [--backend engine|local]``: serve the
façade (prints its port)."""

from __future__ import annotations

from tests.qdrant_server.server import serve

if __name__ == "__main__":
    serve()
