"""What the "Qdrant migrations" UI shows, read from the state store and the alias's collection.

Nothing here knows Airflow: what the UI needs of it (DAG runs and pending approvals as
:class:`AirflowFacts`, a run's backfill tasks through :func:`with_tasks`) the plugin's app
reads through Airflow's REST API with the viewer's own token. Reads are bounded: the list reads
the migration records, each one's partition plan and its checkpoints (by indexed fields,
at most ``MAX_PARTITIONS`` each); the page adds the report, the catch-up passes and the
alias's collection info. Nothing scans points, and no document text is read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from qdrant_client import QdrantClient

from include.qdrant_migration.aliases import LifecycleError
from include.qdrant_migration.checks.quality import Quality
from include.qdrant_migration.checks.traffic import Replay
from include.qdrant_migration.layout import METADATA_KEY
from include.qdrant_migration.plan import old_model_of
from include.qdrant_migration.report import (
    at_rest_summary,
    human_bytes,
    human_seconds,
    probe_summary,
)
from include.qdrant_migration.state import (
    Leases,
    MigrationRecord,
    Migrations,
    MigrationStatus,
    ReportRecord,
    Reports,
    StateStore,
)
from include.qdrant_migration.strategies import LifecycleAction, strategy_of
from include.qdrant_migration.sync.catchup import FORWARD, MIRROR, CatchUpPasses
from include.qdrant_migration.sync.checkpoints import Checkpoint, Checkpoints
from include.qdrant_migration.sync.pacing import PacingSummary
from include.qdrant_migration.sync.partitions import PartitionPlan, PartitionPlans

#: The rate is measured over this much of the recent past (samples are >= 5 s apart).
RATE_WINDOW_S = 120.0
#: At most this many partition rows on a migration's page: the unfinished ones first.
PARTITION_ROWS = 200
AWAITING_APPROVAL = "awaiting approval"
#: Statuses with work under way: the pages refresh themselves while one is shown.
ACTIVE = frozenset({MigrationStatus.LOADING.value, AWAITING_APPROVAL})
#: DAG run states in which a run drives its migration (the lifecycle DAG refuses retire).
RUN_ACTIVE = ("queued", "running")


@dataclass(frozen=True)
class RunFacts:
    """A DAG run of the migration DAG, as Airflow's API reports it."""

    run_id: str
    state: str | None = None
    start_date: str | None = None
    end_date: str | None = None


@dataclass(frozen=True)
class TaskFacts:
    """One mapped ``backfill_batch`` task instance of a run."""

    map_index: int
    state: str | None = None
    try_number: int = 0
    hostname: str | None = None


@dataclass(frozen=True)
class PendingApproval:
    """An unanswered approval (Airflow's human-in-the-loop detail of ``approve_swap``)."""

    run_id: str
    task_id: str
    map_index: int
    options: tuple[str, ...]
    created_at: str | None = None


@dataclass(frozen=True)
class AirflowFacts:
    """What the UI needs from Airflow, read once per refresh."""

    dag_id: str
    runs: Mapping[str, RunFacts] = field(default_factory=dict)
    approvals: Mapping[str, PendingApproval] = field(default_factory=dict)
    #: A note shown when Airflow could not be asked (the store is still shown).
    problem: str | None = None


@dataclass(frozen=True)
class Money:
    """Tokens and dollars, so far and as planned."""

    tokens: int
    planned_tokens: int
    cost_usd: float | None
    planned_cost_usd: float | None


@dataclass(frozen=True)
class MigrationRow:
    """One migration in the list."""

    migration_id: str
    alias: str
    source_collection: str
    target_collection: str
    source_model: str | None
    model: str | None
    strategy: str
    status: str
    points_done: int
    points_total: int
    #: Points per second over the last RATE_WINDOW_S (None: not loading).
    rate: float | None
    eta_s: float | None
    money: Money
    embedding_mode: str
    #: The DAG run that drives (or last drove) it.
    run_id: str | None
    run_state: str | None
    created_at: str
    updated_at: str | None
    qdrant_conn_id: str = "qdrant_default"

    @property
    def fraction(self) -> float:
        return min(self.points_done / self.points_total, 1.0) if self.points_total else 0.0

    @property
    def active(self) -> bool:
        """Work under way (the pages refresh often while one is shown)."""
        return self.status in ACTIVE or self.run_state in RUN_ACTIVE


