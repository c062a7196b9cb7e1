"""catch_up: live writes during the backfill end up in the target, at the cost of the change.

The classification (inserts, text edits, payload-only edits, deletions), the watermark and
the skips are tested with the ``new_model`` hashing provider and an explicit clock (fast
tier); one test checks that catch-up writes the real new model's vectors (integration).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration import codec
from include.qdrant_migration.plan import Plan
from include.qdrant_migration.providers import EmbeddingProvider
from include.qdrant_migration.state import QdrantStateStore
from include.qdrant_migration.sync.backfill import BackfillSettings, PartitionBackfill
from include.qdrant_migration.sync.catchup import (
    CatchUp,
    CatchUpJob,
    CatchUpResult,
    Convergence,
    NotConvergingError,
    SyncError,
    Watermarks,
    converge,
    follow_job,
)
from include.qdrant_migration.sync.fingerprints import Fingerprints, state_of
from include.qdrant_migration.sync.skips import skipped_ids
from include.qdrant_migration.texts import EMPTY, MISSING
from tests.fakes import HashingProvider
from tests.qdrant_migration.helpers import CountingProvider, all_points, make_source, prepare
from tests.qdrant_migration.sync.support import (
    LIVE,
    Live,
    RacingClient,
    RacingProvider,
    WritingClient,
    fast_spec,
    live_migration,
    payloads,
    text_points,
    vectors,
)

POINTS = 200
#: When the first catch-up pass starts; every other moment is explicit relative to it.
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

Write = Callable[[QdrantClient], None]
Stamp = float | str | None


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _stamp(moment: datetime, as_text: bool) -> float | str:
    """``updated_at`` as the application writes it: epoch seconds or RFC 3339."""
    return moment.isoformat() if as_text else moment.timestamp()


def _seed(client: QdrantClient, corpus: list[dict[str, Any]], *, stamp: Stamp = None) -> None:
    """Ids 10, 20, ... so that inserts can land in the gaps behind the backfill's cursor."""
    points = []
    for i, record in enumerate(corpus[:POINTS], 1):
        payload = {"text": record["text"], "title": record["title"]}
        if stamp is not None:
            payload["updated_at"] = stamp
        points.append((i * 10, payload))
    make_source(client, "live_v1", points, alias="live", size=8)


CHANGES = {
    "inserted": [15, 25, 35, 45, 55],
    "text_changed": [10, 20, 30, 40, 50],
    "payload_only": [60, 70, 80, 90, 100],
    "deleted": [110, 120, 130, 140, 150],
}


def _writes(stamp: Stamp) -> Write:
    """10% of the points: 5 inserts, 5 text edits, 5 payload-only edits, 5 deletions."""

    def write(client: QdrantClient) -> None:
        extra = {} if stamp is None else {"updated_at": stamp}
        client.upsert(
            "live_v1",
            [
                qm.PointStruct(
                    id=pid,
                    vector=[0.5] * 8,
                    payload={"text": f"new note {pid}", "title": "n"} | extra,
                )
                for pid in CHANGES["inserted"]
            ],
        )
        for pid in CHANGES["text_changed"]:
            client.set_payload("live_v1", {"text": f"rewritten text {pid}"} | extra, points=[pid])
        for pid in CHANGES["payload_only"]:
            client.set_payload("live_v1", {"title": f"retitled {pid}"} | extra, points=[pid])
        client.delete("live_v1", points_selector=CHANGES["deleted"])

    return write


def _assert_level(client: QdrantClient, plan: Plan, provider: EmbeddingProvider) -> None:
    """The target has the source's ids and payloads, and the new model's vector of each text."""
    source = all_points(client, plan.source.collection, vectors=False)
    target = all_points(client, plan.target_collection)
    assert [p.id for p in target] == [p.id for p in source]
    assert [p.payload for p in target] == [p.payload for p in source]
    expected = provider.embed_documents([str((p.payload or {})["text"]) for p in source])
    np.testing.assert_allclose([p.vector for p in target], expected, atol=1e-4)


def _backfill_with_writer(
    client: QdrantClient, provider: EmbeddingProvider, write: Write, **spec: Any
) -> tuple[Plan, QdrantStateStore]:
    state = QdrantStateStore(client)
    options = fast_spec(alias="live", points_per_partition=1000, **spec)
    run = prepare(client, options, provider, state)
    writer = WritingClient(client, on_scroll=4, write=write)  # after 3 sub-batches are written
    for partition in run.partitions:
        PartitionBackfill(
            writer,  # type: ignore[arg-type]
            run.plan,
            partition,
            provider,
            state,
            BackfillSettings.of(run.plan),
        ).run()
    return run.plan, state


def _job(plan: Plan, provider: EmbeddingProvider, **changes: Any) -> CatchUpJob:
    return dataclasses.replace(CatchUpJob.forward(plan, provider), **changes)


def _counts(result: CatchUpResult) -> dict[str, int]:
    return {
        "inserted": result.inserted,
        "reembedded": result.reembedded,
        "payload_updated": result.payload_updated,
        "deleted": result.deleted,
    }


