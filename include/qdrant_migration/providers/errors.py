"""What can go wrong with a provider, as exceptions every module of the package can raise."""

from __future__ import annotations


class EmbeddingError(RuntimeError):
    """An embedding request failed in a way that retrying will not fix."""


class AuthError(EmbeddingError):
    """The provider refused the key (HTTP 401/403): fix the Airflow connection, not the data."""


class ProviderConfigError(ValueError):
    """The provider, model or options requested cannot work; the message says how to fix it."""