@dataclass(frozen=True)
class PartitionRow:
    index: int
    label: str
    points: int
    done_points: int
    done: bool
    #: Where a retry resumes (the checkpoint's next offset), as text.
    resumes_at: str | None
    embedded: int
    skipped: int
    rate: float | None
    updated_at: str | None
    state: str | None = None
    tries: int | None = None
    hostname: str | None = None
    #: Batch mode: its request files by state (planned, submitted, done).
    batch_files: dict[str, int] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        return min(self.done_points / self.points, 1.0) if self.points else float(self.done)


@dataclass(frozen=True)
class CatchUpPass:
    direction: str
    at: str
    cut: str | None
    mode: str
    changes: int
    seconds: float
    #: Seconds from the pass's cut to now: writes since then are not copied yet.
    lag_s: float | None


@dataclass(frozen=True)
class LineageStep:
    """A collection and the model that made its vectors; the next step is its source."""

    collection: str
    model: str | None
    provider: str | None
    dimensions: int | None
    strategy: str | None
    migration_id: str | None
    created_at: str | None


@dataclass(frozen=True)
class Action:
    """What a person can do next, and what the confirmation says will happen."""

    name: str  # approve | reject | rollback | retire
    label: str
    confirm: str


@dataclass(frozen=True)
class MigrationPage:
    row: MigrationRow
    partitions: list[PartitionRow]
    hidden_partitions: int
    plan_vs_actual: list[tuple[str, str, str]]
    report_markdown: str | None
    report_outcome: str | None
    #: Old vs new quality, metric -> (old, new), for the chart.
    quality: dict[str, tuple[float, float]]
    catch_up: list[CatchUpPass]
    serving: str | None
    lineage: list[LineageStep]
    #: (seconds since the first sample, points done) for the throughput chart.
    throughput: list[tuple[float, int]]
    actions: list[Action]
    approval: PendingApproval | None
    #: Why each lifecycle action not offered does not apply (the lifecycle DAG's words).
    refused: dict[str, str] = field(default_factory=dict)
    #: The query log replayed on both models (texts as the report keeps them: cut).
    replay: Replay | None = None


# -- reading -------------------------------------------------------------------------


def migration_rows(
    store: StateStore, facts: AirflowFacts, now: datetime | None = None
) -> list[MigrationRow]:
    """Every recorded migration, newest first."""
    now = now or datetime.now(tz=UTC)
    rows = []
    for record in Migrations(store).all():
        plan = PartitionPlans(store).get(record.migration_id)
        rows.append(_row(store, record, plan, _checkpoints(store, record, plan), facts, now))
    return sorted(rows, key=lambda r: r.created_at, reverse=True)


def migration_page(
    store: StateStore,
    client: QdrantClient,
    migration_id: str,
    facts: AirflowFacts,
    now: datetime | None = None,
) -> MigrationPage | None:
    """Everything a migration's page shows, or None when no such migration is recorded."""
    now = now or datetime.now(tz=UTC)
    record = Migrations(store).get(migration_id)
    if record is None:
        return None
    plan = PartitionPlans(store).get(migration_id)
    checkpoints = _checkpoints(store, record, plan)
    row = _row(store, record, plan, checkpoints, facts, now)
    partitions = _partitions(plan, checkpoints, now)
    shown = sorted(partitions, key=lambda p: (p.done, p.index))[:PARTITION_ROWS]
    report = Reports(store).get(migration_id)
    serving = _alias_target(client, record.alias)
    approval = facts.approvals.get(row.run_id or "")
    return MigrationPage(
        row=row,
        partitions=sorted(shown, key=lambda p: p.index),
        hidden_partitions=len(partitions) - len(shown),
        plan_vs_actual=_plan_vs_actual(record, row, checkpoints),
        report_markdown=report.markdown if report else None,
        report_outcome=report.outcome if report else None,
        quality=_quality(report),
        catch_up=_catch_up(store, migration_id, now),
        serving=serving,
        lineage=_lineage(client, serving) if serving else [],
        throughput=throughput(checkpoints),
        actions=actions(record, row, approval, serving),
        approval=approval,
        refused=refusals(record, row),
        replay=report.measured("replay", Replay) if report else None,
    )


