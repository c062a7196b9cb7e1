"""
### Qdrant migration lifecycle: rollback and retire

The companion of `qdrant_model_migration`:

* **rollback** points an alias back at the collection it served before its last swap,
  losing nothing: a final mirror pass, one atomic alias operation, then what was written
  to the new collection in between is copied back; it publishes an Asset event
  (`x-qdrant-alias://<alias>`). It needs the old model (from the lineage or the
  migration's `source_model`), or `accept_lost_writes`.
* **retire** deletes the collection a migration left unused and stops its nightly
  catch-up: after a swap, the old collection, and only once `observation_days` have
  passed; after a rejection or a rollback, the new one. A collection an alias points at
  is never deleted.

Trigger with `airflow dags trigger qdrant_migration_lifecycle --conf
'{"action": "rollback", "alias": "articles"}'`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from include.qdrant_migration.airflow import assets, tasks
from include.qdrant_migration.airflow.assets import ALIAS_MOVES
from include.qdrant_migration.spec import LIFECYCLE_PARAM_SCHEMA


@dag(
    dag_id="qdrant_migration_lifecycle",
    schedule=None,
    catchup=False,
    doc_md=__doc__,
    tags=["qdrant", "embeddings", "migration"],
    params={name: Param(**schema) for name, schema in LIFECYCLE_PARAM_SCHEMA.items()},
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    max_active_runs=1,
)
def qdrant_migration_lifecycle() -> None:
    @task.branch
    def choose_action() -> str:
        return tasks.choose_action(dict(get_current_context()["params"]))

    @task(outlets=[ALIAS_MOVES], inlets=assets.registered())
    def rollback() -> dict[str, Any]:
        return tasks.rollback(dict(get_current_context()["params"]))

    @task
    def retire() -> dict[str, Any]:
        return tasks.retire(dict(get_current_context()["params"]))

    choose_action() >> [rollback(), retire()]


qdrant_migration_lifecycle()
