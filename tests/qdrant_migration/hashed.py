"""The fast tier's migration: the hashing "models" of :mod:`tests.fakes` instead of real ones.

Where the model is not what is tested (strategy choice, estimate arithmetic, collection
config, completeness, recall mechanics, alias moves, the report), tests migrate the
``fast_client`` store (the 240 corpus texts embedded with ``old_model``, alias
``articles`` -> ``articles_v1``) to ``new_model`` with the specs made here.
"""

from __future__ import annotations

from typing import Any

from qdrant_client import QdrantClient

from include.qdrant_migration.plan import Plan
from include.qdrant_migration.providers import EmbeddingProvider
from include.qdrant_migration.spec import MigrationSpec
from include.qdrant_migration.state import (
    MigrationRecord,
    Migrations,
    MigrationStatus,
    StateStore,
)
from include.qdrant_migration.strategies import in_place
from include.qdrant_migration.sync import partitions
from tests.qdrant_migration.helpers import settings_of, small_spec

#: The ``new_model`` and ``old_model`` fixtures' model names, and their vector size.
NEW_MODEL = "hash-new"
OLD_MODEL = "hash-old"
HASH_DIMENSION = 64
#: Where a full re-embed of the fast store to ``new_model`` writes.
HASH_TARGET = f"articles_v1__{NEW_MODEL}__v1"


def hash_spec(**overrides: Any) -> MigrationSpec:
    """:func:`small_spec` migrating to ``new_model`` (the provider name stays ``local``)."""
    return small_spec(**{"model": NEW_MODEL, **overrides})


def in_place_spec(**more: Any) -> MigrationSpec:
    """An in-place migration of alias ``articles`` from ``old_model`` to ``new_model``."""
    params: dict[str, Any] = {
        "alias": "articles",
        "provider": "local",
        "model": NEW_MODEL,
        "strategy": "in_place",
        "source_provider": "local",
        "source_model": OLD_MODEL,
        "points_per_partition": 25,
        "batch_size": 8,
        "recall_sample_size": 10,
    }
    return MigrationSpec.from_params(params | more)


def fill_in_place(
    client: QdrantClient, plan: Plan, provider: EmbeddingProvider, state: StateStore
) -> None:
    """create_collection and the backfill, in place: the new vector added and filled."""
    in_place.add_vector(client, plan, state)
    for part in partitions.partitions_for(client, state, plan):
        in_place.InPlaceBackfill(client, plan, part, provider, state, settings_of(plan.spec)).run()


def mark_ready(state: StateStore, migration_id: str) -> MigrationRecord:
    """What the catch_up task does last: the target is complete and caught up."""
    migrations = Migrations(state)
    return migrations.transition(migrations.require(migration_id), MigrationStatus.READY)
