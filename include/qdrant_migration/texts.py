"""Reading the text to embed out of a point's payload, and the bad-data policy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qdrant_client import models as qm

from include.qdrant_migration.choices import BadTextPolicy
from include.qdrant_migration.providers import EmbeddingProvider
from include.qdrant_migration.qdrant import PointId, point_id

MISSING = "missing"
EMPTY = "empty"
NOT_A_STRING = "not a string"


def extract_text(payload: Mapping[str, Any] | None, field: str) -> tuple[str | None, str | None]:
    """``(text, None)`` when the field holds usable text, else ``(None, reason)``.

    ``field`` may be a dotted path into nested objects (``doc.body``).
    """
    value: Any = payload or {}
    for part in field.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None, MISSING
        value = value[part]
    if value is None:
        return None, MISSING
    if not isinstance(value, str):
        return None, NOT_A_STRING
    if not value.strip():
        return None, EMPTY
    return value, None


def query_like(text: str, limit: int = 160) -> str:
    """A query-sized piece of a document: its first sentence, capped."""
    return text.split(". ")[0][:limit]


class BadTextError(ValueError):
    """A point has no usable text and bad_text_policy is 'fail'."""


#: A point left out, and why.
Skipped = tuple[PointId, str]


@dataclass(frozen=True)
class UsableTexts:
    """The records worth embedding, the texts to send, and what was left out and why."""

    records: list[qm.Record]
    texts: list[str]
    skipped: list[Skipped]
    tokens: int = 0
    truncated: int = 0


def select_texts(
    records: Sequence[qm.Record],
    provider: EmbeddingProvider,
    *,
    text_field: str,
    policy: BadTextPolicy,
    collection: str,
) -> UsableTexts:
    """Apply the bad-data policy (missing, empty, non-string, too long) to a page of points.

    Under ``policy='fail'`` the first bad point raises :class:`BadTextError`; under
    ``'skip'`` it is returned in ``skipped`` with its reason, for the caller to record.
    """
    candidates: list[qm.Record] = []
    texts: list[str] = []
    skipped: list[Skipped] = []
    for record in records:
        text, reason = extract_text(record.payload, text_field)
        if text is None:
            skipped.append((point_id(record.id), reason or "unknown"))
        else:
            candidates.append(record)
            texts.append(text)
    prepared = provider.prepare(texts) if texts else None
    if prepared is not None:
        skipped += [(point_id(candidates[s.index].id), s.reason) for s in prepared.skipped]
    if skipped and policy == "fail":
        first, reason = skipped[0]
        raise BadTextError(
            f"Point {first!r} of {collection!r} has no usable text in {text_field!r} "
            f"({reason}). Fix the point, or trigger with bad_text_policy='skip' to record and "
            "skip such points."
        )
    if prepared is None:
        return UsableTexts([], [], skipped)
    return UsableTexts(
        [candidates[i] for i in prepared.indexes],
        list(prepared.texts),
        skipped,
        prepared.total_tokens,
        len(prepared.truncated),
    )
