"""Each strategy through the real DAG with ``dag.test()``, a refusal, and the dry run.

Quantization only, Matryoshka truncation (OpenAI stand-in), the learned linear map (real
local models) and a refused request; a dry run that writes nothing, and whose token
estimate is checked against what the stand-in received in the real migration that follows.
The full re-embed is ``test_migration_dag.py``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration import linear_map
from include.qdrant_migration.aliases import current_target
from include.qdrant_migration.providers import ratelimit
from include.qdrant_migration.qdrant import QdrantSettings, open_client
from include.qdrant_migration.state import (
    STATE_COLLECTION,
    Migrations,
    MigrationStatus,
    QdrantStateStore,
    RecordKind,
)
from tests.conftest import SEED_POINTS, SOURCE_MODEL
from tests.dags.conftest import return_value, task_states
from tests.qdrant_migration.helpers import all_points, seed_standin_source
from tests.standin import StandIn, expected_vector

pytestmark = pytest.mark.integration

SMALL = {"points_per_partition": 100, "batch_size": 32}
#: Tasks of each path; a run takes one path and skips the others.
REEMBED_PATH = {
    "create_collection",
    "plan_partitions",
    "catch_up",
    "restore_indexing",
    "recall_check",
    "build_report",
    "swap_alias",
}
QUANTIZATION_PATH = {"quantization_report", "approve_quantization", "apply_quantization"}


@pytest.fixture(autouse=True)
def _fresh_limiters() -> None:
    ratelimit.reset_shared_limiters()


def _store(path: Path) -> Any:
    return open_client(QdrantSettings(path=str(path)))


def _skipped(states: dict[str, str | None], task_ids: set[str]) -> None:
    for task_id in task_ids:
        assert states.get(task_id) == "skipped", (task_id, states)


def _documents_tokens(standin: StandIn, run: Any) -> tuple[int, int]:
    """(texts, tokens) the stand-in embedded while the backfill tasks ran."""
    tis = [ti for ti in run.get_task_instances() if ti.task_id == "backfill_batch"]
    offset = time.time() - time.monotonic()  # stand-in stamps requests with monotonic time
    start = min(ti.start_date.timestamp() for ti in tis) - offset
    end = max(ti.end_date.timestamp() for ti in tis) - offset
    inside = [r for r in standin.requests(status=200) if start <= r.started <= end]
    return sum(r.n_texts for r in inside), sum(r.tokens for r in inside)


def test_quantization_only_changes_the_source_in_place(
    dag: Any, qdrant_conn: Path, reviewer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _store(qdrant_conn) as client:
        before = [(p.id, p.payload, p.vector) for p in all_points(client, "articles_v1")]
    updates: list[dict[str, Any]] = []
    real = QdrantClient.update_collection

    def recording(self: QdrantClient, collection_name: str, **kwargs: Any) -> Any:
        updates.append({"collection": collection_name, **kwargs})
        return real(self, collection_name, **kwargs)

    monkeypatch.setattr(QdrantClient, "update_collection", recording)
    seen = reviewer("Approve")

    run = dag.test(
        run_conf={
            "alias": "articles",
            "model": SOURCE_MODEL,
            "source_provider": "local",
            "source_model": SOURCE_MODEL,
            "quantization": "scalar_int8",
        }
    )

    assert "error" not in seen, seen.get("error")
    states = task_states(run)
    assert run.state == "success", states
    for task_id in QUANTIZATION_PATH:
        assert states[task_id] == "success", (task_id, states)
    _skipped(states, REEMBED_PATH | {"fit_linear_map", "approve_swap"})
    assert "| quantization | none → scalar_int8 |" in seen["detail"]["body"]
    assert "no embedding calls" in seen["detail"]["body"]
    # the one write to the source: its quantization config
    assert [u["collection"] for u in updates] == ["articles_v1"]
    assert isinstance(updates[0]["quantization_config"], qm.ScalarQuantization)
    with _store(qdrant_conn) as client:
        names = {c.name for c in client.get_collections().collections}
        assert names == {"articles_v1", STATE_COLLECTION}  # no new collection
        assert current_target(client, "articles") == "articles_v1"
        after = [(p.id, p.payload, p.vector) for p in all_points(client, "articles_v1")]
        records = list(Migrations(QdrantStateStore(client)).all())
    assert after == before  # no point written
    assert [r.status for r in records] == [MigrationStatus.QUANTIZED]
    quantized = records[0].quantization
    assert quantized is not None and quantized["requested"] == "scalar_int8"
    # recall after the change, with and without rescoring (exact on the embedded store)
    measured = return_value(run, "apply_quantization")["recall"]
    assert measured["k"] == 10 and measured["sample_queries"] > 0
    assert measured["rescored"] == measured["not_rescored"] == 1.0
    assert quantized["recall"] == measured


def test_matryoshka_truncation_cuts_stored_vectors_without_embedding(
    dag: Any,
    qdrant_conn: Path,
    reviewer: Any,
    openai_connection: StandIn,
    corpus: list[dict[str, Any]],
) -> None:
    standin = openai_connection
    with _store(qdrant_conn) as client:
        seed_standin_source(client, corpus, dimensions=1536)
    seen = reviewer("Approve")

    run = dag.test(
        run_conf={
            "alias": "docs",
            "provider": "openai",
            "model": "text-embedding-3-small",
            "dimensions": 256,
            "provider_conn_id": "embeddings",
            **SMALL,
        }
    )

    assert "error" not in seen, seen.get("error")
    states = task_states(run)
    assert run.state == "success", states
    _skipped(states, QUANTIZATION_PATH | {"fit_linear_map"})
    assert _documents_tokens(standin, run) == (0, 0)  # no document was embedded
    body = seen["detail"]["body"]
    assert f"| vectors cut from the stored ones (no embedding) | {SEED_POINTS} |" in body
    assert "| embedded / embedding requests (this run) | 0 / 0 |" in body
    assert "asking for dimensions=256" in body
    assert "Matryoshka truncation" in body
    with _store(qdrant_conn) as client:
        target = current_target(client, "docs")
        assert target is not None and target != "docs_v1"
        lineage = client.get_collection(target).config.metadata["qdrant_migration"]
        points = all_points(client, target)
    assert lineage["dimensions"] == 256 and lineage["strategy"] == "matryoshka_truncation"
    assert len(points) == SEED_POINTS
    want = [expected_vector("text-embedding-3-small", p.payload["text"], "", 256) for p in points]
    np.testing.assert_allclose([p.vector for p in points], want, atol=1e-6)


def test_linear_map_maps_the_stored_vectors(dag: Any, qdrant_conn: Path, reviewer: Any) -> None:
    seen = reviewer("Approve")

    run = dag.test(
        run_conf={
            "alias": "articles",
            "allow_linear_map": True,
            "min_map_retention": 0.3,
            "map_sample_size": 200,
            "quality_tolerance": 1.0,  # however it compares with the old model
            **SMALL,
        }
    )

    assert "error" not in seen, seen.get("error")
    states = task_states(run)
    assert run.state == "success", states
    assert states["fit_linear_map"] == "success"
    _skipped(states, QUANTIZATION_PATH)
    fitted = return_value(run, "fit_linear_map")
    assert fitted["sample"] == 200 and fitted["retention"] >= 0.3
    body = seen["detail"]["body"]
    assert f"| linear map ({fitted['kind']}, {fitted['setting']}): retention |" in body
    assert f"| vectors mapped by the linear map (no embedding) | {SEED_POINTS} |" in body
    # the fit's sample is all that was embedded, in batches it counted
    requests = fitted["requests"]
    assert requests >= 200 / 32
    embedded = fitted["embedded"]
    assert f"| embedded / embedding requests (this run) | {embedded} / {requests} |" in body
    with _store(qdrant_conn) as client:
        target = current_target(client, "articles")
        assert target == "articles_v1__multilingual-e5-small__v1"
        source = all_points(client, "articles_v1")
        mapped = all_points(client, target)
        plan = return_value(run, "assess_compatibility")
        linear = linear_map.load(QdrantStateStore(client), plan["migration_id"])
        known = linear_map.load_calibration(QdrantStateStore(client), plan["migration_id"])
    assert [p.id for p in mapped] == [p.id for p in source]
    # the calibration documents get their true vectors, every other one its mapped vector
    want = linear.apply([p.vector for p in source])
    for point, mapped_vector, stored in zip(mapped, want, source, strict=True):
        expected = known[point.id][1] if point.id in known else mapped_vector
        np.testing.assert_allclose(point.vector, expected, atol=1e-5, err_msg=str(stored.id))
    assert len(known) == 200


def test_linear_map_below_the_retention_threshold_is_refused(
    dag: Any, qdrant_conn: Path, capfd: Any
) -> None:
    run = dag.test(
        run_conf={"alias": "articles", "allow_linear_map": True, "min_map_retention": 0.99}
    )

    states = task_states(run)
    assert run.state == "failed"
    assert states["assess_compatibility"] == "success"
    assert states["fit_linear_map"] == "failed"
    assert states["create_collection"] == "upstream_failed"
    out = capfd.readouterr().out
    assert "MapRetentionError" in out and "minimum 99%" in out
    with _store(qdrant_conn) as client:  # no collection of data: only the state store
        assert {c.name for c in client.get_collections().collections} == {
            "articles_v1",
            STATE_COLLECTION,
        }
        state = QdrantStateStore(client)
        assert list(state.scan(RecordKind.MIGRATION)) == []
        assert list(state.scan(RecordKind.LEASE)) == []  # the run let go of the migration


def test_an_impossible_request_is_refused_in_assess_with_its_reason(
    dag: Any, qdrant_conn: Path, capfd: Any
) -> None:
    run = dag.test(
        run_conf={
            "alias": "articles",
            "model": SOURCE_MODEL,
            "dimensions": 128,
            "source_provider": "local",
            "source_model": SOURCE_MODEL,
        }
    )

    states = task_states(run)
    assert run.state == "failed"
    assert states["assess_compatibility"] == "failed"
    out = capfd.readouterr().out
    assert "local/all-MiniLM-L6-v2 is not Matryoshka-trained" in out
    with _store(qdrant_conn) as client:
        assert {c.name for c in client.get_collections().collections} == {"articles_v1"}


def test_dry_run_only_assesses_and_writes_nothing(
    dag: Any, qdrant_conn: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="include.qdrant_migration.airflow.tasks")
    with _store(qdrant_conn) as client:
        before = [(p.id, p.payload, p.vector) for p in all_points(client, "articles_v1")]

    run = dag.test(run_conf={"alias": "articles", "dry_run": True})

    states = task_states(run)
    assert run.state == "success", states
    assert states["assess_compatibility"] == "success"
    for task_id, state in states.items():
        if task_id not in {"route", "assess_compatibility", "choose_path"}:
            assert state == "skipped", (task_id, states)
    plan = return_value(run, "assess_compatibility")
    assert plan["strategy"] == "full_reembed"
    assert plan["estimate"]["creates"] == [
        plan["target_collection"],
        f"qdrant_migration_sync__{plan['migration_id']}",
        STATE_COLLECTION,
    ]
    assert "### Plan for alias `articles`: **full_reembed**" in caplog.text
    assert "Dry run: nothing was written" in caplog.text
    with _store(qdrant_conn) as client:
        assert {c.name for c in client.get_collections().collections} == {"articles_v1"}
        after = [(p.id, p.payload, p.vector) for p in all_points(client, "articles_v1")]
    assert after == before


def test_dry_run_token_estimate_matches_what_the_provider_received(
    dag: Any, qdrant_conn: Path, reviewer: Any, openai_connection: StandIn
) -> None:
    standin = openai_connection
    conf = {
        "alias": "articles",
        "provider": "openai",
        "model": "text-embedding-3-small",
        "dimensions": 512,
        "provider_conn_id": "embeddings",
        **SMALL,
    }
    dry = dag.test(run_conf=conf | {"dry_run": True})
    assert dry.state == "success", task_states(dry)
    estimate = return_value(dry, "assess_compatibility")["estimate"]
    seen = reviewer("Approve")

    # (dag.test keeps the previous run's conf as the DAG's params: say it is not a dry run)
    run = dag.test(run_conf=conf | {"dry_run": False})

    assert "error" not in seen, seen.get("error")
    assert run.state == "success", task_states(run)
    texts, tokens = _documents_tokens(standin, run)
    assert texts == estimate["texts_to_embed"] == SEED_POINTS
    assert abs(tokens - estimate["tokens"]) <= 0.10 * tokens, (tokens, estimate["tokens"])
    assert estimate["cost_usd"] == pytest.approx(estimate["tokens"] * 0.02 / 1e6)
    # the report shows the plan and what was spent, side by side
    body = seen["detail"]["body"]
    assert "| | plan | actual (this run) |" in body
    assert f"| tokens | {estimate['tokens']} (" in body


def test_the_strategy_branch_is_wired(dag: Any) -> None:
    from include.qdrant_migration.spec import Strategy

    branch = dag.get_task("choose_path")
    choose_path = branch.python_callable
    assert branch.downstream_task_ids == {
        "fit_linear_map",
        "create_collection",
        "quantization_report",
    }
    assert dag.get_task("create_collection").trigger_rule == "none_failed_min_one_success"
    assert dag.get_task("create_collection").upstream_task_ids >= {"fit_linear_map"}
    assert dag.get_task("approve_quantization").downstream_task_ids == {"apply_quantization"}
    # every id the branch can return is a real task
    for strategy in Strategy:
        chosen = choose_path({"strategy": strategy.value, "spec": {"dry_run": False}})
        assert chosen and set(chosen) <= branch.downstream_task_ids
    assert choose_path({"strategy": "linear_map", "spec": {"dry_run": True}}) is None