WRITTEN = {"inserted": 5, "reembedded": 5, "payload_updated": 5, "deleted": 5}


def _catch_up_writes_made_during_the_backfill(
    client: QdrantClient, corpus: list[dict[str, Any]], provider: EmbeddingProvider
) -> None:
    _seed(client, corpus)
    plan, state = _backfill_with_writer(client, provider, _writes(stamp=None))
    counting = CountingProvider(provider)

    result = CatchUp(client, _job(plan, counting), state).run()

    assert result.mode == "full_compare"
    assert _counts(result) == WRITTEN
    assert result.unchanged == POINTS - 5 - 5 - 5  # every other point, compared
    assert result.embedded == counting.texts_embedded == 5 + 5  # inserts and text edits only
    assert result.tokens > 0 and result.skipped == 0
    assert result.watermark is None  # no timestamp field: nothing to resume from
    # what it copied is recorded as the state both sides now have
    recorded = dict(Fingerprints(client, plan.migration_id).stream())
    assert recorded == {p: state_of(payload) for p, payload in payloads(client, LIVE).items()}
    # A second pass finds nothing to do and never resurrects the deleted points (so the
    # target checked below is what the first pass left).
    idle = CountingProvider(provider)
    again = CatchUp(client, _job(plan, idle), state).run()
    assert (again.inserted, again.reembedded, again.deleted, again.embedded) == (0, 0, 0, 0)
    assert again.payload_updated == 0 and again.unchanged == POINTS
    assert idle.calls == 0
    _assert_level(client, plan, provider)


def test_writes_during_backfill_are_caught_up_embedding_only_what_changed(
    corpus: list[dict[str, Any]], new_model: HashingProvider
) -> None:
    _catch_up_writes_made_during_the_backfill(QdrantClient(":memory:"), corpus, new_model)


def test_catch_up_writes_the_real_new_models_vectors(
    corpus: list[dict[str, Any]], e5: EmbeddingProvider
) -> None:
    _catch_up_writes_made_during_the_backfill(QdrantClient(":memory:"), corpus, e5)


@pytest.mark.parametrize("as_text", [False, True], ids=["epoch", "rfc3339"])
def test_with_a_timestamp_field_only_changed_points_are_read(
    corpus: list[dict[str, Any]], new_model: HashingProvider, as_text: bool
) -> None:
    client = QdrantClient(":memory:")
    _seed(client, corpus, stamp=_stamp(_at(-3600), as_text))  # written an hour before
    plan, state = _backfill_with_writer(
        client, new_model, lambda c: None, updated_at_field="updated_at"
    )
    key = f"{plan.migration_id}/forward"
    assert Watermarks(state).get(key) is None

    first = CatchUp(client, _job(plan, new_model, overlap_s=1), state, clock=lambda: T0).run()

    assert first.mode == "full_compare"  # no watermark yet: one full pass sets it
    assert first.unchanged == POINTS
    mark = Watermarks(state).get(key)
    assert mark is not None
    assert mark.since == _at(-1).isoformat()  # the pass's start, minus the overlap
    assert (mark.updated_at_field, mark.direction) == ("updated_at", "forward")

    _writes(stamp=_stamp(_at(10), as_text))(client)  # ten seconds after that pass started
    counting = CountingProvider(new_model)
    result = CatchUp(client, _job(plan, counting, overlap_s=1), state, clock=lambda: _at(60)).run()

    assert result.mode == "watermark"
    assert result.watermark == _at(-1).isoformat()
    assert _counts(result) == WRITTEN
    assert result.unchanged == 0  # the untouched 95% were not even read
    assert counting.texts_embedded == 5 + 5  # inserts and text edits only
    _assert_level(client, plan, new_model)
    moved = Watermarks(state).get(key)
    assert moved is not None and moved.since == _at(59).isoformat()


def test_the_overlap_catches_writes_stamped_just_before_the_previous_pass(
    corpus: list[dict[str, Any]], new_model: HashingProvider
) -> None:
    """A write stamped inside the overlap (a late commit, a skewed clock) is read again;
    one stamped before the watermark is not read at all: only timestamps select points."""
    client = QdrantClient(":memory:")
    _seed(client, corpus, stamp=_at(-3600).timestamp())
    plan, state = _backfill_with_writer(
        client, new_model, lambda c: None, updated_at_field="updated_at"
    )
    CatchUp(client, _job(plan, new_model, overlap_s=60), state, clock=lambda: T0).run()
    # After that pass, two payload-only edits land with application timestamps in the past.
    client.set_payload(
        "live_v1", {"title": "late commit", "updated_at": _at(-30).timestamp()}, points=[10]
    )
    client.set_payload(
        "live_v1", {"title": "stale clock", "updated_at": _at(-90).timestamp()}, points=[20]
    )

    result = CatchUp(
        client, _job(plan, new_model, overlap_s=60), state, clock=lambda: _at(3600)
    ).run()

    assert result.mode == "watermark" and result.watermark == _at(-60).isoformat()
    assert (result.payload_updated, result.unchanged, result.embedded) == (1, 0, 0)
    target = {p.id: p.payload for p in all_points(client, plan.target_collection, vectors=False)}
    assert target[10] is not None and target[10]["title"] == "late commit"
    assert target[20] is not None and target[20]["title"] != "stale clock"  # never read


