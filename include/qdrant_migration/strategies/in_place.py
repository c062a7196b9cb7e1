"""The in-place strategy: the new model's vectors as a new named vector of the same collection.

Qdrant 1.18 can add a named vector to an existing collection (``create_vector_name``) and
delete one (``delete_vector_name``); the embedded store can too. A migration then needs
no second collection and no second copy of the payloads:

* ``create_collection`` adds the vector (named after the new model), configured like the
  old one (per-vector HNSW, quantization, on-disk), and records both vectors' lineage in
  the collection's metadata, which names the **active vector**: the one applications
  search (an alias cannot select a vector);
* ``backfill_batch`` fills it with ``update_vectors``, each write guarded by the text it
  was made from (a point whose text changed meanwhile is left for the catch-up);
* the catch-up keeps it level (:class:`InPlaceSync`). An application's upsert that does
  not know the new vector drops it, a payload edit may change the text, a deletion needs
  nothing at all: a point is re-embedded when the vector is missing or its text is not
  the one recorded (:mod:`.sync.fingerprints`) when it was written;
* the checks search the new vector (``using``) and compare it with the old one;
* the switch (:func:`switch`) rewrites the metadata's active vector in one update, and
  from then on the old vector follows the new one with the old model, so a rollback
  (the same switch back) loses nothing; retire deletes the vector no longer used.

Refused on servers before 1.18, and for a collection whose vector is unnamed: the
application writes an unnamed vector, which a collection with named vectors refuses.

:class:`InPlace` is the strategy the DAG, the checks and the page ask; the functions
below are what it does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import UnexpectedResponse

from include.qdrant_migration import quantization
from include.qdrant_migration.aliases import AliasMove, LifecycleError, Switched
from include.qdrant_migration.checks.completeness import EXAMPLES, Completeness
from include.qdrant_migration.collections import (
    CollectionConflictError,
    lineage_record,
    record_migration,
)
from include.qdrant_migration.layout import METADATA_KEY, dense_vectors
from include.qdrant_migration.plan import Plan
from include.qdrant_migration.providers import EmbeddingError, EmbeddingProvider
from include.qdrant_migration.qdrant import (
    PointId,
    is_local,
    point_id,
    scroll_all,
    server_version,
)
from include.qdrant_migration.spec import Strategy
from include.qdrant_migration.state import (
    MigrationRecord,
    Migrations,
    MigrationStatus,
    StateStore,
    StatusError,
    now_iso,
)
from include.qdrant_migration.strategies.base import (
    MigrationStrategy,
    Models,
    PlanInputs,
    SyncPass,
    coverage_reason,
    new_lineage,
    probe_dimension,
)
from include.qdrant_migration.strategy import CompatibilityError
from include.qdrant_migration.sync.backfill import (
    BackfillSettings,
    PartitionBackfill,
    PartitionJob,
    forget_progress,
)
from include.qdrant_migration.sync.catchup import CatchUpResult, SyncError, record_pass
from include.qdrant_migration.sync.fingerprints import Fingerprints, align, collection_name
from include.qdrant_migration.sync.pacing import ProbeTarget, QdrantPacer, unpaced
from include.qdrant_migration.sync.partitions import Partition
from include.qdrant_migration.sync.skips import record_skips, skipped_ids
from include.qdrant_migration.texts import extract_text, select_texts

log = logging.getLogger(__name__)

MIN_VERSION = (1, 18, 0)
#: Roles in the metadata's ``vectors``: being filled, searched, kept for rollback.
FILLING, ACTIVE, STANDBY = "filling", "active", "standby"


# -- refusing and planning -------------------------------------------------------------


def require_support(client: QdrantClient, collection: str, vector_name: str | None) -> None:
    """Refuse, saying why, where a vector cannot be added beside the migrated one."""
    version = server_version(client)
    if version is not None and version < MIN_VERSION:
        raise CompatibilityError(
            f"strategy 'in_place' adds a named vector to {collection!r}, which needs Qdrant "
            f"{'.'.join(map(str, MIN_VERSION))} or later (create_vector_name); this server is "
            f"{'.'.join(map(str, version))}. Upgrade the server, or use strategy "
            "'full_reembed' (a new collection and an alias swap)."
        )
    if vector_name is None:
        raise CompatibilityError(
            f"strategy 'in_place' needs named vectors, and {collection!r} has one unnamed "
            "vector: once the collection has a named vector, Qdrant refuses the application's "
            "writes of an unnamed one. Use strategy 'full_reembed' (a new collection and an "
            "alias swap)."
        )


def vector_name_for(client: QdrantClient, collection: str, slug: str, migration_id: str) -> str:
    """The new vector's name: the model's slug, or the one this migration already added."""
    info = client.get_collection(collection)
    taken = set(dense_vectors(info)) | set(info.config.params.sparse_vectors or {})
    recorded = _vectors_meta(info)
    for name, entry in recorded.items():
        if entry.get("migration_id") == migration_id and name in taken:
            return name
    name, n = slug, 1
    while name in taken:
        n += 1
        name = f"{slug}-{n}"
    return name


def text_state(text: str | None) -> str:
    """What a vector was made from: its point's text (a payload-only edit keeps it)."""
    raw = "" if text is None else text
    return hashlib.blake2b(raw.encode(), digest_size=8).hexdigest()


