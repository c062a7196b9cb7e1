"""The Cohere provider, through the real ``cohere`` SDK (ClientV2) to the stand-in."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from include.qdrant_migration.providers import get_provider
from include.qdrant_migration.providers.base import (
    AuthError,
    Credentials,
    EmbeddingError,
    ProviderConfigError,
)
from include.qdrant_migration.providers.cohere_provider import CohereProvider, unpack_bits
from include.qdrant_migration.providers.packing import ApproximateCounter, SkippedTextsError
from include.qdrant_migration.providers.ratelimit import RetriesExhaustedError
from tests.standin import COHERE_KEY, StandIn, cohere_values, expected_vector

PATH = "/v2/embed"
V4 = "embed-v4.0"
V3 = "embed-english-v3.0"
DOC, QUERY = "search_document", "search_query"
FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 5}

Factory = Callable[..., CohereProvider]


@pytest.fixture
def make(standin: StandIn) -> Iterator[Factory]:
    built: list[CohereProvider] = []

    def factory(
        model: str = V4,
        *,
        dimensions: int | None = None,
        conn_id: str = "cohere_test",
        key: str = COHERE_KEY,
        base_url: str | None = None,
        **options: Any,
    ) -> CohereProvider:
        provider = CohereProvider(
            model,
            dimensions=dimensions,
            options={**FAST, **options},
            credentials=Credentials(conn_id, key, base_url or standin.cohere_base_url),
        )
        built.append(provider)
        return provider

    yield factory
    for provider in built:
        provider.close()


def texts(n: int, prefix: str = "text") -> list[str]:
    return [f"{prefix} number {i}" for i in range(n)]


# -- input types, dimensions, embedding types ----------------------------------------------


def test_documents_and_queries_use_their_input_types(make: Factory, standin: StandIn) -> None:
    provider = make()
    assert provider.embed_documents(["hello"]) == [expected_vector(V4, "hello", DOC)]
    assert provider.embed_queries(["hello"]) == [expected_vector(V4, "hello", QUERY)]
    document, query = standin.requests(PATH)
    assert (document.input_type, query.input_type) == (DOC, QUERY)
    assert document.embedding_types == ["float"] and document.truncate == "END"
    assert document.dimensions is None
    lineage = provider.lineage()
    assert (lineage["document_input"], lineage["query_input"]) == (DOC, QUERY)
    assert lineage["embedding_type"] == "float" and lineage["dimensions"] == 1536


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


# -- packing and long texts ----------------------------------------------------------------


def test_at_most_96_texts_per_call(make: Factory, standin: StandIn) -> None:
    batch = texts(200)
    vectors = make().embed_documents(batch)
    assert vectors == [expected_vector(V4, t, DOC) for t in batch]
    assert [r.n_texts for r in standin.requests(PATH)] == [96, 96, 8]
    assert [t for r in standin.requests(PATH) for t in r.texts] == batch


LONG = "lorem ipsum dolor sit amet " * 80  # about 720 estimated tokens, over v3's 512


def test_long_texts_are_truncated_by_the_api_by_default(make: Factory, standin: StandIn) -> None:
    provider = make(V3)
    prepared = provider.prepare(["short", LONG])
    assert prepared.truncated == (1,) and prepared.texts[1] == LONG  # sent whole
    vectors = provider.embed_documents(["short", LONG])
    assert standin.requests(PATH)[0].truncate == "END"
    cut = ApproximateCounter(3.0).truncate(LONG, 512)
    assert vectors[1] == expected_vector(V3, cut, DOC)


def test_skip_policy_reports_long_and_empty_texts(make: Factory, standin: StandIn) -> None:
    provider = make(V3, too_long_policy="skip")
    batch = ["keep", LONG, " ", "keep too"]
    prepared = provider.prepare(batch)
    assert prepared.indexes == (0, 3)
    assert [s.index for s in prepared.skipped] == [1, 2]
    with pytest.raises(SkippedTextsError):
        provider.embed_documents(batch)
    assert standin.requests() == []
    provider.embed_documents([batch[i] for i in prepared.indexes])
    assert standin.requests(PATH)[0].truncate == "NONE"


# -- faults --------------------------------------------------------------------------------


def test_429_storm_with_fractional_retry_after_is_survived(make: Factory, standin: StandIn) -> None:
    provider = make(max_inputs_per_request=10)
    standin.fail_next(5, status=429, retry_after=0.05)
    batches = [texts(30, prefix=f"worker {k}") for k in range(3)]
    results: dict[int, list[list[float]]] = {}

    def worker(k: int) -> None:
        results[k] = provider.embed_documents(batches[k])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for k, batch in enumerate(batches):
        assert results[k] == [expected_vector(V4, t, DOC) for t in batch]
    embedded = standin.embedded_texts(PATH)
    assert len(embedded) == 90 and set(embedded.values()) == {1}
    assert provider.limiter_stats()["rate_limited"] == 5


def test_500_timeout_and_disconnect_are_retried(make: Factory, standin: StandIn) -> None:
    standin.fail_next(1, status=500)
    standin.slow_next(1, seconds=2.0)
    standin.disconnect_next(1)
    provider = make(timeout_s=0.5)
    assert provider.embed_queries(["q"]) == [expected_vector(V4, "q", QUERY)]
    stats = provider.limiter_stats()
    assert (stats["server_errors"], stats["timeouts"], stats["connection_errors"]) == (1, 1, 1)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("malformed_next", "malformed response"),
        ("wrong_dimension_next", "1535 dimensions, expected 1536"),
        ("wrong_count_next", "returned 1 vectors for 2 texts"),
    ],
)
def test_bad_answers_raise_before_returning(
    make: Factory, standin: StandIn, fault: str, message: str
) -> None:
    getattr(standin, fault)(1)
    with pytest.raises(EmbeddingError, match=message):
        make().embed_documents(["a", "b"])
    assert len(standin.requests(PATH)) == 1


def test_wrong_key_fails_at_once_naming_the_connection(make: Factory, standin: StandIn) -> None:
    secret = "co-wrong-0123456789abcdef"
    provider = make(conn_id="cohere_prod", key=secret)
    with pytest.raises(AuthError) as caught:
        provider.embed_documents(["a"])
    assert "'cohere_prod'" in str(caught.value) and secret not in str(caught.value)
    assert len(standin.requests(PATH)) == 1


def test_retry_count_bound(make: Factory, standin: StandIn) -> None:
    standin.fail_next(50, status=503)
    with pytest.raises(RetriesExhaustedError, match="1 retries"):
        make(max_retries=1).embed_documents(["a"])
    assert len(standin.requests(PATH)) == 2


def test_billed_tokens_settle_the_budget(make: Factory, standin: StandIn) -> None:
    provider = make()
    provider.embed_documents(texts(5))
    billed = sum(r.tokens for r in standin.requests(PATH))
    assert provider.limiter_stats()["tokens"] == billed


def test_refused_connection_is_retried_then_reported() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = CohereProvider(
        V4,
        options={**FAST, "max_retries": 2},
        credentials=Credentials("down_conn", COHERE_KEY, f"http://127.0.0.1:{port}"),
    )
    with pytest.raises(RetriesExhaustedError, match="connection failed") as caught:
        provider.embed_documents(["a"])
    assert "down_conn" in str(caught.value)
    assert provider.limiter_stats()["connection_errors"] == 3
    provider.close()


# -- base URL ------------------------------------------------------------------------------


def test_base_url_is_the_host_root(make: Factory, standin: StandIn) -> None:
    provider = make(base_url=standin.cohere_base_url + "/v2/")
    assert provider.base_url() == standin.cohere_base_url
    assert provider.embed_documents(["x"]) == [expected_vector(V4, "x", DOC)]


def test_co_api_url_is_read_when_the_client_is_built(
    standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CO_API_URL", standin.cohere_base_url)
    provider = get_provider(
        "cohere", V4, options=FAST, credentials=Credentials("cohere_env", COHERE_KEY)
    )
    assert isinstance(provider, CohereProvider)
    provider.check_access()
    assert standin.requests(PATH)[0].texts == ["connection check"]
    provider.close()


def test_missing_key_is_a_config_error() -> None:
    provider = CohereProvider(V4, credentials=Credentials("cohere_empty"))
    with pytest.raises(ProviderConfigError, match="cohere_empty"):
        provider.embed_documents(["a"])
