"""
### Qdrant migration catch-up

Keeps every unfinished migration level with the application's writes, on a schedule
(`QMM_CATCH_UP_SCHEDULE`, default `@daily`) or when triggered:

1. `migrations_to_catch_up` lists the migrations that have a target and are not retired;
2. `catch_up_migration` (one mapped task per migration) brings each one level. The
   collection the alias serves is the source of truth, the other one follows it:
   * before the swap, the new collection follows the old one (inserts and text edits are
     embedded with the new model, payload-only edits copied, deletions applied);
   * after the swap, the application writes to the new collection, so its changes are
     mirrored back to the old one with the old model: a rollback loses nothing;
   * after a rollback, forward again.

A migration whose target another task is writing (its own run's catch-up or swap) is
skipped this time, never written twice at once.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from include.qdrant_migration.airflow import tasks
from include.qdrant_migration.settings import settings
from include.qdrant_migration.spec import CATCH_UP_PARAM_SCHEMA


@dag(
    dag_id="qdrant_migration_catch_up",
    # QMM_CATCH_UP_SCHEDULE (docs/settings.md), read when this file is parsed.
    schedule=settings().catch_up_schedule,
    catchup=False,
    doc_md=__doc__,
    tags=["qdrant", "embeddings", "migration"],
    params={name: Param(**schema) for name, schema in CATCH_UP_PARAM_SCHEMA.items()},
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
    max_active_runs=1,
)
def qdrant_migration_catch_up() -> None:
    @task
    def migrations_to_catch_up() -> list[str]:
        return tasks.migrations_to_catch_up(dict(get_current_context()["params"]))

    @task(map_index_template="{{ migration_id }}")
    def catch_up_migration(migration_id: str) -> dict[str, Any]:
        context = get_current_context()
        context["migration_id"] = migration_id  # type: ignore[typeddict-unknown-key]
        return tasks.catch_up_migration(dict(context["params"]), migration_id)

    catch_up_migration.expand(migration_id=migrations_to_catch_up())


qdrant_migration_catch_up()
