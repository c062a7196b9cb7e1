"""The run's report: typed evidence, rendered as markdown for the approver.

It is built once, by the task after ``recall_check``, from the plan, the backfill and
catch-up results and the checks; the approval shows its markdown and the state store keeps
it (:meth:`Report.record`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from include.qdrant_migration import codec
from include.qdrant_migration.checks.quality import (
    REPLAYED,
    Quality,
    SelfRetrieval,
    definitions,
    metric_names,
)
from include.qdrant_migration.checks.ranking import BINS, QUANTILES, Distribution, Interval
from include.qdrant_migration.checks.recall import RecallResult
from include.qdrant_migration.checks.traffic import TRUNCATE, ChangedQuery, Judged, Replay
from include.qdrant_migration.linear_map import MapSummary
from include.qdrant_migration.phases import ORDER, Timeline, actual_phases
from include.qdrant_migration.plan import Estimate, Plan
from include.qdrant_migration.spec import Strategy, batch_unavailable
from include.qdrant_migration.state import STATE_COLLECTION, ReportRecord
from include.qdrant_migration.strategies import strategy_of
from include.qdrant_migration.sync.backfill import BackfillSummary
from include.qdrant_migration.sync.catchup import CatchUpResult
from include.qdrant_migration.sync.pacing import PacingSummary


def _fmt(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def human_bytes(value: float | None) -> str:
    if value is None:
        return "n/a"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover - the loop always returns


def human_seconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    seconds = round(float(value))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _batch_money(plan: Plan) -> str:
    if batch_unavailable(plan.spec.provider, plan.spec.model) is not None:
        return "not available"
    return _money(plan.estimate.batch_cost_usd)


def _money(value: float | None) -> str:
    if value is None:
        return "unknown (no price for this model)"
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


@dataclass(frozen=True)
class Actuals:
    """What a run really spent, in the estimate's terms (backfill, catch-up, map sample).

    ``vectors_derived``: vectors computed from the stored ones (linear map, truncation).
    """

    texts_embedded: int
    texts_embedded_catch_up: int
    vectors_derived: int
    tokens: int
    embed_requests: int
    cost_usd: float | None
    duration_s: float | None
    #: The source's search latency the backfill's probes measured (None: no probes).
    source_search: str | None = None


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
    #: The first ids of the recorded skips, per reason (the full list is in the state store).
    skipped_examples: dict[str, list[Any]] = field(default_factory=dict)
    #: When this run started (ISO 8601): its duration runs from here to the report.
    run_started_at: str | None = None
    #: When the report was made.
    reported_at: str | None = None
    #: When each phase of the run ended (the duration by phase, against the plan's).
    timeline: Timeline | None = None
    #: The query log replayed on both models (None: no query log).
    replay: Replay | None = None


@dataclass(frozen=True)
class Report:
    plan: Plan
    evidence: Evidence
    #: The gates that failed, each with what to do (empty: every check passed).
    failures: list[str] = field(default_factory=list)

    def _fitted_this_run(self) -> bool:
        fitted, started = self.evidence.linear_map, self.evidence.run_started_at
        return fitted is not None and (started is None or fitted.fitted_at >= started)

    def _cost(self, tokens: int) -> float | None:
        price = self.plan.estimate.price_per_million_tokens
        return None if price is None else round(tokens * price / 1e6, 8)

    @property
    def actual(self) -> Actuals:
        """What this run did (a run that continues a migration leaves out earlier runs)."""
        backfill, catch_up = self.evidence.backfill, self.evidence.catch_up
        fitted = self.evidence.linear_map if self._fitted_this_run() else None
        tokens = backfill.this_run("tokens") + (catch_up.tokens if catch_up else 0)
        tokens += fitted.tokens if fitted else 0
        return Actuals(
            texts_embedded=backfill.this_run("embedded") + (fitted.embedded if fitted else 0),
            texts_embedded_catch_up=catch_up.embedded if catch_up else 0,
            vectors_derived=backfill.this_run("transformed"),
            tokens=tokens,
            embed_requests=backfill.this_run("requests") + (fitted.requests if fitted else 0),
            cost_usd=self._cost(tokens),
            duration_s=self._duration(),
            source_search=probe_summary(backfill.pacing),
        )

    @property
    def earlier(self) -> Actuals | None:
        """What earlier runs of the same migration did; None when this run did it all."""
        done = self.evidence.backfill.earlier
        fitted = self.evidence.linear_map if not self._fitted_this_run() else None
        if not any(done.values()) and fitted is None:
            return None
        tokens = done.get("tokens", 0) + (fitted.tokens if fitted else 0)
        return Actuals(
            texts_embedded=done.get("embedded", 0) + (fitted.embedded if fitted else 0),
            texts_embedded_catch_up=0,
            vectors_derived=done.get("transformed", 0),
            tokens=tokens,
            embed_requests=done.get("requests", 0) + (fitted.requests if fitted else 0),
            cost_usd=self._cost(tokens),
            duration_s=None,
        )

    def _duration(self) -> float | None:
        """From the run's start to the report: every task counts (checks, evaluation too)."""
        ev = self.evidence
        if ev.run_started_at and ev.reported_at:
            started = datetime.fromisoformat(ev.run_started_at)
            ended = datetime.fromisoformat(ev.reported_at)
            return round(max((ended - started).total_seconds(), 0.0), 1)
        spans = (ev.backfill.wall_seconds, ev.linear_map.seconds if ev.linear_map else None)
        seconds = [s for s in spans if s is not None]
        return round(sum(seconds), 1) if seconds else None

    @property
    def markdown(self) -> str:
        return render_markdown(self)

    def record(self, run_id: str | None = None) -> ReportRecord:
        """The report as the state store keeps it (and the build_report XCom, encoded)."""
        earlier = self.earlier
        return ReportRecord(
            migration_id=self.plan.migration_id,
            strategy=self.plan.strategy,
            markdown=self.markdown,
            alias=self.plan.alias,
            source_collection=self.plan.source.collection,
            target_collection=self.plan.target_collection,
            reasons=list(self.plan.reasons),
            lineage=self.plan.target_lineage,
            estimate=self.plan.estimate,
            actual=codec.encode(self.actual),
            earlier_runs=codec.encode(earlier) if earlier is not None else None,
            failures=list(self.failures),
            evidence=codec.encode(self.evidence),
            run_id=run_id,
        )


