"""Helpers of the sync tests (backfill, catch-up, partitions, transforms).

The fast tier runs them with :class:`tests.fakes.HashingProvider` models (``old_model``
and ``new_model`` fixtures) where the model is not what is tested: the vectors are still
real, deterministic embeddings of each text, so "the target holds the new model's vector
of every text" is checked exactly.

Live writes (catch-up, reconciling, converging): :func:`live_migration` makes a backfilled
migration of :data:`LIVE` whose two sides can then be written like the application would;
:class:`RacingClient` and :class:`RacingProvider` make the application write in the middle
of a pass, between what it read and what it writes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration.plan import Plan
from include.qdrant_migration.providers import EmbeddingProvider
from include.qdrant_migration.qdrant import PointId, dense_vector, point_id, scroll_all
from include.qdrant_migration.spec import MigrationSpec
from include.qdrant_migration.state import QdrantStateStore
from include.qdrant_migration.sync.backfill import BackfillSettings, PartitionBackfill
from include.qdrant_migration.sync.catchup import CatchUp, CatchUpJob, CatchUpResult
from include.qdrant_migration.sync.fingerprints import Fingerprints
from scripts.seeding import seed_collection
from tests.fakes import HashingProvider
from tests.qdrant_migration.helpers import CountingProvider, all_points, prepare, small_spec

#: The model name of the ``new_model`` fixture (a target named after it says what made it).
FAST_MODEL = "hash-new"


def fast_spec(**overrides: Any) -> MigrationSpec:
    """:func:`small_spec` for a migration to the ``new_model`` fixture."""
    params: dict[str, Any] = {"model": FAST_MODEL}
    params.update(overrides)
    return small_spec(**params)


def hashed_memory_store(
    records: Sequence[dict[str, Any]], old_model: EmbeddingProvider
) -> QdrantClient:
    """What the ``fast_client`` fixture opens (alias 'articles' -> 'articles_v1', ``records``
    embedded by ``old_model``), in memory: the embedded store on disk commits every point
    it writes, which a test that writes a few hundred points (and their states) pays for in
    seconds."""
    client = QdrantClient(":memory:")
    seed_collection(
        client, collection="articles_v1", alias="articles", records=records, provider=old_model
    )
    return client


class WritingClient:
    """The real client; on the n-th scroll the application writes to the source.

    Scrolls happen on the backfill's own thread, so the writes land while the backfill is
    running, behind its cursor, without racing the embedded store from two threads.
    """

    def __init__(
        self, client: QdrantClient, on_scroll: int, write: Callable[[QdrantClient], None]
    ) -> None:
        self._client = client
        self._on_scroll = on_scroll
        self._write = write
        self.scrolls = 0

    def scroll(self, *args: Any, **kwargs: Any) -> Any:
        self.scrolls += 1
        if self.scrolls == self._on_scroll:
            self._write(self._client)
        return self._client.scroll(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


# -- live writes: a source that keeps changing, the target that follows it ----------------

#: The collection the application writes to at first, and the alias it writes through.
LIVE, LIVE_ALIAS = "live_v1", "live"

Payload = dict[str, Any]


def payloads(client: QdrantClient, collection: str) -> dict[PointId, Payload]:
    """Every point's payload, by id."""
    return {
        point_id(p.id): dict(p.payload or {})
        for p in scroll_all(client, collection, with_payload=True)
    }


def vectors(client: QdrantClient, collection: str) -> dict[PointId, list[float]]:
    """Every point's (unnamed, dense) vector, by id."""
    return {point_id(p.id): dense_vector(p, None) for p in all_points(client, collection)}


def seed_live(
    client: QdrantClient,
    points: Sequence[tuple[PointId, Payload]],
    model: EmbeddingProvider,
    *,
    collection: str = LIVE,
    alias: str | None = LIVE_ALIAS,
) -> None:
    """A source whose vectors are ``model``'s embeddings of each point's text."""
    client.create_collection(
        collection,
        vectors_config=qm.VectorParams(size=model.dimension, distance=qm.Distance.COSINE),
    )
    texts = [str(payload.get("text", "")) for _, payload in points]
    vectors_ = model.embed_documents(texts) if texts else []
    client.upsert(
        collection,
        [
            qm.PointStruct(id=pid, vector=vector, payload=payload)
            for (pid, payload), vector in zip(points, vectors_, strict=True)
        ],
        wait=True,
    )
    if alias:
        client.update_collection_aliases(
            change_aliases_operations=[
                qm.CreateAliasOperation(
                    create_alias=qm.CreateAlias(collection_name=collection, alias_name=alias)
                )
            ]
        )


