"""The workarounds of Airflow 3.3 behaviour (include/qdrant_migration/airflow/workarounds.py).

Where the upstream behaviour can be seen without services, a canary test shows it: when
one fails after an Airflow upgrade, the behaviour is gone and its workaround can go too.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, overload

import pytest

from include.qdrant_migration.airflow import workarounds
from include.qdrant_migration.airflow.workarounds import (
    ANSWER_KEY,
    APPROVAL_SETTLE_S,
    earlier_answer,
    mapped_results,
    record_answer,
    seconds_to_settle,
)


def _created(seconds_ago: float) -> dict[str, Any]:
    return {"created_at": (datetime.now(tz=UTC) - timedelta(seconds=seconds_ago)).isoformat()}


def test_an_approval_is_answered_once_it_is_old_enough() -> None:
    assert APPROVAL_SETTLE_S == 15.0
    assert 13.0 < seconds_to_settle(_created(1)) <= 14.0
    assert seconds_to_settle(_created(20)) == 0.0
    assert seconds_to_settle({}) == 0.0  # no creation time: nothing to wait for
    assert seconds_to_settle(_created(0), settle_s=0) == 0.0  # dag.test(): no scheduler


class _Recorded(Sequence[int]):
    """A sequence that records every index asked for, like LazyXComSequence's requests."""

    def __init__(self, values: list[int]) -> None:
        self.values = values
        self.asked: list[int] = []

    def __len__(self) -> int:
        return len(self.values)

    @overload
    def __getitem__(self, index: int) -> int: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[int]: ...

    def __getitem__(self, index: int | slice) -> int | Sequence[int]:
        assert isinstance(index, int)
        self.asked.append(index)
        return self.values[index]  # IndexError past the end, as the 404 becomes


def test_mapped_results_never_ask_past_the_end() -> None:
    results = _Recorded([10, 20, 30])
    assert mapped_results(results) == [10, 20, 30]
    assert results.asked == [0, 1, 2]
    assert mapped_results(_Recorded([])) == []


def test_canary_iterating_a_lazy_sequence_asks_one_past_its_end() -> None:
    """Airflow's iterator stops at the IndexError of index len(): the request that logs the
    false error. When this fails, remove ``mapped_results`` and iterate."""
    from airflow.sdk.execution_time.lazy_sequence import LazyXComIterator

    results = _Recorded([10, 20, 30])
    assert list(LazyXComIterator(seq=results)) == [10, 20, 30]  # type: ignore[arg-type]
    assert results.asked == [0, 1, 2, 3]


class _Ti:
    def __init__(self, try_number: int = 1) -> None:
        self.try_number = try_number
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


@pytest.mark.parametrize(
    ("event", "kept"),
    [
        ({"chosen_options": ["Reject"]}, "Reject"),
        ({"chosen_options": ["Approve"], "params_input": {}}, "Approve"),
        ({"chosen_options": []}, None),
    ],
)
def test_the_answer_is_kept_as_its_own_xcom(event: dict[str, Any], kept: str | None) -> None:
    ti = _Ti()
    record_answer(ti, event)
    assert ti.pushed == {ANSWER_KEY: kept}
    assert ANSWER_KEY == "answer"  # finish_migration reads it; earlier runs wrote it


def test_a_first_try_has_no_earlier_answer() -> None:
    assert earlier_answer(_Ti(try_number=1)) is None


def test_every_workaround_says_what_and_when_to_remove_it() -> None:
    for name in ("seconds_to_settle", "earlier_answer", "record_answer", "mapped_results"):
        doc = getattr(workarounds, name).__doc__ or ""
        assert "**Works around:**" in doc or "same race" in doc, name
        assert "**Remove when**" in doc, name
        assert ".py" in doc, name  # where in Airflow
