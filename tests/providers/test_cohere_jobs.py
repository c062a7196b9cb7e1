"""Cohere's embed jobs (:mod:`include.qdrant_migration.providers.cohere_jobs`) through the
real ``cohere`` SDK against the stand-in's Datasets and Embed Jobs APIs: a dataset upload
(multipart, validated over time), a job found again by name, its output read from Avro
parts and matched to texts by the kept row id, failed and unrun rows told apart, and
nothing left behind."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from include.qdrant_migration.providers import EmbeddingError
from include.qdrant_migration.providers.base import Credentials
from include.qdrant_migration.providers.batching import BatchResults, BatchState
from include.qdrant_migration.providers.cohere_jobs import ROW_ID, CohereEmbedJobs
from include.qdrant_migration.providers.cohere_provider import CohereProvider, unpack_bits
from tests.providers.helpers import FAST, Closing, texts
from tests.standin import COHERE_KEY, StandIn, cohere_values, expected_vector
from tests.standin.cohere_jobs import JOB_PATH

MODEL, DOC = "embed-english-light-v3.0", "search_document"
NAME = "mig-1-abc-p0-f0.jsonl"


@pytest.fixture
def jobs(standin: StandIn, closing: Closing) -> Callable[..., CohereEmbedJobs]:
    """Embed jobs of a Cohere provider pointed at the stand-in (fast validation and runs)."""
    standin.cohere_jobs.validation_s, standin.cohere_jobs.duration_s = 0.05, 0.05

    def make(**options: Any) -> CohereEmbedJobs:
        provider = CohereProvider(
            MODEL,
            options={**FAST, **options},
            credentials=Credentials("cohere_test", COHERE_KEY, standin.cohere_base_url),
        )
        closing(provider)
        api = provider.batches()
        assert isinstance(api, CohereEmbedJobs)
        return api

    return make


def _requests(n: int, per_request: int) -> dict[str, list[str]]:
    every = texts(n)
    return {
        f"p0-r{i}": every[start : start + per_request]
        for i, start in enumerate(range(0, n, per_request))
    }


def _run(
    api: CohereEmbedJobs, requests: Mapping[str, list[str]], name: str = NAME
) -> tuple[str, BatchState, BatchResults]:
    """Upload, create once validated, wait, and read the job's results (as the backfill
    would over several polls)."""
    lines = [line for c, t in requests.items() for line in api.request_lines(c, t)]
    dataset = api.upload(name, lines)
    job = api.create(dataset, name)
    while job is None:
        time.sleep(0.02)
        job = api.create(dataset, name)
    state = api.state(job)
    while state.running:
        time.sleep(0.02)
        state = api.state(job)
    return dataset, state, api.results(state, {c: len(t) for c, t in requests.items()})


def test_a_job_embeds_a_dataset_and_its_rows_come_back_by_id(
    jobs: Callable[..., CohereEmbedJobs], standin: StandIn
) -> None:
    api = jobs()
    standin.cohere_jobs.part_rows = 4  # the output in three Avro parts
    requests = _requests(10, 4)
    lines = [line for c, t in requests.items() for line in api.request_lines(c, t)]
    dataset = api.upload(NAME, lines)
    assert api.upload(NAME, lines) == dataset  # found again by name: one upload
    assert api.create(dataset, NAME) is None  # still being validated: no job yet
    held = standin.cohere_jobs.datasets[dataset]
    assert held.keep_fields == [ROW_ID] and held.filename == NAME

    _, state, results = _run(api, requests)
    assert len(standin.cohere_jobs.created) == 1  # the same job, found again by name
    assert state.status == "complete" and state.output_file_id
    for custom_id, sent in requests.items():
        assert results.vectors[custom_id] == [expected_vector(MODEL, t, DOC) for t in sent]
    assert not results.failed and not results.not_run
    assert sum(results.tokens.values()) == state.tokens > 0
    (ran,) = standin.requests(JOB_PATH)
    assert ran.texts == texts(10) and ran.input_type == DOC and ran.model == MODEL
    assert len(standin.cohere_jobs.datasets) == 2  # the input and the output
    api.cleanup(dataset, state)
    api.cleanup(dataset, state)  # already gone: fine
    assert not standin.cohere_jobs.datasets


def test_packed_binary_embeddings_are_unpacked(
    jobs: Callable[..., CohereEmbedJobs], standin: StandIn
) -> None:
    api = jobs(embedding_types="ubinary")
    _, _, results = _run(api, {"p0-r0": ["one text"]})
    packed = cohere_values(expected_vector(MODEL, "one text", DOC), "ubinary")
    assert results.vectors["p0-r0"] == [unpack_bits(packed)]  # type: ignore[arg-type]


@pytest.mark.parametrize("dropped", [False, True], ids=["null embeddings", "left out"])
def test_rows_that_failed_inside_a_complete_job_are_failed(
    jobs: Callable[..., CohereEmbedJobs], standin: StandIn, dropped: bool
) -> None:
    standin.cohere_jobs.fail_rows_next(6, dropped=dropped)  # r0 whole, r1 in part
    _, _, results = _run(jobs(), _requests(12, 4))
    assert results.vectors["p0-r1"][:2] == [None, None]
    assert results.vectors["p0-r1"][2:] == [expected_vector(MODEL, t, DOC) for t in texts(12)[6:8]]
    assert "p0-r0" not in results.vectors and set(results.failed) == {"p0-r0", "p0-r1"}
    assert not results.not_run


def test_rows_a_failed_job_never_ran_are_not_run(
    jobs: Callable[..., CohereEmbedJobs], standin: StandIn
) -> None:
    standin.cohere_jobs.fail_job_next(after=6)
    _, state, results = _run(jobs(), _requests(12, 4))
    assert state.status == "failed"
    assert results.not_run == {"p0-r1": [2, 3], "p0-r2": [0, 1, 2, 3]}
    assert results.vectors["p0-r1"][2:] == [None, None] and not results.failed


def test_a_cancelled_job_ran_nothing(
    jobs: Callable[..., CohereEmbedJobs], standin: StandIn
) -> None:
    api = jobs()
    dataset = api.upload(NAME, api.request_lines("p0-r0", ["a", "b"]))
    time.sleep(0.06)
    job = api.create(dataset, NAME)
    assert job is not None
    api._client.embed_jobs.cancel(job)
    state = api.state(job)
    assert state.status == "cancelled" and not state.running
    assert api.results(state, {"p0-r0": 2}).not_run == {"p0-r0": [0, 1]}
    assert not standin.requests(JOB_PATH)


def test_a_lost_reply_on_create_finds_the_job_by_name(
    jobs: Callable[..., CohereEmbedJobs], standin: StandIn
) -> None:
    api = jobs()
    dataset = api.upload(NAME, api.request_lines("p0-r0", ["a"]))
    time.sleep(0.06)
    standin.lose_reply_next(path="POST /v1/embed-jobs")  # created, but the answer is lost
    with pytest.raises(EmbeddingError, match="embed jobs unreachable"):
        api.create(dataset, NAME)
    assert api.create(dataset, NAME) == standin.cohere_jobs.created[0]
    assert len(standin.cohere_jobs.created) == 1


def test_a_dataset_that_fails_validation_fails_with_cohere_s_reason(
    jobs: Callable[..., CohereEmbedJobs],
) -> None:
    api = jobs()
    dataset = api.upload(NAME, ['{"text": "no row id"}'])
    time.sleep(0.06)
    with pytest.raises(EmbeddingError, match=r"failed Cohere's validation.*missing keep_fields"):
        api.create(dataset, NAME)


def test_rows_without_their_id_are_matched_by_order_only_when_the_counts_agree(
    jobs: Callable[..., CohereEmbedJobs],
) -> None:
    api = jobs()
    rows = [{"text": t, "embeddings": {"float": [float(i)]}} for i, t in enumerate("abc")]
    found, null = api._match(rows, {"p0-r0": 2, "p0-r1": 1})
    assert found == {("p0-r0", 0): [0.0], ("p0-r0", 1): [1.0], ("p0-r1", 0): [2.0]}
    assert api._match(rows, {"p0-r0": 4}) == ({}, set()) and not null
