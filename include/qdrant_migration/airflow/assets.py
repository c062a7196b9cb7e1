"""The Airflow Assets this project publishes: one event each time an alias moves.

``swap_alias`` and the lifecycle DAG's ``rollback`` emit an event for the moved alias's
asset (``x-qdrant-alias://<alias>``) through the asset alias :data:`ALIAS_MOVES`, with the
collections, migration and action in the event's extra. A downstream DAG follows one
alias with ``schedule=[alias_asset("articles")]``, or every alias with
``schedule=ALIAS_MOVES``. The aliases in ``QMM_ALIASES`` have their asset registered
when the DAGs are parsed (:func:`registered`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from airflow.sdk import Asset, AssetAlias

from include.qdrant_migration.aliases import AliasMove
from include.qdrant_migration.settings import settings

ALIAS_MOVES = AssetAlias(name="qdrant_alias_moves", group="qdrant")


def alias_asset(alias: str) -> Asset:
    """The asset that stands for what ``alias`` serves."""
    return Asset(uri=f"x-qdrant-alias://{alias}", group="qdrant")


def registered() -> list[Asset]:
    """The assets of the aliases the deployment names (``QMM_ALIASES``): a task that lists
    them as inlets makes Airflow register them when it parses the DAG, so an alias move's
    event finds its asset (instead of Airflow creating it then, with two warnings)."""
    return [alias_asset(alias) for alias in settings().aliases]


def publish(context: Any, move: AliasMove) -> None:
    """Add the asset event of ``move`` to the running task's outlet events."""
    context["outlet_events"][ALIAS_MOVES].add(
        alias_asset(move.alias), extra=dataclasses.asdict(move)
    )
