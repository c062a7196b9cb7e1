"""Batch mode on the embedded store against the stand-in's batch APIs, for each provider
that has one (OpenAI's Files and Batches, Cohere's Datasets and Embed Jobs): every text
embedded once, nothing submitted twice, texts that failed inside a job embedded online,
a job that ended early resubmitted for what it never ran, nothing left behind."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient

from include.qdrant_migration import collections, compatibility
from include.qdrant_migration.providers import Credentials, EmbeddingError, get_provider
from include.qdrant_migration.spec import MigrationSpec
from include.qdrant_migration.state import QdrantStateStore
from include.qdrant_migration.sync import partitions
from include.qdrant_migration.sync.backfill import PartitionBackfill, PartitionResult
from include.qdrant_migration.sync.batch import BatchBackfill, Waiting
from tests.qdrant_migration.helpers import all_points, seed_standin_source, settings_of
from tests.standin import COHERE_KEY, OPENAI_KEY, StandIn, expected_vector
from tests.standin.batch_apis import jobs_created, left_behind
from tests.standin.batches import BATCH_PATH
from tests.standin.cohere_jobs import JOB_PATH

POINTS = 40  # 5 requests of 8 texts, in one file


@dataclass(frozen=True)
class Side:
    """One provider's batch API, as these tests drive and inspect it on the stand-in."""

    provider: str
    model: str
    dimensions: int | None
    size: int
    #: What the model embeds stored texts as (the stand-in's vectors depend on it).
    input_type: str
    online_path: str
    #: Where the stand-in logs the texts a job ran; the request that starts a job; an upload.
    run_path: str
    create: str
    upload: str

    def credentials(self, standin: StandIn) -> Credentials:
        if self.provider == "openai":
            return Credentials("openai_test", OPENAI_KEY, standin.openai_base_url)
        return Credentials("cohere_test", COHERE_KEY, standin.cohere_base_url)

    def quick(self, standin: StandIn) -> None:
        standin.batches.duration_s = 0.3
        standin.cohere_jobs.validation_s, standin.cohere_jobs.duration_s = 0.02, 0.08

    def fail_inside(self, standin: StandIn, texts: int) -> None:
        """The next job's first ``texts`` texts fail inside it (whole requests of 8 for
        OpenAI, which fails requests, not texts)."""
        if self.provider == "openai":
            standin.batches.fail_requests_next(texts // 8)
        else:
            standin.cohere_jobs.fail_rows_next(texts)

    def end_early(self, standin: StandIn, after: int) -> None:
        """The next job ends (expired, failed) having run its first ``after`` texts."""
        if self.provider == "openai":
            standin.batches.expire_next(after=after // 8)
        else:
            standin.cohere_jobs.fail_job_next(after=after)

    def vector(self, text: str) -> list[float]:
        return expected_vector(self.model, text, self.input_type, self.dimensions)


OPENAI = Side(
    "openai",
    "text-embedding-3-small",
    256,
    256,
    "",
    "/v1/embeddings",
    BATCH_PATH,
    "POST /v1/batches",
    "POST /v1/files",
)
COHERE = Side(
    "cohere",
    "embed-english-light-v3.0",
    None,
    384,
    "search_document",
    "/v2/embed",
    JOB_PATH,
    "POST /v1/embed-jobs",
    "POST /v1/datasets",
)


@pytest.fixture(params=[OPENAI, COHERE], ids=lambda side: side.provider)
def side(request: pytest.FixtureRequest) -> Side:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def batch_run(side: Side, standin: StandIn, corpus: list[dict[str, Any]]) -> Any:
    """A source of 40 points, its target created, and a runner of partition 0 in batch mode."""
    client = QdrantClient(":memory:")
    seed_standin_source(client, corpus[:POINTS], model="text-embedding-3-large", dimensions=64)
    state = QdrantStateStore(client)
    spec = MigrationSpec.from_params(
        {
            "alias": "docs",
            "provider": side.provider,
            "model": side.model,
            "dimensions": side.dimensions,
            "provider_conn_id": f"{side.provider}_test",
            "embedding_mode": "batch",
            "batch_poll_seconds": 1,
        }
    )
    provider = get_provider(
        side.provider,
        side.model,
        dimensions=side.dimensions,
        options={"max_inputs_per_request": 8},
        credentials=side.credentials(standin),
    )
    plan = compatibility.assess(client, spec, provider, state)
    collections.create_target(client, plan, state)
    (part,) = partitions.partitions_for(client, state, plan)
    standin.reset()  # forget the assessment's probe and throughput sample
    side.quick(standin)

    def run(until_done: bool = True) -> PartitionResult | Waiting:
        while True:
            job = PartitionBackfill(client, plan, part, provider, state, settings_of(spec))
            outcome = BatchBackfill(job, provider).run()
            if isinstance(outcome, PartitionResult) or not until_done:
                return outcome
            time.sleep(0.05)  # the task is rescheduled: a new try polls

    yield client, plan, run
    provider.close()


def _assert_complete(side: Side, client: QdrantClient, target: str) -> None:
    points = all_points(client, target)
    assert len(points) == POINTS
    for point in points:
        want = side.vector(str((point.payload or {})["text"]))
        np.testing.assert_allclose(point.vector, want, rtol=1e-5, atol=1e-6)


def _once_each(standin: StandIn, corpus: list[dict[str, Any]]) -> None:
    """Each point's text was sent once, by a job or online (the corpus repeats some texts:
    counted per point)."""
    embedded = standin.embedded_texts()
    assert embedded == Counter(r["text"] for r in corpus[:POINTS])


def test_a_partition_is_embedded_by_the_batch_api_once(
    side: Side, standin: StandIn, batch_run: Any, corpus: list[dict[str, Any]]
) -> None:
    client, plan, run = batch_run
    first = run(until_done=False)
    assert isinstance(first, Waiting) and len(first.batches) == 1  # 5 requests, one file
    result = run()
    assert isinstance(result, PartitionResult)
    assert (result.embedded, result.embed_requests) == (POINTS, 5)
    _assert_complete(side, client, plan.target_collection)
    _once_each(standin, corpus)
    assert not standin.requests(side.online_path)  # nothing online
    assert len(jobs_created(standin, side.provider)) == 1
    assert not left_behind(standin, side.provider)  # inputs and outputs deleted
    again = run()  # a rerun of a finished partition submits nothing
    assert isinstance(again, PartitionResult) and len(jobs_created(standin, side.provider)) == 1


def test_a_try_killed_after_creating_the_job_finds_it_again(
    side: Side, standin: StandIn, batch_run: Any, corpus: list[dict[str, Any]]
) -> None:
    client, plan, run = batch_run
    standin.lose_reply_next(path=side.create)  # created, but the answer is lost
    with pytest.raises(EmbeddingError, match="unreachable"):
        run()
    standin.lose_reply_next(path=side.upload)  # (the upload was done: not uploaded again)
    result = run()
    assert isinstance(result, PartitionResult)
    assert len(jobs_created(standin, side.provider)) == 1
    _assert_complete(side, client, plan.target_collection)
    _once_each(standin, corpus)


def test_texts_that_failed_inside_the_job_are_embedded_online(
    side: Side, standin: StandIn, batch_run: Any, corpus: list[dict[str, Any]]
) -> None:
    client, plan, run = batch_run
    side.fail_inside(standin, 16)
    result = run()
    assert isinstance(result, PartitionResult)
    _assert_complete(side, client, plan.target_collection)
    online = standin.requests(side.online_path, status=200)
    assert len(online) == 2 and sum(r.n_texts for r in online) == 16
    _once_each(standin, corpus)
    assert not left_behind(standin, side.provider)


def test_a_job_that_ended_early_is_resubmitted_for_what_it_never_ran(
    side: Side, standin: StandIn, batch_run: Any, corpus: list[dict[str, Any]]
) -> None:
    client, plan, run = batch_run
    side.end_early(standin, after=16)
    result = run()
    assert isinstance(result, PartitionResult)
    assert len(jobs_created(standin, side.provider)) == 2
    _assert_complete(side, client, plan.target_collection)
    _once_each(standin, corpus)  # the second job ran only the 24 texts the first did not
    assert not left_behind(standin, side.provider)


@pytest.mark.parametrize("side", [COHERE], ids=["cohere"], indirect=True)
def test_cohere_texts_are_collected_one_by_one_inside_a_request(
    standin: StandIn, batch_run: Any, corpus: list[dict[str, Any]]
) -> None:
    """Cohere answers per text: a request half failed and another half run are split, the
    failed half embedded online and the unrun half resubmitted, each text once."""
    client, plan, run = batch_run
    standin.cohere_jobs.fail_rows_next(4)  # half of p0-r0
    standin.cohere_jobs.fail_job_next(after=20)  # p0-r2 half run, then the job fails
    assert isinstance(run(), PartitionResult)
    online = standin.requests(COHERE.online_path, status=200)
    assert sum(r.n_texts for r in online) == 4
    assert [r.n_texts for r in standin.requests(JOB_PATH)] == [16, 20]
    _assert_complete(COHERE, client, plan.target_collection)
    _once_each(standin, corpus)


def test_a_text_edited_while_its_job_runs_is_left_to_the_catch_up(
    side: Side, standin: StandIn, batch_run: Any
) -> None:
    client, plan, run = batch_run
    assert isinstance(run(until_done=False), Waiting)
    edited = all_points(client, plan.source.collection)[0].id
    client.set_payload(plan.source.collection, {"text": "edited meanwhile"}, points=[edited])
    assert isinstance(run(), PartitionResult)
    written = {p.id for p in all_points(client, plan.target_collection)}
    assert edited not in written and len(written) == POINTS - 1
