"""Relevance judges (rerankers), chosen by name from one registry.

Adding a backend means one module with a :class:`Reranker` subclass and one entry in
:data:`RERANKERS` (and its name in ``choices.JudgeName``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from include.qdrant_migration.providers import Credentials, ProviderConfigError
from include.qdrant_migration.rerankers.base import Reranker, Scores
from include.qdrant_migration.rerankers.cohere_reranker import CohereReranker
from include.qdrant_migration.rerankers.compatible_reranker import CompatibleReranker

RERANKERS: dict[str, type[Reranker]] = {
    cls.name: cls for cls in (CohereReranker, CompatibleReranker)
}


def get_reranker(
    name: str,
    model: str,
    *,
    options: Mapping[str, Any] | None = None,
    credentials: Credentials | None = None,
) -> Reranker:
    """Build the reranker registered as ``name``."""
    try:
        cls = RERANKERS[name]
    except KeyError:
        known = ", ".join(sorted(RERANKERS))
        raise ProviderConfigError(
            f"Unknown judge provider {name!r}; choose one of: {known}."
        ) from None
    return cls(model, options=options, credentials=credentials)


__all__ = ["RERANKERS", "Reranker", "Scores", "get_reranker"]
