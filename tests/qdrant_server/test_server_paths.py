"""The migration's core flow over HTTP, against the Qdrant façade at two server versions.

1.17.0 takes the modern paths (``update_mode=insert_only``, collection ``metadata``);
1.15.0 takes the fallbacks (retrieve-then-insert, lineage in the state store only). The
façade refuses fields newer than the version it reports, so a request that ignored the
version would fail here instead of passing silently. Real local models do the embedding.
The façade runs its default backend, ``engine`` (Qdrant's own engine: payload indexes,
HNSW built in the background, real readiness states).
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import UnexpectedResponse

from include.qdrant_migration import aliases, collections, compatibility, quantization
from include.qdrant_migration.checks import quality, recall
from include.qdrant_migration.providers import EmbeddingProvider, get_provider
from include.qdrant_migration.qdrant import open_client, server_version, supports
from include.qdrant_migration.spec import MigrationSpec
from include.qdrant_migration.state import Migrations, MigrationStatus, QdrantStateStore
from include.qdrant_migration.sync import partitions
from include.qdrant_migration.sync.backfill import (
    BackfillSettings,
    BackfillSummary,
    PartitionBackfill,
    write_points,
)
from include.qdrant_migration.sync.catchup import CatchUp, CatchUpJob, CatchUpResult
from scripts.seeding import read_corpus, seed_collection
from tests.fakes import HashingProvider
from tests.qdrant_migration.hashed import hash_spec, mark_ready
from tests.qdrant_migration.helpers import migrate
from tests.qdrant_server import BACKENDS, QdrantServer
from tests.qdrant_server.app import BaseFacade
from tests.qdrant_server.server import make_facade

pytestmark = pytest.mark.integration

VERSIONS = ["1.17.0", "1.15.0"]
POINTS = 150
BATCH = 16
RETRIEVE = "POST /collections/{collection_name}/points"
INSERT_ONLY = "upsert.update_mode.insert_only"


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    return list(read_corpus(limit=POINTS))


@pytest.fixture(scope="module")
def minilm() -> EmbeddingProvider:
    return get_provider("local", "all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def e5() -> EmbeddingProvider:
    provider = get_provider("local", "multilingual-e5-small")
    provider.check_access()
    return provider


@pytest.fixture(scope="module")
def reference(records: list[dict[str, Any]], e5: EmbeddingProvider) -> dict[int, np.ndarray]:
    """The new model's vector of every text, embedded directly."""
    vectors = e5.embed_documents([r["text"] for r in records])
    return {r["id"]: np.asarray(v) for r, v in zip(records, vectors, strict=True)}


@pytest.fixture
def server(qdrant_server: QdrantServer) -> QdrantServer:
    qdrant_server.reset()
    return qdrant_server


def _spec() -> MigrationSpec:
    return MigrationSpec.from_params(
        {
            "alias": "articles",
            "provider": "local",
            "model": "multilingual-e5-small",
            "points_per_partition": 60,
            "batch_size": BATCH,
            "embed_concurrency": 2,
            "recall_k": 5,
            "recall_sample_size": 20,
        }
    )


def _points(client: QdrantClient, collection: str) -> list[qm.Record]:
    found: list[qm.Record] = []
    offset: Any = None
    while True:
        page, offset = client.scroll(
            collection, limit=64, offset=offset, with_payload=True, with_vectors=True
        )
        found += page
        if offset is None:
            return found


def _seed(client: QdrantClient, records: list[dict[str, Any]], provider: EmbeddingProvider) -> None:
    seed_collection(
        client, collection="articles_v1", alias="articles", records=records, provider=provider
    )
    # A payload index on the source: create_target must copy it (local mode never has any).
    client.create_payload_index(
        "articles_v1", "module", field_schema=qm.PayloadSchemaType.KEYWORD, wait=True
    )


