"""Real traffic through the real DAG: a query log of 1,000 real-looking queries and no
labels, replayed on both models, judged by Cohere's rerank (the wire-level stand-in).

The approval shows overlap@10 and RBO distributions, the 10 queries that changed most
with both result lists' titles, and judged nDCG@10 old vs new with intervals; the
migrations page shows the same. A new model that the judge finds worse fails the run in
build_report, before the approval, naming the queries that lost most. No query longer
than the report's cut reaches an XCom, a log or the state store.

Old model: all-MiniLM-L6-v2 (the seeded store); new: multilingual-e5-small, both local,
or, for the failing run, an OpenAI model of the stand-in whose vectors carry no meaning.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from include.qdrant_migration import codec
from include.qdrant_migration.checks.traffic import TRUNCATE, Replay
from include.qdrant_migration.phases import QUALITY, Timeline, actual_phases
from include.qdrant_migration.qdrant import QdrantSettings, open_client
from include.qdrant_migration.state import QdrantStateStore, Reports
from include.qdrant_migration.ui import pages, views
from scripts.seeding import read_corpus
from tests.conftest import SEED_POINTS, SOURCE_MODEL
from tests.dags.conftest import DAG_ID, note, return_value, task_states
from tests.dags.query_log import production_queries, write_log
from tests.standin import COHERE_KEY, StandIn
from tests.standin.rerank import COHERE_PATH

pytestmark = pytest.mark.integration

JUDGE = {"provider": "cohere", "model": "rerank-v3.5", "conn_id": "judge"}
CONF = {
    "alias": "articles",
    "points_per_partition": 100,
    "batch_size": 32,
    # The seeded store records no lineage: the old model is named.
    "source_provider": "local",
    "source_model": SOURCE_MODEL,
}


@pytest.fixture(scope="module")
def queries() -> list[str]:
    found = production_queries(list(read_corpus()), indexed=SEED_POINTS)
    assert len({q.casefold() for q in found}) == 1000
    assert any(len(q) > TRUNCATE for q in found)  # pasted errors: the report cuts them
    return found


@pytest.fixture
def judge_conn(standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> StandIn:
    """Airflow connection ``judge``: Cohere's rerank on the stand-in."""
    from include.qdrant_migration.providers import ratelimit

    ratelimit.reset_shared_limiters()
    monkeypatch.setenv(
        "AIRFLOW_CONN_JUDGE",
        json.dumps(
            {"conn_type": "cohere", "password": COHERE_KEY, "host": standin.cohere_base_url}
        ),
    )
    return standin


def _long(queries: list[str]) -> list[str]:
    return [q for q in queries if len(q) > TRUNCATE]


def _nothing_longer_kept(queries: list[str], *kept: str) -> None:
    for query in _long(queries):
        for text in kept:
            assert query not in text


