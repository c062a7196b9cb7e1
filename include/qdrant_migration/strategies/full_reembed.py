"""The full re-embed: every text embedded again with the new model, into a new collection."""

from __future__ import annotations

from include.qdrant_migration.spec import Strategy
from include.qdrant_migration.strategies.new_collection import NewCollection


class FullReembed(NewCollection):
    """Every text embedded again with the new model (the default)."""

    kind = Strategy.FULL_REEMBED