def test_payload_only_edits_are_copied_without_embedding(
    corpus: list[dict[str, Any]], new_model: HashingProvider
) -> None:
    client = QdrantClient(":memory:")
    _seed(client, corpus)
    plan, state = _backfill_with_writer(client, new_model, lambda c: None)
    before = {p.id: p.vector for p in all_points(client, plan.target_collection)}
    client.set_payload("live_v1", {"title": "retitled", "tags": ["a"]}, points=[30, 40])
    counting = CountingProvider(new_model)

    result = CatchUp(client, _job(plan, counting), state).run()

    assert result.payload_updated == 2 and counting.calls == 0
    after = {p.id: p for p in all_points(client, plan.target_collection)}
    for pid in (30, 40):
        assert after[pid].payload is not None and after[pid].payload["tags"] == ["a"]
        assert after[pid].vector == before[pid]  # the vector of the unchanged text is kept


def test_unusable_texts_are_skipped_recorded_and_forgotten_once_fixed(
    corpus: list[dict[str, Any]], new_model: HashingProvider
) -> None:
    client = QdrantClient(":memory:")
    _seed(client, corpus)
    plan, state = _backfill_with_writer(client, new_model, lambda c: None)
    mid = plan.migration_id
    # an insert without text, and an edit that empties a text that had a vector
    client.upsert("live_v1", [qm.PointStruct(id=15, vector=[0.5] * 8, payload={"title": "t"})])
    client.set_payload("live_v1", {"text": "   "}, points=[20])
    counting = CountingProvider(new_model)

    result = CatchUp(client, _job(plan, counting), state).run()

    assert result.skipped == 2
    assert result.skipped_by_reason == {MISSING: 1, EMPTY: 1}
    assert counting.texts_embedded == 0  # unusable texts are never sent
    target_ids = {p.id for p in all_points(client, plan.target_collection, vectors=False)}
    assert 15 not in target_ids
    assert 20 not in target_ids  # its old vector no longer matches its text: removed
    assert skipped_ids(state, mid) == {"15", "20"}

    # nothing changed: the known skips are neither inserts nor new skips
    calm = CatchUp(client, _job(plan, counting), state).run()
    assert (calm.inserted, calm.reembedded, calm.skipped, calm.embedded) == (0, 0, 0, 0)
    assert calm.unchanged == len(all_points(client, "live_v1", vectors=False))

    # the text is fixed: embedded, and no longer recorded as skipped
    client.set_payload("live_v1", {"text": "a proper text again"}, points=[20])
    fixed = CatchUp(client, _job(plan, counting), state).run()
    assert fixed.embedded == 1 and counting.texts_embedded == 1
    assert (fixed.inserted, fixed.skipped) == (1, 0)  # 20 is back in the target
    assert skipped_ids(state, mid) == {"15"}
    vector = {p.id: p.vector for p in all_points(client, plan.target_collection)}[20]
    np.testing.assert_allclose(vector, new_model.vector("a proper text again"), atol=1e-6)


def test_a_known_skip_is_not_taken_for_a_missing_point_in_watermark_mode(
    corpus: list[dict[str, Any]], new_model: HashingProvider
) -> None:
    client = QdrantClient(":memory:")
    _seed(client, corpus, stamp=_at(-3600).timestamp())
    plan, state = _backfill_with_writer(
        client, new_model, lambda c: None, updated_at_field="updated_at"
    )
    client.upsert(
        "live_v1",
        [qm.PointStruct(id=15, vector=[0.5] * 8, payload={"updated_at": _at(-10).timestamp()})],
    )
    first = CatchUp(client, _job(plan, new_model, overlap_s=1), state, clock=lambda: T0).run()
    assert (first.mode, first.inserted, first.skipped) == ("full_compare", 1, 1)
    assert skipped_ids(state, plan.migration_id) == {"15"}

    # Its stamp is now before the watermark; the id pass sees it missing from the target
    # but knows it was skipped on purpose.
    again = CatchUp(client, _job(plan, new_model, overlap_s=1), state, clock=lambda: _at(3600))
    result = again.run()
    assert result.mode == "watermark"
    assert (result.inserted, result.skipped, result.deleted) == (0, 0, 0)


def test_forward_and_mirror_jobs() -> None:
    provider, old = HashingProvider("hash-new"), HashingProvider("hash-old")
    forward = CatchUpJob(
        migration_id="mig-1",
        source="live_v1",
        target="live_v2",
        text_field="text",
        vector_name="dense",
        provider=provider,
        updated_at_field="ts",
        batch_size=32,
    )
    mirror = forward.mirror(old)
    assert (mirror.source, mirror.target) == ("live_v2", "live_v1")
    assert mirror.provider is old and mirror.direction == "mirror"
    assert mirror.migration_id == "mig-1"  # one migration: the same recorded states
    assert (mirror.text_field, mirror.vector_name, mirror.batch_size) == ("text", "dense", 32)
    assert mirror.updated_at_field == "ts"
    # each direction has its own skips (the two models may refuse different texts) and
    # its own watermark
    assert (forward.skip_scope, mirror.skip_scope) == ("mig-1", "mig-1/mirror")
    assert (forward.watermark_key, mirror.watermark_key) == ("mig-1/forward", "mig-1/mirror")
    assert not forward.reconcile and not mirror.reconcile
    for job in (forward, mirror):
        reconciling = job.reconciling()
        assert reconciling.reconcile
        assert reconciling == dataclasses.replace(job, reconcile=True)  # nothing else changes
        assert reconciling.watermark_key == job.watermark_key


