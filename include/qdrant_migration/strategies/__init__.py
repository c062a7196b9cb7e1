"""The migration strategies, one class each, chosen by the plan's strategy from one registry.

strategy.py *chooses* a strategy (the cheapest that is safe, or the one the user named,
with reasons); the classes here *are* the strategies: what each one does at every step
(base.py says which steps there are). Adding one is a module here and an entry below.
"""

from __future__ import annotations

from qdrant_client import QdrantClient

from include.qdrant_migration.plan import Plan
from include.qdrant_migration.spec import Strategy
from include.qdrant_migration.strategies.base import (
    LifecycleAction,
    MigrationStrategy,
    Models,
    PlanInputs,
    SyncPass,
)
from include.qdrant_migration.strategies.full_reembed import FullReembed
from include.qdrant_migration.strategies.in_place import InPlace
from include.qdrant_migration.strategies.linear_map import LinearMap
from include.qdrant_migration.strategies.matryoshka import MatryoshkaTruncation
from include.qdrant_migration.strategies.quantization_only import QuantizationOnly
from include.qdrant_migration.sync.pacing import QdrantPacer

STRATEGIES: dict[Strategy, type[MigrationStrategy]] = {
    cls.kind: cls
    for cls in (QuantizationOnly, MatryoshkaTruncation, LinearMap, FullReembed, InPlace)
}


def strategy_of(plan: Plan) -> MigrationStrategy:
    """The strategy ``plan`` was made for."""
    return STRATEGIES[plan.strategy](plan)


def plan_pacer(client: QdrantClient, plan: Plan, *, ways: int = 1) -> QdrantPacer:
    """The Qdrant budget of one of ``ways`` tasks of ``plan`` writing at once."""
    return strategy_of(plan).pacer(client, ways=ways)


__all__ = [
    "STRATEGIES",
    "LifecycleAction",
    "MigrationStrategy",
    "Models",
    "PlanInputs",
    "SyncPass",
    "plan_pacer",
    "strategy_of",
]