def _checkpoints(
    store: StateStore, record: MigrationRecord, plan: PartitionPlan | None
) -> list[Checkpoint]:
    """The checkpoints of the migration's current partition plan."""
    found = list(Checkpoints(store).of(record.migration_id))
    if plan is None:
        return found
    return [c for c in found if c.fingerprint == plan.fingerprint]


def _total_points(record: MigrationRecord, plan: PartitionPlan | None) -> int:
    if plan is not None:
        return plan.total_points
    if record.plan is not None and record.plan.strategy.creates_target:
        return record.plan.source.points
    return 0


def _row(
    store: StateStore,
    record: MigrationRecord,
    partition_plan: PartitionPlan | None,
    checkpoints: Sequence[Checkpoint],
    facts: AirflowFacts,
    now: datetime,
) -> MigrationRow:
    plan = record.plan
    run_id = latest_run(store, record, checkpoints, facts.dag_id)
    run = facts.runs.get(run_id or "")
    status = record.status.value
    if record.status is MigrationStatus.READY and run_id in facts.approvals:
        status = AWAITING_APPROVAL
    total = _total_points(record, partition_plan)
    done = sum(c.done_points for c in checkpoints)
    rate = current_rate(checkpoints, now) if record.status is MigrationStatus.LOADING else None
    left = max(total - done, 0)
    return MigrationRow(
        migration_id=record.migration_id,
        alias=record.alias,
        source_collection=record.source_collection,
        target_collection=record.target_collection,
        source_model=(
            old.model if plan and (old := old_model_of(plan.spec, plan.source)) else None
        ),
        model=(plan.spec.model if plan else None),
        strategy=record.strategy.value,
        status=status,
        points_done=done,
        points_total=total,
        rate=rate,
        eta_s=(left / rate if rate else None) if left else 0.0,
        money=_money(record, checkpoints),
        embedding_mode=plan.spec.embedding_mode if plan else "online",
        run_id=run_id,
        run_state=run.state if run else None,
        created_at=record.created_at,
        updated_at=max((c.updated_at for c in checkpoints), default=None),
        qdrant_conn_id=plan.spec.qdrant_conn_id if plan else "qdrant_default",
    )


def latest_run(
    store: StateStore,
    record: MigrationRecord,
    checkpoints: Sequence[Checkpoint],
    migration_dag: str,
) -> str | None:
    """The run that holds the migration now, else the last one that reported or wrote."""
    owner = Leases(store).holder(f"run/{record.migration_id}") or ""
    dag_id, _, run_id = owner.partition("/")
    if dag_id == migration_dag and run_id:  # not a catch-up or lifecycle run's claim
        return run_id
    report = Reports(store).get(record.migration_id)
    dated: list[tuple[str, str | None]] = []
    if report is not None:
        dated.append((report.measured("reported_at", str) or "", report.run_id))
    dated += [(c.updated_at, c.run_id) for c in checkpoints]
    known = [(at, run) for at, run in dated if run]
    return str(max(known)[1]) if known else None


