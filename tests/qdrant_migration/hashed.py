"""The fast tier's migration: the hashing "models" of :mod:`tests.fakes` instead of real ones.

Where the model is not what is tested (strategy choice, estimate arithmetic, collection
config, completeness, recall mechanics, alias moves, the report), tests migrate the
``fast_client`` store (the 240 corpus texts embedded with ``old_model``, alias
``articles`` -> ``articles_v1``) to ``new_model`` with the specs made here.
"""

from __future__ import annotations

from typing import Any

from include.qdrant_migration.spec import MigrationSpec
from include.qdrant_migration.state import (
    MigrationRecord,
    Migrations,
    MigrationStatus,
    StateStore,
)
from tests.qdrant_migration.helpers import small_spec

#: The ``new_model`` and ``old_model`` fixtures' model names, and their vector size.
NEW_MODEL = "hash-new"
OLD_MODEL = "hash-old"
HASH_DIMENSION = 64
#: Where a full re-embed of the fast store to ``new_model`` writes.
HASH_TARGET = f"articles_v1__{NEW_MODEL}__v1"


def hash_spec(**overrides: Any) -> MigrationSpec:
    """:func:`small_spec` migrating to ``new_model`` (the provider name stays ``local``)."""
    return small_spec(**{"model": NEW_MODEL, **overrides})


def mark_ready(state: StateStore, migration_id: str) -> MigrationRecord:
    """What the catch_up task does last: the target is complete and caught up."""
    migrations = Migrations(state)
    return migrations.transition(migrations.require(migration_id), MigrationStatus.READY)
