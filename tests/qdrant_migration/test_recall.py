from __future__ import annotations

import dataclasses

import pytest
from qdrant_client import models as qm

from include.qdrant_migration.providers import EmbeddingProvider
from include.qdrant_migration.recall import (
    CheckFailedError,
    check_target,
    readiness,
    reconcile_ids,
    self_retrieval,
)
from tests.qdrant_migration.helpers import SEED_POINTS, Migrated

EXTRA_UUID = "5b0f6a5e-8d0c-4d57-9b1c-2a5b8d3c7e11"


def _samples(migrated: Migrated, collection: str, limit: int) -> list[qm.ScoredPoint]:
    records = migrated.client.scroll(collection, limit=limit, with_payload=True, with_vectors=True)[
        0
    ]
    return [
        qm.ScoredPoint(id=r.id, version=0, score=0.0, payload=r.payload, vector=r.vector)
        for r in records
    ]


def test_check_target_passes_a_complete_target_with_evidence(
    migrated: Migrated, e5: EmbeddingProvider
) -> None:
    backfill = {"embedded": SEED_POINTS, "skipped": 0}
    evidence = check_target(migrated.client, migrated.plan, backfill, e5, migrated.state)
    assert evidence is not None
    assert evidence["source_points"] == evidence["target_points"] == SEED_POINTS
    assert evidence["reconciliation"]["missing"] == 0
    assert evidence["reconciliation"]["extra"] == 0
    assert evidence["points_without_vector"] == 0
    assert evidence["recall_at_k"] == 1.0  # local mode searches exactly
    assert evidence["k"] == 5 and evidence["recall_threshold"] == 0.95
    assert evidence["sample_queries"] == 20
    assert evidence["self_retrieval"]["queries"] == 20
    assert evidence["self_retrieval"]["hit_at_1"] >= 0.9
    assert evidence["backfill"] == backfill
    assert "embedded store" in evidence["readiness"]


def test_missing_points_fail_the_check_with_their_count(
    migrated: Migrated, e5: EmbeddingProvider
) -> None:
    gone = [5, 6, 7, 100, 239]
    migrated.client.delete(migrated.plan.target_collection, points_selector=gone, wait=True)
    with pytest.raises(CheckFailedError) as error:
        check_target(migrated.client, migrated.plan, {}, e5, migrated.state)
    message = str(error.value)
    assert message.startswith(
        f"5 source points are missing from {migrated.plan.target_collection!r}"
    )
    assert f"e.g. ids {gone}" in message
    assert "not counting 0 recorded skips" in message


def test_reconcile_ids_finds_missing_extra_and_skipped(migrated: Migrated) -> None:
    client, plan, state = migrated.client, migrated.plan, migrated.state
    target = plan.target_collection
    client.delete(target, points_selector=[1, 50, 240], wait=True)
    state.put(
        "skip",
        f"{plan.migration_id}/50",
        {"migration_id": plan.migration_id, "point_id": 50, "reason": "empty"},
    )
    vector = [0.1] * 384
    client.upsert(
        target,
        [qm.PointStruct(id=100_000, vector=vector), qm.PointStruct(id=EXTRA_UUID, vector=vector)],
        wait=True,
    )
    result = reconcile_ids(client, plan.source.collection, target, state, plan.migration_id)
    assert result == {
        "missing": 2,
        "missing_examples": [1, 240],
        "skipped": 1,
        "extra": 2,
        "extra_examples": [100_000, EXTRA_UUID],
    }
    # a skip recorded by another migration does not excuse this one
    other = reconcile_ids(client, plan.source.collection, target, state, "mig-other")
    assert (other["missing"], other["skipped"]) == (3, 0)


def test_extra_points_alone_do_not_fail_the_check(
    migrated: Migrated, e5: EmbeddingProvider
) -> None:
    """Points written to the target by the application's dual writes are allowed."""
    migrated.client.upsert(
        migrated.plan.target_collection,
        [qm.PointStruct(id=100_000, vector=[0.1] * 384, payload={"text": "new article"})],
        wait=True,
    )
    evidence = check_target(migrated.client, migrated.plan, {}, e5, migrated.state)
    assert evidence is not None
    assert evidence["reconciliation"]["extra"] == 1
    assert evidence["target_points"] == SEED_POINTS + 1


def test_recall_below_the_threshold_fails(migrated: Migrated, e5: EmbeddingProvider) -> None:
    """Local mode always searches exactly, so only an impossible threshold can fail it."""
    spec = migrated.plan.spec | {"recall_threshold": 1.01}
    plan = dataclasses.replace(migrated.plan, spec=spec)
    with pytest.raises(CheckFailedError, match=r"recall@5 .* is 1\.000, below the threshold"):
        check_target(migrated.client, plan, {}, e5, migrated.state)


def test_self_retrieval_finds_each_document_with_new_model_queries(
    migrated: Migrated, e5: EmbeddingProvider
) -> None:
    samples = _samples(migrated, migrated.plan.target_collection, 30)
    result = self_retrieval(migrated.client, migrated.plan, e5, samples, k=10)
    assert result["queries"] == 30
    assert result["hit_at_1"] >= 0.9
    assert result["mrr"] >= result["hit_at_1"]


def test_self_retrieval_exposes_vectors_of_another_model(
    migrated: Migrated, e5: EmbeddingProvider
) -> None:
    """The same check on the old collection (MiniLM vectors, same size) scores poorly."""
    old = dataclasses.replace(migrated.plan, target_collection=migrated.plan.source.collection)
    samples = _samples(migrated, old.target_collection, 30)
    result = self_retrieval(migrated.client, old, e5, samples, k=10)
    assert result["queries"] == 30
    assert result["hit_at_1"] < 0.5


def test_self_retrieval_without_text(migrated: Migrated, e5: EmbeddingProvider) -> None:
    samples = _samples(migrated, migrated.plan.target_collection, 3)
    for point in samples:
        point.payload = {"title": "no text"}
    assert self_retrieval(migrated.client, migrated.plan, e5, samples, k=5) == {
        "queries": 0,
        "hit_at_1": None,
        "mrr": None,
    }


def test_embedded_store_is_always_ready(migrated: Migrated) -> None:
    ready = readiness(migrated.client, migrated.plan.target_collection)
    assert ready.ready