def test_forward_job_is_made_from_the_plan(
    corpus: list[dict[str, Any]], new_model: HashingProvider
) -> None:
    client = QdrantClient(":memory:")
    _seed(client, corpus)
    state = QdrantStateStore(client)
    spec = fast_spec(alias="live", updated_at_field="ts", batch_size=32, bad_text_policy="fail")
    plan = prepare(client, spec, new_model, state).plan
    job = CatchUpJob.forward(plan, new_model)
    assert (job.migration_id, job.source, job.target) == (
        plan.migration_id,
        "live_v1",
        plan.target_collection,
    )
    assert (job.text_field, job.vector_name, job.updated_at_field) == ("text", None, "ts")
    assert (job.batch_size, job.bad_text_policy, job.direction) == (32, "fail", "forward")
    assert job.provider is new_model


def test_result_round_trips() -> None:
    result = CatchUpResult(
        mode="watermark",
        direction="mirror",
        reconcile=True,
        inserted=2,
        drift=1,
        conflicts=3,
        kept=4,
        revectored=5,
        cut=T0.isoformat(),
        skipped_by_reason={EMPTY: 1},
    )
    assert codec.decode(CatchUpResult, codec.encode_dict(result)) == result
    # a result written by another version may carry more fields: they are ignored
    assert codec.decode(CatchUpResult, codec.encode_dict(result) | {"unknown": 1}) == result


def test_changes_count_what_a_pass_copied() -> None:
    result = CatchUpResult(
        mode="full_compare",
        inserted=1,
        reembedded=2,
        payload_updated=4,
        deleted=8,
        skipped=16,
        unchanged=1000,  # not changes: nor is what reconciling kept of the target
        drift=3,  # already counted in what was copied
        conflicts=5,
        kept=7,
        revectored=7,
        embedded=99,
    )
    assert result.changes == 31


# -- following: the collection the alias does not serve follows the one it serves --------


def _live(
    new_model: HashingProvider, old_model: HashingProvider, count: int = 12, **spec: Any
) -> Live:
    """A backfilled migration of LIVE (ids 10..10*count), level after one forward pass."""
    stamp = _at(-3600).timestamp() if spec.get("updated_at_field") else None
    live = live_migration(
        QdrantClient(":memory:"), text_points(count, stamp=stamp), new_model, old_model, **spec
    )
    first = live.run(live.forward(overlap_s=1), clock=lambda: T0)
    assert first.changes == 0 and first.unchanged == count
    return live


def _assert_follows(live: Live, source: str, target: str, model: HashingProvider) -> None:
    """``target`` holds ``source``'s points, payloads and ``model``'s vector of each text,
    and the recorded states are theirs."""
    expected = payloads(live.client, source)
    assert payloads(live.client, target) == expected
    got = vectors(live.client, target)
    for pid, payload in expected.items():
        np.testing.assert_allclose(got[pid], model.vector(payload["text"]), atol=1e-5)
    assert live.recorded() == {pid: state_of(payload) for pid, payload in expected.items()}


def test_the_target_changed_behind_our_back_is_put_back_and_counted_as_drift(
    new_model: HashingProvider, old_model: HashingProvider
) -> None:
    live = _live(new_model, old_model)
    served = payloads(live.client, live.old)
    # somebody writes the collection nobody should write (the alias serves the old one)
    live.client.set_payload(live.new, {"title": "tampered"}, points=[20])
    live.client.set_payload(live.new, {"text": "tampered text"}, points=[40])
    live.client.delete(live.new, qm.PointIdsList(points=[60]))
    live.client.upsert(
        live.new, [qm.PointStruct(id=65, vector=new_model.vector("stray"), payload={"text": "x"})]
    )
    counting = CountingProvider(new_model)

    result = live.run(live.forward(counting))

    assert result.drift == 4
    assert (result.payload_updated, result.reembedded, result.inserted, result.deleted) == (
        1,
        1,
        1,
        1,
    )
    assert counting.texts_embedded == 2  # the tampered text, and the deleted point's
    assert payloads(live.client, live.old) == served  # the served side is never written
    _assert_follows(live, live.old, live.new, new_model)
    again = live.run(live.forward(counting))
    assert (again.changes, again.drift, again.unchanged) == (0, 0, 12)


