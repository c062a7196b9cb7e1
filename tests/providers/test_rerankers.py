"""The relevance judges through the wire: Cohere's SDK to the stand-in's ``/v2/rerank``, the
compatible format to its ``/v1/rerank``. Scores come back in the documents' order, a 429
with Retry-After is waited out, and what retrying cannot fix fails at once, naming the
connection and never the key."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from include.qdrant_migration.providers import AuthError, EmbeddingError, ProviderConfigError
from include.qdrant_migration.providers.base import Credentials
from include.qdrant_migration.providers.ratelimit import RetriesExhaustedError
from include.qdrant_migration.rerankers import RERANKERS, Reranker, get_reranker
from tests.providers.helpers import FAST
from tests.standin import COHERE_KEY, OPENAI_KEY, StandIn
from tests.standin.rerank import COHERE_PATH, COMPATIBLE_PATH, relevance

QUERY = "serialize json string"
DOCUMENTS = [
    "Open a file and return a stream.",
    "Serialize obj to a JSON formatted str.",
    "Deserialize a JSON document to a Python object.",
]
#: (name, model, path, key, base URL of the stand-in)
BACKENDS = {
    "cohere": ("rerank-v3.5", COHERE_PATH, COHERE_KEY, lambda s: s.cohere_base_url),
    "compatible": ("standin-reranker", COMPATIBLE_PATH, OPENAI_KEY, lambda s: s.openai_base_url),
}
Factory = Callable[..., Reranker]


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make(standin: StandIn) -> Iterator[Factory]:
    built: list[Reranker] = []

    def factory(
        name: str, key: str | None = None, model: str | None = None, **options: Any
    ) -> Reranker:
        default_model, _, default_key, url = BACKENDS[name]
        judge = get_reranker(
            name,
            model or default_model,
            options={**FAST, **options},
            credentials=Credentials("judge_conn", key or default_key, url(standin)),
        )
        built.append(judge)
        return judge

    yield factory
    for judge in built:
        judge.close()


def test_scores_come_back_in_the_documents_order(
    make: Factory, standin: StandIn, backend: str
) -> None:
    answer = make(backend).score(QUERY, DOCUMENTS)
    assert answer.scores == [relevance(QUERY, d) for d in DOCUMENTS]
    assert answer.scores[1] > answer.scores[2] > answer.scores[0]
    (request,) = standin.requests(BACKENDS[backend][1])
    assert request.texts == DOCUMENTS and request.model == BACKENDS[backend][0]
    if backend == "cohere":
        assert answer.billed == 1.0  # one search unit: one query, up to 100 documents
        assert make(backend).units(20) == 1 and make(backend).units(101) == 2
    else:
        assert answer.billed is None and make(backend).units(20) == 0


def test_a_429_with_retry_after_is_waited_out(
    make: Factory, standin: StandIn, backend: str
) -> None:
    path = BACKENDS[backend][1]
    standin.fail_next(1, status=429, retry_after=0.2, path=path)
    standin.fail_next(1, status=503, path=path)
    started = time.monotonic()
    answer = make(backend).score(QUERY, DOCUMENTS)
    assert time.monotonic() - started >= 0.2
    assert answer.scores == [relevance(QUERY, d) for d in DOCUMENTS]
    assert [r.status for r in standin.requests(path)] == [429, 503, 200]


def test_retries_are_bounded(make: Factory, standin: StandIn, backend: str) -> None:
    standin.fail_next(3, status=500, path=BACKENDS[backend][1])
    with pytest.raises(RetriesExhaustedError, match="judge_conn"):
        make(backend, max_retries=1).score(QUERY, DOCUMENTS)


def test_what_retrying_cannot_fix_fails_at_once(
    make: Factory, standin: StandIn, backend: str
) -> None:
    with pytest.raises(AuthError, match="'judge_conn'") as refused:
        make(backend, key="wrong-key-123456").check_access()
    assert "wrong-key-123456" not in str(refused.value)
    with pytest.raises(EmbeddingError, match="HTTP 404"):
        make(backend, model="no-such-reranker").check_access()
    assert len(standin.requests()) == 2  # neither was retried


def test_a_malformed_answer_is_an_error(make: Factory, standin: StandIn, backend: str) -> None:
    standin.malformed_next(path=BACKENDS[backend][1])
    with pytest.raises(EmbeddingError, match="malformed"):
        make(backend, max_retries=0).score(QUERY, DOCUMENTS)


def test_options_and_configuration_are_checked_when_built(make: Factory) -> None:
    with pytest.raises(ProviderConfigError, match=r"max_concurency.*judge\.options"):
        make("cohere", max_concurency=2)
    with pytest.raises(ProviderConfigError, match="choose one of: cohere, compatible"):
        get_reranker("voyage", "rerank-2")
    with pytest.raises(ProviderConfigError, match="base URL"):
        get_reranker("compatible", "m", credentials=Credentials("vllm", "k", None))
    assert sorted(RERANKERS) == ["cohere", "compatible"]
    assert make("cohere", max_concurrency=3).concurrency == 3
