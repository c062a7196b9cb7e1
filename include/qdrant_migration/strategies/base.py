"""What differs between migration strategies, asked of one small class per strategy.

The DAG, the task bodies, the checks, the report and the migrations page never test which
strategy runs: they ask :func:`~include.qdrant_migration.strategies.strategy_of` for the
plan's strategy and call it. A strategy owns:

* its **task path** (the DAG's tasks right after ``assess_compatibility``) and its plan;
* how its **target** is made, and what its backfill job does with each partition;
* how the new vectors are kept level: **forward** (the run's catch-up, while the old
  vectors are served) and **following** whatever is served (the nightly catch-up);
* the **switch** (and the rollback: the same switch back), lifting the index-thread cap,
  and **retiring** what the migration left unused;
* which **lifecycle actions** apply in which status (the lifecycle DAG refuses the others,
  the migrations page offers exactly these);
* the **words** of its plan, report and page.

Adding a strategy is one module in this package and one entry in
:data:`~include.qdrant_migration.strategies.STRATEGIES`.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Protocol, cast

from qdrant_client import QdrantClient

from include.qdrant_migration.aliases import LifecycleError, Switched
from include.qdrant_migration.checks.completeness import Completeness
from include.qdrant_migration.plan import Lineage, Plan, SourceInfo
from include.qdrant_migration.providers import EmbeddingProvider
from include.qdrant_migration.qdrant import is_local
from include.qdrant_migration.spec import MigrationSpec, Strategy
from include.qdrant_migration.state import (
    STATE_COLLECTION,
    MigrationRecord,
    MigrationStatus,
    StateStore,
)
from include.qdrant_migration.strategy import CompatibilityError, Decision
from include.qdrant_migration.sync.backfill import BackfillSettings, PartitionJob
from include.qdrant_migration.sync.catchup import CatchUpResult
from include.qdrant_migration.sync.pacing import ProbeTarget, QdrantPacer, pacer_for
from include.qdrant_migration.sync.partitions import Partition

_S = MigrationStatus


class LifecycleAction(StrEnum):
    """What the lifecycle DAG (and the migrations page, through it) can do to a migration."""

    ROLLBACK = "rollback"
    RETIRE = "retire"


@dataclass(frozen=True)
class Models:
    """A migration's two models: the new one, and the old one when it is known."""

    new: EmbeddingProvider
    old: EmbeddingProvider | None


class SyncPass(Protocol):
    """One catch-up pass, whatever keeps the new vectors level (a second collection or a
    second named vector); it writes within its pacer's budget."""

    pacer: QdrantPacer

    def run(self) -> CatchUpResult: ...


@dataclass(frozen=True)
class PlanInputs:
    """What ``assess_compatibility`` found, for a strategy to make its plan from."""

    client: QdrantClient
    spec: MigrationSpec
    provider: EmbeddingProvider
    state: StateStore
    source: SourceInfo
    migration_id: str
    decision: Decision


