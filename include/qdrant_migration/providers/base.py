"""The one small interface every embedding provider implements.

A provider turns texts into vectors. It distinguishes stored documents from search
queries because many models embed them differently (Cohere's ``input_type``, the
``query:``/``passage:`` prefixes of E5 models). It declares its request limits so the
backfill can pack requests without knowing which provider it talks to.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypedDict

import include.qdrant_migration.providers.options as provider_options
from include.qdrant_migration.providers.batching import BatchAPI
from include.qdrant_migration.providers.errors import ProviderConfigError
from include.qdrant_migration.providers.packing import (
    TOO_LONG_POLICIES,
    ApproximateCounter,
    PreparedTexts,
    ProviderLimits,
    TokenCounter,
    prepare_texts,
)


class ModelLineage(TypedDict, total=False):
    """What an application needs to embed queries for vectors made by a provider."""

    provider: str
    model: str
    dimensions: int
    document_input: str
    query_input: str
    tokenizer: str
    base_url: str | None
    embedding_type: str


@dataclass(frozen=True)
class Credentials:
    """Secrets and endpoints resolved from an Airflow connection (never logged)."""

    conn_id: str
    api_key: str | None = None
    base_url: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: Builds the SDK client the connection's Airflow provider makes (its hook), if any.
    client: Callable[[], Any] | None = None

    def __repr__(self) -> str:  # never print the key, even by accident
        return f"Credentials(conn_id={self.conn_id!r}, base_url={self.base_url!r})"


#: Qdrant distances that rank unit-length vectors the same way as the cosine a model was
#: trained for. Euclid also ranks unit vectors like cosine, but its scores are not the
#: model's similarity (and a new vector of another norm would silently rank differently),
#: so only these two are accepted for a cosine-trained model.
COSINE_EQUIVALENT = ("Cosine", "Dot")


@dataclass(frozen=True)
class ModelInfo:
    """What a provider knows about a model before calling it.

    ``matryoshka_dimensions``: the sizes a Matryoshka-trained model was trained to be cut
    to (its first d values, renormalized, are a usable embedding); empty for any other
    model. ``distance``: the similarity the model was trained for (None: unknown, e.g. a
    model behind an OpenAI-compatible server); ``normalized``: it returns unit vectors.
    """

    name: str
    native_dimension: int | None
    matryoshka_dimensions: tuple[int, ...] = ()
    distance: str | None = "Cosine"
    normalized: bool = True

    @property
    def matryoshka(self) -> bool:
        return bool(self.matryoshka_dimensions)

    def trained_distances(self) -> tuple[str, ...] | None:
        """Qdrant distances this model's vectors are meant for; None when unknown."""
        if self.distance is None:
            return None
        if self.distance in COSINE_EQUIVALENT and self.normalized:
            return COSINE_EQUIVALENT
        return (self.distance,)


