"""backfill_batch: partitions are re-embedded completely, resume from checkpoints, and
apply the bad-text policy; the summary adds the partitions' results up.

Pipeline tests run with the ``new_model`` hashing provider (fast tier); one test checks that
a run with the real new model writes exactly that model's vectors (integration).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration.checks.completeness import reconcile_ids
from include.qdrant_migration.providers import EmbeddingError, EmbeddingProvider
from include.qdrant_migration.state import MemoryStateStore, QdrantStateStore, RecordKind
from include.qdrant_migration.sync import backfill
from include.qdrant_migration.sync.backfill import (
    BackfillSettings,
    BackfillSummary,
    Checkpoint,
    PartitionResult,
    forget_progress,
    wall_seconds,
    write_points,
)
from include.qdrant_migration.sync.partitions import Partition, partitions_for
from include.qdrant_migration.texts import EMPTY, MISSING, NOT_A_STRING, BadTextError
from tests.fakes import HashingProvider
from tests.qdrant_migration.helpers import (
    SEED_POINTS,
    CountingProvider,
    Migrated,
    MigrationRun,
    SimulatedCrashError,
    all_points,
    make_source,
    migrate,
    prepare,
    run_partition,
    settings_of,
)
from tests.qdrant_migration.sync.support import fast_spec

BAD = {3: MISSING, 7: EMPTY, 11: NOT_A_STRING}
#: 100, 100 and 40 points in sub-batches of 16.
EMBED_REQUESTS = 7 + 7 + 3


def _vectors_of_texts(provider: EmbeddingProvider, points: Sequence[qm.Record]) -> np.ndarray:
    """What ``provider`` makes of each point's text, embedded directly."""
    return np.array(provider.embed_documents([str((p.payload or {})["text"]) for p in points]))


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


# -- a whole run -------------------------------------------------------------------------


