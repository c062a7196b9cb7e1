"""The query-log replay on the fast store (hashing models, the corpus's titles as queries):
both sides searched and compared, the queries that changed most by title, the judge's
nDCG and its gate (the stand-in's rerank), texts cut, the dry run's price of it all."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from qdrant_client import QdrantClient

from include.qdrant_migration import codec, compatibility
from include.qdrant_migration.checks import quality, traffic
from include.qdrant_migration.checks.ranking import overlap_at_k, rbo
from include.qdrant_migration.plan import Plan
from include.qdrant_migration.providers import AuthError, Credentials
from include.qdrant_migration.querylog import QueryLog, QueryLogError, Sample, sample
from include.qdrant_migration.report import render_plan, replay_lines
from include.qdrant_migration.rerankers import Reranker, get_reranker
from include.qdrant_migration.spec import Judge
from include.qdrant_migration.state import QdrantStateStore
from include.qdrant_migration.strategy import CompatibilityError
from tests.fakes import HashingProvider
from tests.qdrant_migration.hashed import hash_spec
from tests.qdrant_migration.helpers import Migrated
from tests.standin import COHERE_KEY, StandIn, standin, standin_server  # noqa: F401

LONG = "how do I " + "really " * 40 + "parse a json document"


def _queries(corpus: list[dict[str, Any]], n: int = 60) -> list[str]:
    """Queries a user of the corpus might type: a function's name and its module."""
    return [
        f"{doc['title'].rsplit('.', 1)[-1].replace('_', ' ')} in {doc['module']}"
        for doc in corpus[:n]
    ]


def _plan(migrated: Migrated, queries: list[str], **spec: Any) -> Plan:
    changes = {"query_log": QueryLog(inline=len(queries)), "title_field": "title", **spec}
    return dataclasses.replace(
        migrated.plan, spec=dataclasses.replace(migrated.plan.spec, **changes)
    )


@pytest.fixture
def judge(standin: StandIn) -> Any:  # noqa: F811
    built = get_reranker(
        "cohere",
        "rerank-v3.5",
        options={"max_concurrency": 4},
        credentials=Credentials("judge", COHERE_KEY, standin.cohere_base_url),
    )
    yield built
    built.close()


def test_both_sides_are_compared_and_the_queries_that_changed_most_named(
    fast_migrated: Migrated,
    corpus: list[dict[str, Any]],
    old_model: HashingProvider,
    new_model: HashingProvider,
) -> None:
    queries = _queries(corpus)
    plan = _plan(fast_migrated, queries)
    sampled = sample(queries, 100)
    n = len(sampled.queries)  # two functions of a module may share a name
    assert n == sampled.distinct > 50
    found = traffic.replay(fast_migrated.client, plan, (old_model, new_model), sampled)

    k = plan.spec.recall_k
    assert (found.queries, found.k, found.judge) == (n, k, None)
    assert sum(found.overlap.histogram) == sum(found.rbo.histogram) == n
    assert found.results == n * k and 0 < found.new_results < found.results
    assert len(found.changed) == traffic.CHANGED_SHOWN
    order = [(c.rbo, c.overlap, -c.new_results) for c in found.changed]
    assert order == sorted(order) and found.changed[0].rbo <= found.rbo.quantiles["p10"]
    titles = {doc["title"] for doc in corpus}
    for changed in found.changed:
        old_ids, new_ids = [r.id for r in changed.old], [r.id for r in changed.new]
        assert changed.overlap == pytest.approx(overlap_at_k(old_ids, new_ids, k), abs=1e-4)
        assert changed.rbo == pytest.approx(rbo(old_ids, new_ids), abs=1e-4)
        assert changed.new_results == len(set(new_ids) - set(old_ids))
        assert {r.title for r in changed.old + changed.new} <= titles

    lines = replay_lines(found, plan)
    text = "\n".join(lines)
    assert f"**Real traffic: {n} production queries replayed**" in text
    assert f"| overlap@{k} | {found.overlap.mean:.3f} |" in text
    assert "| RBO (p=0.9) |" in text and "| queries by value | 0.0 to 0.1 |" in text
    assert f"{found.new_results} of {found.results}" in text
    for number, changed in enumerate(found.changed, 1):
        assert f"{number}. {changed.query!r}: overlap@{k}" in text
        assert f"| 1 | {changed.old[0].title} |" in text


