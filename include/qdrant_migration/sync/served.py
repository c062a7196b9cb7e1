"""The pacer of one task of a migration: its share of the budget, probing what is served.

The application searches whatever the alias points at (or, in place, the vector the
collection's metadata names as active); the probes search the same, so their latency is
what the application feels. Kept out of the Airflow layer so that the benchmark builds its
backfill's pacer exactly as ``backfill_batch`` does.
"""

from __future__ import annotations

from qdrant_client import QdrantClient

from include.qdrant_migration import aliases, inplace
from include.qdrant_migration.plan import Plan
from include.qdrant_migration.qdrant import is_local
from include.qdrant_migration.sync.pacing import ProbeTarget, QdrantPacer, pacer_for


def served_target(client: QdrantClient, plan: Plan) -> ProbeTarget | None:
    """What the application searches now (the embedded store serves nobody: None)."""
    if is_local(client):
        return None
    if plan.in_place:
        return ProbeTarget(plan.source.collection, inplace.active_vector(client, plan))
    collection = aliases.current_target(client, plan.alias) or plan.source.collection
    return ProbeTarget(collection, plan.vector_name)


def plan_pacer(client: QdrantClient, plan: Plan, *, ways: int = 1) -> QdrantPacer:
    """The Qdrant budget of one of ``ways`` tasks writing at once, probing what is served."""
    return pacer_for(
        plan.spec.budget, plan.spec.batch_size, served=served_target(client, plan), ways=ways
    )
