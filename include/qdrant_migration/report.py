"""The run's report: typed evidence, rendered as markdown for the approver.

It is built once, by the task after ``recall_check``, from the plan, the backfill and
catch-up results and the checks; the approval shows its markdown and the state store keeps
its JSON (:meth:`Report.to_dict`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from include.qdrant_migration.checks.quality import Quality, SelfRetrieval
from include.qdrant_migration.checks.recall import RecallResult
from include.qdrant_migration.linear_map import MapSummary
from include.qdrant_migration.plan import Estimate, Plan
from include.qdrant_migration.spec import Strategy
from include.qdrant_migration.sync.backfill import BackfillSummary
from include.qdrant_migration.sync.catchup import CatchUpResult


def _fmt(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _bytes(value: float | None) -> str:
    if value is None:
        return "n/a"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover - the loop always returns


def _seconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    seconds = round(float(value))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _money(value: float | None) -> str:
    if value is None:
        return "unknown (no price for this model)"
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


@dataclass(frozen=True)
class Actuals:
    """What the run really spent, in the estimate's terms (backfill, catch-up, map sample)."""

    texts_embedded: int
    texts_embedded_catch_up: int
    vectors_copied: int
    tokens: int
    embed_requests: int
    cost_usd: float | None
    duration_s: float | None


@dataclass(frozen=True)
class Evidence:
    """Everything the approver is shown, measured."""

    recall: RecallResult
    self_retrieval: SelfRetrieval
    quality: Quality
    backfill: BackfillSummary
    #: The catch-up passes before the checks, added up.
    catch_up: CatchUpResult | None = None
    #: What each pass found: the last one is the lag the checks started from.
    catch_up_changes: list[int] = field(default_factory=list)
    linear_map: MapSummary | None = None


@dataclass(frozen=True)
class Report:
    plan: Plan
    evidence: Evidence

    @property
    def actual(self) -> Actuals:
        backfill, catch_up = self.evidence.backfill, self.evidence.catch_up
        fitted = self.evidence.linear_map
        tokens = backfill.tokens + (catch_up.tokens if catch_up else 0)
        tokens += fitted.tokens if fitted else 0
        price = self.plan.estimate.price_per_million_tokens
        spans = (backfill.wall_seconds, fitted.seconds if fitted else None)
        seconds = [s for s in spans if s is not None]
        return Actuals(
            texts_embedded=backfill.embedded + (fitted.embedded if fitted else 0),
            texts_embedded_catch_up=catch_up.embedded if catch_up else 0,
            vectors_copied=backfill.transformed,
            tokens=tokens,
            embed_requests=backfill.embed_requests,
            cost_usd=None if price is None else round(tokens * price / 1e6, 8),
            duration_s=round(sum(seconds), 1) if seconds else None,
        )

    @property
    def markdown(self) -> str:
        return render_markdown(self)

    def to_dict(self) -> dict[str, Any]:
        """The report as stored in the state store and passed as an XCom."""
        evidence = dataclasses.asdict(self.evidence)
        return {
            "migration_id": self.plan.migration_id,
            "alias": self.plan.alias,
            "source_collection": self.plan.source.collection,
            "target_collection": self.plan.target_collection,
            "strategy": self.plan.strategy.value,
            "reasons": self.plan.reasons,
            "lineage": dict(self.plan.target_lineage),
            "estimate": dataclasses.asdict(self.plan.estimate),
            "actual": dataclasses.asdict(self.actual),
            "evidence": evidence,
            "markdown": self.markdown,
        }


def _tokens_note(est: Estimate) -> str:
    how = "exact count" if est.tokens_exact else "extrapolated"
    return f"{est.tokenizer}, {how} from {est.token_sample} sampled texts"


def _price_note(est: Estimate) -> str:
    price = est.price_per_million_tokens
    if price is None:
        return "no price in the table"
    return f"${price}/1M tokens, prices of {est.prices_as_of}: check before quoting"


