"""The closed sets of values a migration request chooses from, as ``Literal`` types.

``Literal`` rather than ``StrEnum``: the values stay plain ``str`` at run time, so the JSON
of XComs, state records and collection metadata is exactly what it was, and no enum
object can reach a stored payload (Qdrant's embedded store pickles payloads: an enum
member would be stored with its class's import path). mypy still checks every use:
``spec.provider == "opneai"`` is a non-overlapping comparison under ``strict``, and an
assignment of any other string is an error. Values that cross a boundary (params, XComs,
records) are checked once, by :func:`one_of`, when they are read.

``strategy`` is the exception: :class:`~include.qdrant_migration.spec.Strategy` is an
enum with behaviour of its own; the spec's choice is ``Strategy | Auto``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Literal, TypeVar, get_args

#: Who computes the new vectors (``providers.PROVIDERS`` has one class per name).
ProviderName = Literal["local", "openai", "cohere", "openai_compatible"]
#: Who judges the relevance of replayed queries' results (``rerankers.RERANKERS``): Cohere's
#: rerank endpoint, or a server speaking the same /rerank wire format (Jina AI, vLLM, Infinity).
JudgeName = Literal["cohere", "compatible"]
#: How the backfill asks for embeddings: requests as it goes, or its provider's batch API.
EmbeddingMode = Literal["online", "batch"]
#: What happens to a point without usable text: recorded and skipped, or the task fails.
BadTextPolicy = Literal["skip", "fail"]
#: The quantization a migration asks for ("none": full floats). What a collection has
#: (``quantization.current``) is a plain ``str``: a server may report others.
Quantization = Literal["scalar_int8", "binary", "product_x16", "none"]
#: The spec's strategy when it names none: the cheapest that works.
Auto = Literal["auto"]

PROVIDER_NAMES: tuple[ProviderName, ...] = get_args(ProviderName)
JUDGE_NAMES: tuple[JudgeName, ...] = get_args(JudgeName)
EMBEDDING_MODES: tuple[EmbeddingMode, ...] = get_args(EmbeddingMode)
BAD_TEXT_POLICIES: tuple[BadTextPolicy, ...] = get_args(BadTextPolicy)
QUANTIZATIONS: tuple[Quantization, ...] = get_args(Quantization)
AUTO: Auto = "auto"

C = TypeVar("C", bound=str)


def one_of(value: object, allowed: tuple[C, ...], name: str) -> C:
    """``value`` as one of ``allowed`` (typed as their ``Literal``), or a ``ValueError``
    naming ``name`` and the choices."""
    for choice in allowed:
        if value == choice:
            return choice
    raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}.")


def named_with_hints(unknown: Iterable[str], known: Iterable[str]) -> str:
    """Unknown keys, each with the closest known one: ``'modle' (did you mean 'model'?)``."""
    choices = list(known)
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, choices, n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ", ".join(hints)