def _money(record: MigrationRecord, checkpoints: Sequence[Checkpoint]) -> Money:
    tokens = sum(c.tokens for c in checkpoints)
    est = record.plan.estimate if record.plan else None
    if est is None:
        return Money(tokens, 0, None, None)
    batch = record.plan is not None and record.plan.spec.embedding_mode == "batch"
    planned = est.batch_cost_usd if batch and est.batch_cost_usd is not None else est.cost_usd
    per_token = (
        planned / est.tokens
        if planned is not None and est.tokens
        else (est.price_per_million_tokens or 0) / 1e6
        if est.price_per_million_tokens is not None
        else None
    )
    return Money(
        tokens=tokens,
        planned_tokens=est.tokens,
        cost_usd=round(tokens * per_token, 6) if per_token is not None else None,
        planned_cost_usd=planned,
    )


def _partitions(
    plan: PartitionPlan | None, checkpoints: Sequence[Checkpoint], now: datetime
) -> list[PartitionRow]:
    saved = {c.partition: c for c in checkpoints}
    rows = []
    for part in plan.partitions if plan is not None else []:
        index = part.index
        checkpoint = saved.get(index)
        offset = checkpoint.next_offset if checkpoint else None
        rows.append(
            PartitionRow(
                index=index,
                label=part.label,
                points=part.points,
                done_points=checkpoint.done_points if checkpoint else 0,
                done=bool(checkpoint and checkpoint.done),
                resumes_at=None if offset is None else str(offset),
                embedded=checkpoint.embedded if checkpoint else 0,
                skipped=sum(checkpoint.skipped_by_reason.values()) if checkpoint else 0,
                rate=current_rate([checkpoint], now)
                if checkpoint and not checkpoint.done
                else None,
                updated_at=checkpoint.updated_at if checkpoint else None,
                batch_files=_batch_files(checkpoint),
            )
        )
    return rows


def with_tasks(page: MigrationPage, tasks: Mapping[int, TaskFacts]) -> MigrationPage:
    """``page`` with each partition's task state, try number and worker from ``tasks``."""
    partitions = [
        dataclasses.replace(p, state=t.state, tries=t.try_number, hostname=t.hostname)
        if (t := tasks.get(p.index))
        else p
        for p in page.partitions
    ]
    return dataclasses.replace(page, partitions=partitions)


def _batch_files(checkpoint: Checkpoint | None) -> dict[str, int]:
    if checkpoint is None or checkpoint.batch is None:
        return {}
    return checkpoint.batch.files_by_state()


# -- rates and the throughput chart ----------------------------------------------------


def _samples(checkpoints: Iterable[Checkpoint]) -> list[tuple[datetime, int, int]]:
    """Every progress sample as (time, partition, points done), oldest first."""
    found = [
        (datetime.fromisoformat(str(at)), c.partition, int(done))
        for c in checkpoints
        for at, done in c.history
    ]
    return sorted(found)


def _totals(checkpoints: Iterable[Checkpoint]) -> list[tuple[datetime, int]]:
    """Points done by all partitions together after each sample."""
    current: dict[int, int] = {}
    series = []
    for at, partition, done in _samples(checkpoints):
        current[partition] = done
        series.append((at, sum(current.values())))
    return series


def current_rate(checkpoints: Sequence[Checkpoint], now: datetime) -> float | None:
    """Points per second over the last :data:`RATE_WINDOW_S` (0.0 when nothing moved)."""
    series = _totals(checkpoints)
    if not series:
        return None
    start = max(now - timedelta(seconds=RATE_WINDOW_S), series[0][0])
    span = (now - start).total_seconds()
    if span < 5:
        return None
    before = [total for at, total in series if at <= start]
    base = before[-1] if before else series[0][1]
    return max(series[-1][1] - base, 0) / span


def throughput(checkpoints: Sequence[Checkpoint]) -> list[tuple[float, int]]:
    series = _totals(checkpoints)
    if not series:
        return []
    first = series[0][0]
    return [((at - first).total_seconds(), total) for at, total in series]


# -- the rest of a migration's page ----------------------------------------------------


