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
    collections,
    compatibility,
    inplace,
    linear_map,
    quantization,
)
from include.qdrant_migration.airflow import assets, writers
from include.qdrant_migration.airflow.hooks import (
    MigrationQdrantHook,
    build_provider,
    build_source_provider,
)
from include.qdrant_migration.airflow.operators import ANSWER_KEY
from include.qdrant_migration.checks import CheckFailedError, quality, recall
from include.qdrant_migration.leases import LeaseBusyError
from include.qdrant_migration.plan import Plan
from include.qdrant_migration.providers import AuthError, EmbeddingProvider, ProviderConfigError
from include.qdrant_migration.providers.openai_provider import OpenAIProvider
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
    MigrationRecord,
    Migrations,
    MigrationStatus,
    QdrantStateStore,
    RecordKind,
    StatusError,
    now_iso,
)
from include.qdrant_migration.strategy import AlreadyMigratedError, CompatibilityError
from include.qdrant_migration.sync import skips, transform
from include.qdrant_migration.sync.backfill import (
    BackfillSettings,
    BackfillSummary,
    PartitionBackfill,
    PartitionJob,
    PartitionResult,
)
from include.qdrant_migration.sync.batch import BatchBackfill, Waiting
from include.qdrant_migration.sync.catchup import (
    CatchUp,
    CatchUpJob,
    CatchUpResult,
    SyncError,
    converge,
    follow_job,
)
from include.qdrant_migration.sync.partitions import Partition, partitions_for
from include.qdrant_migration.sync.served import plan_pacer
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
    aliases.AliasMovedError,
    aliases.LifecycleError,
    StatusError,
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
    with _qdrant(spec.qdrant_conn_id) as (client, state):
        plan = compatibility.assess(client, spec, provider, state)
    build_source_provider(plan)  # a wrong old model or connection fails here, not at the report
    log.info("Strategy %s:\n%s", plan.strategy, render_plan(plan))
    if spec.dry_run:
        log.info("Dry run: nothing was written, and every task after this one is skipped.")
    return plan.to_dict()


@fail_fast
def fit_linear_map(plan_xcom: XCom) -> XCom:
    """Embed the sample, choose, fit and test the map; refuse it below min_map_retention
    or when it would search worse than the old model (when that model is known)."""
    plan = Plan.from_dict(plan_xcom)
    provider, old_model = build_provider(plan.spec), build_source_provider(plan)
    with _run_writing(plan) as (client, state, _heartbeat):
        return linear_map.fit_for_plan(client, plan, provider, state, old_model).to_dict()


def quantization_report(plan_xcom: XCom) -> XCom:
    """The small report a quantization-only change is approved on."""
    return {"markdown": render_quantization(Plan.from_dict(plan_xcom))}


@fail_fast
def apply_quantization(plan_xcom: XCom) -> XCom:
    """The one sanctioned write to a source: its quantization config. No points written."""
    plan = Plan.from_dict(plan_xcom)
    wanted = plan.spec.quantization or "none"
    with writers.writing(plan.spec.qdrant_conn_id, plan.migration_id) as (
        client,
        state,
        heartbeat,
    ):
        aliases.ensure_alias_at(client, plan.alias, plan.source.collection)
        result = quantization.apply_in_place(
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
        result["recall"] = measured.to_dict()
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
                strategy=plan.strategy.value,
                status=MigrationStatus.QUANTIZED,
                plan=plan,
                lineage=plan.target_lineage,
                quantized_at=now_iso(),
                quantization=result,
            )
        )
    return dict(result)


@fail_fast
def create_collection(plan_xcom: XCom) -> XCom:
    plan = Plan.from_dict(plan_xcom)
    with _run_writing(plan) as (client, state, _heartbeat):
        if plan.in_place:
            return dict(inplace.add_vector(client, plan, state))
        return dict(collections.create_target(client, plan, state))


@fail_fast
def plan_partitions(plan_xcom: XCom) -> list[XCom]:
    plan = Plan.from_dict(plan_xcom)
    with _run_writing(plan) as (client, state, _heartbeat):
        return [p.to_dict() for p in partitions_for(client, state, plan)]


