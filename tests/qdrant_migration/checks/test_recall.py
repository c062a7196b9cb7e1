"""The recall_check sensor: one poke reads, waits while the target is not indexed, fails
when waiting cannot help, and returns the evidence once every check passes."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration import codec
from include.qdrant_migration.checks import CheckFailedError, recall
from include.qdrant_migration.checks.completeness import Completeness
from include.qdrant_migration.checks.recall import (
    RecallResult,
    index_recall,
    poke,
    readiness,
    sample_points,
)
from include.qdrant_migration.state import QdrantStateStore
from scripts.seeding import read_corpus
from tests.fakes import HashingProvider
from tests.qdrant_migration.hashed import HASH_DIMENSION, hash_spec
from tests.qdrant_migration.helpers import SEED_POINTS, Migrated, make_source, migrate


class ReportingClient:
    """A real client whose ``get_collection`` answers like a server's, as told.

    Local mode is always green and never indexes; a server reports a status and how many
    vectors its HNSW index holds. Everything else goes to the real store, and the name of
    every other method used is recorded in :attr:`asked`.
    """

    def __init__(self, inner: QdrantClient, **info: Any) -> None:
        self._inner = inner
        self.info = info
        self.asked: list[str] = []

    def __getattr__(self, name: str) -> Any:
        self.asked.append(name)
        return getattr(self._inner, name)

    def get_collection(self, name: str) -> qm.CollectionInfo:
        found = self._inner.get_collection(name).model_copy(deep=True)
        update = dict(self.info)
        threshold = update.pop("indexing_threshold", None)
        if threshold is not None:
            found.config.optimizer_config.indexing_threshold = threshold
        return found.model_copy(update=update)


def _on_a_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recall, "server_version", lambda _client: (1, 17, 0))


def test_poke_passes_a_complete_target_with_evidence(fast_migrated: Migrated) -> None:
    found = poke(fast_migrated.client, fast_migrated.plan, fast_migrated.state)
    assert found is not None
    assert found.completeness == Completeness(source_points=SEED_POINTS, target_points=SEED_POINTS)
    assert found.recall_at_k == 1.0  # local mode searches exactly
    assert (found.k, found.threshold, found.sample_queries) == (5, 0.95, 20)
    assert "embedded store" in found.readiness


#: Every QdrantClient method that changes a store.
WRITES = frozenset(
    {
        "upsert",
        "delete",
        "set_payload",
        "overwrite_payload",
        "delete_payload",
        "clear_payload",
        "update_vectors",
        "delete_vectors",
        "batch_update_points",
        "create_collection",
        "recreate_collection",
        "update_collection",
        "delete_collection",
        "update_collection_aliases",
        "create_payload_index",
        "delete_payload_index",
    }
)


def test_poke_only_reads(fast_migrated: Migrated) -> None:
    spy = ReportingClient(fast_migrated.client)
    found = poke(spy, fast_migrated.plan, QdrantStateStore(spy))  # type: ignore[arg-type]
    assert found is not None
    assert {"count", "scroll", "query_points"} <= set(spy.asked)  # it did look
    assert not WRITES & set(spy.asked)


def test_damaged_points_fail_the_check_with_their_count(fast_migrated: Migrated) -> None:
    gone = [5, 6, 7, 100, 239]
    target = fast_migrated.plan.target_collection
    fast_migrated.client.delete(target, points_selector=gone, wait=True)
    with pytest.raises(CheckFailedError) as error:
        poke(fast_migrated.client, fast_migrated.plan, fast_migrated.state)
    message = str(error.value)
    assert message.startswith(f"5 points of {target!r} are not what the catch-up wrote")
    assert f"e.g. ids {gone}" in message
    assert "Waiting will not repair them" in message


def test_a_point_written_to_the_target_by_somebody_else_fails_the_check(
    fast_migrated: Migrated,
) -> None:
    """The target is not served yet: only the migration writes it. Anything else is damage."""
    fast_migrated.client.upsert(
        fast_migrated.plan.target_collection,
        [qm.PointStruct(id=100_000, vector=[0.1] * HASH_DIMENSION, payload={"text": "new"})],
        wait=True,
    )
    with pytest.raises(CheckFailedError, match=r"^1 points of .* \(e\.g\. ids \[100000\]\)"):
        poke(fast_migrated.client, fast_migrated.plan, fast_migrated.state)


def test_source_writes_since_the_last_catch_up_do_not_fail_the_check(
    fast_migrated: Migrated,
) -> None:
    """The application keeps writing: what changed since the last pass is lag, reported."""
    client, plan = fast_migrated.client, fast_migrated.plan
    source = plan.source.collection
    client.upsert(
        source,
        [qm.PointStruct(id=100_000, vector=[0.1] * HASH_DIMENSION, payload={"text": "new"})],
        wait=True,
    )
    client.set_payload(source, {"text": "edited after the catch-up"}, points=[3], wait=True)
    found = poke(client, plan, fast_migrated.state)
    assert found is not None
    assert found.completeness == Completeness(
        source_points=SEED_POINTS + 1, target_points=SEED_POINTS, lag=2, lag_examples=[3, 100_000]
    )


def test_recall_below_the_threshold_fails(fast_migrated: Migrated) -> None:
    """Local mode always searches exactly, so only an impossible threshold can fail it."""
    spec = dataclasses.replace(fast_migrated.plan.spec, recall_threshold=1.01)
    plan = dataclasses.replace(fast_migrated.plan, spec=spec)
    with pytest.raises(CheckFailedError, match=r"recall@5 .* is 1\.000, below the threshold 1\.01"):
        poke(fast_migrated.client, plan, fast_migrated.state)


def test_poke_waits_without_measuring_while_qdrant_optimizes(fast_migrated: Migrated) -> None:
    """Not green: "not yet" (None), even for a target that would fail once measured."""
    target = fast_migrated.plan.target_collection
    fast_migrated.client.delete(target, points_selector=[1, 2], wait=True)
    yellow = ReportingClient(fast_migrated.client, status=qm.CollectionStatus.YELLOW)
    assert poke(yellow, fast_migrated.plan, fast_migrated.state) is None  # type: ignore[arg-type]
    assert not {"count", "scroll", "query_points"} & set(yellow.asked)
    with pytest.raises(CheckFailedError, match=r"^2 points of .* are not what the catch-up wrote"):
        poke(fast_migrated.client, fast_migrated.plan, fast_migrated.state)


def test_poke_waits_for_the_server_to_build_the_index(
    fast_migrated: Migrated, monkeypatch: pytest.MonkeyPatch
) -> None:
    _on_a_server(monkeypatch)
    client, plan = fast_migrated.client, fast_migrated.plan
    indexing = ReportingClient(client, indexing_threshold=10, indexed_vectors_count=100)
    assert poke(indexing, plan, fast_migrated.state) is None  # type: ignore[arg-type]
    indexed = ReportingClient(client, indexing_threshold=10, indexed_vectors_count=SEED_POINTS)
    found = poke(indexed, plan, fast_migrated.state)  # type: ignore[arg-type]
    assert found is not None
    assert found.readiness == f"green, {SEED_POINTS}/{SEED_POINTS} vectors indexed"


def test_embedded_store_is_always_ready(fast_migrated: Migrated) -> None:
    ready = readiness(fast_migrated.client, fast_migrated.plan.target_collection)
    assert ready.ready
    assert ready.reason == "embedded store: searches are exact, there is no index to build"


@pytest.mark.parametrize(
    ("info", "ready", "reason"),
    [
        (
            {"status": qm.CollectionStatus.YELLOW},
            False,
            "collection status is yellow (optimizing)",
        ),
        (
            {"status": qm.CollectionStatus.GREY},
            False,
            "collection status is grey (optimizing)",
        ),
        # 240 x 64 floats = 60 KiB: above a 10 KiB threshold, so an index must be built
        (
            {"indexing_threshold": 10, "indexed_vectors_count": 239},
            False,
            f"239/{SEED_POINTS} vectors indexed",
        ),
        (
            {"indexing_threshold": 10, "indexed_vectors_count": SEED_POINTS},
            True,
            f"green, {SEED_POINTS}/{SEED_POINTS} vectors indexed",
        ),
        # below the threshold the server searches exactly: nothing to wait for
        (
            {"indexing_threshold": 100, "indexed_vectors_count": 0},
            True,
            f"green, 0/{SEED_POINTS} vectors indexed",
        ),
        # indexing off (threshold 0): nothing to wait for either
        (
            {"indexing_threshold": 0, "indexed_vectors_count": 0},
            True,
            f"green, 0/{SEED_POINTS} vectors indexed",
        ),
    ],
    ids=["yellow", "grey", "indexing", "indexed", "small", "indexing-off"],
)
def test_readiness_on_a_server(
    fast_migrated: Migrated,
    monkeypatch: pytest.MonkeyPatch,
    info: dict[str, Any],
    ready: bool,
    reason: str,
) -> None:
    _on_a_server(monkeypatch)
    server = ReportingClient(fast_migrated.client, **info)
    found = readiness(server, fast_migrated.plan.target_collection)  # type: ignore[arg-type]
    assert (found.ready, found.reason) == (ready, reason)


def test_index_recall_compares_approximate_with_exact_search(fast_migrated: Migrated) -> None:
    client, target = fast_migrated.client, fast_migrated.plan.target_collection
    assert index_recall(client, target, None, [], k=5) is None  # nothing to measure
    samples = sample_points(client, target, 7, None)
    assert len(samples) == 7 and all(p.payload and p.vector for p in samples)
    queries = [list(p.vector) for p in samples]  # type: ignore[arg-type]
    assert index_recall(client, target, None, queries, k=5) == 1.0


def test_nothing_to_measure_is_not_a_perfect_recall(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    """An empty source migrates to an empty target: no sample query, so recall is None."""
    make_source(fast_client, "empty_v1", [], alias="empty", size=HASH_DIMENSION)
    state = QdrantStateStore(fast_client)
    run = migrate(fast_client, hash_spec(alias="empty"), new_model, state)
    found = poke(fast_client, run.plan, state)
    assert found is not None
    assert found.recall_at_k is None
    assert found.sample_queries == 0
    assert found.completeness == Completeness(source_points=0, target_points=0)


def test_a_named_vector_is_sampled_and_searched_by_name(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    texts = [(r["id"], {"text": r["text"]}) for r in read_corpus(limit=30)]
    make_source(
        fast_client, "named_v1", texts, alias="named", vector_name="dense", size=HASH_DIMENSION
    )
    state = QdrantStateStore(fast_client)
    run = migrate(fast_client, hash_spec(alias="named"), new_model, state)
    assert run.plan.vector_name == "dense"
    found = poke(fast_client, run.plan, state)
    assert found is not None
    assert found.recall_at_k == 1.0 and found.sample_queries == 20
    assert found.completeness == Completeness(source_points=30, target_points=30)


def test_recall_result_round_trips_as_an_xcom(fast_migrated: Migrated) -> None:
    by_hand = RecallResult(
        readiness="green, 10/10 vectors indexed",
        recall_at_k=None,
        k=10,
        threshold=0.95,
        sample_queries=0,
        completeness=Completeness(
            source_points=10,
            target_points=11,
            lag=1,
            lag_examples=[3],
            damaged=1,
            damaged_examples=["5b0f6a5e-8d0c-4d57-9b1c-2a5b8d3c7e11"],
            skipped=2,
            points_without_vector=1,
        ),
    )
    measured = poke(fast_migrated.client, fast_migrated.plan, fast_migrated.state)
    assert measured is not None
    for found in (by_hand, measured):
        restored = codec.decode(RecallResult, json.loads(json.dumps(codec.encode_dict(found))))
        assert restored == found
        assert isinstance(restored.completeness, Completeness)