def test_the_same_model_on_the_same_collection_changes_nothing(
    fast_migrated: Migrated, corpus: list[dict[str, Any]], old_model: HashingProvider
) -> None:
    queries = _queries(corpus, 20)
    plan = _plan(fast_migrated, queries)
    same = dataclasses.replace(plan, target_collection=plan.source.collection)
    found = traffic.replay(fast_migrated.client, same, (old_model, old_model), sample(queries, 50))
    assert found.overlap.mean == found.rbo.mean == 1.0
    assert found.overlap.histogram[-1] == 20 and found.new_results == found.unseen_documents == 0


def test_queries_and_titles_are_cut_and_nothing_longer_is_kept(
    fast_migrated: Migrated,
    corpus: list[dict[str, Any]],
    old_model: HashingProvider,
    new_model: HashingProvider,
) -> None:
    queries = [LONG, *_queries(corpus, 10)]
    plan = _plan(fast_migrated, queries, title_field="text")  # a long field as the title
    found = traffic.replay(fast_migrated.client, plan, (old_model, new_model), sample(queries, 50))
    kept = json.dumps(codec.encode(found)) + "\n".join(replay_lines(found, plan))
    assert all(len(c.query) <= traffic.TRUNCATE for c in found.changed)
    assert all(len(r.title) <= traffic.TRUNCATE for c in found.changed for r in c.old + c.new)
    assert LONG not in kept
    for doc in corpus:
        if len(doc["text"]) > traffic.TRUNCATE:
            assert doc["text"] not in kept
    assert traffic.cut(LONG) == LONG[:79] + "…" and traffic.cut("a\n b") == "a b"


def test_the_judge_scores_both_lists_and_a_drop_fails_naming_the_worst_queries(
    fast_migrated: Migrated,
    corpus: list[dict[str, Any]],
    old_model: HashingProvider,
    judge: Reranker,
    standin: StandIn,  # noqa: F811
) -> None:
    queries = _queries(corpus, 40)
    plan = _plan(fast_migrated, queries)
    # A poor new model: its queries do not live in the space of the target's vectors.
    poor = HashingProvider("hash-poor")
    found = traffic.replay(
        fast_migrated.client, plan, (old_model, poor), sample(queries, 50), judge
    )

    judged = found.judge
    assert judged is not None and judged.gates
    assert judged.queries == judged.calls == 40 == len(standin.requests("/v2/rerank"))
    assert judged.billed == 40 and judged.billing_unit == "search unit"
    assert judged.old_ndcg > judged.new_ndcg + 0.1
    assert judged.old_interval[0] <= judged.old_ndcg <= judged.old_interval[1]
    assert judged.difference_interval[1] < 0
    assert 0 < len(judged.worst) <= traffic.WORST_JUDGED
    (failure,) = traffic.failures(found)
    assert f"Judged nDCG@10 falls from {judged.old_ndcg:.3f}" in failure
    assert "cohere/rerank-v3.5" in failure and "quality_tolerance" in failure
    for worst in judged.worst:
        assert repr(worst.query) in failure
    text = "\n".join(replay_lines(found, plan))
    assert "| judged nDCG@10 (95% interval) |" in text and "it gates the swap" in text
    assert "judged nDCG@10" in text.split("changed most")[1]  # per changed query too

    # With a labeled evaluation set, the labels gate: the judge is shown, not gating.
    labeled = dataclasses.replace(plan.spec, eval_set=[{"query": "q", "relevant_ids": [1]}])
    shown = traffic.replay(
        fast_migrated.client,
        dataclasses.replace(plan, spec=labeled),
        (old_model, poor),
        sample(queries[:10], 50),
        judge,
    )
    assert shown.judge is not None and not shown.judge.gates
    assert traffic.failures(shown) == []
    assert "shown only" in "\n".join(replay_lines(shown, plan))


def test_a_judge_that_fails_for_good_stops_the_replay(
    fast_migrated: Migrated,
    corpus: list[dict[str, Any]],
    old_model: HashingProvider,
    new_model: HashingProvider,
    standin: StandIn,  # noqa: F811
) -> None:
    queries = _queries(corpus, 40)
    judge = get_reranker(
        "cohere",
        "rerank-v3.5",
        options={"max_concurrency": 2},
        credentials=Credentials("judge", "a-revoked-key", standin.cohere_base_url),
    )
    with pytest.raises(AuthError, match="'judge'"):
        traffic.replay(
            fast_migrated.client,
            _plan(fast_migrated, queries),
            (old_model, new_model),
            sample(queries, 50),
            judge,
        )
    judge.close()
    assert len(standin.requests("/v2/rerank")) < 10  # not one refused call per query