def test_watermark_mode_still_finds_deletions_and_inserts_without_a_timestamp(
    new_model: HashingProvider, old_model: HashingProvider
) -> None:
    live = _live(new_model, old_model, updated_at_field="updated_at")
    client = live.client
    client.upsert(  # no timestamp: only the id pass can find it
        LIVE, [qm.PointStruct(id=15, vector=old_model.vector("x"), payload={"text": "unstamped"})]
    )
    client.delete(LIVE, qm.PointIdsList(points=[30]))
    client.delete(live.new, qm.PointIdsList(points=[50]))  # drift: found by the id pass too
    client.set_payload(LIVE, {"text": "stamped edit", "updated_at": _at(10).timestamp()}, [70])
    client.set_payload(LIVE, {"title": "unstamped edit"}, points=[90])  # not found: by design
    counting = CountingProvider(new_model)

    result = live.run(live.forward(counting, overlap_s=1), clock=lambda: _at(60))

    assert (result.mode, result.watermark) == ("watermark", _at(-1).isoformat())
    assert (result.inserted, result.deleted, result.reembedded, result.drift) == (2, 1, 1, 1)
    assert result.payload_updated == 0
    assert result.unchanged == 0  # the untouched points were not read
    assert counting.texts_embedded == 3
    target = payloads(client, live.new)
    assert target[15] == {"text": "unstamped"} and 30 not in target
    assert target[50] == payloads(client, LIVE)[50] and target[70]["text"] == "stamped edit"
    assert target[90]["title"] == "t9"  # only timestamps select changed points
    later = live.run(live.forward(counting, overlap_s=1), clock=lambda: _at(3600))
    assert (later.mode, later.changes, later.drift) == ("watermark", 0, 0)


def test_watermark_mode_finds_stamped_edits_when_the_first_point_has_no_timestamp(
    new_model: HashingProvider, old_model: HashingProvider
) -> None:
    live = _live(new_model, old_model, updated_at_field="updated_at")
    live.client.upsert(  # below every other id: the first point of the source
        LIVE, [qm.PointStruct(id=1, vector=old_model.vector("x"), payload={"text": "unstamped"})]
    )
    live.client.set_payload(LIVE, {"text": "stamped", "updated_at": _at(10).timestamp()}, [50])

    result = live.run(live.forward(overlap_s=1), clock=lambda: _at(60))

    assert (result.inserted, result.reembedded) == (1, 1)
    assert payloads(live.client, live.new)[50]["text"] == "stamped"


def test_mirror_skips_are_kept_apart_from_the_forward_direction(
    new_model: HashingProvider, old_model: HashingProvider
) -> None:
    live = _live(new_model, old_model)
    mid = live.plan.migration_id
    # after the swap the application writes the new collection: an empty text
    live.client.set_payload(live.new, {"text": "   "}, points=[40])
    counting = CountingProvider(old_model)

    result = live.run(live.mirror(counting))

    assert (result.direction, result.skipped, result.skipped_by_reason) == (
        "mirror",
        1,
        {EMPTY: 1},
    )
    assert counting.texts_embedded == 0
    assert skipped_ids(live.state, f"{mid}/mirror") == {"40"}
    assert skipped_ids(live.state, mid) == set()  # the forward direction's skips
    assert 40 not in payloads(live.client, live.old)  # its old vector no longer fits its text
    calm = live.run(live.mirror(counting))
    assert (calm.changes, calm.skipped, calm.unchanged) == (0, 0, 12)  # a known skip


def test_mirroring_keeps_points_the_forward_direction_skipped(
    new_model: HashingProvider, old_model: HashingProvider
) -> None:
    points = text_points(6)
    points[1] = (20, {"title": "no text at all"})
    live = live_migration(QdrantClient(":memory:"), points, new_model, old_model)
    assert 20 not in payloads(live.client, live.new)

    result = live.run(live.mirror())

    assert result.deleted == 0
    assert payloads(live.client, live.old)[20] == {"title": "no text at all"}  # a rollback has it


def test_follow_job_follows_the_alias(
    new_model: HashingProvider, old_model: HashingProvider
) -> None:
    live = _live(new_model, old_model, count=3)
    plan = live.plan

    assert follow_job(plan, live.old, new_model, None) == CatchUpJob.forward(plan, new_model)
    mirror = follow_job(plan, live.new, new_model, old_model)
    assert mirror == CatchUpJob.forward(plan, new_model).mirror(old_model)
    assert (mirror.source, mirror.target, mirror.provider) == (live.new, live.old, old_model)

    with pytest.raises(SyncError, match="set source_provider and source_model") as unknown:
        follow_job(plan, live.new, new_model, None)
    assert repr(live.old) in str(unknown.value)
    for foreign in ("someone_elses", None):
        with pytest.raises(SyncError, match="has nothing to follow") as error:
            follow_job(plan, foreign, new_model, old_model)
        assert f"serves {foreign!r}" in str(error.value)


# -- reconciling: right after the alias moved ----------------------------------------------


def _app_write(
    client: QdrantClient, collection: str, pid: int, text: str, vector: list[float], **extra: Any
) -> None:
    """The application writes through the alias: the whole point."""
    payload = {"text": text, "title": "app"} | extra
    client.upsert(collection, [qm.PointStruct(id=pid, vector=vector, payload=payload)])