def _tokens_note(est: Estimate) -> str:
    how = "exact count" if est.tokens_exact else "extrapolated"
    return f"{est.tokenizer}, {how} from {est.token_sample} sampled texts"


def _price_note(est: Estimate) -> str:
    price = est.price_per_million_tokens
    if price is None:
        return "no price in the table"
    return f"${price}/1M tokens, prices of {est.prices_as_of}: check before quoting"


def estimate_rows(
    plan: Plan, actual: Actuals | None = None, earlier: Actuals | None = None
) -> list[str]:
    """The plan's numbers as table rows; with ``actual`` (and ``earlier``), columns beside them."""
    est = plan.estimate

    def done(pick: str) -> tuple[object, object]:
        values: list[object] = []
        for act in (actual, earlier):
            if act is None:
                values.append(None)
            elif pick == "texts":
                values.append(_with_catch_up(act))
            elif pick == "cost":
                values.append(_money(act.cost_usd))
            elif pick == "duration":
                values.append(human_seconds(act.duration_s) if act.duration_s is not None else None)
            else:
                values.append(getattr(act, pick))
        return values[0], values[1]

    rows: list[tuple[str, object, tuple[object, object]]] = [
        ("texts embedded", est.texts_to_embed, done("texts")),
        (strategy_of(plan).derived_label, est.vectors_copied, done("vectors_derived")),
        ("tokens", f"{est.tokens} ({_tokens_note(est)})", done("tokens")),
        ("embedding requests", est.embed_requests, done("embed_requests")),
        ("cost", f"{_money(est.cost_usd)} ({_price_note(est)})", done("cost")),
        (
            "embedding mode: online / batch",
            f"{_money(est.cost_usd)} / {_batch_money(plan)}: "
            f"**{est.recommended_mode}** recommended ({est.mode_reason}); this run: "
            f"{plan.spec.embedding_mode}",
            (None, None),
        ),
        ("duration", f"{_duration_estimate(est)} ({est.duration_basis})", done("duration")),
        (
            "disk: new data / peak while both exist",
            f"{human_bytes(est.target_disk_bytes)} / {human_bytes(est.peak_disk_bytes)}",
            (None, None),
        ),
        ("RAM of the vectors and index", human_bytes(est.target_ram_bytes), (None, None)),
    ]
    rows += _optional_rows(plan)
    if strategy_of(plan).rebuilds:
        name, planned, _ = _budget_row(plan)
        rows.append((name, planned, done("source_search")))
    if actual is None:
        return [f"| {name} | {planned} |" for name, planned, _ in rows]
    if earlier is None:
        return [f"| {name} | {planned} | {_fmt(now)} |" for name, planned, (now, _) in rows]
    return [
        f"| {name} | {planned} | {_fmt(now)} | {_fmt(before)} |"
        for name, planned, (now, before) in rows
    ]


