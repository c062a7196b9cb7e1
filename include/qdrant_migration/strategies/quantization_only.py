"""Quantization only: the same model and size, another quantization.

The source's quantization is changed in place after approval (``quantization_report`` →
``approve_quantization`` → ``apply_quantization``): no new collection, no embedding, no
point written and no alias move, so there is nothing to catch up, switch, roll back or
retire (to undo it, migrate again with the previous quantization).
"""

from __future__ import annotations

from typing import ClassVar

from qdrant_client import QdrantClient

from include.qdrant_migration.aliases import LifecycleError
from include.qdrant_migration.plan import Plan, old_model_of
from include.qdrant_migration.spec import Strategy
from include.qdrant_migration.state import MigrationRecord, MigrationStatus
from include.qdrant_migration.strategies.base import LifecycleAction, MigrationStrategy, PlanInputs
from include.qdrant_migration.sync.pacing import ProbeTarget


class QuantizationOnly(MigrationStrategy):
    """The source itself, re-quantized after approval."""

    kind = Strategy.QUANTIZATION_ONLY
    path: ClassVar[tuple[str, ...]] = ("quantization_report",)
    copies_points: ClassVar[bool] = False
    rebuilds: ClassVar[bool] = False

    @classmethod
    def make_plan(cls, given: PlanInputs) -> Plan:
        """The "target" is the source itself, changed in place."""
        spec, source = given.spec, given.source
        lineage = source.lineage.copy()
        old = old_model_of(spec, source)
        if old is not None:
            lineage["provider"], lineage["model"] = old.provider, old.model
        lineage["dimensions"], lineage["quantization"] = source.size, spec.quantization
        return Plan(
            migration_id=given.migration_id,
            alias=spec.alias,
            strategy=given.decision.strategy,
            reasons=given.decision.reasons,
            source=source,
            target_collection=source.collection,
            target_dimension=source.size,
            target_lineage=lineage,
            spec=spec,
        )

    def served(self, client: QdrantClient) -> ProbeTarget:
        return ProbeTarget(self.plan.source.collection, self.plan.vector_name)

    def lifecycle_actions(
        self, status: MigrationStatus, *, run_active: bool
    ) -> tuple[LifecycleAction, ...]:
        """It made no collection and moved no alias: nothing to roll back or retire."""
        return ()

    def require_action(
        self, record: MigrationRecord, action: LifecycleAction, *, running: str | None
    ) -> None:
        raise LifecycleError(
            f"{record.migration_id} changed the quantization of {record.source_collection!r} "
            f"in place; it made no collection and moved no alias, so there is nothing to "
            f"{action.value}. To undo it, migrate again with the previous quantization."
        )

    def approve_note(self) -> str:
        return (
            "Approve to update the collection's quantization in place (Qdrant re-quantizes in "
            "the background; searches keep working)."
        )

    def alias_change(self) -> str:
        return f"{self.plan.alias}: stays on {self.plan.source.collection}"