def test_reconciling_copies_the_window_keeps_the_served_sides_writes_and_mirrors_them_back(
    new_model: HashingProvider, old_model: HashingProvider
) -> None:
    live = _live(new_model, old_model)
    client, old, new = live.client, live.old, live.new
    # The switch's window: the application still wrote the old collection...
    _app_write(client, old, 10, "window edit of 10", old_model.vector("window edit of 10"))
    client.set_payload(old, {"title": "window title"}, points=[20])
    _app_write(client, old, 15, "window insert 15", old_model.vector("window insert 15"))
    client.delete(old, qm.PointIdsList(points=[30]))
    # ...and already the new one, with vectors made before the switch (the old model's)
    for point, text in ((40, "served edit of 40"), (45, "served insert 45")):
        _app_write(client, new, point, text, old_model.vector(text))
    client.delete(new, qm.PointIdsList(points=[50]))
    # both sides changed: conflicts, and without updated_at the served side wins
    _app_write(client, old, 60, "old side 60", old_model.vector("old side 60"))
    _app_write(client, new, 60, "new side 60", old_model.vector("new side 60"))
    client.delete(old, qm.PointIdsList(points=[70]))
    _app_write(client, new, 70, "new side 70", old_model.vector("new side 70"))
    _app_write(client, old, 80, "old side 80", old_model.vector("old side 80"))
    client.delete(new, qm.PointIdsList(points=[80]))
    window = payloads(client, old)
    counting = CountingProvider(new_model)

    result = live.run(live.forward(counting).reconciling())

    assert (result.reconcile, result.direction, result.mode) == (True, "forward", "full_compare")
    assert (result.inserted, result.reembedded, result.payload_updated, result.deleted) == (
        1,
        1,
        1,
        1,
    )
    assert (result.conflicts, result.kept, result.revectored, result.drift) == (3, 6, 4, 0)
    assert result.embedded == counting.texts_embedded == 2 + 4
    served = payloads(client, new)
    assert served[10]["text"] == "window edit of 10" and served[20]["title"] == "window title"
    assert served[15]["text"] == "window insert 15" and 30 not in served
    assert served[40]["text"] == "served edit of 40" and served[45]["text"] == "served insert 45"
    assert 50 not in served and 80 not in served
    assert served[60]["text"] == "new side 60" and served[70]["text"] == "new side 70"
    # every vector of the served collection is its model's now, the raced ones too
    got = vectors(client, new)
    for pid, payload in served.items():
        np.testing.assert_allclose(got[pid], new_model.vector(payload["text"]), atol=1e-5)
    assert payloads(client, old) == window  # a pass never writes its source

    # From now on the old collection follows: what the served side kept is copied back.
    mirror = live.run(follow_job(live.plan, new, new_model, CountingProvider(old_model)))

    assert (mirror.direction, mirror.reconcile, mirror.drift) == ("mirror", False, 0)
    assert (mirror.inserted, mirror.reembedded, mirror.deleted, mirror.payload_updated) == (
        2,  # 45, and 70 (deleted on the old side)
        2,  # 40, 60
        2,  # 50, 80
        0,
    )
    assert mirror.unchanged == 7  # 10, 15, 20 (copied by the reconcile) and 90..120
    _assert_follows(live, new, old, old_model)
    again = live.run(live.mirror())
    assert (again.changes, again.drift) == (0, 0)


@pytest.mark.parametrize("as_text", [False, True], ids=["epoch", "rfc3339"])
def test_a_conflict_goes_to_the_side_written_last_when_both_carry_updated_at(
    new_model: HashingProvider, old_model: HashingProvider, as_text: bool
) -> None:
    live = _live(new_model, old_model, updated_at_field="updated_at")
    client, old, new = live.client, live.old, live.new

    def stamp(seconds: float) -> float | str:
        return _stamp(_at(seconds), as_text)

    if as_text:  # the seeded points carry text stamps too
        for pid in payloads(client, old):
            client.set_payload(old, {"updated_at": stamp(-3600)}, points=[pid])
            client.set_payload(new, {"updated_at": stamp(-3600)}, points=[pid])
    # 60: the old side wrote last; 70: the new side did (with the old model's vectors)
    for collection, pid, text, at in (
        (old, 60, "old 60 at +20", 20),
        (new, 60, "new 60 at +10", 10),
        (old, 70, "old 70 at +10", 10),
        (new, 70, "new 70 at +20", 20),
    ):
        _app_write(client, collection, pid, text, old_model.vector(text), updated_at=stamp(at))

    result = live.run(live.forward().reconciling(), clock=lambda: _at(60))

    assert result.conflicts == 2
    assert (result.reembedded, result.kept, result.revectored) == (1, 1, 1)
    served = payloads(client, new)
    assert served[60]["text"] == "old 60 at +20"  # the newer write, copied over
    assert served[70]["text"] == "new 70 at +20"  # the newer write, kept
    got = vectors(client, new)
    for pid in (60, 70):
        np.testing.assert_allclose(got[pid], new_model.vector(served[pid]["text"]), atol=1e-5)

    mirror = live.run(live.mirror(), clock=lambda: _at(120))
    assert (mirror.reembedded, mirror.drift) == (1, 0)  # 70 goes back to the old side
    _assert_follows(live, new, old, old_model)


