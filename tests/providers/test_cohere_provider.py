"""What only the Cohere provider does, through the real ``cohere`` SDK (ClientV2) to the stand-in.

Input types, ``output_dimension``, embedding types (int8, packed binary), truncation left
to the API, billed tokens, and the base URL. What Cohere shares with OpenAI (packing,
faults, retries, secrets) is in ``test_hosted_providers.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from include.qdrant_migration.providers import get_provider
from include.qdrant_migration.providers.base import Credentials
from include.qdrant_migration.providers.cohere_provider import CohereProvider, unpack_bits
from include.qdrant_migration.providers.errors import ProviderConfigError
from include.qdrant_migration.providers.packing import ApproximateCounter
from tests.providers.helpers import FAST, Closing, texts
from tests.standin import COHERE_KEY, StandIn, cohere_values, expected_vector

PATH = "/v2/embed"
V4 = "embed-v4.0"
V3 = "embed-english-v3.0"
DOC, QUERY = "search_document", "search_query"

Factory = Callable[..., CohereProvider]


@pytest.fixture
def make(standin: StandIn, closing: Closing) -> Factory:
    """Build Cohere providers pointed at the stand-in; closed after the test."""

    def factory(
        model: str = V4,
        *,
        dimensions: int | None = None,
        base_url: str | None = None,
        **options: Any,
    ) -> CohereProvider:
        provider = CohereProvider(
            model,
            dimensions=dimensions,
            options={**FAST, **options},
            credentials=Credentials("cohere_test", COHERE_KEY, base_url or standin.cohere_base_url),
        )
        closing(provider)
        return provider

    return factory


# -- input types, dimensions, embedding types ----------------------------------------------


def test_documents_and_queries_use_their_input_types(make: Factory, standin: StandIn) -> None:
    provider = make()
    assert provider.embed_documents(["hello"]) == [expected_vector(V4, "hello", DOC)]
    assert provider.embed_queries(["hello"]) == [expected_vector(V4, "hello", QUERY)]
    document, query = standin.requests(PATH)
    assert (document.input_type, query.input_type) == (DOC, QUERY)
    assert document.embedding_types == ["float"] and document.truncate == "END"
    assert document.dimensions is None


def test_output_dimension_for_embed_v4(make: Factory, standin: StandIn) -> None:
    provider = make(dimensions=512)
    assert provider.embed_documents(["short"]) == [expected_vector(V4, "short", DOC, 512)]
    assert standin.requests(PATH)[0].dimensions == 512


def test_dimensions_are_refused_where_the_model_cannot(make: Factory) -> None:
    with pytest.raises(ProviderConfigError, match=r"only embed-v4\.0"):
        make(V3, dimensions=512)
    with pytest.raises(ProviderConfigError, match="256, 512, 1024, 1536"):
        make(dimensions=300)
    with pytest.raises(ProviderConfigError, match="Unknown Cohere"):
        make("embed-v9")
    assert make(V3, dimensions=1024).dimension == 1024


@pytest.mark.parametrize("kind", ["int8", "uint8"])
def test_integer_embedding_types_come_back_as_floats(
    make: Factory, standin: StandIn, kind: str
) -> None:
    provider = make("embed-english-light-v3.0", embedding_types=kind)
    (vector,) = provider.embed_documents(["quantized"])
    reference = expected_vector("embed-english-light-v3.0", "quantized", DOC)
    assert vector == [float(x) for x in cohere_values(reference, kind)]
    assert standin.requests(PATH)[0].embedding_types == [kind]


@pytest.mark.parametrize("kind", ["binary", "ubinary"])
def test_binary_embedding_types_are_unpacked_to_signs(make: Factory, kind: str) -> None:
    provider = make(dimensions=256, embedding_types=[kind])
    (vector,) = provider.embed_documents(["packed"])
    reference = expected_vector(V4, "packed", DOC, 256)
    assert len(vector) == 256 == provider.dimension
    assert vector == [1.0 if x > 0 else -1.0 for x in reference]


def test_unpack_bits_order_and_range() -> None:
    assert unpack_bits([0b10000001]) == [1.0] + [-1.0] * 6 + [1.0]
    assert unpack_bits([-128], offset=128) == [-1.0] * 8
    with pytest.raises(ValueError):
        unpack_bits([300])


def test_bad_embedding_types_are_config_errors(make: Factory) -> None:
    with pytest.raises(ProviderConfigError):
        make(embedding_types="base64")
    with pytest.raises(ProviderConfigError):
        make(embedding_types=["float", "int8"])


# -- long texts ----------------------------------------------------------------------------


LONG = "lorem ipsum dolor sit amet " * 80  # about 720 estimated tokens, over v3's 512


def test_long_texts_are_truncated_by_the_api_by_default(make: Factory, standin: StandIn) -> None:
    provider = make(V3)
    prepared = provider.prepare(["short", LONG])
    assert prepared.truncated == (1,) and prepared.texts[1] == LONG  # sent whole
    vectors = provider.embed_documents(["short", LONG])
    assert standin.requests(PATH)[0].truncate == "END"
    cut = ApproximateCounter(3.0).truncate(LONG, 512)
    assert vectors[1] == expected_vector(V3, cut, DOC)


@pytest.mark.parametrize("policy", ["skip", "error"])
def test_skip_and_error_policies_ask_the_api_not_to_truncate(
    make: Factory, standin: StandIn, policy: str
) -> None:
    provider = make(V3, too_long_policy=policy)
    assert provider.embed_documents(["keep"]) == [expected_vector(V3, "keep", DOC)]
    assert standin.requests(PATH)[0].truncate == "NONE"


# -- billing -------------------------------------------------------------------------------


def test_billed_tokens_settle_the_budget(make: Factory, standin: StandIn) -> None:
    # Cohere's tokenizer is not available offline: the budget is charged an estimate (here
    # a deliberately high one) and corrected to what the response says was billed.
    provider = make(approx_bytes_per_token=1)
    batch = texts(5)
    provider.embed_documents(batch)
    billed = sum(r.tokens for r in standin.requests(PATH))
    assert provider.count_tokens(batch) > billed
    assert provider.limiter_stats()["tokens"] == billed


# -- base URL ------------------------------------------------------------------------------


def test_base_url_is_the_host_root(make: Factory, standin: StandIn) -> None:
    provider = make(base_url=standin.cohere_base_url + "/v2/")
    assert provider.base_url() == standin.cohere_base_url
    assert provider.embed_documents(["x"]) == [expected_vector(V4, "x", DOC)]


def test_co_api_url_is_read_when_the_client_is_built(
    standin: StandIn,
    monkeypatch: pytest.MonkeyPatch,
    closing: Closing,
) -> None:
    monkeypatch.setenv("CO_API_URL", standin.cohere_base_url)
    provider = get_provider(
        "cohere", V4, options=FAST, credentials=Credentials("cohere_env", COHERE_KEY)
    )
    closing(provider)
    assert isinstance(provider, CohereProvider)
    provider.check_access()
    assert standin.requests(PATH)[0].texts == ["connection check"]
