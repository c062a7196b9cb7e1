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
from typing import Any, ParamSpec, TypeVar

from airflow.sdk import get_current_context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from qdrant_client import QdrantClient

from include.qdrant_migration import (
    aliases,
    collections,
    compatibility,
    linear_map,
    quantization,
)
from include.qdrant_migration.airflow import assets
from include.qdrant_migration.airflow.hooks import (
    MigrationQdrantHook,
    build_provider,
    build_source_provider,
)
from include.qdrant_migration.checks import CheckFailedError, quality, recall
from include.qdrant_migration.plan import Plan
from include.qdrant_migration.providers import AuthError, ProviderConfigError
from include.qdrant_migration.report import Evidence, Report, render_plan, render_quantization
from include.qdrant_migration.spec import MigrationSpec, SpecError
from include.qdrant_migration.state import (
    LeaseBusyError,
    MigrationRecord,
    Migrations,
    MigrationStatus,
    QdrantStateStore,
    RecordKind,
    StatusError,
    lease,
    now_iso,
)
from include.qdrant_migration.strategy import AlreadyMigratedError, CompatibilityError
from include.qdrant_migration.sync import transform
from include.qdrant_migration.sync.backfill import (
    BackfillSettings,
    BackfillSummary,
    PartitionBackfill,
    PartitionJob,
    PartitionResult,
)
from include.qdrant_migration.sync.catchup import CatchUp, CatchUpJob, CatchUpResult
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
    aliases.AliasMovedError,
    aliases.LifecycleError,
    StatusError,
)
#: How long a migration's catch-up or swap waits for another writer of its target.
WRITER_WAIT_S = 3600


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


def _owner() -> str:
    """Who holds a lease: this task of this run (a retry of it takes its own lease back)."""
    ti = get_current_context()["ti"]
    return f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{ti.map_index}"


@contextmanager
def _writer_lease(state: QdrantStateStore, migration_id: str, wait_s: float) -> Iterator[None]:
    """Exclusive write access to the migration's target (catch-ups, swap, retire)."""
    with lease(state, f"target/{migration_id}", _owner(), wait_s=wait_s):
        yield


# -- the migration DAG -----------------------------------------------------------------


@fail_fast
def assess_compatibility(params: dict[str, Any]) -> XCom:
    spec = MigrationSpec.from_params(params)
    provider = build_provider(spec)
    with _qdrant(spec.qdrant_conn_id) as (client, state):
        plan = compatibility.assess(client, spec, provider, state)
    log.info("Strategy %s:\n%s", plan.strategy, render_plan(plan))
    if spec.dry_run:
        log.info("Dry run: nothing was written, and every task after this one is skipped.")
    return plan.to_dict()


@fail_fast
def fit_linear_map(plan_xcom: XCom) -> XCom:
    """Embed the sample, fit and test the map; refuse it below min_map_retention."""
    plan = Plan.from_dict(plan_xcom)
    provider = build_provider(plan.spec)
    with _qdrant(plan.spec.qdrant_conn_id) as (client, state):
        return linear_map.fit_for_plan(client, plan, provider, state).to_dict()


def quantization_report(plan_xcom: XCom) -> XCom:
    """The small report a quantization-only change is approved on."""
    return {"markdown": render_quantization(Plan.from_dict(plan_xcom))}


