from __future__ import annotations

import json
from typing import Any

import pytest

from include.qdrant_migration.report import build_report, render_markdown, render_quantization
from tests.qdrant_migration.helpers import Migrated

EVIDENCE: dict[str, Any] = {
    "source_points": 1234,
    "target_points": 1230,
    "reconciliation": {"missing": 0, "extra": 2, "skipped": 4},
    "points_without_vector": 0,
    "readiness": "green, 1230/1230 vectors indexed",
    "recall_at_k": 0.9876,
    "k": 10,
    "recall_threshold": 0.95,
    "sample_queries": 100,
    "self_retrieval": {"queries": 100, "hit_at_1": 0.93, "mrr": 0.961, "k": 10},
    "backfill": {
        "embedded": 1230,
        "skipped": 4,
        "skipped_by_reason": {"empty": 3, "missing": 1},
        "embed_requests": 97,
    },
}


def test_markdown_carries_the_numbers_the_approver_needs(migrated: Migrated) -> None:
    plan = migrated.plan.to_dict()
    report = build_report(plan, EVIDENCE)
    assert json.loads(json.dumps(report)) == report  # it is an XCom
    text = render_markdown(report)
    target = plan["target_collection"]
    assert text.startswith(f"### Swap `articles` to `{target}`?")
    assert f"`articles_v1` → `{target}`" in text
    assert "**local/multilingual-e5-small** (384-d)" in text
    assert plan["migration_id"] in text
    for row in (
        "| source points | 1234 |",
        "| target points | 1230 |",
        "| missing / extra ids | 0 / 2 |",
        "| skipped (recorded) | 4 (empty: 3, missing: 1) |",
        "| points without vector | 0 |",
        "| index | green, 1230/1230 vectors indexed |",
        "| recall@10 ANN vs exact | 0.988 (threshold 0.95, 100 queries) |",
        "| own document at rank 1 (new model queries) | 0.930 (MRR 0.961, 100 queries) |",
        "| embedded / embedding requests | 1230 / 97 |",
    ):
        assert row in text.splitlines(), row
    assert "Full re-embed: 240 points" in text
    assert "`multilingual-e5-small` as 'query: ' prefix" in text
    assert "`articles_v1` stays for rollback" in text


def test_markdown_with_sparse_evidence_says_none_and_na(migrated: Migrated) -> None:
    evidence = {"source_points": 5, "target_points": 5, "self_retrieval": {"hit_at_1": None}}
    text = render_markdown(build_report(migrated.plan.to_dict(), evidence))
    assert "| skipped (recorded) | 0 (none) |" in text
    assert "| own document at rank 1 (new model queries) | n/a (MRR n/a," in text


ESTIMATE: dict[str, Any] = {
    "strategy": "full_reembed",
    "points": 1234,
    "texts_to_embed": 1230,
    "vectors_copied": 0,
    "tokens": 61_500,
    "token_sample": 1000,
    "tokens_exact": False,
    "tokenizer": "tiktoken cl100k_base (exact)",
    "embed_requests": 10,
    "price_per_million_tokens": 0.02,
    "prices_as_of": "2026-11",
    "cost_usd": 0.00123,
    "duration_s": 95.0,
    "duration_basis": "the rate budget (tokens_per_minute=1000000)",
    "target_disk_bytes": 3 * 1024 * 1024,
    "peak_disk_bytes": 9 * 1024 * 1024,
    "target_ram_bytes": 2 * 1024 * 1024,
    "creates": ["articles_v1__x__v1"],
    "alias": "articles: articles_v1 -> articles_v1__x__v1 on approval",
}


def test_plan_and_actuals_side_by_side(migrated: Migrated) -> None:
    plan = migrated.plan.to_dict() | {"estimate": ESTIMATE}
    evidence = EVIDENCE | {
        "backfill": EVIDENCE["backfill"]
        | {"tokens": 60_000, "wall_seconds": 80.4, "catch_up": {"embedded": 2, "tokens": 90}},
    }
    report = build_report(plan, evidence)
    assert report["estimate"] == ESTIMATE
    assert report["actual"] == {
        "texts_embedded": 1230,
        "texts_embedded_catch_up": 2,
        "vectors_copied": 0,
        "tokens": 60_090,
        "embed_requests": 97,
        "cost_usd": pytest.approx(60_090 * 0.02 / 1e6),
        "duration_s": 80.4,
    }
    lines = render_markdown(report).splitlines()
    assert "| | plan | actual |" in lines
    for row in (
        "| texts embedded | 1230 | 1230 (+2 catch-up) |",
        "| tokens | 61500 (tiktoken cl100k_base (exact), extrapolated from 1000 sampled texts)"
        " | 60090 |",
        "| embedding requests | 10 | 97 |",
        "| cost | $0.0012 ($0.02/1M tokens, prices of 2026-11: check before quoting) | $0.0012 |",
        "| duration | 1m 35s (the rate budget (tokens_per_minute=1000000)) | 1m 20s |",
        "| disk: new data / peak while both exist | 3.0 MiB / 9.0 MiB | n/a |",
    ):
        assert row in lines, row


def test_linear_map_retention_sits_with_the_checks(migrated: Migrated) -> None:
    fitted = {
        "sample": 2000,
        "held_out": 400,
        "retention": 0.8812,
        "k": 10,
        "min_retention": 0.85,
        "known_item": {"mapped_recall": 0.9, "reembedded_recall": 0.95, "ratio": 0.947},
        "tokens": 70_000,
        "embedded": 2000,
        "seconds": 30.0,
    }
    evidence = EVIDENCE | {"linear_map": fitted}
    evidence["backfill"] = EVIDENCE["backfill"] | {"embedded": 0, "transformed": 1230}
    report = build_report(migrated.plan.to_dict(), evidence)
    assert report["actual"]["tokens"] == 70_000
    assert report["actual"]["texts_embedded"] == 2000
    lines = render_markdown(report).splitlines()
    assert (
        "| linear map: re-embedded top-10 kept (held-out) | 0.881 (minimum 0.85, 400 held-out "
        "of 2000 sampled; own document in top-10: 0.900 mapped vs 0.950 re-embedded) |"
    ) in lines
    assert "| vectors derived from the stored ones (no embedding) | 1230 |" in lines


def test_quantization_report(migrated: Migrated) -> None:
    plan = migrated.plan.to_dict()
    plan["spec"] = plan["spec"] | {"quantization": "scalar_int8"}
    plan["estimate"] = {
        "ram_before_bytes": 4 * 2**20,
        "target_ram_bytes": 2**20,
        "target_disk_bytes": 2**20,
    }
    text = render_quantization(plan)
    assert text.startswith("### Change the quantization of `articles_v1` (alias `articles`)?")
    assert "| quantization | none → scalar_int8 |" in text
    assert "| RAM of the vectors | 4.0 MiB → 1.0 MiB |" in text
    assert "| points written / embedding calls | 0 / 0 |" in text