def estimate_rows(est: Estimate, actual: Actuals | None = None) -> list[str]:
    """The plan's numbers as table rows; with ``actual``, a third column beside them."""
    rows: list[tuple[str, object, object]] = [
        ("texts embedded", est.texts_to_embed, actual and _with_catch_up(actual)),
        ("vectors copied without embedding", est.vectors_copied, actual and actual.vectors_copied),
        ("tokens", f"{est.tokens} ({_tokens_note(est)})", actual and actual.tokens),
        ("embedding requests", est.embed_requests, actual and actual.embed_requests),
        (
            "cost",
            f"{_money(est.cost_usd)} ({_price_note(est)})",
            actual and _money(actual.cost_usd),
        ),
        (
            "duration",
            f"{_seconds(est.duration_s)} ({est.duration_basis})",
            actual and _seconds(actual.duration_s),
        ),
        (
            "disk: new data / peak while both exist",
            f"{_bytes(est.target_disk_bytes)} / {_bytes(est.peak_disk_bytes)}",
            None,
        ),
        ("RAM of the vectors and index", _bytes(est.target_ram_bytes), None),
    ]
    if actual is None:
        return [f"| {name} | {planned} |" for name, planned, _ in rows]
    return [f"| {name} | {planned} | {_fmt(done)} |" for name, planned, done in rows]


def _with_catch_up(act: Actuals) -> str:
    extra = act.texts_embedded_catch_up
    return f"{act.texts_embedded}" + (f" (+{extra} catch-up)" if extra else "")


def render_plan(plan: Plan) -> str:
    """The dry run's output: what a real run would do and cost. Nothing was written."""
    est = plan.estimate
    creates = ", ".join(f"`{name}`" for name in est.creates) or "nothing"
    lines = [
        f"### Plan for alias `{plan.alias}`: **{plan.strategy.value}**",
        "",
        f"Migration `{plan.migration_id}` of `{plan.source.collection}` "
        f"({est.points} points, {plan.source.size}-d, {plan.source.distance}).",
        "",
        *(f"- {reason}" for reason in plan.reasons),
        "",
        "| estimate | value |",
        "| --- | --- |",
        *estimate_rows(est),
        "",
        f"Would create: {creates}. Alias: {est.alias_change}.",
    ]
    return "\n".join(lines)


def render_quantization(plan: Plan) -> str:
    """The approval body of a quantization-only change."""
    est = plan.estimate
    src = plan.source
    lines = [
        f"### Change the quantization of `{src.collection}` (alias `{plan.alias}`)?",
        "",
        *plan.reasons,
        "",
        "| | value |",
        "| --- | --- |",
        f"| points | {src.points} ({src.size}-d, {src.distance}) |",
        f"| quantization | {src.quantization} → {plan.spec.quantization} |",
        f"| RAM of the vectors | {_bytes(est.ram_before_bytes)} → {_bytes(est.target_ram_bytes)} |",
        f"| extra disk for quantized copies | {_bytes(est.target_disk_bytes)} |",
        "| points written / embedding calls | 0 / 0 |",
        "",
        "Approve to update the collection's quantization in place (Qdrant re-quantizes in "
        "the background; searches keep working). Reject to leave everything as is.",
    ]
    return "\n".join(lines)


def _recall_row(recall: RecallResult) -> str:
    value = (
        "n/a: nothing to measure (no points with a vector)"
        if recall.recall_at_k is None
        else f"{_fmt(recall.recall_at_k)}"
    )
    return (
        f"| recall@{recall.k} ANN vs exact | {value} "
        f"(threshold {recall.threshold}, {recall.sample_queries} queries) |"
    )