def _optional_rows(plan: Plan) -> list[tuple[str, object, tuple[object, object]]]:
    """Rows only some plans have: a linear map's preview, both strategies' disk."""
    est = plan.estimate
    rows: list[tuple[str, object, tuple[object, object]]] = []
    if plan.strategy is Strategy.LINEAR_MAP and est.map_preview_texts:
        rows.append(
            (
                "linear map: retention previewed / embedding cost saved",
                f"{_fmt(est.map_retention_preview)} on {est.map_preview_texts} texts (minimum "
                f"{plan.spec.min_map_retention}; a fit on {plan.spec.map_sample_size} texts "
                f"usually keeps more) / {_money(est.map_saved_usd)}",
                (None, None),
            )
        )
    if est.replay_queries:
        rows.append(("query-log replay (quality evidence)", _replay_estimate(est), (None, None)))
    if len(est.peak_disk_by_strategy) > 1:
        both = ", ".join(
            f"{name} {human_bytes(disk)}"
            for name, disk in sorted(est.peak_disk_by_strategy.items())
        )
        rows.append(("peak disk by strategy (same data)", both, (None, None)))
    return rows


def _ms(value: object) -> str:
    return "?" if value is None else f"{value:g}"


def at_rest_summary(est: Estimate) -> str:
    """The source's search latency before the migration (the plan's probes)."""
    at_rest = est.source_search_ms
    if at_rest.get("embedded"):
        return "not probed (embedded store: no application searches it beside the migration)"
    if not at_rest.get("probes"):
        return "not measured (no vectors to probe with)"
    return (
        f"p50 {_ms(at_rest.get('p50'))} / p99 {_ms(at_rest.get('p99'))} ms "
        f"({at_rest['probes']} probe queries)"
    )


def probe_summary(pacing: PacingSummary) -> str | None:
    """What the backfill's probe queries of the source measured, and what pacing did."""
    if not pacing.probes:
        return None
    p = pacing.histogram.percentiles()
    waited = (
        f"; writes waited {human_seconds(pacing.waited_s)} for the budget"
        if pacing.waited_s >= 1
        else ""
    )
    slowed = f", slowed down {pacing.backoffs} times" if pacing.backoffs else ""
    failed = f", {pacing.failed_probes} failed" if pacing.failed_probes else ""
    return (
        f"p50 {_ms(p['p50'])} / p95 {_ms(p['p95'])} / p99 {_ms(p['p99'])} ms "
        f"({pacing.probes} probe queries{failed}){waited}{slowed}"
    )


def _budget_row(plan: Plan) -> tuple[str, object, tuple[object, object]]:
    """The Qdrant budget, the source's search latency at rest, and a target it cannot meet."""
    budget, est = plan.spec.budget, plan.estimate
    at_rest = est.source_search_ms.get("p99")
    warn = (
        f" **max_search_p99_ms {budget.max_search_p99_ms:g} is at or below the p99 at rest: "
        "the adaptive mode will write at its floor the whole time**"
        if budget.max_search_p99_ms and at_rest and budget.max_search_p99_ms <= at_rest
        else ""
    )
    return (
        "Qdrant budget; source search latency (at rest / during the backfill)",
        f"{budget.describe()}; at rest {at_rest_summary(est)}{warn}",
        (None, None),
    )


def _search_rows(plan: Plan, pacing: PacingSummary) -> list[str]:
    """The source's searches while the backfill wrote, beside the same probes at rest."""
    during = probe_summary(pacing)
    if during is None:
        return []
    return [
        f"| source search latency during the backfill (probe queries; at rest: "
        f"{at_rest_summary(plan.estimate)}) | {during} |"
    ]


