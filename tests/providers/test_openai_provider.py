"""What only the OpenAI providers do, through the real ``openai`` SDK to the stand-in.

Base64 and float encodings, Matryoshka ``dimensions``, exact local truncation with
tiktoken, and OpenAI-compatible servers. What OpenAI shares with Cohere (packing, faults,
retries, secrets) is in ``test_hosted_providers.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from include.qdrant_migration.providers import PROVIDERS
from include.qdrant_migration.providers.base import Credentials
from include.qdrant_migration.providers.errors import EmbeddingError, ProviderConfigError
from include.qdrant_migration.providers.openai_provider import (
    OpenAICompatibleProvider,
    OpenAIProvider,
)
from tests.providers.helpers import FAST, Closing, texts
from tests.standin import OPENAI_KEY, StandIn, expected_vector

PATH = "/v1/embeddings"
SMALL = "text-embedding-3-small"

Factory = Callable[..., OpenAIProvider]


@pytest.fixture
def make(standin: StandIn, closing: Closing) -> Factory:
    """Build OpenAI providers pointed at the stand-in; closed after the test."""

    def factory(
        model: str = SMALL, *, dimensions: int | None = None, **options: Any
    ) -> OpenAIProvider:
        provider = OpenAIProvider(
            model,
            dimensions=dimensions,
            options={**FAST, **options},
            credentials=Credentials("openai_test", OPENAI_KEY, standin.openai_base_url),
        )
        closing(provider)
        return provider

    return factory


# -- encodings and dimensions --------------------------------------------------------------


def test_base64_default_gives_exact_vectors(make: Factory, standin: StandIn) -> None:
    provider = make()
    vectors = provider.embed_documents(["hello", "world"])
    assert vectors == [expected_vector(SMALL, "hello"), expected_vector(SMALL, "world")]
    (request,) = standin.requests(PATH)
    assert request.encoding_format == "base64"  # the SDK's default, decoded by the SDK
    assert request.dimensions is None
    assert request.tokens == 2  # usage.prompt_tokens, counted with cl100k_base


def test_float_encoding_gives_the_same_vectors(make: Factory, standin: StandIn) -> None:
    provider = make(encoding_format="float")
    assert provider.embed_queries(["hello"]) == [expected_vector(SMALL, "hello")]
    assert standin.requests(PATH)[0].encoding_format == "float"


def test_dimensions_are_sent_for_matryoshka_models(make: Factory, standin: StandIn) -> None:
    provider = make("text-embedding-3-large", dimensions=256)
    assert provider.dimension == 256
    (vector,) = provider.embed_documents(["short vector"])
    assert vector == expected_vector("text-embedding-3-large", "short vector", "", 256)
    assert standin.requests(PATH)[0].dimensions == 256
    make(dimensions=1536).embed_documents(["native"])  # the native size is not sent
    assert standin.requests(PATH)[1].dimensions is None


def test_dimensions_are_refused_where_the_model_cannot(make: Factory) -> None:
    with pytest.raises(ProviderConfigError, match="not Matryoshka"):
        make("text-embedding-ada-002", dimensions=512)
    with pytest.raises(ProviderConfigError, match=r"1\.\.1536"):
        make(dimensions=2048)
    with pytest.raises(ProviderConfigError, match="openai_compatible"):
        make("text-embedding-4-huge")
    assert make("text-embedding-ada-002", dimensions=1536).dimension == 1536


def test_model_info_limits_and_token_counts(make: Factory) -> None:
    provider = make()
    assert provider.model_info().native_dimension == 1536
    limits = provider.limits
    assert (limits.max_inputs_per_request, limits.max_tokens_per_request) == (2048, 300_000)
    assert limits.max_tokens_per_input == 8192
    assert provider.count_tokens(["hello world", "x"]) == 3  # exact, offline tiktoken
    assert make(tokens_per_minute=6000).limits.max_tokens_per_request == 6000


# -- texts that cannot go as they are ------------------------------------------------------


LONG = "lorem ipsum dolor " * 3000  # about 9000 tokens, over the 8192 limit


def test_too_long_text_is_truncated_exactly_by_default(make: Factory, standin: StandIn) -> None:
    provider = make()
    prepared = provider.prepare(["short", LONG])
    assert prepared.truncated == (1,) and prepared.skipped == ()
    assert prepared.tokens[1] <= 8192
    vectors = provider.embed_documents(["short", LONG])
    sent = standin.requests(PATH)[0]
    assert sent.texts[1] == prepared.texts[1] and LONG.startswith(sent.texts[1])
    assert 8180 <= sent.tokens - 1 <= 8192
    assert vectors[1] == expected_vector(SMALL, prepared.texts[1])


# -- OpenAI-compatible servers -------------------------------------------------------------


Compatible = Callable[..., OpenAICompatibleProvider]


@pytest.fixture
def compatible(standin: StandIn, closing: Closing) -> Compatible:
    """Build OpenAI-compatible providers at the stand-in's bare host (no /v1)."""

    def factory(model: str = "standin-minilm", **options: Any) -> OpenAICompatibleProvider:
        provider = OpenAICompatibleProvider(
            model,
            options={**FAST, **options},
            credentials=Credentials("vllm_local", OPENAI_KEY, standin.cohere_base_url),
        )
        closing(provider)
        return provider

    return factory


def test_compatible_server_probes_its_dimension_once(
    compatible: Compatible, standin: StandIn
) -> None:
    provider = compatible()
    assert provider.base_url() == standin.openai_base_url  # /v1 added to a bare host
    assert provider.dimension == 384 and provider.dimension == 384
    assert len(standin.requests(PATH)) == 1
    batch = texts(70)
    assert provider.embed_documents(batch) == [expected_vector("standin-minilm", t) for t in batch]
    assert [r.n_texts for r in standin.requests(PATH)][1:] == [32, 32, 6]  # default 32 per call
    assert provider.lineage()["base_url"] == standin.openai_base_url


def test_compatible_server_with_known_dimension_and_tokenizer(
    compatible: Compatible, standin: StandIn
) -> None:
    provider = compatible(
        native_dimension=384, tiktoken_encoding="cl100k_base", max_tokens_per_input=4
    )
    assert provider.token_counter().exact
    prepared = provider.prepare(["one two three four five six"])
    assert prepared.truncated == (0,) and prepared.texts == ("one two three four",)
    provider.embed_documents(["x"])
    assert len(standin.requests(PATH)) == 1  # no probe


def test_compatible_counts_approximately_by_default(compatible: Compatible) -> None:
    provider = compatible(approx_bytes_per_token=4)
    assert not provider.token_counter().exact
    assert provider.count_tokens(["12345678"]) == 2


def test_compatible_needs_a_base_url_and_reports_unknown_models(compatible: Compatible) -> None:
    assert PROVIDERS["openai_compatible"] is OpenAICompatibleProvider
    with pytest.raises(ProviderConfigError, match="needs a base URL"):
        OpenAICompatibleProvider("m", credentials=Credentials("vllm_local"))
    provider = compatible(model="no-such-model", native_dimension=8)
    with pytest.raises(EmbeddingError, match=r"HTTP 404.*'vllm_local'"):
        provider.embed_documents(["a"])