@fail_fast
def apply_quantization(plan_xcom: XCom) -> XCom:
    """The one sanctioned write to a source: its quantization config. No points written."""
    plan = Plan.from_dict(plan_xcom)
    wanted = plan.spec.quantization or "none"
    with _qdrant(plan.spec.qdrant_conn_id) as (client, state):
        aliases.ensure_alias_at(client, plan.alias, plan.source.collection)
        result = quantization.apply_in_place(
            client, plan.source.collection, plan.vector_name, wanted
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
    with _qdrant(plan.spec.qdrant_conn_id) as (client, state):
        return dict(collections.create_target(client, plan, state))


@fail_fast
def plan_partitions(plan_xcom: XCom) -> list[XCom]:
    plan = Plan.from_dict(plan_xcom)
    with _qdrant(plan.spec.qdrant_conn_id) as (client, state):
        return [p.to_dict() for p in partitions_for(client, state, plan)]


@fail_fast
def backfill_batch(plan_xcom: XCom, partition_xcom: XCom) -> XCom:
    plan = Plan.from_dict(plan_xcom)
    part = Partition.from_dict(partition_xcom)
    settings = BackfillSettings.of(plan)
    with _qdrant(plan.spec.qdrant_conn_id) as (client, state):
        job: PartitionJob
        if plan.strategy.derives_vectors:
            derive = transform.transform_for(plan, state)
            job = transform.PartitionTransform(client, plan, part, derive, state, settings)
        else:
            # The parallel tasks of the run share the provider budget given in the params.
            provider = build_provider(plan.spec, partitions=part.of)
            job = PartitionBackfill(client, plan, part, provider, state, settings)
        return job.run().to_dict()


@fail_fast
def catch_up(plan_xcom: XCom) -> XCom:
    """After the backfill: copy what changed in the source while it ran; then it is ready."""
    plan = Plan.from_dict(plan_xcom)
    provider = build_provider(plan.spec)
    with _qdrant(plan.spec.qdrant_conn_id) as (client, state):
        with _writer_lease(state, plan.migration_id, wait_s=WRITER_WAIT_S):
            result = CatchUp(client, CatchUpJob.forward(plan, provider), state).run()
        migrations = Migrations(state)
        record = migrations.require(plan.migration_id)
        if record.status is not MigrationStatus.READY:
            migrations.transition(record, MigrationStatus.READY)
    return result.to_dict()


@fail_fast
def restore_indexing(plan_xcom: XCom) -> None:
    """The bulk load is over: let Qdrant build the index (the only write before the check)."""
    plan = Plan.from_dict(plan_xcom)
    with _qdrant(plan.spec.qdrant_conn_id) as (client, state):
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
    """Quality of both models, and the report the approval shows."""
    plan = Plan.from_dict(plan_xcom)
    provider = build_provider(plan.spec)
    with _qdrant(plan.spec.qdrant_conn_id) as (client, state):
        own, compared = quality.evaluate(client, plan, provider, build_source_provider(plan))
        evidence = Evidence(
            recall=recall.RecallResult.from_dict(recall_xcom),
            self_retrieval=own,
            quality=compared,
            backfill=BackfillSummary.of([PartitionResult.from_dict(r) for r in results]),
            catch_up=CatchUpResult.from_dict(caught_up),
            linear_map=linear_map.summary_of(state, plan.migration_id),
        )
        report = Report(plan, evidence).to_dict()
        state.put(RecordKind.REPORT, plan.migration_id, report)
    return report


@fail_fast
def swap_alias(plan_xcom: XCom) -> XCom:
    """A last catch-up (what changed while the approval waited), then the atomic swap."""
    plan = Plan.from_dict(plan_xcom)
    provider = build_provider(plan.spec)
    with _qdrant(plan.spec.qdrant_conn_id) as (client, state):
        aliases.ensure_alias_at(client, plan.alias, plan.source.collection)
        with _writer_lease(state, plan.migration_id, wait_s=WRITER_WAIT_S):
            final = CatchUp(client, CatchUpJob.forward(plan, provider), state).run()
            record = Migrations(state).require(plan.migration_id)
            move = aliases.swap_alias(client, state, record)
    assets.publish(get_current_context(), move)
    return dataclasses.asdict(move) | {"final_catch_up": final.to_dict()}


# -- the catch-up DAG ------------------------------------------------------------------


@fail_fast
def migrations_to_catch_up(params: dict[str, Any]) -> list[str]:
    """Every migration that has a target and is kept in sync (not retired or rejected)."""
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
    """Bring one migration's collections level.

    Before the swap the target follows the source. After it, the application writes to
    the new collection, so changes are mirrored back to the old one with the old model
    (when it is known), keeping a rollback lossless during the observation period.
    """
    with _qdrant(str(params["qdrant_conn_id"])) as (client, state):
        record = Migrations(state).require(migration_id)
        if not record.status.kept_in_sync or record.plan is None:
            raise AirflowSkipException(f"{migration_id} is {record.status.value}: nothing to do.")
        try:
            with _writer_lease(state, migration_id, wait_s=0):
                return _catch_up_recorded(client, state, record, record.plan)
        except LeaseBusyError as busy:
            raise AirflowSkipException(f"Skipping {migration_id} this time: {busy}") from busy


def _catch_up_recorded(
    client: QdrantClient, state: QdrantStateStore, record: MigrationRecord, plan: Plan
) -> XCom:
    job = CatchUpJob.forward(plan, build_provider(plan.spec))
    if record.status is MigrationStatus.SWAPPED:
        old_model = build_source_provider(plan)
        if old_model is None:
            log.warning(
                "%s: the old model is unknown, so changes made since the swap are not mirrored "
                "to %s; a rollback would lose them.",
                plan.migration_id,
                plan.source.collection,
            )
            return {"migration_id": plan.migration_id, "mirrored": False}
        job = job.mirror(old_model)
    result = CatchUp(client, job, state).run()
    return {"migration_id": plan.migration_id, "direction": job.direction, **result.to_dict()}


# -- the lifecycle DAG -----------------------------------------------------------------


@fail_fast
def rollback(params: dict[str, Any]) -> XCom:
    """Point the alias back at the collection it served before its last swap."""
    if not params.get("alias"):
        raise aliases.LifecycleError("rollback needs the alias to roll back.")
    with _qdrant(str(params["qdrant_conn_id"])) as (client, state):
        move = aliases.rollback(client, state, alias=str(params["alias"]))
    assets.publish(get_current_context(), move)
    return dataclasses.asdict(move)


@fail_fast
def retire(params: dict[str, Any]) -> XCom:
    """Delete the collection a migration left unused and stop catching it up."""
    migration_id = str(params.get("migration_id") or "")
    if not migration_id:
        raise aliases.LifecycleError("retire needs the migration_id (see its report).")
    with _qdrant(str(params["qdrant_conn_id"])) as (client, state):  # noqa: SIM117 - needs state
        with _writer_lease(state, migration_id, wait_s=600):
            retired = aliases.retire(
                client,
                state,
                migration_id=migration_id,
                observation_days=float(params["observation_days"]),
            )
    return dict(retired)
