"""The thin layer that knows Airflow: connections in, plain functions called, XComs out.

Each function here is the body of one DAG task. They resolve Airflow connections into
plain settings, open Qdrant for the duration of the task (serialized for the embedded
store), and call the Airflow-free logic modules.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from airflow.providers.qdrant.hooks.qdrant import QdrantHook
from airflow.sdk import BaseHook, get_current_context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from qdrant_client import QdrantClient

from include.qdrant_migration import (
    aliases,
    backfill,
    catchup,
    collections,
    compatibility,
    linear_map,
    quality,
    quantization,
    recall,
    transform,
)
from include.qdrant_migration.partitions import Partition, partitions_for
from include.qdrant_migration.providers import (
    AuthError,
    Credentials,
    EmbeddingProvider,
    ProviderConfigError,
    get_provider,
)
from include.qdrant_migration.qdrant import QdrantSettings, open_client
from include.qdrant_migration.report import (
    build_report,
    render_markdown,
    render_plan,
    render_quantization,
)
from include.qdrant_migration.spec import (
    LINEAR_MAP,
    MATRYOSHKA_TRUNCATION,
    QUANTIZATION_ONLY,
    MigrationSpec,
    SpecError,
    share_budget,
)
from include.qdrant_migration.state import LeaseBusyError, QdrantStateStore, lease, now_iso

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

#: Errors that say the request or the data is wrong: retrying cannot fix them, so the task
#: fails at once with the message instead of retrying.
USER_ERRORS: tuple[type[Exception], ...] = (
    SpecError,
    ProviderConfigError,
    AuthError,
    compatibility.CompatibilityError,
    collections.CollectionConflictError,
    backfill.BadTextError,
    recall.CheckFailedError,
    quality.QualityRegressionError,
    aliases.AliasMovedError,
    aliases.LifecycleError,
)


def fail_fast(func: Callable[P, R]) -> Callable[P, R]:
    """Turn :data:`USER_ERRORS` into AirflowFailException (no retries, message kept)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except compatibility.AlreadyMigratedError as done:
            raise AirflowSkipException(str(done)) from done
        except USER_ERRORS as error:
            raise AirflowFailException(f"{type(error).__name__}: {error}") from error

    return wrapper


class MigrationQdrantHook(QdrantHook):
    """The Qdrant provider's hook, plus an embedded local-mode store (extra ``path``).

    A connection with ``{"path": "/data/qdrant"}`` in its extra opens qdrant-client's local
    mode on disk; otherwise the server settings of :class:`QdrantHook` apply (host/port or
    url, API key as password, ``https``, ``grpc_port``, ``prefer_gprc``, ``prefix``).
    """

    hook_name = "Qdrant (server or embedded)"

    def settings(self) -> QdrantSettings:
        conn = self.get_connection(self.conn_id)
        extra = conn.extra_dejson
        if extra.get("path"):
            return QdrantSettings(path=str(extra["path"]))
        return QdrantSettings(
            url=extra.get("url"),
            host=conn.host or None,
            port=conn.port or 6333,
            grpc_port=int(extra.get("grpc_port", 6334)),
            prefer_grpc=bool(extra.get("prefer_gprc", extra.get("prefer_grpc", False))),
            https=extra.get("https"),
            prefix=extra.get("prefix"),
            api_key=conn.password or None,
            timeout=int(extra.get("timeout", 60)),
        )

    def get_conn(self) -> QdrantClient:
        return QdrantClient(**self.settings().client_kwargs())

    @contextmanager
    def client(self) -> Iterator[QdrantClient]:
        """A client for one task, closed after it (and the embedded store's lock released)."""
        with open_client(self.settings()) as client:
            yield client


def provider_credentials(conn_id: str) -> Credentials:
    conn = BaseHook.get_connection(conn_id)
    extra = dict(conn.extra_dejson)
    base_url = extra.pop("base_url", None) or conn.host or None
    return Credentials(
        conn_id=conn_id, api_key=conn.password or None, base_url=base_url, extra=extra
    )


def build_provider(spec: dict[str, Any]) -> EmbeddingProvider:
    conn_id = spec.get("provider_conn_id")
    return get_provider(
        spec["provider"],
        spec["model"],
        dimensions=spec.get("dimensions"),
        options=spec.get("provider_options") or {},
        credentials=provider_credentials(conn_id) if conn_id else None,
    )


