"""The plan: what ``assess_compatibility`` decided, and what every later task works from.

Types only (the deciding happens in compatibility.py, the estimating in estimate.py), so
any module can import them without importing the logic. A plan crosses task boundaries as
an XCom and is kept in its migration's record, through the codec (``codec.py``) both ways.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, cast

from include.qdrant_migration.choices import EmbeddingMode
from include.qdrant_migration.layout import Carried
from include.qdrant_migration.providers import canonical_model
from include.qdrant_migration.providers.base import ModelLineage
from include.qdrant_migration.qdrant import PointId
from include.qdrant_migration.spec import MigrationSpec, Strategy
from include.qdrant_migration.strategy import OldModel, old_model

#: What a collection's lineage records beside its model when the served vector can switch
#: between named vectors: every vector's lineage, and which one is served.
SWITCH_KEYS = ("vectors", "active_vector")


class Lineage(ModelLineage, total=False):
    """Which model made a collection's vectors, as stored in its metadata and the report.

    Applications read it to embed queries the same way (model, input type, dimensions).
    """

    strategy: str
    truncated_from: int
    quantization: str | None
    migration_id: str
    source_collection: str
    source_lineage: Lineage
    alias: str
    text_field: str
    created_at: str


@dataclass(frozen=True)
class SourceInfo:
    """The collection behind the alias, as ``assess_compatibility`` found it."""

    collection: str
    vector_name: str | None
    size: int
    distance: str
    points: int
    sample_ids: list[PointId]
    text_coverage: float
    lineage: Lineage = field(default_factory=lambda: Lineage())
    quantization: str = "none"
    #: The other vectors, copied unchanged (``layout.VectorLayout``), and which are sparse.
    carried: list[str] = field(default_factory=list)
    carried_sparse: list[str] = field(default_factory=list)
    #: A carried sparse vector with the IDF modifier (taken for BM25 in hybrid quality).
    carried_bm25: str | None = None


@dataclass(frozen=True)
class PhaseEstimate:
    """One phase of a run (phases.py): its expected and slow-end seconds, and their basis."""

    name: str
    seconds: float
    max_seconds: float
    basis: str


@dataclass(frozen=True)
class Estimate:
    """What a migration will cost before it runs (the dry run), beside the actuals later."""

    points: int = 0
    texts_to_embed: int = 0
    vectors_copied: int = 0
    tokens: int = 0
    tokens_per_text: float = 0.0
    token_sample: int = 0
    tokens_exact: bool = False
    tokenizer: str = ""
    embed_requests: int = 0
    price_per_million_tokens: float | None = None
    prices_as_of: str = ""
    cost_usd: float | None = None
    #: The same embedding through OpenAI's Batch API (None: not available), and the mode
    #: the plan recommends, with why.
    batch_cost_usd: float | None = None
    recommended_mode: EmbeddingMode = "online"
    mode_reason: str = ""
    duration_s: float | None = None
    #: The slow end of the duration's range (None: no range, e.g. from a rate budget).
    duration_max_s: float | None = None
    duration_basis: str = ""
    #: The run up to the report, phase by phase (their sum is the duration above).
    phases: list[PhaseEstimate] = field(default_factory=list)
    payload_bytes_per_point: int = 0
    source_disk_bytes: int = 0
    target_disk_bytes: int = 0
    peak_disk_bytes: int = 0
    target_ram_bytes: int = 0
    #: RAM of the vectors before a quantization change (quantization_only only).
    ram_before_bytes: int | None = None
    #: Linear map: its retention fitted on a small preview sample, and the embedding cost
    #: it saves against a full re-embed (None: not a linear map).
    map_retention_preview: float | None = None
    map_preview_texts: int = 0
    map_saved_usd: float | None = None
    #: The query-log replay: queries replayed (each embedded by both models), their tokens
    #: (both models) and what they cost (None: a model without a price).
    replay_queries: int = 0
    replay_tokens: int = 0
    replay_cost_usd: float | None = None
    #: The judge: its calls (one per replayed query), the units they bill, the price per
    #: 1,000 units and the cost (None: no price in the table, e.g. a self-hosted server).
    judge_calls: int = 0
    judge_units: int = 0
    judge_price_per_1k: float | None = None
    judge_cost_usd: float | None = None
    #: Peak disk of a new collection vs a new named vector (in place), side by side.
    peak_disk_by_strategy: dict[str, int] = field(default_factory=dict)
    #: Collections a run would create, and what happens to the alias.
    creates: list[str] = field(default_factory=list)
    alias_change: str = ""
    #: The source's search latency at rest, in ms (probe queries: p50, p95, p99, probes).
    source_search_ms: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """Everything later tasks need; the ``assess_compatibility`` XCom."""

    migration_id: str
    alias: str
    strategy: Strategy
    reasons: list[str]
    source: SourceInfo
    target_collection: str
    target_dimension: int
    target_lineage: Lineage
    spec: MigrationSpec
    estimate: Estimate = field(default_factory=Estimate)
    #: In place: the named vector the new model's vectors go to, beside the old one.
    target_vector: str | None = None

    @property
    def creates_target(self) -> bool:
        return self.strategy.creates_target

    @property
    def new_vector(self) -> str | None:
        """The vector the new model's vectors are written to and searched in (a strategy
        that adds a named vector beside the old one names it in ``target_vector``)."""
        return self.target_vector or self.vector_name

    @property
    def vector_name(self) -> str | None:
        """The name of the migrated vector (None: the collection's single unnamed one)."""
        return self.source.vector_name

    def old_lineage(self) -> Lineage:
        """The old vectors' lineage: the source's (without the vectors and the active one
        that a switch between named vectors records), the old model as the params name it."""
        kept = {k: v for k, v in self.source.lineage.items() if k not in SWITCH_KEYS}
        lineage = cast(Lineage, kept)
        spec = self.spec
        if spec.source_provider and spec.source_model:
            lineage["provider"], lineage["model"] = spec.source_provider, spec.source_model
        lineage["dimensions"] = self.source.size
        return lineage

    @cached_property
    def carried(self) -> Carried:
        """The vectors copied unchanged from the source (read per point: made once)."""
        return Carried(tuple(self.source.carried), tuple(self.source.carried_sparse))

    @property
    def add_sparse(self) -> str | None:
        """The BM25 sparse vector the target gains (None: none)."""
        return (self.spec.add_sparse or None) if self.creates_target else None


def old_model_of(spec: MigrationSpec, source: SourceInfo) -> OldModel | None:
    """The model that made the source's vectors (params first, then lineage), if known."""
    return old_model(
        source.lineage, spec.source_provider, spec.source_model, spec.provider, canonical_model
    )
