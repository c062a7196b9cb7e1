"""Collections with more than one vector: the migrated one is replaced, the others carried.

Runs the pipeline (assess, create, backfill, catch-up, completeness) on the embedded store
with the hashing "models". The carried sparse vectors arrive exactly; carried dense vectors
and multivectors within one float32 step, because the embedded store renormalizes cosine
vectors on every write (a Qdrant server leaves normalized ones as they are: see
tests/dags/test_layouts.py for the byte-identical check against the engine).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration import compatibility, estimate
from include.qdrant_migration.checks import completeness
from include.qdrant_migration.spec import MigrationSpec
from include.qdrant_migration.state import QdrantStateStore
from include.qdrant_migration.strategy import CompatibilityError
from include.qdrant_migration.sync.catchup import CatchUp, CatchUpJob
from tests.fakes import HashingProvider
from tests.qdrant_migration.helpers import (
    LAYOUTS,
    all_points,
    layout_vectors,
    migrate,
    seed_layout,
)

MIGRATED = {"hybrid": "dense", "hybrid_unnamed": None, "named": "body", "multivector": "dense"}
CARRIED = {
    "hybrid": ["bm25"],
    "hybrid_unnamed": ["bm25"],
    "named": ["title"],
    "multivector": ["colbert"],
}


def _spec(layout: str, **more: Any) -> MigrationSpec:
    params: dict[str, Any] = {
        "alias": "articles",
        "provider": "local",
        "model": "hash-new",
        "points_per_partition": 25,
        "batch_size": 8,
        "recall_sample_size": 10,
    }
    if layout == "named":
        params["vector_name"] = "body"
    return MigrationSpec.from_params(params | more)


@pytest.fixture
def layout_client(corpus: list[dict[str, Any]], old_model: HashingProvider) -> Any:
    """Opens an in-memory store with a source in the given layout (60 points)."""

    def open_layout(layout: str) -> QdrantClient:
        client = QdrantClient(":memory:")
        seed_layout(client, layout, corpus[:60], old_model)
        return client

    return open_layout


def same_vector(a: Any, b: Any) -> bool:
    """Sparse vectors exactly; dense ones and multivectors within one float32 step."""
    if isinstance(a, qm.SparseVector) or isinstance(b, qm.SparseVector):
        return a == b
    x, y = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    if x.shape != y.shape:
        return False
    return bool(np.all(np.abs(x.view(np.int32) - y.view(np.int32)) <= 1))


def carried_of(record: qm.Record, names: list[str]) -> dict[str, Any]:
    stored = record.vector if isinstance(record.vector, dict) else {}
    return {n: stored[n] for n in names if n in stored}


def assert_carried(client: QdrantClient, source: str, target: str, names: list[str]) -> None:
    want = {p.id: carried_of(p, names) for p in all_points(client, source)}
    have = {p.id: carried_of(p, names) for p in all_points(client, target)}
    assert want.keys() == have.keys()
    for here, vectors in want.items():
        assert vectors.keys() == have[here].keys(), here
        for name, vector in vectors.items():
            assert same_vector(vector, have[here][name]), (here, name)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_migrated_vector_is_replaced_and_every_other_one_carried(
    layout: str, layout_client: Any, new_model: HashingProvider
) -> None:
    client = layout_client(layout)
    state = QdrantStateStore(client)
    run = migrate(client, _spec(layout), new_model, state)
    plan = run.plan
    assert plan.vector_name == MIGRATED[layout]
    assert plan.source.carried == CARRIED[layout]
    source, target = client.get_collection("articles_v1"), plan.target_collection
    info = client.get_collection(target)
    # the carried vectors keep their whole configuration
    if layout.startswith("hybrid"):
        assert info.config.params.sparse_vectors == source.config.params.sparse_vectors
    else:
        (name,) = CARRIED[layout]
        theirs = source.config.params.vectors
        ours = info.config.params.vectors
        assert isinstance(theirs, dict) and isinstance(ours, dict)
        assert ours[name] == theirs[name]
    # the migrated vector is the new model's
    for point in all_points(client, target):
        stored = point.vector
        migrated = stored.get(MIGRATED[layout] or "") if isinstance(stored, dict) else stored
        text = str((point.payload or {})["text"])
        assert same_vector(migrated, new_model.vector(text)), point.id
    assert_carried(client, "articles_v1", target, CARRIED[layout])
    found = completeness.measure(client, plan, state)
    assert (found.damaged, found.lag, found.target_points) == (0, 0, 60)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_catch_up_brings_the_carried_vectors_of_new_and_edited_points(
    layout: str, layout_client: Any, new_model: HashingProvider, old_model: HashingProvider
) -> None:
    client = layout_client(layout)
    state = QdrantStateStore(client)
    plan = migrate(client, _spec(layout), new_model, state).plan
    name = MIGRATED[layout] or ""

    def write(point_id: int, text: str, **payload: Any) -> None:
        vectors = layout_vectors(layout, text, old_model.vector(text))
        client.upsert(
            "articles_v1",
            [qm.PointStruct(id=point_id, vector=vectors, payload={"text": text, **payload})],
            wait=True,
        )

    write(1000, "A brand new article about sparse retrieval and hybrid search")
    write(2, "The second article was rewritten completely for this test")
    # payload-only edit that also replaces the carried vectors (same text)
    text3 = str(all_points(client, "articles_v1")[2].payload["text"])  # type: ignore[index]
    changed = layout_vectors(layout, text3 + " extra words here", old_model.vector(text3))
    changed[name] = old_model.vector(text3)
    client.upsert(
        "articles_v1",
        [qm.PointStruct(id=3, vector=changed, payload={"text": text3, "tag": "edited"})],
        wait=True,
    )
    client.delete("articles_v1", qm.PointIdsList(points=[4]), wait=True)

    result = CatchUp(client, CatchUpJob.forward(plan, new_model), state).run()

    assert (result.inserted, result.reembedded, result.payload_updated, result.deleted) == (
        1,
        1,
        1,
        1,
    )
    assert_carried(client, "articles_v1", plan.target_collection, CARRIED[layout])
    found = completeness.measure(client, plan, state)
    assert (found.damaged, found.lag) == (0, 0)
    again = CatchUp(client, CatchUpJob.forward(plan, new_model), state).run()
    assert again.changes == 0  # nothing looks changed once copied (no float-rounding churn)


def test_add_sparse_gives_the_target_a_bm25_vector_of_each_text(
    layout_client: Any, new_model: HashingProvider
) -> None:
    from qdrant_edge import Bm25, Bm25Config

    client = layout_client("named")
    state = QdrantStateStore(client)
    plan = migrate(client, _spec("named", add_sparse="keywords"), new_model, state).plan
    info = client.get_collection(plan.target_collection)
    sparse = info.config.params.sparse_vectors or {}
    assert sparse["keywords"].modifier == qm.Modifier.IDF
    bm25 = Bm25(Bm25Config(language="english"))
    for point in all_points(client, plan.target_collection):
        made = bm25.embed_document(str((point.payload or {})["text"]))
        assert isinstance(point.vector, dict)
        assert point.vector["keywords"] == qm.SparseVector(
            indices=list(made.indices), values=list(made.values)
        )
    # the source is untouched: no vector added there
    assert "keywords" not in (
        client.get_collection("articles_v1").config.params.sparse_vectors or {}
    )


@pytest.mark.parametrize(
    ("layout", "more", "words"),
    [
        ("named", {"vector_name": None}, ["set vector_name", "body (64-d dense)", "title"]),
        ("named", {"vector_name": "summary"}, ["no vector named 'summary'", "body", "title"]),
        ("hybrid", {"vector_name": "bm25"}, ["sparse vector", "carried over unchanged"]),
        ("multivector", {"vector_name": "colbert"}, ["multivector", "Choose a dense vector"]),
        ("hybrid", {"add_sparse": "bm25"}, ["already has a vector of that name"]),
    ],
)
def test_a_layout_the_migration_cannot_serve_is_refused_with_the_vectors_named(
    layout: str, more: dict[str, Any], words: list[str], layout_client: Any
) -> None:
    client = layout_client(layout)
    spec = _spec(layout, **more)
    with pytest.raises(CompatibilityError) as refused:
        compatibility.assess(client, spec, HashingProvider("hash-new"), QdrantStateStore(client))
    for word in words:
        assert word in str(refused.value), str(refused.value)
    assert "articles_v1__" not in str(
        [c.name for c in client.get_collections().collections]
    )  # nothing was created


def test_the_estimate_counts_the_carried_vectors_and_the_added_one(
    layout_client: Any, new_model: HashingProvider
) -> None:
    client = layout_client("multivector")
    state = QdrantStateStore(client)
    plain = compatibility.assess(client, _spec("multivector"), new_model, state)
    added = compatibility.assess(client, _spec("multivector", add_sparse="kw"), new_model, state)
    carried, bm25 = estimate.other_vector_bytes(
        client, added, estimate.sample_texts(client, "articles_v1", "text", new_model)
    )
    assert carried >= 2 * 8 * 4  # at least two 8-d token vectors per point
    assert bm25 > 0
    points = plain.source.points
    gained = added.estimate.target_disk_bytes - plain.estimate.target_disk_bytes
    assert gained == pytest.approx(points * bm25, rel=0.01)
    # the source's own disk counts its carried vectors too
    assert plain.estimate.source_disk_bytes >= points * (64 * 4 + carried)


def test_a_carried_bm25_vector_is_searched_with_the_dense_one_on_both_sides(
    layout_client: Any, new_model: HashingProvider, old_model: HashingProvider
) -> None:
    from include.qdrant_migration.checks import quality

    client = layout_client("hybrid")
    state = QdrantStateStore(client)
    texts = {p.id: str((p.payload or {})["text"]) for p in all_points(client, "articles_v1")}
    rows = [{"query": " ".join(text.split()[:6]), "relevant_ids": [i]} for i, text in texts.items()]
    plan = migrate(client, _spec("hybrid", eval_set=rows[:20]), new_model, state).plan
    assert plan.source.carried_bm25 == "bm25"

    _, found = quality.evaluate(client, plan, new_model, old_model)

    assert found.labeled and found.hybrid_vector == "bm25"
    assert set(found.hybrid_old) == set(found.hybrid_new) == set(found.old)
    assert found.hybrid_new["recall@10"] > 0 and found.hybrid_old["recall@10"] > 0
