"""What every hosted provider must do, checked for OpenAI and Cohere alike.

Each test runs once per provider, through its real SDK to the wire-level stand-in. The
:class:`Hosted` adapter says how to reach a provider and what legitimately differs
(route, key, inputs per request, input types, tokenizer); everything else is the same
contract: packing, the too-long policy, survived faults, bounded retries, secrets kept out
of messages. What only one provider has lives in its own module.
"""

from __future__ import annotations

import itertools
import socket
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from include.qdrant_migration.providers import PROVIDERS, ModelLineage, get_provider
from include.qdrant_migration.providers.base import Credentials
from include.qdrant_migration.providers.cohere_provider import CohereProvider
from include.qdrant_migration.providers.errors import AuthError, EmbeddingError, ProviderConfigError
from include.qdrant_migration.providers.openai_provider import OpenAIProvider
from include.qdrant_migration.providers.packing import SkippedTextsError
from include.qdrant_migration.providers.ratelimit import RetriesExhaustedError
from include.qdrant_migration.providers.remote import RemoteProvider
from tests.providers.helpers import FAST, Closing, texts
from tests.standin import COHERE_KEY, OPENAI_KEY, StandIn, expected_vector


@dataclass(frozen=True)
class Hosted:
    """How to reach one hosted provider through the stand-in, and what differs per provider."""

    name: str
    cls: type[RemoteProvider]
    #: A model of 1536 dimensions, which the tests' expectations assume.
    model: str
    #: The stand-in's route for this provider, and what a base URL adds to the host root.
    path: str
    api_prefix: str
    key: str
    #: The API's own limit of texts per request.
    max_inputs: int
    #: The input types the stand-in embeds documents and queries with ("" for none).
    document_input: str
    query_input: str
    #: A model whose per-input token limit ``long_text`` exceeds.
    short_model: str
    long_text: str
    #: How the provider counts tokens, as skip reasons name it.
    tokenizer: str
    #: The lineage beyond provider, model and dimensions.
    lineage: Mapping[str, str]

    def url(self, host_root: str) -> str:
        return host_root + self.api_prefix

    def vector(
        self,
        text: str,
        *,
        query: bool = False,
        model: str | None = None,
        dimensions: int | None = None,
    ) -> list[float]:
        """The vector the stand-in returns for ``text`` embedded as a document (or query)."""
        input_type = self.query_input if query else self.document_input
        return expected_vector(model or self.model, text, input_type, dimensions)


OPENAI = Hosted(
    name="openai",
    cls=OpenAIProvider,
    model="text-embedding-3-small",
    path="/v1/embeddings",
    api_prefix="/v1",
    key=OPENAI_KEY,
    max_inputs=2048,
    document_input="",
    query_input="",
    short_model="text-embedding-3-small",  # 8192 tokens per input
    long_text="lorem ipsum dolor " * 3000,  # about 9000 tokens
    tokenizer="tiktoken cl100k_base",
    lineage={
        "document_input": "plain text",
        "query_input": "plain text",
        "tokenizer": "tiktoken cl100k_base",
    },
)
COHERE = Hosted(
    name="cohere",
    cls=CohereProvider,
    model="embed-v4.0",
    path="/v2/embed",
    api_prefix="",
    key=COHERE_KEY,
    max_inputs=96,
    document_input="search_document",
    query_input="search_query",
    short_model="embed-english-v3.0",  # 512 tokens per input
    long_text="lorem ipsum dolor sit amet " * 80,  # about 720 estimated tokens
    tokenizer="approximate (3 UTF-8 bytes per token)",
    lineage={
        "document_input": "search_document",
        "query_input": "search_query",
        "embedding_type": "float",
    },
)

Factory = Callable[..., RemoteProvider]


def root(standin: StandIn) -> str:
    """The stand-in's host root; each provider's base URL adds its own prefix."""
    return f"http://127.0.0.1:{standin.port}"


@pytest.fixture(params=[OPENAI, COHERE], ids=lambda hosted: hosted.name)
def hosted(request: pytest.FixtureRequest) -> Hosted:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def make(hosted: Hosted, standin: StandIn, closing: Closing) -> Factory:
    """Build ``hosted``'s provider pointed at the stand-in (fast retries); closed after the test."""

    def factory(
        model: str | None = None,
        *,
        dimensions: int | None = None,
        conn_id: str = "hosted_test",
        key: str | None = None,
        host_root: str | None = None,
        **options: Any,
    ) -> RemoteProvider:
        provider = hosted.cls(
            model or hosted.model,
            dimensions=dimensions,
            options={**FAST, **options},
            credentials=Credentials(
                conn_id,
                hosted.key if key is None else key,
                hosted.url(host_root or root(standin)),
            ),
        )
        closing(provider)
        return provider

    return factory


