"""catch_up: live writes during the backfill end up in the target, at the cost of the change.

The classification (inserts, text edits, payload-only edits, deletions), the watermark and
the skips are tested with the ``new_model`` hashing provider and an explicit clock (fast
tier); one test checks that catch-up writes the real new model's vectors (integration).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration.plan import Plan
from include.qdrant_migration.providers import EmbeddingProvider
from include.qdrant_migration.state import QdrantStateStore, RecordKind
from include.qdrant_migration.sync.backfill import BackfillSettings, PartitionBackfill
from include.qdrant_migration.sync.catchup import CatchUp, CatchUpJob, CatchUpResult
from include.qdrant_migration.sync.skips import skipped_ids
from include.qdrant_migration.texts import EMPTY, MISSING
from tests.fakes import HashingProvider
from tests.qdrant_migration.helpers import CountingProvider, all_points, make_source, prepare
from tests.qdrant_migration.sync.support import WritingClient, fast_spec

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
    assert state.get(RecordKind.WATERMARK, key) is None

    first = CatchUp(client, _job(plan, new_model, overlap_s=1), state, clock=lambda: T0).run()

    assert first.mode == "full_compare"  # no watermark yet: one full pass sets it
    assert first.unchanged == POINTS
    mark = state.get(RecordKind.WATERMARK, key)
    assert mark is not None
    assert mark["since"] == _at(-1).isoformat()  # the pass's start, minus the overlap
    assert mark["field"] == "updated_at"

    _writes(stamp=_stamp(_at(10), as_text))(client)  # ten seconds after that pass started
    counting = CountingProvider(new_model)
    result = CatchUp(client, _job(plan, counting, overlap_s=1), state, clock=lambda: _at(60)).run()

    assert result.mode == "watermark"
    assert result.watermark == _at(-1).isoformat()
    assert _counts(result) == WRITTEN
    assert result.unchanged == 0  # the untouched 95% were not even read
    assert counting.texts_embedded == 5 + 5  # inserts and text edits only
    _assert_level(client, plan, new_model)
    moved = state.get(RecordKind.WATERMARK, key)
    assert moved is not None and moved["since"] == _at(59).isoformat()


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
    assert mirror.migration_id == "mig-1/mirror"  # its own watermark and skips
    assert (mirror.text_field, mirror.vector_name, mirror.batch_size) == ("text", "dense", 32)
    assert mirror.updated_at_field == "ts"


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
    result = CatchUpResult(mode="watermark", inserted=2, skipped_by_reason={EMPTY: 1})
    assert CatchUpResult.from_dict(result.to_dict()) == result
