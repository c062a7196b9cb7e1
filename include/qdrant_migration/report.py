"""The run's report: one JSON document, rendered as markdown for the approver."""

from __future__ import annotations

from typing import Any


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _bytes(value: Any) -> str:
    if value is None:
        return "n/a"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover - the loop always returns


def _seconds(value: Any) -> str:
    if value is None:
        return "n/a"
    seconds = round(float(value))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _money(value: Any) -> str:
    if value is None:
        return "unknown (no price for this model)"
    return f"${float(value):,.4f}" if value < 1 else f"${float(value):,.2f}"


def actuals(plan: dict[str, Any], evidence: dict[str, Any]) -> dict[str, Any]:
    """What the run really spent, in the estimate's terms (backfill, catch-up, map sample)."""
    backfill = evidence.get("backfill") or {}
    catch_up = backfill.get("catch_up") or {}
    fitted = evidence.get("linear_map") or {}
    tokens = sum(int(part.get("tokens") or 0) for part in (backfill, catch_up, fitted))
    price = (plan.get("estimate") or {}).get("price_per_million_tokens")
    seconds = [v for v in (backfill.get("wall_seconds"), fitted.get("seconds")) if v is not None]
    return {
        "texts_embedded": int(backfill.get("embedded") or 0) + int(fitted.get("embedded") or 0),
        "texts_embedded_catch_up": int(catch_up.get("embedded") or 0),
        "vectors_copied": int(backfill.get("transformed") or 0),
        "tokens": tokens,
        "embed_requests": backfill.get("embed_requests"),
        "cost_usd": None if price is None else round(tokens * float(price) / 1e6, 8),
        "duration_s": round(sum(seconds), 1) if seconds else None,
    }


def build_report(plan: dict[str, Any], evidence: dict[str, Any]) -> dict[str, Any]:
    return {
        "migration_id": plan["migration_id"],
        "alias": plan["alias"],
        "source_collection": plan["source"]["collection"],
        "target_collection": plan["target_collection"],
        "strategy": plan["strategy"],
        "reasons": plan["reasons"],
        "lineage": plan["target_lineage"],
        "estimate": plan.get("estimate") or {},
        "actual": actuals(plan, evidence),
        "evidence": evidence,
    }


def _tokens_note(est: dict[str, Any]) -> str:
    how = "exact count" if est.get("tokens_exact") else "extrapolated"
    return f"{est.get('tokenizer')}, {how} from {est.get('token_sample')} sampled texts"


def _price_note(est: dict[str, Any]) -> str:
    price = est.get("price_per_million_tokens")
    if price is None:
        return "no price in the table"
    return f"${price}/1M tokens, prices of {est.get('prices_as_of')}: check before quoting"


def estimate_rows(est: dict[str, Any], actual: dict[str, Any] | None = None) -> list[str]:
    """The plan's numbers as table rows; with ``actual``, a third column beside them."""
    act = actual or {}
    rows = [
        ("texts embedded", est.get("texts_to_embed"), _with_catch_up(act)),
        ("vectors copied without embedding", est.get("vectors_copied"), act.get("vectors_copied")),
        ("tokens", f"{est.get('tokens')} ({_tokens_note(est)})", act.get("tokens")),
        ("embedding requests", est.get("embed_requests"), act.get("embed_requests")),
        ("cost", f"{_money(est.get('cost_usd'))} ({_price_note(est)})", _money_or_na(act)),
        (
            "duration",
            f"{_seconds(est.get('duration_s'))} ({est.get('duration_basis')})",
            _seconds(act.get("duration_s")) if act else None,
        ),
        (
            "disk: new data / peak while both exist",
            f"{_bytes(est.get('target_disk_bytes'))} / {_bytes(est.get('peak_disk_bytes'))}",
            None,
        ),
        ("RAM of the vectors and index", _bytes(est.get("target_ram_bytes")), None),
    ]
    if actual is None:
        return [f"| {name} | {planned} |" for name, planned, _ in rows]
    return [f"| {name} | {planned} | {_fmt(done)} |" for name, planned, done in rows]


