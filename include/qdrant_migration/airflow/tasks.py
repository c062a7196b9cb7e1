"""The body of every DAG task: XComs in, plain functions called, XComs out.

Each function opens Qdrant for the duration of the task (serialized for the embedded
store) through the hook, builds providers from Airflow connections, and calls the
Airflow-free modules. Typed objects become dicts only here, at the XCom boundary.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from airflow.sdk import get_current_context
from airflow.sdk.exceptions import (
    AirflowFailException,
    AirflowRescheduleException,
    AirflowSkipException,
)
from qdrant_client import QdrantClient

from include.qdrant_migration import (
    aliases,
    codec,
    collections,
    compatibility,
    linear_map,
    quantization,
    querylog,
)
from include.qdrant_migration.airflow import assets, workarounds, writers
from include.qdrant_migration.airflow.hooks import (
    MigrationQdrantHook,
    build_judge,
    build_old_provider,
    build_provider,
    build_source_provider,
)
from include.qdrant_migration.airflow.workarounds import ANSWER_KEY
from include.qdrant_migration.checks import CheckFailedError, quality, recall, traffic
from include.qdrant_migration.leases import LeaseBusyError
from include.qdrant_migration.phases import Timeline
from include.qdrant_migration.plan import Plan
from include.qdrant_migration.providers import AuthError, EmbeddingProvider, ProviderConfigError
from include.qdrant_migration.report import Evidence, Report, render_plan, render_quantization
from include.qdrant_migration.spec import (
    CATCH_UP_PARAM_SCHEMA,
    MigrationSpec,
    SpecError,
    Strategy,
    lifecycle_action,
    refuse_unknown,
)
from include.qdrant_migration.state import (
    Leases,
    MigrationRecord,
    Migrations,
    MigrationStatus,
    NewerSchemaError,
    QdrantStateStore,
    Reports,
    StatusError,
    now_iso,
)
from include.qdrant_migration.strategies import (
    STRATEGIES,
    LifecycleAction,
    Models,
    strategy_of,
)
from include.qdrant_migration.strategy import AlreadyMigratedError, CompatibilityError
from include.qdrant_migration.sync import skips
from include.qdrant_migration.sync.backfill import (
    BackfillSettings,
    BackfillSummary,
    PartitionBackfill,
    PartitionResult,
)
from include.qdrant_migration.sync.batch import BatchBackfill, Waiting
from include.qdrant_migration.sync.catchup import (
    CatchUpResult,
    SyncError,
    converge,
)
from include.qdrant_migration.sync.partitions import Partition, partitions_for
from include.qdrant_migration.texts import BadTextError

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")
#: A task's XCom: plain JSON.
XCom = dict[str, Any]

#: Errors that say the request or the data is wrong: retrying cannot fix them, so the task
#: fails at once with the message instead of retrying.
USER_ERRORS: tuple[type[Exception], ...] = (
    SpecError,
    ProviderConfigError,
    AuthError,
    CompatibilityError,
    collections.CollectionConflictError,
    BadTextError,
    CheckFailedError,
    quality.QualityRegressionError,
    querylog.QueryLogError,
    aliases.AliasMovedError,
    aliases.LifecycleError,
    StatusError,
    NewerSchemaError,
    SyncError,
    writers.RunConflictError,
    LeaseBusyError,
)


def fail_fast(func: Callable[P, R]) -> Callable[P, R]:
    """Turn :data:`USER_ERRORS` into AirflowFailException (no retries, message kept)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except AlreadyMigratedError as done:
            raise AirflowSkipException(str(done)) from done
        except USER_ERRORS as error:
            raise AirflowFailException(f"{type(error).__name__}: {error}") from error

    return wrapper


@contextmanager
def _qdrant(conn_id: str) -> Iterator[tuple[QdrantClient, QdrantStateStore]]:
    with MigrationQdrantHook(conn_id).client() as client:
        yield client, QdrantStateStore(client)


@contextmanager
def _run_writing(
    plan: Plan,
) -> Iterator[tuple[QdrantClient, QdrantStateStore, Callable[[], None]]]:
    """A write of the migration by its run: the run claim, then the writer lease."""
    writers.claim_run(plan.spec.qdrant_conn_id, plan.migration_id)
    with writers.writing(plan.spec.qdrant_conn_id, plan.migration_id) as opened:
        yield opened


# -- the migration DAG -----------------------------------------------------------------