def in_threads(count: int, target: Callable[[int], list[list[float]]]) -> dict[int, Any]:
    """Run ``target(k)`` in ``count`` threads; each one's result, or the exception it raised."""
    results: dict[int, Any] = {}

    def run(k: int) -> None:
        try:
            results[k] = target(k)
        except Exception as exc:  # reported by the caller's assertion
            results[k] = exc

    threads = [threading.Thread(target=run, args=(k,)) for k in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()
    return results


# -- the registry and lineage --------------------------------------------------------------


def test_registry_builds_the_provider(hosted: Hosted, standin: StandIn, closing: Closing) -> None:
    assert PROVIDERS[hosted.name] is hosted.cls
    provider = get_provider(
        hosted.name,
        hosted.model,
        dimensions=512,
        options=FAST,
        credentials=Credentials("registry_conn", hosted.key, hosted.url(root(standin))),
    )
    closing(provider)
    assert isinstance(provider, hosted.cls) and provider.dimension == 512
    provider.check_access()
    (request,) = standin.requests(hosted.path)
    assert request.texts == ["connection check"] and request.dimensions == 512


def test_lineage_says_how_to_embed_queries(hosted: Hosted, make: Factory) -> None:
    lineage = make().lineage()
    assert lineage == {
        "provider": hosted.name,
        "model": hosted.model,
        "dimensions": 1536,
        **hosted.lineage,
    }
    assert set(lineage) <= ModelLineage.__optional_keys__
    assert make(dimensions=512).lineage()["dimensions"] == 512


# -- packing -------------------------------------------------------------------------------


def test_requests_are_packed_by_count_in_order(
    hosted: Hosted, make: Factory, standin: StandIn
) -> None:
    batch = texts(10)
    vectors = make(max_inputs_per_request=3).embed_documents(batch)
    assert vectors == [hosted.vector(t) for t in batch]
    assert [r.n_texts for r in standin.requests(hosted.path)] == [3, 3, 3, 1]
    assert [t for r in standin.requests(hosted.path) for t in r.texts] == batch


def test_the_apis_limit_of_inputs_per_request_is_obeyed(
    hosted: Hosted, make: Factory, standin: StandIn
) -> None:
    # Short vectors: the limit is on texts, and thousands of full-size vectors only cost time.
    batch = texts(hosted.max_inputs + 8)
    vectors = make(dimensions=256).embed_documents(batch)
    assert vectors == [hosted.vector(t, dimensions=256) for t in batch]
    assert [r.n_texts for r in standin.requests(hosted.path)] == [hosted.max_inputs, 8]
    assert [t for r in standin.requests(hosted.path) for t in r.texts] == batch


def test_requests_are_packed_by_tokens_as_the_server_counts_them(
    hosted: Hosted, make: Factory, standin: StandIn
) -> None:
    provider = make(max_tokens_per_request=64)
    batch = [("word " * n).strip() for n in (30, 30, 30, 5, 60, 1)]
    assert provider.embed_documents(batch) == [hosted.vector(t) for t in batch]
    requests = standin.requests(hosted.path)
    assert len(requests) >= 3
    assert [t for r in requests for t in r.texts] == batch
    for request in requests:
        assert request.tokens == provider.count_tokens(request.texts)  # billed as planned
        assert request.tokens <= 64 or request.n_texts == 1  # only an oversized text alone
    for sent, following in itertools.pairwise(requests):
        # Full: the next text would not have fitted (requests are not split needlessly).
        assert sent.tokens + provider.count_tokens(following.texts[:1]) > 64


# -- texts that cannot go as they are ------------------------------------------------------


def test_skip_policy_reports_long_and_empty_texts_and_embed_refuses(
    hosted: Hosted, make: Factory, standin: StandIn
) -> None:
    provider = make(hosted.short_model, too_long_policy="skip")
    batch = ["first", hosted.long_text, "", " ", "last"]
    prepared = provider.prepare(batch)
    assert prepared.indexes == (0, 4)
    reasons = {s.index: s.reason for s in prepared.skipped}
    assert list(reasons) == [1, 2, 3]
    assert reasons[1].endswith(f"per input ({hosted.tokenizer})")
    assert reasons[2] == reasons[3] == "empty text"
    with pytest.raises(SkippedTextsError) as caught:
        provider.embed_documents(batch)
    assert [s.index for s in caught.value.skipped] == [1, 2, 3]
    assert standin.requests() == []  # nothing was sent, nothing can be half-written
    kept = [batch[i] for i in prepared.indexes]
    vectors = provider.embed_documents(kept)
    assert vectors == [hosted.vector(t, model=hosted.short_model) for t in kept]


def test_error_policy_raises_on_prepare_and_unknown_policies_are_refused(
    hosted: Hosted, make: Factory, standin: StandIn
) -> None:
    provider = make(hosted.short_model, too_long_policy="error")
    with pytest.raises(SkippedTextsError, match="indexes 1"):
        provider.prepare(["fine", hosted.long_text])
    with pytest.raises(SkippedTextsError, match="indexes 1"):
        provider.embed_documents(["fine", hosted.long_text])
    with pytest.raises(ProviderConfigError, match="too_long_policy"):
        make(too_long_policy="drop")
    assert standin.requests() == []


def test_unknown_and_out_of_range_options_are_refused_when_built(
    make: Factory, standin: StandIn
) -> None:
    # A typo in a budget key used to be logged and ignored: the budget silently did not apply.
    with pytest.raises(ProviderConfigError, match="did you mean 'tokens_per_minute'"):
        make(token_per_minute=1000)
    with pytest.raises(ProviderConfigError, match="max_inputs_per_request must be a whole"):
        make(max_inputs_per_request=0)  # limits are read lazily, but checked when built
    assert standin.requests() == []


# -- rate limits and budgets ---------------------------------------------------------------


def test_429_storm_is_survived_and_every_text_embedded_once(
    hosted: Hosted, make: Factory, standin: StandIn
) -> None:
    provider = make(dimensions=256, max_inputs_per_request=8, max_concurrency=4)
    standin.fail_next(6, status=429, retry_after=0.05)  # fractional Retry-After
    batches = [texts(40, prefix=f"thread {k}") for k in range(4)]
    results = in_threads(4, lambda k: provider.embed_documents(batches[k]))
    for k, batch in enumerate(batches):
        assert results[k] == [hosted.vector(t, dimensions=256) for t in batch]
    embedded = standin.embedded_texts(hosted.path)
    assert embedded == Counter(t for batch in batches for t in batch)  # each exactly once
    assert len(standin.requests(hosted.path, status=429)) == 6
    assert provider.limiter_stats()["rate_limited"] == 6


WINDOW_S = 0.25  # the stand-in's rate window: short, so budget tests take a second


def test_server_token_cap_is_survived(hosted: Hosted, make: Factory, standin: StandIn) -> None:
    provider = make(max_inputs_per_request=4, max_retries=50, retry_deadline_s=20)
    batch = texts(12)
    per_request = provider.count_tokens(batch[:4])
    # One request fits in the server's window, two do not: the later ones meet the cap.
    standin.set_limits(tokens_per_minute=1.5 * per_request * 60 / WINDOW_S, window_s=WINDOW_S)
    assert provider.embed_documents(batch) == [hosted.vector(t) for t in batch]
    assert standin.embedded_texts(hosted.path) == Counter(batch)
    refused = standin.requests(hosted.path, status=429)
    assert refused, "the cap was never met: the test proves nothing"
    assert provider.limiter_stats()["rate_limited"] == len(refused)


def test_local_token_budget_avoids_the_servers_429s(
    hosted: Hosted, make: Factory, standin: StandIn
) -> None:
    batch = texts(16)  # four requests of four texts, of equal size
    per_request = make().count_tokens(batch[:4])
    # Four requests at once exceed the server's cap. The local budget (one request per
    # window) is well below it: the server sees each request a little later than the
    # limiter does, and that jitter must not push more than three into one server window.
    standin.set_limits(tokens_per_minute=3.5 * per_request * 60 / WINDOW_S, window_s=WINDOW_S)
    provider = make(
        max_inputs_per_request=4,
        tokens_per_minute=1.5 * per_request * 60 / WINDOW_S,
        rate_window_s=WINDOW_S,
    )
    assert provider.embed_documents(batch) == [hosted.vector(t) for t in batch]
    assert standin.requests(hosted.path, status=429) == []
    assert len(standin.requests(hosted.path)) == 4


# -- faults --------------------------------------------------------------------------------


def test_500s_are_retried(hosted: Hosted, make: Factory, standin: StandIn) -> None:
    standin.fail_next(2, status=500)
    provider = make()
    assert provider.embed_documents(["a"]) == [hosted.vector("a")]
    assert [r.status for r in standin.requests(hosted.path)] == [500, 500, 200]
    assert provider.limiter_stats()["server_errors"] == 2


def test_500_timeout_and_dropped_connection_are_each_retried(
    hosted: Hosted, make: Factory, standin: StandIn
) -> None:
    standin.fail_next(1, status=500)
    standin.slow_next(1, seconds=2.0)  # longer than the timeout: the client gives up
    standin.disconnect_next(1)
    provider = make(timeout_s=0.5)
    assert provider.embed_queries(["q"]) == [hosted.vector("q", query=True)]
    stats = provider.limiter_stats()
    counted = ("server_errors", "timeouts", "connection_errors", "succeeded")
    assert [stats[key] for key in counted] == [1, 1, 1, 1]


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("malformed_next", "malformed response"),
        ("wrong_dimension_next", "1535 dimensions, expected 1536"),
        ("wrong_count_next", "returned 1 vectors for 2 texts"),
    ],
)
def test_bad_answers_raise_before_returning(
    hosted: Hosted, make: Factory, standin: StandIn, fault: str, message: str
) -> None:
    getattr(standin, fault)(1)
    with pytest.raises(EmbeddingError, match=message):
        make().embed_documents(["a", "b"])
    assert len(standin.requests(hosted.path)) == 1  # not retried: the same answer would come


