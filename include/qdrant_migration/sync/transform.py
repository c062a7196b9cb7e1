"""The backfill of strategies that derive the new vectors from the stored ones.

Matryoshka truncation cuts each vector to its first d values and renormalizes it; the
linear map multiplies it by the fitted map. Neither embeds anything: a page is read with
its vectors, transformed in this process, and written with the same ids and payloads,
with the backfill's checkpoints, resume and summary (:class:`PartitionJob`). Points without
text keep their (transformed) vectors: nothing needs their text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration import linear_map
from include.qdrant_migration.plan import Plan
from include.qdrant_migration.qdrant import PointId, dense_vector, point_id
from include.qdrant_migration.state import StateStore
from include.qdrant_migration.sync.backfill import BackfillSettings, Batch, PartitionJob
from include.qdrant_migration.sync.partitions import Partition
from include.qdrant_migration.texts import extract_text

#: Skip reason of a point that has no stored vector to transform.
NO_VECTOR = "no stored vector"

Transform = Callable[[Sequence[Sequence[float]]], list[list[float]]]
#: id -> (hash of the text it was made from, the new model's vector of it).
Known = Mapping[PointId, tuple[str, list[float]]]


def truncate(vectors: Sequence[Sequence[float]], dimension: int) -> list[list[float]]:
    """The first ``dimension`` values of each vector, scaled back to unit length.

    For a Matryoshka-trained model this is what the model itself returns when asked for
    ``dimension`` (OpenAI's text-embedding-3 and Cohere's embed-v4.0 do exactly this).
    """
    import numpy as np

    if not vectors:
        return []
    cut = np.asarray(vectors, dtype=np.float64)[:, :dimension]
    norms = np.linalg.norm(cut, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    result: list[list[float]] = (cut / norms).tolist()
    return result


class PartitionTransform(PartitionJob):
    """One partition: read stored vectors, transform them, write them (no embedding)."""

    reads_vectors = True

    def __init__(
        self,
        client: QdrantClient,
        plan: Plan,
        partition: Partition,
        transform: Transform,
        state: StateStore,
        settings: BackfillSettings,
        known: Known | None = None,
    ) -> None:
        super().__init__(client, plan, partition, state, settings)
        self.transform = transform
        #: True vectors written instead of derived ones while their text is unchanged.
        self.known = known or {}

    def _prepare(
        self, records: list[qm.Record], next_offset: PointId | None, pool: ThreadPoolExecutor
    ) -> Batch:
        name = self.plan.vector_name
        stored = [(r, dense_vector(r, name)) for r in records]
        usable = [(r, v) for r, v in stored if v]
        skipped = [(point_id(r.id), NO_VECTOR) for r, v in stored if not v]
        done: Future[list[list[float]]] = Future()
        derived = self.transform([v for _, v in usable])
        if self.known:
            field = self.plan.spec.text_field
            for position, (record, _) in enumerate(usable):
                made = self.known.get(point_id(record.id))
                if made and made[0] == linear_map.text_hash(extract_text(record.payload, field)[0]):
                    derived[position] = made[1]
        done.set_result(derived)
        return Batch([r for r, _ in usable], skipped, next_offset, done)
