"""Reading the text to embed out of a point's payload, and the bad-data policy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
