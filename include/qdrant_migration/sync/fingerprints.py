"""What each point looked like when a migration's two collections were last in sync.

The application writes to the collection the alias serves; the other one follows it.
To tell *which side changed* since they were last equal (the served one: copy it over;
the follower: somebody else wrote it, which must not happen; both, across a swap: a
conflict), every write of the backfill and the catch-up records the point's state (a
hash of its payload) in a companion collection, ``qdrant_migration_sync__<migration>``,
one vector-less point per data point, with the same id. It streams in the same id order
as the data, so comparing three collections stays one flat-memory pass, and it is written
after the data it describes, so a crash in between only makes the next pass redo a point.

Vectors are not hashed: a point's vector is made from its text, which is in the payload.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration.qdrant import PointId, create_once, id_key, point_id, scroll_all

PREFIX = "qdrant_migration_sync__"


def collection_name(migration_id: str) -> str:
    return f"{PREFIX}{migration_id}"


def state_of(payload: Mapping[str, Any] | None, vectors: Mapping[str, Any] | None = None) -> str:
    """A short, stable hash of a payload (key order does not matter) and, for a collection
    with carried vectors, what of them is compared (``layout.Carried``)."""
    content: Any = payload or {}
    if vectors is not None:
        content = {"payload": content, "vectors": vectors}
    raw = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(raw.encode(), digest_size=8).hexdigest()


class Fingerprints:
    """The last synchronized state of every point of one migration."""

    def __init__(self, client: QdrantClient, migration_id: str) -> None:
        self.client = client
        self.collection = collection_name(migration_id)
        self._exists: bool | None = None

    def exists(self) -> bool:
        if self._exists is None:
            self._exists = self.client.collection_exists(self.collection)
        return self._exists

    def ensure(self) -> None:
        if not self.exists():
            create_once(self.client, self.collection, vectors_config={})
            self._exists = True

    def stream(self) -> Iterator[tuple[PointId, str]]:
        """``(id, state)`` of every recorded point, in Qdrant's id order."""
        if not self.exists():
            return
        for record in scroll_all(self.client, self.collection, with_payload=True, page=1000):
            yield point_id(record.id), str((record.payload or {}).get("s", ""))

    def lookup(self, ids: Sequence[PointId]) -> dict[PointId, str]:
        if not ids or not self.exists():
            return {}
        found = self.client.retrieve(self.collection, list(ids), with_payload=True)
        return {point_id(r.id): str((r.payload or {}).get("s", "")) for r in found}

    def record(self, states: Sequence[tuple[PointId, str | None]]) -> None:
        """Remember each point's state; None: the point is gone from both collections."""
        keep = [(p, s) for p, s in states if s is not None]
        gone: list[qm.ExtendedPointId] = [p for p, s in states if s is None]
        if keep:
            self.ensure()
            self.client.upsert(
                self.collection,
                qm.Batch(
                    ids=[p for p, _ in keep], vectors={}, payloads=[{"s": s} for _, s in keep]
                ),
                wait=True,
            )
        if gone and self.exists():
            self.client.delete(self.collection, qm.PointIdsList(points=gone), wait=True)

    def drop(self) -> None:
        if self.exists():
            self.client.delete_collection(self.collection)
        self._exists = False


Key = tuple[int, int]
Triple = tuple[PointId, qm.Record | None, qm.Record | None, str | None]


def align(
    source: Iterator[qm.Record], target: Iterator[qm.Record], states: Iterator[tuple[PointId, str]]
) -> Iterator[Triple]:
    """``(id, source point, target point, recorded state)`` for every id in any of the three
    id-ordered streams (None where a stream lacks it)."""
    s, t, f = next(source, None), next(target, None), next(states, None)
    while s is not None or t is not None or f is not None:
        keys: list[Key] = []
        if s is not None:
            keys.append(id_key(point_id(s.id)))
        if t is not None:
            keys.append(id_key(point_id(t.id)))
        if f is not None:
            keys.append(id_key(f[0]))
        low = min(keys)
        here: PointId | None = None
        src = tgt = None
        state = None
        if s is not None and id_key(point_id(s.id)) == low:
            src, here, s = s, point_id(s.id), next(source, None)
        if t is not None and id_key(point_id(t.id)) == low:
            tgt, here, t = t, point_id(t.id), next(target, None)
        if f is not None and id_key(f[0]) == low:
            here, state, f = f[0], f[1], next(states, None)
        assert here is not None
        yield here, src, tgt, state