@fail_fast
def assess_compatibility(params: dict[str, Any]) -> XCom:
    spec = MigrationSpec.from_params(params)
    provider = build_provider(spec)
    judge = build_judge(spec)
    with _qdrant(spec.qdrant_conn_id) as (client, state):
        plan = compatibility.assess(
            client,
            spec,
            provider,
            state,
            # a wrong old model or connection fails here, not at the report
            old_model=lambda source: build_old_provider(spec, source),
            shared_process=workarounds.tasks_share_this_process(),
            inline_queries=_inline_queries(params),
            judge=judge,
        )
    if judge is not None:
        judge.close()
    log.info("Strategy %s:\n%s", plan.strategy, render_plan(plan))
    if spec.dry_run:
        log.info("Dry run: nothing was written, and every task after this one is skipped.")
    return codec.encode_dict(plan)


def _inline_queries(params: dict[str, Any]) -> list[object] | None:
    """An inline query log, from the run's conf: the plan keeps only its count."""
    value = params.get("query_log")
    return value if isinstance(value, list) else None


@fail_fast
def fit_linear_map(plan_xcom: XCom) -> XCom:
    """Embed the sample, choose, fit and test the map; refuse it below min_map_retention
    or when it would search worse than the old model (when that model is known)."""
    plan = codec.decode(Plan, plan_xcom)
    provider, old_model = build_provider(plan.spec), build_source_provider(plan)
    with _run_writing(plan) as (client, state, _heartbeat):
        summary = linear_map.fit_for_plan(client, plan, provider, state, old_model)
        return codec.encode_dict(summary)


def quantization_report(plan_xcom: XCom) -> XCom:
    """The small report a quantization-only change is approved on."""
    return {"markdown": render_quantization(codec.decode(Plan, plan_xcom))}


@fail_fast
def apply_quantization(plan_xcom: XCom) -> XCom:
    """The one sanctioned write to a source: its quantization config. No points written."""
    plan = codec.decode(Plan, plan_xcom)
    wanted = plan.spec.quantization or "none"
    with writers.writing(plan.spec.qdrant_conn_id, plan.migration_id) as (
        client,
        state,
        heartbeat,
    ):
        aliases.ensure_alias_at(client, plan.alias, plan.source.collection)
        result = quantization.requantize_source(
            client, plan.source.collection, plan.vector_name, wanted
        )
        measured = recall.quantized_recall(
            client,
            plan.source.collection,
            plan.vector_name,
            k=plan.spec.recall_k,
            sample_size=plan.spec.recall_sample_size,
            heartbeat=heartbeat,  # the writer's lease, while it waits for the re-quantization
        )
        result["recall"] = codec.encode_dict(measured)
        log.info(
            "recall@%d of %s after the change (%s, %d queries): %s with rescoring, %s without",
            measured.k,
            plan.source.collection,
            measured.readiness,
            measured.sample_queries,
            measured.rescored,
            measured.not_rescored,
        )
        Migrations(state).put(
            MigrationRecord(
                migration_id=plan.migration_id,
                alias=plan.alias,
                source_collection=plan.source.collection,
                target_collection=plan.source.collection,
                strategy=plan.strategy,
                status=MigrationStatus.QUANTIZED,
                plan=plan,
                lineage=plan.target_lineage,
                quantized_at=now_iso(),
                quantization=result,
            )
        )
    return dict(result)


def choose_path(plan_xcom: XCom) -> list[str] | None:
    """The chosen strategy's first tasks after assess_compatibility; none after a dry run."""
    if plan_xcom["spec"]["dry_run"]:
        return None
    return list(STRATEGIES[Strategy(plan_xcom["strategy"])].path)


@fail_fast
def create_collection(plan_xcom: XCom) -> XCom:
    plan = codec.decode(Plan, plan_xcom)
    with _run_writing(plan) as (client, state, _heartbeat):
        return strategy_of(plan).create(client, state)


@fail_fast
def plan_partitions(plan_xcom: XCom) -> list[XCom]:
    plan = codec.decode(Plan, plan_xcom)
    with _run_writing(plan) as (client, state, _heartbeat):
        return [codec.encode_dict(p) for p in partitions_for(client, state, plan)]