def _plan_vs_actual(
    record: MigrationRecord, row: MigrationRow, checkpoints: Sequence[Checkpoint]
) -> list[tuple[str, str, str]]:
    est = record.plan.estimate if record.plan else None
    if est is None:
        return []
    samples = _samples(checkpoints)
    took = (samples[-1][0] - samples[0][0]).total_seconds() if len(samples) > 1 else None
    money = row.money
    return [
        ("points", f"{est.points:,}", f"{row.points_done:,} done"),
        (
            "texts embedded",
            f"{est.texts_to_embed:,}",
            f"{sum(c.embedded for c in checkpoints):,}",
        ),
        (
            "vectors derived (no embedding)",
            f"{est.vectors_copied:,}",
            _sum(checkpoints, "transformed"),
        ),
        ("tokens", f"{est.tokens:,}", f"{money.tokens:,}"),
        ("embedding requests", f"{est.embed_requests:,}", _sum(checkpoints, "requests")),
        ("cost", usd(money.planned_cost_usd), usd(money.cost_usd)),
        ("backfill duration", duration(est.duration_s), duration(took)),
        ("peak disk", size(est.peak_disk_bytes), "—"),
        *_reads(record, checkpoints),
    ]


def _reads(
    record: MigrationRecord, checkpoints: Sequence[Checkpoint]
) -> list[tuple[str, str, str]]:
    """The Qdrant budget, and the source's searches at rest (the plan) and meanwhile (the
    backfill's probes, over every partition so far)."""
    plan = record.plan
    if plan is None or not strategy_of(plan).rebuilds:
        return []
    pacing = PacingSummary()
    for checkpoint in checkpoints:
        pacing = pacing.merge(checkpoint.pacing)
    waited = f"writes waited {duration(pacing.waited_s)}" if pacing.waited_s else "no waits"
    slowed = f", slowed down {pacing.backoffs} times" if pacing.backoffs else ""
    return [
        ("Qdrant budget", plan.spec.budget.describe(), waited + slowed),
        (
            "source search latency",
            at_rest_summary(plan.estimate),
            probe_summary(pacing) or "no probes yet",
        ),
    ]


def _sum(checkpoints: Sequence[Checkpoint], name: str) -> str:
    return f"{sum(int(getattr(c, name)) for c in checkpoints):,}"


def _quality(report: ReportRecord | None) -> dict[str, tuple[float, float]]:
    quality = report.measured("quality", Quality) if report is not None else None
    if quality is None:
        return {}
    old, new = quality.old, quality.new
    bars = {m: (float(old[m]), float(new[m])) for m in old if m in new}
    replay = report.measured("replay", Replay) if report is not None else None
    if replay is not None and replay.judge is not None:
        bars["judged nDCG@10"] = (replay.judge.old_ndcg, replay.judge.new_ndcg)
    return bars


def _catch_up(store: StateStore, migration_id: str, now: datetime) -> list[CatchUpPass]:
    passes = []
    recorded = CatchUpPasses(store)
    for direction in (FORWARD, MIRROR):
        last = recorded.last(migration_id, direction)
        if last is None:
            continue
        cut = last.result.cut
        passes.append(
            CatchUpPass(
                direction=direction,
                at=last.at,
                cut=cut,
                mode=last.result.mode,
                changes=last.result.changes,
                seconds=last.result.seconds,
                lag_s=(now - datetime.fromisoformat(cut)).total_seconds() if cut else None,
            )
        )
    return passes


def _alias_target(client: QdrantClient, alias: str) -> str | None:
    for found in client.get_aliases().aliases:
        if found.alias_name == alias:
            return found.collection_name
    return None


