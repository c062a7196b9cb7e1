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

from include.qdrant_migration import codec
from include.qdrant_migration.checks.completeness import compare
from include.qdrant_migration.leases import LeaseLostError
from include.qdrant_migration.providers import EmbeddingError, EmbeddingProvider
from include.qdrant_migration.state import MemoryStateStore, QdrantStateStore
from include.qdrant_migration.sync import backfill
from include.qdrant_migration.sync.backfill import (
    BackfillSettings,
    BackfillSummary,
    Checkpoint,
    PartitionBackfill,
    PartitionResult,
    forget_progress,
    wall_seconds,
    write_points,
)
from include.qdrant_migration.sync.catchup import CatchUp, CatchUpJob
from include.qdrant_migration.sync.checkpoints import Checkpoints
from include.qdrant_migration.sync.fingerprints import Fingerprints, state_of
from include.qdrant_migration.sync.partitions import (
    Partition,
    PartitionPlan,
    PartitionPlans,
    partitions_for,
)
from include.qdrant_migration.sync.skips import Skip, Skips
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
from tests.qdrant_migration.sync.support import (
    LIVE,
    LIVE_ALIAS,
    fast_spec,
    hashed_memory_store,
    seed_live,
    text_points,
)

BAD = {3: MISSING, 7: EMPTY, 11: NOT_A_STRING}
#: 100, 100 and 40 points in sub-batches of 16.
EMBED_REQUESTS = 7 + 7 + 3


def _vectors_of_texts(provider: EmbeddingProvider, points: Sequence[qm.Record]) -> np.ndarray:
    """What ``provider`` makes of each point's text, embedded directly."""
    return np.array(provider.embed_documents([str((p.payload or {})["text"]) for p in points]))


@pytest.fixture
def articles(corpus: list[dict[str, Any]], old_model: HashingProvider) -> QdrantClient:
    """The fast store (alias 'articles' -> 'articles_v1', 240 texts) in memory."""
    return hashed_memory_store(corpus, old_model)


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
    articles: QdrantClient, new_model: HashingProvider
) -> None:
    spec = fast_spec()
    run = migrate(articles, spec, new_model, QdrantStateStore(articles))
    plan = run.plan
    source = all_points(articles, plan.source.collection)
    target = all_points(articles, plan.target_collection)
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
    articles: QdrantClient, new_model: HashingProvider
) -> None:
    client = articles
    spec = fast_spec(batch_size=16, embed_concurrency=2)
    state = QdrantStateStore(client)
    run = prepare(client, spec, new_model, state)
    part = run.partitions[0]
    target = run.plan.target_collection

    crashing = CountingProvider(new_model, fail_on_call=4)
    with pytest.raises(SimulatedCrashError):
        run_partition(client, run, 0, crashing, state, spec)
    doc = Checkpoints(state).get(Checkpoint.key_of(part))
    assert doc is not None
    checkpoint = doc
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
    final = Checkpoints(state).get(Checkpoint.key_of(part))
    assert final is not None and final.done


def test_finished_partitions_make_no_embedding_calls(
    articles: QdrantClient, new_model: HashingProvider
) -> None:
    spec = fast_spec()
    state = QdrantStateStore(articles)
    first = migrate(articles, spec, new_model, state)
    # a retry of the whole run: the stored partition plan, every checkpoint done
    stored = partitions_for(articles, state, first.plan)
    assert stored == first.partitions
    counting = CountingProvider(new_model)
    run = MigrationRun(first.plan, stored)
    results = [
        run_partition(articles, run, p.index, counting, state, spec, run_id="second")
        for p in run.partitions
    ]
    assert counting.calls == 0
    assert [r.resumed for r in results] == [True, True, True]
    assert sum(r.embedded for r in results) == SEED_POINTS  # still reports the work done
    assert [r.embed_requests for r in results] == [r.embed_requests for r in first.results]
    summary = BackfillSummary.of(results)
    assert summary.resumed_partitions == 3
    assert summary.embedded == SEED_POINTS
    # ... as the earlier run's: this one embedded nothing and made no request
    assert summary.this_run("embedded") == summary.this_run("requests") == 0
    assert summary.earlier["embedded"] == SEED_POINTS
    # they did no work in this run: no span, so no wall time
    assert all(r.started_at is None and r.finished_at is None for r in results)
    assert summary.wall_seconds is None