@fail_fast
def backfill_batch(plan_xcom: XCom, partition_xcom: XCom) -> XCom:
    plan = codec.decode(Plan, plan_xcom)
    part = codec.decode(Partition, partition_xcom)
    settings = BackfillSettings.of(plan, run_id=str(get_current_context()["run_id"]))
    strategy = strategy_of(plan)
    with _run_writing(plan) as (client, state, heartbeat):
        # The parallel tasks of the run share the provider budget given in the params.
        job = strategy.backfill_job(
            client, part, state, settings, lambda: build_provider(plan.spec, partitions=part.of)
        )
        job.heartbeat = heartbeat
        job.pacer = strategy.pacer(client, ways=plan.spec.parallel_tasks(part.of))
        if plan.spec.embedding_mode == "batch" and isinstance(job, PartitionBackfill):
            # The spec allows batch only for a provider with a batch API (its batch_api).
            outcome = BatchBackfill(job, job.provider).run()
            if isinstance(outcome, Waiting):
                # Waits without a worker slot: the task is rescheduled and polls again.
                again = datetime.now(tz=UTC) + timedelta(seconds=outcome.poll_s)
                # Airflow's exception has an untyped __init__ (task-sdk 1.3.2).
                raise AirflowRescheduleException(again)  # type: ignore[no-untyped-call]
            return codec.encode_dict(outcome)
        return codec.encode_dict(job.run())


@fail_fast
def catch_up(plan_xcom: XCom) -> XCom:
    """Copy what changed in the source meanwhile, pass after pass until the lag is under
    ``max_catch_up_lag``; the migration is then ready for its checks and approval."""
    plan = codec.decode(Plan, plan_xcom)
    provider = build_provider(plan.spec)
    strategy = strategy_of(plan)
    with _run_writing(plan) as (client, state, heartbeat):
        pacer = strategy.pacer(client)
        passes = strategy.forward_pass(client, state, provider, heartbeat=heartbeat, pacer=pacer)
        with pacer.probing(client):
            converged = converge(
                lambda: passes.run(), max_lag=plan.spec.max_catch_up_lag, heartbeat=heartbeat
            )
        migrations = Migrations(state)
        record = migrations.require(plan.migration_id)
        if record.status is not MigrationStatus.READY:
            migrations.transition(record, MigrationStatus.READY)
    log.info(
        "Caught up in %d passes (changes per pass: %s)",
        len(converged.passes),
        [p.changes for p in converged.passes],
    )
    return converged.to_dict() | {"caught_up_at": now_iso()}


@fail_fast
def restore_indexing(plan_xcom: XCom) -> XCom:
    """The bulk load is over: let Qdrant build the index (the only write before the check)."""
    plan = codec.decode(Plan, plan_xcom)
    with _run_writing(plan) as (client, state, _heartbeat):
        strategy_of(plan).finish_bulk_load(client, state)
    return {"restored_at": now_iso()}


@fail_fast
def recall_check(plan_xcom: XCom) -> XCom | None:
    """One sensor poke (reads only): None means "not indexed yet"; raises when it never can pass."""
    plan = codec.decode(Plan, plan_xcom)
    with _qdrant(plan.spec.qdrant_conn_id) as (client, state):
        found = recall.poke(client, plan, state)
    return codec.encode_dict(found) if found is not None else None


@fail_fast
def build_report(
    plan_xcom: XCom,
    results: list[XCom],
    caught_up: XCom,
    recall_xcom: XCom,
    restored: XCom | None = None,
) -> XCom:
    """Quality of both models, and the report the approval shows.

    Every measurement is made before any gate is judged: when one fails, the whole report
    (every metric, old vs new) goes to the log and the state store, then the task fails.
    """
    plan = codec.decode(Plan, plan_xcom)
    provider = build_provider(plan.spec)
    dag_run = get_current_context()["dag_run"]
    started = dag_run.start_date
    run_started = started.isoformat(timespec="seconds") if started else None
    partitions = [codec.decode(PartitionResult, r) for r in results]
    checked = codec.decode(recall.RecallResult, recall_xcom)
    old_model = build_source_provider(plan)
    with _qdrant(plan.spec.qdrant_conn_id) as (client, state):
        own, compared = quality.evaluate(client, plan, provider, old_model)
        replayed = _replay(client, plan, provider, old_model)
        fitted = linear_map.summary_of(state, plan.migration_id)
        reported = now_iso()
        evidence = Evidence(
            recall=checked,
            self_retrieval=own,
            quality=compared,
            backfill=BackfillSummary.of(partitions),
            catch_up=codec.decode(CatchUpResult, caught_up),
            catch_up_changes=codec.decode_as(list[int], caught_up.get("changes_per_pass", [])),
            linear_map=fitted,
            skipped_examples=skips.examples(state, plan.migration_id),
            run_started_at=run_started,
            reported_at=reported,
            timeline=Timeline.of(
                run_started, partitions, caught_up, restored, checked, reported, fitted
            ),
            replay=replayed,
        )
        gates = quality.failures(plan, own, compared) + traffic.failures(replayed)
        report = Report(plan, evidence, failures=gates)
        record = report.record(run_id=dag_run.run_id)
        if report.failures:
            record = dataclasses.replace(record, outcome="failed: " + " ".join(report.failures))
        Reports(state).put(record)
    if report.failures:
        log.error("The checks failed. The full report:\n%s", report.markdown)
        raise quality.QualityRegressionError(
            " ".join(report.failures) + f" The full report (every metric, old vs new) is in "
            f"this task's log and in the state store (record `report` of {plan.migration_id})."
        )
    return codec.encode_dict(record)