def _lineage(info: qm.CollectionInfo) -> dict[str, Any]:
    found = (info.config.metadata or {}).get(METADATA_KEY)
    return dict(found) if isinstance(found, dict) else {}


def _vectors_meta(info: qm.CollectionInfo) -> dict[str, dict[str, Any]]:
    return {k: dict(v) for k, v in (_lineage(info).get("vectors") or {}).items()}


def active_vector(client: QdrantClient, plan: Plan) -> str | None:
    """The vector applications search, as the collection's metadata says."""
    found = _lineage(client.get_collection(plan.source.collection)).get("active_vector")
    return str(found) if found else plan.vector_name


def _write_metadata(
    client: QdrantClient, plan: Plan, roles: dict[str, str], active: str | None
) -> None:
    """The lineage of every vector and which one is active, in one metadata update.

    The top level keeps describing the active vector's model, as for any collection this
    project made, so a reader that knows nothing of in-place migrations still embeds its
    queries with the right model (and searches ``active_vector``).
    """
    info = client.get_collection(plan.source.collection)
    lineage = _lineage(info)
    vectors = _vectors_meta(info)
    for name, role in roles.items():
        if role == "":
            vectors.pop(name, None)
            continue
        made = lineage_record(plan) if name == plan.target_vector else plan.old_lineage()
        vectors[name] = dict(vectors.get(name) or made) | {"role": role}
    active = active or lineage.get("active_vector") or plan.vector_name
    top = {k: v for k, v in (vectors.get(str(active)) or lineage).items() if k != "role"}
    top |= {"active_vector": active, "vectors": vectors}
    client.update_collection(plan.source.collection, metadata={METADATA_KEY: top})


def add_vector(client: QdrantClient, plan: Plan, state: StateStore) -> dict[str, str | bool]:
    """create_collection, in place: the new named vector (or the one this migration added)."""
    collection, name = plan.source.collection, str(plan.target_vector)
    info = client.get_collection(collection)
    dense = dense_vectors(info)
    if name in dense:
        entry = _vectors_meta(info).get(name) or {}
        params = dense[name]
        if entry.get("migration_id") != plan.migration_id or params.size != plan.target_dimension:
            raise CollectionConflictError(
                f"Collection {collection!r} already has a vector {name!r} that this migration "
                f"did not add ({params.size}-d; the migration needs {plan.target_dimension}-d). "
                "Delete that vector, or choose another model/dimensions."
            )
        log.info(
            "Reusing vector %s of %s, added earlier by %s", name, collection, plan.migration_id
        )
        record_migration(state, plan, original_threshold=None, fresh=False)
        return {"collection": collection, "vector": name, "created": False}
    old = dense[str(plan.vector_name)]
    half = old.datatype == qm.Datatype.FLOAT16
    datatype = qm.VectorStorageDatatype.FLOAT16 if half else None
    client.create_vector_name(
        collection,
        name,
        qm.DenseVectorNameConfig(
            dense=qm.DenseVectorConfig(
                size=plan.target_dimension, distance=old.distance, datatype=datatype
            )
        ),
    )
    # What create_vector_name does not take: the old vector's own HNSW, quantization, on-disk;
    # and until the switch, the budget's cap on the threads that build its index (the
    # collection serves production meanwhile).
    diff = qm.VectorParamsDiff(
        hnsw_config=_capped_hnsw(plan, old.hnsw_config),
        quantization_config=quantization.vector_quantization(old, plan.spec.quantization),
        on_disk=old.on_disk,
    )
    if diff.model_dump(exclude_none=True):
        client.update_collection(collection, vectors_config={name: diff})
    forget_progress(client, state, plan.migration_id)
    _write_metadata(client, plan, {name: FILLING, str(plan.vector_name): ACTIVE}, None)
    log.info("Added vector %s (%d-d) to %s", name, plan.target_dimension, collection)
    record_migration(state, plan, original_threshold=None, fresh=True)
    return {"collection": collection, "vector": name, "created": True}