class EmbeddingProvider(ABC):
    """Base class: one subclass per backend, registered by ``name``.

    Subclasses import their SDK lazily (inside methods), so importing the registry
    costs nothing at DAG parse time.
    """

    name: ClassVar[str]
    #: Whether the provider needs an Airflow connection (API key, base URL).
    needs_connection: ClassVar[bool] = True
    #: The option keys the provider reads; any other key is refused when it is built.
    known_options: ClassVar[tuple[str, ...]] = ("too_long_policy",)
    #: Keys refused with a reason (keys of another kind of provider), instead of a typo hint.
    refused_options: ClassVar[Mapping[str, str]] = {}
    #: The provider's batch API (``embedding_mode`` ``batch``); None: it has none.
    batch_api: ClassVar[type[BatchAPI] | None] = None

    def __init__(
        self,
        model: str,
        *,
        dimensions: int | None = None,
        options: Mapping[str, Any] | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        """The one constructor of every provider; subclasses check and set up in
        :meth:`_configure`, so a bad model or option fails here, before any work.

        Unknown option keys are refused first; after :meth:`_configure` the too-long
        policy and the request limits are evaluated once, so an option out of range
        raises :class:`ProviderConfigError` here rather than in the middle of a backfill.
        """
        self.model = self.canonical_model(model)
        self.requested_dimensions = dimensions
        self.options: Mapping[str, Any] = dict(options or {})
        self.credentials = credentials
        provider_options.check_keys(
            self.options,
            known=self.known_options,
            refused=self.refused_options,
            provider=self.name,
        )
        self._configure()
        self.too_long_policy  # noqa: B018 - validate now, not mid-backfill
        self.limits  # noqa: B018 - limits read options lazily in some providers

    @classmethod
    def canonical_model(cls, model: str) -> str:
        """The provider's own name for ``model`` (resolving aliases of the same weights)."""
        return model

    def _configure(self) -> None:  # noqa: B027 - optional hook
        """Validate the model and options, and set up what the provider needs."""

    @property
    @abstractmethod
    def limits(self) -> ProviderLimits:
        """Request limits for this model."""

    @abstractmethod
    def model_info(self) -> ModelInfo:
        """Static facts about the model (native dimension, Matryoshka sizes)."""

    @abstractmethod
    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed texts that will be stored and searched."""

    @abstractmethod
    def embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed search queries (the application's side of the contract)."""

    @property
    def dimension(self) -> int:
        """The dimension of the vectors this provider returns, asking the model if needed."""
        if self.requested_dimensions:
            return self.requested_dimensions
        native = self.model_info().native_dimension
        if native:
            return native
        return len(self.embed_queries(["dimension probe"])[0])

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the provider will bill for ``texts``, counted by :meth:`token_counter`."""
        return sum(self.token_counter().count(texts))

    @property
    def too_long_policy(self) -> str:
        """The ``too_long_policy`` option (default ``truncate``), validated."""
        policy = str(self.options.get("too_long_policy", "truncate"))
        if policy not in TOO_LONG_POLICIES:
            raise ProviderConfigError(
                f"too_long_policy must be one of {', '.join(TOO_LONG_POLICIES)}; got {policy!r}."
            )
        return policy

    def token_counter(self) -> TokenCounter:
        """How this provider counts tokens per text; the default is an approximation."""
        return ApproximateCounter(bytes_per_token=4.0)

    def prepare(self, texts: Sequence[str]) -> PreparedTexts:
        """Apply the too-long policy before embedding, so skipped texts can be recorded.

        Returns which texts will be embedded (``indexes`` into ``texts``), the texts as
        they will be sent, and the ones left out (``skipped``: index, tokens, reason) or
        cut (``truncated``). ``embed_documents`` never drops a text silently: given a text
        that ``prepare`` would skip, remote providers raise ``packing.SkippedTextsError``
        (an :class:`EmbeddingError`), so callers embed ``[texts[i] for i in
        prepared.indexes]`` and record ``prepared.skipped`` themselves. This default
        counts approximately and leaves truncation to the model; providers with a
        tokenizer (OpenAI, the local models) count exactly and cut long texts themselves.
        """
        return prepare_texts(
            texts,
            counter=self.token_counter(),
            max_tokens_per_input=self.limits.max_tokens_per_input,
            policy=self.too_long_policy,
            truncate_locally=False,
        )

    def check_access(self) -> None:
        """Fail fast (wrong key, unknown model) with a message naming the connection."""
        self.embed_queries(["connection check"])

    def lineage(self) -> ModelLineage:
        """What an application needs to embed queries for vectors made by this provider."""
        return ModelLineage(
            provider=self.name,
            model=self.model,
            dimensions=self.dimension,
            document_input=self.document_input_type(),
            query_input=self.query_input_type(),
        )

    def document_input_type(self) -> str:
        return "document"

    def query_input_type(self) -> str:
        return "query"

    def batches(self) -> BatchAPI:
        """The batch API with this model and connection (``embedding_mode`` ``batch``)."""
        if self.batch_api is None:
            raise ProviderConfigError(f"Provider {self.name!r} has no batch API.")
        return self.batch_api(self)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients and models."""