def _replay(
    client: QdrantClient,
    plan: Plan,
    provider: EmbeddingProvider,
    old_model: EmbeddingProvider | None,
) -> traffic.Replay | None:
    """The query log replayed on both models (and judged), when the params name one."""
    spec = plan.spec
    if spec.query_log is None or old_model is None:
        return None
    inline = _inline_queries(dict(get_current_context()["params"]))
    sample = querylog.read(client, spec.query_log, inline, spec.query_log_sample)
    judge = build_judge(spec)
    try:
        return traffic.replay(client, plan, (old_model, provider), sample, judge)
    finally:
        if judge is not None:
            judge.close()


@fail_fast
def swap_alias(plan_xcom: XCom) -> XCom:
    """Final catch-up, the atomic switch, then the window's writes reconciled; the new
    vectors' index threads are no longer capped."""
    plan = codec.decode(Plan, plan_xcom)
    strategy = strategy_of(plan)
    models = Models(build_provider(plan.spec), build_source_provider(plan))
    with _run_writing(plan) as (client, state, heartbeat):
        record = Migrations(state).require(plan.migration_id)
        switched = strategy.switch(client, state, record, models, heartbeat=heartbeat)
        lifted = strategy.lift_index_cap(client)
    if models.old is None:
        log.warning(
            "The old model is unknown: changes made from now on cannot be kept in %s's old "
            "vectors, so a rollback would lose them. Set source_provider and source_model.",
            plan.source.collection,
        )
    assets.publish(get_current_context(), switched.move)
    return switched.to_dict() | {"index_threads": lifted}


@fail_fast
def finish_migration(plan_xcom: XCom | None) -> XCom:
    """The run's last task, whatever happened: its outcome recorded, the migration freed.

    Swapped or rejected: it succeeds and says so. A run that failed before (or never held
    the migration) fails here too, so the run's state says it did not migrate.
    """
    plan = codec.decode(Plan, plan_xcom) if plan_xcom else None
    if plan is None or plan.spec.dry_run:
        raise AirflowSkipException("Nothing was migrated (a dry run, or nothing to do).")
    if not strategy_of(plan).rebuilds:
        raise AirflowSkipException("A quantization change: apply_quantization is the end.")
    ti = get_current_context()["ti"]
    chosen = ti.xcom_pull(task_ids="approve_swap", key=ANSWER_KEY)
    swapped = ti.xcom_pull(task_ids="swap_alias")
    with writers.writing(plan.spec.qdrant_conn_id, plan.migration_id) as (_client, state, _):
        if not writers.holds_run(state, plan.migration_id):
            holder = Leases(state).holder(f"run/{plan.migration_id}")
            raise AirflowFailException(
                f"This run did not migrate: {holder or 'no run'} drives {plan.migration_id}."
            )
        outcome = _record_outcome(state, plan, chosen, swapped)
    writers.release_run(plan.spec.qdrant_conn_id, plan.migration_id)
    log.info("Migration %s: %s", plan.migration_id, outcome)
    if outcome.startswith("failed"):
        raise AirflowFailException(f"Migration {plan.migration_id} {outcome}")
    return {"outcome": outcome, "migration_id": plan.migration_id, "approval": chosen}


def _record_outcome(
    state: QdrantStateStore, plan: Plan, chosen: str | None, swapped: XCom | None
) -> str:
    migrations, reports = Migrations(state), Reports(state)
    record = migrations.get(plan.migration_id)
    report = reports.get(plan.migration_id)
    status = record.status.value if record is not None else "not recorded"
    if swapped:
        outcome = "swapped"
    elif chosen == "Reject" and record is not None and record.status is MigrationStatus.READY:
        migrations.transition(record, MigrationStatus.REJECTED, rejected_at=now_iso())
        outcome = "rejected: the alias stays; retire the migration to delete its collection"
    else:
        outcome = (
            f"failed before the swap (approval: {chosen}, status: {status}): see the failed "
            "task; a new run of the same migration resumes it"
        )
    if report is not None:
        known = report.outcome or ""
        if outcome.startswith("failed") and known.startswith("failed: "):
            outcome = known  # the gate that failed said why: keep its words
        reports.put(dataclasses.replace(report, outcome=outcome))
    return outcome


