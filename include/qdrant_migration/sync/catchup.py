"""catch_up: bring the target level with a source that kept changing.

Production keeps writing through the alias while the backfill runs and while the approval
waits. Catch-up makes the target equal to the source again, at a cost that follows the
amount of change:

* new points are embedded and inserted; points whose text changed are embedded again;
* payload-only changes are copied without embedding (the target's payload is the record
  of what was embedded, so comparing it with the source's tells the two apart);
* points deleted from the source are deleted from the target, never resurrected.

With ``updated_at_field`` (a timestamp in the payload, payload-indexed on servers) only
points changed since the last watermark are read; the watermark is the time the previous
pass started, minus an overlap, so nothing written during a pass falls into a gap.
Without it, one id-ordered pass over both collections compares payloads. Deletions are
always found by id reconciliation (ids only, no payloads). Memory stays flat: both
collections are streamed in id order.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration.plan import Plan
from include.qdrant_migration.providers import EmbeddingError, EmbeddingProvider
from include.qdrant_migration.qdrant import PointId, id_key, point_id, scroll_all
from include.qdrant_migration.state import RecordKind, StateStore, now_iso
from include.qdrant_migration.sync.backfill import vector_struct
from include.qdrant_migration.sync.skips import forget_skip, record_skips, skipped_ids
from include.qdrant_migration.texts import extract_text, select_texts

log = logging.getLogger(__name__)

PAGE = 256


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
    bad_text_policy: str = "skip"
    #: The state key of the watermark: one per direction (forward, or mirror back).
    direction: str = "forward"

    @classmethod
    def forward(cls, plan: Plan, provider: EmbeddingProvider) -> CatchUpJob:
        """Source to target, embedding with the new model (before the swap)."""
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
        )

    def mirror(self, old_model: EmbeddingProvider) -> CatchUpJob:
        """The same pair the other way round, embedding with the old model (after the swap).

        The application writes to the new collection then; mirroring keeps the old one
        level so that a rollback loses nothing.
        """
        return dataclasses.replace(
            self,
            migration_id=f"{self.migration_id}/mirror",
            source=self.target,
            target=self.source,
            provider=old_model,
            direction="mirror",
        )


@dataclass
class CatchUpResult:
    mode: str
    inserted: int = 0
    reembedded: int = 0
    payload_updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    skipped: int = 0
    embedded: int = 0
    tokens: int = 0
    seconds: float = 0.0
    watermark: str | None = None
    skipped_by_reason: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CatchUpResult:
        return cls(**data)


Pair = tuple[qm.Record | None, qm.Record | None]


def _key(record: qm.Record) -> tuple[int, int]:
    return id_key(point_id(record.id))


def _merge(left: Iterator[qm.Record], right: Iterator[qm.Record]) -> Iterator[Pair]:
    """Pairs of records with the same id from two id-ordered streams (None where absent)."""
    a, b = next(left, None), next(right, None)
    while a is not None or b is not None:
        if b is None or (a is not None and _key(a) < _key(b)):
            yield a, None
            a = next(left, None)
        elif a is None or _key(b) < _key(a):
            yield None, b
            b = next(right, None)
        else:
            yield a, b
            a, b = next(left, None), next(right, None)


class CatchUp:
    """One catch-up pass; collects work in batches and applies it as it goes."""

    def __init__(
        self,
        client: QdrantClient,
        job: CatchUpJob,
        state: StateStore,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(tz=UTC),
    ) -> None:
        self.client = client
        self.job = job
        self.state = state
        #: When a pass starts (the next watermark); tests move it by hand.
        self.clock = clock
        self.to_embed: list[qm.Record] = []
        self.to_delete: list[PointId] = []
        # Read once: looked up for every point missing from the target.
        self.skips = skipped_ids(state, job.migration_id)
        #: Known skips seen again in this pass, whose text is checked once more.
        self.rechecks: set[str] = set()

    def run(self) -> CatchUpResult:
        started = time.monotonic()
        pass_start = self.clock()
        key = f"{self.job.migration_id}/{self.job.direction}"
        mark = self.state.get(RecordKind.WATERMARK, key) if self.job.updated_at_field else None
        if mark:
            result = CatchUpResult(mode="watermark", watermark=mark["since"])
            self._changed_since(result, mark["since"])
            self._flush(result, final=True)  # so the id pass below sees them written
            self._deletions(result)
        else:
            result = CatchUpResult(mode="full_compare")
            self._full_compare(result)
        self._flush(result, final=True)
        if self.job.updated_at_field:
            since = datetime.fromtimestamp(pass_start.timestamp() - self.job.overlap_s, tz=UTC)
            self.state.put(
                RecordKind.WATERMARK,
                key,
                {"since": since.isoformat(), "field": self.job.updated_at_field, "at": now_iso()},
            )
        result.seconds = round(time.monotonic() - started, 2)
        log.info("Catch-up %s -> %s: %s", self.job.source, self.job.target, result.to_dict())
        return result

    # -- finding changes -----------------------------------------------------------------

    def _full_compare(self, result: CatchUpResult) -> None:
        """One id-ordered pass over both collections, comparing payloads."""
        source = scroll_all(self.client, self.job.source, with_payload=True)
        target = scroll_all(self.client, self.job.target, with_payload=True)
        for src, tgt in _merge(source, target):
            self._classify(src, tgt, result)

    def _changed_since(self, result: CatchUpResult, since: str) -> None:
        """Only source points whose timestamp is at or after the watermark."""
        changed = scroll_all(
            self.client,
            self.job.source,
            with_payload=True,
            scroll_filter=self._since_filter(since),
        )
        batch: list[qm.Record] = []
        for record in changed:
            batch.append(record)
            if len(batch) >= PAGE:
                self._compare_batch(batch, result)
                batch = []
        if batch:
            self._compare_batch(batch, result)

    def _compare_batch(self, records: Sequence[qm.Record], result: CatchUpResult) -> None:
        found = self.client.retrieve(
            self.job.target, [r.id for r in records], with_payload=True, with_vectors=False
        )
        by_id = {p.id: p for p in found}
        for record in records:
            self._classify(record, by_id.get(record.id), result)

    def _deletions(self, result: CatchUpResult) -> None:
        """Ids in the target that the source no longer has; new ids without a timestamp."""
        source = scroll_all(self.client, self.job.source)
        target = scroll_all(self.client, self.job.target)
        for src, tgt in _merge(source, target):
            if src is None:
                assert tgt is not None
                self._delete(point_id(tgt.id), result)
            elif tgt is None and not self._known_skip(point_id(src.id)):
                full = self.client.retrieve(self.job.source, [src.id], with_payload=True)
                if full:
                    self._classify(full[0], None, result)

    def _since_filter(self, since: str) -> qm.Filter:
        field_name = str(self.job.updated_at_field)
        sample, _ = self.client.scroll(self.job.source, limit=1, with_payload=[field_name])
        value = (sample[0].payload or {}).get(field_name) if sample else None
        moment = datetime.fromisoformat(since)
        condition: qm.Range | qm.DatetimeRange
        if isinstance(value, int | float):
            condition = qm.Range(gte=moment.timestamp())
        else:
            condition = qm.DatetimeRange(gte=moment)
        return qm.Filter(must=[qm.FieldCondition(key=field_name, range=condition)])

    def _known_skip(self, point_id: PointId) -> bool:
        return str(point_id) in self.skips

    # -- applying changes ----------------------------------------------------------------

    def _classify(
        self, src: qm.Record | None, tgt: qm.Record | None, result: CatchUpResult
    ) -> None:
        if src is None:
            assert tgt is not None
            self._delete(point_id(tgt.id), result)
            return
        if tgt is None:
            self.to_embed.append(src)
            if self._known_skip(point_id(src.id)):
                # Skipped before: an insert only if its text has become usable (_embed_and_write).
                self.rechecks.add(str(src.id))
            else:
                result.inserted += 1
        elif (src.payload or {}) == (tgt.payload or {}):
            result.unchanged += 1
            return
        elif self._text(src) != self._text(tgt):
            self.to_embed.append(src)
            result.reembedded += 1
        else:
            self.client.overwrite_payload(
                self.job.target, payload=src.payload or {}, points=[src.id], wait=True
            )
            result.payload_updated += 1
        self._flush(result)

    def _text(self, record: qm.Record) -> str | None:
        return extract_text(record.payload, self.job.text_field)[0]

    def _delete(self, point_id: PointId, result: CatchUpResult) -> None:
        self.to_delete.append(point_id)
        result.deleted += 1
        self._flush(result)

    def _flush(self, result: CatchUpResult, *, final: bool = False) -> None:
        if self.to_delete and (final or len(self.to_delete) >= PAGE):
            ids: list[qm.ExtendedPointId] = list(self.to_delete)
            self.client.delete(self.job.target, qm.PointIdsList(points=ids), wait=True)
            self.to_delete = []
        if self.to_embed and (final or len(self.to_embed) >= self.job.batch_size):
            self._embed_and_write(self.to_embed, result)
            self.to_embed = []

    def _embed_and_write(self, records: list[qm.Record], result: CatchUpResult) -> None:
        usable = select_texts(
            records,
            self.job.provider,
            text_field=self.job.text_field,
            policy=self.job.bad_text_policy,
            collection=self.job.source,
        )
        still = [(p, r) for p, r in usable.skipped if str(p) in self.rechecks]
        fresh = [(p, r) for p, r in usable.skipped if str(p) not in self.rechecks]
        result.unchanged += len(still)  # a known skip whose text is still unusable
        result.inserted += sum(1 for r in usable.records if str(r.id) in self.rechecks)
        stale: list[qm.ExtendedPointId] = [skipped for skipped, _ in fresh]
        if stale:  # a point whose text became unusable must not keep its old vector
            self.client.delete(self.job.target, qm.PointIdsList(points=stale), wait=True)
        record_skips(self.state, self.job.migration_id, fresh)
        self.skips.update(str(skipped) for skipped, _ in fresh)
        for _, reason in fresh:
            result.skipped_by_reason[reason] = result.skipped_by_reason.get(reason, 0) + 1
        result.skipped += len(fresh)
        if not usable.records:
            return
        vectors = self.job.provider.embed_documents(usable.texts)
        if len(vectors) != len(usable.records):
            raise EmbeddingError(
                f"Provider returned {len(vectors)} vectors for {len(usable.records)} texts; "
                "nothing from this batch was written."
            )
        name = self.job.vector_name
        self.client.upsert(
            self.job.target,
            [
                qm.PointStruct(id=r.id, vector=vector_struct(name, v), payload=r.payload)
                for r, v in zip(usable.records, vectors, strict=True)
            ],
            wait=True,
        )
        for record in usable.records:  # a point that was skipped has usable text now
            if str(record.id) in self.skips:
                self.skips.discard(str(record.id))
                forget_skip(self.state, self.job.migration_id, point_id(record.id))
        result.embedded += len(usable.records)
        result.tokens += usable.tokens