def build_source_provider(plan: compatibility.Plan) -> EmbeddingProvider | None:
    """The old model, from the params or the source's lineage; None when unknown."""
    spec, lineage = plan.spec, plan.source.lineage
    name = spec.get("source_provider") or lineage.get("provider")
    model = spec.get("source_model") or lineage.get("model")
    if not name or not model:
        return None
    conn_id = spec.get("source_provider_conn_id")
    if not conn_id and name == spec.get("provider"):  # same provider: same connection
        conn_id = spec.get("provider_conn_id")
    return get_provider(
        name,
        model,
        dimensions=plan.source.size if lineage.get("dimensions") else None,
        credentials=provider_credentials(conn_id) if conn_id else None,
    )


def compare_quality(
    client: QdrantClient,
    plan: compatibility.Plan,
    provider: EmbeddingProvider,
    evidence: dict[str, Any],
) -> dict[str, Any]:
    old_provider = build_source_provider(plan)
    if old_provider is None:
        return {"skipped": "the old model is unknown: set source_provider and source_model"}
    name = plan.source.vector_name
    old = quality.Side(plan.source.collection, old_provider, name)
    new = quality.Side(plan.target_collection, provider, name)
    k = int(plan.spec["recall_k"])
    labeled = quality.load_eval_set(plan.spec.get("eval_set"))
    if labeled:
        return quality.compare_labeled(
            client, old, new, labeled, k, float(plan.spec["quality_tolerance"])
        )
    return quality.compare_unlabeled(client, old, new, evidence.pop("_sample_texts", []), k)


def _hook(spec: dict[str, Any]) -> MigrationQdrantHook:
    return MigrationQdrantHook(conn_id=spec["qdrant_conn_id"])


@fail_fast
def assess_compatibility(params: dict[str, Any]) -> dict[str, Any]:
    spec = MigrationSpec.from_params(params)
    provider = build_provider(spec.to_dict())
    with _hook(spec.to_dict()).client() as client:
        plan = compatibility.assess(client, spec, provider, QdrantStateStore(client))
    plan_dict = plan.to_dict()
    log.info("Strategy %s:\n%s", plan.strategy, render_plan(plan_dict))
    if spec.dry_run:
        log.info("Dry run: nothing was written, and every task after this one is skipped.")
    return plan_dict


def choose_path(plan_dict: dict[str, Any]) -> list[str] | None:
    """The task ids the plan's strategy runs next; None (skip them all) for a dry run."""
    if plan_dict["spec"].get("dry_run"):
        return None
    strategy = plan_dict["strategy"]
    if strategy == QUANTIZATION_ONLY:
        return ["quantization_report"]
    if strategy == LINEAR_MAP:
        return ["fit_linear_map", "create_collection"]
    return ["create_collection"]


@fail_fast
def fit_linear_map(plan_dict: dict[str, Any]) -> dict[str, Any]:
    """Embed the sample, fit and test the map; refuse it below min_map_retention."""
    plan = compatibility.Plan.from_dict(plan_dict)
    provider = build_provider(plan.spec)
    with _hook(plan.spec).client() as client:
        return linear_map.fit_for_plan(client, plan, provider, QdrantStateStore(client))


def quantization_report(plan_dict: dict[str, Any]) -> dict[str, Any]:
    """The small report a quantization-only change is approved on."""
    return {"markdown": render_quantization(plan_dict)}


@fail_fast
def apply_quantization(plan_dict: dict[str, Any]) -> dict[str, Any]:
    """The one sanctioned write to a source: its quantization config. No points written."""
    plan = compatibility.Plan.from_dict(plan_dict)
    wanted = str(plan.spec["quantization"])
    with _hook(plan.spec).client() as client:
        state = QdrantStateStore(client)
        aliases.ensure_alias_at(client, plan.alias, plan.source.collection)
        result = quantization.apply_in_place(
            client, plan.source.collection, plan.source.vector_name, wanted
        )
        state.put(
            "migration",
            plan.migration_id,
            {
                "migration_id": plan.migration_id,
                "alias": plan.alias,
                "source_collection": plan.source.collection,
                "strategy": plan.strategy,
                "status": "quantized",
                "quantization": result,
                "quantized_at": now_iso(),
                "spec": plan.spec,
            },
        )
        state.put("report", plan.migration_id, {"plan": plan_dict, "result": result})
    return result


