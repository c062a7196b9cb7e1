"""The run's report: one JSON document, rendered as markdown for the approver."""

from __future__ import annotations

from typing import Any


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def build_report(plan: dict[str, Any], evidence: dict[str, Any]) -> dict[str, Any]:
    return {
        "migration_id": plan["migration_id"],
        "alias": plan["alias"],
        "source_collection": plan["source"]["collection"],
        "target_collection": plan["target_collection"],
        "strategy": plan["strategy"],
        "reasons": plan["reasons"],
        "lineage": plan["target_lineage"],
        "evidence": evidence,
    }


def render_markdown(report: dict[str, Any]) -> str:
    ev = report["evidence"]
    bf = ev.get("backfill", {})
    rec = ev.get("reconciliation", {})
    sr = ev.get("self_retrieval", {})
    lineage = report["lineage"]
    skipped = ", ".join(f"{r}: {n}" for r, n in bf.get("skipped_by_reason", {}).items()) or "none"
    lines = [
        f"### Swap `{report['alias']}` to `{report['target_collection']}`?",
        "",
        f"Migration `{report['migration_id']}`: `{report['source_collection']}` → "
        f"`{report['target_collection']}` with **{lineage.get('provider')}/"
        f"{lineage.get('model')}** ({lineage.get('dimensions')}-d).",
        "",
        "| check | value |",
        "| --- | --- |",
        f"| source points | {ev.get('source_points')} |",
        f"| target points | {ev.get('target_points')} |",
        f"| missing / extra ids | {rec.get('missing', 0)} / {rec.get('extra', 0)} |",
        f"| skipped (recorded) | {bf.get('skipped', 0)} ({skipped}) |",
        f"| points without vector | {ev.get('points_without_vector')} |",
        f"| index | {ev.get('readiness')} |",
        f"| recall@{ev.get('k')} ANN vs exact | {_fmt(ev.get('recall_at_k'))} "
        f"(threshold {ev.get('recall_threshold')}, {ev.get('sample_queries')} queries) |",
        f"| own document at rank 1 (new model queries) | {_fmt(sr.get('hit_at_1'))} "
        f"(MRR {_fmt(sr.get('mrr'))}, {sr.get('queries') or 0} queries) |",
        f"| embedded / embedding requests | {bf.get('embedded')} / {bf.get('embed_requests')} |",
        "",
        *quality_lines(ev.get("quality") or {}),
        "**Plan:** " + " ".join(report.get("reasons", [])),
        "",
        f"Queries must then be embedded with `{lineage.get('model')}` as "
        f"{lineage.get('query_input')}. Approve to move the alias atomically; "
        f"`{report['source_collection']}` stays for rollback. Reject to leave everything as is.",
    ]
    return "\n".join(lines)


def quality_lines(quality: dict[str, Any]) -> list[str]:
    """The old-vs-new quality section of the report."""
    if not quality:
        return []
    if "skipped" in quality:
        return [f"**Quality:** not compared ({quality['skipped']}).", ""]
    if quality.get("labeled"):
        old, new = quality["old"], quality["new"]
        lines = [
            f"**Quality on {quality['queries']} labeled queries** (old model on the old "
            "collection vs new model on the new one):",
            "",
            "| metric | old | new |",
            "| --- | --- | --- |",
            *(f"| {m} | {_fmt(old[m])} | {_fmt(new[m])} |" for m in ("recall", "mrr", "ndcg10")),
            "",
        ]
        worst = quality.get("worst_regressions") or []
        if worst:
            lines += ["Queries that regressed most (nDCG@10 old → new):", ""]
            lines += [f"- {w['query']!r}: {w['old_ndcg10']} → {w['new_ndcg10']}" for w in worst]
            lines.append("")
        return lines
    old1, new1 = quality.get("old_top1_scores", {}), quality.get("new_top1_scores", {})
    return [
        f"**Old vs new top-{quality['k']} overlap** on {quality['queries']} sample queries: "
        f"{_fmt(quality.get('mean_overlap_at_k'))}. Top-1 score median moved from "
        f"{_fmt(old1.get('p50'))} to {_fmt(new1.get('p50'))}: re-tune score thresholds.",
        "",
    ]