def _capped_hnsw(plan: Plan, own: qm.HnswConfigDiff | None) -> qm.HnswConfigDiff | None:
    threads = plan.spec.budget.max_indexing_threads
    if not threads:
        return own
    return (own or qm.HnswConfigDiff()).model_copy(update={"max_indexing_threads": threads})


def lift_index_cap(client: QdrantClient, plan: Plan) -> dict[str, Any]:
    """At the switch: the new vector's index is built as the old one's (no budget cap)."""
    if not plan.spec.budget.max_indexing_threads or is_local(client):
        return {}
    info = client.get_collection(plan.source.collection)
    old = dense_vectors(info)[str(plan.vector_name)]
    own = old.hnsw_config.max_indexing_threads if old.hnsw_config else None
    threads = own if own is not None else (info.config.hnsw_config.max_indexing_threads or 0)
    client.update_collection(
        plan.source.collection,
        vectors_config={
            str(plan.target_vector): qm.VectorParamsDiff(
                hnsw_config=qm.HnswConfigDiff(max_indexing_threads=threads)
            )
        },
    )
    log.info("Vector %s is served: index threads no longer capped", plan.target_vector)
    return {"max_indexing_threads": threads}


# -- writing ---------------------------------------------------------------------------


def update_where_text(
    client: QdrantClient,
    collection: str,
    text_field: str,
    rows: list[tuple[qm.ExtendedPointId, str, dict[str, Any]]],
) -> None:
    """Set vectors of existing points, each only if its text is still the one given.

    A point the application deleted meanwhile stays deleted (Qdrant refuses the whole
    request for a missing id: the rest is written again without it); one whose text changed
    is left for the catch-up, which finds its vector missing or made from another text.
    """
    for _ in range(3):
        if not rows:
            return
        guard = qm.Filter(
            should=[
                qm.Filter(
                    must=[
                        qm.HasIdCondition(has_id=[here]),
                        qm.FieldCondition(key=text_field, match=qm.MatchValue(value=text)),
                    ]
                )
                for here, text, _ in rows
            ]
        )
        points = [qm.PointVectors(id=here, vector=vectors) for here, _, vectors in rows]
        try:
            client.update_vectors(collection, points, update_filter=guard, wait=True)
            return
        except (KeyError, UnexpectedResponse) as error:
            if isinstance(error, UnexpectedResponse) and error.status_code != 404:
                raise
        there = {
            point_id(p.id)
            for p in client.retrieve(collection, [here for here, _, _ in rows], with_payload=False)
        }
        rows = [row for row in rows if point_id(row[0]) in there]
    raise RuntimeError(f"Points of {collection!r} kept disappearing while vectors were written.")


class InPlaceBackfill(PartitionBackfill):
    """backfill_batch, in place: the new vector of each point, written beside the old one."""

    def vectors_to_read(self) -> bool | list[str]:
        return False

    def state_of(self, record: qm.Record) -> str:
        return text_state(extract_text(record.payload, self.plan.spec.text_field)[0])

    def write(self, records: list[qm.Record], vectors: list[list[float]]) -> None:
        field_name, name = self.plan.spec.text_field, str(self.plan.target_vector)
        rows = [
            (r.id, str(extract_text(r.payload, field_name)[0]), {name: v})
            for r, v in zip(records, vectors, strict=True)
        ]
        update_where_text(self.client, self.plan.source.collection, field_name, rows)

    def _states_written(self, batch: Any) -> list[tuple[PointId, str | None]]:
        # The state read is the one the guarded write was made from: no read-back needed.
        return list(batch.states)


# -- keeping the vectors level -----------------------------------------------------------


@dataclass(frozen=True)
class VectorFill:
    """One vector kept level with the texts, by the model that made it."""

    vector: str
    provider: EmbeddingProvider
    #: Where its written states (and skips) are recorded.
    scope: str
    #: The follower: re-embedded when its text changed. The served vector is only filled
    #: where missing (a write that raced the switch); the application keeps it otherwise.
    follows: bool = True


