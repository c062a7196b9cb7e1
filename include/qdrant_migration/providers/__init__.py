"""Embedding providers, chosen by name from one registry.

Adding a backend means one module with an :class:`EmbeddingProvider` subclass and one
entry in :data:`PROVIDERS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from include.qdrant_migration.providers.base import (
    Credentials,
    EmbeddingProvider,
    ModelInfo,
    ModelLineage,
)
from include.qdrant_migration.providers.batching import BatchAPI
from include.qdrant_migration.providers.cohere_provider import CohereProvider
from include.qdrant_migration.providers.errors import AuthError, EmbeddingError, ProviderConfigError
from include.qdrant_migration.providers.local import LocalProvider
from include.qdrant_migration.providers.openai_provider import (
    OpenAICompatibleProvider,
    OpenAIProvider,
)
from include.qdrant_migration.providers.packing import ProviderLimits

PROVIDERS: dict[str, type[EmbeddingProvider]] = {
    cls.name: cls
    for cls in (LocalProvider, OpenAIProvider, OpenAICompatibleProvider, CohereProvider)
}


def get_provider(
    name: str,
    model: str,
    *,
    dimensions: int | None = None,
    options: Mapping[str, Any] | None = None,
    credentials: Credentials | None = None,
) -> EmbeddingProvider:
    """Build the provider registered as ``name``."""
    try:
        cls = PROVIDERS[name]
    except KeyError:
        known = ", ".join(sorted(PROVIDERS))
        raise ProviderConfigError(
            f"Unknown embedding provider {name!r}; choose one of: {known}."
        ) from None
    return cls(model, dimensions=dimensions, options=options, credentials=credentials)


def batch_api_of(provider: str) -> type[BatchAPI] | None:
    """The batch API of the provider registered as ``provider`` (None: it has none)."""
    cls = PROVIDERS.get(provider)
    return cls.batch_api if cls is not None else None


def canonical_model(provider: str, model: str) -> str:
    """``provider``'s own name for ``model`` (unknown providers: the name as given)."""
    cls = PROVIDERS.get(provider)
    return cls.canonical_model(model) if cls is not None else model


__all__ = [
    "PROVIDERS",
    "AuthError",
    "BatchAPI",
    "Credentials",
    "EmbeddingError",
    "EmbeddingProvider",
    "ModelInfo",
    "ModelLineage",
    "ProviderConfigError",
    "ProviderLimits",
    "batch_api_of",
    "canonical_model",
    "get_provider",
]
