"""assess_compatibility: read the source behind the alias, refuse with what to change, plan.

The fast store (hashing models) where the model is not what is tested; the real seeded
store and e5-small for the lineage a real model gives the application.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration.compatibility import (
    SAMPLE_SIZE,
    CompatibilityError,
    assess,
    read_source,
    resolve_alias,
)
from include.qdrant_migration.plan import Lineage, SourceInfo, old_model_of
from include.qdrant_migration.providers import EmbeddingProvider
from include.qdrant_migration.spec import MigrationSpec, Strategy
from include.qdrant_migration.state import (
    STATE_COLLECTION,
    MigrationRecord,
    Migrations,
    MigrationStatus,
    QdrantStateStore,
    RecordKind,
)
from include.qdrant_migration.strategies.base import PROBE_TEXT, probe_dimension, target_name
from include.qdrant_migration.strategy import AlreadyMigratedError, OldModel
from tests.fakes import HashingProvider
from tests.qdrant_migration.hashed import HASH_DIMENSION, HASH_TARGET, NEW_MODEL, hash_spec
from tests.qdrant_migration.helpers import (
    SEED_POINTS,
    TARGET_MODEL,
    CountingProvider,
    make_source,
    small_spec,
    snapshot,
)


def test_resolve_alias(fast_client: QdrantClient) -> None:
    assert resolve_alias(fast_client, "articles") == "articles_v1"


def test_unknown_alias_lists_what_exists(fast_client: QdrantClient) -> None:
    # the tool's own collection is not listed
    QdrantStateStore(fast_client).put(RecordKind.MIGRATION, "m", {})
    with pytest.raises(CompatibilityError) as error:
        resolve_alias(fast_client, "artciles")
    message = str(error.value)
    assert "'artciles' does not exist" in message
    assert "articles -> articles_v1" in message
    assert "Existing collections: articles_v1." in message
    assert STATE_COLLECTION not in message


def test_unknown_alias_on_an_empty_store_says_none() -> None:
    empty = QdrantClient(":memory:")
    with pytest.raises(CompatibilityError) as error:
        resolve_alias(empty, "articles")
    assert "Existing aliases: none. Existing collections: none." in str(error.value)


def test_a_collection_name_is_not_accepted_as_alias(fast_client: QdrantClient) -> None:
    with pytest.raises(CompatibilityError, match="'articles_v1' is a collection, not an alias"):
        resolve_alias(fast_client, "articles_v1")


def test_assess_plans_a_full_reembed(fast_client: QdrantClient, new_model: HashingProvider) -> None:
    spec = hash_spec()
    plan = assess(fast_client, spec, new_model, QdrantStateStore(fast_client))
    assert plan.migration_id == spec.migration_id("articles_v1")
    assert plan.alias == "articles"
    assert plan.strategy is Strategy.FULL_REEMBED
    assert plan.creates_target
    assert plan.source.collection == "articles_v1"
    assert plan.source.vector_name is None and plan.vector_name is None
    assert (plan.source.size, plan.source.distance) == (HASH_DIMENSION, "Cosine")
    assert plan.source.points == SEED_POINTS
    assert plan.source.text_coverage == 1.0
    assert plan.source.lineage == {}  # the seeded store records no lineage
    assert plan.source.quantization == "none"
    assert 0 < len(plan.source.sample_ids) <= 16
    assert plan.target_collection == HASH_TARGET
    assert plan.target_dimension == HASH_DIMENSION
    assert plan.target_lineage == Lineage(
        provider="hashing",
        model=NEW_MODEL,
        dimensions=HASH_DIMENSION,
        document_input="document",
        query_input="query",
        strategy="full_reembed",
    )
    assert plan.reasons == [
        f"Full re-embed: {SEED_POINTS} points of 'articles_v1' ({HASH_DIMENSION}-d, Cosine) are "
        f"embedded again with local/{NEW_MODEL} ({HASH_DIMENSION}-d); vectors of different "
        "models cannot share a space."
    ]
    assert plan.spec == spec
    assert plan.estimate.points == SEED_POINTS  # the estimate comes with the plan


@pytest.mark.integration
def test_a_real_models_lineage_tells_applications_how_to_embed_queries(
    client: QdrantClient, e5: EmbeddingProvider
) -> None:
    plan = assess(client, small_spec(), e5, QdrantStateStore(client))
    assert plan.target_collection == "articles_v1__multilingual-e5-small__v1"
    assert plan.target_dimension == 384
    assert plan.target_lineage["provider"] == "local"
    assert plan.target_lineage["model"] == TARGET_MODEL
    assert plan.target_lineage["dimensions"] == 384
    assert plan.target_lineage["document_input"] == "'passage: ' prefix"
    assert plan.target_lineage["query_input"] == "'query: ' prefix"


class QueryRecorder(CountingProvider):
    """Counts document calls (as CountingProvider does) and records every query text."""

    def __init__(self, inner: EmbeddingProvider) -> None:
        super().__init__(inner)
        self.queries: list[str] = []

    def embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        self.queries.extend(texts)
        return super().embed_queries(texts)


def test_assess_writes_nothing_and_embeds_no_stored_document(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    before = snapshot(fast_client, "articles_v1")
    counting = QueryRecorder(new_model)
    assess(fast_client, hash_spec(), counting, QdrantStateStore(fast_client))
    after = snapshot(fast_client, "articles_v1")
    assert after == before
    assert len(after["points"]) == SEED_POINTS
    assert after["collections"] == ["articles_v1"]  # not even the state collection
    assert counting.calls == 0  # no stored document is embedded
    assert counting.queries[0] == PROBE_TEXT  # the probe; then sample texts timed to estimate
    assert PROBE_TEXT not in counting.queries[1:]


def test_missing_text_field_lists_the_fields_present(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    with pytest.raises(CompatibilityError) as error:
        assess(fast_client, hash_spec(text_field="body"), new_model, QdrantStateStore(fast_client))
    message = str(error.value)
    assert f"None of {SAMPLE_SIZE} sampled points of 'articles_v1'" in message
    assert "'body'" in message
    assert "Fields present: kind, module, text, title." in message


def test_declared_dimensions_must_match_the_model(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    state = QdrantStateStore(fast_client)
    with pytest.raises(CompatibilityError) as error:
        assess(fast_client, hash_spec(dimensions=256), new_model, state)
    message = str(error.value)
    assert f"returns {HASH_DIMENSION}-dimensional vectors, but dimensions=256 was requested" in (
        message
    )
    assert f"Set dimensions to {HASH_DIMENSION}" in message
    plan = assess(fast_client, hash_spec(dimensions=HASH_DIMENSION), new_model, state)
    assert plan.target_collection.endswith(f"-{HASH_DIMENSION}d__v1")


def test_probe_dimension_embeds_one_fixed_query(new_model: HashingProvider) -> None:
    assert probe_dimension(new_model, hash_spec()) == HASH_DIMENSION
    sized = HashingProvider("hash-new", dimensions=32)
    assert probe_dimension(sized, hash_spec(dimensions=32)) == 32
    with pytest.raises(CompatibilityError, match="returns 32-dimensional vectors"):
        probe_dimension(sized, hash_spec(dimensions=16))


def test_partial_text_coverage_is_reported(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    first_ids = [p.id for p in fast_client.scroll("articles_v1", limit=16)[0]]
    fast_client.delete_payload("articles_v1", keys=["text"], points=first_ids[:16:2], wait=True)
    plan = assess(fast_client, hash_spec(), new_model, QdrantStateStore(fast_client))
    assert plan.source.text_coverage == round(1 - 8 / SAMPLE_SIZE, 4)
    assert not set(first_ids[:16:2]) & set(plan.source.sample_ids)
    assert plan.reasons[-1] == (
        "12% of sampled points lack text in 'text'; they are handled by bad_text_policy='skip'."
    )
    mapped = assess(
        fast_client,
        hash_spec(allow_linear_map=True, bad_text_policy="fail"),
        new_model,
        QdrantStateStore(fast_client),
    )
    assert "their stored vectors are carried over all the same" in mapped.reasons[-1]
    assert "bad_text_policy='fail'" in mapped.reasons[-1]


def test_nested_text_field() -> None:
    store = QdrantClient(":memory:")
    make_source(store, "docs_v1", [(i, {"doc": {"body": f"text {i}"}}) for i in range(5)])
    info = read_source(store, "docs_v1", "doc.body")
    assert info.text_coverage == 1.0
    assert info.sample_ids == [0, 1, 2, 3, 4]


def test_read_source_takes_lineage_and_quantization_from_the_collection() -> None:
    store = QdrantClient(":memory:")
    lineage = {"provider": "openai", "model": "text-embedding-3-small", "dimensions": 8}
    store.create_collection(
        "docs_v1",
        vectors_config=qm.VectorParams(size=8, distance=qm.Distance.DOT),
        metadata={"qdrant_migration": lineage, "owner": "search team"},
    )
    info = read_source(store, "docs_v1", "text")
    assert info == SourceInfo(
        collection="docs_v1",
        vector_name=None,
        size=8,
        distance="Dot",
        points=0,
        sample_ids=[],
        text_coverage=1.0,  # nothing to sample is not a missing field
        lineage=Lineage(provider="openai", model="text-embedding-3-small", dimensions=8),
        quantization="none",
    )


def _source_with_lineage(lineage: dict[str, str]) -> SourceInfo:
    return SourceInfo("a_v1", None, 8, "Cosine", 1, [1], 1.0, Lineage(**lineage))  # type: ignore[typeddict-item]


def test_old_model_of_prefers_the_params_and_resolves_aliases() -> None:
    source = _source_with_lineage({"provider": "local", "model": "all-MiniLM-L6-v2"})
    spec = MigrationSpec(alias="a")
    assert old_model_of(spec, source) == OldModel("local", "all-MiniLM-L6-v2", "lineage")
    named = MigrationSpec(
        alias="a", source_provider="local", source_model="intfloat/multilingual-e5-small"
    )
    assert old_model_of(named, source) == OldModel("local", "multilingual-e5-small", "params")
    assert old_model_of(spec, _source_with_lineage({})) is None


def test_the_lineage_of_an_earlier_migration_names_the_old_model(
    fast_client: QdrantClient, old_model: HashingProvider
) -> None:
    """A collection this tool wrote records its model: same model and size is nothing to do."""
    fast_client.update_collection(
        "articles_v1",
        metadata={"qdrant_migration": {"provider": "local", "model": "hash-old"}},
    )
    with pytest.raises(AlreadyMigratedError, match="per its lineage"):
        assess(fast_client, hash_spec(model="hash-old"), old_model, QdrantStateStore(fast_client))


def test_target_name_versions(fast_client: QdrantClient) -> None:
    assert target_name(fast_client, "articles_v1", "e5") == "articles_v1__e5__v1"
    for name in ("articles_v1__minilm__v3", "other__e5__v9", "articles_v1_backup"):
        fast_client.create_collection(
            name, vectors_config=qm.VectorParams(size=2, distance="Cosine")
        )
    # one above any version of the same base, whichever model made it
    assert target_name(fast_client, "articles_v1", "e5") == "articles_v1__e5__v4"
    # migrating a migrated collection keeps the base instead of stacking suffixes
    assert target_name(fast_client, "articles_v1__minilm__v3", "e5") == "articles_v1__e5__v4"


def test_a_started_migration_keeps_its_target(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    state = QdrantStateStore(fast_client)
    spec = hash_spec()
    started = f"articles_v1__{NEW_MODEL}__v7"
    Migrations(state).put(
        MigrationRecord(
            migration_id=spec.migration_id("articles_v1"),
            alias="articles",
            source_collection="articles_v1",
            status=MigrationStatus.LOADING,
            strategy="full_reembed",
            target_collection=started,
        )
    )
    plan = assess(fast_client, spec, new_model, state)
    assert plan.target_collection == started
    assert (
        plan.reasons[0]
        == f"Continuing migration {plan.migration_id} into {started} (started earlier)."
    )
    assert plan.reasons[1].startswith("Full re-embed:")


def test_named_vector_source_is_supported(new_model: HashingProvider) -> None:
    store = QdrantClient(":memory:")
    make_source(
        store, "named_v1", [(1, {"text": "hello world"})], alias="named", vector_name="dense"
    )
    plan = assess(store, hash_spec(alias="named"), new_model, QdrantStateStore(store))
    assert plan.source.vector_name == "dense" and plan.vector_name == "dense"
    assert plan.source.size == 8
    assert plan.target_dimension == HASH_DIMENSION


def test_two_dense_vectors_need_vector_name_and_sparse_ones_are_carried() -> None:
    store = QdrantClient(":memory:")
    dense = qm.VectorParams(size=2, distance=qm.Distance.COSINE)
    store.create_collection("multi", vectors_config={"a": dense, "b": dense})
    with pytest.raises(CompatibilityError, match=r"has 2 dense vectors \(a, b\): set vector_name"):
        read_source(store, "multi", "text")
    assert read_source(store, "multi", "text", vector_name="b").carried == ["a"]
    store.create_collection(
        "hybrid", vectors_config=dense, sparse_vectors_config={"keywords": qm.SparseVectorParams()}
    )
    info = read_source(store, "hybrid", "text")
    assert (info.vector_name, info.carried, info.carried_sparse) == (
        None,
        ["keywords"],
        ["keywords"],
    )
    assert info.carried_bm25 is None  # no IDF modifier: not taken for BM25


def test_an_impossible_strategy_is_refused_before_anything_is_embedded(
    fast_client: QdrantClient, new_model: HashingProvider
) -> None:
    counting = CountingProvider(new_model)
    with pytest.raises(CompatibilityError, match="has no lineage metadata"):
        assess(
            fast_client,
            hash_spec(strategy="matryoshka_truncation", dimensions=32),
            counting,
            QdrantStateStore(fast_client),
        )
    assert counting.calls == 0
