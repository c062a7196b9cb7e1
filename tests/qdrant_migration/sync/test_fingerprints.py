"""fingerprints: the last synchronized state of every point, streamed in Qdrant's id order.

The catch-up and the completeness check merge the source, the target and these states in
one id-ordered pass (:func:`align`), so the order of :meth:`Fingerprints.stream` and the
merge itself are what is tested here, on the embedded store's in-memory mode.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator, Sequence

import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration.qdrant import PointId, id_key
from include.qdrant_migration.sync.fingerprints import (
    PREFIX,
    Fingerprints,
    align,
    collection_name,
    state_of,
)

#: UUIDs, in Qdrant's order (by value, after every integer id).
U_LOW = "0f000000-0000-4000-8000-000000000000"
U_MID = "a0000000-0000-4000-8000-000000000000"
U_HIGH = "f0000000-0000-4000-8000-000000000000"
#: Integer ids, in Qdrant's order (numeric: not their order as text).
INTS = [1, 2, 10, 300, 2**40]


def _qdrant_order(ids: Sequence[PointId]) -> list[PointId]:
    return sorted(ids, key=id_key)


# -- state_of ----------------------------------------------------------------------------


def test_state_of_ignores_key_order_at_every_level() -> None:
    first = {"text": "a", "meta": {"x": 1, "y": [1, 2]}, "n": 2}
    second = {"n": 2, "meta": {"y": [1, 2], "x": 1}, "text": "a"}
    assert state_of(first) == state_of(second)
    assert len(state_of(first)) == 16  # 8 bytes, hex


@pytest.mark.parametrize(
    "changed",
    [
        {"text": "b", "meta": {"x": 1, "y": [1, 2]}, "n": 2},  # another text
        {"text": "a", "meta": {"x": 1, "y": [2, 1]}, "n": 2},  # list order matters
        {"text": "a", "meta": {"x": 1, "y": [1, 2]}, "n": 2.5},  # another value
        {"text": "a", "meta": {"x": 1, "y": [1, 2]}},  # a key less
        {"text": "a", "meta": {"x": 1, "y": [1, 2]}, "n": 2, "extra": None},  # a key more
    ],
)
def test_state_of_changes_with_any_change(changed: dict[str, object]) -> None:
    assert state_of(changed) != state_of({"text": "a", "meta": {"x": 1, "y": [1, 2]}, "n": 2})


def test_an_empty_payload_has_one_state() -> None:
    assert state_of(None) == state_of({}) != state_of({"text": ""})


# -- the companion collection ------------------------------------------------------------


def test_record_and_stream_in_qdrant_id_order_ints_before_uuids() -> None:
    client = QdrantClient(":memory:")
    prints = Fingerprints(client, "mig-1")
    ids: list[PointId] = [*INTS, U_LOW, U_MID, U_HIGH]
    shuffled = ids[:]
    random.Random(7).shuffle(shuffled)
    prints.record([(p, f"s{p}") for p in shuffled[:4]])  # in two writes, out of order
    prints.record([(p, f"s{p}") for p in shuffled[4:]])

    streamed = list(prints.stream())

    assert [p for p, _ in streamed] == [*INTS, U_LOW, U_MID, U_HIGH]
    assert streamed == [(p, f"s{p}") for p in _qdrant_order(ids)]
    assert all(isinstance(p, int) for p, _ in streamed[: len(INTS)])
    assert all(isinstance(p, str) for p, _ in streamed[len(INTS) :])  # UUIDs as str
    assert prints.collection == collection_name("mig-1") == f"{PREFIX}mig-1"
    assert client.collection_exists(prints.collection)


def test_stream_pages_past_one_scroll_page() -> None:
    prints = Fingerprints(QdrantClient(":memory:"), "mig-1")
    prints.record([(i, str(i)) for i in range(2500, 0, -1)])  # it scrolls by 1000
    streamed = list(prints.stream())
    assert streamed == [(i, str(i)) for i in range(1, 2501)]


def test_record_replaces_and_none_deletes() -> None:
    client = QdrantClient(":memory:")
    prints = Fingerprints(client, "mig-1")
    prints.record([(1, "a"), (2, "b"), (U_MID, "c")])

    prints.record([(1, "a2"), (2, None), (U_MID, None), (99, None)])  # 99: never recorded

    assert list(prints.stream()) == [(1, "a2")]
    assert prints.lookup([1, 2, U_MID, 99]) == {1: "a2"}


def test_lookup_returns_only_recorded_ids() -> None:
    prints = Fingerprints(QdrantClient(":memory:"), "mig-1")
    prints.record([(5, "five"), (U_HIGH, "high")])
    assert prints.lookup([5, 6, U_HIGH, U_LOW]) == {5: "five", U_HIGH: "high"}
    assert prints.lookup([]) == {}


def test_absent_states_read_as_empty_and_create_nothing() -> None:
    client = QdrantClient(":memory:")
    prints = Fingerprints(client, "mig-1")
    assert list(prints.stream()) == []
    assert prints.lookup([1, 2]) == {}
    prints.record([(1, None)])  # a deletion of nothing
    prints.record([])
    prints.drop()
    assert not client.collection_exists(prints.collection)


def test_drop_forgets_one_migration_and_recording_starts_afresh() -> None:
    client = QdrantClient(":memory:")
    mine, other = Fingerprints(client, "mig-1"), Fingerprints(client, "mig-2")
    mine.record([(1, "a"), (2, "b")])
    other.record([(1, "x")])

    mine.drop()

    assert not client.collection_exists(mine.collection)
    assert list(mine.stream()) == [] and mine.lookup([1]) == {}
    assert list(other.stream()) == [(1, "x")]  # another migration's states stay
    mine.record([(3, "c")])  # recreated on the next write
    assert list(mine.stream()) == [(3, "c")]
    assert list(Fingerprints(client, "mig-1").stream()) == [(3, "c")]  # a fresh reader


# -- align -------------------------------------------------------------------------------


def _records(ids: Sequence[PointId], side: str) -> Iterator[qm.Record]:
    return iter([qm.Record(id=p, payload={"side": side, "id": str(p)}) for p in ids])


def _states(ids: Sequence[PointId]) -> Iterator[tuple[PointId, str]]:
    return iter([(p, f"state-{p}") for p in ids])


def test_align_yields_every_id_once_in_id_order_with_its_sides() -> None:
    # each stream in Qdrant's order (numeric ids: 9 < 20 < 100, unlike their text)
    source: list[PointId] = [1, 3, 20, 100, U_LOW, U_HIGH]
    target: list[PointId] = [2, 3, 9, 100, U_MID, U_HIGH]
    states: list[PointId] = [3, 4, 9, 20, 100, U_LOW, U_MID]

    triples = list(align(_records(source, "s"), _records(target, "t"), _states(states)))

    every = _qdrant_order(list({*source, *target, *states}))
    assert [here for here, _, _, _ in triples] == every
    for here, src, tgt, recorded in triples:
        assert (src is not None) == (here in source), here
        assert (tgt is not None) == (here in target), here
        assert recorded == (f"state-{here}" if here in states else None), here
        for record, side in ((src, "s"), (tgt, "t")):
            if record is not None:  # the record of this very id, from that side
                assert record.payload == {"side": side, "id": str(here)}
    by_id = {
        here: (src is not None, tgt is not None, recorded) for here, src, tgt, recorded in triples
    }
    assert by_id[100] == (True, True, "state-100")  # all three
    assert by_id[1] == (True, False, None)  # source only
    assert by_id[2] == (False, True, None)  # target only
    assert by_id[4] == (False, False, "state-4")  # recorded only: gone from both
    assert by_id[20] == (True, False, "state-20") and by_id[9] == (False, True, "state-9")
    assert by_id[U_HIGH] == (True, True, None)


@pytest.mark.parametrize("empty", ["source", "target", "states", "all"])
def test_align_with_empty_streams(empty: str) -> None:
    ids: list[PointId] = [2, 1_000, U_LOW]
    source = [] if empty in ("source", "all") else ids
    target = [] if empty in ("target", "all") else ids
    states = [] if empty in ("states", "all") else ids
    triples = list(align(_records(source, "s"), _records(target, "t"), _states(states)))
    assert [here for here, _, _, _ in triples] == ([] if empty == "all" else ids)
    assert all((src is None) == (empty == "source") for _, src, _, _ in triples)
    assert all((tgt is None) == (empty == "target") for _, _, tgt, _ in triples)
    assert all((rec is None) == (empty == "states") for _, _, _, rec in triples)


def test_align_streams_lazily() -> None:
    """Flat memory: it reads one item ahead of each stream, never a whole stream."""
    pulled: list[int] = []

    def counting(ids: Sequence[int]) -> Iterator[qm.Record]:
        for p in ids:
            pulled.append(p)
            yield qm.Record(id=p, payload={})

    triples = align(counting(range(1, 10_000)), iter([]), iter([]))
    assert [next(triples)[0] for _ in range(3)] == [1, 2, 3]
    assert len(pulled) <= 4


def test_uuid_ids_are_matched_by_value_not_by_spelling() -> None:
    spelled = str(uuid.UUID(U_MID)).upper()
    triples = list(align(_records([spelled], "s"), _records([U_MID], "t"), _states([U_MID])))
    assert len(triples) == 1
    _, src, tgt, recorded = triples[0]
    assert src is not None and tgt is not None and recorded == f"state-{U_MID}"