def _duration_estimate(est: Estimate) -> str:
    if est.duration_s is None or not est.duration_max_s or est.duration_max_s <= est.duration_s:
        return human_seconds(est.duration_s)
    return f"{human_seconds(est.duration_s)} to {human_seconds(est.duration_max_s)}"


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
        *estimate_rows(plan),
        "",
        *planned_phase_lines(plan),
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
        f"| RAM of the vectors | {human_bytes(est.ram_before_bytes)} → "
        f"{human_bytes(est.target_ram_bytes)} |",
        f"| extra disk for quantized copies | {human_bytes(est.target_disk_bytes)} |",
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
    if report.failures:
        head = [
            f"### Migration `{plan.migration_id}` failed its checks: the alias stays on "
            f"`{plan.source.collection}`",
            "",
            *(f"- **{failure}**" for failure in report.failures),
        ]
    else:
        head = [f"### Swap `{plan.alias}` to {_new_side(plan)}?"]
    empty = (
        [
            "",
            "**The source is empty: there was nothing to measure.** No recall, self-retrieval "
            "or quality number below says anything about the new model; approving moves the "
            "alias to an empty collection configured for it.",
        ]
        if rec.source_points == 0
        else []
    )
    lines = [
        *head,
        *empty,
        "",
        f"Migration `{plan.migration_id}`: {_old_side(plan)} → "
        f"{_new_side(plan)} with **{lineage.get('provider')}/"
        f"{lineage.get('model')}** ({lineage.get('dimensions')}-d).",
        "",
        "| check | value |",
        "| --- | --- |",
        f"| source points | {rec.source_points} |",
        f"| target points | {rec.target_points} |",
        *_catch_up_rows(ev),
        f"| changed since the last catch-up (lag) / damaged | {rec.lag} / {rec.damaged} |",
        *_skipped_rows(plan, ev),
        f"| points without vector | {rec.points_without_vector} |",
        f"| index | {ev.recall.readiness} |",
        _recall_row(ev.recall),
        _self_retrieval_row(sr),
        f"| embedded / embedding requests (this run) | {report.actual.texts_embedded} / "
        f"{report.actual.embed_requests} |",
        *([f"| {strategy_of(plan).derived_label} | {bf.transformed} |"] if bf.transformed else []),
        *_search_rows(plan, bf.pacing),
        *map_lines(ev.linear_map),
        "",
        *quality_lines(ev.quality),
        *replay_lines(ev.replay, plan),
        *plan_vs_actual_lines(report),
        "**Plan:** " + " ".join(plan.reasons),
        "",
        _closing(report),
    ]
    return "\n".join(lines)


def _closing(report: Report) -> str:
    plan, lineage = report.plan, report.plan.target_lineage
    if report.failures:
        return (
            f"Nothing was switched: the alias stays on `{plan.source.collection}`. "
            f"`{plan.target_collection}` is left as it is for inspection; retire the migration "
            f"(`qdrant_migration_lifecycle`, action `retire`, migration id "
            f"`{plan.migration_id}`) to delete it."
        )
    return (
        f"Queries must then be embedded with `{lineage.get('model')}` as "
        f"{lineage.get('query_input')}{strategy_of(plan).query_note()}. {_approve_note(plan)} "
        "Reject to leave everything as is."
    )


def _old_side(plan: Plan) -> str:
    return strategy_of(plan).old_side()


def _new_side(plan: Plan) -> str:
    return strategy_of(plan).new_side()


def _approve_note(plan: Plan) -> str:
    return strategy_of(plan).approve_note()


def _self_retrieval_row(sr: SelfRetrieval) -> str:
    if not sr.queries:
        return "| own document at rank 1 (new model queries) | n/a: nothing to measure |"
    return (
        f"| own document at rank 1 (new model queries) | {_fmt(sr.hit_at_1)} "
        f"(MRR@{sr.k} {_fmt(sr.mrr_at_k)}, {sr.queries} queries) |"
    )


#: Ids shown per skip reason; the rest are in the state store.
SKIPPED_SHOWN = 5


def _skipped_rows(plan: Plan, ev: Evidence) -> list[str]:
    bf = ev.backfill
    if not bf.skipped_by_reason:
        return ["| skipped (recorded) | 0 |"]
    rows = [f"| skipped (recorded) | {bf.skipped} |"]
    for reason, count in sorted(bf.skipped_by_reason.items(), key=lambda r: -r[1]):
        ids = ev.skipped_examples.get(reason, [])[:SKIPPED_SHOWN]
        shown = ", ".join(map(str, ids)) + (", ..." if count > len(ids) else "")
        rows.append(f"| &nbsp;&nbsp;{reason} | {count} (ids {shown or 'n/a'}) |")
    rows.append(
        f"| &nbsp;&nbsp;full list | records of kind `skip` with migration_id "
        f"`{plan.migration_id}` in collection `{STATE_COLLECTION}` |"
    )
    return rows


