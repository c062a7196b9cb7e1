"""catch_up: live writes during the backfill end up in the target, at the cost of the change."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient

from include.qdrant_migration.backfill import PartitionBackfill
from include.qdrant_migration.catchup import CatchUp, CatchUpJob
from include.qdrant_migration.compatibility import Plan
from include.qdrant_migration.providers import EmbeddingProvider
from include.qdrant_migration.state import QdrantStateStore
from tests.qdrant_migration.helpers import (
    CountingProvider,
    all_points,
    make_source,
    prepare,
    settings_of,
    small_spec,
)

pytestmark = pytest.mark.integration

POINTS = 200


class WritingClient:
    """The real client; on the n-th scroll the application writes to the source.

    Scrolls happen on the backfill's own thread, so the writes land while the backfill is
    running, behind its cursor, without racing the embedded store from two threads.
    """

    def __init__(self, client: QdrantClient, on_scroll: int, write: Any) -> None:
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


def _seed(client: QdrantClient, corpus: list[dict[str, Any]], *, stamped: bool) -> None:
    """Ids 10, 20, ... so that inserts can land in the gaps behind the backfill's cursor."""
    points = []
    for i, record in enumerate(corpus[:POINTS], 1):
        payload = {"text": record["text"], "title": record["title"]}
        if stamped:
            payload["updated_at"] = 0.0
        points.append((i * 10, payload))
    make_source(client, "live_v1", points, alias="live", size=8)


def _writes(stamp: float | None) -> tuple[Any, dict[str, list[int]]]:
    """10% of the points: 5 inserts, 5 text edits, 5 payload-only edits, 5 deletions."""
    changes = {
        "inserted": [15, 25, 35, 45, 55],
        "text_changed": [10, 20, 30, 40, 50],
        "payload_only": [60, 70, 80, 90, 100],
        "deleted": [110, 120, 130, 140, 150],
    }

    def write(client: QdrantClient) -> None:
        extra = {} if stamp is None else {"updated_at": stamp}
        from qdrant_client import models as qm

        client.upsert(
            "live_v1",
            [
                qm.PointStruct(
                    id=pid,
                    vector=[0.5] * 8,
                    payload={"text": f"new note {pid}", "title": "n"} | extra,
                )
                for pid in changes["inserted"]
            ],
        )
        for pid in changes["text_changed"]:
            client.set_payload("live_v1", {"text": f"rewritten text {pid}"} | extra, points=[pid])
        for pid in changes["payload_only"]:
            client.set_payload("live_v1", {"title": f"retitled {pid}"} | extra, points=[pid])
        client.delete("live_v1", points_selector=changes["deleted"])

    return write, changes


def _assert_level(client: QdrantClient, plan: Plan, e5: EmbeddingProvider) -> None:
    source = all_points(client, plan.source.collection, vectors=False)
    target = all_points(client, plan.target_collection)
    assert [p.id for p in target] == [p.id for p in source]
    assert [p.payload for p in target] == [p.payload for p in source]
    expected = e5.embed_documents([p.payload["text"] for p in source])  # type: ignore[index]
    np.testing.assert_allclose([p.vector for p in target], expected, atol=1e-4)


def _backfill_with_writer(
    client: QdrantClient, e5: EmbeddingProvider, write: Any, **spec: Any
) -> tuple[Plan, QdrantStateStore]:
    state = QdrantStateStore(client)
    options = small_spec(alias="live", points_per_partition=1000, **spec)
    run = prepare(client, options, e5, state)
    writer = WritingClient(client, on_scroll=4, write=write)  # after 3 sub-batches are written
    for partition in run.partitions:
        PartitionBackfill(writer, run.plan, partition, e5, state, settings_of(options)).run()  # type: ignore[arg-type]
    return run.plan, state


def _job(plan: Plan, provider: EmbeddingProvider, **kwargs: Any) -> CatchUpJob:
    return CatchUpJob(
        migration_id=plan.migration_id,
        source=plan.source.collection,
        target=plan.target_collection,
        text_field="text",
        vector_name=None,
        provider=provider,
        batch_size=16,
        **kwargs,
    )


def test_writes_during_backfill_are_caught_up_embedding_only_what_changed(
    client: QdrantClient, corpus: list[dict[str, Any]], e5: EmbeddingProvider
) -> None:
    _seed(client, corpus, stamped=False)
    write, changes = _writes(stamp=None)
    plan, state = _backfill_with_writer(client, e5, write)
    counting = CountingProvider(e5)

    result = CatchUp(client, _job(plan, counting), state).run()

    assert result.mode == "full_compare"
    assert result.inserted == len(changes["inserted"])
    assert result.reembedded == len(changes["text_changed"])
    assert result.payload_updated == len(changes["payload_only"])
    assert result.deleted == len(changes["deleted"])
    assert counting.texts_embedded == len(changes["inserted"]) + len(changes["text_changed"])
    _assert_level(client, plan, e5)
    # A second pass finds nothing to do and never resurrects the deleted points.
    again = CatchUp(client, _job(plan, CountingProvider(e5)), state).run()
    assert (again.inserted, again.reembedded, again.deleted, again.embedded) == (0, 0, 0, 0)


def test_with_a_timestamp_field_only_changed_points_are_read(
    client: QdrantClient, corpus: list[dict[str, Any]], e5: EmbeddingProvider
) -> None:
    _seed(client, corpus, stamped=True)
    plan, state = _backfill_with_writer(client, e5, lambda c: None)
    first = CatchUp(client, _job(plan, e5, updated_at_field="updated_at", overlap_s=1), state).run()
    assert first.mode == "full_compare"  # no watermark yet: one full pass sets it
    time.sleep(1.1)
    write, changes = _writes(stamp=time.time())
    write(client)
    counting = CountingProvider(e5)

    result = CatchUp(
        client, _job(plan, counting, updated_at_field="updated_at", overlap_s=1), state
    ).run()

    assert result.mode == "watermark"
    assert result.unchanged == 0  # the untouched 95% were not even read
    assert counting.texts_embedded == len(changes["inserted"]) + len(changes["text_changed"])
    assert result.deleted == len(changes["deleted"])
    _assert_level(client, plan, e5)