def scope_of(plan: Plan, vector: str | None) -> str:
    """The new vector's states are the migration's own; the old one's are kept apart."""
    return plan.migration_id if vector == plan.target_vector else f"{plan.migration_id}__old"


def fills_for(
    plan: Plan,
    record: MigrationRecord,
    served: str | None,
    new_model: EmbeddingProvider,
    old_model: EmbeddingProvider | None,
) -> list[VectorFill]:
    """The follower (the vector not served), and after a switch the served one too."""
    new, old = str(plan.target_vector), str(plan.vector_name)
    models = {new: new_model, old: old_model}
    follower = old if served == new else new
    model = models[follower]
    if model is None:
        raise SyncError(
            f"{plan.source.collection!r} serves vector {served!r}, so changes must be made in "
            f"{follower!r} with the model that made it, and it is unknown: set source_provider "
            "and source_model (a new run of the migration records them), or retire it."
        )
    fills = [VectorFill(follower, model, scope_of(plan, follower))]
    served_model = models.get(str(served))
    switched = record.status in (MigrationStatus.SWAPPED, MigrationStatus.ROLLED_BACK)
    if switched and served_model is not None:
        fills.append(VectorFill(str(served), served_model, scope_of(plan, served), follows=False))
    return fills


class InPlaceSync:
    """One catch-up pass over the collection for each of ``fills``."""

    def __init__(
        self,
        client: QdrantClient,
        plan: Plan,
        fills: list[VectorFill],
        state: StateStore,
        *,
        heartbeat: Callable[[], None] = lambda: None,
        pacer: QdrantPacer | None = None,
    ) -> None:
        self.client = client
        self.plan = plan
        self.fills = fills
        self.state = state
        self.heartbeat = heartbeat
        self.pacer = pacer or unpaced()

    def run(self) -> CatchUpResult:
        started = datetime.now(tz=UTC)
        result = CatchUpResult(mode="in_place", cut=started.isoformat(timespec="seconds"))
        for fill in self.fills:
            self._pass(fill, result)
        result.seconds = round((datetime.now(tz=UTC) - started).total_seconds(), 2)
        record_pass(self.state, self.plan.migration_id, result.direction, result)
        log.info("Catch-up in %s: %s", self.plan.source.collection, result)
        return result

    def _pass(self, fill: VectorFill, result: CatchUpResult) -> None:
        collection, field_name = self.plan.source.collection, self.plan.spec.text_field
        fingerprints = Fingerprints(self.client, fill.scope)
        skips = skipped_ids(self.state, fill.scope)
        triples = align(
            scroll_all(self.client, collection, with_payload=[field_name]),
            _missing(self.client, collection, fill.vector),
            fingerprints.stream(),
        )
        todo: list[qm.Record] = []
        gone: list[tuple[PointId, str | None]] = []
        for here, point, missing, recorded in triples:
            if point is None:
                if recorded is not None:
                    gone.append((here, None))  # deleted: the vector went with it
                continue
            state = text_state(extract_text(point.payload, field_name)[0])
            if missing is None and (not fill.follows or recorded == state):
                result.unchanged += 1
                continue
            if missing is not None and recorded == state and str(here) in skips:
                result.unchanged += 1  # still the text that was skipped
                continue
            if missing is not None:
                result.inserted += 1
            else:
                result.reembedded += 1
            todo.append(point)
            if len(todo) >= self.plan.spec.batch_size:
                self.pacer.acquire(len(todo))
                self._embed(fill, todo, fingerprints, result)
                todo = []
        if todo:
            self.pacer.acquire(len(todo))
            self._embed(fill, todo, fingerprints, result)
        fingerprints.record(gone)
        result.deleted += len(gone)

    def _embed(
        self,
        fill: VectorFill,
        records: list[qm.Record],
        fingerprints: Fingerprints,
        result: CatchUpResult,
    ) -> None:
        collection, field_name = self.plan.source.collection, self.plan.spec.text_field
        usable = select_texts(
            records,
            fill.provider,
            text_field=field_name,
            policy=self.plan.spec.bad_text_policy,
            collection=collection,
        )
        if usable.skipped and fill.follows:  # no vector of a text the point no longer has
            stale: list[qm.ExtendedPointId] = [here for here, _ in usable.skipped]
            self.client.delete_vectors(
                collection, [fill.vector], qm.PointIdsList(points=stale), wait=True
            )
        record_skips(self.state, fill.scope, usable.skipped)
        for _, reason in usable.skipped:
            result.skipped_by_reason[reason] = result.skipped_by_reason.get(reason, 0) + 1
        result.skipped += len(usable.skipped)
        if usable.records:
            vectors = fill.provider.embed_documents(usable.texts)
            if len(vectors) != len(usable.records):
                raise EmbeddingError(
                    f"Provider returned {len(vectors)} vectors for {len(usable.records)} texts; "
                    "nothing from this batch was written."
                )
            rows = [
                (r.id, str(extract_text(r.payload, field_name)[0]), {fill.vector: v})
                for r, v in zip(usable.records, vectors, strict=True)
            ]
            update_where_text(self.client, collection, field_name, rows)
            result.embedded += len(usable.records)
            result.tokens += usable.tokens
        fingerprints.record(
            [(point_id(r.id), text_state(extract_text(r.payload, field_name)[0])) for r in records]
        )
        self.heartbeat()


