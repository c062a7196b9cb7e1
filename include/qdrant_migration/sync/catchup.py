"""catch_up: keep the collection the alias does not serve level with the one it serves.

The application writes through the alias the whole time. A pass copies what changed in
the served collection (the pass's *source*) since the two were last in sync to the other
one (its *target*), embedding with the target's model:

* inserts and text edits are embedded; payload-only edits are copied without embedding;
* deletions are applied, never resurrected;
* the state of every point it writes is recorded (:mod:`.fingerprints`), so the next pass
  knows which side changed: the source (copy it), or the target behind our back (drift:
  put it back, and count it).

Direction follows the alias (:func:`job_for`): forward (old → new, new model) while the
old collection is served, mirror (new → old, old model) after the swap, forward again
after a rollback. A pass never writes the served collection, except:

**Reconciling**, right after the alias moved: what the application wrote to the formerly
served collection after the last pass (the switch's window) is copied to the newly served
one. The newly served side's own writes win; a point written on both sides is a
conflict, which ``updated_at_field`` decides when present (else the served side wins).
Every such write is guarded (insert-only, update-only and conditioned on the target's
text), so it never overwrites or resurrects what the application wrote meanwhile; the
served side's own writes of the window get their vector re-made with its model (a write
that raced the switch may carry the other model's vector).

With ``updated_at_field`` (payload-indexed on servers) a pass reads only the points
changed since its watermark (the start of the previous pass minus an overlap) and the ids
of the three collections; without it, one id-ordered pass compares them all. Memory stays
flat: everything is streamed in id order.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import UnexpectedResponse

from include.qdrant_migration import codec, sparse
from include.qdrant_migration.choices import BadTextPolicy
from include.qdrant_migration.layout import Carried, point_vector
from include.qdrant_migration.plan import Plan
from include.qdrant_migration.providers import EmbeddingError, EmbeddingProvider
from include.qdrant_migration.qdrant import PointId, point_id, scroll_all, supports
from include.qdrant_migration.state import RecordKind, Repository, StateStore, now_iso
from include.qdrant_migration.sync.backfill import write_points
from include.qdrant_migration.sync.fingerprints import Fingerprints, align
from include.qdrant_migration.sync.pacing import QdrantPacer, unpaced
from include.qdrant_migration.sync.skips import forget_skip, record_skips, skipped_ids
from include.qdrant_migration.texts import extract_text, select_texts

log = logging.getLogger(__name__)

PAGE = 256
#: Which way a pass copies: old to new (the old collection is served), or new to old.
Direction = Literal["forward", "mirror"]
FORWARD: Direction = "forward"
MIRROR: Direction = "mirror"
#: How a pass found what changed: the points stamped since its watermark, every point
#: compared, or (in place) the texts compared with their vectors' recorded states.
PassMode = Literal["watermark", "full_compare", "in_place"]


@dataclass(frozen=True)
class CatchUpJob:
    """Copy changes from ``source`` to ``target`` (embedding with ``provider``)."""

    migration_id: str
    source: str
    target: str
    text_field: str
    vector_name: str | None
    provider: EmbeddingProvider
    updated_at_field: str | None = None
    overlap_s: float = 300.0
    batch_size: int = 128
    bad_text_policy: BadTextPolicy = "skip"
    #: forward: the old collection is served; mirror: the new one is.
    direction: Direction = FORWARD
    #: Right after a switch: ``source`` was served until now, ``target`` is served now.
    reconcile: bool = False
    #: Vectors copied unchanged with every point.
    carried: Carried = field(default_factory=Carried)
    #: The BM25 sparse vector written with every text (the new collection's only).
    add_sparse: str | None = None

    @classmethod
    def forward(cls, plan: Plan, provider: EmbeddingProvider) -> CatchUpJob:
        """Old to new, embedding with the new model (while the old collection is served)."""
        spec = plan.spec
        return cls(
            migration_id=plan.migration_id,
            source=plan.source.collection,
            target=plan.target_collection,
            text_field=spec.text_field,
            vector_name=plan.vector_name,
            provider=provider,
            updated_at_field=spec.updated_at_field,
            batch_size=spec.batch_size,
            bad_text_policy=spec.bad_text_policy,
            carried=plan.carried,
            add_sparse=plan.add_sparse,
        )

    def mirror(self, old_model: EmbeddingProvider) -> CatchUpJob:
        """The same pair the other way round, embedding with the old model.

        After the swap the application writes to the new collection; mirroring keeps the
        old one level so that a rollback loses nothing.
        """
        return dataclasses.replace(
            self,
            source=self.target,
            target=self.source,
            provider=old_model,
            direction=MIRROR,
            add_sparse=None,  # the old collection has no such vector
        )

    def reconciling(self) -> CatchUpJob:
        return dataclasses.replace(self, reconcile=True)

    @property
    def skip_scope(self) -> str:
        """Skips are per direction: the two models may refuse different texts."""
        return self._scope(self.direction)

    @property
    def other_skip_scope(self) -> str:
        return self._scope(MIRROR if self.direction == FORWARD else FORWARD)

    def _scope(self, direction: Direction) -> str:
        return self.migration_id if direction == FORWARD else f"{self.migration_id}/mirror"

    @property
    def watermark_key(self) -> str:
        return direction_key(self.migration_id, self.direction)


@dataclass
class CatchUpResult:
    mode: PassMode
    direction: Direction = FORWARD
    reconcile: bool = False
    inserted: int = 0
    reembedded: int = 0
    payload_updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    skipped: int = 0
    embedded: int = 0
    tokens: int = 0
    #: Target points changed behind our back (outside reconciling), put back.
    drift: int = 0
    #: Reconciling: points written on both sides since the last pass.
    conflicts: int = 0
    #: Reconciling: the served side's own writes kept (conflicts it won included).
    kept: int = 0
    #: Reconciling: vectors of the served side's own writes re-made with its model.
    revectored: int = 0
    seconds: float = 0.0
    #: When the pass started: what it copied is complete as of this moment.
    cut: str | None = None
    watermark: str | None = None
    skipped_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def changes(self) -> int:
        """Changes this pass found and applied: the lag the previous cut had."""
        return self.inserted + self.reembedded + self.payload_updated + self.deleted + self.skipped


def direction_key(migration_id: str, direction: Direction) -> str:
    """The key of a migration's per-direction records (its watermark, its last pass)."""
    return f"{migration_id}/{direction}"


