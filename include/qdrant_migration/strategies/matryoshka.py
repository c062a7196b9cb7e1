"""Matryoshka truncation: the stored vectors of a Matryoshka-trained model, cut to fewer
dimensions and renormalized, are what the model returns for that size: no embedding."""

from __future__ import annotations

from typing import Any, ClassVar

from include.qdrant_migration.spec import Strategy
from include.qdrant_migration.state import StateStore
from include.qdrant_migration.strategies.base import PlanInputs
from include.qdrant_migration.strategies.new_collection import DerivedVectors
from include.qdrant_migration.sync.transform import Transform, truncate


class MatryoshkaTruncation(DerivedVectors):
    """The same model, fewer dimensions: the stored vectors are cut."""

    kind = Strategy.MATRYOSHKA_TRUNCATION
    derived_label: ClassVar[str] = "vectors cut from the stored ones (no embedding)"

    def query_note(self) -> str:
        return f", asking for dimensions={self.plan.target_lineage.get('dimensions')}"

    @classmethod
    def lineage(cls, given: PlanInputs, dimension: int) -> Any:
        lineage = super().lineage(given, dimension)
        lineage["truncated_from"] = given.source.size
        return lineage

    def transform(self, state: StateStore) -> Transform:
        dimension = self.plan.target_dimension
        return lambda vectors: truncate(vectors, dimension)
