"""A deterministic, in-process embedding provider for tests where the model is not what is
tested: no weights to load, the same vector for the same text on every machine.

It is a real embedding, only a crude one: a hashed bag of words (and word pairs),
normalized, so a text is nearest to itself and to texts that share its words. Two
``seed`` values make two unrelated vector spaces, like two different models.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import threading
from collections.abc import Sequence
from typing import ClassVar

from include.qdrant_migration.providers.base import EmbeddingProvider, ModelInfo
from include.qdrant_migration.providers.packing import ProviderLimits

_WORD = re.compile(r"\w+")


class HashingProvider(EmbeddingProvider):
    """``model`` is ``hash-<seed>`` or ``hash-<seed>-<dims>`` (default 64 dimensions)."""

    name: ClassVar[str] = "hashing"
    needs_connection: ClassVar[bool] = False

    def _configure(self) -> None:
        parts = self.model.split("-")
        self.seed = parts[1] if len(parts) > 1 else "0"
        self.size = self.requested_dimensions or (int(parts[2]) if len(parts) > 2 else 64)
        self.calls = 0
        self.texts_embedded = 0
        self._lock = threading.Lock()

    @property
    def limits(self) -> ProviderLimits:
        return ProviderLimits(max_inputs_per_request=256, max_tokens_per_input=512)

    def model_info(self) -> ModelInfo:
        return ModelInfo(self.model, native_dimension=self.size)

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        with self._lock:
            self.calls += 1
            self.texts_embedded += len(texts)
        return [self.vector(t) for t in texts]

    def embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.vector(t) for t in texts]

    def vector(self, text: str) -> list[float]:
        words = _WORD.findall(text.lower())
        features = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
        values = [0.0] * self.size
        for feature in features or [""]:
            digest = hashlib.blake2b(f"{self.seed}\x00{feature}".encode(), digest_size=8).digest()
            bucket = int.from_bytes(digest[:4], "little") % self.size
            values[bucket] += 1.0 if digest[4] & 1 else -1.0
        if not any(values):  # every feature cancelled out: still a unit vector
            values[0] = 1.0
        norm = math.sqrt(sum(v * v for v in values))
        return [v / norm for v in values]