def test_a_query_log_without_labels_shows_what_changes_for_real_queries(
    dag: Any,
    qdrant_conn: Path,
    judge_conn: StandIn,
    reviewer: Any,
    queries: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = write_log(tmp_path / "queries.jsonl", queries)
    conf = CONF | {
        "query_log": str(log),
        "query_log_sample": 1000,
        "title_field": "title",
        "judge": JUDGE,
    }
    judge_conn.fail_next(1, status=429, retry_after=0.5, path=COHERE_PATH)
    seen = reviewer("Approve")

    started = time.monotonic()
    run = dag.test(run_conf=conf)
    took = time.monotonic() - started

    assert "error" not in seen, seen.get("error")
    assert run.state == "success", task_states(run)
    statuses = [r.status for r in judge_conn.requests(COHERE_PATH)]
    # assess's check (the 429 waited out) and its timed call, then one call per query
    assert statuses.count(429) == 1 and statuses.count(200) == 2 + 1000

    report = return_value(run, "build_report")
    replay = codec.decode(Replay, report["evidence"]["replay"])
    assert (replay.queries, replay.distinct, replay.k) == (1000, 1000, 10)
    assert replay.skipped == 5  # the page views
    assert sum(replay.overlap.histogram) == sum(replay.rbo.histogram) == 1000
    assert len(replay.changed) == 10 and replay.judge is not None and replay.judge.gates
    judged = replay.judge
    assert judged.old_interval[0] <= judged.old_ndcg <= judged.old_interval[1]
    assert judged.new_interval[0] <= judged.new_ndcg <= judged.new_interval[1]

    body = seen["detail"]["body"]  # what the approver read
    assert "**Real traffic: 1000 production queries replayed**" in body
    assert f"| overlap@10 | {replay.overlap.mean:.3f} |" in body
    assert f"| RBO (p=0.9) | {replay.rbo.mean:.3f} |" in body
    assert "| queries by value | 0.0 to 0.1 |" in body
    assert "**The 10 queries that changed most**" in body
    for number, changed in enumerate(replay.changed, 1):
        assert f"{number}. {changed.query!r}: overlap@10" in body
        for result in changed.old + changed.new:
            assert result.title in body
    assert f"| judged nDCG@10 (95% interval) | {judged.old_ndcg:.3f}" in body
    assert "**Quality:**" not in body  # no synthetic sample queries beside the real ones

    with open_client(QdrantSettings(path=str(qdrant_conn))) as client:
        store = QdrantStateStore(client)
        record = Reports(store).get(report["migration_id"])
        assert record is not None
        page = views.migration_page(
            store, client, report["migration_id"], views.AirflowFacts(DAG_ID)
        )
    assert page is not None and page.replay == replay
    links = pages.Links(base="/qdrant-migrations", airflow="", dag_id=DAG_ID)
    viewer = pages.Viewer("admin", can_answer=True, can_trigger=True)
    html = pages.migration_html(page, links, viewer, None)
    assert 'aria-label="replayed queries by overlap and RBO"' in html
    assert "Real traffic: 1000 production queries, old vs new top 10" in html
    changed_html = html[html.index('id="changed"') :]
    for changed in replay.changed:
        assert changed.old[0].title in changed_html and changed.new[0].title in changed_html

    # The dry run's numbers, in the same plan: the replay embedded by both models, the
    # judge's calls priced, both in the quality comparison's duration.
    estimate = return_value(run, "assess_compatibility")["estimate"]
    assert (estimate["replay_queries"], estimate["judge_calls"]) == (1000, 1000)
    assert estimate["judge_units"] == 1000 and estimate["judge_cost_usd"] == 2.0
    planned = next(p for p in estimate["phases"] if p["name"] == QUALITY)
    assert "1000 queries of the query log replayed" in planned["basis"]
    assert "1000 judge calls" in planned["basis"]
    took_quality = actual_phases(codec.decode(Timeline, report["evidence"]["timeline"]))[QUALITY]

    logged = capsys.readouterr()
    plan = json.dumps(return_value(run, "assess_compatibility"))
    _nothing_longer_kept(
        queries, json.dumps(report), plan, json.dumps(codec.encode(record)), logged.out, logged.err
    )
    note(
        f"traffic: 1000 queries replayed and judged in a run of {took:.0f} s (judge "
        f"{judged.seconds:.1f} s); overlap@10 mean {replay.overlap.mean:.3f}, RBO mean "
        f"{replay.rbo.mean:.3f}, {replay.new_results} of {replay.results} results new; judged "
        f"nDCG@10 {judged.old_ndcg:.3f} {judged.old_interval} -> {judged.new_ndcg:.3f} "
        f"{judged.new_interval}; quality comparison planned {planned['seconds']:.0f} to "
        f"{planned['max_seconds']:.0f} s, took {took_quality:.0f} s"
    )


def test_a_judged_drop_fails_before_the_approval_naming_the_worst_queries(
    dag: Any,
    qdrant_conn: Path,
    judge_conn: StandIn,
    openai_connection: StandIn,
    queries: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = write_log(tmp_path / "queries.jsonl", queries[:200])
    conf = CONF | {
        # The stand-in's vectors carry no meaning: a model that finds nothing relevant.
        "provider": "openai",
        "model": "text-embedding-3-small",
        "dimensions": 256,
        "provider_conn_id": "embeddings",
        "query_log": str(log),
        "title_field": "title",
        "judge": JUDGE,
    }

    run = dag.test(run_conf=conf)

    states = task_states(run)
    assert run.state == "failed" and states["build_report"] == "failed", states
    assert states["approve_swap"] in {"upstream_failed", None}, states
    said = capsys.readouterr().out
    assert "Judged nDCG@10 falls from" in said and "cohere/rerank-v3.5" in said
    with open_client(QdrantSettings(path=str(qdrant_conn))) as client:
        (record,) = Reports(QdrantStateStore(client)).scan()
    replay = record.measured("replay", Replay)
    assert replay is not None and replay.judge is not None
    assert replay.judge.old_ndcg - replay.judge.new_ndcg > 0.02
    assert replay.judge.worst
    for worst in replay.judge.worst:
        assert repr(worst.query) in said  # the failure names them
    assert record.outcome is not None and record.outcome.startswith("failed: Judged nDCG@10")
    _nothing_longer_kept(queries[:200], said, json.dumps(codec.encode(record)))