class MigrationStrategy(ABC):
    """One way of making the new vectors; :attr:`plan` is the migration's plan."""

    kind: ClassVar[Strategy]
    #: The DAG's tasks right after assess_compatibility (the branch it takes).
    path: ClassVar[tuple[str, ...]]
    #: Whether the new vectors live in a second collection (a copy of the payloads and of
    #: the carried vectors), or beside the old ones.
    copies_points: ClassVar[bool] = True
    #: Whether it writes new vectors and switches to them after approval (a quantization
    #: change does neither: it ends with the source re-quantized).
    rebuilds: ClassVar[bool] = True

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    @classmethod
    @abstractmethod
    def make_plan(cls, given: PlanInputs) -> Plan:
        """The plan of this strategy (assess_compatibility; writes nothing)."""

    # -- the run -----------------------------------------------------------------------

    def create(self, client: QdrantClient, state: StateStore) -> dict[str, Any]:
        """create_collection: where the new vectors go (made, or reused on a rerun)."""
        raise self._not_here("create_collection")

    def backfill_job(
        self,
        client: QdrantClient,
        partition: Partition,
        state: StateStore,
        settings: BackfillSettings,
        provider: Callable[[], EmbeddingProvider],
    ) -> PartitionJob:
        """backfill_batch's job for one partition (``provider()`` builds the new model)."""
        raise self._not_here("backfill_batch")

    def finish_bulk_load(self, client: QdrantClient, state: StateStore) -> None:  # noqa: B027
        """restore_indexing: the bulk load is over (nothing to restore by default)."""

    @abstractmethod
    def served(self, client: QdrantClient) -> ProbeTarget:
        """The collection and vector the application searches now."""

    def pacer(self, client: QdrantClient, *, ways: int = 1) -> QdrantPacer:
        """The Qdrant budget of one of ``ways`` tasks writing at once, probing what is
        served (the embedded store serves nobody beside the migration: no probes)."""
        served = None if is_local(client) else self.served(client)
        spec = self.plan.spec
        return pacer_for(spec.budget, spec.batch_size, served=served, ways=ways)

    def forward_pass(
        self,
        client: QdrantClient,
        state: StateStore,
        provider: EmbeddingProvider,
        *,
        heartbeat: Callable[[], None],
        pacer: QdrantPacer,
    ) -> SyncPass:
        """A pass of the run's catch_up: the new vectors follow the served old ones."""
        raise self._not_here("catch_up")

    def follow_pass(
        self,
        client: QdrantClient,
        state: StateStore,
        record: MigrationRecord,
        models: Models,
        *,
        heartbeat: Callable[[], None],
        pacer: QdrantPacer,
    ) -> SyncPass:
        """A pass of the nightly catch-up: whatever is not served follows what is."""
        raise self._not_here("the nightly catch-up")

    def measure(self, client: QdrantClient, state: StateStore) -> Completeness:
        """recall_check: the new vectors against the served data, as of the last pass."""
        raise self._not_here("recall_check")

    def switch(
        self,
        client: QdrantClient,
        state: StateStore,
        record: MigrationRecord,
        models: Models,
        *,
        heartbeat: Callable[[], None],
        rollback: bool = False,
    ) -> Switched:
        """swap_alias (or the lifecycle DAG's rollback), losing no write."""
        raise self._not_here("rollback" if rollback else "swap_alias")

    def lift_index_cap(self, client: QdrantClient) -> dict[str, Any]:
        """After the switch: the new vectors' index is built as the served ones' was."""
        return {}

    def retire(
        self,
        client: QdrantClient,
        state: StateStore,
        record: MigrationRecord,
        *,
        observation_days: float,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """Delete what the migration left unused, and stop catching it up."""
        raise self._not_here("retire")

    # -- what a person may do ---------------------------------------------------------

    def lifecycle_actions(
        self, status: MigrationStatus, *, run_active: bool
    ) -> tuple[LifecycleAction, ...]:
        """The lifecycle actions that apply (a run driving the migration: ``run_active``).

        A swap can be rolled back. What is left unused can be retired after a swap (once
        the observation period is over, which the retire itself checks), a rollback or a
        rejection, and from a migration no run drives any more (it failed, and nobody
        resumed it).
        """
        actions = [LifecycleAction.ROLLBACK] if status is _S.SWAPPED else []
        ended = status in (_S.SWAPPED, _S.ROLLED_BACK, _S.REJECTED)
        if ended or (status in (_S.LOADING, _S.READY) and not run_active):
            actions.append(LifecycleAction.RETIRE)
        return tuple(actions)

    def require_action(
        self, record: MigrationRecord, action: LifecycleAction, *, running: str | None
    ) -> None:
        """Refuse, changing nothing, a lifecycle action that does not apply now."""
        if action in self.lifecycle_actions(record.status, run_active=running is not None):
            return
        if running is not None:
            raise LifecycleError(
                f"{record.migration_id} is being run by {running}; let it finish (approve or "
                f"reject) before you {action.value} it."
            )
        applies = self.lifecycle_actions(record.status, run_active=False)
        raise LifecycleError(
            f"{record.migration_id} ({self.kind.value}) is {record.status.value}: "
            f"{action.value} does not apply. What applies: "
            f"{', '.join(a.value for a in applies) or 'nothing'}."
        )

    # -- words -------------------------------------------------------------------------

    #: The report's name for vectors computed without embedding.
    derived_label: ClassVar[str] = "vectors derived without embedding"

    def query_note(self) -> str:
        """What queries must ask of the model beyond its name (the report)."""
        return ""

    def old_side(self) -> str:
        """Where the old vectors are, for the report (markdown)."""
        return f"`{self.plan.source.collection}`"

    def new_side(self) -> str:
        """Where the new vectors go, for the report (markdown)."""
        return f"`{self.plan.target_collection}`"

    @abstractmethod
    def approve_note(self) -> str:
        """What approving does (the report's last lines)."""

    @abstractmethod
    def alias_change(self) -> str:
        """What happens to the alias, for the dry run."""

    def creates(self, client: QdrantClient) -> list[str]:
        """The collections a run would create (a resumed migration reuses its own)."""
        return [] if client.collection_exists(STATE_COLLECTION) else [STATE_COLLECTION]

    def retire_victim(self, record: MigrationRecord) -> str:
        """What retiring would delete now, for the page's confirmation."""
        return "nothing"

    def _not_here(self, task: str) -> RuntimeError:
        return RuntimeError(f"{task} is not part of strategy {self.kind.value!r}")


# -- making plans ------------------------------------------------------------------------

PROBE_TEXT = "Qdrant model migration: connection and dimension check."
_VERSION_SUFFIX = re.compile(r"__.+__v\d+$")


def probe_dimension(provider: EmbeddingProvider, spec: MigrationSpec) -> int:
    """Embed one fixed query to check access and learn the model's true output size.

    A fixed text, embedded as a query, so that no stored document is embedded twice.
    """
    vector = provider.embed_queries([PROBE_TEXT])[0]
    actual = len(vector)
    if spec.dimensions is not None and actual != spec.dimensions:
        raise CompatibilityError(
            f"Model {spec.model!r} ({spec.provider}) returns {actual}-dimensional vectors, but "
            f"dimensions={spec.dimensions} was requested. Set dimensions to {actual} or leave "
            "it empty."
        )
    return actual


def target_name(client: QdrantClient, source: str, slug: str) -> str:
    """``<base>__<model>__v<n>``, with n one above any existing version of that base."""
    base = _VERSION_SUFFIX.sub("", source)
    pattern = re.compile(rf"^{re.escape(base)}__.+__v(\d+)$")
    versions = [
        int(m.group(1))
        for c in client.get_collections().collections
        if (m := pattern.match(c.name))
    ]
    return f"{base}__{slug}__v{max(versions, default=0) + 1}"


def new_lineage(provider: EmbeddingProvider, dimension: int, strategy: Strategy) -> Lineage:
    """The lineage of vectors the new model makes."""
    lineage = cast(Lineage, dict(provider.lineage()))
    lineage["dimensions"], lineage["strategy"] = dimension, strategy.value
    return lineage


def coverage_reason(given: PlanInputs, *, derives: bool) -> str | None:
    """What happens to points without text, when the sample found some."""
    spec, source = given.spec, given.source
    if source.text_coverage >= 1.0:
        return None
    share = f"{(1 - source.text_coverage):.0%} of sampled points lack text in {spec.text_field!r}"
    if derives:
        return (
            f"{share}; their stored vectors are carried over all the same (only points added "
            f"or edited later are embedded, under bad_text_policy={spec.bad_text_policy!r})."
        )
    return f"{share}; they are handled by bad_text_policy={spec.bad_text_policy!r}."
