from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration import backfill
from include.qdrant_migration.backfill import BadTextError, checkpoint_key, summarize, write_points
from include.qdrant_migration.partitions import Partition, plan_partitions
from include.qdrant_migration.providers import EmbeddingError, EmbeddingProvider
from include.qdrant_migration.recall import reconcile_ids
from include.qdrant_migration.state import QdrantStateStore
from include.qdrant_migration.texts import EMPTY, MISSING, NOT_A_STRING
from tests.qdrant_migration.helpers import (
    SEED_POINTS,
    CountingProvider,
    Migrated,
    MigrationRun,
    SimulatedCrashError,
    all_points,
    make_source,
    prepare,
    run_partition,
    small_spec,
)

BAD = {3: MISSING, 7: EMPTY, 11: NOT_A_STRING}


@pytest.fixture(scope="module")
def reference(corpus: list[dict[str, Any]], e5: EmbeddingProvider) -> dict[int, np.ndarray]:
    """The new model's vector of every seeded text, embedded directly in one call."""
    vectors = e5.embed_documents([r["text"] for r in corpus])
    return {r["id"]: np.asarray(v) for r, v in zip(corpus, vectors, strict=True)}


@pytest.fixture
def notes(corpus: list[dict[str, Any]]) -> QdrantClient:
    """A small source behind alias 'notes' with three points whose text is unusable."""
    client = QdrantClient(":memory:")
    points = []
    for record in corpus[:20]:
        payload = {k: v for k, v in record.items() if k != "id"}
        if BAD.get(record["id"]) == MISSING:
            del payload["text"]
        elif BAD.get(record["id"]) == EMPTY:
            payload["text"] = "  "
        elif BAD.get(record["id"]) == NOT_A_STRING:
            payload["text"] = 42
        points.append((record["id"], payload))
    make_source(client, "notes_v1", points, alias="notes")
    return client


def test_full_run_copies_ids_and_payloads_with_new_model_vectors(
    migrated: Migrated, reference: dict[int, np.ndarray]
) -> None:
    client, plan = migrated.client, migrated.plan
    source = all_points(client, plan.source.collection)
    target = all_points(client, plan.target_collection)
    assert [p.id for p in target] == [p.id for p in source]
    assert len(target) == SEED_POINTS
    assert [p.payload for p in target] == [p.payload for p in source]
    got = np.array([p.vector for p in target])
    want = np.array([reference[int(p.id)] for p in target])
    np.testing.assert_allclose(got, want, atol=1e-5)
    # a real re-embed: nothing of the old model's vectors survives
    old = np.array([p.vector for p in source])
    assert np.abs(got - old).max() > 0.1
    expected = {
        "partitions": 3,
        "embedded": SEED_POINTS,
        "skipped": 0,
        "skipped_by_reason": {},
        "embed_requests": 7 + 7 + 3,  # 100, 100 and 40 points in sub-batches of 16
        "resumed_partitions": 0,
    }
    summary = summarize(migrated.results)
    assert {k: summary[k] for k in expected} == expected


def test_resume_after_a_crash_repeats_at_most_the_batches_in_flight(
    client: QdrantClient, e5: EmbeddingProvider, reference: dict[int, np.ndarray]
) -> None:
    spec = small_spec(batch_size=16, embed_concurrency=2)
    state = QdrantStateStore(client)
    run = prepare(client, spec, e5, state)
    part = run.partitions[0]
    target = run.plan.target_collection

    crashing = CountingProvider(e5, fail_on_call=4)
    with pytest.raises(SimulatedCrashError):
        run_partition(client, run, 0, crashing, state, spec)
    checkpoint = state.get("checkpoint", checkpoint_key(part))
    assert checkpoint is not None and not checkpoint["done"]
    written = client.count(target, exact=True).count
    assert 0 < checkpoint["done_points"] == written < part.points  # only what was checkpointed

    resumed = CountingProvider(e5)
    result = run_partition(client, run, 0, resumed, state, spec)
    assert result["resumed"] is True
    assert result["embedded"] == part.points
    ids = [p.id for p in all_points(client, target)]
    source_ids = [p.id for p in all_points(client, run.plan.source.collection, vectors=False)]
    assert ids == source_ids[: part.points]  # complete, and nothing of the next partition
    repeated = crashing.texts_embedded + resumed.texts_embedded - part.points
    assert 0 <= repeated <= spec.batch_size * spec.embed_concurrency
    assert resumed.texts_embedded == part.points - written
    vectors = {p.id: p.vector for p in all_points(client, target)}
    np.testing.assert_allclose(
        np.array([vectors[i] for i in ids]), np.array([reference[int(i)] for i in ids]), atol=1e-5
    )