@pytest.mark.parametrize("qdrant_server", VERSIONS, indirect=True)
def test_core_flow_over_http(
    server: QdrantServer,
    records: list[dict[str, Any]],
    minilm: EmbeddingProvider,
    e5: EmbeddingProvider,
    reference: dict[int, np.ndarray],
) -> None:
    modern = server.version == "1.17.0"
    spec = _spec()
    with open_client(server.settings()) as client:
        assert server_version(client) == tuple(int(p) for p in server.version.split("."))
        assert supports(client, (1, 17, 0)) is modern
        _seed(client, records, minilm)
        state = QdrantStateStore(client)

        plan = compatibility.assess(client, spec, e5, state)
        assert plan.source.collection == "articles_v1" and plan.source.points == POINTS
        assert collections.create_target(client, plan, state) == {
            "collection": plan.target_collection,
            "created": True,
        }
        loading = client.get_collection(plan.target_collection)
        assert loading.config.optimizer_config.indexing_threshold == 0  # deferred during load
        assert set(loading.payload_schema) == {"module"}  # copied from the source
        parts = partitions.partitions_for(client, state, plan)
        assert [p.points for p in parts] == [60, 60, 30]

        settings = BackfillSettings(batch_size=BATCH, embed_concurrency=2)
        results = [PartitionBackfill(client, plan, p, e5, state, settings).run() for p in parts]
        again = dataclasses.replace(settings, run_id="another run")
        rerun = PartitionBackfill(client, plan, parts[0], e5, state, again).run()
        assert rerun.resumed and rerun.earlier["requests"] == rerun.embed_requests  # all earlier
        assert BackfillSummary.of([rerun]).this_run("requests") == 0  # its checkpoint says done
        assert BackfillSummary.of(results).embedded == POINTS
        collections.finish_bulk_load(client, plan, state)
        loaded = client.get_collection(plan.target_collection).config.optimizer_config
        assert loaded.indexing_threshold == collections.DEFAULT_INDEXING_THRESHOLD

        found = recall.poke(client, plan, state)
        assert found is not None
        assert found.completeness.lag == found.completeness.damaged == 0
        assert found.completeness.source_points == found.completeness.target_points == POINTS
        assert found.completeness.points_without_vector == 0
        assert found.readiness.startswith("green")
        assert found.recall_at_k is not None and found.recall_at_k >= 0.95
        own, compared = quality.evaluate(client, plan, e5, minilm)
        assert own.hit_at_1 is not None and own.hit_at_1 >= 0.9
        assert not compared.labeled and compared.queries == 20

        migrations = Migrations(state)
        ready = migrations.transition(migrations.require(plan.migration_id), MigrationStatus.READY)
        moved = aliases.switch(client, state, ready).move
        assert (moved.from_collection, moved.to_collection) == (
            "articles_v1",
            plan.target_collection,
        )
        assert aliases.current_target(client, "articles") == plan.target_collection

        source = _points(client, "articles_v1")
        target = _points(client, "articles")  # read through the moved alias
        assert [p.id for p in target] == [p.id for p in source] == [r["id"] for r in records]
        assert [p.payload for p in target] == [p.payload for p in source]
        got = np.array([p.vector for p in target])
        want = np.array([reference[int(p.id)] for p in target])
        np.testing.assert_allclose(got, want, atol=1e-5)

        metadata = client.get_collection(plan.target_collection).config.metadata
        migration = migrations.require(plan.migration_id)
        assert migration.status is MigrationStatus.SWAPPED
        assert migration.lineage["model"] == "multilingual-e5-small"

    counts = server.stats()["counts"]
    sub_batches = sum(-(-p.points // BATCH) for p in parts)
    if modern:
        assert metadata is not None
        assert metadata["qdrant_migration"]["migration_id"] == plan.migration_id
        assert counts.get(INSERT_ONLY, 0) == sub_batches
    else:  # the fallbacks: lineage in the state store only, retrieve before each write
        assert metadata is None
        assert INSERT_ONLY not in counts
        assert counts.get(RETRIEVE, 0) >= sub_batches


@pytest.mark.parametrize("qdrant_server", VERSIONS, indirect=True)
def test_write_points_never_overwrites_over_http(server: QdrantServer) -> None:
    def point(point_id: int, text: str) -> qm.PointStruct:
        return qm.PointStruct(id=point_id, vector=[1.0, 0.5, float(point_id)], payload={"t": text})

    with open_client(server.settings()) as client:
        client.create_collection(
            "target", vectors_config=qm.VectorParams(size=3, distance=qm.Distance.COSINE)
        )
        write_points(client, "target", [point(1, "old"), point(2, "old")])
        client.set_payload("target", {"t": "newer"}, points=[2], wait=True)  # a live write
        write_points(client, "target", [point(2, "old"), point(3, "old")])  # a retried batch
        found = {r.id: r.payload for r in client.retrieve("target", [1, 2, 3])}
    assert found == {1: {"t": "old"}, 2: {"t": "newer"}, 3: {"t": "old"}}


@pytest.mark.parametrize("qdrant_server", ["1.15.0"], indirect=True)
def test_facade_refuses_fields_newer_than_its_version(server: QdrantServer) -> None:
    with open_client(server.settings()) as client:
        assert client.info().version == "1.15.0"
        with pytest.raises(UnexpectedResponse) as refused:
            client.create_collection(
                "c",
                vectors_config=qm.VectorParams(size=2, distance=qm.Distance.DOT),
                metadata={"k": "v"},
            )
        assert refused.value.status_code == 400
        assert "metadata" in str(refused.value)
        client.create_collection("c", vectors_config=qm.VectorParams(size=2, distance="Dot"))
        with pytest.raises(UnexpectedResponse, match="update_mode"):
            client.upsert(
                "c",
                [qm.PointStruct(id=1, vector=[1.0, 0.0])],
                update_mode=qm.UpdateMode.INSERT_ONLY,
            )
        only_1 = qm.Filter(must=[qm.HasIdCondition(has_id=[1])])
        with pytest.raises(UnexpectedResponse, match="update_filter"):
            client.upsert("c", [qm.PointStruct(id=1, vector=[1.0, 0.0])], update_filter=only_1)
        client.upsert("c", [qm.PointStruct(id=1, vector=[1.0, 0.0])])
        with pytest.raises(UnexpectedResponse, match="update_filter"):
            client.update_vectors(
                "c", [qm.PointVectors(id=1, vector=[0.0, 1.0])], update_filter=only_1
            )
        client.update_vectors("c", [qm.PointVectors(id=1, vector=[0.0, 1.0])])
        assert client.retrieve("c", [1], with_vectors=True)[0].vector == [0.0, 1.0]
        with pytest.raises(UnexpectedResponse) as missing:
            client.get_collection("nope")
        assert missing.value.status_code == 404


@pytest.mark.parametrize("qdrant_server", ["1.17.0"], indirect=True)
def test_conditional_vector_updates_over_http(server: QdrantServer) -> None:
    """``update_vectors`` with ``update_filter`` writes only where the condition holds."""
    with open_client(server.settings()) as client:
        client.create_collection(
            "c", vectors_config=qm.VectorParams(size=2, distance=qm.Distance.DOT)
        )
        client.upsert(
            "c",
            [
                qm.PointStruct(id=1, vector=[1.0, 0.0], payload={"t": "read"}),
                qm.PointStruct(id=2, vector=[1.0, 0.0], payload={"t": "rewritten meanwhile"}),
            ],
            wait=True,
        )
        for point in (1, 2):
            guard = qm.Filter(
                must=[
                    qm.HasIdCondition(has_id=[point]),
                    qm.FieldCondition(key="t", match=qm.MatchValue(value="read")),
                ]
            )
            client.update_vectors(
                "c", [qm.PointVectors(id=point, vector=[0.0, 1.0])], update_filter=guard
            )
        found = {r.id: r.vector for r in client.retrieve("c", [1, 2], with_vectors=True)}
    assert found == {1: [0.0, 1.0], 2: [1.0, 0.0]}
    assert server.stats()["counts"]["update_vectors.update_filter"] == 2


class AfterPass(CatchUp):
    """A real catch-up pass; then ``then()``: the application writes, before what comes next."""

    def __init__(self, *args: Any, then: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.then = then

    def run(self) -> CatchUpResult:
        result = super().run()
        self.then()
        return result


class BeforePass(CatchUp):
    """A real catch-up pass; ``first()``: the application writes, just before it starts."""

    def __init__(self, *args: Any, first: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first = first

    def run(self) -> CatchUpResult:
        self.first()
        return super().run()


SWITCH_POINTS = 60
BEFORE, WINDOW, OWN = (
    "written to the old collection before the final pass",
    "written to the old collection between the final pass and the move",
    "written to the new collection right after the move, with the old model's vector",
)


@pytest.mark.parametrize(
    "qdrant_server",
    [
        "1.17.0",
        "1.16.0",
        # No conditional updates before 1.16: unguarded writes, with a warning.
        "1.15.0",
    ],
    indirect=True,
)
def test_switch_over_http_loses_no_live_write(
    server: QdrantServer,
    records: list[dict[str, Any]],
    old_model: HashingProvider,
    new_model: HashingProvider,
) -> None:
    """aliases.switch as the swap_alias task runs it: a final pass, the atomic move, then
    the reconciling pass, with the application writing all along."""
    with open_client(server.settings()) as client:
        seed_collection(
            client,
            collection="articles_v1",
            alias="articles",
            records=records[:SWITCH_POINTS],
            provider=old_model,
        )
        state = QdrantStateStore(client)
        run = migrate(client, hash_spec(), new_model, state)
        target = run.plan.target_collection
        ready = mark_ready(state, run.plan.migration_id)
        first, second, third = (r["id"] for r in records[:3])

        def window() -> None:
            client.set_payload("articles_v1", {"text": WINDOW}, points=[second], wait=True)

        def racing_write() -> None:  # the application already writes through the moved alias
            point = qm.PointStruct(
                id=third, vector=old_model.vector(OWN), payload={"text": OWN, "title": "own"}
            )
            client.upsert("articles", [point], wait=True)

        client.set_payload("articles_v1", {"text": BEFORE}, points=[first], wait=True)
        job = CatchUpJob.forward(run.plan, new_model)
        switched = aliases.switch(
            client,
            state,
            ready,
            final=AfterPass(client, job, state, then=window),
            reconcile=BeforePass(client, job.reconciling(), state, first=racing_write),
        )

        assert aliases.current_target(client, "articles") == target
        assert Migrations(state).require(ready.migration_id).status is MigrationStatus.SWAPPED
        final, reconciled = switched.final, switched.reconcile
        assert final is not None and reconciled is not None
        assert (final.reembedded, final.drift) == (1, 0)
        assert (reconciled.reembedded, reconciled.kept, reconciled.revectored) == (1, 1, 1)
        assert reconciled.conflicts == 0
        served = {
            r.id: r
            for r in client.retrieve(
                "articles", [first, second, third], with_payload=True, with_vectors=True
            )
        }
        for point, text in ((first, BEFORE), (second, WINDOW), (third, OWN)):
            assert (served[point].payload or {})["text"] == text
            assert served[point].vector == pytest.approx(new_model.vector(text), abs=1e-6)
        kept = client.retrieve("articles_v1", [third], with_payload=True)[0]
        assert (kept.payload or {})["text"] != OWN  # reconciling never writes the old side
        assert client.count("articles", exact=True).count == SWITCH_POINTS

    counts = server.stats()["counts"]
    guarded_upserts = counts.get("upsert.update_filter", 0)
    guarded_vectors = counts.get("update_vectors.update_filter", 0)
    if server.version == "1.17.0":  # one guarded, update-only upsert for the window's copy
        assert guarded_upserts >= 1 and counts.get("upsert.update_mode.update_only", 0) >= 1
        assert guarded_vectors == 1  # the racing write's vector
    elif server.version == "1.16.0":  # no update-only mode: guarded vector + payload updates
        assert guarded_upserts == 0 and guarded_vectors == 2
    else:  # no conditional updates at all (with a warning)
        assert guarded_upserts == guarded_vectors == 0


def test_create_target_copies_payload_index_params(
    server: QdrantServer, e5: EmbeddingProvider
) -> None:
    tenant = qm.KeywordIndexParams(type=qm.KeywordIndexType.KEYWORD, is_tenant=True)
    words = qm.TextIndexParams(
        type=qm.TextIndexType.TEXT, tokenizer=qm.TokenizerType.WORD, lowercase=True
    )
    with open_client(server.settings()) as client:
        client.create_collection(
            "notes_v1", vectors_config=qm.VectorParams(size=4, distance=qm.Distance.COSINE)
        )
        client.upsert(
            "notes_v1",
            [qm.PointStruct(id=1, vector=[1.0, 0.0, 0.5, 0.2], payload={"text": "a note"})],
            wait=True,
        )
        client.update_collection_aliases(
            change_aliases_operations=[
                qm.CreateAliasOperation(
                    create_alias=qm.CreateAlias(collection_name="notes_v1", alias_name="notes")
                )
            ]
        )
        client.create_payload_index("notes_v1", "tenant", field_schema=tenant, wait=True)
        client.create_payload_index("notes_v1", "text", field_schema=words, wait=True)
        state = QdrantStateStore(client)
        spec = MigrationSpec.from_params({"alias": "notes", "model": "multilingual-e5-small"})
        plan = compatibility.assess(client, spec, e5, state)
        collections.create_target(client, plan, state)
        source = client.get_collection("notes_v1").payload_schema
        target = client.get_collection(plan.target_collection).payload_schema
    assert {k: v.params for k, v in target.items()} == {k: v.params for k, v in source.items()}


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_facade_scroll_pages_in_the_order_and_offsets_of_local_mode(backend: str) -> None:
    """Both backends page unfiltered scrolls as local mode does (``local`` from its own id
    index, ``engine`` natively): same pages, same next offsets."""
    ids: list[qm.ExtendedPointId] = [
        *range(0, 300, 3),
        *(str(uuid.UUID(int=7919 * k)) for k in range(50)),
    ]
    random.Random(5).shuffle(ids)
    points = [qm.PointStruct(id=i, vector=[1.0, 0.5], payload={"i": str(i)}) for i in ids]
    params = qm.VectorParams(size=2, distance=qm.Distance.COSINE)
    facade, local = make_facade(backend, version="1.17.0"), QdrantClient(":memory:")
    try:
        _scroll_like_local_mode(facade, local, ids, points, params)
    finally:
        facade.close()


def _scroll_like_local_mode(
    facade: BaseFacade,
    local: QdrantClient,
    ids: list[qm.ExtendedPointId],
    points: list[qm.PointStruct],
    params: qm.VectorParams,
) -> None:
    facade.create_collection("c", qm.CreateCollection(vectors=params))
    local.create_collection("c", vectors_config=params)
    for deleted in (False, True):
        if deleted:  # writes invalidate the façade's index
            facade.delete_points("c", qm.PointIdsList(points=ids[:10]))
            local.delete("c", qm.PointIdsList(points=ids[:10]))
        else:
            facade.upsert("c", qm.PointsList(points=points))
            local.upsert("c", points)
        for offset in [
            None,
            4,
            5,
            299,
            1000,
            sorted(i for i in ids if isinstance(i, str))[-3],
            str(uuid.UUID(int=0)),
        ]:
            want = local.scroll("c", limit=7, offset=offset)
            got = facade.scroll("c", qm.ScrollRequest(limit=7, offset=offset))
            assert [(p.id, p.payload) for p in got.points] == [(p.id, p.payload) for p in want[0]]
            assert got.next_page_offset == want[1]


def test_a_quantization_change_is_applied_and_its_recall_measured_with_and_without_rescoring(
    server: QdrantServer,
) -> None:
    """quantization_only on Qdrant's engine: the config changes for real, the collection is
    re-quantized in the background, and recall@10 is measured both ways afterwards."""
    rng = np.random.default_rng(7)
    with open_client(server.settings()) as client:
        client.create_collection(
            "quantized",
            vectors_config=qm.VectorParams(size=64, distance=qm.Distance.COSINE),
            hnsw_config=qm.HnswConfigDiff(full_scan_threshold=10),
            optimizers_config=qm.OptimizersConfigDiff(indexing_threshold=10),
        )
        vectors = rng.normal(size=(3000, 64))
        client.upsert(
            "quantized",
            [qm.PointStruct(id=i, vector=v.tolist()) for i, v in enumerate(vectors)],
            wait=True,
        )
        changed = quantization.requantize_source(client, "quantized", None, "binary")
        measured = recall.quantized_recall(
            client, "quantized", None, k=10, sample_size=40, wait_s=120
        )
        info = client.get_collection("quantized")

    assert changed["before"] == "none" and changed["now"] == "binary"
    assert isinstance(info.config.quantization_config, qm.BinaryQuantization)
    assert measured.readiness.startswith("green"), measured.readiness
    assert measured.sample_queries == 40
    assert measured.rescored is not None and measured.not_rescored is not None
    # binary codes of random 64-d vectors rank poorly unless rescored with the originals
    assert measured.rescored > measured.not_rescored, measured
    print(f"\n[engine] binary quantization: recall@10 {measured}")