def test_a_drop_within_the_tolerance_passes() -> None:
    judged = traffic.Judged(
        "cohere/rerank-v3.5", 10, 0.80, 0.79, (0.7, 0.9), (0.7, 0.9), (-0.05, 0.03), True, 0.02
    )
    replay = traffic.Replay(
        "x", 10, 0, 10, 10, 10, None, *(2 * [traffic.Distribution()]), judge=judged
    )
    assert traffic.failures(replay) == [] and traffic.failures(None) == []
    worse = dataclasses.replace(judged, new_ndcg=0.70)
    assert traffic.failures(dataclasses.replace(replay, judge=worse))


def test_the_replay_replaces_the_synthetic_label_free_comparison(
    fast_migrated: Migrated, old_model: HashingProvider, new_model: HashingProvider
) -> None:
    plan = _plan(fast_migrated, ["json"])
    _own, compared = quality.evaluate(fast_migrated.client, plan, new_model, old_model)
    assert compared.skipped == quality.REPLAYED and compared.queries == 0


def _assess(client: QdrantClient, spec: Any, new: Any, old: Any, **more: Any) -> Plan:
    return compatibility.assess(
        client, spec, new, QdrantStateStore(client), old_model=lambda _source: old, **more
    )


def test_the_dry_run_prices_the_replay_and_the_judge(
    fast_client: QdrantClient,
    corpus: list[dict[str, Any]],
    old_model: HashingProvider,
    new_model: HashingProvider,
    judge: Reranker,
    standin: StandIn,  # noqa: F811
) -> None:
    queries = _queries(corpus, 30)
    spec = hash_spec(
        query_log=queries, judge={"conn_id": "judge"}, dry_run=True, title_field="title"
    )
    plan = _assess(fast_client, spec, new_model, old_model, inline_queries=queries, judge=judge)
    est = plan.estimate
    assert (est.replay_queries, est.judge_calls, est.judge_units) == (30, 30, 30)
    assert est.judge_price_per_1k == 2.0 and est.judge_cost_usd == pytest.approx(0.06)
    assert est.replay_tokens > 0 and est.replay_cost_usd is None  # hashing: no price
    _checked, timed = standin.requests("/v2/rerank")  # the access check, then a timed call
    assert timed.n_texts == 20 and timed.texts[0] == corpus[0]["text"]
    quality_phase = est.phases[-1]
    assert "30 queries of the query log replayed" in quality_phase.basis
    assert "30 judge calls, 4 at a time" in quality_phase.basis
    assert "| query-log replay (quality evidence) | 30 queries embedded by both models" in (
        render_plan(plan)
    )
    assert "$0.0600" in render_plan(plan)
    assert spec.judge == Judge(conn_id="judge")


def test_assess_refuses_a_bad_log_and_a_replay_without_the_old_model(
    fast_client: QdrantClient, old_model: HashingProvider, new_model: HashingProvider
) -> None:
    empty = hash_spec(query_log=["  "])
    with pytest.raises(QueryLogError, match="has no query"):
        _assess(fast_client, empty, new_model, old_model, inline_queries=["  "])
    missing = hash_spec(query_log={"collection": "search_log", "field": "q"})
    with pytest.raises(QueryLogError, match="'search_log' does not exist"):
        _assess(fast_client, missing, new_model, old_model)
    with pytest.raises(CompatibilityError, match="source_provider and source_model"):
        _assess(
            fast_client, hash_spec(query_log=["json"]), new_model, None, inline_queries=["json"]
        )


def test_the_replay_round_trips_as_evidence(
    fast_migrated: Migrated,
    corpus: list[dict[str, Any]],
    old_model: HashingProvider,
    new_model: HashingProvider,
) -> None:
    queries = _queries(corpus, 12)
    found = traffic.replay(
        fast_migrated.client,
        _plan(fast_migrated, queries),
        (old_model, new_model),
        Sample(queries, 12, 0, 12),
    )
    assert codec.decode(traffic.Replay, json.loads(json.dumps(codec.encode(found)))) == found