def _lineage(client: QdrantClient, collection: str) -> list[LineageStep]:
    """The served collection's lineage, back through the sources it records."""
    info = client.get_collection(collection)
    lineage = (info.config.metadata or {}).get(METADATA_KEY)
    steps: list[LineageStep] = []
    name: str | None = collection
    while isinstance(lineage, Mapping) and lineage and name and len(steps) < 20:
        active = lineage.get("active_vector")
        model_of = (lineage.get("vectors") or {}).get(active) or lineage if active else lineage
        steps.append(
            LineageStep(
                collection=name if not active else f"{name} (vector {active!r})",
                model=model_of.get("model"),
                provider=model_of.get("provider"),
                dimensions=model_of.get("dimensions"),
                strategy=lineage.get("strategy"),
                migration_id=lineage.get("migration_id"),
                created_at=lineage.get("created_at"),
            )
        )
        name = lineage.get("source_collection")
        lineage = lineage.get("source_lineage")
    return steps


def actions(
    record: MigrationRecord,
    row: MigrationRow,
    approval: PendingApproval | None,
    serving: str | None,
) -> list[Action]:
    """What can be done next, each with what it will do."""
    found = []
    if approval is not None:
        found += [
            Action(
                "approve",
                "Approve the swap",
                f"The alias {record.alias!r} moves atomically from {serving!r} to "
                f"{record.target_collection!r} after a final catch-up; {serving!r} is kept "
                "for rollback.",
            ),
            Action(
                "reject",
                "Reject",
                f"The alias {record.alias!r} stays on {serving!r}; the migration ends as "
                f"rejected and {record.target_collection!r} is kept until it is retired.",
            ),
        ]
    if record.plan is None:
        return found
    strategy = strategy_of(record.plan)
    # Exactly what the lifecycle DAG accepts (it asks the same strategy, with the run
    # claim's holder for "a run drives it").
    offered = strategy.lifecycle_actions(record.status, run_active=row.run_state in RUN_ACTIVE)
    if LifecycleAction.ROLLBACK in offered:
        found.append(
            Action(
                "rollback",
                "Roll back",
                f"Triggers qdrant_migration_lifecycle (rollback): a final catch-up, then "
                f"{strategy.old_side()} is served again in one atomic step, and what was "
                "written since the swap is copied back.",
            )
        )
    if LifecycleAction.RETIRE in offered:
        when = (
            " It is refused until the observation period (7 days by default) after the swap "
            "has passed."
            if record.status is MigrationStatus.SWAPPED
            else ""
        )
        found.append(
            Action(
                "retire",
                "Retire",
                f"Triggers qdrant_migration_lifecycle (retire): deletes the unused "
                f"{strategy.retire_victim(record)} and stops the nightly catch-up of "
                f"{record.migration_id}.{when} Nothing an alias serves is ever deleted.",
            )
        )
    return found


def refusals(record: MigrationRecord, row: MigrationRow) -> dict[str, str]:
    """Why the lifecycle DAG would refuse each action the page does not offer."""
    if record.plan is None:
        return {a.value: f"{record.migration_id} has no recorded plan." for a in LifecycleAction}
    strategy, refused = strategy_of(record.plan), {}
    holder = row.run_id if row.run_state in RUN_ACTIVE else None
    for action in LifecycleAction:
        try:
            strategy.require_action(record, action, running=holder)
        except LifecycleError as error:
            refused[action.value] = str(error)
    return refused


# -- formatting shared by the pages ---------------------------------------------------------


def usd(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 1 or value == 0:
        return f"${value:,.2f}"
    if value < 0.000001:
        return "< $0.000001"
    return f"${value:.6f}".rstrip("0") if value < 0.001 else f"${value:.4f}"


def duration(seconds: float | None) -> str:
    return "—" if seconds is None else human_seconds(max(seconds, 0))


def size(n: int | None) -> str:
    return human_bytes(n) if n else "—"


def as_dict(value: Any) -> Any:
    """A view as JSON-ready data (the plugin's JSON endpoints)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {f.name: as_dict(getattr(value, f.name)) for f in dataclasses.fields(value)}
        for extra in ("fraction", "active"):
            if hasattr(type(value), extra):
                data[extra] = getattr(value, extra)
        return data
    if isinstance(value, Mapping):
        return {str(k): as_dict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_dict(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value