def _catch_up_rows(ev: Evidence) -> list[str]:
    if ev.catch_up is None:
        return []
    passes = ev.catch_up_changes or [ev.catch_up.changes]
    return [
        f"| catch-up of live writes | {len(passes)} pass{'es' if len(passes) > 1 else ''}, "
        "changes per pass "
        f"{' → '.join(map(str, passes))} ({ev.catch_up.mode}) |"
    ]


def map_lines(fitted: MapSummary | None) -> list[str]:
    """The linear map's retention, as a row of the checks table."""
    if fitted is None:
        return []
    known = fitted.known_item
    query = fitted.held_out_query or "a piece of the document"
    rows = [
        f"| linear map ({fitted.kind}, {fitted.setting or 'ridge'}): retention | "
        f"{_fmt(fitted.retention)} (minimum {fitted.min_retention}; {fitted.held_out} held-out "
        f"documents searched among {fitted.pool or fitted.sample} sampled) |",
        f"| linear map: own document in top-{fitted.k} ({query} as the query) | "
        f"{_fmt(known.get('mapped_recall'))} mapped vs "
        f"{_fmt(known.get('reembedded_recall'))} re-embedded vs "
        f"{_fmt(known.get('old_recall'))} with the old model |",
    ]
    if fitted.eval_ndcg10_mapped is not None:
        rows.append(
            f"| linear map: nDCG@10 on {fitted.eval_queries} evaluation queries | "
            f"{_fmt(fitted.eval_ndcg10_mapped)} mapped vs "
            f"{_fmt(fitted.eval_ndcg10_reembedded)} re-embedded (tolerance "
            f"{fitted.quality_tolerance}) |"
        )
    return rows


def plan_vs_actual_lines(report: Report) -> list[str]:
    earlier = report.earlier
    if earlier is None:
        header = ["| | plan | actual (this run) |", "| --- | --- | --- |"]
        note: list[str] = []
    else:
        header = [
            "| | plan | this run | earlier runs |",
            "| --- | --- | --- | --- |",
        ]
        note = [
            "This run continues a migration earlier runs started: the plan covers the whole "
            "migration, the last two columns split what was done between them.",
            "",
        ]
    return [
        "**Plan vs actual:**",
        "",
        *header,
        *estimate_rows(report.plan, report.actual, earlier),
        "",
        *note,
        *phase_lines(report),
    ]


def phase_lines(report: Report) -> list[str]:
    """The duration phase by phase: the plan's range, what this run took, and the basis."""
    planned = {p.name: p for p in report.plan.estimate.phases}
    timeline = report.evidence.timeline
    took = actual_phases(timeline) if timeline is not None else {}
    if not planned:
        return []
    rows = []
    for name in ORDER:
        phase = planned.get(name)
        if phase is None and name not in took:
            continue
        plan_text = "n/a" if phase is None else _range(phase.seconds, phase.max_seconds)
        actual = human_seconds(took[name]) if name in took else "n/a"
        rows.append(f"| {name} | {plan_text} | {actual} | {phase.basis if phase else ''} |")
    total_took = sum(took.values()) if took else None
    est = report.plan.estimate
    return [
        "**Duration by phase** (up to this report; the approval's wait is a person's and is "
        "not estimated, the swap comes after it):",
        "",
        "| phase | plan | actual | how the plan was made |",
        "| --- | --- | --- | --- |",
        *rows,
        f"| **total** | {_range(est.duration_s, est.duration_max_s)} | "
        f"{human_seconds(total_took)} | |",
        "",
    ]


def planned_phase_lines(plan: Plan) -> list[str]:
    """The dry run's duration, phase by phase, with how each was estimated."""
    est = plan.estimate
    if not est.phases:
        return []
    return [
        "**Duration by phase** (up to the report; the approval's wait is not estimated, the "
        "swap comes after it; a busy worker, a provider's rate limit or writes arriving "
        "during the run make each phase slower):",
        "",
        "| phase | estimate | how |",
        "| --- | --- | --- |",
        *(f"| {p.name} | {_range(p.seconds, p.max_seconds)} | {p.basis} |" for p in est.phases),
        f"| **total** | {_range(est.duration_s, est.duration_max_s)} | |",
        "",
    ]