def _missing(client: QdrantClient, collection: str, vector: str) -> Any:
    lacking = qm.Filter(must_not=[qm.HasVectorCondition(has_vector=vector)])
    return scroll_all(client, collection, scroll_filter=lacking, page=1000)


def served_as_written(client: QdrantClient, plan: Plan, vector: str) -> None:
    """Record the served vector's points as current, just before it stops being served.

    The application kept it level with its texts; from the switch on it follows the other
    one, re-embedded where the application's later writes drop it or change its text.
    """
    collection, field_name = plan.source.collection, plan.spec.text_field
    fingerprints = Fingerprints(client, scope_of(plan, vector))
    fingerprints.drop()
    batch: list[tuple[PointId, str | None]] = []
    triples = align(
        scroll_all(client, collection, with_payload=[field_name], page=1000),
        _missing(client, collection, vector),
        iter(()),
    )
    for here, point, missing, _ in triples:
        if point is not None and missing is None:
            batch.append((here, text_state(extract_text(point.payload, field_name)[0])))
        if len(batch) >= 1000:
            fingerprints.record(batch)
            batch = []
    fingerprints.record(batch)


# -- checking ----------------------------------------------------------------------------


def measure(client: QdrantClient, plan: Plan, state: StateStore) -> Completeness:
    """The new vector against the texts, as of the last catch-up.

    A point without the new vector, or whose text is not the one its vector was made from,
    is lag: the application wrote it after the catch-up (an upsert that does not know the
    new vector drops it). Nothing else writes the new vector, so nothing is "damaged".
    """
    collection, field_name = plan.source.collection, plan.spec.text_field
    skips = skipped_ids(state, plan.migration_id)
    points = lag = skipped = 0
    examples: list[PointId] = []
    triples = align(
        scroll_all(client, collection, with_payload=[field_name]),
        _missing(client, collection, str(plan.target_vector)),
        Fingerprints(client, plan.migration_id).stream(),
    )
    with_vector = 0
    for here, point, missing, recorded in triples:
        if point is None:
            continue
        points += 1
        with_vector += missing is None
        state_now = text_state(extract_text(point.payload, field_name)[0])
        if recorded == state_now and (missing is None or str(here) in skips):
            skipped += missing is not None
            continue
        lag += 1
        if len(examples) < EXAMPLES:
            examples.append(here)
    return Completeness(
        source_points=points,
        target_points=with_vector,
        lag=lag,
        lag_examples=examples,
        skipped=skipped,
    )


# -- switching ---------------------------------------------------------------------------


