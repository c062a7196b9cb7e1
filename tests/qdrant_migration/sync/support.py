"""Helpers of the sync tests (backfill, catch-up, partitions, transforms).

The fast tier runs them with :class:`tests.fakes.HashingProvider` models (``old_model``
and ``new_model`` fixtures) where the model is not what is tested: the vectors are still
real, deterministic embeddings of each text, so "the target holds the new model's vector
of every text" is checked exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qdrant_client import QdrantClient

from include.qdrant_migration.spec import MigrationSpec
from tests.qdrant_migration.helpers import small_spec

#: The model name of the ``new_model`` fixture (a target named after it says what made it).
FAST_MODEL = "hash-new"


def fast_spec(**overrides: Any) -> MigrationSpec:
    """:func:`small_spec` for a migration to the ``new_model`` fixture."""
    params: dict[str, Any] = {"model": FAST_MODEL}
    params.update(overrides)
    return small_spec(**params)


class WritingClient:
    """The real client; on the n-th scroll the application writes to the source.

    Scrolls happen on the backfill's own thread, so the writes land while the backfill is
    running, behind its cursor, without racing the embedded store from two threads.
    """

    def __init__(
        self, client: QdrantClient, on_scroll: int, write: Callable[[QdrantClient], None]
    ) -> None:
        self._client = client
        self._on_scroll = on_scroll
        self._write = write
        self.scrolls = 0

    def scroll(self, *args: Any, **kwargs: Any) -> Any:
        self.scrolls += 1
        if self.scrolls == self._on_scroll:
            self._write(self._client)
        return self._client.scroll(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)