@fail_fast
def backfill_batch(plan_xcom: XCom, partition_xcom: XCom) -> XCom:
    plan = Plan.from_dict(plan_xcom)
    part = Partition.from_dict(partition_xcom)
    settings = BackfillSettings.of(plan, run_id=str(get_current_context()["run_id"]))
    with _run_writing(plan) as (client, state, heartbeat):
        job: PartitionJob
        if plan.strategy.derives_vectors:
            derive = transform.transform_for(plan, state)
            known = transform.known_vectors(plan, state)
            job = transform.PartitionTransform(client, plan, part, derive, state, settings, known)
        else:
            # The parallel tasks of the run share the provider budget given in the params.
            provider = build_provider(plan.spec, partitions=part.of)
            backfill = inplace.InPlaceBackfill if plan.in_place else PartitionBackfill
            job = backfill(client, plan, part, provider, state, settings)
        job.heartbeat = heartbeat
        job.pacer = plan_pacer(client, plan, ways=plan.spec.parallel_tasks(part.of))
        if plan.spec.embedding_mode == "batch" and not plan.strategy.derives_vectors:
            assert isinstance(provider, OpenAIProvider)  # the spec allows batch for it only
            outcome = BatchBackfill(job, provider).run()
            if isinstance(outcome, Waiting):
                # Waits without a worker slot: the task is rescheduled and polls again.
                again = datetime.now(tz=UTC) + timedelta(seconds=outcome.poll_s)
                raise AirflowRescheduleException(again)
            return outcome.to_dict()
        return job.run().to_dict()


@fail_fast
def catch_up(plan_xcom: XCom) -> XCom:
    """Copy what changed in the source meanwhile, pass after pass until the lag is under
    ``max_catch_up_lag``; the migration is then ready for its checks and approval."""
    plan = Plan.from_dict(plan_xcom)
    provider = build_provider(plan.spec)
    with _run_writing(plan) as (client, state, heartbeat):
        passes = _forward_pass(client, state, plan, provider, heartbeat)
        with passes.pacer.probing(client):
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
    return converged.to_dict()


def _forward_pass(
    client: QdrantClient,
    state: QdrantStateStore,
    plan: Plan,
    provider: EmbeddingProvider,
    heartbeat: Callable[[], None],
) -> CatchUp | inplace.InPlaceSync:
    """The pass that brings the new vectors level with the served collection's changes."""
    pacer = plan_pacer(client, plan)
    if plan.in_place:
        fill = inplace.VectorFill(str(plan.target_vector), provider, plan.migration_id)
        return inplace.InPlaceSync(client, plan, [fill], state, heartbeat=heartbeat, pacer=pacer)
    job = CatchUpJob.forward(plan, provider)
    return CatchUp(client, job, state, heartbeat=heartbeat, pacer=pacer)


@fail_fast
def restore_indexing(plan_xcom: XCom) -> None:
    """The bulk load is over: let Qdrant build the index (the only write before the check)."""
    plan = Plan.from_dict(plan_xcom)
    with _run_writing(plan) as (client, state, _heartbeat):
        collections.finish_bulk_load(client, plan, state)


@fail_fast
def recall_check(plan_xcom: XCom) -> XCom | None:
    """One sensor poke (reads only): None means "not indexed yet"; raises when it never can pass."""
    plan = Plan.from_dict(plan_xcom)
    with _qdrant(plan.spec.qdrant_conn_id) as (client, state):
        found = recall.poke(client, plan, state)
    return found.to_dict() if found is not None else None