def switch(
    client: QdrantClient,
    state: StateStore,
    record: MigrationRecord,
    *,
    rollback: bool = False,
    final: InPlaceSync | None = None,
    after: InPlaceSync | None = None,
) -> Switched:
    """Make the new vector the active one (or the old one again, on rollback), losing nothing.

    ``final`` levels the vector about to be served; the switch is one metadata update;
    ``after`` fills the vectors the application's writes that raced the switch lack.
    """
    plan = record.plan
    assert plan is not None
    new, old = str(plan.target_vector), str(plan.vector_name)
    if rollback:
        before_status, after_status, leaving, coming = (
            MigrationStatus.SWAPPED,
            MigrationStatus.ROLLED_BACK,
            new,
            old,
        )
    else:
        before_status, after_status = MigrationStatus.READY, MigrationStatus.SWAPPED
        leaving, coming = old, new
    current = active_vector(client, plan)
    final_result = None
    if record.status is before_status and current != coming:
        if current != leaving:
            raise StatusError(
                f"{plan.source.collection!r} serves vector {current!r}, not {leaving!r} as "
                "this migration expects; somebody changed its metadata. Nothing was changed."
            )
        final_result = final.run() if final is not None else None
        served_as_written(client, plan, leaving)
        _write_metadata(client, plan, {coming: ACTIVE, leaving: STANDBY}, coming)
        log.info("%s: active vector %s -> %s", plan.source.collection, leaving, coming)
    elif current != coming or record.status not in (before_status, after_status):
        raise StatusError(
            f"Migration {record.migration_id} is {record.status.value} and "
            f"{plan.source.collection!r} serves vector {current!r}: nothing to "
            f"{'roll back' if rollback else 'switch'}."
        )
    if record.status is before_status:
        changes: dict[str, Any] = (
            {"rolled_back_at": now_iso()}
            if rollback
            else {"swapped_at": now_iso(), "previous_collection": plan.source.collection}
        )
        record = Migrations(state).transition(record, after_status, **changes)
    raced = after.run() if after is not None else None
    move = AliasMove(
        record.alias,
        plan.source.collection,
        plan.source.collection,
        record.migration_id,
        "rollback" if rollback else "swap",
        str(record.rolled_back_at if rollback else record.swapped_at),
        from_vector=leaving,
        to_vector=coming,
    )
    return Switched(move, final_result, raced)


def retire(
    client: QdrantClient,
    state: StateStore,
    record: MigrationRecord,
    *,
    observation_days: float,
    now: datetime | None = None,
) -> dict[str, str | bool | None]:
    """Delete the vector the migration left unused: after a switch the old one, once the
    observation period has passed; otherwise the new one. The active vector never."""
    plan = record.plan
    assert plan is not None
    collection = plan.source.collection
    if record.status is MigrationStatus.SWAPPED:
        victim = str(plan.vector_name)
        swapped_at = datetime.fromisoformat(str(record.swapped_at))
        ready = swapped_at + timedelta(days=observation_days)
        if (now or datetime.now(tz=UTC)) < ready:
            raise LifecycleError(
                f"{record.migration_id} switched {collection!r} at {swapped_at:%Y-%m-%d %H:%M} "
                f"UTC; its old vector {victim!r} is kept for rollback until "
                f"{ready:%Y-%m-%d %H:%M} UTC (observation_days={observation_days})."
            )
    else:
        victim = str(plan.target_vector)
    if active_vector(client, plan) == victim:
        raise LifecycleError(f"Vector {victim!r} of {collection!r} is the active one; not deleted.")
    if victim in dense_vectors(client.get_collection(collection)):
        client.delete_vector_name(collection, victim)
    _write_metadata(client, plan, {victim: ""}, None)
    for vector in (plan.target_vector, plan.vector_name):
        Fingerprints(client, scope_of(plan, vector)).drop()
    Migrations(state).transition(
        record,
        MigrationStatus.RETIRED,
        retired_at=now_iso(),
        deleted_collection=f"{collection} (vector {victim})",
    )
    return {"migration_id": record.migration_id, "deleted": f"{collection}:{victim}"}


# -- the strategy ------------------------------------------------------------------------