@fail_fast
def create_collection(plan_dict: dict[str, Any]) -> dict[str, Any]:
    plan = compatibility.Plan.from_dict(plan_dict)
    with _hook(plan.spec).client() as client:
        return collections.create_target(client, plan, QdrantStateStore(client))


@fail_fast
def partitions(plan_dict: dict[str, Any]) -> list[dict[str, Any]]:
    plan = compatibility.Plan.from_dict(plan_dict)
    with _hook(plan.spec).client() as client:
        parts = partitions_for(client, QdrantStateStore(client), plan)
    return [p.to_dict() for p in parts]


@fail_fast
def backfill_batch(plan_dict: dict[str, Any], partition: dict[str, Any]) -> dict[str, Any]:
    plan = compatibility.Plan.from_dict(plan_dict)
    part = Partition.from_dict(partition)
    settings = backfill.BackfillSettings(
        batch_size=int(plan.spec["batch_size"]),
        embed_concurrency=int(plan.spec["embed_concurrency"]),
        bad_text_policy=str(plan.spec["bad_text_policy"]),
    )
    # Parallel tasks of the run share the provider budget given in the params.
    provider = build_provider(
        plan.spec | {"provider_options": share_budget(plan.spec["provider_options"], part.of)}
    )
    with _hook(plan.spec).client() as client:
        state = QdrantStateStore(client)
        job: backfill.PartitionJob
        if plan.strategy in (MATRYOSHKA_TRUNCATION, LINEAR_MAP):
            derive = transform.transform_for(plan, state)
            job = transform.PartitionTransform(client, plan, part, derive, state, settings)
        else:
            job = backfill.PartitionBackfill(client, plan, part, provider, state, settings)
        return job.run()


def _forward_job(plan: compatibility.Plan, provider: EmbeddingProvider) -> catchup.CatchUpJob:
    return catchup.CatchUpJob(
        migration_id=plan.migration_id,
        source=plan.source.collection,
        target=plan.target_collection,
        text_field=plan.spec["text_field"],
        vector_name=plan.source.vector_name,
        provider=provider,
        updated_at_field=plan.spec.get("updated_at_field"),
        batch_size=int(plan.spec["batch_size"]),
        bad_text_policy=str(plan.spec["bad_text_policy"]),
    )


def _owner() -> str:
    """Who holds a lease: this task of this run (a retry of it takes its own lease back)."""
    ti = get_current_context()["ti"]
    return f"{ti.dag_id}/{ti.run_id}/{ti.task_id}"


def _writer_lease(state: QdrantStateStore, migration_id: str, wait_s: float) -> Any:
    return lease(state, f"target/{migration_id}", _owner(), wait_s=wait_s)


def _set_status(state: QdrantStateStore, migration_id: str, status: str, **extra: Any) -> None:
    doc = state.get("migration", migration_id) or {"migration_id": migration_id}
    doc.update({"status": status, **extra})
    state.put("migration", migration_id, doc)


@fail_fast
def catch_up(plan_dict: dict[str, Any]) -> dict[str, Any]:
    """After the backfill: copy what changed in the source while it ran."""
    plan = compatibility.Plan.from_dict(plan_dict)
    provider = build_provider(plan.spec)
    with _hook(plan.spec).client() as client:
        state = QdrantStateStore(client)
        with _writer_lease(state, plan.migration_id, wait_s=3600):
            result = catchup.CatchUp(client, _forward_job(plan, provider), state).run()
        _set_status(state, plan.migration_id, "ready", plan=plan_dict)
    return result.to_dict()


