from __future__ import annotations

import json
from typing import Any

from include.qdrant_migration.report import build_report, render_markdown
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