def render_markdown(report: Report) -> str:
    plan, ev = report.plan, report.evidence
    bf, rec, sr = ev.backfill, ev.recall.completeness, ev.self_retrieval
    lineage = plan.target_lineage
    skipped = ", ".join(f"{r}: {n}" for r, n in bf.skipped_by_reason.items()) or "none"
    lines = [
        f"### Swap `{plan.alias}` to `{plan.target_collection}`?",
        "",
        f"Migration `{plan.migration_id}`: `{plan.source.collection}` → "
        f"`{plan.target_collection}` with **{lineage.get('provider')}/"
        f"{lineage.get('model')}** ({lineage.get('dimensions')}-d).",
        "",
        "| check | value |",
        "| --- | --- |",
        f"| source points | {rec.source_points} |",
        f"| target points | {rec.target_points} |",
        *_catch_up_rows(ev),
        f"| changed since the last catch-up (lag) / damaged | {rec.lag} / {rec.damaged} |",
        f"| skipped (recorded) | {bf.skipped} ({skipped}) |",
        f"| points without vector | {rec.points_without_vector} |",
        f"| index | {ev.recall.readiness} |",
        _recall_row(ev.recall),
        f"| own document at rank 1 (new model queries) | {_fmt(sr.hit_at_1)} "
        f"(MRR {_fmt(sr.mrr)}, {sr.queries} queries) |",
        f"| embedded / embedding requests | {bf.embedded} / {bf.embed_requests} |",
        *(
            [f"| vectors derived from the stored ones (no embedding) | {bf.transformed} |"]
            if bf.transformed
            else []
        ),
        *map_lines(ev.linear_map),
        "",
        *quality_lines(ev.quality),
        *plan_vs_actual_lines(report),
        "**Plan:** " + " ".join(plan.reasons),
        "",
        f"Queries must then be embedded with `{lineage.get('model')}` as "
        f"{lineage.get('query_input')}{_dimensions_note(plan)}. Approve to move the alias "
        "atomically; "
        f"`{plan.source.collection}` stays for rollback. Reject to leave everything as is.",
    ]
    return "\n".join(lines)


def _catch_up_rows(ev: Evidence) -> list[str]:
    if ev.catch_up is None:
        return []
    passes = ev.catch_up_changes or [ev.catch_up.changes]
    return [
        f"| catch-up of live writes | {len(passes)} pass{'es' if len(passes) > 1 else ''}, "
        "changes per pass "
        f"{' → '.join(map(str, passes))} ({ev.catch_up.mode}) |"
    ]


def _dimensions_note(plan: Plan) -> str:
    if plan.strategy is not Strategy.MATRYOSHKA_TRUNCATION:
        return ""
    return f", asking for dimensions={plan.target_lineage.get('dimensions')}"


def map_lines(fitted: MapSummary | None) -> list[str]:
    """The linear map's retention, as a row of the checks table."""
    if fitted is None:
        return []
    known = fitted.known_item
    return [
        f"| linear map: re-embedded top-{fitted.k} kept (held-out) | "
        f"{_fmt(fitted.retention)} (minimum {fitted.min_retention}, "
        f"{fitted.held_out} held-out of {fitted.sample} sampled; own document "
        f"in top-{fitted.k}: {_fmt(known.get('mapped_recall'))} mapped vs "
        f"{_fmt(known.get('reembedded_recall'))} re-embedded) |"
    ]


def plan_vs_actual_lines(report: Report) -> list[str]:
    return [
        "**Plan vs actual:**",
        "",
        "| | plan | actual |",
        "| --- | --- | --- |",
        *estimate_rows(report.plan.estimate, report.actual),
        "",
    ]


def quality_lines(quality: Quality) -> list[str]:
    """The old-vs-new quality section of the report."""
    if quality.skipped:
        return [f"**Quality:** not compared ({quality.skipped}).", ""]
    if quality.labeled:
        old, new = quality.old, quality.new
        lines = [
            f"**Quality on {quality.queries} labeled queries** (old model on the old "
            "collection vs new model on the new one):",
            "",
            "| metric | old | new |",
            "| --- | --- | --- |",
            *(f"| {m} | {_fmt(old[m])} | {_fmt(new[m])} |" for m in ("recall", "mrr", "ndcg10")),
            "",
        ]
        if quality.worst_regressions:
            lines += ["Queries that regressed most (nDCG@10 old → new):", ""]
            lines += [
                f"- {w.query!r}: {w.old_ndcg10} → {w.new_ndcg10}" for w in quality.worst_regressions
            ]
            lines.append("")
        return lines
    if not quality.queries:
        return ["**Quality:** not compared (no sample text to query with).", ""]
    old1, new1 = quality.old_top1_scores, quality.new_top1_scores
    return [
        f"**Old vs new top-{quality.k} overlap** on {quality.queries} sample queries: "
        f"{_fmt(quality.mean_overlap_at_k)}. Top-1 score median moved from "
        f"{_fmt(old1.get('p50'))} to {_fmt(new1.get('p50'))}: re-tune score thresholds.",
        "",
    ]
