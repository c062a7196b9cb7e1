"""Hybrid, named-vector and multivector collections migrated end to end through the swap,
against the engine-backed test server (a Qdrant server keeps normalized vectors as they
are, so carried vectors must arrive byte for byte)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from qdrant_client import models as qm

from include.qdrant_migration.aliases import current_target
from include.qdrant_migration.qdrant import open_client
from tests.dags.conftest import task_states
from tests.fakes import HashingProvider
from tests.qdrant_migration.helpers import all_points, seed_layout
from tests.qdrant_server import QdrantServer

pytestmark = pytest.mark.integration

ALIAS, SOURCE = "docs", "docs_v1"
NEW_MODEL, NEW_SIZE = "text-embedding-3-large", 256
CONF = {
    "alias": ALIAS,
    "provider": "openai",
    "model": NEW_MODEL,
    "dimensions": NEW_SIZE,
    "provider_conn_id": "embeddings",
    "points_per_partition": 100,
    "batch_size": 16,
    "recall_sample_size": 20,
}
#: layout -> (migrated vector, carried vectors)
LAYOUTS = {
    "hybrid": ("dense", ["bm25"]),
    "named": ("body", ["title"]),
    "multivector": ("dense", ["colbert"]),
}


def _bytes(vector: Any) -> Any:
    """A stored vector as the bytes Qdrant keeps (float32), sparse as (indices, values)."""
    if isinstance(vector, qm.SparseVector):
        return (list(vector.indices), np.asarray(vector.values, dtype=np.float32).tobytes())
    return np.asarray(vector, dtype=np.float32).tobytes()


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_a_layout_migrates_through_the_swap_with_its_other_vectors_byte_identical(
    layout: str,
    server_conn: QdrantServer,
    corpus: list[dict[str, Any]],
    openai_connection: None,
    dagbag: Any,
    reviewer: Callable[[str], dict[str, Any]],
) -> None:
    from tests.standin import expected_vector

    migrated, carried = LAYOUTS[layout]
    with open_client(server_conn.settings()) as client:
        seed_layout(
            client,
            layout,
            corpus[:120],
            HashingProvider("hash-old"),
            collection=SOURCE,
            alias=ALIAS,
        )
    seen = reviewer("Approve")
    conf = CONF | ({"vector_name": migrated} if layout == "named" else {})
    run = dagbag.get_dag("qdrant_model_migration").test(run_conf=conf)

    assert "error" not in seen, seen.get("error")
    assert run.state == "success", task_states(run)
    with open_client(server_conn.settings()) as client:
        target = current_target(client, ALIAS)
        assert target is not None and target != SOURCE  # swapped
        before = client.get_collection(SOURCE).config.params
        after = client.get_collection(target).config.params
        assert after.sparse_vectors == before.sparse_vectors
        if isinstance(before.vectors, dict) and isinstance(after.vectors, dict):
            for name in carried:
                if name in before.vectors:
                    assert after.vectors[name] == before.vectors[name]
        old = {p.id: p for p in all_points(client, SOURCE)}
        new = {p.id: p for p in all_points(client, target)}
    assert old.keys() == new.keys() and len(new) == 120
    for here, point in new.items():
        assert isinstance(point.vector, dict), point.vector
        theirs = old[here].vector
        assert isinstance(theirs, dict)
        for name in carried:
            assert _bytes(point.vector[name]) == _bytes(theirs[name]), (layout, here, name)
        text = str((point.payload or {})["text"])
        want = expected_vector(NEW_MODEL, text, "", NEW_SIZE)
        np.testing.assert_allclose(point.vector[migrated], want, rtol=1e-5, atol=1e-6)
        assert point.payload == old[here].payload