@fail_fast
def recall_check(
    plan_dict: dict[str, Any], results: list[dict[str, Any]], caught_up: dict[str, Any]
) -> dict[str, Any] | None:
    """One sensor poke: None means "not yet"; raises when the check can never pass."""
    plan = compatibility.Plan.from_dict(plan_dict)
    summary = backfill.summarize(results) | {"catch_up": caught_up}
    provider = build_provider(plan.spec)
    with _hook(plan.spec).client() as client:
        state = QdrantStateStore(client)
        collections.finish_bulk_load(client, plan, state)
        evidence = recall.check_target(client, plan, summary, provider, state)
        if evidence is None:
            return None
        evidence["quality"] = compare_quality(client, plan, provider, evidence)
        fitted = state.get(linear_map.MAP_KIND, plan.migration_id)
        if plan.strategy == LINEAR_MAP and fitted is not None:
            evidence["linear_map"] = {k: fitted[k] for k in linear_map.SUMMARY_KEYS if k in fitted}
        report = build_report(plan_dict, evidence)
        report["markdown"] = render_markdown(report)
        state.put("report", plan.migration_id, report)
    return report


@fail_fast
def swap_alias(plan_dict: dict[str, Any]) -> dict[str, Any]:
    """A last catch-up (what changed while the approval waited), then the atomic swap."""
    plan = compatibility.Plan.from_dict(plan_dict)
    provider = build_provider(plan.spec)
    with _hook(plan.spec).client() as client:
        state = QdrantStateStore(client)
        aliases.ensure_alias_at(client, plan.alias, plan.source.collection)
        with _writer_lease(state, plan.migration_id, wait_s=3600):
            final = catchup.CatchUp(client, _forward_job(plan, provider), state).run()
            swapped = aliases.swap_alias(
                client,
                state,
                migration_id=plan.migration_id,
                alias=plan.alias,
                source=plan.source.collection,
                target=plan.target_collection,
            )
    return swapped | {"final_catch_up": final.to_dict()}


#: Migrations whose target is complete and that are still in use (not retired).
CATCH_UP_STATUSES = ("ready", "swapped", "rolled_back")


@fail_fast
def catch_up_all(params: dict[str, Any]) -> list[dict[str, Any]]:
    """The nightly run: catch up every migration that has a target and is not retired.

    Before the swap the target follows the source. After it, the application writes to
    the new collection, so changes are mirrored back to the old one with the old model
    (when it is known), keeping a rollback lossless during the observation period.
    """
    outcomes = []
    with _hook({"qdrant_conn_id": params["qdrant_conn_id"]}).client() as client:
        state = QdrantStateStore(client)
        for doc in list(state.scan("migration")):
            if doc.get("status") not in CATCH_UP_STATUSES or "plan" not in doc:
                continue
            try:
                with _writer_lease(state, doc["migration_id"], wait_s=0):
                    outcomes.append(_catch_up_recorded(client, state, doc))
            except LeaseBusyError as busy:
                log.info("Skipping %s tonight: %s", doc["migration_id"], busy)
    return outcomes


def _catch_up_recorded(
    client: QdrantClient, state: QdrantStateStore, doc: dict[str, Any]
) -> dict[str, Any]:
    plan = compatibility.Plan.from_dict(doc["plan"])
    job = _forward_job(plan, build_provider(plan.spec))
    if doc["status"] == "swapped":
        old_model = build_source_provider(plan)
        if old_model is None:
            log.warning(
                "%s: the old model is unknown, so changes made since the swap are not mirrored "
                "to %s; a rollback would lose them.",
                plan.migration_id,
                plan.source.collection,
            )
            return {"migration_id": plan.migration_id, "mirrored": False}
        job = dataclasses.replace(
            job,
            migration_id=f"{plan.migration_id}/mirror",
            source=plan.target_collection,
            target=plan.source.collection,
            provider=old_model,
            direction="mirror",
        )
    result = catchup.CatchUp(client, job, state).run()
    return {"migration_id": plan.migration_id, "direction": job.direction, **result.to_dict()}


@fail_fast
def change_lifecycle(params: dict[str, Any]) -> dict[str, Any]:
    """Roll the last swap of an alias back, or retire a migration."""
    with _hook(params).client() as client:
        state = QdrantStateStore(client)
        if params["action"] == "rollback":
            if not params.get("alias"):
                raise aliases.LifecycleError("rollback needs the alias to roll back.")
            return aliases.rollback(client, state, alias=params["alias"])
        if not params.get("migration_id"):
            raise aliases.LifecycleError("retire needs the migration_id (see its report).")
        with _writer_lease(state, params["migration_id"], wait_s=600):
            return aliases.retire(
                client,
                state,
                migration_id=params["migration_id"],
                observation_days=float(params["observation_days"]),
            )
