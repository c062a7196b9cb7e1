"""Reading the text to embed from a payload, and the bad-data policy applied to a page."""

from __future__ import annotations

from typing import Any

import pytest
from qdrant_client import models as qm

from include.qdrant_migration.texts import (
    EMPTY,
    MISSING,
    NOT_A_STRING,
    BadTextError,
    UsableTexts,
    extract_text,
    query_like,
    select_texts,
)
from tests.fakes import HashingProvider


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


def test_query_like_is_the_first_sentence_capped() -> None:
    assert query_like("Sorts a list in place. Returns None.") == "Sorts a list in place"
    assert query_like("No full stop here") == "No full stop here"
    assert query_like("x" * 500) == "x" * 160
    assert query_like("A long first sentence. Then more.", limit=6) == "A long"


LONG = "word " * 600  # 3000 bytes: more than the provider's 512 tokens of ~4 bytes
PAGE = [
    qm.Record(id=1, payload={"text": "a good text"}),
    qm.Record(id=2, payload={"title": "no text"}),
    qm.Record(id="5b0f6a5e-8d0c-4d57-9b1c-2a5b8d3c7e11", payload={"text": "  "}),
    qm.Record(id=4, payload={"text": LONG}),
    qm.Record(id=5, payload={"text": 5}),
    qm.Record(id=6, payload={"text": "another good text"}),
]


def _select(provider: HashingProvider, policy: str, records: list[qm.Record]) -> UsableTexts:
    return select_texts(records, provider, text_field="text", policy=policy, collection="c")


def test_select_texts_keeps_usable_texts_and_says_why_the_rest_was_left_out() -> None:
    provider = HashingProvider("hash-new", options={"too_long_policy": "skip"})
    usable = _select(provider, "skip", PAGE)

    assert [r.id for r in usable.records] == [1, 6]
    assert usable.texts == ["a good text", "another good text"]
    reasons = dict(usable.skipped)
    assert set(reasons) == {2, "5b0f6a5e-8d0c-4d57-9b1c-2a5b8d3c7e11", 4, 5}
    assert (reasons[2], reasons[5]) == (MISSING, NOT_A_STRING)
    assert reasons["5b0f6a5e-8d0c-4d57-9b1c-2a5b8d3c7e11"] == EMPTY
    assert reasons[4].startswith("750 tokens > 512 per input")  # the provider's own limit
    assert usable.tokens == 3 + 5  # what is sent, counted the provider's way
    assert usable.truncated == 0


def test_a_too_long_text_is_truncated_by_default_and_counted() -> None:
    usable = _select(HashingProvider("hash-new"), "fail", [PAGE[0], PAGE[3]])
    assert [r.id for r in usable.records] == [1, 4]
    assert usable.truncated == 1 and usable.skipped == []
    assert usable.tokens == 3 + 512  # counted as sent: cut to the limit


def test_fail_policy_raises_at_the_first_bad_point() -> None:
    with pytest.raises(BadTextError) as error:
        _select(HashingProvider("hash-new"), "fail", PAGE)
    message = str(error.value)
    assert "Point 2 of 'c' has no usable text in 'text' (missing)" in message
    assert "bad_text_policy='skip'" in message
    # a page without bad points passes under either policy
    assert _select(HashingProvider("hash-new"), "fail", [PAGE[0]]).texts == ["a good text"]


def test_a_page_without_any_usable_text() -> None:
    usable = _select(HashingProvider("hash-new"), "skip", [PAGE[1], PAGE[4]])
    assert usable == UsableTexts([], [], [(2, MISSING), (5, NOT_A_STRING)])
    assert _select(HashingProvider("hash-new"), "skip", []) == UsableTexts([], [], [])