@dataclass(frozen=True)
class LastPass:
    """What the last catch-up pass of one direction of a migration did, and when: the UI
    shows it, and the lag since its cut."""

    migration_id: str
    direction: Direction
    result: CatchUpResult
    at: str = field(default_factory=now_iso)

    @property
    def key(self) -> str:
        return direction_key(self.migration_id, self.direction)


class CatchUpPasses(Repository[LastPass]):
    """The last pass of each direction of each migration."""

    def __init__(self, store: StateStore) -> None:
        super().__init__(store, RecordKind.CATCH_UP, LastPass)

    def last(self, migration_id: str, direction: Direction) -> LastPass | None:
        return self.get(direction_key(migration_id, direction))


@dataclass(frozen=True)
class Watermark:
    """Where one direction of a migration's catch-up got to: its next pass reads the points
    whose ``updated_at_field`` is at or after ``since`` (a pass's start, minus the overlap)."""

    migration_id: str
    direction: Direction
    since: str
    updated_at_field: str
    at: str = field(default_factory=now_iso)

    @property
    def key(self) -> str:
        return direction_key(self.migration_id, self.direction)


class Watermarks(Repository[Watermark]):
    """The watermarks of a store, one per migration and direction."""

    def __init__(self, store: StateStore) -> None:
        super().__init__(store, RecordKind.WATERMARK, Watermark)


