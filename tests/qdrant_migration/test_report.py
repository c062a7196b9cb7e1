"""The approver's report: typed plan and evidence in, markdown and an XCom-safe dict out.

Plans and evidence are built directly (no migration runs), except one report of a real
migration of the fast store with the hashing models.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from qdrant_client import QdrantClient

from include.qdrant_migration import codec
from include.qdrant_migration.checks import quality, recall
from include.qdrant_migration.checks.completeness import Completeness
from include.qdrant_migration.checks.quality import Quality, Regression, SelfRetrieval
from include.qdrant_migration.checks.recall import RecallResult
from include.qdrant_migration.linear_map import MapSummary
from include.qdrant_migration.plan import Estimate, Lineage, Plan, SourceInfo
from include.qdrant_migration.report import (
    Actuals,
    Evidence,
    Report,
    render_plan,
    render_quantization,
)
from include.qdrant_migration.spec import MigrationSpec, Strategy
from include.qdrant_migration.state import QdrantStateStore
from include.qdrant_migration.sync.backfill import BackfillSummary
from include.qdrant_migration.sync.catchup import CatchUp, CatchUpJob, CatchUpResult, converge
from include.qdrant_migration.texts import query_like
from tests.fakes import HashingProvider
from tests.qdrant_migration.hashed import HASH_TARGET, hash_spec
from tests.qdrant_migration.helpers import SEED_POINTS, migrate

TARGET = "articles_v1__multilingual-e5-small__v1"
REASON = (
    "Full re-embed: 1234 points of 'articles_v1' (384-d of local/all-MiniLM-L6-v2, Cosine) "
    "are embedded again with local/multilingual-e5-small (384-d); vectors of different "
    "models cannot share a space."
)
ESTIMATE = Estimate(
    points=1234,
    texts_to_embed=1230,
    vectors_copied=0,
    tokens=61_500,
    tokens_per_text=50.0,
    token_sample=1000,
    tokens_exact=False,
    tokenizer="tiktoken cl100k_base (exact)",
    embed_requests=10,
    price_per_million_tokens=0.02,
    prices_as_of="2026-11",
    cost_usd=0.00123,
    duration_s=95.0,
    duration_basis="the rate budget (tokens_per_minute=1000000)",
    target_disk_bytes=3 * 1024 * 1024,
    peak_disk_bytes=9 * 1024 * 1024,
    target_ram_bytes=2 * 1024 * 1024,
    creates=[TARGET, "qdrant_migration_state"],
    alias_change=f"articles: articles_v1 -> {TARGET} on approval",
)


def make_plan(**changes: Any) -> Plan:
    """A full re-embed of 1234 MiniLM points to e5-small, as assess_compatibility plans it."""
    plan = Plan(
        migration_id="mig-0123456789ab",
        alias="articles",
        strategy=Strategy.FULL_REEMBED,
        reasons=[REASON],
        source=SourceInfo(
            collection="articles_v1",
            vector_name=None,
            size=384,
            distance="Cosine",
            points=1234,
            sample_ids=[1, 2, 3],
            text_coverage=1.0,
            lineage=Lineage(provider="local", model="all-MiniLM-L6-v2"),
        ),
        target_collection=TARGET,
        target_dimension=384,
        target_lineage=Lineage(
            provider="local",
            model="multilingual-e5-small",
            dimensions=384,
            document_input="'passage: ' prefix",
            query_input="'query: ' prefix",
            strategy="full_reembed",
        ),
        spec=MigrationSpec(alias="articles"),
        estimate=ESTIMATE,
    )
    return dataclasses.replace(plan, **changes)


RECALL = RecallResult(
    readiness="green, 1230/1230 vectors indexed",
    recall_at_k=0.9876,
    k=10,
    threshold=0.95,
    sample_queries=100,
    completeness=Completeness(
        source_points=1234, target_points=1230, lag=3, lag_examples=[7, 8, 9], skipped=4
    ),
)
BACKFILL = BackfillSummary(
    partitions=3,
    embedded=1230,
    tokens=60_000,
    skipped=4,
    skipped_by_reason={"empty": 3, "missing": 1},
    embed_requests=97,
    wall_seconds=80.4,
)
EVIDENCE = Evidence(
    recall=RECALL,
    self_retrieval=SelfRetrieval(queries=100, hit_at_1=0.93, mrr_at_k=0.961, k=10),
    quality=Quality(skipped="the old model is unknown: set source_provider and source_model"),
    backfill=BACKFILL,
    skipped_examples={"empty": [11, 12, 13], "missing": ["5b0f6a5e-8d0c-4d57-9b1c-2a5b8d3c7e11"]},
)


def _lines(report: Report) -> list[str]:
    return report.markdown.splitlines()


def test_markdown_carries_the_numbers_the_approver_needs() -> None:
    text = Report(make_plan(), EVIDENCE).markdown
    assert text.startswith(f"### Swap `articles` to `{TARGET}`?")
    assert f"Migration `mig-0123456789ab`: `articles_v1` → `{TARGET}`" in text
    assert "**local/multilingual-e5-small** (384-d)" in text
    for row in (
        "| source points | 1234 |",
        "| target points | 1230 |",
        "| changed since the last catch-up (lag) / damaged | 3 / 0 |",
        "| skipped (recorded) | 4 |",
        "| &nbsp;&nbsp;empty | 3 (ids 11, 12, 13) |",
        "| &nbsp;&nbsp;missing | 1 (ids 5b0f6a5e-8d0c-4d57-9b1c-2a5b8d3c7e11) |",
        "| &nbsp;&nbsp;full list | records of kind `skip` with migration_id `mig-0123456789ab` "
        "in collection `qdrant_migration_state` |",
        "| points without vector | 0 |",
        "| index | green, 1230/1230 vectors indexed |",
        "| recall@10 ANN vs exact | 0.988 (threshold 0.95, 100 queries) |",
        "| own document at rank 1 (new model queries) | 0.930 (MRR@10 0.961, 100 queries) |",
        "| embedded / embedding requests (this run) | 1230 / 97 |",
    ):
        assert row in text.splitlines(), row
    # nothing was derived: no row among the checks (the plan-vs-actual table has its 0s)
    assert "| vectors derived without embedding | 0 |" not in text.splitlines()
    assert "catch-up of live writes" not in text  # no catch-up evidence: no row
    assert "missing / extra" not in text
    assert "linear map" not in text
    assert f"**Plan:** {REASON}" in text
    assert "`multilingual-e5-small` as 'query: ' prefix. Approve" in text  # no dimensions note
    assert "`articles_v1` stays for rollback" in text


def test_the_report_is_an_xcom() -> None:
    report = Report(make_plan(), EVIDENCE)
    xcom = codec.encode_dict(report.record())
    assert json.loads(json.dumps(xcom)) == xcom
    assert xcom["migration_id"] == "mig-0123456789ab"
    assert (xcom["alias"], xcom["source_collection"], xcom["target_collection"]) == (
        "articles",
        "articles_v1",
        TARGET,
    )
    assert xcom["strategy"] == "full_reembed" and type(xcom["strategy"]) is str
    assert xcom["reasons"] == [REASON]
    assert xcom["lineage"]["model"] == "multilingual-e5-small"
    assert xcom["estimate"] == dataclasses.asdict(ESTIMATE)
    assert xcom["actual"] == dataclasses.asdict(report.actual)
    assert codec.decode(RecallResult, xcom["evidence"]["recall"]) == RECALL
    assert xcom["evidence"]["backfill"]["skipped_by_reason"] == {"empty": 3, "missing": 1}
    assert xcom["evidence"]["catch_up"] is None and xcom["evidence"]["linear_map"] is None
    assert xcom["evidence"]["catch_up_changes"] == []
    assert xcom["markdown"] == report.markdown


CAUGHT_UP = CatchUpResult(mode="full_compare", inserted=100, reembedded=30, deleted=8)


def test_catch_up_passes_and_the_lag_they_left_are_rows_of_the_checks() -> None:
    completeness = dataclasses.replace(
        RECALL.completeness, lag=5, lag_examples=[1, 2, 3, 4, 5], damaged=2
    )
    evidence = dataclasses.replace(
        EVIDENCE,
        recall=dataclasses.replace(RECALL, completeness=completeness),
        catch_up=CAUGHT_UP,
        catch_up_changes=[120, 15, 3],
    )
    lines = _lines(Report(make_plan(), evidence))
    rows = [
        "| target points | 1230 |",
        "| catch-up of live writes | 3 passes, changes per pass 120 → 15 → 3 (full_compare) |",
        "| changed since the last catch-up (lag) / damaged | 5 / 2 |",
        "| skipped (recorded) | 4 |",
    ]
    at = lines.index(rows[0])
    assert lines[at : at + len(rows)] == rows  # in this order, with the completeness rows


def test_one_catch_up_pass_without_its_changes_per_pass() -> None:
    """Evidence of a catch-up recorded before the passes were counted: one pass, its total."""
    caught_up = CatchUpResult(mode="watermark", inserted=2, payload_updated=1, skipped=1)
    lines = _lines(Report(make_plan(), dataclasses.replace(EVIDENCE, catch_up=caught_up)))
    [row] = [line for line in lines if line.startswith("| catch-up of live writes | 1 pass")]
    assert row.endswith(" changes per pass 4 (watermark) |")


def test_the_catch_up_evidence_round_trips_as_an_xcom() -> None:
    evidence = dataclasses.replace(EVIDENCE, catch_up=CAUGHT_UP, catch_up_changes=[120, 15, 3])
    xcom = codec.encode_dict(Report(make_plan(), evidence).record())
    assert json.loads(json.dumps(xcom)) == xcom
    stored = xcom["evidence"]
    assert stored["catch_up_changes"] == [120, 15, 3]
    assert codec.decode(CatchUpResult, stored["catch_up"]) == CAUGHT_UP
    assert codec.decode(RecallResult, stored["recall"]) == RECALL
    assert stored["recall"]["completeness"]["lag_examples"] == [7, 8, 9]
    assert "3 passes, changes per pass 120 → 15 → 3" in xcom["markdown"]


def test_markdown_with_sparse_evidence_says_none_and_na() -> None:
    evidence = dataclasses.replace(
        EVIDENCE,
        recall=dataclasses.replace(
            RECALL, completeness=Completeness(source_points=5, target_points=5)
        ),
        self_retrieval=SelfRetrieval(),
        backfill=BackfillSummary(),
    )
    text = Report(make_plan(), evidence).markdown
    assert "| skipped (recorded) | 0 |" in text
    assert "| own document at rank 1 (new model queries) | n/a: nothing to measure |" in text
    assert "source is empty" not in text


def test_recall_with_nothing_to_measure_is_not_reported_as_a_number() -> None:
    empty = dataclasses.replace(RECALL, recall_at_k=None, sample_queries=0)
    lines = _lines(Report(make_plan(), dataclasses.replace(EVIDENCE, recall=empty)))
    assert (
        "| recall@10 ANN vs exact | n/a: nothing to measure (no points with a vector) "
        "(threshold 0.95, 0 queries) |"
    ) in lines


def test_plan_and_actuals_side_by_side() -> None:
    caught_up = CatchUpResult(mode="full compare", inserted=2, embedded=2, tokens=90)
    report = Report(make_plan(), dataclasses.replace(EVIDENCE, catch_up=caught_up))
    assert report.actual == Actuals(
        texts_embedded=1230,
        texts_embedded_catch_up=2,
        vectors_derived=0,
        tokens=60_090,
        embed_requests=97,
        cost_usd=pytest.approx(60_090 * 0.02 / 1e6),  # type: ignore[arg-type]
        duration_s=80.4,
    )
    lines = _lines(report)
    assert "| | plan | actual (this run) |" in lines
    for row in (
        "| texts embedded | 1230 | 1230 (+2 catch-up) |",
        "| vectors derived without embedding | 0 | 0 |",
        "| tokens | 61500 (tiktoken cl100k_base (exact), extrapolated from 1000 sampled texts)"
        " | 60090 |",
        "| embedding requests | 10 | 97 |",
        "| cost | $0.0012 ($0.02/1M tokens, prices of 2026-11: check before quoting) | $0.0012 |",
        "| duration | 1m 35s (the rate budget (tokens_per_minute=1000000)) | 1m 20s |",
        "| disk: new data / peak while both exist | 3.0 MiB / 9.0 MiB | n/a |",
        "| RAM of the vectors and index | 2.0 MiB | n/a |",
    ):
        assert row in lines, row


def test_an_empty_source_says_there_was_nothing_to_measure() -> None:
    nothing = Completeness(source_points=0, target_points=0)
    evidence = dataclasses.replace(
        EVIDENCE,
        recall=dataclasses.replace(
            RECALL, recall_at_k=None, sample_queries=0, completeness=nothing
        ),
        self_retrieval=SelfRetrieval(k=10),
        backfill=BackfillSummary(),
    )
    text = Report(make_plan(), evidence).markdown
    lines = text.splitlines()
    assert lines[2].startswith("**The source is empty: there was nothing to measure.**")
    assert "| own document at rank 1 (new model queries) | n/a: nothing to measure |" in lines
    assert not any("1.000" in line for line in lines)  # never a vacuous pass


def test_a_run_that_continues_a_migration_splits_its_work_from_earlier_runs() -> None:
    """2817 texts embedded over two runs, 0 requests in this one: never side by side."""
    backfill = dataclasses.replace(
        BACKFILL,
        embedded=2817,
        tokens=90_000,
        embed_requests=23,
        earlier={"embedded": 2817, "tokens": 90_000, "requests": 23, "transformed": 0},
    )
    report = Report(make_plan(), dataclasses.replace(EVIDENCE, backfill=backfill))
    assert report.actual.texts_embedded == report.actual.embed_requests == 0
    assert report.earlier is not None and report.earlier.texts_embedded == 2817
    lines = _lines(report)
    assert "| | plan | this run | earlier runs |" in lines
    assert "| texts embedded | 1230 | 0 | 2817 |" in lines
    assert "| embedding requests | 10 | 0 | 23 |" in lines
    assert "| embedded / embedding requests (this run) | 0 / 0 |" in lines
    assert codec.encode_dict(report.record())["earlier_runs"]["tokens"] == 90_000
    assert codec.encode_dict(Report(make_plan(), EVIDENCE).record())["earlier_runs"] is None


def test_the_duration_runs_from_the_runs_start_to_the_report() -> None:
    """Checks and the evaluation count too, not only the backfill."""
    evidence = dataclasses.replace(
        EVIDENCE,
        run_started_at="2026-11-30T10:00:00+00:00",
        reported_at="2026-11-30T10:04:10+00:00",
    )
    report = Report(make_plan(), evidence)
    assert report.actual.duration_s == 250.0  # not the backfill's 80.4
    assert any(line.startswith("| duration |") and "| 4m 10s |" in line for line in _lines(report))


def test_a_duration_estimate_with_a_range_shows_both_ends() -> None:
    plan = make_plan(
        estimate=dataclasses.replace(
            ESTIMATE, duration_s=95.0, duration_max_s=200.0, duration_basis="measured"
        )
    )
    assert "| duration | 1m 35s to 3m 20s (measured) |" in render_plan(plan).splitlines()


def test_a_failed_gate_renders_the_whole_report_as_a_failure_summary() -> None:
    compared = Quality(
        labeled=True,
        queries=40,
        k=10,
        old={"recall@10": 0.8, "mrr@10": 0.7, "ndcg@10": 0.92},
        new={"recall@10": 0.6, "mrr@10": 0.5, "ndcg@10": 0.70},
        tolerance=0.02,
    )
    failure = "nDCG@10 falls from 0.920 (old model) to 0.700 (new model)."
    report = Report(
        make_plan(), dataclasses.replace(EVIDENCE, quality=compared), failures=[failure]
    )
    lines = _lines(report)
    assert lines[0] == (
        "### Migration `mig-0123456789ab` failed its checks: the alias stays on `articles_v1`"
    )
    assert f"- **{failure}**" in lines
    for row in ("| nDCG@10 | 0.920 | 0.700 |", "| MRR@10 | 0.700 | 0.500 |"):
        assert row in lines, row  # every metric, old vs new
    assert "| recall@10 ANN vs exact | 0.988 (threshold 0.95, 100 queries) |" in lines
    assert lines[-1].startswith("Nothing was switched: the alias stays on `articles_v1`.")
    assert "Approve" not in report.markdown
    assert codec.encode_dict(report.record())["failures"] == [failure]


def test_actuals_without_a_price_or_a_timed_partition() -> None:
    plan = make_plan(estimate=dataclasses.replace(ESTIMATE, price_per_million_tokens=None))
    evidence = dataclasses.replace(
        EVIDENCE, backfill=dataclasses.replace(BACKFILL, wall_seconds=None)
    )
    report = Report(plan, evidence)
    assert report.actual.cost_usd is None and report.actual.duration_s is None
    lines = _lines(report)
    assert any(
        line.startswith("| cost | $0.0012 (no price in the table) | unknown (no price")
        for line in lines
    )
    assert any(
        line.startswith("| duration | 1m 35s (") and line.endswith("| n/a |") for line in lines
    )


def test_linear_map_retention_sits_with_the_checks() -> None:
    fitted = MapSummary(
        migration_id="mig-0123456789ab",
        sample=2000,
        train=1600,
        held_out=400,
        lam=0.3,
        validation_cosine=0.93,
        retention=0.8812,
        k=10,
        known_item={"mapped_recall": 0.9, "reembedded_recall": 0.95, "ratio": 0.947},
        min_retention=0.85,
        tokens=70_000,
        embedded=2000,
        queries_embedded=400,
        seconds=30.0,
    )
    backfill = dataclasses.replace(BACKFILL, embedded=0, tokens=0, transformed=1230)
    plan = make_plan(strategy=Strategy.LINEAR_MAP)
    report = Report(plan, dataclasses.replace(EVIDENCE, backfill=backfill, linear_map=fitted))
    assert report.actual.tokens == 70_000
    assert report.actual.texts_embedded == 2000
    assert report.actual.vectors_derived == 1230
    assert report.actual.duration_s == 110.4  # without the run's start: backfill and fit
    lines = _lines(report)
    assert (
        "| linear map (ridge, ridge): retention | 0.881 (minimum 0.85; 400 held-out documents "
        "searched among 2000 sampled) |"
    ) in lines
    assert (
        "| linear map: own document in top-10 (a piece of the document as the query) | "
        "0.900 mapped vs 0.950 re-embedded vs n/a with the old model |"
    ) in lines
    assert "| vectors mapped by the linear map (no embedding) | 1230 |" in lines
    assert not any("copied" in line for line in lines)  # mapped vectors are not copies


def test_a_truncated_target_says_which_dimensions_to_ask_for() -> None:
    lineage = Lineage(
        provider="openai", model="text-embedding-3-small", dimensions=256, query_input="query"
    )
    plan = make_plan(strategy=Strategy.MATRYOSHKA_TRUNCATION, target_lineage=lineage)
    text = Report(plan, EVIDENCE).markdown
    assert "**openai/text-embedding-3-small** (256-d)" in text
    assert "as query, asking for dimensions=256. Approve" in text


def test_labeled_quality_table_and_worst_regressions() -> None:
    compared = Quality(
        labeled=True,
        queries=40,
        k=10,
        old={"recall@10": 0.8, "mrr@10": 0.7, "ndcg@10": 0.72},
        new={"recall@10": 0.85, "mrr@10": 0.74, "ndcg@10": 0.71},
        tolerance=0.02,
        worst_regressions=[
            Regression("sort a list", 1.0, 0.5),
            Regression("open a file", 0.6, 0.4),
        ],
    )
    lines = _lines(Report(make_plan(), dataclasses.replace(EVIDENCE, quality=compared)))
    assert (
        "**Quality on 40 labeled queries** (old model on the old collection vs new model on "
        "the new one):"
    ) in lines
    for row in (
        "| metric | old | new |",
        "| recall@10 | 0.800 | 0.850 |",
        "| MRR@10 | 0.700 | 0.740 |",
        "| nDCG@10 | 0.720 | 0.710 |",
        "- recall@10: share of a query's relevant points found in its top 10",
        "Queries that regressed most (nDCG@10 old → new):",
        "- 'sort a list': 1.0 → 0.5",
        "- 'open a file': 0.6 → 0.4",
    ):
        assert row in lines, row


def test_unlabeled_quality_and_the_skipped_comparison() -> None:
    compared = Quality(
        queries=50,
        k=10,
        mean_overlap_at_k=0.4321,
        old_top1_scores={"p10": 0.5, "p50": 0.61, "p90": 0.7},
        new_top1_scores={"p10": 0.8, "p50": 0.87, "p90": 0.9},
    )
    text = Report(make_plan(), dataclasses.replace(EVIDENCE, quality=compared)).markdown
    assert (
        "**Old vs new top-10 overlap** on 50 sample queries: 0.432. Top-1 score median moved "
        "from 0.610 to 0.870: re-tune score thresholds."
    ) in text
    nothing = Report(make_plan(), dataclasses.replace(EVIDENCE, quality=Quality(k=10))).markdown
    assert "**Quality:** not compared (no sample text to query with)." in nothing
    skipped = Report(make_plan(), EVIDENCE).markdown
    assert (
        "**Quality:** not compared (the old model is unknown: set source_provider and "
        "source_model)."
    ) in skipped


def test_render_plan_is_the_dry_run() -> None:
    text = render_plan(make_plan())
    lines = text.splitlines()
    assert lines[0] == "### Plan for alias `articles`: **full_reembed**"
    assert "Migration `mig-0123456789ab` of `articles_v1` (1234 points, 384-d, Cosine)." in lines
    assert f"- {REASON}" in lines
    assert "| estimate | value |" in lines
    assert "| embedding requests | 10 |" in lines  # two columns: no actuals yet
    assert "| cost | $0.0012 ($0.02/1M tokens, prices of 2026-11: check before quoting) |" in lines
    assert lines[-1] == (
        f"Would create: `{TARGET}`, `qdrant_migration_state`. "
        f"Alias: articles: articles_v1 -> {TARGET} on approval."
    )
    resumed = make_plan(estimate=dataclasses.replace(ESTIMATE, creates=[]))
    assert render_plan(resumed).splitlines()[-1].startswith("Would create: nothing. Alias:")


def test_the_dry_run_prices_cohere_s_embed_jobs_at_the_online_price() -> None:
    """Cohere's batch path (embed jobs) in the dry run: both modes' cost, the same, and why."""
    from include.qdrant_migration.estimate import _modes

    spec = MigrationSpec(alias="articles", provider="cohere", model="embed-english-v3.0")
    plan = make_plan(spec=spec)
    modes = _modes(plan, ESTIMATE.cost_usd, 90.0)
    text = render_plan(make_plan(spec=spec, estimate=dataclasses.replace(ESTIMATE, **modes)))
    assert (
        "| embedding mode: online / batch | $0.0012 / $0.0012: **online** recommended "
        "(Cohere's embed jobs cost what online requests cost (Cohere publishes no discount"
    ) in text
    v4 = make_plan(spec=dataclasses.replace(spec, model="embed-v4.0"))
    refused = render_plan(
        dataclasses.replace(
            v4, estimate=dataclasses.replace(ESTIMATE, **_modes(v4, ESTIMATE.cost_usd, 90.0))
        )
    )
    assert (
        "$0.0012 / not available: **online** recommended (embedding_mode 'batch' is not" in refused
    )


def test_quantization_report() -> None:
    plan = make_plan(
        strategy=Strategy.QUANTIZATION_ONLY,
        reasons=["Quantization only: in place."],
        target_collection="articles_v1",
        spec=MigrationSpec(alias="articles", quantization="scalar_int8"),
        estimate=Estimate(
            ram_before_bytes=4 * 2**20, target_ram_bytes=2**20, target_disk_bytes=2**20
        ),
    )
    lines = render_quantization(plan).splitlines()
    assert lines[0] == "### Change the quantization of `articles_v1` (alias `articles`)?"
    for row in (
        "Quantization only: in place.",
        "| points | 1234 (384-d, Cosine) |",
        "| quantization | none → scalar_int8 |",
        "| RAM of the vectors | 4.0 MiB → 1.0 MiB |",
        "| extra disk for quantized copies | 1.0 MiB |",
        "| points written / embedding calls | 0 / 0 |",
    ):
        assert row in lines, row


def test_report_of_a_migration_of_the_fast_store(
    fast_client: QdrantClient, new_model: HashingProvider, old_model: HashingProvider
) -> None:
    state = QdrantStateStore(fast_client)
    run = migrate(fast_client, hash_spec(), new_model, state)
    # the application edits a text; the catch_up task passes until nothing is left
    fast_client.set_payload("articles_v1", {"text": "edited live"}, points=[3], wait=True)
    job = CatchUpJob.forward(run.plan, new_model)
    caught_up = converge(lambda: CatchUp(fast_client, job, state).run(), max_lag=0).to_dict()
    found = recall.poke(fast_client, run.plan, state)
    assert found is not None
    own, compared = quality.evaluate(fast_client, run.plan, new_model, old_model)
    evidence = Evidence(
        found,
        own,
        compared,
        BackfillSummary.of(run.results),
        catch_up=codec.decode(CatchUpResult, caught_up),  # as build_report takes the XCom
        catch_up_changes=caught_up["changes_per_pass"],
    )
    report = Report(run.plan, evidence)
    assert report.actual.texts_embedded == SEED_POINTS
    assert report.actual.texts_embedded_catch_up == 1
    assert report.actual.embed_requests == sum(r.embed_requests for r in run.results) > 0
    assert report.actual.cost_usd == 0.0  # local/* is free
    lines = _lines(report)
    assert lines[0] == f"### Swap `articles` to `{HASH_TARGET}`?"
    for row in (
        f"| source points | {SEED_POINTS} |",
        f"| target points | {SEED_POINTS} |",
        "| catch-up of live writes | 2 passes, changes per pass 1 → 0 (full_compare) |",
        "| changed since the last catch-up (lag) / damaged | 0 / 0 |",
        "| recall@5 ANN vs exact | 1.000 (threshold 0.95, 20 queries) |",
        f"| texts embedded | {SEED_POINTS} | {SEED_POINTS} (+1 catch-up) |",
    ):
        assert row in lines, row
    assert "**hashing/hash-new** (64-d)" in report.markdown
    # Documents may be private: not one document text (nor its first sentence, the
    # label-free comparison's query) goes into the XCom or the state store.
    stored = json.dumps(codec.encode_dict(report.record()))
    texts, _ = fast_client.scroll("articles_v1", limit=SEED_POINTS, with_payload=True)
    for point in texts:
        text = str((point.payload or {})["text"])
        assert text[:60] not in stored and query_like(text) not in stored, point.id
    assert "**Old vs new top-5 overlap** on 20 sample queries" in report.markdown
    assert json.loads(json.dumps(codec.encode_dict(report.record()))) == codec.encode_dict(
        report.record()
    )
