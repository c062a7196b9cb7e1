"""What the hosted providers share: options, the rate limiter, and one SDK client per provider.

OpenAI (and OpenAI-compatible servers) and Cohere differ in their SDK and wire format, not
in how they are paced, retried and named in error messages; that part lives here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, ClassVar

import include.qdrant_migration.providers.packing as packing
import include.qdrant_migration.providers.ratelimit as ratelimit
from include.qdrant_migration.providers.base import EmbeddingProvider
from include.qdrant_migration.providers.ratelimit import LimiterSettings


@dataclass(frozen=True)
class Answer:
    """One successful response: vectors in input order, and the tokens the provider billed."""

    vectors: list[list[float]]
    tokens: int | None


class RemoteProvider(EmbeddingProvider):
    """A provider reached over the network through its SDK, behind a shared limiter."""

    #: The budget and retry keys of :mod:`.ratelimit` and the packing keys of :mod:`.packing`;
    #: subclasses add their own.
    known_options: ClassVar[tuple[str, ...]] = (*ratelimit.OPTION_KEYS, *packing.OPTION_KEYS)

    def _configure(self) -> None:
        super()._configure()
        self.settings = LimiterSettings.from_options(self.options)
        credentials = self.credentials
        self.conn_id = credentials.conn_id if credentials is not None else "<no connection>"
        self.what = f"{self.name} model {self.model!r} (Airflow connection {self.conn_id!r})"
        # One limiter per endpoint, model and budget in this process: every thread and every
        # provider object of a task shares it.
        self._limiter = ratelimit.shared_limiter(
            (self.name, self.conn_id, str(self.base_url()), self.model), self.settings.budget
        )
        self._sdk: Any = None
        self._sdk_lock = threading.Lock()

    def base_url(self) -> str | None:
        return self.credentials.base_url if self.credentials is not None else None

    def limiter_stats(self) -> dict[str, float]:
        """Requests, retries, 429s and waits of this endpoint's limiter in this process."""
        return self._limiter.stats()

    def close(self) -> None:
        with self._sdk_lock:
            if self._sdk is not None:
                self._close_sdk(self._sdk)
                self._sdk = None

    def _close_sdk(self, sdk: Any) -> None:
        sdk.close()