def record_pass(
    state: StateStore, migration_id: str, direction: Direction, result: CatchUpResult
) -> None:
    """Keep what a catch-up pass did: the UI shows the last pass and the lag since its cut."""
    CatchUpPasses(state).put(LastPass(migration_id, direction, result))


def _time_of(value: object) -> float | None:
    """An ``updated_at`` value (epoch seconds or RFC 3339) as epoch seconds."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    return None


@dataclass
class _Pending:
    """Writes collected for one batch, with the state each point will have after them."""

    embed: list[tuple[qm.Record, qm.Record | None]] = field(default_factory=list)
    delete: list[tuple[PointId, qm.Record | None]] = field(default_factory=list)
    revector: list[qm.Record] = field(default_factory=list)
    #: States to record where the collections already agree.
    synced: list[tuple[PointId, str | None]] = field(default_factory=list)


class CatchUp:
    """One catch-up pass; collects work in batches and applies it as it goes."""

    def __init__(
        self,
        client: QdrantClient,
        job: CatchUpJob,
        state: StateStore,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(tz=UTC),
        heartbeat: Callable[[], None] = lambda: None,
        pacer: QdrantPacer | None = None,
    ) -> None:
        self.client = client
        self.job = job
        self.state = state
        #: The Qdrant budget its writes keep to (none: as fast as Qdrant goes).
        self.pacer = pacer or unpaced()
        #: When a pass starts (its cut and the next watermark); tests move it by hand.
        self.clock = clock
        #: Called after every batch written: renews the writer's lease.
        self.heartbeat = heartbeat
        self.fingerprints = Fingerprints(client, job.migration_id)
        self.pending = _Pending()
        self._warned = False
        #: Reconciling: ids decided by this pass's timestamp scans (the window's, few).
        self.decided: set[str] = set()
        # Read once: looked up for every point missing from the target.
        self.skips = skipped_ids(state, job.skip_scope)
        #: Points the other direction skipped: on the other side only, on purpose.
        self.skipped_there = skipped_ids(state, job.other_skip_scope)

    def run(self) -> CatchUpResult:
        started = time.monotonic()
        cut = self.clock()
        watermarks = Watermarks(self.state)
        mark = watermarks.get(self.job.watermark_key) if self.job.updated_at_field else None
        result = CatchUpResult(
            mode="watermark" if mark else "full_compare",
            direction=self.job.direction,
            reconcile=self.job.reconcile,
            cut=cut.isoformat(timespec="seconds"),
        )
        if mark:
            result.watermark = mark.since
            self._changed_since(result, mark.since)
            if self.job.reconcile:  # the served side's own writes in the window, too
                self._changed_since(result, mark.since, in_target=True)
            self._flush(result, final=True)  # so the id pass below sees them written
            self._by_ids(result)
        else:
            self._full_compare(result)
        self._flush(result, final=True)
        if self.job.updated_at_field:
            since = datetime.fromtimestamp(cut.timestamp() - self.job.overlap_s, tz=UTC)
            watermarks.put(
                Watermark(
                    self.job.migration_id,
                    self.job.direction,
                    since.isoformat(),
                    self.job.updated_at_field,
                )
            )
        result.seconds = round(time.monotonic() - started, 2)
        record_pass(self.state, self.job.migration_id, self.job.direction, result)
        log.info("Catch-up %s -> %s: %s", self.job.source, self.job.target, result)
        return result

    # -- finding changes -----------------------------------------------------------------

    def _full_compare(self, result: CatchUpResult) -> None:
        """One id-ordered pass over both collections and the recorded states."""
        vectors = self.job.carried.read()
        triples = align(
            scroll_all(self.client, self.job.source, with_payload=True, with_vectors=vectors),
            scroll_all(self.client, self.job.target, with_payload=True, with_vectors=vectors),
            self.fingerprints.stream(),
        )
        for here, src, tgt, recorded in triples:
            self._decide(here, src, tgt, recorded, result)

    def _changed_since(self, result: CatchUpResult, since: str, *, in_target: bool = False) -> None:
        """Only the points whose timestamp is at or after the watermark (of the source, or
        of the target)."""
        changed = scroll_all(
            self.client,
            self.job.target if in_target else self.job.source,
            with_payload=True,
            with_vectors=self.job.carried.read(),
            scroll_filter=self._since_filter(since),
        )
        batch: list[PointId] = []
        for record in changed:
            here = point_id(record.id)
            if self.job.reconcile:  # changed on both sides: decide it once
                if str(here) in self.decided:
                    continue
                self.decided.add(str(here))
            batch.append(here)
            if len(batch) >= PAGE:
                self._fetch_and_decide(batch, result)
                batch = []
        if batch:
            self._fetch_and_decide(batch, result)

    def _by_ids(self, result: CatchUpResult) -> None:
        """Deletions, and points whose existence differs (new points without a timestamp)."""
        triples = align(
            scroll_all(self.client, self.job.source),
            scroll_all(self.client, self.job.target),
            self.fingerprints.stream(),
        )
        todo: list[PointId] = []
        for here, src, tgt, recorded in triples:
            if src is not None and tgt is not None and recorded is not None:
                continue  # on both sides: payload changes were found by timestamp
            if src is not None and tgt is None and self._known_skip(here):
                continue
            todo.append(here)
            if len(todo) >= PAGE:
                self._fetch_and_decide(todo, result)
                todo = []
        if todo:
            self._fetch_and_decide(todo, result)

    def _fetch_and_decide(self, ids: list[PointId], result: CatchUpResult) -> None:
        def fetch(collection: str) -> dict[PointId, qm.Record]:
            found = self.client.retrieve(
                collection, list(ids), with_payload=True, with_vectors=self.job.carried.read()
            )
            return {point_id(p.id): p for p in found}

        sources, targets = fetch(self.job.source), fetch(self.job.target)
        states = self.fingerprints.lookup(ids)
        for here in ids:
            self._decide(here, sources.get(here), targets.get(here), states.get(here), result)

    def _since_filter(self, since: str) -> qm.Filter:
        field_name = str(self.job.updated_at_field)
        stamped = qm.Filter(
            must_not=[qm.IsEmptyCondition(is_empty=qm.PayloadField(key=field_name))]
        )
        sample, _ = self.client.scroll(
            self.job.source, limit=1, with_payload=[field_name], scroll_filter=stamped
        )
        value = (sample[0].payload or {}).get(field_name) if sample else None
        moment = datetime.fromisoformat(since)
        condition: qm.Range | qm.DatetimeRange
        if isinstance(value, int | float):
            condition = qm.Range(gte=moment.timestamp())
        else:
            condition = qm.DatetimeRange(gte=moment)
        return qm.Filter(must=[qm.FieldCondition(key=field_name, range=condition)])

    def _known_skip(self, here: PointId) -> bool:
        return str(here) in self.skips

    # -- deciding ------------------------------------------------------------------------

    def _decide(
        self,
        here: PointId,
        src: qm.Record | None,
        tgt: qm.Record | None,
        recorded: str | None,
        result: CatchUpResult,
    ) -> None:
        """Compare the source, the target and their last synchronized state; act on it."""
        s = self.job.carried.state(src) if src is not None else None
        t = self.job.carried.state(tgt) if tgt is not None else None
        if s == t:
            if s is not None:
                result.unchanged += 1
            if recorded != s:
                self.pending.synced.append((here, s))
            self._flush(result)
            return
        if tgt is None and s == recorded and self._known_skip(here):
            result.unchanged += 1  # still the text that was skipped
            return
        if src is None and t == recorded and str(here) in self.skipped_there:
            result.unchanged += 1  # never copied the other way: not a deletion
            return
        source_changed, target_changed = s != recorded, t != recorded
        if self.job.reconcile:
            if target_changed and source_changed:
                result.conflicts += 1
            if not source_changed or (target_changed and not self._source_newer(src, tgt)):
                self._keep_target(tgt, result)
                return
        elif target_changed and not source_changed:
            result.drift += 1
        self._copy(here, src, tgt, result)

    def _source_newer(self, src: qm.Record | None, tgt: qm.Record | None) -> bool:
        """A conflict: ``updated_at_field`` decides when both sides have it; else the target."""
        name = self.job.updated_at_field
        if not name or src is None or tgt is None:
            return False
        mine = _time_of((src.payload or {}).get(name))
        theirs = _time_of((tgt.payload or {}).get(name))
        return mine is not None and theirs is not None and mine > theirs

    def _keep_target(self, tgt: qm.Record | None, result: CatchUpResult) -> None:
        """The served side's own write stands; make sure its vector is its model's."""
        result.kept += 1
        if tgt is not None and self._text(tgt) is not None:
            self.pending.revector.append(tgt)
            self._flush(result)

    def _copy(
        self, here: PointId, src: qm.Record | None, tgt: qm.Record | None, result: CatchUpResult
    ) -> None:
        if src is None:
            if tgt is not None:
                result.deleted += 1
            self.pending.delete.append((here, tgt))
        elif tgt is None:
            result.inserted += 1
            self.pending.embed.append((src, None))
        elif self._text(src) != self._text(tgt):
            result.reembedded += 1
            self.pending.embed.append((src, tgt))
        else:
            self._write_payload(here, src, tgt)
            result.payload_updated += 1
        self._flush(result)

    def _text(self, record: qm.Record) -> str | None:
        return extract_text(record.payload, self.job.text_field)[0]

    # -- applying changes ----------------------------------------------------------------

    def _guard(self, tgt: qm.Record) -> qm.Filter | None:
        """While reconciling: only if the target still holds what we read (never clobber).

        Conditional updates need Qdrant 1.16+; older servers get unconditional writes, so
        a write the application makes to the same point in the same instant can be lost.
        """
        if not self.job.reconcile:
            return None
        if not supports(self.client, (1, 16, 0)):
            if not self._warned:
                log.warning(
                    "Qdrant before 1.16 has no conditional updates: a write the application "
                    "makes to a point in the instant this reconciliation copies it can be lost."
                )
                self._warned = True
            return None
        conditions: list[qm.Condition] = [qm.HasIdCondition(has_id=[tgt.id])]
        text = self._text(tgt)
        if text is not None:
            conditions.append(
                qm.FieldCondition(key=self.job.text_field, match=qm.MatchValue(value=text))
            )
        name = self.job.updated_at_field
        stamp = (tgt.payload or {}).get(name) if name else None
        if name and isinstance(stamp, int | float):
            conditions.append(qm.FieldCondition(key=name, range=qm.Range(gte=stamp, lte=stamp)))
        elif name and isinstance(stamp, str):
            conditions.append(qm.FieldCondition(key=name, match=qm.MatchValue(value=stamp)))
        return qm.Filter(must=conditions)

    def _write_payload(self, here: PointId, src: qm.Record, tgt: qm.Record) -> None:
        self.pacer.acquire(1)
        guard = self._guard(tgt)
        self._write_carried(here, src, tgt, guard)  # first: the guard matches the old payload
        if guard is None:
            self.client.overwrite_payload(
                self.job.target, payload=src.payload or {}, points=[here], wait=True
            )
        else:
            self.client.overwrite_payload(
                self.job.target, payload=src.payload or {}, points=guard, wait=True
            )
        self.fingerprints.record([(here, self.job.carried.state(src))])

    def _write_carried(
        self, here: PointId, src: qm.Record, tgt: qm.Record, guard: qm.Filter | None
    ) -> None:
        """A payload-only change: the carried vectors follow too (set, or removed)."""
        carried = self.job.carried
        if not carried:
            return
        wanted, held = carried.of(src), carried.of(tgt)
        if wanted and wanted != held:
            self._update_vector(here, wanted, guard)
        if gone := sorted(set(held) - set(wanted)):
            selector: qm.PointsSelector = (
                qm.FilterSelector(filter=guard) if guard else qm.PointIdsList(points=[here])
            )
            self.client.delete_vectors(self.job.target, vectors=gone, points=selector, wait=True)

    def _flush(self, result: CatchUpResult, *, final: bool = False) -> None:
        pending = self.pending
        if pending.delete and (final or len(pending.delete) >= PAGE):
            self.pacer.acquire(len(pending.delete))
            self._delete(pending.delete)
            pending.delete = []
        if pending.embed and (final or len(pending.embed) >= self.job.batch_size):
            self.pacer.acquire(len(pending.embed))
            self._embed_and_write(pending.embed, result)
            pending.embed = []
        if pending.revector and (final or len(pending.revector) >= self.job.batch_size):
            self.pacer.acquire(len(pending.revector))
            self._revector(pending.revector, result)
            pending.revector = []
        if pending.synced and (final or len(pending.synced) >= PAGE):
            self.fingerprints.record(pending.synced)
            pending.synced = []

    def _delete(self, items: list[tuple[PointId, qm.Record | None]]) -> None:
        present = [(here, tgt) for here, tgt in items if tgt is not None]
        guards = [self._guard(tgt) for _, tgt in present]
        if present and all(g is None for g in guards):
            ids: list[qm.ExtendedPointId] = [here for here, _ in present]
            self.client.delete(self.job.target, qm.PointIdsList(points=ids), wait=True)
        else:
            for guard in guards:
                if guard is not None:
                    self.client.delete(self.job.target, qm.FilterSelector(filter=guard), wait=True)
        self.fingerprints.record([(here, None) for here, _ in items])
        self.heartbeat()

    def _embed_and_write(
        self, items: list[tuple[qm.Record, qm.Record | None]], result: CatchUpResult
    ) -> None:
        targets = {point_id(src.id): tgt for src, tgt in items}
        usable = select_texts(
            [src for src, _ in items],
            self.job.provider,
            text_field=self.job.text_field,
            policy=self.job.bad_text_policy,
            collection=self.job.source,
        )
        states = {point_id(src.id): self.job.carried.state(src) for src, _ in items}
        # A point whose text became unusable must not keep a vector of its old text.
        stale = [(here, targets[here]) for here, _ in usable.skipped if targets[here] is not None]
        if stale:
            self._delete(stale)
        record_skips(self.state, self.job.skip_scope, usable.skipped)
        self.skips.update(str(here) for here, _ in usable.skipped)
        for _, reason in usable.skipped:
            result.skipped_by_reason[reason] = result.skipped_by_reason.get(reason, 0) + 1
        result.skipped += len(usable.skipped)
        if usable.records:
            vectors = self.job.provider.embed_documents(usable.texts)
            self._check_count(vectors, len(usable.records))
            self._write(
                [
                    (r, targets[point_id(r.id)], v)
                    for r, v in zip(usable.records, vectors, strict=True)
                ]
            )
            for record in usable.records:  # a point that was skipped has usable text now
                if str(record.id) in self.skips:
                    self.skips.discard(str(record.id))
                    forget_skip(self.state, self.job.skip_scope, point_id(record.id))
            result.embedded += len(usable.records)
            result.tokens += usable.tokens
        self.fingerprints.record([(here, states[here]) for here in targets])
        self.heartbeat()

    def _check_count(self, vectors: list[list[float]], expected: int) -> None:
        if len(vectors) != expected:
            raise EmbeddingError(
                f"Provider returned {len(vectors)} vectors for {expected} texts; "
                "nothing from this batch was written."
            )

    def _write(self, rows: list[tuple[qm.Record, qm.Record | None, list[float]]]) -> None:
        name, carried = self.job.vector_name, self.job.carried
        added = self._added([r for r, _, _ in rows])

        def point(record: qm.Record, vector: list[float]) -> qm.PointStruct:
            extra = added.get(point_id(record.id), {})
            return qm.PointStruct(
                id=record.id,
                vector=point_vector(name, vector, carried.of(record), extra),
                payload=record.payload,
            )

        if not self.job.reconcile:  # the target is not served: nobody else writes it
            self.client.upsert(self.job.target, [point(r, v) for r, _, v in rows], wait=True)
            return
        fresh = [point(r, v) for r, t, v in rows if t is None]
        if fresh:  # never over a point the application inserted meanwhile
            write_points(self.client, self.job.target, fresh)
        for r, t, v in rows:
            if t is not None:  # only if the target still holds what we read
                self._upsert_existing(point(r, v), self._guard(t))

    def _added(self, records: list[qm.Record]) -> dict[PointId, dict[str, Any]]:
        """The added BM25 vector of each record's text (none when the job adds none)."""
        name = self.job.add_sparse
        texts = {point_id(r.id): t for r in records if (t := self._text(r)) is not None}
        if not name or not texts:
            return {}
        made = sparse.documents(self.client, list(texts.values()))
        return {here: {name: vector} for here, vector in zip(texts, made, strict=True)}

    def _upsert_existing(self, point: qm.PointStruct, guard: qm.Filter | None) -> None:
        """Rewrite a point that exists, only if it still matches ``guard``; never insert it."""
        if guard is None or supports(self.client, (1, 17, 0)):
            mode = qm.UpdateMode.UPDATE_ONLY if guard is not None else None
            self.client.upsert(
                self.job.target, [point], wait=True, update_filter=guard, update_mode=mode
            )
            return
        # 1.16: conditional updates but no update-only mode (a conditional upsert of a point
        # deleted meanwhile would insert it back). Both calls below touch existing points
        # only; the vector goes first so that a guard on the old text still matches.
        assert point.vector is not None
        self._update_vector(point.id, point.vector, guard)
        self.client.overwrite_payload(
            self.job.target, payload=point.payload or {}, points=guard, wait=True
        )

    def _update_vector(
        self, here: qm.ExtendedPointId, vector: qm.VectorStruct, guard: qm.Filter | None
    ) -> None:
        """Replace an existing point's vector; a point deleted meanwhile stays deleted."""
        try:
            self.client.update_vectors(
                self.job.target,
                [qm.PointVectors(id=here, vector=vector)],
                update_filter=guard,
                wait=True,
            )
        except (KeyError, UnexpectedResponse) as error:
            if isinstance(error, UnexpectedResponse) and error.status_code != 404:
                raise
            log.info("Point %s was deleted meanwhile: its vector is not needed", here)

    def _revector(self, targets: list[qm.Record], result: CatchUpResult) -> None:
        """Re-make the served side's own writes' vectors with its model, under the same
        bad-text policy as every embedding (a text it refuses keeps the vector written)."""
        usable = select_texts(
            targets,
            self.job.provider,
            text_field=self.job.text_field,
            policy=self.job.bad_text_policy,
            collection=self.job.target,
        )
        for here, reason in usable.skipped:
            log.info("Point %s keeps the vector it was written with: %s", here, reason)
            result.skipped_by_reason[reason] = result.skipped_by_reason.get(reason, 0) + 1
        if not usable.records:
            return
        vectors = self.job.provider.embed_documents(usable.texts)
        self._check_count(vectors, len(usable.records))
        name, added = self.job.vector_name, self._added(usable.records)
        for tgt, vector in zip(usable.records, vectors, strict=True):
            extra = added.get(point_id(tgt.id), {})
            self._update_vector(tgt.id, point_vector(name, vector, {}, extra), self._guard(tgt))
        result.revectored += len(usable.records)
        result.embedded += len(usable.records)
        result.tokens += usable.tokens
        self.heartbeat()


