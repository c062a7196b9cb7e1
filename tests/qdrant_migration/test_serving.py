"""The serving helper: a query's model and the vectors it searches belong together even
while the alias moves (a swap, a switch in place, a retire) under a searching application.

The "models" are hashed bags of words (:class:`tests.fakes.HashingProvider`) named by the
lineage: a text's vector differs per model, so a query embedded with one model and
searched in another model's vectors is seen at once (its own point is not found at ~1.0).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import qdrant_client
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration import compatibility
from include.qdrant_migration.aliases import move_alias
from include.qdrant_migration.layout import METADATA_KEY
from include.qdrant_migration.plan import Lineage, Plan
from include.qdrant_migration.providers import Credentials
from include.qdrant_migration.qdrant import open_client
from include.qdrant_migration.serving import (
    Document,
    ProviderEmbedder,
    ServingClient,
    ServingError,
)
from include.qdrant_migration.state import Migrations, MigrationStatus, QdrantStateStore
from include.qdrant_migration.strategies import in_place
from scripts.seeding import seed_collection
from tests.fakes import HashingProvider
from tests.qdrant_migration.hashed import fill_in_place, hash_spec, in_place_spec
from tests.qdrant_migration.helpers import (
    migrate,
    seed_layout,
    seed_standin_source,
)
from tests.qdrant_server import QdrantServer, qdrant_server  # noqa: F401 (fixture)
from tests.standin import OPENAI_KEY, StandIn, expected_vector

ALIAS = "docs"
OLD, NEW = "docs_v1", "docs_v2"


class HashEmbedder:
    """Embeds as the lineage's hashing model (queries and documents alike), and counts."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        #: Runs once, in the middle of the next embedding: the alias moving meanwhile.
        self.meanwhile: Callable[[], None] | None = None

    def model(self, lineage: Lineage) -> HashingProvider:
        return HashingProvider(str(lineage["model"]), dimensions=lineage.get("dimensions"))

    def _embed(self, kind: str, lineage: Lineage, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append((kind, str(lineage["model"])))
        vectors = [self.model(lineage).vector(t) for t in texts]
        if self.meanwhile is not None:
            move, self.meanwhile = self.meanwhile, None
            move()
        return vectors

    def embed_queries(self, lineage: Lineage, texts: Sequence[str]) -> list[list[float]]:
        return self._embed("query", lineage, texts)

    def embed_documents(self, lineage: Lineage, texts: Sequence[str]) -> list[list[float]]:
        return self._embed("document", lineage, texts)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _lineage(model: str, dimensions: int = 64) -> Lineage:
    return Lineage(provider="hashing", model=model, dimensions=dimensions)


def _collection(
    client: QdrantClient,
    name: str,
    model: str,
    texts: Sequence[str],
    *,
    dimensions: int = 64,
    lineage: bool = True,
) -> None:
    """``texts`` (ids 0..n-1) embedded by ``model``, recording its lineage in the metadata."""
    client.create_collection(
        name,
        vectors_config=qm.VectorParams(size=dimensions, distance=qm.Distance.COSINE),
        metadata={METADATA_KEY: dict(_lineage(model, dimensions))} if lineage else None,
    )
    embed = HashingProvider(model, dimensions=dimensions)
    points = [
        qm.PointStruct(id=i, vector=embed.vector(t), payload={"text": t})
        for i, t in enumerate(texts)
    ]
    client.upsert(name, points, wait=True)


def _two_collections(client: QdrantClient, texts: Sequence[str], new_dims: int = 64) -> None:
    """``docs`` -> ``docs_v1`` (model hash-a); ``docs_v2`` (hash-b) ready to be swapped to."""
    _collection(client, OLD, "hash-a", texts)
    _collection(client, NEW, "hash-b", texts, dimensions=new_dims)
    client.update_collection_aliases(
        change_aliases_operations=[
            qm.CreateAliasOperation(
                create_alias=qm.CreateAlias(collection_name=OLD, alias_name=ALIAS)
            )
        ]
    )


def _swap(client: QdrantClient) -> None:
    move_alias(client, ALIAS, expected=OLD, new=NEW)


@pytest.fixture
def texts(corpus: list[dict[str, Any]]) -> list[str]:
    return [str(r["text"]) for r in corpus[:40]]


@pytest.fixture
def memory() -> QdrantClient:
    return QdrantClient(":memory:")


def _own_first(hits: Any, text_id: int) -> bool:
    """The text's own point is found first, at the similarity of a text with itself."""
    top = hits.points[0]
    return bool(top.id == text_id and top.score > 0.999)


# -- resolving ---------------------------------------------------------------------------------


def test_the_alias_is_resolved_once_per_ttl(memory: QdrantClient, texts: list[str]) -> None:
    _two_collections(memory, texts)
    clock = Clock()
    serving = ServingClient(memory, ALIAS, HashEmbedder(), ttl_s=5, clock=clock)
    first = serving.resolve()
    assert (first.alias, first.collection, first.vector) == (ALIAS, OLD, None)
    assert first.lineage["model"] == "hash-a" and first.lineage_from == "metadata"
    assert first.resolved_at == 100.0

    _swap(memory)
    clock.now += 4.9
    assert serving.resolve() is first  # within the TTL: the cached resolution
    clock.now += 0.1
    second = serving.resolve()
    assert (second.collection, second.lineage["model"]) == (NEW, "hash-b")
    assert serving.resolve(refresh=True) is not second  # asked for: read again at once
    assert serving.resolutions == 3


def test_concurrent_readers_share_one_resolution(memory: QdrantClient, texts: list[str]) -> None:
    _two_collections(memory, texts)
    reads: list[float] = []
    get_aliases = memory.get_aliases

    def slow_get_aliases() -> Any:
        reads.append(time.monotonic())
        time.sleep(0.05)  # long enough for every thread to arrive meanwhile
        return get_aliases()

    memory.get_aliases = slow_get_aliases  # type: ignore[method-assign]
    serving = ServingClient(memory, ALIAS, HashEmbedder())
    start = threading.Barrier(8)
    got: list[Any] = []

    def reader() -> None:
        start.wait()
        got.append(serving.resolve())

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(reads) == 1 and serving.resolutions == 1
    assert len(got) == 8 and all(r is got[0] for r in got)


def test_a_collection_name_serves_itself_and_an_unknown_name_is_refused(
    memory: QdrantClient, texts: list[str]
) -> None:
    _two_collections(memory, texts)
    assert ServingClient(memory, NEW, HashEmbedder()).resolve().collection == NEW
    with pytest.raises(ServingError, match=r"no alias 'dosc'.*Aliases: docs -> docs_v1\."):
        ServingClient(memory, "dosc", HashEmbedder()).resolve()


def test_several_dense_vectors_need_a_vector_name(memory: QdrantClient) -> None:
    params = qm.VectorParams(size=4, distance=qm.Distance.COSINE)
    memory.create_collection(
        "named",
        vectors_config={"body": params, "title": params},
        metadata={METADATA_KEY: dict(_lineage("hash-a", 4))},
    )
    with pytest.raises(ServingError, match=r"2 dense vectors \(body, title\).*vector_name"):
        ServingClient(memory, "named", HashEmbedder()).resolve()
    assert ServingClient(memory, "named", HashEmbedder(), vector_name="body").resolve().vector == (
        "body"
    )


# -- the race --------------------------------------------------------------------------------


def _race(client: QdrantClient, texts: list[str]) -> None:
    """Search while the alias moves under the query's embedding: the pair stays consistent."""
    embedder = HashEmbedder()
    clock = Clock()
    serving = ServingClient(client, ALIAS, embedder, clock=clock)
    embedder.meanwhile = lambda: _swap(client)
    hits = serving.search(texts[7], limit=3)
    # resolved before the swap: the old model's query searched the old collection
    assert (hits.resolved.collection, hits.resolved.lineage["model"]) == (OLD, "hash-a")
    assert embedder.calls == [("query", "hash-a")]
    assert _own_first(hits, 7)
    assert serving.refreshes == 0

    clock.now += serving.ttl_s  # the TTL later: the new collection, with the new model
    hits = serving.search(texts[7], limit=3)
    assert (hits.resolved.collection, hits.resolved.lineage["model"]) == (NEW, "hash-b")
    assert _own_first(hits, 7)


def _retired(client: QdrantClient, texts: list[str]) -> None:
    """The cached resolution's collection is deleted: resolved again at once, searched anew."""
    embedder = HashEmbedder()
    serving = ServingClient(client, ALIAS, embedder, ttl_s=3600)
    assert serving.resolve().collection == OLD
    _swap(client)
    client.delete_collection(OLD)
    hits = serving.search(texts[3], limit=3)
    assert (hits.resolved.collection, serving.refreshes, serving.resolutions) == (NEW, 1, 2)
    assert embedder.calls == [("query", "hash-a"), ("query", "hash-b")]  # embedded again
    assert _own_first(hits, 3)


def test_a_search_keeps_the_query_model_with_the_collection_it_searches(
    memory: QdrantClient, texts: list[str]
) -> None:
    _two_collections(memory, texts)
    _race(memory, texts)


@pytest.mark.parametrize("new_dims", [64, 32], ids=["same size", "other size"])
def test_the_naive_pattern_searches_the_new_collection_with_the_old_model(
    memory: QdrantClient, texts: list[str], new_dims: int
) -> None:
    """What the README told applications before: read the lineage, then query the alias."""
    _two_collections(memory, texts, new_dims)
    target = next(a.collection_name for a in memory.get_aliases().aliases if a.alias_name == ALIAS)
    lineage = memory.get_collection(target).config.metadata[METADATA_KEY]  # type: ignore[index]
    query = HashingProvider(lineage["model"]).vector(texts[7])
    _swap(memory)  # between reading the lineage and searching
    if new_dims != 64:  # another size: refused
        with pytest.raises(ValueError, match="not aligned"):
            memory.query_points(ALIAS, query=query, limit=3)
        return
    hits = memory.query_points(ALIAS, query=query, limit=3)  # same size: no error, wrong points
    assert not _own_first(hits, 7)
    assert hits.points[0].score < 0.9


def test_a_search_on_a_retired_collection_resolves_again(
    memory: QdrantClient, texts: list[str]
) -> None:
    _two_collections(memory, texts)
    _retired(memory, texts)


def test_an_error_that_is_no_move_is_the_callers(memory: QdrantClient, texts: list[str]) -> None:
    _collection(memory, OLD, "hash-a", texts, lineage=False)
    wrong = ServingClient(memory, OLD, HashEmbedder(), fallback=_lineage("hash-a", 32))
    with pytest.raises(ValueError, match="not aligned"):
        wrong.search(texts[0])
    assert (wrong.refreshes, wrong.resolutions) == (0, 1)


# -- in place ----------------------------------------------------------------------------------


def _in_place_ready(
    client: QdrantClient,
    corpus: list[dict[str, Any]],
    old_model: HashingProvider,
    new_model: HashingProvider,
) -> tuple[QdrantStateStore, Plan]:
    """A hybrid ``articles`` (dense of hash-old + BM25) with hash-new's vector filled, READY."""
    seed_layout(client, "hybrid", corpus[:40], old_model)
    state = QdrantStateStore(client)
    plan = compatibility.assess(client, in_place_spec(), new_model, state)
    fill_in_place(client, plan, new_model, state)
    migrations = Migrations(state)
    migrations.transition(migrations.require(plan.migration_id), MigrationStatus.READY)
    return state, plan


def _switch(client: QdrantClient, state: QdrantStateStore, plan: Plan) -> None:
    in_place.switch(client, state, Migrations(state).require(plan.migration_id))


def _retire_old_vector(client: QdrantClient, state: QdrantStateStore, plan: Plan) -> None:
    record = Migrations(state).require(plan.migration_id)
    later = datetime.now(tz=UTC) + timedelta(days=8)
    in_place.retire(client, state, record, observation_days=7, now=later)


def _in_place_race(
    client: QdrantClient, record: dict[str, Any], state: QdrantStateStore, plan: Plan
) -> None:
    """A switch while the query is embedded, then a retire of the vector searched."""
    embedder = HashEmbedder()
    serving = ServingClient(client, "articles", embedder, ttl_s=3600)
    embedder.meanwhile = lambda: _switch(client, state, plan)
    hits = serving.search(str(record["text"]), limit=3)
    assert (hits.resolved.collection, hits.resolved.vector) == ("articles_v1", "dense")
    assert hits.resolved.lineage["model"] == "hash-old" and _own_first(hits, record["id"])
    assert "vectors" not in hits.resolved.lineage  # the vector's own lineage, not the index

    _retire_old_vector(client, state, plan)  # the cached resolution's vector is gone
    hits = serving.search(str(record["text"]), limit=3)
    assert (hits.resolved.vector, hits.resolved.lineage["model"]) == ("hash-new", "hash-new")
    assert _own_first(hits, record["id"]) and serving.refreshes == 1
    assert embedder.calls == [("query", "hash-old"), ("query", "hash-old"), ("query", "hash-new")]


def test_in_place_a_switch_and_a_retire_under_a_search(
    corpus: list[dict[str, Any]], old_model: HashingProvider, new_model: HashingProvider
) -> None:
    client = QdrantClient(":memory:")
    state, plan = _in_place_ready(client, corpus, old_model, new_model)
    _in_place_race(client, corpus[5], state, plan)


# -- writing -----------------------------------------------------------------------------------


def _stored(client: QdrantClient, collection: str, point: int, vector: str | None = None) -> Any:
    found = client.retrieve(collection, [point], with_vectors=True)
    if not found:
        return None
    stored = found[0].vector
    return stored[vector or ""] if isinstance(stored, dict) else stored


def test_an_upsert_goes_through_the_alias(memory: QdrantClient, texts: list[str]) -> None:
    _two_collections(memory, texts)
    serving = ServingClient(memory, ALIAS, HashEmbedder())
    done = serving.upsert([Document(id=100, text="a new text", payload={"lang": "en"})])
    assert (done.resolved.collection, done.rewritten, serving.rewrites) == (OLD, False, 0)
    (point,) = memory.retrieve(OLD, [100], with_vectors=True)
    assert point.payload == {"lang": "en", "text": "a new text"}  # where the migration reads it
    np.testing.assert_allclose(
        point.vector, HashingProvider("hash-a").vector("a new text"), atol=1e-6
    )  # type: ignore[arg-type]


@pytest.mark.parametrize("new_dims", [64, 32], ids=["same size", "other size"])
def test_an_upsert_is_written_again_when_the_alias_moved_while_embedding(
    memory: QdrantClient, texts: list[str], new_dims: int
) -> None:
    _two_collections(memory, texts, new_dims)
    embedder = HashEmbedder()
    serving = ServingClient(memory, ALIAS, embedder)
    embedder.meanwhile = lambda: _swap(memory)
    done = serving.upsert([Document(id=100, text="written during the swap")])
    assert (done.resolved.collection, done.rewritten, serving.rewrites) == (NEW, True, 1)
    assert embedder.calls == [("document", "hash-a"), ("document", "hash-b")]
    new_model = HashingProvider("hash-b", dimensions=new_dims)
    np.testing.assert_allclose(
        _stored(memory, NEW, 100), new_model.vector("written during the swap"), atol=1e-6
    )
    assert _stored(memory, OLD, 100) is None  # through the alias, never the stale collection
    # same size: Qdrant took the old model's vector, replaced; other size: it refused it
    assert serving.refreshes == (0 if new_dims == 64 else 1)
    # read your writes: the write's resolution is the one searched next
    hits = serving.search("written during the swap", limit=1)
    assert hits.resolved is done.resolved and _own_first(hits, 100)


def test_in_place_an_upsert_during_a_switch_ends_with_the_new_models_vector(
    corpus: list[dict[str, Any]], old_model: HashingProvider, new_model: HashingProvider
) -> None:
    client = QdrantClient(":memory:")
    state, plan = _in_place_ready(client, corpus, old_model, new_model)
    embedder = HashEmbedder()
    serving = ServingClient(client, "articles", embedder)
    embedder.meanwhile = lambda: _switch(client, state, plan)
    sparse = qm.SparseVector(indices=[1, 7], values=[0.5, 0.25])
    text = "written during the switch"
    done = serving.upsert([Document(id=5000, text=text, vectors={"bm25": sparse})])
    assert (done.resolved.vector, done.rewritten) == ("hash-new", True)
    (point,) = client.retrieve("articles_v1", [5000], with_vectors=True)
    assert isinstance(point.vector, dict)
    np.testing.assert_allclose(point.vector["hash-new"], new_model.vector(text), atol=1e-6)
    assert point.vector["bm25"] == sparse  # passed through
    assert "dense" not in point.vector  # an upsert names its vectors: the catch-up refills it


# -- lineage from elsewhere ----------------------------------------------------------------------


def test_lineage_from_the_state_store(
    corpus: list[dict[str, Any]], old_model: HashingProvider, new_model: HashingProvider
) -> None:
    """The source was not made by this tool (no metadata); a server before 1.16 has none."""
    client = QdrantClient(":memory:")
    seed_collection(
        client, collection="articles_v1", alias="articles", records=corpus[:40], provider=old_model
    )
    spec = hash_spec(source_provider="local", source_model="hash-old")
    run = migrate(client, spec, new_model, QdrantStateStore(client))
    old = ServingClient(client, "articles", HashEmbedder()).resolve()
    assert (old.collection, old.lineage_from) == ("articles_v1", "state store")
    assert (old.lineage["provider"], old.lineage["model"]) == ("local", "hash-old")

    client.update_collection(run.plan.target_collection, metadata={METADATA_KEY: None})
    move_alias(client, "articles", expected="articles_v1", new=run.plan.target_collection)
    serving = ServingClient(client, "articles", HashEmbedder())
    new = serving.resolve()
    assert (new.lineage_from, new.lineage["model"]) == ("state store", "hash-new")
    assert _own_first(serving.search(str(corpus[9]["text"])), corpus[9]["id"])


def test_lineage_from_the_application(memory: QdrantClient, texts: list[str]) -> None:
    _collection(memory, OLD, "hash-a", texts, lineage=False)
    _collection(memory, NEW, "hash-b", texts, lineage=False)
    by_name = {OLD: _lineage("hash-a"), NEW: _lineage("hash-b")}
    serving = ServingClient(memory, NEW, HashEmbedder(), fallback=by_name)
    assert (serving.resolve().lineage_from, serving.resolve().lineage["model"]) == (
        "fallback",
        "hash-b",
    )
    one = ServingClient(memory, OLD, HashEmbedder(), fallback=_lineage("hash-a"))
    assert _own_first(one.search(texts[2]), 2)
    with pytest.raises(ServingError, match=r"No lineage for collection 'docs_v1'.*fallback=\{"):
        ServingClient(memory, OLD, HashEmbedder(), fallback={NEW: _lineage("hash-b")}).resolve()


# -- the project's providers, through the OpenAI stand-in ------------------------------------


def test_provider_embedder_embeds_with_the_lineage_model(
    standin: StandIn, corpus: list[dict[str, Any]]
) -> None:
    client = QdrantClient(":memory:")
    records = corpus[:20]
    seed_standin_source(client, records, dimensions=256)
    credentials = {"openai": Credentials("app", OPENAI_KEY, standin.openai_base_url)}
    embedder = ProviderEmbedder(credentials, options={"openai": {"timeout_s": 5}})
    try:
        serving = ServingClient(client, "docs", embedder)
        text = str(records[4]["text"])
        hits = serving.search(text, limit=3)
        assert hits.resolved.lineage["model"] == "text-embedding-3-small"
        assert hits.points[0].id == records[4]["id"] and hits.points[0].score > 0.999
        (request,) = standin.requests("/v1/embeddings")
        assert request.dimensions == 256 and request.texts == [text]
        query = embedder.embed_queries(hits.resolved.lineage, [text])[0]
        assert query == expected_vector("text-embedding-3-small", text, "", 256)
        assert len(embedder._providers) == 1  # one provider per model, reused
    finally:
        embedder.close()
    assert embedder._providers == {}


# -- over HTTP: the REST answers for a deleted collection or vector ---------------------------


#: Both on the version that adds and deletes named vectors: one server process for the two.
OVER_HTTP = pytest.mark.parametrize("qdrant_server", ["1.18.0"], indirect=True)


@OVER_HTTP
def test_the_race_and_a_retired_collection_over_http(
    qdrant_server: QdrantServer,  # noqa: F811
    texts: list[str],
) -> None:
    qdrant_server.reset()
    with open_client(qdrant_server.settings()) as client:
        _two_collections(client, texts)
        _race(client, texts)
        move_alias(client, ALIAS, expected=NEW, new=OLD)  # a rollback
        _retired(client, texts)  # a 404 for the deleted collection


@OVER_HTTP
def test_in_place_over_http(
    qdrant_server: QdrantServer,  # noqa: F811
    corpus: list[dict[str, Any]],
    old_model: HashingProvider,
    new_model: HashingProvider,
) -> None:
    qdrant_server.reset()
    with open_client(qdrant_server.settings()) as client:
        state, plan = _in_place_ready(client, corpus, old_model, new_model)
        _in_place_race(client, corpus[5], state, plan)  # a 400


def test_a_hosted_provider_without_credentials_is_refused_saying_what_to_pass() -> None:
    lineage = Lineage(provider="openai", model="text-embedding-3-small", dimensions=1536)
    with pytest.raises(ServingError, match=r"credentials=\{'openai': Credentials\("):
        ProviderEmbedder().embed_queries(lineage, ["a query"])


# -- the documented examples run -------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
SMALL, LARGE = "text-embedding-3-small", "text-embedding-3-large-256d"


def _examples() -> list[Any]:
    """Every Python block of docs/serving.md, and those of the README and the other docs
    pages that use the helper (lineage on operations.md, in place on strategies.md)."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    found = []
    for page in pages:
        name = page.relative_to(ROOT).as_posix()
        blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.DOTALL)
        used = [b for b in blocks if name == "docs/serving.md" or "ServingClient" in b]
        found += [pytest.param(block, id=f"{name}-{i}") for i, block in enumerate(used)]
    return found


def _documented_store(records: list[dict[str, Any]]) -> QdrantClient:
    """What the examples talk to: ``articles`` swapped from a collection made before this
    tool (no metadata) to one made by it; ``products`` migrated in place and switched;
    ``faq`` a collection made before this tool."""
    client = QdrantClient(":memory:")
    seed_standin_source(client, records, collection="faq_v1", alias="faq", lineage=False)
    seed_standin_source(client, records, collection="articles_v1", alias="articles", lineage=False)
    seed_standin_source(
        client,
        records,
        collection="articles_v2",
        alias="articles_next",
        model="text-embedding-3-large",
        dimensions=256,
    )
    move_alias(client, "articles", expected="articles_v1", new="articles_v2")
    seed_standin_source(
        client, records, collection="products_v1", alias="products", vector_name=SMALL
    )
    config = qm.DenseVectorConfig(size=256, distance=qm.Distance.COSINE)
    client.create_vector_name("products_v1", LARGE, qm.DenseVectorNameConfig(dense=config))
    points = [
        qm.PointVectors(
            id=r["id"],
            vector={LARGE: expected_vector("text-embedding-3-large", r["text"], "", 256)},
        )
        for r in records
    ]
    client.update_vectors("products_v1", points, wait=True)
    small = {"provider": "openai", "model": "text-embedding-3-small", "dimensions": 1536}
    large = {"provider": "openai", "model": "text-embedding-3-large", "dimensions": 256}
    vectors = {SMALL: small | {"role": "standby"}, LARGE: large | {"role": "active"}}
    meta = large | {"active_vector": LARGE, "vectors": vectors}  # in_place._write_metadata's shape
    client.update_collection("products_v1", metadata={METADATA_KEY: meta})
    return client


@pytest.mark.parametrize("example", _examples())
def test_the_documented_examples_run(
    example: str,
    standin: StandIn,
    corpus: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = _documented_store(corpus[:20])
    monkeypatch.setattr(qdrant_client, "QdrantClient", lambda *args, **kwargs: store)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", standin.openai_base_url)  # read by the OpenAI SDK
    exec(compile(example, "<example>", "exec"), {"__name__": "example"})
    out = capsys.readouterr().out
    if "articles.search" in example:
        assert "articles_v2" in out and "text-embedding-3-large" in out
        (point,) = store.retrieve("articles_v2", [90001])  # written through the alias
        assert point.payload and point.payload["text"] == "Open files in a with statement."
    if "products.search" in example:
        assert LARGE in out
    if "faq.search" in example:
        assert "faq_v1 lineage from fallback" in out
    assert standin.requests("/v1/embeddings")  # every example embeds through the stand-in
