"""The in-place strategy through the real DAGs, on the embedded store and on the test server
(reporting Qdrant 1.18): disk against the two-collection strategy on the same data, the
switch, a write after it, rollback and retire; and the refusal on an older server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration.aliases import current_target
from include.qdrant_migration.qdrant import QdrantSettings, open_client
from include.qdrant_migration.state import Migrations, MigrationStatus, QdrantStateStore
from include.qdrant_migration.sync.fingerprints import collection_name
from tests.dags.conftest import return_value, task_states
from tests.qdrant_migration.helpers import all_points, bm25_vector, seed_standin_source
from tests.qdrant_server import QdrantServer

pytestmark = pytest.mark.integration

OLD_MODEL, NEW_MODEL, NEW_SIZE = "text-embedding-3-small", "text-embedding-3-large", 256
NEW_VECTOR = "text-embedding-3-large-256d"
POINTS = 120
CONF = {
    "alias": "docs",
    "provider": "openai",
    "model": NEW_MODEL,
    "dimensions": NEW_SIZE,
    "provider_conn_id": "embeddings",
    "strategy": "in_place",
    "points_per_partition": 100,
    "batch_size": 16,
    "recall_sample_size": 20,
}


def _seed(client: QdrantClient, corpus: list[dict[str, Any]]) -> None:
    """The same hybrid data twice: ``docs`` migrates in place, ``copy`` to a new collection."""
    for alias in ("docs", "copy"):
        seed_standin_source(
            client,
            corpus[:POINTS],
            collection=f"{alias}_v1",
            alias=alias,
            dimensions=512,
            vector_name="dense",
            sparse="bm25",
        )


def _migrate_and_switch(
    settings: QdrantSettings,
    corpus: list[dict[str, Any]],
    dagbag: Any,
    reviewer: Callable[[str], dict[str, Any]],
    disk: Callable[[str], int],
) -> dict[str, int]:
    """Both strategies on the same data; returns the disk each added (bytes)."""
    from tests.standin import expected_vector

    with open_client(settings) as client:
        _seed(client, corpus)
    source_before = disk("docs_v1")
    dag = dagbag.get_dag("qdrant_model_migration")
    during: dict[str, Any] = {}

    def new_vector_while_approval_waits() -> None:
        with open_client(settings) as client:
            during["vectors"] = client.get_collection("docs_v1").config.params.vectors

    seen = reviewer("Approve", new_vector_while_approval_waits)
    run = dag.test(run_conf=CONF | {"source_model": OLD_MODEL, "source_provider": "openai"})
    assert "error" not in seen, seen.get("error")
    assert run.state == "success", task_states(run)
    # The new vector's index was built with at most the budget's thread until the switch,
    # which lifted the cap (on a server; the embedded store builds no index).
    capped = during["vectors"][NEW_VECTOR].hnsw_config
    lifted = return_value(run, "swap_alias")["index_threads"]
    if settings.embedded:
        assert capped is None and lifted == {}
    else:
        assert capped.max_indexing_threads == 1 and lifted == {"max_indexing_threads": 0}
        with open_client(settings) as client:
            served = client.get_collection("docs_v1").config.params.vectors[NEW_VECTOR]
        assert served.hnsw_config.max_indexing_threads == 0
    plan = return_value(run, "assess_compatibility")
    assert "in place" in seen["detail"]["body"].lower()
    seen = reviewer("Approve")
    copy = dag.test(run_conf=CONF | {"alias": "copy", "strategy": "full_reembed"})
    assert copy.state == "success", task_states(copy)
    copy_plan = return_value(copy, "assess_compatibility")

    with open_client(settings) as client:
        assert current_target(client, "docs") == "docs_v1"  # the alias never moved
        names = [c.name for c in client.get_collections().collections]
        assert not [n for n in names if n.startswith("docs_v1__")]  # no second collection
        meta = client.get_collection("docs_v1").config.metadata["qdrant_migration"]
        assert meta["active_vector"] == NEW_VECTOR and meta["model"] == NEW_MODEL
        assert meta["vectors"]["dense"]["model"] == OLD_MODEL
        assert meta["vectors"]["dense"]["role"] == "standby"
        points = all_points(client, "docs_v1")
    assert len(points) == POINTS
    for point in points:
        assert isinstance(point.vector, dict)
        text = str((point.payload or {})["text"])
        want = expected_vector(NEW_MODEL, text, "", NEW_SIZE)
        np.testing.assert_allclose(point.vector[NEW_VECTOR], want, rtol=1e-5, atol=1e-6)
        old = expected_vector(OLD_MODEL, text, "", 512)
        np.testing.assert_allclose(point.vector["dense"], old, rtol=1e-5, atol=1e-6)
        assert point.vector["bm25"] == bm25_vector(text)
    fingerprints = collection_name(plan["migration_id"])
    copy_fingerprints = collection_name(copy_plan["migration_id"])
    return {
        "in_place": disk("docs_v1") - source_before + disk(fingerprints),
        "two_collections": disk(copy_plan["target_collection"]) + disk(copy_fingerprints),
    }


def _write_after_switch_then_roll_back_and_retire(settings: QdrantSettings, dagbag: Any) -> None:
    from tests.standin import expected_vector

    text = "Written by the application after the switch, with the new model only."
    with open_client(settings) as client:
        vector = expected_vector(NEW_MODEL, text, "", NEW_SIZE)
        client.upsert(
            "docs_v1",
            [
                qm.PointStruct(
                    id=50_000,
                    vector={NEW_VECTOR: vector, "bm25": bm25_vector(text)},
                    payload={"text": text},
                )
            ],
            wait=True,
        )
    caught_up = dagbag.get_dag("qdrant_migration_catch_up").test()
    assert caught_up.state == "success", task_states(caught_up)
    old = expected_vector(OLD_MODEL, text, "", 512)
    with open_client(settings) as client:  # the old vector follows the served one
        (written,) = client.retrieve("docs_v1", [50_000], with_vectors=True)
        assert isinstance(written.vector, dict)
        np.testing.assert_allclose(written.vector["dense"], old, rtol=1e-5, atol=1e-6)
        client.set_payload("docs_v1", {"text": text + " Edited."}, points=[50_000], wait=True)
    lifecycle = dagbag.get_dag("qdrant_migration_lifecycle")
    rolled = lifecycle.test(run_conf={"action": "rollback", "alias": "docs"})
    assert rolled.state == "success", task_states(rolled)
    with open_client(settings) as client:
        meta = client.get_collection("docs_v1").config.metadata["qdrant_migration"]
        assert meta["active_vector"] == "dense" and meta["model"] == OLD_MODEL
        (written,) = client.retrieve("docs_v1", [50_000], with_vectors=True)
        assert isinstance(written.vector, dict)
        old = expected_vector(OLD_MODEL, text + " Edited.", "", 512)  # nothing lost
        np.testing.assert_allclose(written.vector["dense"], old, rtol=1e-5, atol=1e-6)
        record = next(r for r in Migrations(QdrantStateStore(client)).all(alias="docs") if r.plan)
        assert record.status is MigrationStatus.ROLLED_BACK
    retired = lifecycle.test(
        run_conf={"action": "retire", "migration_id": record.migration_id, "observation_days": 7}
    )
    assert retired.state == "success", task_states(retired)
    with open_client(settings) as client:
        vectors = client.get_collection("docs_v1").config.params.vectors
        assert isinstance(vectors, dict) and sorted(vectors) == ["dense"]
        assert client.count("docs_v1").count == POINTS + 1


def test_in_place_on_the_embedded_store(
    qdrant_conn: Path,
    corpus: list[dict[str, Any]],
    openai_connection: None,
    dagbag: Any,
    reviewer: Callable[[str], dict[str, Any]],
) -> None:
    settings = QdrantSettings(path=str(qdrant_conn))

    def disk(collection: str) -> int:
        folder = qdrant_conn / "collection" / collection
        return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())

    used = _migrate_and_switch(settings, corpus, dagbag, reviewer, disk)
    print(f"disk added on the embedded store (bytes): {used}")
    assert used["in_place"] < used["two_collections"]
    _write_after_switch_then_roll_back_and_retire(settings, dagbag)


@pytest.mark.parametrize("qdrant_server", ["1.18.0"], indirect=True)
def test_in_place_on_a_server(
    server_conn: QdrantServer,
    corpus: list[dict[str, Any]],
    openai_connection: None,
    dagbag: Any,
    reviewer: Callable[[str], dict[str, Any]],
) -> None:
    def disk(collection: str) -> int:
        report = httpx.get(f"{server_conn.url}/__facade__/stats").json()["result"]
        return int(report["disk_bytes"].get(collection, 0))

    used = _migrate_and_switch(server_conn.settings(), corpus, dagbag, reviewer, disk)
    print(f"disk added on the server (bytes): {used}")
    assert used["in_place"] < used["two_collections"]
    _write_after_switch_then_roll_back_and_retire(server_conn.settings(), dagbag)


def test_in_place_is_refused_on_a_server_before_1_18(
    server_conn: QdrantServer,
    corpus: list[dict[str, Any]],
    openai_connection: None,
    dagbag: Any,
    capfd: Any,
) -> None:
    with open_client(server_conn.settings()) as client:
        _seed(client, corpus[:20])
    run = dagbag.get_dag("qdrant_model_migration").test(run_conf=CONF)
    assert task_states(run)["assess_compatibility"] == "failed"
    out = capfd.readouterr()
    assert "needs Qdrant 1.18.0 or later (create_vector_name); this server is 1.17.0" in (
        out.out + out.err
    )
    with open_client(server_conn.settings()) as client:
        vectors = client.get_collection("docs_v1").config.params.vectors
        assert isinstance(vectors, dict) and sorted(vectors) == ["dense"]
