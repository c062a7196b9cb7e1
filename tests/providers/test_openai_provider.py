"""OpenAI and OpenAI-compatible providers, through the real ``openai`` SDK to the stand-in."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from include.qdrant_migration.providers import PROVIDERS, get_provider
from include.qdrant_migration.providers.base import (
    AuthError,
    Credentials,
    EmbeddingError,
    ProviderConfigError,
)
from include.qdrant_migration.providers.openai_provider import (
    OpenAICompatibleProvider,
    OpenAIProvider,
)
from include.qdrant_migration.providers.packing import SkippedTextsError, tiktoken_counter
from include.qdrant_migration.providers.ratelimit import RetriesExhaustedError
from tests.standin import OPENAI_KEY, StandIn, expected_vector

PATH = "/v1/embeddings"
SMALL = "text-embedding-3-small"
#: Fast retries so fault tests take milliseconds.
FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 5}

Factory = Callable[..., OpenAIProvider]


@pytest.fixture
def make(standin: StandIn) -> Iterator[Factory]:
    """Build OpenAI providers pointed at the stand-in; close them after the test."""
    built: list[OpenAIProvider] = []

    def factory(
        model: str = SMALL,
        *,
        dimensions: int | None = None,
        conn_id: str = "openai_test",
        key: str = OPENAI_KEY,
        **options: Any,
    ) -> OpenAIProvider:
        provider = OpenAIProvider(
            model,
            dimensions=dimensions,
            options={**FAST, **options},
            credentials=Credentials(conn_id, key, standin.openai_base_url),
        )
        built.append(provider)
        return provider

    yield factory
    for provider in built:
        provider.close()


def texts(n: int, prefix: str = "text") -> list[str]:
    return [f"{prefix} number {i}" for i in range(n)]


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
    lineage = provider.lineage()
    assert lineage["provider"] == "openai" and lineage["tokenizer"] == "tiktoken cl100k_base"


# -- packing -------------------------------------------------------------------------------


def test_requests_are_packed_by_count_in_order(make: Factory, standin: StandIn) -> None:
    batch = texts(10)
    vectors = make(max_inputs_per_request=3).embed_documents(batch)
    assert vectors == [expected_vector(SMALL, t) for t in batch]
    assert [r.n_texts for r in standin.requests(PATH)] == [3, 3, 3, 1]
    assert [t for r in standin.requests(PATH) for t in r.texts] == batch


def test_the_hard_limit_of_2048_inputs_is_obeyed(make: Factory, standin: StandIn) -> None:
    batch = texts(2100)
    vectors = make().embed_documents(batch)
    assert len(vectors) == 2100 and vectors[-1] == expected_vector(SMALL, batch[-1])
    assert [r.n_texts for r in standin.requests(PATH)] == [2048, 52]


def test_requests_are_packed_by_tokens(make: Factory, standin: StandIn) -> None:
    counter = tiktoken_counter("cl100k_base")
    assert counter is not None
    batch = [("word " * n).strip() for n in (30, 30, 30, 5, 60, 1)]
    make(max_tokens_per_request=64).embed_documents(batch)
    requests = standin.requests(PATH)
    assert all(r.tokens <= 64 for r in requests)
    assert [r.tokens for r in requests] == [60, 35, 61]  # 30+30 | 30+5 | 60+1
    assert [t for r in requests for t in r.texts] == batch


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


def test_skip_policy_reports_and_embed_refuses(make: Factory, standin: StandIn) -> None:
    provider = make(too_long_policy="skip")
    batch = ["first", LONG, "", "last"]
    prepared = provider.prepare(batch)
    assert prepared.indexes == (0, 3)
    assert [(s.index, s.reason.split(" ")[-1]) for s in prepared.skipped] == [
        (1, "cl100k_base)"),
        (2, "text"),
    ]
    with pytest.raises(SkippedTextsError) as caught:
        provider.embed_documents(batch)
    assert [s.index for s in caught.value.skipped] == [1, 2]
    assert standin.requests() == []  # nothing was sent, nothing can be half-written
    kept = [batch[i] for i in prepared.indexes]
    assert provider.embed_documents(kept) == [expected_vector(SMALL, t) for t in kept]


def test_error_policy_raises_on_prepare(make: Factory) -> None:
    with pytest.raises(SkippedTextsError, match="indexes 0"):
        make(too_long_policy="error").prepare([LONG])
    with pytest.raises(ProviderConfigError):
        make(too_long_policy="drop")


# -- faults --------------------------------------------------------------------------------


def test_429_storm_is_survived_and_every_text_embedded_once(
    make: Factory, standin: StandIn
) -> None:
    provider = make(max_inputs_per_request=8, max_concurrency=4)
    standin.fail_next(6, status=429, retry_after=0.05)
    batches = [texts(40, prefix=f"thread {k}") for k in range(4)]
    results: dict[int, list[list[float]]] = {}

    def worker(k: int) -> None:
        results[k] = provider.embed_documents(batches[k])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for k, batch in enumerate(batches):
        assert results[k] == [expected_vector(SMALL, t) for t in batch]
    embedded = standin.embedded_texts(PATH)
    assert set(embedded) == {t for batch in batches for t in batch}
    assert set(embedded.values()) == {1}
    assert len(standin.requests(PATH, status=429)) == 6
    assert provider.limiter_stats()["rate_limited"] == 6


def test_server_token_cap_is_survived(make: Factory, standin: StandIn) -> None:
    # The server allows 60 tokens per 0.3 s; each request carries about 20.
    standin.set_limits(tokens_per_minute=12_000, window_s=0.3)
    provider = make(max_inputs_per_request=4, max_retries=50, retry_deadline_s=20)
    batch = texts(40)
    assert provider.embed_documents(batch) == [expected_vector(SMALL, t) for t in batch]
    assert set(standin.embedded_texts(PATH).values()) == {1}
    assert len(standin.embedded_texts(PATH)) == 40


def test_local_token_budget_avoids_the_servers_429s(make: Factory, standin: StandIn) -> None:
    standin.set_limits(tokens_per_minute=12_000, window_s=0.3)
    # Half the server's cap: the server sees each request a little later than the limiter
    # does, and jitter must not push two local windows into one server window.
    provider = make(max_inputs_per_request=4, tokens_per_minute=6_000, rate_window_s=0.3)
    batch = texts(24)
    assert provider.embed_documents(batch) == [expected_vector(SMALL, t) for t in batch]
    assert standin.requests(PATH, status=429) == []


def test_500s_are_retried(make: Factory, standin: StandIn) -> None:
    standin.fail_next(2, status=500)
    provider = make()
    assert provider.embed_documents(["a"]) == [expected_vector(SMALL, "a")]
    assert [r.status for r in standin.requests(PATH)] == [500, 500, 200]
    assert provider.limiter_stats()["server_errors"] == 2


def test_timeouts_and_dropped_connections_are_retried(make: Factory, standin: StandIn) -> None:
    standin.slow_next(1, seconds=2.0)
    standin.disconnect_next(1)
    provider = make(timeout_s=0.5)
    assert provider.embed_documents(["a"]) == [expected_vector(SMALL, "a")]
    stats = provider.limiter_stats()
    assert (stats["timeouts"], stats["connection_errors"], stats["succeeded"]) == (1, 1, 1)


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
    assert len(standin.requests(PATH)) == 1  # not retried: the same answer would come back


def test_wrong_key_fails_at_once_naming_the_connection(make: Factory, standin: StandIn) -> None:
    secret = "sk-wrong-0123456789abcdef"
    provider = make(conn_id="openai_prod", key=secret)
    with pytest.raises(AuthError) as caught:
        provider.embed_documents(["a"])
    message = str(caught.value)
    assert "'openai_prod'" in message and "HTTP 401" in message
    assert secret not in message and secret[-8:] not in message
    assert secret not in repr(provider.credentials)
    assert len(standin.requests(PATH)) == 1
    with pytest.raises(AuthError):
        provider.check_access()


def test_missing_key_is_a_config_error(standin: StandIn) -> None:
    provider = OpenAIProvider(SMALL, credentials=Credentials("empty_conn", None, None))
    with pytest.raises(ProviderConfigError, match="empty_conn"):
        provider.embed_documents(["a"])


def test_retries_stop_at_the_count_bound(make: Factory, standin: StandIn) -> None:
    standin.fail_next(100, status=500)
    with pytest.raises(RetriesExhaustedError, match="2 retries") as caught:
        make(max_retries=2).embed_documents(["a"])
    assert "openai_test" in str(caught.value)
    assert len(standin.requests(PATH)) == 3


def test_retries_stop_at_the_time_bound(make: Factory, standin: StandIn) -> None:
    standin.fail_next(1000, status=429, retry_after=0.2)
    provider = make(max_retries=1000, retry_deadline_s=1.0)
    with pytest.raises(RetriesExhaustedError, match="retry deadline"):
        provider.embed_documents(["a"])
    assert 3 <= len(standin.requests(PATH)) <= 6


def test_refused_connection_is_retried_then_reported() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = OpenAIProvider(
        SMALL,
        options={**FAST, "max_retries": 2},
        credentials=Credentials("down_conn", OPENAI_KEY, f"http://127.0.0.1:{port}/v1"),
    )
    with pytest.raises(RetriesExhaustedError, match="connection failed") as caught:
        provider.embed_documents(["a"])
    assert "down_conn" in str(caught.value)
    assert provider.limiter_stats()["connection_errors"] == 3
    provider.close()


# -- OpenAI-compatible servers -------------------------------------------------------------


def compatible(
    standin: StandIn, model: str = "standin-minilm", **options: Any
) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(
        model,
        options={**FAST, **options},
        credentials=Credentials("vllm_local", OPENAI_KEY, standin.cohere_base_url),  # no /v1
    )


def test_compatible_server_probes_its_dimension_once(standin: StandIn) -> None:
    provider = compatible(standin)
    assert provider.base_url() == standin.openai_base_url  # /v1 added to a bare host
    assert provider.dimension == 384 and provider.dimension == 384
    assert len(standin.requests(PATH)) == 1
    batch = texts(70)
    assert provider.embed_documents(batch) == [expected_vector("standin-minilm", t) for t in batch]
    assert [r.n_texts for r in standin.requests(PATH)][1:] == [32, 32, 6]  # default 32 per call
    assert provider.lineage()["base_url"] == standin.openai_base_url


def test_compatible_server_with_known_dimension_and_tokenizer(standin: StandIn) -> None:
    provider = compatible(
        standin, native_dimension=384, tiktoken_encoding="cl100k_base", max_tokens_per_input=4
    )
    assert provider.token_counter().exact
    prepared = provider.prepare(["one two three four five six"])
    assert prepared.truncated == (0,) and prepared.texts == ("one two three four",)
    provider.embed_documents(["x"])
    assert len(standin.requests(PATH)) == 1  # no probe


def test_compatible_counts_approximately_by_default(standin: StandIn) -> None:
    provider = compatible(standin, approx_bytes_per_token=4)
    assert not provider.token_counter().exact
    assert provider.count_tokens(["12345678"]) == 2


def test_compatible_needs_a_base_url_and_reports_unknown_models(standin: StandIn) -> None:
    with pytest.raises(ProviderConfigError, match="needs a base URL"):
        OpenAICompatibleProvider("m", credentials=Credentials("vllm_local"))
    provider = compatible(standin, model="no-such-model", native_dimension=8)
    with pytest.raises(EmbeddingError, match=r"HTTP 404.*'vllm_local'"):
        provider.embed_documents(["a"])


def test_registry_builds_the_new_providers(standin: StandIn) -> None:
    assert {"openai", "openai_compatible", "cohere"} <= set(PROVIDERS)
    provider = get_provider(
        "openai",
        SMALL,
        dimensions=512,
        options=FAST,
        credentials=Credentials("c", OPENAI_KEY, standin.openai_base_url),
    )
    assert isinstance(provider, OpenAIProvider) and provider.dimension == 512
    provider.check_access()