def test_a_run_that_resumes_another_runs_partition_counts_only_its_own_work(
    articles: QdrantClient, new_model: HashingProvider
) -> None:
    """Run one is killed mid-partition; run two finishes it: each is billed for its part."""
    spec = fast_spec(points_per_partition=1000, batch_size=8)
    state = QdrantStateStore(articles)
    run = prepare(articles, spec, new_model, state)
    killed = CountingProvider(new_model, fail_on_call=4)
    with pytest.raises(SimulatedCrashError):
        run_partition(articles, run, 0, killed, state, spec, run_id="first")
    first_doc = Checkpoints(state).get(Checkpoint.key_of(run.partitions[0]))
    assert first_doc is not None
    before = first_doc
    assert before.run_id == "first" and before.earlier == {}
    # a retry of run one resumes it as its own work
    again = CountingProvider(new_model, fail_on_call=2)
    with pytest.raises(SimulatedCrashError):
        run_partition(articles, run, 0, again, state, spec, run_id="first")
    mid_doc = Checkpoints(state).get(Checkpoint.key_of(run.partitions[0]))
    assert mid_doc is not None and mid_doc.earlier == {}

    result = run_partition(articles, run, 0, new_model, state, spec, run_id="second")

    mid = mid_doc
    assert result.earlier == mid.work()  # what run one did before run two took over
    assert result.embedded == SEED_POINTS
    summary = BackfillSummary.of([result])
    assert summary.this_run("embedded") == SEED_POINTS - mid.embedded > 0
    assert summary.this_run("requests") == result.embed_requests - mid.requests > 0


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
        assert Skips(state).get(f"{mid}/{point_id}") == Skip(mid, point_id, reason)
    skips = Skips(state).of(mid)
    assert sorted(skip.point_id for skip in skips) == sorted(BAD)
    ids = compare(notes, "notes_v1", run.plan.target_collection, state, mid)
    assert (ids.lag, ids.skipped, ids.damaged) == (0, 3, 0)


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
    checkpoint = Checkpoints(state).get(Checkpoint.key_of(run.partitions[0]))
    assert checkpoint is None or not checkpoint.done
    assert list(Skips(state).of(run.plan.migration_id)) == []


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


# -- recorded states: what the catch-up compares against ---------------------------------


