"""What only a real engine can show, over HTTP through qdrant-client: the ``engine`` backend.

Approximate search walks a real HNSW graph (a weak one misses neighbours), the index is
built in the background after a large write (``yellow`` and fewer indexed vectors, then
``green`` with all of them), a quantization change re-indexes and searches go on, and
``indexing_threshold=0`` keeps everything un-indexed. Plus the translation itself: the
engine's filters, payload updates and aliases answer as local mode does.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import UnexpectedResponse

from tests.qdrant_server import QdrantServer
from tests.qdrant_server.app import ApiError
from tests.qdrant_server.engine import EngineFacade

#: Engine tests ask for the engine whatever the default (``QDRANT_FACADE_BACKEND``).
ENGINE = pytest.param(("1.17.0", "engine"), id="engine")
DIM = 64
#: Below the vectors of the collections here (750 KB to 1.25 MB), so they get indexed.
THRESHOLD_KB = 100
#: Segments under this many KB are searched exactly, HNSW or not (the server's rule).
FULL_SCAN_KB = 10
BUILD_TIMEOUT_S = 180.0


@pytest.fixture
def server(qdrant_server: QdrantServer) -> QdrantServer:
    qdrant_server.reset()
    return qdrant_server


@pytest.fixture
def client(server: QdrantServer) -> Iterator[QdrantClient]:
    found = QdrantClient(url=server.url, timeout=60, check_compatibility=False)
    try:
        yield found
    finally:
        found.close()


def _vectors(count: int, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, DIM)).astype(np.float32)


def _create(
    client: QdrantClient,
    name: str,
    *,
    m: int = 16,
    ef_construct: int = 100,
    threshold_kb: int = THRESHOLD_KB,
    quantization: qm.QuantizationConfig | None = None,
) -> None:
    client.create_collection(
        name,
        vectors_config=qm.VectorParams(size=DIM, distance=qm.Distance.COSINE),
        hnsw_config=qm.HnswConfigDiff(
            m=m, ef_construct=ef_construct, full_scan_threshold=FULL_SCAN_KB
        ),
        optimizers_config=qm.OptimizersConfigDiff(indexing_threshold=threshold_kb),
        quantization_config=quantization,
    )


def _load(client: QdrantClient, name: str, vectors: np.ndarray) -> None:
    """One request (a batch), so the index build starts after all of it."""
    batch = qm.Batch(ids=list(range(len(vectors))), vectors=vectors.tolist())
    client.upsert(name, batch, wait=True)


def _wait(
    client: QdrantClient, name: str, done: Callable[[qm.CollectionInfo], bool]
) -> qm.CollectionInfo:
    deadline = time.monotonic() + BUILD_TIMEOUT_S
    while True:
        info = client.get_collection(name)
        if done(info):
            return info
        assert time.monotonic() < deadline, f"{name} still {info.status.value}: {info}"
        time.sleep(0.05)


def _indexed(info: qm.CollectionInfo) -> bool:
    return info.status == qm.CollectionStatus.GREEN and (info.indexed_vectors_count or 0) >= (
        info.points_count or 0
    )


def _ids(client: QdrantClient, name: str, query: np.ndarray, params: qm.SearchParams) -> set[Any]:
    found = client.query_points(name, query=query.tolist(), limit=10, search_params=params)
    return {p.id for p in found.points}


def _recall(client: QdrantClient, name: str, queries: np.ndarray, hnsw_ef: int | None) -> float:
    """Mean recall@10 of approximate search against exact search."""
    approximate = qm.SearchParams(hnsw_ef=hnsw_ef)
    exact = qm.SearchParams(exact=True)
    hits = [
        len(_ids(client, name, q, approximate) & _ids(client, name, q, exact)) / 10 for q in queries
    ]
    return float(np.mean(hits))


@pytest.mark.parametrize("qdrant_server", [ENGINE], indirect=True)
def test_weak_hnsw_misses_neighbours_a_strong_one_finds(client: QdrantClient) -> None:
    vectors, queries = _vectors(3000), _vectors(30, seed=11)
    _create(client, "weak", m=4, ef_construct=8)
    _create(client, "strong", m=16, ef_construct=100)
    for name in ("weak", "strong"):
        _load(client, name, vectors)
    for name in ("weak", "strong"):
        info = _wait(client, name, _indexed)
        assert info.indexed_vectors_count == info.points_count == 3000

    weak = _recall(client, "weak", queries, hnsw_ef=10)
    strong = _recall(client, "strong", queries, hnsw_ef=128)
    assert weak < 0.9, f"a weak graph (m=4, ef_construct=8, hnsw_ef=10) found {weak:.2f}"
    assert strong >= 0.95, f"a strong graph (m=16, ef_construct=100) found {strong:.2f}"
    # exact=True is brute force on either graph
    assert _ids(client, "weak", queries[0], qm.SearchParams(exact=True)) == _ids(
        client, "strong", queries[0], qm.SearchParams(exact=True)
    )


@pytest.mark.parametrize("qdrant_server", [ENGINE], indirect=True)
def test_index_builds_in_the_background_after_a_large_upsert(
    client: QdrantClient, server: QdrantServer
) -> None:
    _create(client, "c")
    _load(client, "c", _vectors(5000))
    building = client.get_collection("c")
    assert building.status == qm.CollectionStatus.YELLOW
    assert building.points_count == 5000
    assert (building.indexed_vectors_count or 0) < 5000
    # the façade answers while the index builds (the build runs in another process)
    found = client.query_points("c", query=_vectors(1, seed=3)[0].tolist(), limit=3)
    assert len(found.points) == 3

    built = _wait(client, "c", lambda info: info.status == qm.CollectionStatus.GREEN)
    assert built.indexed_vectors_count == built.points_count == 5000
    builds = server.stats()["builds"]
    assert [b["collection"] for b in builds] == ["c"]
    assert builds[0]["optimized"] and builds[0]["indexed"] == 5000


@pytest.mark.parametrize("qdrant_server", [ENGINE], indirect=True)
def test_writes_made_during_a_build_survive_it(client: QdrantClient, server: QdrantServer) -> None:
    """The build works on a copy; the writes made meanwhile are replayed onto its result."""
    _create(client, "c", m=32, ef_construct=400)  # a slow build: seconds on 2 cores
    _load(client, "c", _vectors(5000))
    deadline = time.monotonic() + BUILD_TIMEOUT_S
    while server.stats()["building"] != ["c"]:
        assert time.monotonic() < deadline and not server.stats()["builds"], "no build seen"
        time.sleep(0.02)
    client.upsert("c", [qm.PointStruct(id=90_001, vector=[1.0] * DIM, payload={"late": 1})])
    client.set_payload("c", {"seen": True}, points=[0])
    client.delete("c", qm.PointIdsList(points=[1]))
    assert client.count("c").count == 5000  # served by the live shard meanwhile

    _wait(client, "c", lambda info: info.status == qm.CollectionStatus.GREEN)
    [build] = server.stats()["builds"]
    assert build["indexed"] == 5000
    assert build["replayed"] >= 1  # 3 unless the build ended between these writes
    assert client.count("c").count == 5000
    found = {r.id: r.payload for r in client.retrieve("c", [0, 1, 90_001])}
    assert found[90_001] == {"late": 1}
    assert (found[0] or {}).get("seen") is True
    assert 1 not in found


@pytest.mark.parametrize("qdrant_server", [ENGINE], indirect=True)
def test_quantization_patch_reindexes_and_searches_go_on(
    client: QdrantClient, server: QdrantServer
) -> None:
    vectors, queries = _vectors(3000), _vectors(20, seed=5)
    _create(client, "c")
    _load(client, "c", vectors)
    _wait(client, "c", _indexed)
    exact = qm.SearchParams(exact=True)
    before = [_ids(client, "c", q, exact) for q in queries]

    scalar = qm.ScalarQuantization(
        scalar=qm.ScalarQuantizationConfig(type=qm.ScalarType.INT8, always_ram=True)
    )
    client.update_collection("c", quantization_config=scalar)
    patched = client.get_collection("c")
    assert patched.config.quantization_config == scalar
    assert patched.status == qm.CollectionStatus.YELLOW  # re-quantizing the indexed segment
    _wait(client, "c", _indexed)
    assert len(server.stats()["builds"]) == 2
    assert [_ids(client, "c", q, exact) for q in queries] == before
    assert _recall(client, "c", queries, hnsw_ef=128) >= 0.8

    client.update_collection("c", quantization_config=qm.Disabled.DISABLED)
    assert client.get_collection("c").config.quantization_config is None
    _wait(client, "c", _indexed)
    assert _recall(client, "c", queries, hnsw_ef=128) >= 0.9


@pytest.mark.parametrize("qdrant_server", [ENGINE], indirect=True)
def test_indexing_threshold_zero_keeps_vectors_unindexed(
    client: QdrantClient, server: QdrantServer
) -> None:
    _create(client, "c", threshold_kb=0)
    _load(client, "c", _vectors(5000))
    time.sleep(1.0)  # room for the indexer to run (it must not): not a timing assertion
    info = client.get_collection("c")
    assert info.status == qm.CollectionStatus.GREEN
    assert info.indexed_vectors_count == 0 and info.points_count == 5000
    assert server.stats()["builds"] == []

    # restoring a threshold (what finish_bulk_load does) builds the index
    client.update_collection(
        "c", optimizers_config=qm.OptimizersConfigDiff(indexing_threshold=THRESHOLD_KB)
    )
    assert client.get_collection("c").status == qm.CollectionStatus.YELLOW
    info = _wait(client, "c", _indexed)
    assert info.indexed_vectors_count == 5000


@pytest.mark.parametrize("qdrant_server", [ENGINE], indirect=True)
def test_small_collections_stay_green_below_the_threshold(client: QdrantClient) -> None:
    """Under ``indexing_threshold`` nothing is due: green at once, searched exactly."""
    _create(client, "c", threshold_kb=10_000)
    _load(client, "c", _vectors(500))
    info = client.get_collection("c")
    assert info.status == qm.CollectionStatus.GREEN
    assert info.indexed_vectors_count == 0 and info.points_count == 500


# -- the translation, against local mode -----------------------------------------------------

WHEN = ["2024-01-01T00:00:00Z", "2024-06-01T12:00:00Z", "2025-01-01T00:00:00+00:00"]


def _mixed_points() -> list[qm.PointStruct]:
    points = []
    for i in range(60):
        payload: dict[str, Any] = {
            "n": i,
            "kind": ["a", "b", "c"][i % 3],
            "when": WHEN[i % 3],
            "tags": ["x", "y"][: i % 3],
            "offers": [{"price": i}, {"price": i + 100}],
        }
        if i % 4 == 0:
            payload["maybe"] = None
        vector: dict[str, Any] = {"dense": [1.0, float(i % 7), 0.5]}
        if i % 5:
            vector["other"] = [float(i), 1.0]
        points.append(qm.PointStruct(id=i if i % 2 else str(uuid.UUID(int=i)), vector=vector))
        points[-1].payload = payload
    return points


FILTERS: dict[str, qm.Filter] = {
    "match value": qm.Filter(must=[qm.FieldCondition(key="kind", match=qm.MatchValue(value="a"))]),
    "match any": qm.Filter(must=[qm.FieldCondition(key="kind", match=qm.MatchAny(any=["a", "b"]))]),
    "match except": qm.Filter(
        must=[qm.FieldCondition(key="kind", match=qm.MatchExcept(**{"except": ["a"]}))]
    ),
    "range": qm.Filter(must=[qm.FieldCondition(key="n", range=qm.Range(gte=10, lt=20))]),
    "datetime range": qm.Filter(
        must=[
            qm.FieldCondition(
                key="when", range=qm.DatetimeRange(gte=datetime(2024, 3, 1, tzinfo=UTC))
            )
        ]
    ),
    "should / must_not": qm.Filter(
        should=[
            qm.FieldCondition(key="n", range=qm.Range(lt=5)),
            qm.FieldCondition(key="n", range=qm.Range(gt=50)),
        ],
        must_not=[qm.FieldCondition(key="kind", match=qm.MatchValue(value="c"))],
    ),
    "has id": qm.Filter(must=[qm.HasIdCondition(has_id=[1, 3, str(uuid.UUID(int=2)), 999])]),
    "has vector": qm.Filter(must_not=[qm.HasVectorCondition(has_vector="other")]),
    "is empty": qm.Filter(must=[qm.IsEmptyCondition(is_empty=qm.PayloadField(key="tags"))]),
    "is null": qm.Filter(must=[qm.IsNullCondition(is_null=qm.PayloadField(key="maybe"))]),
    "nested filter": qm.Filter(
        must=[
            qm.Filter(
                should=[
                    qm.FieldCondition(key="kind", match=qm.MatchValue(value="b")),
                    qm.HasIdCondition(has_id=[2]),
                ]
            )
        ]
    ),
    "nested condition": qm.Filter(
        must=[
            qm.NestedCondition(
                nested=qm.Nested(
                    key="offers",
                    filter=qm.Filter(
                        must=[qm.FieldCondition(key="price", range=qm.Range(gte=140))]
                    ),
                )
            )
        ]
    ),
}


@pytest.fixture
def engine() -> Iterator[EngineFacade]:
    facade = EngineFacade(version="1.17.0")
    try:
        yield facade
    finally:
        facade.close()


def _both(engine: EngineFacade) -> QdrantClient:
    """A local-mode store and the engine façade holding the same named-vector points."""
    local = QdrantClient(":memory:")
    vectors = {
        "dense": qm.VectorParams(size=3, distance=qm.Distance.DOT),
        "other": qm.VectorParams(size=2, distance=qm.Distance.EUCLID),
    }
    local.create_collection("c", vectors_config=vectors)
    engine.create_collection("c", qm.CreateCollection(vectors=vectors))
    local.upsert("c", _mixed_points())
    engine.upsert("c", qm.PointsList(points=_mixed_points()))
    return local


@pytest.mark.parametrize("name", list(FILTERS))
def test_engine_filters_match_local_mode(engine: EngineFacade, name: str) -> None:
    local = _both(engine)
    condition = FILTERS[name]
    want = {p.id for p in local.scroll("c", scroll_filter=condition, limit=100)[0]}
    got = engine.scroll("c", qm.ScrollRequest(filter=condition, limit=100))
    assert {p.id for p in got.points} == want
    assert engine.count("c", qm.CountRequest(filter=condition)).count == len(want)


def test_engine_payload_updates_and_deletes_match_local_mode(engine: EngineFacade) -> None:
    local = _both(engine)
    kind_b = qm.Filter(must=[qm.FieldCondition(key="kind", match=qm.MatchValue(value="b"))])
    local.set_payload("c", {"flag": 1}, points=kind_b)
    engine.set_payload("c", qm.SetPayload(payload={"flag": 1}, filter=kind_b))
    local.set_payload("c", {"deep": 2}, points=[3], key="offers[0]")
    engine.set_payload("c", qm.SetPayload(payload={"deep": 2}, points=[3], key="offers[0]"))
    local.overwrite_payload("c", {"only": True}, points=[5, 7])
    engine.overwrite_payload("c", qm.SetPayload(payload={"only": True}, points=[5, 7]))
    small = qm.Filter(must=[qm.FieldCondition(key="n", range=qm.Range(lt=4))])
    local.delete("c", qm.FilterSelector(filter=small))
    engine.delete_points("c", qm.FilterSelector(filter=small))
    local.delete("c", qm.PointIdsList(points=[9]))
    engine.delete_points("c", qm.PointIdsList(points=[9]))

    want = local.scroll("c", limit=100, with_vectors=True)[0]
    got = engine.scroll("c", qm.ScrollRequest(limit=100, with_vector=True)).points
    assert [(p.id, p.payload) for p in got] == [(p.id, p.payload) for p in want]
    for mine, theirs in zip(got, want, strict=True):
        assert isinstance(mine.vector, dict) and isinstance(theirs.vector, dict)
        assert mine.vector.keys() == theirs.vector.keys()
        for key, value in mine.vector.items():
            assert value == pytest.approx(theirs.vector[key], abs=1e-6)


def test_engine_aliases_change_atomically(engine: EngineFacade) -> None:
    params = qm.VectorParams(size=2, distance=qm.Distance.DOT)
    for name in ("v1", "v2"):
        engine.create_collection(name, qm.CreateCollection(vectors=params))
    create = qm.CreateAliasOperation(
        create_alias=qm.CreateAlias(collection_name="v1", alias_name="a")
    )
    engine.update_aliases(qm.ChangeAliasesOperation(actions=[create]))
    swap_to_missing: list[qm.AliasOperations] = [
        qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name="a")),
        qm.CreateAliasOperation(create_alias=qm.CreateAlias(collection_name="v3", alias_name="a")),
    ]
    with pytest.raises(ApiError) as refused:
        engine.update_aliases(qm.ChangeAliasesOperation(actions=swap_to_missing))
    assert refused.value.status == 404
    assert engine.aliases == {"a": "v1"}  # untouched
    rename = qm.RenameAliasOperation(
        rename_alias=qm.RenameAlias(old_alias_name="a", new_alias_name="b")
    )
    swap: list[qm.AliasOperations] = [
        rename,
        qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name="b")),
        qm.CreateAliasOperation(create_alias=qm.CreateAlias(collection_name="v2", alias_name="b")),
    ]
    engine.update_aliases(qm.ChangeAliasesOperation(actions=swap))
    assert engine.aliases == {"b": "v2"}
    assert engine.get_collection("b").points_count == 0
    engine.delete_collection("v2")
    assert engine.aliases == {}
    with pytest.raises(ApiError, match="doesn't exist"):
        engine.get_collection("b")


@pytest.mark.parametrize("qdrant_server", [ENGINE], indirect=True)
def test_engine_refuses_what_it_cannot_do(client: QdrantClient) -> None:
    client.create_collection("c", vectors_config=qm.VectorParams(size=2, distance=qm.Distance.DOT))
    client.upsert("c", [qm.PointStruct(id=1, vector=[1.0, 0.0])])
    with pytest.raises(UnexpectedResponse) as by_id:
        client.query_points("c", query=1)
    assert by_id.value.status_code == 400 and "point id" in str(by_id.value)
    with pytest.raises(UnexpectedResponse) as dimension:
        client.upsert("c", [qm.PointStruct(id=2, vector=[1.0, 0.0, 0.0])])
    assert dimension.value.status_code == 400 and "dimension" in str(dimension.value)
    with pytest.raises(UnexpectedResponse) as missing:
        client.set_payload("c", {"a": 1}, points=[42])
    assert missing.value.status_code == 404