@fail_fast
def build_report(plan_xcom: XCom, results: list[XCom], caught_up: XCom, recall_xcom: XCom) -> XCom:
    """Quality of both models, and the report the approval shows.

    Every measurement is made before any gate is judged: when one fails, the whole report
    (every metric, old vs new) goes to the log and the state store, then the task fails.
    """
    plan = Plan.from_dict(plan_xcom)
    provider = build_provider(plan.spec)
    dag_run = get_current_context()["dag_run"]
    started = dag_run.start_date
    with _qdrant(plan.spec.qdrant_conn_id) as (client, state):
        own, compared = quality.evaluate(client, plan, provider, build_source_provider(plan))
        evidence = Evidence(
            recall=recall.RecallResult.from_dict(recall_xcom),
            self_retrieval=own,
            quality=compared,
            backfill=BackfillSummary.of([PartitionResult.from_dict(r) for r in results]),
            catch_up=CatchUpResult.from_dict(caught_up),
            catch_up_changes=list(caught_up.get("changes_per_pass", [])),
            linear_map=linear_map.summary_of(state, plan.migration_id),
            skipped_examples=skips.examples(state, plan.migration_id),
            run_started_at=started.isoformat(timespec="seconds") if started else None,
            reported_at=now_iso(),
        )
        report = Report(plan, evidence, failures=quality.failures(plan, own, compared))
        doc = report.to_dict() | {"run_id": dag_run.run_id}
        if report.failures:
            doc["outcome"] = "failed: " + " ".join(report.failures)
        state.put(RecordKind.REPORT, plan.migration_id, doc)
    if report.failures:
        log.error("The checks failed. The full report:\n%s", report.markdown)
        raise quality.QualityRegressionError(
            " ".join(report.failures) + f" The full report (every metric, old vs new) is in "
            f"this task's log and in the state store (record `report` of {plan.migration_id})."
        )
    return doc


@fail_fast
def swap_alias(plan_xcom: XCom) -> XCom:
    """Final catch-up, the atomic alias move, then the window's writes reconciled."""
    plan = Plan.from_dict(plan_xcom)
    provider = build_provider(plan.spec)
    with _run_writing(plan) as (client, state, heartbeat):
        record = Migrations(state).require(plan.migration_id)
        if plan.in_place:
            switched = _switch_in_place(client, state, record, provider, heartbeat)
            lifted = inplace.lift_index_cap(client, plan)
            assets.publish(get_current_context(), switched.move)
            return switched.to_dict() | {"index_threads": lifted}
        job = CatchUpJob.forward(plan, provider)
        switched = aliases.switch(
            client,
            state,
            record,
            final=CatchUp(client, job, state, heartbeat=heartbeat),
            reconcile=CatchUp(client, job.reconciling(), state, heartbeat=heartbeat),
        )
        lifted = collections.lift_index_cap(client, plan)
    if build_source_provider(plan) is None:
        log.warning(
            "The old model is unknown: changes made from now on cannot be mirrored to %s, "
            "so a rollback would lose them. Set source_provider and source_model.",
            plan.source.collection,
        )
    assets.publish(get_current_context(), switched.move)
    return switched.to_dict() | {"index_threads": lifted}


def _switch_in_place(
    client: QdrantClient,
    state: QdrantStateStore,
    record: MigrationRecord,
    new_model: EmbeddingProvider,
    heartbeat: Callable[[], None],
    *,
    rollback: bool = False,
) -> aliases.Switched:
    """Level the vector about to be served, switch, then fill what raced the switch."""
    plan = record.plan
    assert plan is not None
    old_model = build_source_provider(plan)
    leaving = str(plan.target_vector if rollback else plan.vector_name)
    coming = str(plan.vector_name if rollback else plan.target_vector)
    models = {str(plan.target_vector): new_model, str(plan.vector_name): old_model}
    final = None
    if (model := models[coming]) is not None:
        fill = inplace.VectorFill(coming, model, inplace.scope_of(plan, coming))
        final = inplace.InPlaceSync(client, plan, [fill], state, heartbeat=heartbeat)
    switched_status = MigrationStatus.ROLLED_BACK if rollback else MigrationStatus.SWAPPED
    switched = dataclasses.replace(record, status=switched_status)
    try:
        fills = inplace.fills_for(plan, switched, coming, new_model, old_model)
    except SyncError:
        log.warning("The old model is unknown: vector %s cannot be kept level.", leaving)
        fills = []
    after = inplace.InPlaceSync(client, plan, fills, state, heartbeat=heartbeat)
    return inplace.switch(client, state, record, rollback=rollback, final=final, after=after)