def _range(low: float | None, high: float | None) -> str:
    if low is None:
        return "unknown"
    if high is None or high <= low:
        return human_seconds(low)
    return f"{human_seconds(low)} to {human_seconds(high)}"


def _metric_label(key: str) -> str:
    """``mrr@10`` -> ``MRR@10``, ``ndcg@10`` -> ``nDCG@10``."""
    name, _, k = key.partition("@")
    return {"mrr": "MRR", "ndcg": "nDCG"}.get(name, name) + f"@{k}"


def quality_lines(quality: Quality) -> list[str]:
    """The old-vs-new quality section of the report."""
    if quality.skipped == REPLAYED:
        return []  # the replay's section says it all
    if quality.skipped:
        return [f"**Quality:** not compared ({quality.skipped}).", ""]
    if quality.labeled:
        old, new = quality.old, quality.new
        hybrid = quality.hybrid_old or quality.hybrid_new
        columns = ["old", "new"]
        tables = [old, new]
        if hybrid:
            columns += ["old hybrid", "new hybrid"]
            tables += [quality.hybrid_old, quality.hybrid_new]
        lines = [
            f"**Quality on {quality.queries} labeled queries** (old model on the old "
            "collection vs new model on the new one):",
            "",
            "| metric | " + " | ".join(columns) + " |",
            "| --- |" + " --- |" * len(columns),
            *(
                f"| {_metric_label(m)} | " + " | ".join(_fmt(t.get(m)) for t in tables) + " |"
                for m in metric_names(quality.k)
            ),
            "",
            *(f"- {d}" for d in definitions(quality.k)),
            *(
                [
                    f"- hybrid: the dense results fused by reciprocal rank (RRF) with BM25 "
                    f"search on sparse vector {quality.hybrid_vector!r} ('n/a': that side has "
                    "no such vector)"
                ]
                if hybrid
                else []
            ),
            "",
        ]
        if quality.worst_regressions:
            lines += ["Queries that regressed most (nDCG@10 old → new):", ""]
            lines += [
                f"- {w.query!r}: {w.old_ndcg_at_10} → {w.new_ndcg_at_10}"
                for w in quality.worst_regressions
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


# -- the query-log replay ------------------------------------------------------------------


def _replay_estimate(est: Estimate) -> str:
    """The replay's and the judge's share of the plan: what they embed, call and cost."""
    said = (
        f"{est.replay_queries} queries embedded by both models ({est.replay_tokens} tokens, "
        f"{_money(est.replay_cost_usd)})"
    )
    if est.judge_calls:
        price = (
            f"${est.judge_price_per_1k:g} per 1,000"
            if est.judge_price_per_1k is not None
            else "no price in the table"
        )
        said += (
            f"; the judge: {est.judge_calls} calls, {est.judge_units} billed units ({price}): "
            f"{_money(est.judge_cost_usd)}"
        )
    return said


def _cell(text: str) -> str:
    """Text for a markdown table cell (a ``|`` would end it)."""
    return text.replace("|", "\\|")


def _interval(interval: Interval) -> str:
    return f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def _distribution_row(name: str, dist: Distribution) -> str:
    cells = " | ".join(_fmt(dist.quantiles.get(q)) for q in QUANTILES)
    return f"| {name} | {_fmt(dist.mean)} | {cells} |"


def _histogram_row(name: str, dist: Distribution) -> str:
    return f"| {name} | " + " | ".join(str(n) for n in dist.histogram) + " |"


def replay_lines(replay: Replay | None, plan: Plan) -> list[str]:
    """The replay's section: both distributions, new results, the judge, the changed queries."""
    if replay is None:
        return []
    k, shown = replay.k, f"{replay.queries} production queries"
    bins = [f"{i / BINS:.1f} to {(i + 1) / BINS:.1f}" for i in range(BINS)]
    share = replay.new_results / replay.results if replay.results else 0.0
    lines = [
        f"**Real traffic: {shown} replayed**, old model on `{plan.source.collection}` vs new "
        f"model on {_new_side(plan)}, top {k} each (query log: {replay.log}; "
        f"{replay.entries} entries, {replay.skipped} without text, {replay.distinct} distinct "
        f"queries, a deterministic sample of {replay.queries}):",
        "",
        "| per query | mean | p10 | p25 | median | p75 | p90 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        _distribution_row(f"overlap@{k}", replay.overlap),
        _distribution_row(f"RBO (p={replay.rbo_p:g})", replay.rbo),
        "",
        "| queries by value | " + " | ".join(bins) + " |",
        "| --- |" + " --- |" * BINS,
        _histogram_row(f"overlap@{k}", replay.overlap),
        _histogram_row("RBO", replay.rbo),
        "",
        f"- overlap@{k}: the share of the old top {k} still in the new top {k}, in any order; "
        f"RBO: rank-biased overlap (Webber et al. 2010, extrapolated for lists cut at {k}), "
        f"1 = the same order, 0 = nothing shared; p = {replay.rbo_p:g} gives the top ranks "
        "most of the weight, so a change at rank 1 counts more than one at rank 9",
        f"- new results: {replay.new_results} of {replay.results} ({share:.0%}) of the new "
        f"model's results were not in the old top {k} of the same query; "
        f"{replay.unseen_documents} documents the new model returned are in no old result "
        "list at all",
        "",
        *judged_lines(replay.judge),
        *changed_lines(replay),
    ]
    return lines


def judged_lines(judged: Judged | None) -> list[str]:
    """Judged nDCG@10 of both sides, with intervals, and whether it gates."""
    if judged is None:
        return []
    gate = (
        f"it gates the swap: a drop of more than quality_tolerance {judged.tolerance} fails "
        "the run before the approval"
        if judged.gates
        else "shown only: the labeled evaluation set gates the swap"
    )
    billed = (
        f", {judged.billed:g} {judged.billing_unit}s billed"
        if judged.billed is not None and judged.billing_unit
        else ""
    )
    lines = [
        f"**Judged relevance** ({judged.judge} scored the union of both top-10 lists, "
        f"{judged.pool:g} documents a query on average; {judged.calls} calls{billed}, "
        f"{human_seconds(judged.seconds)}):",
        "",
        "| | old model | new model | new - old |",
        "| --- | --- | --- | --- |",
        f"| judged nDCG@10 (95% interval) | {judged.old_ndcg:.3f} "
        f"{_interval(judged.old_interval)} | {judged.new_ndcg:.3f} "
        f"{_interval(judged.new_interval)} | {judged.new_ndcg - judged.old_ndcg:+.3f} "
        f"{_interval(judged.difference_interval)} |",
        "",
        "- graded gain: the judge's score of each document; the ideal order: the pool's best "
        "10 by score, the same for both sides; intervals: 1,000 bootstrap resamples of the "
        f"queries, paired; {gate}",
    ]
    if judged.worst:
        lines += ["", "Queries that lost most under the judge (nDCG@10 old → new):", ""]
        lines += [f"- {w.query!r}: {w.old_ndcg:.2f} → {w.new_ndcg:.2f}" for w in judged.worst]
    return [*lines, ""]


def changed_lines(replay: Replay) -> list[str]:
    """The queries that changed most, each with both result lists by title."""
    if not replay.changed:
        return []
    by = f"payload field {replay.title_field!r}" if replay.title_field else "point id"
    lines = [
        f"**The {len(replay.changed)} queries that changed most** (lowest RBO first, then "
        f"lowest overlap, then most new results; results named by {by}; ★ a result the old "
        f"top {replay.k} did not hold; queries and titles cut at {TRUNCATE} characters):",
        "",
    ]
    for number, changed in enumerate(replay.changed, 1):
        lines += [*_changed_query(number, changed, replay.k), ""]
    return lines


def _changed_query(number: int, changed: ChangedQuery, k: int) -> list[str]:
    judged = (
        f", judged nDCG@10 {changed.old_ndcg:.2f} → {changed.new_ndcg:.2f}"
        if changed.old_ndcg is not None and changed.new_ndcg is not None
        else ""
    )
    old_ids = {r.id for r in changed.old}
    rows = []
    for rank in range(max(len(changed.old), len(changed.new))):
        old = changed.old[rank].title if rank < len(changed.old) else ""
        new = changed.new[rank] if rank < len(changed.new) else None
        mark = "★ " if new is not None and new.id not in old_ids else ""
        rows.append(f"| {rank + 1} | {_cell(old)} | {mark}{_cell(new.title) if new else ''} |")
    return [
        f"{number}. {changed.query!r}: overlap@{k} {changed.overlap:.2f}, "
        f"RBO {changed.rbo:.2f}, {changed.new_results} new{judged}",
        "",
        "| rank | old model | new model |",
        "| --- | --- | --- |",
        *rows,
    ]