def test_full_run_copies_ids_and_payloads_with_the_new_models_vectors(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    spec = fast_spec()
    run = migrate(fast_client, spec, new_model, QdrantStateStore(fast_client))
    plan = run.plan
    source = all_points(fast_client, plan.source.collection)
    target = all_points(fast_client, plan.target_collection)
    assert [p.id for p in target] == [p.id for p in source]
    assert len(target) == SEED_POINTS
    assert [p.payload for p in target] == [p.payload for p in source]
    got = np.array([p.vector for p in target])
    np.testing.assert_allclose(got, _vectors_of_texts(new_model, source), atol=1e-6)
    # a real re-embed: nothing of the old model's vectors survives
    old = np.array([p.vector for p in source])
    assert got.shape == old.shape and np.abs(got - old).max() > 0.1

    assert BackfillSettings.of(plan) == settings_of(spec) == BackfillSettings(16, 2, "skip")
    summary = BackfillSummary.of(run.results)
    assert summary.partitions == 3
    assert summary.embedded == SEED_POINTS and summary.transformed == 0
    assert (summary.skipped, summary.skipped_by_reason) == (0, {})
    assert summary.embed_requests == EMBED_REQUESTS
    assert summary.resumed_partitions == 0
    assert summary.tokens == sum(r.tokens for r in run.results) > 0
    assert summary.wall_seconds is not None and summary.wall_seconds >= 0
    assert all(r.started_at and r.finished_at for r in run.results)
    assert [r.partition for r in run.results] == [0, 1, 2]


def test_the_real_new_model_writes_its_own_vectors(
    migrated: Migrated, corpus: list[dict[str, Any]], e5: EmbeddingProvider
) -> None:
    """With the real model, batched and packed by its provider: the vectors of each text."""
    client, plan = migrated.client, migrated.plan
    reference = dict(
        zip(
            [r["id"] for r in corpus],
            e5.embed_documents([r["text"] for r in corpus]),  # one direct call
            strict=True,
        )
    )
    source = all_points(client, plan.source.collection)
    target = all_points(client, plan.target_collection)
    assert [p.id for p in target] == [p.id for p in source]
    assert [p.payload for p in target] == [p.payload for p in source]
    got = np.array([p.vector for p in target])
    np.testing.assert_allclose(got, np.array([reference[int(p.id)] for p in target]), atol=1e-5)
    assert np.abs(got - np.array([p.vector for p in source])).max() > 0.1
    summary = BackfillSummary.of(migrated.results)
    assert (summary.partitions, summary.embedded, summary.skipped) == (3, SEED_POINTS, 0)
    assert summary.embed_requests == EMBED_REQUESTS  # the provider's packing kept the batches
    assert summary.resumed_partitions == 0


# -- resume ------------------------------------------------------------------------------


def test_resume_after_a_crash_repeats_at_most_the_batches_in_flight(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    client = fast_client
    spec = fast_spec(batch_size=16, embed_concurrency=2)
    state = QdrantStateStore(client)
    run = prepare(client, spec, new_model, state)
    part = run.partitions[0]
    target = run.plan.target_collection

    crashing = CountingProvider(new_model, fail_on_call=4)
    with pytest.raises(SimulatedCrashError):
        run_partition(client, run, 0, crashing, state, spec)
    doc = state.get(RecordKind.CHECKPOINT, Checkpoint.key_of(part))
    assert doc is not None
    checkpoint = Checkpoint.from_doc(doc)
    assert not checkpoint.done and checkpoint.next_offset is not None
    written = client.count(target, exact=True).count
    assert 0 < checkpoint.done_points == checkpoint.embedded == written < part.points

    resumed = CountingProvider(new_model)
    result = run_partition(client, run, 0, resumed, state, spec)
    assert result.resumed is True
    assert result.embedded == part.points  # the checkpoint carried the counts over
    target_points = all_points(client, target)
    source_points = all_points(client, run.plan.source.collection, vectors=False)
    # complete, and nothing of the next partition
    assert [p.id for p in target_points] == [p.id for p in source_points[: part.points]]
    repeated = crashing.texts_embedded + resumed.texts_embedded - part.points
    assert 0 <= repeated <= spec.batch_size * spec.embed_concurrency
    assert resumed.texts_embedded == part.points - written
    np.testing.assert_allclose(
        np.array([p.vector for p in target_points]),
        _vectors_of_texts(new_model, source_points[: part.points]),
        atol=1e-6,
    )
    final = state.get(RecordKind.CHECKPOINT, Checkpoint.key_of(part))
    assert final is not None and Checkpoint.from_doc(final).done


def test_finished_partitions_make_no_embedding_calls(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    spec = fast_spec()
    state = QdrantStateStore(fast_client)
    first = migrate(fast_client, spec, new_model, state)
    # a retry of the whole run: the stored partition plan, every checkpoint done
    stored = partitions_for(fast_client, state, first.plan)
    assert stored == first.partitions
    counting = CountingProvider(new_model)
    run = MigrationRun(first.plan, stored)
    results = [
        run_partition(fast_client, run, p.index, counting, state, spec) for p in run.partitions
    ]
    assert counting.calls == 0
    assert [r.resumed for r in results] == [True, True, True]
    assert [r.embed_requests for r in results] == [0, 0, 0]
    assert sum(r.embedded for r in results) == SEED_POINTS  # still reports the work done
    summary = BackfillSummary.of(results)
    assert summary.resumed_partitions == 3
    assert summary.embedded == SEED_POINTS
    # they did no work in this run: no span, so no wall time
    assert all(r.started_at is None and r.finished_at is None for r in results)
    assert summary.wall_seconds is None


# -- bad texts ---------------------------------------------------------------------------


def test_skip_policy_records_each_bad_point(
    notes: QdrantClient, new_model: HashingProvider
) -> None:
    spec = fast_spec(alias="notes", bad_text_policy="skip")
    state = QdrantStateStore(notes)
    run = prepare(notes, spec, new_model, state)
    counting = CountingProvider(new_model)
    result = run_partition(notes, run, 0, counting, state, spec)

    assert result.skipped_by_reason == {MISSING: 1, EMPTY: 1, NOT_A_STRING: 1}
    assert result.skipped == 3 and result.embedded == 17
    assert counting.texts_embedded == 17  # bad points are never sent to the provider
    target_ids = {p.id for p in all_points(notes, run.plan.target_collection, vectors=False)}
    assert target_ids == set(range(1, 21)) - set(BAD)
    mid = run.plan.migration_id
    for point_id, reason in BAD.items():
        assert state.get(RecordKind.SKIP, f"{mid}/{point_id}") == {
            "migration_id": mid,
            "point_id": point_id,
            "reason": reason,
        }
    skips = state.scan(RecordKind.SKIP, migration_id=mid)
    assert sorted(d["point_id"] for d in skips) == sorted(BAD)
    ids = reconcile_ids(notes, "notes_v1", run.plan.target_collection, state, mid)
    assert (ids.missing, ids.skipped, ids.extra) == (0, 3, 0)


def test_fail_policy_stops_at_the_first_bad_point(
    notes: QdrantClient, new_model: HashingProvider
) -> None:
    spec = fast_spec(alias="notes", bad_text_policy="fail")
    state = QdrantStateStore(notes)
    run = prepare(notes, spec, new_model, state)
    with pytest.raises(BadTextError) as error:
        run_partition(notes, run, 0, new_model, state, spec)
    message = str(error.value)
    assert "Point 3 of 'notes_v1' has no usable text in 'text' (missing)" in message
    assert "bad_text_policy='skip'" in message
    checkpoint = state.get(RecordKind.CHECKPOINT, Checkpoint.key_of(run.partitions[0]))
    assert checkpoint is None or not checkpoint["done"]
    assert list(state.scan(RecordKind.SKIP, migration_id=run.plan.migration_id)) == []


class _TruncatingProvider(CountingProvider):
    """The model, but its vectors lose their last dimension (a misconfigured API)."""

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        return [v[:-1] for v in super().embed_documents(texts)]


def test_vectors_of_the_wrong_size_are_never_written(
    notes: QdrantClient, new_model: HashingProvider
) -> None:
    spec = fast_spec(alias="notes")
    state = QdrantStateStore(notes)
    run = prepare(notes, spec, new_model, state)
    assert run.plan.target_dimension == new_model.dimension == 64
    with pytest.raises(EmbeddingError, match="expected 64-d each"):
        run_partition(notes, run, 0, _TruncatingProvider(new_model), state, spec)
    assert notes.count(run.plan.target_collection, exact=True).count == 0


# -- writing -----------------------------------------------------------------------------


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


# -- the records: checkpoints, results, the summary --------------------------------------


def test_checkpoint_round_trips_and_is_keyed_by_the_plan() -> None:
    part = Partition(2, 100, 200, 100, "fp", "mig-1", of=3)
    checkpoint = Checkpoint(
        "mig-1",
        "fp",
        2,
        next_offset="5b0f6a5e-8d0c-4d57-9b1c-2a5b8d3c7e11",
        done_points=48,
        embedded=45,
        tokens=900,
        skipped_by_reason={EMPTY: 3},
    )
    assert checkpoint.key == Checkpoint.key_of(part) == "mig-1/fp/2"
    doc = checkpoint.to_doc()
    assert Checkpoint.from_doc(doc) == checkpoint
    # a record written by a newer version may carry more fields: they are ignored
    assert Checkpoint.from_doc(doc | {"unknown": 1}) == checkpoint
    other_plan = Partition(2, 100, 200, 100, "fp2", "mig-1")
    assert Checkpoint.key_of(other_plan) != checkpoint.key  # offsets never mix across plans


def test_forget_progress_drops_only_that_migrations_plan_and_checkpoints() -> None:
    state = MemoryStateStore()
    for mid in ("mig-1", "mig-2"):
        state.put(RecordKind.PARTITION_PLAN, mid, {"migration_id": mid})
        for index in range(2):
            checkpoint = Checkpoint(mid, "fp", index, done=True)
            state.put(RecordKind.CHECKPOINT, checkpoint.key, checkpoint.to_doc())
    state.put(RecordKind.SKIP, "mig-1/7", {"migration_id": "mig-1", "point_id": 7})

    forget_progress(state, "mig-1")

    assert state.get(RecordKind.PARTITION_PLAN, "mig-1") is None
    assert list(state.scan(RecordKind.CHECKPOINT, migration_id="mig-1")) == []
    assert state.get(RecordKind.PARTITION_PLAN, "mig-2") is not None
    assert len(list(state.scan(RecordKind.CHECKPOINT, migration_id="mig-2"))) == 2
    assert state.get(RecordKind.SKIP, "mig-1/7") is not None  # skips are not progress


def test_summary_adds_up_partition_results() -> None:
    results = [
        PartitionResult(
            0,
            "#0",
            embedded=90,
            tokens=1000,
            skipped=2,
            skipped_by_reason={EMPTY: 1, MISSING: 1},
            embed_requests=6,
            started_at="2024-05-01T10:00:00+00:00",
            finished_at="2024-05-01T10:01:00+00:00",
        ),
        PartitionResult(
            1,
            "#1",
            embedded=99,
            tokens=1100,
            truncated=4,
            skipped=1,
            skipped_by_reason={EMPTY: 1},
            embed_requests=7,
            started_at="2024-05-01T10:00:30+00:00",
            finished_at="2024-05-01T10:02:30+00:00",
        ),
        PartitionResult(2, "#2", embedded=40, resumed=True),  # found finished by a retry
    ]
    summary = BackfillSummary.of(results)
    assert summary == BackfillSummary(
        partitions=3,
        embedded=229,
        transformed=0,
        tokens=2100,
        truncated=4,
        skipped=3,
        skipped_by_reason={EMPTY: 2, MISSING: 1},
        embed_requests=13,
        resumed_partitions=1,
        wall_seconds=150.0,  # 10:00:00 .. 10:02:30: partitions run in parallel
    )
    assert wall_seconds(results[2:]) is None
    assert BackfillSummary.of([]) == BackfillSummary()
    for result in results:  # the backfill_batch XCom
        assert PartitionResult.from_dict(result.to_dict()) == result