Hook = Callable[[Live, Callable[[], None]], tuple[Any, EmbeddingProvider]]


def _during_embedding(live: Live, write: Callable[[], None]) -> tuple[Any, EmbeddingProvider]:
    racing = RacingProvider(live.new_model, write)
    return live.client, racing


def _before(method: str) -> Hook:
    def hook(live: Live, write: Callable[[], None]) -> tuple[Any, EmbeddingProvider]:
        racing = RacingClient(live.client, method, live.new, lambda client: write())
        return racing, live.new_model

    return hook


@dataclass(frozen=True)
class Race:
    """What the window wrote, and the application's write that lands mid-pass."""

    window: Callable[[Live], object]
    hook: Hook
    point: int
    #: The application's write racing the pass (None: it deletes the point).
    app_text: str | None


def _old_write(pid: int, text: str) -> Callable[[Live], object]:
    """The application writes the old collection during the switch's window."""
    return lambda live: _app_write(live.client, live.old, pid, text, live.old_model.vector(text))


RACES = {
    # the pass re-embeds a window edit; the application rewrites the point meanwhile
    "reembed": Race(_old_write(10, "window edit"), _during_embedding, 10, "app wrote 10"),
    # the pass inserts a window insert; the application inserts the same id meanwhile
    "insert": Race(
        _old_write(15, "window 15"),
        _during_embedding,
        15,
        "app inserted 15",
    ),
    # the pass re-embeds a window edit; the application deletes the point meanwhile
    "resurrect": Race(_old_write(10, "window edit"), _during_embedding, 10, None),
    # the pass copies a payload-only edit; the application rewrites the point meanwhile
    "payload": Race(
        lambda live: live.client.set_payload(live.old, {"title": "window"}, points=[20]),
        _before("overwrite_payload"),
        20,
        "app wrote 20",
    ),
    # the pass applies a window delete; the application rewrites the point meanwhile
    "delete": Race(
        lambda live: live.client.delete(live.old, qm.PointIdsList(points=[30])),
        _before("delete"),
        30,
        "app wrote 30",
    ),
    # the pass re-makes the vector of the served side's write; the application writes again
    "revector": Race(
        lambda live: _app_write(
            live.client, live.new, 40, "served 40", live.old_model.vector("served 40")
        ),
        _during_embedding,
        40,
        "app wrote 40 again",
    ),
}


@pytest.mark.parametrize("race", list(RACES.values()), ids=list(RACES))
def test_reconciling_never_clobbers_what_the_application_writes_meanwhile(
    new_model: HashingProvider, old_model: HashingProvider, race: Race
) -> None:
    live = _live(new_model, old_model, count=6)
    race.window(live)
    raced = 0

    def app() -> None:
        nonlocal raced
        raced += 1
        if race.app_text is None:
            live.client.delete(live.new, qm.PointIdsList(points=[race.point]))
        else:
            vector = new_model.vector(race.app_text)
            _app_write(live.client, live.new, race.point, race.app_text, vector)

    client, provider = race.hook(live, app)

    live.run(live.forward(provider).reconciling(), client=client)

    assert raced == 1  # the application did write between the pass's read and its write
    served = payloads(live.client, live.new)
    if race.app_text is None:
        assert race.point not in served  # not resurrected
    else:
        assert served[race.point] == {"text": race.app_text, "title": "app"}
        np.testing.assert_allclose(  # nor its vector replaced
            vectors(live.client, live.new)[race.point],
            new_model.vector(race.app_text),
            atol=1e-5,
        )
    # and the old collection follows what the application wrote, not what the window did
    live.run(live.mirror())
    _assert_follows(live, live.new, live.old, old_model)
    assert live.run(live.mirror()).changes == 0


def test_reconciling_survives_the_application_deleting_a_point_it_revectors(
    new_model: HashingProvider, old_model: HashingProvider
) -> None:
    live = _live(new_model, old_model, count=6)
    _app_write(live.client, live.new, 40, "served 40", old_model.vector("served 40"))
    racing = RacingProvider(
        new_model, lambda: live.client.delete(live.new, qm.PointIdsList(points=[40]))
    )

    live.run(live.forward(racing).reconciling())

    assert 40 not in payloads(live.client, live.new)


def test_reconciling_in_watermark_mode_revectors_the_served_sides_own_writes(
    new_model: HashingProvider, old_model: HashingProvider
) -> None:
    live = _live(new_model, old_model, updated_at_field="updated_at")
    stamp = _at(10).timestamp()
    _app_write(live.client, live.new, 40, "served 40", old_model.vector("x"), updated_at=stamp)

    result = live.run(live.forward(overlap_s=1).reconciling(), clock=lambda: _at(60))

    assert (result.kept, result.revectored) == (1, 1)
    np.testing.assert_allclose(
        vectors(live.client, live.new)[40], new_model.vector("served 40"), atol=1e-5
    )


# -- converging: passes until the lag is small --------------------------------------------