class _LoggingClient:
    """The real client; every upsert is logged as ``(collection, ids)``, in order."""

    def __init__(self, client: QdrantClient) -> None:
        self._inner = client
        self.upserts: list[tuple[str, list[Any]]] = []

    def upsert(
        self, collection_name: str, points: qm.Batch | Sequence[qm.PointStruct], **kw: Any
    ) -> Any:
        ids = points.ids if isinstance(points, qm.Batch) else [p.id for p in points]
        self.upserts.append((collection_name, list(ids)))
        return self._inner.upsert(collection_name, points, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _states_of(client: QdrantClient, collection: str) -> list[tuple[Any, str]]:
    return [(p.id, state_of(p.payload)) for p in all_points(client, collection, vectors=False)]


def test_every_written_and_skipped_point_has_its_state_recorded(
    notes: QdrantClient, new_model: HashingProvider
) -> None:
    spec = fast_spec(alias="notes", batch_size=4, embed_concurrency=2)
    state = QdrantStateStore(notes)
    run = prepare(notes, spec, new_model, state)
    assert not notes.collection_exists(Fingerprints(notes, run.plan.migration_id).collection)

    run_partition(notes, run, 0, new_model, state, spec)

    recorded = list(Fingerprints(notes, run.plan.migration_id).stream())
    assert recorded == _states_of(notes, "notes_v1")  # all 20, in id order
    assert {p for p, _ in recorded} >= set(BAD)  # the skipped points too
    assert len(recorded) == 20


def test_states_are_recorded_after_the_points_they_describe_are_written(
    notes: QdrantClient, new_model: HashingProvider
) -> None:
    spec = fast_spec(alias="notes", batch_size=4, embed_concurrency=2)
    state = QdrantStateStore(notes)
    run = prepare(notes, spec, new_model, state)
    logged = _LoggingClient(notes)
    run_partition(logged, run, 0, new_model, state, spec)  # type: ignore[arg-type]

    target, prints = run.plan.target_collection, Fingerprints(notes, "x").collection[:-1]
    written: set[Any] = set()
    recorded: set[Any] = set()
    recorded_writes = 0
    for collection, ids in logged.upserts:
        if collection == target:
            written.update(ids)
        elif collection.startswith(prints):
            recorded_writes += 1
            recorded.update(ids)
            unwritten = set(ids) - written - set(BAD)
            assert not unwritten, f"states of {sorted(unwritten)} recorded before their write"
    # one per sub-batch of 4, or fewer: sub-batches that queue up are committed together
    assert 1 <= recorded_writes <= 5
    assert written == set(range(1, 21)) - set(BAD)
    assert recorded == set(range(1, 21))


def _crash_on_record(monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    """The worker dies right after the ``call``-th sub-batch is written, before its states."""
    real = Fingerprints.record
    calls = 0

    def record(self: Fingerprints, states: Sequence[tuple[Any, str | None]]) -> None:
        nonlocal calls
        calls += 1
        if calls == call:
            raise SimulatedCrashError("worker died between the write and the record")
        real(self, states)

    monkeypatch.setattr(Fingerprints, "record", record)


def test_a_crash_between_the_write_and_the_record_repeats_the_batch_never_skips_it(
    new_model: HashingProvider, old_model: HashingProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = QdrantClient(":memory:")
    seed_live(client, text_points(40), old_model)
    state = QdrantStateStore(client)
    spec = fast_spec(alias=LIVE_ALIAS, points_per_partition=1000, embed_concurrency=1)
    run = prepare(client, spec, new_model, state)
    prints = Fingerprints(client, run.plan.migration_id)
    with monkeypatch.context() as patched:
        _crash_on_record(patched, call=2)
        with pytest.raises(SimulatedCrashError):
            run_partition(client, run, 0, new_model, state, spec)

    # the second sub-batch (ids 170..320) is written, its states are not, nor its checkpoint
    assert client.count(run.plan.target_collection, exact=True).count == 32
    assert [p for p, _ in prints.stream()] == [i * 10 for i in range(1, 17)]
    doc = Checkpoints(state).get(Checkpoint.key_of(run.partitions[0]))
    assert doc is not None and doc.next_offset == 170
    # the application changes a point of that batch while the worker is down
    client.set_payload(LIVE, {"text": "changed while the worker was down"}, points=[200])

    resumed = run_partition(client, run, 0, new_model, state, spec)

    assert resumed.resumed
    # every point, as the target holds it (the crashed try's write of 200 included)
    assert list(prints.stream()) == _states_of(client, run.plan.target_collection)
    # the next catch-up pass copies the point the crash left behind
    result = CatchUp(client, CatchUpJob.forward(run.plan, new_model), state).run()
    assert result.changes == result.reembedded == 1
    target = {p.id: p for p in all_points(client, run.plan.target_collection)}
    assert target[200].payload == {"text": "changed while the worker was down", "title": "t20"}
    np.testing.assert_allclose(
        target[200].vector, new_model.vector("changed while the worker was down"), atol=1e-6
    )
    again = CatchUp(client, CatchUpJob.forward(run.plan, new_model), state).run()
    assert again.changes == 0 and again.unchanged == 40


def test_a_crash_between_the_write_and_the_record_is_not_taken_for_drift(
    new_model: HashingProvider, old_model: HashingProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = QdrantClient(":memory:")
    seed_live(client, text_points(40), old_model)
    state = QdrantStateStore(client)
    spec = fast_spec(alias=LIVE_ALIAS, points_per_partition=1000, embed_concurrency=1)
    run = prepare(client, spec, new_model, state)
    with monkeypatch.context() as patched:
        _crash_on_record(patched, call=2)
        with pytest.raises(SimulatedCrashError):
            run_partition(client, run, 0, new_model, state, spec)
    client.set_payload(LIVE, {"text": "changed while the worker was down"}, points=[200])
    run_partition(client, run, 0, new_model, state, spec)

    result = CatchUp(client, CatchUpJob.forward(run.plan, new_model), state).run()

    assert (result.reembedded, result.drift) == (1, 0)  # nobody wrote the target behind our back


def one_partition_job(
    new_model: HashingProvider, old_model: HashingProvider, *, embed_concurrency: int
) -> tuple[QdrantClient, QdrantStateStore, MigrationRun, PartitionBackfill]:
    """40 live points, one partition, sub-batches of 16: the job not yet run."""
    client = QdrantClient(":memory:")
    seed_live(client, text_points(40), old_model)
    state = QdrantStateStore(client)
    spec = fast_spec(
        alias=LIVE_ALIAS, points_per_partition=1000, embed_concurrency=embed_concurrency
    )
    run = prepare(client, spec, new_model, state)
    job = PartitionBackfill(
        client, run.plan, run.partitions[0], new_model, state, settings_of(spec)
    )
    return client, state, run, job


def test_the_heartbeat_beats_after_every_sub_batch_is_written_and_checkpointed(
    new_model: HashingProvider, old_model: HashingProvider
) -> None:
    client, state, run, job = one_partition_job(new_model, old_model, embed_concurrency=2)
    prints = Fingerprints(client, run.plan.migration_id)
    seen: list[tuple[int, int, int]] = []

    def beat() -> None:
        doc = Checkpoints(state).get(job.key)
        assert doc is not None
        written = client.count(run.plan.target_collection, exact=True).count
        seen.append((written, len(list(prints.stream())), doc.done_points))

    job.heartbeat = beat
    job.run()

    assert seen == [(16, 16, 16), (32, 32, 32), (40, 40, 40)]


def test_a_lost_lease_stops_the_backfill_after_the_sub_batch_in_hand(
    new_model: HashingProvider, old_model: HashingProvider
) -> None:
    client, state, run, job = one_partition_job(new_model, old_model, embed_concurrency=1)

    def lost() -> None:
        raise LeaseLostError("another writer took the lease")

    job.heartbeat = lost
    with pytest.raises(LeaseLostError):
        job.run()

    assert client.count(run.plan.target_collection, exact=True).count == 16
    doc = Checkpoints(state).get(job.key)
    assert doc is not None and doc.done_points == 16


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
    doc = codec.encode_dict(checkpoint)
    assert codec.decode(Checkpoint, doc) == checkpoint
    # a record written by a newer version may carry more fields: they are ignored
    assert codec.decode(Checkpoint, doc | {"unknown": 1}) == checkpoint
    other_plan = Partition(2, 100, 200, 100, "fp2", "mig-1")
    assert Checkpoint.key_of(other_plan) != checkpoint.key  # offsets never mix across plans


def test_forget_progress_drops_only_that_migrations_plan_checkpoints_and_states() -> None:
    client = QdrantClient(":memory:")
    state = MemoryStateStore()
    for mid in ("mig-1", "mig-2"):
        PartitionPlans(state).put(PartitionPlan(mid, "fp", "src", 100, 200))
        for index in range(2):
            Checkpoints(state).put(Checkpoint(mid, "fp", index, done=True))
        Fingerprints(client, mid).record([(1, "s1"), (2, "s2")])
    Skips(state).put(Skip("mig-1", 7, "empty"))

    forget_progress(client, state, "mig-1")

    assert PartitionPlans(state).get("mig-1") is None
    assert list(Checkpoints(state).of("mig-1")) == []
    assert list(Fingerprints(client, "mig-1").stream()) == []  # a fresh target: no states
    assert PartitionPlans(state).get("mig-2") is not None
    assert len(list(Checkpoints(state).of("mig-2"))) == 2
    assert list(Fingerprints(client, "mig-2").stream()) == [(1, "s1"), (2, "s2")]
    assert Skips(state).get("mig-1/7") is not None  # skips are not progress
    forget_progress(client, state, "mig-1")  # twice: nothing left to drop


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
        assert codec.decode(PartitionResult, codec.encode_dict(result)) == result
