"""The codec: dataclasses to JSON and back, checked against their types."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Literal, TypedDict

import numpy as np
import pytest

from include.qdrant_migration import codec
from include.qdrant_migration.codec import CodecError
from include.qdrant_migration.plan import Estimate, Lineage, Plan
from include.qdrant_migration.spec import MigrationSpec, Strategy
from include.qdrant_migration.sync.checkpoints import BatchWork, Checkpoint, RequestFile
from include.qdrant_migration.sync.pacing import PacingSummary


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


class Named(TypedDict, total=False):
    name: str
    size: int
    inner: Named


@dataclass(frozen=True)
class Part:
    index: int
    colour: Colour = Colour.RED
    encoded_properties: ClassVar[tuple[str, ...]] = ("twice",)

    @property
    def twice(self) -> int:
        return 2 * self.index


@dataclass
class Whole:
    id: int | str
    parts: list[Part]
    mode: Literal["online", "batch"] = "online"
    ratio: float = 0.5
    pair: tuple[int, str] = (0, "")
    by_number: dict[int, str] = field(default_factory=dict)
    tags: set[str] = field(default_factory=set)
    named: Named = field(default_factory=lambda: Named())
    extra: dict[str, Any] = field(default_factory=dict)
    parent: Whole | None = None


def _through_json(data: Any) -> Any:
    return json.loads(json.dumps(data))


def test_a_nested_dataclass_round_trips_through_json() -> None:
    whole = Whole(
        id="a",
        parts=[Part(1), Part(2, Colour.BLUE)],
        mode="batch",
        ratio=2.0,
        pair=(3, "x"),
        by_number={1: "one"},
        tags={"b", "a"},
        named=Named(name="n", size=3, inner=Named(name="m")),
        extra={"anything": [1, {"x": None}]},
        parent=Whole(id=7, parts=[]),
    )
    data = codec.encode(whole)
    assert data == _through_json(data)  # JSON types only
    assert data["parts"][1] == {"index": 2, "colour": "blue", "twice": 4}
    assert type(data["parts"][1]["colour"]) is str  # an enum's value, never the member
    assert data["by_number"] == {"1": "one"} and data["tags"] == ["a", "b"]
    assert codec.decode(Whole, _through_json(data)) == whole


def test_unknown_keys_are_ignored_and_missing_ones_take_their_default() -> None:
    assert codec.decode(Whole, {"id": 1, "parts": [], "added_later": True}) == Whole(1, [])
    with pytest.raises(CodecError, match=r"^Whole\.parts: missing \(no default\)$"):
        codec.decode(Whole, {"id": 1})
    # null where the type has none: the default (what older writers stored for "none yet")
    assert codec.decode(Whole, {"id": 1, "parts": [], "ratio": None}).ratio == 0.5


def test_a_typeddict_keeps_the_keys_it_does_not_declare() -> None:
    lineage = {
        "model": "m",
        "dimensions": 8,
        "vectors": {"a": {"model": "x"}},
        "active_vector": "a",
    }
    assert codec.decode_as(Lineage, lineage) == lineage
    with pytest.raises(CodecError, match=r"lineage\.dimensions: expected an integer, got '8'"):
        codec.decode_as(Lineage, lineage | {"dimensions": "8"}, "lineage")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"id": 1.5, "parts": []}, r"Whole\.id: expected int or str, got 1\.5"),
        ({"id": 1, "parts": [{"index": "2"}]}, r"Whole\.parts\[0\]\.index: expected an integer"),
        ({"id": 1, "parts": [{"index": 2, "colour": "green"}]}, r"expected 'red' or 'blue'"),
        ({"id": 1, "parts": [], "mode": "offline"}, r"Whole\.mode: expected 'online' or 'batch'"),
        ({"id": 1, "parts": [], "ratio": True}, r"Whole\.ratio: expected a number, got True"),
        ({"id": 1, "parts": [], "pair": [1]}, r"Whole\.pair: expected a list of 2"),
        ({"id": 1, "parts": [], "by_number": {"x": "?"}}, r"Whole\.by_number: expected integer"),
        ({"id": 1, "parts": {}}, r"Whole\.parts: expected a list, got \{\}"),
        ([], r"Whole: expected an object \(Whole\), got \[\]"),
    ],
)
def test_a_mismatch_says_where_and_what(data: Any, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        codec.decode(Whole, data)


def test_numpy_numbers_are_encoded_as_plain_ones() -> None:
    data = codec.encode({"n": np.int64(3), "x": np.float32(0.5), "v": [np.float64(1.25)]})
    assert data == {"n": 3, "x": 0.5, "v": [1.25]}
    assert [type(v) for v in (data["n"], data["x"], data["v"][0])] == [int, float, float]
    with pytest.raises(CodecError, match="object cannot be encoded"):
        codec.encode({"x": object()})


def test_a_frozen_dataclass_runs_its_post_init_when_decoded() -> None:
    """The spec checks its closed sets and types its strategy in ``__post_init__``."""
    spec = codec.decode(MigrationSpec, {"alias": "a", "strategy": "in_place"})
    assert spec.strategy is Strategy.IN_PLACE
    assert codec.decode(MigrationSpec, {"alias": "a"}).strategy == "auto"
    with pytest.raises(CodecError, match=r"MigrationSpec\.provider: expected 'local' or"):
        codec.decode(MigrationSpec, {"alias": "a", "provider": "opneai"})


def test_a_plan_round_trips_and_has_no_class_left_in_its_json(plan_dict: dict[str, Any]) -> None:
    plan = codec.decode(Plan, plan_dict)
    assert codec.encode(plan) == plan_dict
    assert "Strategy" not in json.dumps(codec.encode(plan))


@pytest.fixture
def plan_dict() -> dict[str, Any]:
    spec = codec.encode(MigrationSpec(alias="articles"))
    return {
        "migration_id": "mig-1",
        "alias": "articles",
        "strategy": "full_reembed",
        "reasons": ["why"],
        "source": {
            "collection": "articles_v1",
            "vector_name": None,
            "size": 8,
            "distance": "Cosine",
            "points": 3,
            "sample_ids": [1, "5b0f6a5e-8d0c-4d57-9b1c-2a5b8d3c7e11"],
            "text_coverage": 1.0,
            "lineage": {"model": "old", "dimensions": 8},
            "quantization": "none",
            "carried": [],
            "carried_sparse": [],
            "carried_bm25": None,
        },
        "target_collection": "articles_v1__new__v1",
        "target_dimension": 16,
        "target_lineage": {"model": "new", "dimensions": 16, "strategy": "full_reembed"},
        "spec": spec,
        "estimate": codec.encode(Estimate(points=3, tokens=30)),
        "target_vector": None,
    }


def test_a_checkpoint_with_batch_work_round_trips() -> None:
    work = BatchWork(
        requests={"p0-r0": [[1, "ab12"], ["5b0f6a5e-8d0c-4d57-9b1c-2a5b8d3c7e11", ""]]},
        files=[RequestFile("f0.jsonl", ["p0-r0"], "submitted", "file-1", "batch-1")],
        batches=1,
    )
    checkpoint = Checkpoint(
        "mig-1",
        "fp",
        0,
        batch=work,
        history=[["2026-11-30T12:00:00+00:00", 0]],
        pacing=PacingSummary(budget="100 points/s", points=10, latency={"counts": {"3": 2}}),
    )
    assert codec.decode(Checkpoint, _through_json(codec.encode(checkpoint))) == checkpoint
    assert work.files_by_state() == {"submitted": 1}
