"""The linear map: a map from the old model's vectors to the new one's, fitted on a sample
(``fit_linear_map``, before anything is created) and applied to every stored vector."""

from __future__ import annotations

from typing import ClassVar

from include.qdrant_migration import linear_map as fitting
from include.qdrant_migration.spec import Strategy
from include.qdrant_migration.state import StateStore
from include.qdrant_migration.strategies.new_collection import DerivedVectors
from include.qdrant_migration.sync.transform import Known, Transform


class LinearMap(DerivedVectors):
    """Another model, reached by mapping the stored vectors (opt-in: an approximation)."""

    kind = Strategy.LINEAR_MAP
    path: ClassVar[tuple[str, ...]] = ("fit_linear_map", "create_collection")
    derived_label: ClassVar[str] = "vectors mapped by the linear map (no embedding)"

    def transform(self, state: StateStore) -> Transform:
        return fitting.load(state, self.plan.migration_id).apply

    def known(self, state: StateStore) -> Known:
        """The calibration sample's true vectors, written while their text is unchanged."""
        return fitting.load_calibration(state, self.plan.migration_id)