def _passes_with_writes(
    live: Live, writes: Sequence[int], provider: EmbeddingProvider
) -> Callable[[], CatchUpResult]:
    """A pass every 10 s (by the injected clock); before the i-th, the application edits
    ``writes[i]`` texts (each a change the pass must copy)."""
    ids = sorted(payloads(live.client, LIVE))
    done = 0

    def run_pass() -> CatchUpResult:
        nonlocal done
        for k in range(writes[done]):
            live.client.set_payload(LIVE, {"text": f"pass {done} edit {k}"}, points=[ids[k]])
        moment = _at(10 * done)
        done += 1
        return live.run(live.forward(provider), clock=lambda: moment)

    return run_pass


def test_converge_runs_passes_until_one_finds_at_most_max_lag(
    new_model: HashingProvider, old_model: HashingProvider
) -> None:
    live = _live(new_model, old_model, count=30)
    beats = 0

    def beat() -> None:
        nonlocal beats
        beats += 1

    done = converge(_passes_with_writes(live, [20, 5, 50], new_model), max_lag=5, heartbeat=beat)

    assert [p.changes for p in done.passes] == [20, 5]  # at most max_lag: the third never ran
    assert done.last is done.passes[-1] and beats == 2
    total = done.total()
    assert (total.reembedded, total.embedded, total.unchanged) == (25, 25, 10 + 25)
    assert total.cut == done.last.cut == _at(10).isoformat(timespec="seconds")
    summary = done.to_dict()
    assert (summary["passes"], summary["changes_per_pass"], summary["max_lag"]) == (2, [20, 5], 5)
    assert summary["reembedded"] == 25
    _assert_follows(live, live.old, live.new, new_model)


def test_writes_as_fast_as_the_passes_make_converge_fail_with_the_measured_rate(
    new_model: HashingProvider, old_model: HashingProvider
) -> None:
    live = _live(new_model, old_model, count=40)

    with pytest.raises(NotConvergingError) as error:
        converge(_passes_with_writes(live, [30] * 12, new_model), max_lag=5)

    message = str(error.value)
    assert isinstance(error.value, SyncError)
    assert "3 passes found 30, 30, 30 changes" in message  # three passes that did not shrink
    assert "about 3.0 points/s (30 changes in the 10s between the last two passes)" in message
    assert "more than max_catch_up_lag=5" in message
    assert "Set updated_at_field" in message and "raise max_catch_up_lag" in message


def _result(changes: int, at: float, **counts: Any) -> CatchUpResult:
    return CatchUpResult(
        mode="full_compare", inserted=changes, cut=_at(at).isoformat(), seconds=2.0, **counts
    )


def test_converge_gives_up_after_max_passes_even_while_the_lag_shrinks() -> None:
    results = iter([_result(100, 0), _result(80, 10), _result(64, 20), _result(51, 30)])

    with pytest.raises(NotConvergingError, match="4 passes found 100, 80, 64, 51 changes"):
        converge(lambda: next(results), max_lag=10, max_passes=4)


def test_a_lag_that_shrinks_fast_enough_is_waited_for() -> None:
    results = iter([_result(n, 10 * i) for i, n in enumerate([100, 91, 85, 70, 9])])
    done = converge(lambda: next(results), max_lag=10)
    assert [p.changes for p in done.passes] == [100, 91, 85, 70, 9]


def test_convergence_total_adds_every_count_up() -> None:
    first = _result(
        3, 0, deleted=1, drift=2, embedded=3, tokens=30, skipped=1, skipped_by_reason={EMPTY: 1}
    )
    last = dataclasses.replace(
        _result(2, 10, reembedded=1, embedded=3, tokens=20, skipped=2),
        mode="watermark",
        watermark=_at(-1).isoformat(),
        skipped_by_reason={EMPTY: 1, MISSING: 1},
    )

    total = Convergence([first, last], max_lag=5).total()

    assert (total.inserted, total.deleted, total.reembedded, total.drift) == (5, 1, 1, 2)
    assert (total.embedded, total.tokens, total.skipped, total.seconds) == (6, 50, 3, 4.0)
    assert total.skipped_by_reason == {EMPTY: 2, MISSING: 1}
    assert (total.mode, total.cut, total.watermark) == ("watermark", last.cut, last.watermark)
    assert total.changes == first.changes + last.changes
    assert last.skipped_by_reason == {EMPTY: 1, MISSING: 1}  # the passes are not changed


def test_a_served_write_too_long_for_the_model_keeps_its_vector_under_the_skip_policy(
    new_model: HashingProvider, old_model: HashingProvider
) -> None:
    live = _live(new_model, old_model, updated_at_field="updated_at")
    client, new = live.client, live.new
    long_text = " ".join(f"word{i}" for i in range(2000))  # far over 512 tokens
    written = old_model.vector(long_text)
    _app_write(client, new, 70, long_text, written, updated_at=_at(20).timestamp())
    skipping = HashingProvider("hash-new", options={"too_long_policy": "skip"})

    result = live.run(live.forward(skipping).reconciling(), clock=lambda: _at(60))

    assert result.kept == 1 and result.revectored == 0
    (reason,) = result.skipped_by_reason
    assert "tokens > 512 per input" in reason, result.skipped_by_reason
    np.testing.assert_allclose(vectors(client, new)[70], written, atol=1e-6)  # as written
