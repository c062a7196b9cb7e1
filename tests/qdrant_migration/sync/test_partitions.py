"""plan_partitions: the id space split into ranges that cover every point exactly once."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration import codec
from include.qdrant_migration.qdrant import PointId, QdrantSettings, id_key, open_client
from include.qdrant_migration.state import MemoryStateStore, QdrantStateStore
from include.qdrant_migration.sync import partitions
from include.qdrant_migration.sync.backfill import Checkpoint, partition_pages
from include.qdrant_migration.sync.partitions import (
    Partition,
    PartitionPlans,
    compute_boundaries,
    plan_partitions,
)
from tests.qdrant_migration.helpers import SEED_POINTS, make_source

INT_IDS = [i * 7 + 3 for i in range(150)]
UUID_IDS = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"doc-{i}")) for i in range(150)]


@pytest.fixture
def mixed() -> QdrantClient:
    """300 points: 150 integer ids, then 150 UUIDs (Qdrant orders ints first)."""
    client = QdrantClient(":memory:")
    ids: list[PointId] = [*INT_IDS, *UUID_IDS]
    make_source(client, "mixed", [(i, {"text": f"t{i}"}) for i in reversed(ids)])
    return client


def _ids_in(client: QdrantClient, collection: str, part: Partition) -> list[PointId]:
    return [
        p.id for page, _ in partition_pages(client, collection, part, part.start, 16) for p in page
    ]


def test_boundaries_with_int_and_uuid_ids(mixed: QdrantClient) -> None:
    boundaries, counts = compute_boundaries(mixed, "mixed", 100)
    ordered = sorted([*INT_IDS, *UUID_IDS], key=id_key)
    assert counts == [100, 100, 100]
    assert boundaries == [ordered[100], ordered[200]]
    assert isinstance(boundaries[0], int) and isinstance(boundaries[1], str)
    assert compute_boundaries(mixed, "mixed", 300) == ([], [300])
    assert compute_boundaries(mixed, "mixed", 299) == ([ordered[299]], [299, 1])


@pytest.mark.parametrize("size", [100, 128, 150, 299, 1000])
def test_partitions_cover_every_id_exactly_once(mixed: QdrantClient, size: int) -> None:
    parts = plan_partitions(
        mixed,
        MemoryStateStore(),
        migration_id="m",
        source_collection="mixed",
        points_per_partition=size,
        expected_points=300,
    )
    seen: list[PointId] = []
    for part in parts:
        ids = _ids_in(mixed, "mixed", part)
        assert len(ids) == part.points
        assert all(part.contains(i) for i in ids)
        seen.extend(ids)
    assert len(seen) == len(set(seen)) == 300
    assert [p.index for p in parts] == list(range(len(parts)))
    assert {p.of for p in parts} == {len(parts)}  # each task knows how many share the budget
    assert set(seen) == {*INT_IDS, *UUID_IDS}
    assert parts[0].start is None and parts[-1].end is None
    assert [p.end for p in parts[:-1]] == [p.start for p in parts[1:]]


def test_plan_is_stored_and_reused_by_fingerprint(tmp_path: Path, mixed: QdrantClient) -> None:
    with open_client(QdrantSettings(path=str(tmp_path / "state"))) as state_client:
        state = QdrantStateStore(state_client)
        first = plan_partitions(
            mixed,
            state,
            migration_id="m",
            source_collection="mixed",
            points_per_partition=100,
            expected_points=300,
        )
        stored = PartitionPlans(state).get("m")
        assert stored is not None
        assert stored.fingerprint == first[0].fingerprint
        assert stored.total_points == 300
        # The source grows and the user asks for other sizes: a resumed run keeps its plan,
        # so checkpoints written under it stay valid.
        mixed.upsert("mixed", [qm.PointStruct(id=10_000, vector=[0.5] * 8, payload={})])
        again = plan_partitions(
            mixed,
            state,
            migration_id="m",
            source_collection="mixed",
            points_per_partition=150,
            expected_points=301,
        )
    assert again == first
    assert [type(p.start) for p in again] == [type(None), int, str]  # ids keep their type
    assert len({Checkpoint.key_of(p) for p in again}) == 3


def test_fingerprint_identifies_the_split() -> None:
    client = QdrantClient(":memory:")
    make_source(client, "c", [(i, {}) for i in range(250)])

    def fingerprint(size: int) -> str:
        return plan_partitions(
            client,
            MemoryStateStore(),
            migration_id="m",
            source_collection="c",
            points_per_partition=size,
            expected_points=250,
        )[0].fingerprint

    same = fingerprint(100)
    assert fingerprint(100) == same  # deterministic
    assert fingerprint(125) != same  # another size
    client.delete("c", points_selector=[17])  # other boundaries
    assert fingerprint(100) != same


def test_partition_count_is_capped(
    fast_client: QdrantClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(partitions, "MAX_PARTITIONS", 4)
    parts = plan_partitions(
        fast_client,
        MemoryStateStore(),
        migration_id="m",
        source_collection="articles_v1",
        points_per_partition=10,  # would be 24 partitions
        expected_points=SEED_POINTS,
    )
    assert len(parts) == 4
    assert [p.points for p in parts] == [60, 60, 60, 60]


def test_partition_count_stays_capped_when_the_source_grew_since_it_was_counted(
    fast_client: QdrantClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(partitions, "MAX_PARTITIONS", 4)
    state = MemoryStateStore()
    parts = plan_partitions(
        fast_client,
        state,
        migration_id="m",
        source_collection="articles_v1",
        points_per_partition=10,
        expected_points=100,  # counted earlier: 25 per partition; 240 points now
    )
    assert [p.points for p in parts] == [60, 60, 60, 60]
    stored = PartitionPlans(state).get("m")
    assert stored is not None
    assert (stored.points_per_partition, stored.total_points) == (60, SEED_POINTS)


def test_real_cap_grows_partitions_for_huge_collections(fast_client: QdrantClient) -> None:
    state = MemoryStateStore()
    parts = plan_partitions(
        fast_client,
        state,
        migration_id="m",
        source_collection="articles_v1",
        points_per_partition=100,
        expected_points=10_000_000,  # 100k tasks at 100 points each
    )
    stored = PartitionPlans(state).get("m")
    assert stored is not None and stored.points_per_partition == 10_000
    assert len(parts) == 1


def test_empty_source_gives_one_empty_partition() -> None:
    client = QdrantClient(":memory:")
    make_source(client, "empty", [])
    parts = plan_partitions(
        client,
        MemoryStateStore(),
        migration_id="m",
        source_collection="empty",
        points_per_partition=100,
        expected_points=0,
    )
    assert [(p.start, p.end, p.points) for p in parts] == [(None, None, 0)]


def test_partition_dict_round_trip_and_label() -> None:
    part = Partition(2, 100, "5b0f6a5e-8d0c-4d57-9b1c-2a5b8d3c7e11", 50, "fp", "m")
    data = codec.encode_dict(part)
    assert data["label"] == "#2 [100 .. 5b0f6a5e…) ~50 pts"
    assert codec.decode(Partition, data) == part
    assert part.contains(10**9) and part.contains("00000000-0000-0000-0000-000000000001")
    assert not part.contains("5b0f6a5e-8d0c-4d57-9b1c-2a5b8d3c7e11")
    assert not part.contains("ffffffff-0000-0000-0000-000000000000")