@dataclass
class Live:
    """A migration of :data:`LIVE` to ``new_model``, backfilled: both sides level, every
    point's state recorded. ``old_model`` made the source's vectors."""

    client: QdrantClient
    plan: Plan
    state: QdrantStateStore
    new_model: HashingProvider
    old_model: HashingProvider

    @property
    def old(self) -> str:
        return self.plan.source.collection

    @property
    def new(self) -> str:
        return self.plan.target_collection

    def forward(self, provider: EmbeddingProvider | None = None, **changes: Any) -> CatchUpJob:
        job = CatchUpJob.forward(self.plan, provider or self.new_model)
        return dataclasses.replace(job, **changes)

    def mirror(self, provider: EmbeddingProvider | None = None, **changes: Any) -> CatchUpJob:
        job = CatchUpJob.forward(self.plan, self.new_model).mirror(provider or self.old_model)
        return dataclasses.replace(job, **changes)

    def run(
        self,
        job: CatchUpJob,
        *,
        client: Any = None,
        clock: Callable[[], datetime] | None = None,
    ) -> CatchUpResult:
        """One pass of ``job`` (through ``client`` when given: a racing wrapper)."""
        via = client or self.client
        if clock is None:
            return CatchUp(via, job, self.state).run()
        return CatchUp(via, job, self.state, clock=clock).run()

    def recorded(self) -> dict[PointId, str]:
        return dict(Fingerprints(self.client, self.plan.migration_id).stream())


def live_migration(
    client: QdrantClient,
    points: Sequence[tuple[PointId, Payload]],
    new_model: HashingProvider,
    old_model: HashingProvider,
    **spec: Any,
) -> Live:
    """Seed :data:`LIVE` with ``old_model``'s vectors and backfill it to ``new_model``."""
    seed_live(client, points, old_model)
    state = QdrantStateStore(client)
    options = fast_spec(alias=LIVE_ALIAS, points_per_partition=1000, **spec)
    run = prepare(client, options, new_model, state)
    for partition in run.partitions:
        PartitionBackfill(
            client, run.plan, partition, new_model, state, BackfillSettings.of(run.plan)
        ).run()
    return Live(client, run.plan, state, new_model, old_model)


def text_points(
    count: int, *, step: int = 10, stamp: float | str | None = None
) -> list[tuple[PointId, Payload]]:
    """``count`` points with ids step, 2*step, ... (gaps for inserts) and distinct texts."""
    extra = {} if stamp is None else {"updated_at": stamp}
    return [
        (i * step, {"text": f"note {i} about topic {i % 7}", "title": f"t{i}"} | extra)
        for i in range(1, count + 1)
    ]


class RacingClient:
    """The real client, but the application writes first when the pass calls ``method``
    on ``collection``: between what the pass read and what it writes.

    ``times`` races that many calls (None: every one); :attr:`raced` counts them.
    """

    def __init__(
        self,
        client: QdrantClient,
        method: str,
        collection: str,
        write: Callable[[QdrantClient], object],
        *,
        times: int | None = 1,
    ) -> None:
        self._inner = client
        self._method = method
        self._collection = collection
        self._write = write
        self._times = times
        self.raced = 0

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._inner, name)
        if name != self._method:
            return real

        def racing(*args: Any, **kwargs: Any) -> Any:
            collection = kwargs.get("collection_name", args[0] if args else None)
            if collection == self._collection and (self._times is None or self.raced < self._times):
                self.raced += 1
                self._write(self._inner)
            return real(*args, **kwargs)

        return racing


class RacingProvider(CountingProvider):
    """A real provider; while it embeds, the application writes (``write`` runs before the
    vectors are returned, on the ``on_call``-th call)."""

    def __init__(
        self, inner: EmbeddingProvider, write: Callable[[], object], *, on_call: int = 1
    ) -> None:
        super().__init__(inner)
        self._race = write
        self._on_call = on_call

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        vectors = super().embed_documents(texts)
        if self.calls == self._on_call:
            self._race()
        return vectors
