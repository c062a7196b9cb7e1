"""
### Qdrant model migration

Moves the collection behind a Qdrant **alias** to a new embedding model with zero downtime:

1. `assess_compatibility` reads the source behind the alias, checks the request, and
   **chooses a strategy**, saying why (the reasons are in its log and the report):
   * `quantization_only`: same model and size, another `quantization`. The source's
     quantization is changed in place after approval (`quantization_report` →
     `approve_quantization` → `apply_quantization`): no collection, no embedding, no alias move;
   * `matryoshka_truncation`: the same Matryoshka-trained model with fewer `dimensions`;
     the stored vectors are cut and renormalized instead of re-embedded;
   * `linear_map` (only with `allow_linear_map`): `fit_linear_map` embeds a sample, fits a
     ridge map old → new, and refuses it below `min_map_retention`; the stored vectors are
     then mapped;
   * `full_reembed`: every text is embedded again.

   Impossible requests fail here with the reason (truncating a model that is not
   Matryoshka-trained, more dimensions than the source, a distance the model was not
   trained for). With `dry_run` it only prints the plan (strategy, points, tokens, cost,
   duration, disk and RAM, names) and every later task is skipped: nothing is written;
2. `create_collection` creates a versioned target configured like the source;
3. `backfill_batch` (one mapped task per partition) embeds the texts, or transforms the
   stored vectors, and writes the target, checkpointing after every sub-batch so retries
   resume;
4. `catch_up` copies what changed in the source meanwhile (inserts, edits, deletions);
5. `recall_check` waits until the target is complete and indexed and measures its recall;
6. `approve_swap` shows that evidence, with the plan's estimate beside the actuals, to a human;
7. `swap_alias` catches up once more, then moves the alias atomically; the old collection
   stays for rollback.

Tasks of the strategies not chosen are skipped.

Runs without an alias (the nightly schedule) take `catch_up_all` instead: every migration
that has a target and is not retired is brought level with its source (or, after the
swap, changes are mirrored back to the old collection so a rollback loses nothing).

Trigger from the UI form or `airflow dags trigger qdrant_model_migration --conf '{"alias": ...}'`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, PokeReturnValue, dag, get_current_context, task

from include.qdrant_migration import tasks
from include.qdrant_migration.operators import SwapApprovalOperator
from include.qdrant_migration.spec import (
    BACKFILL_POOL,
    CATCH_UP_SCHEDULE,
    MAX_PARALLEL_PARTITIONS,
    PARAM_SCHEMA,
)


# The strategy-specific tasks (the DAG below wires them); each is skipped unless its
# strategy is chosen.
@task.branch
def choose_path(plan: dict[str, Any]) -> list[str] | None:
    """The chosen strategy's tasks; none after a dry run."""
    return tasks.choose_path(plan)


@task
def fit_linear_map(plan: dict[str, Any]) -> dict[str, Any]:
    return tasks.fit_linear_map(plan)


@task
def quantization_report(plan: dict[str, Any]) -> dict[str, Any]:
    return tasks.quantization_report(plan)


@task
def apply_quantization(plan: dict[str, Any]) -> dict[str, Any]:
    return tasks.apply_quantization(plan)


@dag(
    dag_id="qdrant_model_migration",
    schedule=CATCH_UP_SCHEDULE,
    catchup=False,
    doc_md=__doc__,
    tags=["qdrant", "embeddings", "migration"],
    params={name: Param(**schema) for name, schema in PARAM_SCHEMA.items()},
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    # A migration waiting days for approval must not block the nightly catch-up.
    max_active_runs=3,
)
def qdrant_model_migration() -> None:
    @task.branch
    def route() -> str:
        """A run with an alias migrates it; a run without (the nightly one) catches up."""
        params = get_current_context()["params"]
        return "assess_compatibility" if params.get("alias") else "catch_up_all"

    @task
    def catch_up_all() -> list[dict[str, Any]]:
        return tasks.catch_up_all(dict(get_current_context()["params"]))

    @task
    def assess_compatibility() -> dict[str, Any]:
        return tasks.assess_compatibility(dict(get_current_context()["params"]))

    approve_quantization = SwapApprovalOperator(
        task_id="approve_quantization",
        subject="Change the quantization of the collection behind '{{ params.alias }}'?",
        body="{{ ti.xcom_pull(task_ids='quantization_report')['markdown'] }}",
    )

    # Runs after fit_linear_map when the map is fitted, or without it when that is skipped.
    @task(trigger_rule="none_failed_min_one_success")
    def create_collection(plan: dict[str, Any]) -> dict[str, Any]:
        return tasks.create_collection(plan)

    @task
    def plan_partitions(plan: dict[str, Any], _created: dict[str, Any]) -> list[dict[str, Any]]:
        return tasks.partitions(plan)

    @task(
        map_index_template="{{ partition_label }}",
        max_active_tis_per_dagrun=MAX_PARALLEL_PARTITIONS,
        pool=BACKFILL_POOL,
    )
    def backfill_batch(plan: dict[str, Any], partition: dict[str, Any]) -> dict[str, Any]:
        get_current_context()["partition_label"] = partition["label"]  # type: ignore[typeddict-unknown-key]
        return tasks.backfill_batch(plan, partition)

    @task
    def catch_up(plan: dict[str, Any], _results: list[dict[str, Any]]) -> dict[str, Any]:
        return tasks.catch_up(plan)

    @task.sensor(poke_interval=30, timeout=6 * 3600, mode="reschedule")
    def recall_check(
        plan: dict[str, Any], results: list[dict[str, Any]], caught_up: dict[str, Any]
    ) -> PokeReturnValue:
        report = tasks.recall_check(plan, list(results), caught_up)
        return PokeReturnValue(is_done=report is not None, xcom_value=report)

    approve_swap = SwapApprovalOperator(
        task_id="approve_swap",
        subject="Swap alias '{{ params.alias }}' to the new collection?",
        body="{{ ti.xcom_pull(task_ids='recall_check')['markdown'] }}",
    )

    @task
    def swap_alias(plan: dict[str, Any]) -> dict[str, Any]:
        return tasks.swap_alias(plan)

    plan = assess_compatibility()
    route() >> [plan, catch_up_all()]
    path = choose_path(plan)
    fitted = fit_linear_map(plan)
    created = create_collection(plan)
    report_only = quantization_report(plan)
    path >> [fitted, created, report_only]
    fitted >> created
    report_only >> approve_quantization >> apply_quantization(plan)
    parts = plan_partitions(plan, created)
    results = backfill_batch.partial(plan=plan).expand(partition=parts)
    caught_up = catch_up(plan, results)
    report = recall_check(plan, results, caught_up)
    report >> approve_swap >> swap_alias(plan)


qdrant_model_migration()