def test_wrong_key_fails_at_once_naming_the_connection_not_the_key(
    hosted: Hosted, make: Factory, standin: StandIn
) -> None:
    secret = f"{hosted.key[:3]}wrong-0123456789abcdef"
    conn_id = f"{hosted.name}_prod"
    provider = make(conn_id=conn_id, key=secret)
    with pytest.raises(AuthError) as caught:
        provider.embed_documents(["a"])
    message = str(caught.value)
    assert f"'{conn_id}'" in message and "HTTP 401" in message
    assert secret not in message and secret[-8:] not in message
    assert secret not in repr(provider.credentials)
    assert len(standin.requests(hosted.path)) == 1
    with pytest.raises(AuthError):
        provider.check_access()


def test_missing_key_is_a_config_error_before_any_request(
    hosted: Hosted, standin: StandIn, closing: Closing
) -> None:
    provider = hosted.cls(
        hosted.model, credentials=Credentials("empty_conn", None, hosted.url(root(standin)))
    )
    closing(provider)
    with pytest.raises(ProviderConfigError, match="empty_conn"):
        provider.embed_documents(["a"])
    assert standin.requests() == []


@pytest.mark.parametrize("status", [500, 503])
def test_retries_stop_at_the_count_bound(
    hosted: Hosted, make: Factory, standin: StandIn, status: int
) -> None:
    standin.fail_next(100, status=status)
    with pytest.raises(RetriesExhaustedError, match="2 retries") as caught:
        make(max_retries=2).embed_documents(["a"])
    assert "hosted_test" in str(caught.value)
    assert len(standin.requests(hosted.path)) == 3


def test_retries_stop_at_the_time_bound(hosted: Hosted, make: Factory, standin: StandIn) -> None:
    provider = make(max_retries=1000, retry_deadline_s=0.3)
    provider.check_access()  # the SDK client exists before the deadline starts counting
    standin.fail_next(1000, status=429, retry_after=0.05)
    with pytest.raises(RetriesExhaustedError, match=r"the 0\.3 s retry deadline"):
        provider.embed_documents(["a"])
    # Retried, but every retry waits at least the 0.05 s Retry-After and none starts after
    # the deadline: at most 1 + 0.3 / 0.05 attempts, whatever the machine's load.
    assert 2 <= len(standin.requests(hosted.path, status=429)) <= 7


def test_refused_connection_is_retried_then_reported(hosted: Hosted, make: Factory) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = make(conn_id="down_conn", host_root=f"http://127.0.0.1:{port}", max_retries=2)
    with pytest.raises(RetriesExhaustedError, match="connection failed") as caught:
        provider.embed_documents(["a"])
    assert "down_conn" in str(caught.value)
    assert provider.limiter_stats()["connection_errors"] == 3
