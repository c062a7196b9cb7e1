"""
### Qdrant model migration

Moves the collection behind a Qdrant **alias** to a new embedding model with zero downtime:

1. `assess_compatibility` reads the source behind the alias and checks the request;
2. `create_collection` creates a versioned target configured like the source;
3. `backfill_batch` (one mapped task per partition) embeds the texts and writes the target,
   checkpointing after every sub-batch so retries resume;
4. `catch_up` copies what changed in the source meanwhile (inserts, edits, deletions);
5. `recall_check` waits until the target is complete and indexed and measures its recall;
6. `approve_swap` shows that evidence to a human;
7. `swap_alias` catches up once more, then moves the alias atomically; the old collection
   stays for rollback.

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

    @task
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
    created = create_collection(plan)
    parts = plan_partitions(plan, created)
    results = backfill_batch.partial(plan=plan).expand(partition=parts)
    caught_up = catch_up(plan, results)
    report = recall_check(plan, results, caught_up)
    report >> approve_swap >> swap_alias(plan)


qdrant_model_migration()