def _with_catch_up(act: dict[str, Any]) -> str | None:
    if not act:
        return None
    extra = act.get("texts_embedded_catch_up") or 0
    return f"{act.get('texts_embedded')}" + (f" (+{extra} catch-up)" if extra else "")


def _money_or_na(act: dict[str, Any]) -> str | None:
    return _money(act.get("cost_usd")) if act else None


def render_plan(plan: dict[str, Any]) -> str:
    """The dry run's output: what a real run would do and cost. Nothing was written."""
    est = plan.get("estimate") or {}
    creates = ", ".join(f"`{name}`" for name in est.get("creates", [])) or "nothing"
    lines = [
        f"### Plan for alias `{plan['alias']}`: **{plan['strategy']}**",
        "",
        f"Migration `{plan['migration_id']}` of `{plan['source']['collection']}` "
        f"({est.get('points')} points, {plan['source']['size']}-d, "
        f"{plan['source']['distance']}).",
        "",
        *(f"- {reason}" for reason in plan["reasons"]),
        "",
        "| estimate | value |",
        "| --- | --- |",
        *estimate_rows(est),
        "",
        f"Would create: {creates}. Alias: {est.get('alias')}.",
    ]
    return "\n".join(lines)


def render_quantization(plan: dict[str, Any]) -> str:
    """The approval body of a quantization-only change."""
    est = plan.get("estimate") or {}
    src = plan["source"]
    wanted = plan["spec"].get("quantization")
    lines = [
        f"### Change the quantization of `{src['collection']}` (alias `{plan['alias']}`)?",
        "",
        *plan["reasons"],
        "",
        "| | value |",
        "| --- | --- |",
        f"| points | {src['points']} ({src['size']}-d, {src['distance']}) |",
        f"| quantization | {src.get('quantization')} → {wanted} |",
        f"| RAM of the vectors | {_bytes(est.get('ram_before_bytes'))} → "
        f"{_bytes(est.get('target_ram_bytes'))} |",
        f"| extra disk for quantized copies | {_bytes(est.get('target_disk_bytes'))} |",
        "| points written / embedding calls | 0 / 0 |",
        "",
        "Approve to update the collection's quantization in place (Qdrant re-quantizes in "
        "the background; searches keep working). Reject to leave everything as is.",
    ]
    return "\n".join(lines)


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
        *(
            [f"| vectors derived from the stored ones (no embedding) | {bf['transformed']} |"]
            if bf.get("transformed")
            else []
        ),
        *map_lines(ev.get("linear_map") or {}),
        "",
        *quality_lines(ev.get("quality") or {}),
        *plan_vs_actual_lines(report),
        "**Plan:** " + " ".join(report.get("reasons", [])),
        "",
        f"Queries must then be embedded with `{lineage.get('model')}` as "
        f"{lineage.get('query_input')}{_dimensions_note(report)}. Approve to move the alias "
        "atomically; "
        f"`{report['source_collection']}` stays for rollback. Reject to leave everything as is.",
    ]
    return "\n".join(lines)


def _dimensions_note(report: dict[str, Any]) -> str:
    lineage = report["lineage"]
    if report.get("strategy") != "matryoshka_truncation":
        return ""
    return f", asking for dimensions={lineage.get('dimensions')}"


def map_lines(fitted: dict[str, Any]) -> list[str]:
    """The linear map's retention, as a row of the checks table."""
    if not fitted:
        return []
    known = fitted.get("known_item") or {}
    return [
        f"| linear map: re-embedded top-{fitted.get('k')} kept (held-out) | "
        f"{_fmt(fitted.get('retention'))} (minimum {fitted.get('min_retention')}, "
        f"{fitted.get('held_out')} held-out of {fitted.get('sample')} sampled; own document "
        f"in top-{fitted.get('k')}: {_fmt(known.get('mapped_recall'))} mapped vs "
        f"{_fmt(known.get('reembedded_recall'))} re-embedded) |"
    ]


def plan_vs_actual_lines(report: dict[str, Any]) -> list[str]:
    est = report.get("estimate") or {}
    if not est:
        return []
    return [
        "**Plan vs actual:**",
        "",
        "| | plan | actual |",
        "| --- | --- | --- |",
        *estimate_rows(est, report.get("actual") or {}),
        "",
    ]


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