# -- the catch-up DAG ------------------------------------------------------------------


@fail_fast
def migrations_to_catch_up(params: dict[str, Any]) -> list[str]:
    """Every migration that has a target and is kept in sync (not retired or rejected)."""
    refuse_unknown(params, CATCH_UP_PARAM_SCHEMA, "qdrant_migration_catch_up")
    with _qdrant(str(params["qdrant_conn_id"])) as (_client, state):
        wanted = [
            record.migration_id
            for record in Migrations(state).all()
            if record.status.kept_in_sync and record.plan is not None
        ]
    log.info("Migrations to catch up: %s", ", ".join(wanted) or "none")
    return wanted


@fail_fast
def catch_up_migration(params: dict[str, Any], migration_id: str) -> XCom:
    """Bring one migration's collections level, in the direction the alias says.

    The collection the alias serves is the source of truth: before the swap the new one
    follows the old one; after it, the old one follows the new one (with the old model),
    so a rollback loses nothing; after a rollback, forward again.
    """
    conn_id = str(params["qdrant_conn_id"])
    try:
        with writers.writing(conn_id, migration_id, wait_s=0) as (client, state, heartbeat):
            record = Migrations(state).require(migration_id)
            if not record.status.kept_in_sync or record.plan is None:
                raise AirflowSkipException(
                    f"{migration_id} is {record.status.value}: nothing to do."
                )
            strategy = strategy_of(record.plan)
            models = Models(build_provider(record.plan.spec), build_source_provider(record.plan))
            pacer = strategy.pacer(client)
            passes = strategy.follow_pass(
                client, state, record, models, heartbeat=heartbeat, pacer=pacer
            )
            with pacer.probing(client):
                result = passes.run()
    except LeaseBusyError as busy:
        raise AirflowSkipException(f"Skipping {migration_id} this time: {busy}") from busy
    return {"migration_id": migration_id, **codec.encode_dict(result)}


# -- the lifecycle DAG -----------------------------------------------------------------


@fail_fast
def choose_action(params: dict[str, Any]) -> str:
    """The action asked for, once the params are known to fit it (the first task fails)."""
    return lifecycle_action(params)


@fail_fast
def rollback(params: dict[str, Any]) -> XCom:
    """Point the alias back at the collection it served before its last swap, losing nothing:
    a final mirror pass, the atomic move, then the window's writes reconciled."""
    alias = str(params.get("alias") or "")
    conn_id = str(params["qdrant_conn_id"])
    with _qdrant(conn_id) as (client, state):
        record = aliases.swapped_migration(client, state, alias)
    plan = record.plan
    if plan is None:
        raise aliases.LifecycleError(f"{record.migration_id} has no recorded plan to roll back.")
    old_model = build_source_provider(plan)
    if old_model is None and not params.get("accept_lost_writes"):
        raise aliases.LifecycleError(
            f"The model that made {plan.source.collection!r}'s vectors is unknown, so what was "
            f"written to {plan.target_collection!r} since the swap cannot be copied back: a "
            "rollback would lose it. Re-run the migration with source_provider and "
            "source_model, or trigger with accept_lost_writes=true."
        )
    models = Models(build_provider(plan.spec), old_model)
    strategy = strategy_of(plan)
    with writers.writing(conn_id, record.migration_id) as (client, state, heartbeat):
        record = Migrations(state).require(record.migration_id)
        strategy.require_action(record, LifecycleAction.ROLLBACK, running=None)
        switched = strategy.switch(
            client, state, record, models, heartbeat=heartbeat, rollback=True
        )
    assets.publish(get_current_context(), switched.move)
    return switched.to_dict()


@fail_fast
def retire(params: dict[str, Any]) -> XCom:
    """Delete the collection a migration left unused and stop catching it up."""
    migration_id = str(params.get("migration_id") or "")
    conn_id = str(params["qdrant_conn_id"])
    with writers.writing(conn_id, migration_id) as (client, state, _heartbeat):
        record = Migrations(state).get(migration_id)
        if record is None:
            raise aliases.LifecycleError(f"No migration {migration_id!r} is recorded.")
        if record.status is MigrationStatus.RETIRED:
            return {"migration_id": migration_id, "deleted": None, "already": True}
        if record.plan is None:
            raise aliases.LifecycleError(f"{migration_id} has no recorded plan to retire.")
        strategy = strategy_of(record.plan)
        running = writers.run_holding(state, migration_id)
        strategy.require_action(record, LifecycleAction.RETIRE, running=running)
        days = float(params["observation_days"])
        return strategy.retire(client, state, record, observation_days=days)
