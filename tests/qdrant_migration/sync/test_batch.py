"""Batch mode on the embedded store against the stand-in's Files and Batches APIs: every
text embedded once, nothing submitted twice, failed requests retried online, an expired
batch resubmitted for what it never ran."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient

from include.qdrant_migration import collections, compatibility
from include.qdrant_migration.providers import Credentials, EmbeddingError, get_provider
from include.qdrant_migration.providers.openai_provider import OpenAIProvider
from include.qdrant_migration.spec import MigrationSpec
from include.qdrant_migration.state import QdrantStateStore
from include.qdrant_migration.sync import partitions
from include.qdrant_migration.sync.backfill import PartitionBackfill, PartitionResult
from include.qdrant_migration.sync.batch import BatchBackfill, Waiting
from tests.qdrant_migration.helpers import all_points, seed_standin_source, settings_of
from tests.standin import OPENAI_KEY, StandIn, expected_vector
from tests.standin.batches import BATCH_PATH

MODEL, SIZE, POINTS = "text-embedding-3-small", 256, 40


def _provider(standin: StandIn) -> OpenAIProvider:
    made = get_provider(
        "openai",
        MODEL,
        dimensions=SIZE,
        options={"max_inputs_per_request": 8},
        credentials=Credentials("openai_test", OPENAI_KEY, standin.openai_base_url),
    )
    assert isinstance(made, OpenAIProvider)
    return made


@pytest.fixture
def batch_run(standin: StandIn, corpus: list[dict[str, Any]]) -> Any:
    """A source of 40 points, its target created, and a runner of partition 0 in batch mode."""
    standin.batches.duration_s = 0.3
    client = QdrantClient(":memory:")
    seed_standin_source(client, corpus[:POINTS], model="text-embedding-3-large", dimensions=64)
    state = QdrantStateStore(client)
    spec = MigrationSpec.from_params(
        {
            "alias": "docs",
            "provider": "openai",
            "model": MODEL,
            "dimensions": SIZE,
            "provider_conn_id": "openai_test",
            "embedding_mode": "batch",
            "batch_poll_seconds": 1,
        }
    )
    provider = _provider(standin)
    plan = compatibility.assess(client, spec, provider, state)
    collections.create_target(client, plan, state)
    (part,) = partitions.partitions_for(client, state, plan)
    standin.reset()  # forget the assessment's probe and throughput sample
    standin.batches.duration_s = 0.3

    def run(until_done: bool = True) -> PartitionResult | Waiting:
        while True:
            job = PartitionBackfill(client, plan, part, provider, state, settings_of(spec))
            outcome = BatchBackfill(job, provider).run()
            if isinstance(outcome, PartitionResult) or not until_done:
                return outcome
            time.sleep(0.2)  # the task is rescheduled: a new try polls

    return client, plan, run


def _assert_complete(client: QdrantClient, target: str) -> None:
    points = all_points(client, target)
    assert len(points) == POINTS
    for point in points:
        want = expected_vector(MODEL, str((point.payload or {})["text"]), "", SIZE)
        np.testing.assert_allclose(point.vector, want, rtol=1e-5, atol=1e-6)


def _once_each(standin: StandIn, corpus: list[dict[str, Any]]) -> None:
    """Each point's text was sent once (the corpus repeats some texts: counted per point)."""
    embedded = standin.embedded_texts()
    assert embedded == Counter(r["text"] for r in corpus[:POINTS])


def test_a_partition_is_embedded_by_the_batch_api_once(
    standin: StandIn, batch_run: Any, corpus: list[dict[str, Any]]
) -> None:
    client, plan, run = batch_run
    first = run(until_done=False)
    assert isinstance(first, Waiting) and len(first.batches) == 1  # 5 requests, one file
    result = run()
    assert isinstance(result, PartitionResult)
    assert (result.embedded, result.embed_requests) == (POINTS, 5)
    _assert_complete(client, plan.target_collection)
    _once_each(standin, corpus)
    assert not standin.requests("/v1/embeddings")  # nothing online
    assert len(standin.batches.created) == 1
    assert not standin.batches.files  # the request, output and error files are deleted
    again = run()  # a rerun of a finished partition submits nothing
    assert isinstance(again, PartitionResult) and len(standin.batches.created) == 1


def test_a_try_killed_after_creating_the_batch_finds_it_again(
    standin: StandIn, batch_run: Any, corpus: list[dict[str, Any]]
) -> None:
    client, plan, run = batch_run
    standin.lose_reply_next(path="POST /v1/batches")  # created, but the answer is lost
    with pytest.raises(EmbeddingError, match="Batch API unreachable"):
        run(until_done=False)
    standin.lose_reply_next(path="POST /v1/files")  # (uploads were done: not uploaded again)
    result = run()
    assert isinstance(result, PartitionResult)
    assert len(standin.batches.created) == 1
    assert len(standin.requests("/v1/files")) == 2  # the upload, then one listing
    _assert_complete(client, plan.target_collection)
    _once_each(standin, corpus)


def test_failed_requests_are_retried_online(
    standin: StandIn, batch_run: Any, corpus: list[dict[str, Any]]
) -> None:
    client, plan, run = batch_run
    standin.batches.fail_requests_next(2)
    result = run()
    assert isinstance(result, PartitionResult)
    _assert_complete(client, plan.target_collection)
    online = standin.requests("/v1/embeddings", status=200)
    assert len(online) == 2 and sum(r.n_texts for r in online) == 16
    _once_each(standin, corpus)


def test_an_expired_batch_is_resubmitted_for_what_it_never_ran(
    standin: StandIn, batch_run: Any, corpus: list[dict[str, Any]]
) -> None:
    client, plan, run = batch_run
    standin.batches.expire_next(after=2)
    result = run()
    assert isinstance(result, PartitionResult)
    assert len(standin.batches.created) == 2
    second = standin.batches.batches[standin.batches.created[1]]
    assert second.counts["total"] == 3  # only the three requests the first never ran
    _assert_complete(client, plan.target_collection)
    _once_each(standin, corpus)
    assert len(standin.requests(BATCH_PATH, status=200)) == 5


def test_a_text_edited_while_its_batch_runs_is_left_to_the_catch_up(
    standin: StandIn, batch_run: Any, corpus: list[dict[str, Any]]
) -> None:
    client, plan, run = batch_run
    assert isinstance(run(until_done=False), Waiting)
    edited = all_points(client, plan.source.collection)[0].id
    client.set_payload(plan.source.collection, {"text": "edited meanwhile"}, points=[edited])
    assert isinstance(run(), PartitionResult)
    written = {p.id for p in all_points(client, plan.target_collection)}
    assert edited not in written and len(written) == POINTS - 1
