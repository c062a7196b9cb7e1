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
   * `full_reembed`: every text is embedded again;
   * `in_place` (only when named; Qdrant 1.18+): every text is embedded again into a new
     named vector of the same collection; the switch is the collection's metadata
     (`active_vector`), not the alias.

   Impossible requests fail here with the reason (truncating a model that is not
   Matryoshka-trained, more dimensions than the source, a distance the model was not
   trained for). With `dry_run` it only prints the plan (strategy, points, tokens, cost,
   duration, disk and RAM, names) and every later task is skipped: nothing is written;
2. `create_collection` creates a versioned target configured like the source;
3. `backfill_batch` (one mapped task per partition) embeds the texts, or transforms the
   stored vectors, and writes the target, checkpointing after every sub-batch so retries
   resume;
4. `catch_up` copies what changed in the source meanwhile (inserts, edits, deletions),
   pass after pass, until a pass finds at most `max_catch_up_lag` changes;
5. `restore_indexing` lets Qdrant build the index the bulk load deferred;
6. `recall_check` (a sensor that only reads) waits until the target is indexed, checks it
   is complete as of the last catch-up (reporting the lag the live writes make), and
   measures recall@k of approximate vs exact search;
7. `build_report` compares the old and new models' search quality (on labeled queries, or
   on the `query_log` replayed and judged: docs/traffic.md) and writes the report;
8. `approve_swap` shows that evidence, with the plan's estimate beside the actuals, to a human;
9. `swap_alias` catches up once more, moves the alias atomically, then copies what the
   application wrote to the old collection in between (no write is lost), and publishes
   an Asset event (`x-qdrant-alias://<alias>`); the old collection stays for rollback;
10. `finish_migration` records the outcome (swapped, rejected: the migration ends) and
   frees the migration for the next run.

One run drives a migration at a time: a second run of the same migration stops at once,
naming the run that holds it.

Tasks of the strategies not chosen are skipped. The nightly catch-up of every migration
is the `qdrant_migration_catch_up` DAG; rollback and retire are `qdrant_migration_lifecycle`.

Trigger from the UI form or `airflow dags trigger qdrant_model_migration --conf '{"alias": ...}'`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, PokeReturnValue, dag, get_current_context, task

from include.qdrant_migration.airflow import assets, tasks
from include.qdrant_migration.airflow.assets import ALIAS_MOVES
from include.qdrant_migration.airflow.operators import SwapApprovalOperator
from include.qdrant_migration.airflow.workarounds import (
    mapped_results,
    quiet_upstream_deprecations,
)
from include.qdrant_migration.settings import settings
from include.qdrant_migration.spec import PARAM_SCHEMA

quiet_upstream_deprecations()  # before @task.sensor below imports the provider's sensor


@task.branch
def choose_path(plan: dict[str, Any]) -> list[str] | None:
    """The chosen strategy's first tasks (each strategy names its path); none after a dry run."""
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


@task
def restore_indexing(plan: dict[str, Any], _caught_up: dict[str, Any]) -> dict[str, Any]:
    return tasks.restore_indexing(plan)


@task
def build_report(
    plan: dict[str, Any],
    results: list[dict[str, Any]],
    caught_up: dict[str, Any],
    recall: dict[str, Any],
    restored: dict[str, Any],
) -> dict[str, Any]:
    return tasks.build_report(plan, mapped_results(results), caught_up, recall, restored)


# Whatever happened (swapped, rejected, timed out, failed): record it, free the migration.
@task(trigger_rule="all_done")
def finish_migration() -> dict[str, Any]:
    plan = get_current_context()["ti"].xcom_pull(task_ids="assess_compatibility")
    return tasks.finish_migration(plan)


@dag(
    dag_id="qdrant_model_migration",
    schedule=None,
    catchup=False,
    doc_md=__doc__,
    tags=["qdrant", "embeddings", "migration"],
    params={name: Param(**schema) for name, schema in PARAM_SCHEMA.items()},
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    # Migrations of different aliases side by side; one waiting for approval holds no worker.
    # settings(): the deployment's QMM_* variables (docs/settings.md), read at parse time.
    max_active_runs=settings().max_active_migrations,
)
def qdrant_model_migration() -> None:
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
        return tasks.plan_partitions(plan)

    @task(
        map_index_template="{{ partition_label }}",
        max_active_tis_per_dagrun=settings().max_parallel_partitions,
        pool=settings().backfill_pool,
    )
    def backfill_batch(plan: dict[str, Any], partition: dict[str, Any]) -> dict[str, Any]:
        get_current_context()["partition_label"] = partition["label"]  # type: ignore[typeddict-unknown-key]
        return tasks.backfill_batch(plan, partition)

    @task
    def catch_up(plan: dict[str, Any], _results: list[dict[str, Any]]) -> dict[str, Any]:
        return tasks.catch_up(plan)

    @task.sensor(poke_interval=settings().recall_poke_s, timeout=6 * 3600, mode="reschedule")
    def recall_check(plan: dict[str, Any]) -> PokeReturnValue:
        evidence = tasks.recall_check(plan)
        return PokeReturnValue(is_done=evidence is not None, xcom_value=evidence)

    approve_swap = SwapApprovalOperator(
        task_id="approve_swap",
        subject="Swap alias '{{ params.alias }}' to the new collection?",
        body="{{ ti.xcom_pull(task_ids='build_report')['markdown'] }}",
    )

    @task(outlets=[ALIAS_MOVES], inlets=assets.registered())
    def swap_alias(plan: dict[str, Any]) -> dict[str, Any]:
        return tasks.swap_alias(plan)

    plan = assess_compatibility()
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
    indexing = restore_indexing(plan, caught_up)
    evidence = recall_check(plan)
    indexing >> evidence
    report = build_report(plan, results, caught_up, evidence, indexing)
    report >> approve_swap >> swap_alias(plan) >> finish_migration()


qdrant_model_migration()
