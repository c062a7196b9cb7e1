"""Hand-made migrations in a real embedded store, for the Airflow layer's fast tests.

No model runs and no migration is carried out: the source collection holds a few points
of dummy vectors behind its alias, and each migration is the record (and run claim) a run
would have left in the state store, at the status a test needs (the store itself: the
``store`` fixture of conftest.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient

from include.qdrant_migration.airflow.approvals import DAG_ID
from include.qdrant_migration.plan import Plan, SourceInfo
from include.qdrant_migration.qdrant import QdrantSettings, open_client
from include.qdrant_migration.spec import MigrationSpec, Strategy
from include.qdrant_migration.state import (
    Leases,
    MigrationRecord,
    Migrations,
    MigrationStatus,
    QdrantStateStore,
)

ALIAS, SOURCE = "docs", "docs_v1"
SOURCE_INFO = SourceInfo(
    collection=SOURCE,
    vector_name=None,
    size=8,
    distance="Cosine",
    points=3,
    sample_ids=[],
    text_coverage=1.0,
)


def plan_of(kind: Strategy, migration_id: str = "mig-1", **spec: Any) -> Plan:
    """A plan of ``kind`` for the ``docs`` alias (``spec``: params beyond the alias)."""
    return Plan(
        migration_id=migration_id,
        alias=ALIAS,
        strategy=kind,
        reasons=[],
        source=SOURCE_INFO,
        target_collection=f"{SOURCE}__{migration_id}__v1" if kind.creates_target else SOURCE,
        target_dimension=8,
        target_lineage={},
        spec=MigrationSpec(alias=ALIAS, **spec),
        target_vector="m" if kind is Strategy.IN_PLACE else None,
    )


def record_of(plan: Plan, status: MigrationStatus, **fields: Any) -> MigrationRecord:
    return MigrationRecord(
        migration_id=plan.migration_id,
        alias=plan.alias,
        source_collection=plan.source.collection,
        status=status,
        strategy=plan.strategy.value,
        target_collection=plan.target_collection,
        plan=plan,
        previous_collection=plan.source.collection,
        **fields,
    )


def claim(state: QdrantStateStore, migration_id: str, run_id: str, dag_id: str = DAG_ID) -> None:
    """``run_id`` of ``dag_id`` holds the migration's run claim, as ``writers.claim_run``
    leaves it."""
    assert Leases(state).try_acquire(
        f"run/{migration_id}", f"{dag_id}/{run_id}", 3600.0, time.time()
    )


@contextmanager
def opened(path: Path) -> Iterator[tuple[QdrantClient, QdrantStateStore]]:
    """The store, for arranging or checking it between the calls under test (an embedded
    store has one opener at a time)."""
    with open_client(QdrantSettings(path=str(path))) as client:
        yield client, QdrantStateStore(client)


def put(path: Path, *records: MigrationRecord) -> None:
    with opened(path) as (_client, state):
        for record in records:
            Migrations(state).put(record)