def test_finished_partitions_make_no_embedding_calls(
    migrated: Migrated, e5: EmbeddingProvider
) -> None:
    spec = small_spec()
    counting = CountingProvider(e5)
    run = MigrationRun(migrated.plan, _stored_partitions(migrated))
    results = [
        run_partition(migrated.client, run, p.index, counting, migrated.state, spec)
        for p in run.partitions
    ]
    assert counting.calls == 0
    assert [r["resumed"] for r in results] == [True, True, True]
    assert [r["embed_requests"] for r in results] == [0, 0, 0]
    assert sum(r["embedded"] for r in results) == SEED_POINTS  # still reports the work done
    assert summarize(results)["resumed_partitions"] == 3


def _stored_partitions(migrated: Migrated) -> list[Partition]:
    return plan_partitions(
        migrated.client,
        migrated.state,
        migration_id=migrated.plan.migration_id,
        source_collection=migrated.plan.source.collection,
        points_per_partition=100,
        expected_points=SEED_POINTS,
    )


def test_skip_policy_records_each_bad_point(notes: QdrantClient, e5: EmbeddingProvider) -> None:
    spec = small_spec(alias="notes", bad_text_policy="skip")
    state = QdrantStateStore(notes)
    run = prepare(notes, spec, e5, state)
    counting = CountingProvider(e5)
    result = run_partition(notes, run, 0, counting, state, spec)

    assert result["skipped_by_reason"] == {MISSING: 1, EMPTY: 1, NOT_A_STRING: 1}
    assert result["skipped"] == 3 and result["embedded"] == 17
    assert counting.texts_embedded == 17  # bad points are never sent to the provider
    target_ids = {p.id for p in all_points(notes, run.plan.target_collection, vectors=False)}
    assert target_ids == set(range(1, 21)) - set(BAD)
    mid = run.plan.migration_id
    for point_id, reason in BAD.items():
        assert state.get("skip", f"{mid}/{point_id}") == {
            "migration_id": mid,
            "point_id": point_id,
            "reason": reason,
        }
    assert sorted(d["point_id"] for d in state.scan("skip", migration_id=mid)) == sorted(BAD)
    ids = reconcile_ids(notes, "notes_v1", run.plan.target_collection, state, mid)
    assert (ids["missing"], ids["skipped"], ids["extra"]) == (0, 3, 0)


def test_fail_policy_stops_at_the_first_bad_point(
    notes: QdrantClient, e5: EmbeddingProvider
) -> None:
    spec = small_spec(alias="notes", bad_text_policy="fail")
    state = QdrantStateStore(notes)
    run = prepare(notes, spec, e5, state)
    with pytest.raises(BadTextError) as error:
        run_partition(notes, run, 0, e5, state, spec)
    message = str(error.value)
    assert "Point 3 of 'notes_v1' has no usable text in 'text' (missing)" in message
    assert "bad_text_policy='skip'" in message
    checkpoint = state.get("checkpoint", checkpoint_key(run.partitions[0]))
    assert checkpoint is None or not checkpoint["done"]
    assert list(state.scan("skip", migration_id=run.plan.migration_id)) == []


class _TruncatingProvider(CountingProvider):
    """The real model, but its vectors lose their last dimension (a misconfigured API)."""

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        return [v[:-1] for v in super().embed_documents(texts)]


def test_vectors_of_the_wrong_size_are_never_written(
    notes: QdrantClient, e5: EmbeddingProvider
) -> None:
    spec = small_spec(alias="notes")
    state = QdrantStateStore(notes)
    run = prepare(notes, spec, e5, state)
    with pytest.raises(EmbeddingError, match="expected 384-d each"):
        run_partition(notes, run, 0, _TruncatingProvider(e5), state, spec)
    assert notes.count(run.plan.target_collection, exact=True).count == 0


@pytest.mark.parametrize("insert_only_supported", [True, False])
def test_write_points_never_overwrites(
    insert_only_supported: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not insert_only_supported:  # a server older than 1.17: the retrieve-then-insert path
        monkeypatch.setattr(backfill, "supports", lambda client, minimum: False)
    client = QdrantClient(":memory:")
    client.create_collection("t", vectors_config=qm.VectorParams(size=2, distance="Euclid"))
    write_points(client, "t", [qm.PointStruct(id=1, vector=[1.0, 0.0], payload={"v": "new"})])
    write_points(
        client,
        "t",
        [
            qm.PointStruct(id=1, vector=[0.0, 1.0], payload={"v": "stale"}),
            qm.PointStruct(id=2, vector=[2.0, 2.0], payload={"v": "fresh"}),
        ],
    )
    write_points(client, "t", [])
    points = {p.id: (p.vector, p.payload) for p in all_points(client, "t")}
    assert points == {1: ([1.0, 0.0], {"v": "new"}), 2: ([2.0, 2.0], {"v": "fresh"})}