class SyncError(RuntimeError):
    """The collections cannot be kept in sync as things are; the message says why."""


def follow_job(
    plan: Plan,
    serving: str | None,
    new_model: EmbeddingProvider,
    old_model: EmbeddingProvider | None,
) -> CatchUpJob:
    """The pass that keeps the collection the alias does not serve level with the one it does."""
    forward = CatchUpJob.forward(plan, new_model)
    if serving == plan.source.collection:
        return forward
    if serving == plan.target_collection:
        if old_model is None:
            raise SyncError(
                f"The alias {plan.alias!r} serves {serving!r}, so changes must be mirrored to "
                f"{plan.source.collection!r} with the model that made its vectors, and it is "
                "unknown: set source_provider and source_model (a new run of the migration with "
                "them records it), or retire the migration."
            )
        return forward.mirror(old_model)
    raise SyncError(
        f"The alias {plan.alias!r} serves {serving!r}, neither {plan.source.collection!r} nor "
        f"{plan.target_collection!r}: migration {plan.migration_id} has nothing to follow."
    )


class NotConvergingError(SyncError):
    """Writes arrive faster than catch-up passes can copy them."""


@dataclass(frozen=True)
class Convergence:
    """The passes it took until the lag was under the bound."""

    passes: list[CatchUpResult]
    max_lag: int

    @property
    def last(self) -> CatchUpResult:
        return self.passes[-1]

    def total(self) -> CatchUpResult:
        """Every pass's counts added up, with the last pass's mode, cut and watermark."""
        total = dataclasses.replace(self.last, skipped_by_reason={})
        counted = [f.name for f in dataclasses.fields(CatchUpResult) if f.type in ("int", "float")]
        for name in counted:
            setattr(total, name, sum(getattr(p, name) for p in self.passes))
        for result in self.passes:
            for reason, count in result.skipped_by_reason.items():
                total.skipped_by_reason[reason] = total.skipped_by_reason.get(reason, 0) + count
        return total

    def to_dict(self) -> dict[str, Any]:
        """The catch_up XCom: every pass added up, and each pass's changes."""
        return codec.encode_dict(self.total()) | {
            "passes": len(self.passes),
            "changes_per_pass": [p.changes for p in self.passes],
            "max_lag": self.max_lag,
        }


