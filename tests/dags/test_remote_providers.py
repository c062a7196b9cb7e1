"""Migrations to OpenAI and Cohere through their real SDKs, against the wire-level stand-in.

429s (with Retry-After) and 500s are injected while the DAG runs; the stand-in's request
log proves every stored text was embedded exactly once.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from include.qdrant_migration.aliases import current_target
from include.qdrant_migration.providers import ratelimit
from include.qdrant_migration.qdrant import QdrantSettings, open_client
from tests.conftest import SEED_POINTS
from tests.dags.conftest import task_states
from tests.standin import COHERE_KEY, OPENAI_KEY, StandIn

pytestmark = pytest.mark.integration

FAST_RETRIES = {"backoff_base_s": 0.05, "backoff_max_s": 0.3, "max_retries": 8}


@pytest.fixture(autouse=True)
def _fresh_limiters() -> None:
    ratelimit.reset_shared_limiters()


def _connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, key: str, base_url: str) -> None:
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps({"conn_type": "generic", "password": key, "extra": {"base_url": base_url}}),
    )


def _backfill_window(run: Any) -> tuple[float, float]:
    tis = [ti for ti in run.get_task_instances() if ti.task_id == "backfill_batch"]
    offset = time.time() - time.monotonic()  # stand-in stamps requests with monotonic time
    return (
        min(ti.start_date.timestamp() for ti in tis) - offset,
        max(ti.end_date.timestamp() for ti in tis) - offset,
    )


def _texts_embedded_during(standin: StandIn, window: tuple[float, float]) -> Counter[str]:
    start, end = window
    return Counter(
        text
        for record in standin.requests(status=200)
        if start <= record.started <= end
        for text in record.texts
    )


@pytest.mark.parametrize(
    ("provider", "model", "key", "dimensions"),
    [
        ("openai", "text-embedding-3-small", OPENAI_KEY, 256),
        ("cohere", "embed-v4.0", COHERE_KEY, 512),
    ],
)
def test_migration_to_hosted_model_embeds_every_text_once(
    dag: Any,
    qdrant_conn: Path,
    reviewer: Any,
    standin: StandIn,
    monkeypatch: pytest.MonkeyPatch,
    corpus: list[dict[str, Any]],
    provider: str,
    model: str,
    key: str,
    dimensions: int,
) -> None:
    base = standin.openai_base_url if provider == "openai" else standin.cohere_base_url
    _connection(monkeypatch, "embeddings", key, base)
    standin.fail_next(4, status=429, retry_after=0.2)
    standin.fail_next(3, status=500)
    seen = reviewer("Approve")

    run = dag.test(
        run_conf={
            "alias": "articles",
            "provider": provider,
            "model": model,
            "dimensions": dimensions,
            "provider_conn_id": "embeddings",
            "provider_options": FAST_RETRIES,
            "points_per_partition": 100,
            "batch_size": 48,
        }
    )

    assert "error" not in seen, seen.get("error")
    assert run.state == "success", task_states(run)
    statuses = Counter(r.status for r in standin.requests())
    assert statuses[429] >= 4 and statuses[500] >= 3  # the faults really happened
    embedded = _texts_embedded_during(standin, _backfill_window(run))
    assert set(embedded) == {r["text"] for r in corpus}
    assert set(embedded.values()) == {1}, "a text was embedded twice (double-paid)"
    if provider == "cohere":
        documents = [r for r in standin.requests(status=200) if r.input_type == "search_document"]
        assert sum(len(r.texts) for r in documents) == SEED_POINTS
    with open_client(QdrantSettings(path=str(qdrant_conn))) as client:
        target = current_target(client, "articles")
        assert target is not None and target != "articles_v1"
        info = client.get_collection(target)
        assert info.config.params.vectors.size == dimensions
        assert client.count(target, exact=True).count == SEED_POINTS
        lineage = info.config.metadata["qdrant_migration"]
        assert key not in json.dumps(lineage)


def test_invalid_api_key_fails_in_assess_before_any_collection(
    dag: Any, qdrant_conn: Path, standin: StandIn, monkeypatch: pytest.MonkeyPatch, capfd: Any
) -> None:
    _connection(monkeypatch, "embeddings", "sk-wrong-key-0000", standin.openai_base_url)

    run = dag.test(
        run_conf={
            "alias": "articles",
            "provider": "openai",
            "model": "text-embedding-3-small",
            "provider_conn_id": "embeddings",
        }
    )

    states = task_states(run)
    assert states["assess_compatibility"] == "failed"
    out = capfd.readouterr().out
    assert "embeddings" in out  # the message names the Airflow connection
    assert "sk-wrong-key-0000" not in out
    assert len(standin.requests()) == 1  # failed at once, not retried
    with open_client(QdrantSettings(path=str(qdrant_conn))) as client:
        assert {c.name for c in client.get_collections().collections} == {"articles_v1"}


def test_rerunning_a_finished_migration_embeds_nothing(
    dag: Any, qdrant_conn: Path, reviewer: Any, standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    _connection(monkeypatch, "embeddings", COHERE_KEY, standin.cohere_base_url)
    conf = {
        "alias": "articles",
        "provider": "cohere",
        "model": "embed-v4.0",
        "dimensions": 256,
        "provider_conn_id": "embeddings",
        "provider_options": FAST_RETRIES,
        "points_per_partition": 100,
    }
    reviewer("Reject")
    assert dag.test(run_conf=conf).state == "success"
    first = len(standin.requests())

    # Rejected, then run again: every partition is finished, nothing is re-embedded.
    reviewer("Approve")
    again = dag.test(run_conf=conf)
    assert again.state == "success", task_states(again)
    documents = [
        r for r in standin.requests()[first:] if r.input_type == "search_document" and r.texts
    ]
    assert documents == []
    before_third = len(standin.requests())

    # Swapped: the alias already serves this model, so the run skips without any call.
    third = dag.test(run_conf=conf)
    assert task_states(third)["assess_compatibility"] == "skipped"
    assert len(standin.requests()) == before_third
