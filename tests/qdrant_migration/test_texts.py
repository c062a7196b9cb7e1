from __future__ import annotations

from typing import Any

import pytest

from include.qdrant_migration.texts import EMPTY, MISSING, NOT_A_STRING, extract_text


@pytest.mark.parametrize(
    ("payload", "field", "expected"),
    [
        ({"text": "hello"}, "text", ("hello", None)),
        ({"text": "  padded  "}, "text", ("  padded  ", None)),  # embedded as stored
        ({"doc": {"body": "nested"}}, "doc.body", ("nested", None)),
        ({"a": {"b": {"c": "deep"}}}, "a.b.c", ("deep", None)),
        ({"title": "t"}, "text", (None, MISSING)),
        (None, "text", (None, MISSING)),
        ({}, "text", (None, MISSING)),
        ({"text": None}, "text", (None, MISSING)),
        ({"text": ""}, "text", (None, EMPTY)),
        ({"text": " \n\t "}, "text", (None, EMPTY)),
        ({"text": 42}, "text", (None, NOT_A_STRING)),
        ({"text": ["a", "b"]}, "text", (None, NOT_A_STRING)),
        ({"text": {"body": "x"}}, "text", (None, NOT_A_STRING)),
        ({"doc": "flat string"}, "doc.body", (None, MISSING)),
        ({"doc": {"title": "x"}}, "doc.body", (None, MISSING)),
        ({"doc.body": "literal dotted key"}, "doc.body", (None, MISSING)),
    ],
)
def test_extract_text(
    payload: dict[str, Any] | None, field: str, expected: tuple[str | None, str | None]
) -> None:
    assert extract_text(payload, field) == expected