class InPlace(MigrationStrategy):
    """A new named vector of the collection the alias serves; the switch is its metadata."""

    kind = Strategy.IN_PLACE
    path: ClassVar[tuple[str, ...]] = ("create_collection",)
    copies_points: ClassVar[bool] = False

    @classmethod
    def make_plan(cls, given: PlanInputs) -> Plan:
        spec, source, decision = given.spec, given.source, given.decision
        require_support(given.client, source.collection, source.vector_name)
        dimension = probe_dimension(given.provider, spec)
        previous = Migrations(given.state).get(given.migration_id)
        recorded = previous.plan.target_vector if previous and previous.plan else None
        name = recorded or vector_name_for(
            given.client, source.collection, spec.model_slug(), given.migration_id
        )
        reasons = [*decision.reasons, f"The new vector is {name!r}, beside {source.vector_name!r}."]
        if reason := coverage_reason(given, derives=False):
            reasons.append(reason)
        return Plan(
            migration_id=given.migration_id,
            alias=spec.alias,
            strategy=decision.strategy,
            reasons=reasons,
            source=source,
            target_collection=source.collection,
            target_dimension=dimension,
            target_lineage=new_lineage(given.provider, dimension, decision.strategy),
            spec=spec,
            target_vector=name,
        )

    def create(self, client: QdrantClient, state: StateStore) -> dict[str, Any]:
        return dict(add_vector(client, self.plan, state))

    def backfill_job(
        self,
        client: QdrantClient,
        partition: Partition,
        state: StateStore,
        settings: BackfillSettings,
        provider: Callable[[], EmbeddingProvider],
    ) -> PartitionJob:
        return InPlaceBackfill(client, self.plan, partition, provider(), state, settings)

    def served(self, client: QdrantClient) -> ProbeTarget:
        return ProbeTarget(self.plan.source.collection, active_vector(client, self.plan))

    def forward_pass(
        self,
        client: QdrantClient,
        state: StateStore,
        provider: EmbeddingProvider,
        *,
        heartbeat: Callable[[], None],
        pacer: QdrantPacer,
    ) -> SyncPass:
        plan = self.plan
        fill = VectorFill(str(plan.target_vector), provider, plan.migration_id)
        return InPlaceSync(client, plan, [fill], state, heartbeat=heartbeat, pacer=pacer)

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
        plan = self.plan
        fills = fills_for(plan, record, active_vector(client, plan), models.new, models.old)
        return InPlaceSync(client, plan, fills, state, heartbeat=heartbeat, pacer=pacer)

    def measure(self, client: QdrantClient, state: StateStore) -> Completeness:
        return measure(client, self.plan, state)

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
        """Level the vector about to be served, switch, then fill what raced the switch."""
        plan = self.plan
        leaving = str(plan.target_vector if rollback else plan.vector_name)
        coming = str(plan.vector_name if rollback else plan.target_vector)
        by_vector = {str(plan.target_vector): models.new, str(plan.vector_name): models.old}
        final = None
        if (model := by_vector[coming]) is not None:
            fill = VectorFill(coming, model, scope_of(plan, coming))
            final = InPlaceSync(client, plan, [fill], state, heartbeat=heartbeat)
        status = MigrationStatus.ROLLED_BACK if rollback else MigrationStatus.SWAPPED
        switched = dataclasses.replace(record, status=status)
        try:
            fills = fills_for(plan, switched, coming, models.new, models.old)
        except SyncError:
            log.warning("The old model is unknown: vector %s cannot be kept level.", leaving)
            fills = []
        after = InPlaceSync(client, plan, fills, state, heartbeat=heartbeat)
        return switch(client, state, record, rollback=rollback, final=final, after=after)

    def lift_index_cap(self, client: QdrantClient) -> dict[str, Any]:
        return lift_index_cap(client, self.plan)

    def retire(
        self,
        client: QdrantClient,
        state: StateStore,
        record: MigrationRecord,
        *,
        observation_days: float,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        return dict(retire(client, state, record, observation_days=observation_days, now=now))

    def old_side(self) -> str:
        return f"`{self.plan.source.collection}` vector `{self.plan.vector_name}`"

    def new_side(self) -> str:
        return f"`{self.plan.source.collection}` vector `{self.plan.target_vector}` (in place)"

    def approve_note(self) -> str:
        plan = self.plan
        return (
            f"Approve to make `{plan.target_vector}` the active vector in the collection's "
            f"metadata (the alias stays); `{plan.vector_name}` stays for rollback."
        )

    def alias_change(self) -> str:
        plan = self.plan
        return (
            f"{plan.alias}: stays on {plan.source.collection}; its metadata's active_vector "
            f"{plan.vector_name} -> {plan.target_vector} on approval (vector "
            f"{plan.target_vector} is added now)"
        )

    def creates(self, client: QdrantClient) -> list[str]:
        states = collection_name(self.plan.migration_id)
        return super().creates(client) + ([] if client.collection_exists(states) else [states])

    def retire_victim(self, record: MigrationRecord) -> str:
        plan = self.plan
        unused = (
            plan.vector_name if record.status is MigrationStatus.SWAPPED else plan.target_vector
        )
        return f"vector {unused!r} of {plan.source.collection!r}"