@fail_fast
def finish_migration(plan_xcom: XCom | None) -> XCom:
    """The run's last task, whatever happened: its outcome recorded, the migration freed.

    Swapped or rejected: it succeeds and says so. A run that failed before (or never held
    the migration) fails here too, so the run's state says it did not migrate.
    """
    if not plan_xcom or plan_xcom["spec"]["dry_run"]:
        raise AirflowSkipException("Nothing was migrated (a dry run, or nothing to do).")
    plan = Plan.from_dict(plan_xcom)
    if plan.strategy is Strategy.QUANTIZATION_ONLY:
        raise AirflowSkipException("A quantization change: apply_quantization is the end.")
    ti = get_current_context()["ti"]
    chosen = ti.xcom_pull(task_ids="approve_swap", key=ANSWER_KEY)
    swapped = ti.xcom_pull(task_ids="swap_alias")
    with writers.writing(plan.spec.qdrant_conn_id, plan.migration_id) as (_client, state, _):
        if not writers.holds_run(state, plan.migration_id):
            holder = state.get(RecordKind.LEASE, f"run/{plan.migration_id}") or {}
            raise AirflowFailException(
                f"This run did not migrate: {holder.get('owner', 'no run')} drives "
                f"{plan.migration_id}."
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
    migrations = Migrations(state)
    record = migrations.get(plan.migration_id)
    report = state.get(RecordKind.REPORT, plan.migration_id)
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
        known = str(report.get("outcome") or "")
        if outcome.startswith("failed") and known.startswith("failed: "):
            outcome = known  # the gate that failed said why: keep its words
        state.put(RecordKind.REPORT, plan.migration_id, report | {"outcome": outcome})
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
            plan = record.plan
            new_model, old_model = build_provider(plan.spec), build_source_provider(plan)
            pacer = plan_pacer(client, plan)
            passes: CatchUp | inplace.InPlaceSync
            if plan.in_place:
                served = inplace.active_vector(client, plan)
                fills = inplace.fills_for(plan, record, served, new_model, old_model)
                passes = inplace.InPlaceSync(
                    client, plan, fills, state, heartbeat=heartbeat, pacer=pacer
                )
            else:
                serving = aliases.current_target(client, plan.alias)
                job = follow_job(plan, serving, new_model, old_model)
                passes = CatchUp(client, job, state, heartbeat=heartbeat, pacer=pacer)
            with pacer.probing(client):
                result = passes.run()
    except LeaseBusyError as busy:
        raise AirflowSkipException(f"Skipping {migration_id} this time: {busy}") from busy
    return {"migration_id": migration_id, **result.to_dict()}


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
    with writers.writing(conn_id, record.migration_id) as (client, state, heartbeat):
        record = Migrations(state).require(record.migration_id)
        if plan.in_place:
            new_model = build_provider(plan.spec)
            switched = _switch_in_place(client, state, record, new_model, heartbeat, rollback=True)
            assets.publish(get_current_context(), switched.move)
            return switched.to_dict()
        final = reconcile = None
        if old_model is not None:
            job = CatchUpJob.forward(plan, build_provider(plan.spec)).mirror(old_model)
            final = CatchUp(client, job, state, heartbeat=heartbeat)
            reconcile = CatchUp(client, job.reconciling(), state, heartbeat=heartbeat)
        switched = aliases.switch(
            client, state, record, rollback=True, final=final, reconcile=reconcile
        )
    assets.publish(get_current_context(), switched.move)
    return switched.to_dict()


@fail_fast
def retire(params: dict[str, Any]) -> XCom:
    """Delete the collection a migration left unused and stop catching it up."""
    migration_id = str(params.get("migration_id") or "")
    conn_id = str(params["qdrant_conn_id"])
    with writers.writing(conn_id, migration_id) as (client, state, _heartbeat):
        running = writers.run_holding(state, migration_id)
        if running:
            raise aliases.LifecycleError(
                f"{migration_id} is being run by {running}; let it finish (approve or reject) "
                "before retiring it."
            )
        days = float(params["observation_days"])
        record = Migrations(state).get(migration_id)
        if record is not None and record.plan is not None and record.plan.in_place:
            if record.status is MigrationStatus.RETIRED:
                return {"migration_id": migration_id, "deleted": None, "already": True}
            return dict(inplace.retire(client, state, record, observation_days=days))
        retired = aliases.retire(client, state, migration_id=migration_id, observation_days=days)
    return dict(retired)
