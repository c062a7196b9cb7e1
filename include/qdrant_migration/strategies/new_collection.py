"""A new, versioned collection behind the alias: what the full re-embed, the Matryoshka
truncation and the linear map share.

``create_collection`` makes ``<source>__<model>__v<n>`` configured like the source
(collections.py); the backfill embeds every text (or transforms the stored vectors:
:class:`DerivedVectors`); the catch-up copies the application's changes to it; the swap
moves the alias in one atomic operation and the rollback moves it back (aliases.py), the
nightly catch-up keeping whatever is not served level with what is; retire deletes the
collection left unused.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

from qdrant_client import QdrantClient

from include.qdrant_migration import aliases, collections
from include.qdrant_migration.aliases import Switched
from include.qdrant_migration.checks import completeness
from include.qdrant_migration.checks.completeness import Completeness
from include.qdrant_migration.plan import Plan
from include.qdrant_migration.providers import EmbeddingProvider
from include.qdrant_migration.state import (
    MigrationRecord,
    Migrations,
    MigrationStatus,
    StateStore,
)
from include.qdrant_migration.strategies.base import (
    MigrationStrategy,
    Models,
    PlanInputs,
    SyncPass,
    coverage_reason,
    new_lineage,
    probe_dimension,
    target_name,
)
from include.qdrant_migration.sync import fingerprints
from include.qdrant_migration.sync.backfill import (
    BackfillSettings,
    PartitionBackfill,
    PartitionJob,
)
from include.qdrant_migration.sync.catchup import CatchUp, CatchUpJob, follow_job
from include.qdrant_migration.sync.pacing import ProbeTarget, QdrantPacer
from include.qdrant_migration.sync.partitions import Partition
from include.qdrant_migration.sync.transform import Known, PartitionTransform, Transform


class NewCollection(MigrationStrategy):
    """The new vectors in a second collection; the switch is the alias."""

    path: ClassVar[tuple[str, ...]] = ("create_collection",)

    @classmethod
    def make_plan(cls, given: PlanInputs) -> Plan:
        spec, source, decision = given.spec, given.source, given.decision
        dimension = probe_dimension(given.provider, spec)
        previous = Migrations(given.state).get(given.migration_id)
        if previous is not None:
            target = previous.target_collection
            reasons = [
                f"Continuing migration {given.migration_id} into {target} (started earlier)."
            ]
        else:
            target = target_name(given.client, source.collection, spec.model_slug())
            reasons = []
        reasons += decision.reasons
        if reason := coverage_reason(given, derives=decision.strategy.derives_vectors):
            reasons.append(reason)
        if source.carried:
            reasons.append(
                f"Only vector {source.vector_name or '(unnamed)'!r} is migrated; "
                f"{', '.join(repr(n) for n in source.carried)} "
                "are copied unchanged, with their configuration."
            )
        if spec.add_sparse:
            reasons.append(
                f"The new collection gains sparse vector {spec.add_sparse!r}: BM25 of "
                f"{spec.text_field!r} (IDF modifier), for hybrid search from the swap on."
            )
        return Plan(
            migration_id=given.migration_id,
            alias=spec.alias,
            strategy=decision.strategy,
            reasons=reasons,
            source=source,
            target_collection=target,
            target_dimension=dimension,
            target_lineage=cls.lineage(given, dimension),
            spec=spec,
        )

    @classmethod
    def lineage(cls, given: PlanInputs, dimension: int) -> Any:
        return new_lineage(given.provider, dimension, given.decision.strategy)

    # -- the run -----------------------------------------------------------------------

    def create(self, client: QdrantClient, state: StateStore) -> dict[str, Any]:
        return dict(collections.create_target(client, self.plan, state))

    def backfill_job(
        self,
        client: QdrantClient,
        partition: Partition,
        state: StateStore,
        settings: BackfillSettings,
        provider: Callable[[], EmbeddingProvider],
    ) -> PartitionJob:
        return PartitionBackfill(client, self.plan, partition, provider(), state, settings)

    def finish_bulk_load(self, client: QdrantClient, state: StateStore) -> None:
        collections.finish_bulk_load(client, self.plan, state)

    def served(self, client: QdrantClient) -> ProbeTarget:
        plan = self.plan
        collection = aliases.current_target(client, plan.alias) or plan.source.collection
        return ProbeTarget(collection, plan.vector_name)

    def forward_pass(
        self,
        client: QdrantClient,
        state: StateStore,
        provider: EmbeddingProvider,
        *,
        heartbeat: Callable[[], None],
        pacer: QdrantPacer,
    ) -> SyncPass:
        job = CatchUpJob.forward(self.plan, provider)
        return CatchUp(client, job, state, heartbeat=heartbeat, pacer=pacer)

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
        serving = aliases.current_target(client, self.plan.alias)
        job = follow_job(self.plan, serving, models.new, models.old)
        return CatchUp(client, job, state, heartbeat=heartbeat, pacer=pacer)

    def measure(self, client: QdrantClient, state: StateStore) -> Completeness:
        return completeness.measure(client, self.plan, state)

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
        """A final pass, the atomic alias move, then the window's writes reconciled; a
        rollback mirrors with the old model (without it, nothing is copied back)."""
        job = CatchUpJob.forward(self.plan, models.new)
        if rollback:
            if models.old is None:
                return aliases.switch(client, state, record, rollback=True)
            job = job.mirror(models.old)
        return aliases.switch(
            client,
            state,
            record,
            rollback=rollback,
            final=CatchUp(client, job, state, heartbeat=heartbeat),
            reconcile=CatchUp(client, job.reconciling(), state, heartbeat=heartbeat),
        )

    def lift_index_cap(self, client: QdrantClient) -> dict[str, Any]:
        return collections.lift_index_cap(client, self.plan)

    def retire(
        self,
        client: QdrantClient,
        state: StateStore,
        record: MigrationRecord,
        *,
        observation_days: float,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        return dict(
            aliases.retire(
                client,
                state,
                migration_id=record.migration_id,
                observation_days=observation_days,
                now=now,
            )
        )

    # -- words -------------------------------------------------------------------------

    def approve_note(self) -> str:
        return (
            f"Approve to move the alias atomically; `{self.plan.source.collection}` stays for "
            "rollback."
        )

    def alias_change(self) -> str:
        plan = self.plan
        return f"{plan.alias}: {plan.source.collection} -> {plan.target_collection} on approval"

    def creates(self, client: QdrantClient) -> list[str]:
        plan = self.plan
        if client.collection_exists(plan.target_collection):
            return super().creates(client)  # a resumed migration reuses its target
        target = [plan.target_collection, fingerprints.collection_name(plan.migration_id)]
        return target + super().creates(client)

    def retire_victim(self, record: MigrationRecord) -> str:
        swapped = record.status is MigrationStatus.SWAPPED
        return f"collection {record.source_collection if swapped else record.target_collection!r}"


class DerivedVectors(NewCollection):
    """The new vectors computed from the stored ones, without embedding (the backfill);
    points added or edited later are embedded by the catch-up as usual."""

    def transform(self, state: StateStore) -> Transform:
        """What turns stored vectors into the new model's."""
        raise NotImplementedError

    def known(self, state: StateStore) -> Known:
        """True new vectors already paid for, written instead of derived ones."""
        return {}

    def backfill_job(
        self,
        client: QdrantClient,
        partition: Partition,
        state: StateStore,
        settings: BackfillSettings,
        provider: Callable[[], EmbeddingProvider],
    ) -> PartitionJob:
        derive, known = self.transform(state), self.known(state)
        return PartitionTransform(client, self.plan, partition, derive, state, settings, known)
