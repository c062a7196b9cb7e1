"""The registry: one keyword constructor for every provider, and each provider's model names."""

from __future__ import annotations

import pytest

from include.qdrant_migration.providers import (
    PROVIDERS,
    ProviderConfigError,
    canonical_model,
    get_provider,
)
from include.qdrant_migration.providers.local import LocalProvider


def test_unknown_provider_is_refused_naming_the_known_ones() -> None:
    assert {"local", "openai", "openai_compatible", "cohere"} <= set(PROVIDERS)
    with pytest.raises(ProviderConfigError, match=r"'voyage'; choose one of: .*openai_compatible"):
        get_provider("voyage", "voyage-3")


def test_aliases_resolve_to_the_providers_own_model_name() -> None:
    # Two names for the same weights must not look like a model change to a migration.
    assert canonical_model("local", "sentence-transformers/all-MiniLM-L6-v2") == "all-MiniLM-L6-v2"
    assert canonical_model("local", "intfloat/multilingual-e5-small") == "multilingual-e5-small"
    assert canonical_model("openai", "text-embedding-3-small") == "text-embedding-3-small"
    assert canonical_model("no_such_provider", "model-x") == "model-x"
    # The constructor resolves the alias too (nothing is loaded until first use).
    provider = get_provider("local", "sentence-transformers/all-MiniLM-L6-v2")
    assert isinstance(provider, LocalProvider) and provider.model == "all-MiniLM-L6-v2"
    with pytest.raises(ProviderConfigError, match="Unknown local model 'no-such-model'"):
        LocalProvider("no-such-model")
