"""The records of the release before schema versions, read and carried on by this one.

``tests/fixtures/release-ea95164`` is an embedded store that release (commit ea95164) wrote
with its own code (``tests/fixtures/make_release_store.py``): four migrations in different
states, every record kind among them, none with a schema version. Each test works on a
copy. This release must read every record, continue the migration that was loading,
roll back the one that was swapped, retire the in-place one, and write back what it
touches at its current versions.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration import leases, linear_map
from include.qdrant_migration.aliases import current_target
from include.qdrant_migration.checks import recall
from include.qdrant_migration.checks.quality import Quality
from include.qdrant_migration.checks.recall import RecallResult
from include.qdrant_migration.qdrant import QdrantSettings, open_client
from include.qdrant_migration.spec import Strategy
from include.qdrant_migration.state import (
    LeaseRecord,
    Leases,
    MigrationRecord,
    Migrations,
    MigrationStatus,
    QdrantStateStore,
    RecordKind,
    Reports,
    Repository,
    StateStore,
)
from include.qdrant_migration.state.schemas import version_of
from include.qdrant_migration.strategies import Models, strategy_of
from include.qdrant_migration.sync.backfill import BackfillSettings, BackfillSummary
from include.qdrant_migration.sync.catchup import CatchUpPasses, Watermarks, converge
from include.qdrant_migration.sync.checkpoints import Checkpoints
from include.qdrant_migration.sync.pacing import PacingSummary, unpaced
from include.qdrant_migration.sync.partitions import PartitionPlans, partitions_for
from include.qdrant_migration.sync.skips import Skip, Skips
from tests.fakes import HashingProvider
from tests.qdrant_migration.helpers import all_points

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "release-ea95164" / "qdrant"
OLD = HashingProvider("hash-old-16")
NEW = HashingProvider("hash-new-16")
#: What the generator named the migrations (their ids are derived from their specs).
ARTICLES, NEWS, NOTES, DOCS = (
    "mig-f43e7b5c5c2d",
    "mig-350a57a2f67e",
    "mig-90563b79fe57",
    "mig-54c692451dea",
)
DEAD_RUN = "qdrant_model_migration/manual__2026-11-20T10:00:00+00:00"
THIS_RUN = "qdrant_model_migration/manual__2026-12-01T09:00:00+00:00"
REPOSITORIES: dict[RecordKind, Callable[[StateStore], Repository[Any]]] = {
    RecordKind.MIGRATION: Migrations,
    RecordKind.PARTITION_PLAN: PartitionPlans,
    RecordKind.CHECKPOINT: Checkpoints,
    RecordKind.SKIP: Skips,
    RecordKind.WATERMARK: Watermarks,
    RecordKind.CATCH_UP: CatchUpPasses,
    RecordKind.LEASE: Leases,
    RecordKind.REPORT: Reports,
    RecordKind.LINEAR_MAP: linear_map.LinearMaps,
    RecordKind.LINEAR_MAP_CHUNK: linear_map.LinearMapChunks,
}


@dataclass
class Release:
    client: QdrantClient
    state: QdrantStateStore

    def record(self, migration_id: str) -> MigrationRecord:
        return Migrations(self.state).require(migration_id)

    def stored(self, kind: RecordKind, key: str) -> dict[str, Any]:
        doc = self.state.get(kind, key)
        assert doc is not None, (kind, key)
        return doc


@pytest.fixture
def release(tmp_path: Path) -> Iterator[Release]:
    path = tmp_path / "qdrant"
    shutil.copytree(FIXTURE, path)
    with open_client(QdrantSettings(path=str(path))) as client:
        yield Release(client, QdrantStateStore(client))


def test_the_fixture_holds_every_kind_as_the_release_wrote_it(release: Release) -> None:
    """Version 1 of every kind (no version key), and each read through its repository under
    the key it is stored at."""
    assert set(REPOSITORIES) == set(RecordKind)
    counts = {}
    for kind, repository in REPOSITORIES.items():
        stored = list(release.state.scan(kind))
        assert stored, f"the fixture has no {kind} record"
        assert all("schema" not in doc for _, doc in stored)
        records = list(repository(release.state).scan())
        assert sorted(r.key for r in records) == sorted(key for key, _ in stored)
        counts[kind.value] = len(records)
    assert counts == {
        "migration": 4,
        "plan": 4,
        "checkpoint": 6,
        "skip": 1,
        "watermark": 1,
        "catch_up": 2,
        "lease": 2,
        "report": 1,
        "linear_map": 2,
        "linear_map_chunk": 2,
    }


def test_every_record_reads_with_its_values(release: Release) -> None:
    state, client = release.state, release.client
    by_alias = {r.alias: r for r in Migrations(state).all()}
    assert {alias: (r.status, r.strategy) for alias, r in by_alias.items()} == {
        "articles": (MigrationStatus.SWAPPED, Strategy.FULL_REEMBED),
        "news": (MigrationStatus.LOADING, Strategy.FULL_REEMBED),
        "notes": (MigrationStatus.SWAPPED, Strategy.IN_PLACE),
        "docs": (MigrationStatus.LOADING, Strategy.LINEAR_MAP),
    }
    articles = by_alias["articles"]
    assert articles.previous_collection == "articles_v1" and articles.swapped_at
    assert current_target(client, "articles") == articles.target_collection
    assert articles.plan is not None and articles.plan.spec.updated_at_field == "updated_at"
    assert articles.plan.source.points == 41 and articles.plan.spec.source_model == OLD.model
    assert articles.plan.estimate.source_search_ms == {}  # a field added since: its default
    notes = by_alias["notes"].plan
    assert notes is not None and (notes.vector_name, notes.target_vector) == ("dense", NEW.model)
    assert notes.source.carried_sparse == ["bm25"]

    plan = PartitionPlans(state).get(NEWS)
    assert plan is not None and plan.total_points == 60
    assert [(p.index, p.points, p.of) for p in plan.partitions] == [
        (0, 25, 3),
        (1, 25, 3),
        (2, 10, 3),
    ]
    assert plan.partitions[1].label == "#1 [66 .. 91) ~25 pts"
    partial = Checkpoints(state).get(f"{NEWS}/{plan.fingerprint}/1")
    assert partial is not None and not partial.done
    assert (partial.next_offset, partial.done_points, partial.requests) == (74, 8, 1)
    assert partial.pacing == PacingSummary() and partial.batch is None  # fields added since
    assert [c.done for c in Checkpoints(state).of(ARTICLES)] == [True, True]

    assert Skips(state).get(f"{ARTICLES}/9001") == Skip(ARTICLES, 9001, "empty")
    mark = Watermarks(state).get(f"{ARTICLES}/forward")
    assert mark is not None and (mark.migration_id, mark.direction) == (ARTICLES, "forward")
    assert mark.updated_at_field == "updated_at" and mark.since < mark.at
    last = CatchUpPasses(state).last(ARTICLES, "forward")
    assert last is not None and last.result.mode == "watermark" and last.result.reconcile
    in_place = CatchUpPasses(state).last(NOTES, "forward")
    assert in_place is not None and in_place.result.unchanged == 40

    claim = Leases(state).get(f"run/{NEWS}")
    assert claim is not None and claim.owner == DEAD_RUN and not claim.valid_at(time.time())
    assert leases.describe(claim, time.time()).startswith(f"{DEAD_RUN} (since ")

    report = Reports(state).get(ARTICLES)
    assert report is not None
    assert (report.strategy, report.outcome, report.run_id) == (
        Strategy.FULL_REEMBED,
        "swapped",
        DEAD_RUN.split("/")[1],
    )
    assert report.estimate is not None and report.estimate.points == 41
    assert report.markdown.startswith(f"### Swap `articles` to `{articles.target_collection}`?")
    found = report.measured("recall", RecallResult)
    assert found is not None and found.recall_at_k is not None and found.recall_at_k >= 0.95
    assert (found.completeness.source_points, found.completeness.target_points) == (41, 40)
    assert found.completeness.skipped == 1  # the point with empty text
    backfill = report.measured("backfill", BackfillSummary)
    assert backfill is not None and backfill.skipped_by_reason == {"empty": 1}
    quality = report.measured("quality", Quality)
    assert quality is not None and (quality.labeled, quality.queries, quality.k) == (False, 10, 5)
    assert quality.mean_overlap_at_k is not None and quality.new_top1_scores

    summary = linear_map.summary_of(state, DOCS)
    assert summary is not None and summary.sample == 60 and summary.kind in ("ridge", "procrustes")
    fitted = linear_map.load(state, DOCS)
    assert fitted.weights.shape == (16, 16) and fitted.bias.shape == (16,)
    calibration = linear_map.load_calibration(state, DOCS)
    assert len(calibration) == 60
    (point, (text_hash, vector)) = next(iter(calibration.items()))
    text = str((client.retrieve("docs_v1", [point])[0].payload or {})["text"])
    assert text_hash == linear_map.text_hash(text)
    np.testing.assert_allclose(vector, NEW.vector(text), atol=1e-6)


@contextmanager
def _open(state: QdrantStateStore) -> Iterator[StateStore]:
    yield state


def test_the_loading_migration_is_continued_and_swapped(release: Release) -> None:
    client, state = release.client, release.state
    # this run takes over the writer lease the dead run left (expired long ago)
    lease = leases.acquire(lambda: _open(state), f"writer/{NEWS}", THIS_RUN)
    record = release.record(NEWS)
    plan = record.plan
    assert plan is not None
    strategy = strategy_of(plan)
    parts = partitions_for(client, state, plan)  # the stored plan, not a new one
    assert [p.points for p in parts] == [25, 25, 10]
    settings = BackfillSettings.of(plan, run_id=THIS_RUN.split("/")[1])
    results = []
    for part in parts:
        job = strategy.backfill_job(client, part, state, settings, lambda: NEW)
        job.heartbeat = lambda: lease.renew(state)
        results.append(job.run())
    assert [r.resumed for r in results] == [True, True, False]
    assert [r.embedded for r in results] == [25, 25, 10]
    assert results[1].earlier == {"embedded": 8, "transformed": 0, "tokens": 293, "requests": 1}
    strategy.finish_bulk_load(client, state)
    # the application writes meanwhile: an edit and an insert, copied by the catch-up
    client.set_payload("news_v1", {"text": "News edited during the backfill."}, points=[45])
    client.upsert(
        "news_v1",
        [
            qm.PointStruct(
                id=5000, vector=OLD.vector("A late story."), payload={"text": "A late story."}
            )
        ],
        wait=True,
    )
    passes = strategy.forward_pass(client, state, NEW, heartbeat=lambda: None, pacer=unpaced())
    converged = converge(passes.run, max_lag=0)
    assert [p.changes for p in converged.passes] == [2, 0]
    record = Migrations(state).transition(release.record(NEWS), MigrationStatus.READY)
    checked = recall.poke(client, plan, state)  # the completeness check among the others
    assert checked is not None
    assert (checked.completeness.source_points, checked.completeness.target_points) == (61, 61)
    assert (checked.completeness.lag, checked.completeness.damaged) == (0, 0)

    switched = strategy.switch(client, state, record, Models(NEW, OLD), heartbeat=lambda: None)

    assert switched.move.to_collection == plan.target_collection
    assert current_target(client, "news") == plan.target_collection
    assert release.record(NEWS).status is MigrationStatus.SWAPPED
    for point in all_points(client, plan.target_collection):
        text = str((point.payload or {})["text"])
        np.testing.assert_allclose(point.vector, NEW.vector(text), atol=1e-6)
    lease.release(state)
    # what this run rewrote carries the current versions
    assert release.stored(RecordKind.MIGRATION, NEWS)["schema"] == version_of(RecordKind.MIGRATION)
    for part in parts[1:]:
        doc = release.stored(RecordKind.CHECKPOINT, f"{NEWS}/{part.fingerprint}/{part.index}")
        assert doc["schema"] == 1 and doc["done"]
    assert release.stored(RecordKind.CATCH_UP, f"{NEWS}/forward")["schema"] == 2
    assert Leases(state).get(f"writer/{NEWS}") is None  # taken over, then released


def test_the_swapped_migration_rolls_back_losing_no_write(release: Release) -> None:
    client, state = release.client, release.state
    record = release.record(ARTICLES)
    plan = record.plan
    assert plan is not None
    # the application writes through the alias after the swap: to the new collection
    text = "Written after the swap, before the rollback."
    client.upsert(
        "articles",
        [
            qm.PointStruct(
                id=7000, vector=NEW.vector(text), payload={"text": text, "updated_at": time.time()}
            )
        ],
        wait=True,
    )
    client.set_payload("articles", {"text": "Edited after the swap."}, points=[2])

    switched = strategy_of(plan).switch(
        client, state, record, Models(NEW, OLD), heartbeat=lambda: None, rollback=True
    )

    assert (switched.move.from_collection, switched.move.to_collection) == (
        plan.target_collection,
        "articles_v1",
    )
    assert current_target(client, "articles") == "articles_v1"
    rolled = release.record(ARTICLES)
    assert rolled.status is MigrationStatus.ROLLED_BACK and rolled.rolled_back_at
    back = {p.id: p for p in all_points(client, "articles_v1")}
    assert back[7000].payload is not None and back[7000].payload["text"] == text
    np.testing.assert_allclose(back[7000].vector, OLD.vector(text), atol=1e-6)  # the old model
    assert back[2].payload is not None and back[2].payload["text"] == "Edited after the swap."
    np.testing.assert_allclose(back[2].vector, OLD.vector("Edited after the swap."), atol=1e-6)
    assert switched.final is not None and switched.final.direction == "mirror"
    assert release.stored(RecordKind.MIGRATION, ARTICLES)["schema"] == 2
    mirror = Watermarks(state).get(f"{ARTICLES}/mirror")
    assert mirror is not None and release.stored(RecordKind.WATERMARK, mirror.key)["schema"] == 2
    assert Watermarks(state).get(f"{ARTICLES}/forward") is not None  # still readable, as it was


def test_the_in_place_migration_is_retired(release: Release) -> None:
    client, state = release.client, release.state
    record = release.record(NOTES)
    plan = record.plan
    assert plan is not None
    before = client.get_collection("notes_v1").config.params.vectors
    assert isinstance(before, dict) and set(before) == {"dense", NEW.model}

    done = strategy_of(plan).retire(client, state, record, observation_days=0)

    assert done["deleted"] == "notes_v1:dense"
    after = client.get_collection("notes_v1").config.params.vectors
    assert isinstance(after, dict) and set(after) == {NEW.model}
    retired = release.record(NOTES)
    assert retired.status is MigrationStatus.RETIRED and retired.retired_at
    assert release.stored(RecordKind.MIGRATION, NOTES)["schema"] == 2


def test_the_fitted_linear_map_maps_the_backfill(release: Release) -> None:
    """The map and calibration vectors the release stored are what this one maps with."""
    client, state = release.client, release.state
    plan = release.record(DOCS).plan
    assert plan is not None
    strategy = strategy_of(plan)
    settings = BackfillSettings.of(plan)
    results = [
        strategy.backfill_job(client, part, state, settings, lambda: NEW).run()
        for part in partitions_for(client, state, plan)
    ]
    assert sum(r.transformed for r in results) == 60 and sum(r.embedded for r in results) == 0
    calibration = linear_map.load_calibration(state, DOCS)
    written = {p.id: p for p in all_points(client, plan.target_collection)}
    assert len(written) == 60
    for point, (_, vector) in list(calibration.items())[:5]:  # unchanged texts: true vectors
        np.testing.assert_allclose(written[point].vector, vector, atol=1e-5)


def test_leases_the_release_left_are_taken_over_only_once_expired(release: Release) -> None:
    state = release.state
    claims = Leases(state)
    stale = claims.get(f"run/{NEWS}")
    assert isinstance(stale, LeaseRecord) and (stale.name, stale.owner) == (f"run/{NEWS}", DEAD_RUN)
    assert not claims.try_acquire(f"run/{NEWS}", THIS_RUN, 3600, now=stale.expires - 1)
    assert claims.try_acquire(f"run/{NEWS}", THIS_RUN, 3600, now=time.time())
    taken = release.stored(RecordKind.LEASE, f"run/{NEWS}")
    assert (taken["owner"], taken["name"], taken["schema"]) == (THIS_RUN, f"run/{NEWS}", 2)