def converge(
    run_pass: Callable[[], CatchUpResult],
    *,
    max_lag: int,
    max_passes: int = 12,
    heartbeat: Callable[[], None] = lambda: None,
) -> Convergence:
    """Run passes until one finds at most ``max_lag`` changes.

    Each pass copies what changed since the previous one started, so its change count is
    the lag the previous pass left. When three passes in a row stop shrinking it (writes
    arrive faster than a pass can go round), fail with the rates measured.
    """
    passes: list[CatchUpResult] = []
    while True:
        passes.append(run_pass())
        heartbeat()
        if passes[-1].changes <= max_lag:
            return Convergence(passes, max_lag)
        stalled = len(passes) >= 3 and passes[-1].changes >= 0.9 * passes[-3].changes
        if stalled or len(passes) >= max_passes:
            raise NotConvergingError(_rates(passes, max_lag))


def _rates(passes: list[CatchUpResult], max_lag: int) -> str:
    last, before = passes[-1], passes[-2]
    interval = _seconds_between(before.cut, last.cut) or before.seconds or 1.0
    rate = last.changes / interval
    return (
        f"Catch-up does not converge: {len(passes)} passes found "
        f"{', '.join(str(p.changes) for p in passes)} changes. Writes arrive at about "
        f"{rate:.1f} points/s ({last.changes} changes in the {interval:.0f}s between the last "
        f"two passes), and a pass takes {last.seconds:.0f}s ({last.mode}), so each pass finds "
        f"about {rate * last.seconds:.0f} new changes, more than max_catch_up_lag={max_lag}. "
        "Set updated_at_field (a pass then reads only what changed), raise max_catch_up_lag, "
        "or migrate at a quieter time."
    )


def _seconds_between(first: str | None, second: str | None) -> float | None:
    if not first or not second:
        return None
    return (datetime.fromisoformat(second) - datetime.fromisoformat(first)).total_seconds()
