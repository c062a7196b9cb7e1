from __future__ import annotations

import json

import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from include.qdrant_migration.compatibility import (
    SAMPLE_SIZE,
    CompatibilityError,
    Plan,
    assess,
    read_source,
    resolve_alias,
    target_name,
)
from include.qdrant_migration.providers import EmbeddingProvider
from include.qdrant_migration.state import STATE_COLLECTION, QdrantStateStore
from tests.qdrant_migration.helpers import SEED_POINTS, make_source, small_spec, snapshot


def test_resolve_alias(client: QdrantClient) -> None:
    assert resolve_alias(client, "articles") == "articles_v1"


def test_unknown_alias_lists_what_exists(client: QdrantClient) -> None:
    QdrantStateStore(client).put("migration", "m", {})  # the tool's own collection is not listed
    with pytest.raises(CompatibilityError) as error:
        resolve_alias(client, "artciles")
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


def test_a_collection_name_is_not_accepted_as_alias(client: QdrantClient) -> None:
    with pytest.raises(CompatibilityError, match="'articles_v1' is a collection, not an alias"):
        resolve_alias(client, "articles_v1")


def test_assess_plans_a_full_reembed(client: QdrantClient, e5: EmbeddingProvider) -> None:
    spec = small_spec()
    plan = assess(client, spec, e5, QdrantStateStore(client))
    assert plan.migration_id == spec.migration_id("articles_v1")
    assert plan.alias == "articles"
    assert plan.strategy == "full_reembed"
    assert plan.source.collection == "articles_v1"
    assert plan.source.vector_name is None
    assert (plan.source.size, plan.source.distance) == (384, "Cosine")
    assert plan.source.points == SEED_POINTS
    assert plan.source.text_coverage == 1.0
    assert 0 < len(plan.source.sample_ids) <= 16
    assert plan.target_collection == "articles_v1__multilingual-e5-small__v1"
    assert plan.target_dimension == 384
    assert plan.target_lineage["model"] == "multilingual-e5-small"
    assert plan.target_lineage["provider"] == "local"
    assert plan.target_lineage["dimensions"] == 384
    assert plan.target_lineage["query_input"] == "'query: ' prefix"
    assert any("Full re-embed: 240 points" in r for r in plan.reasons)
    assert plan.spec == spec.to_dict()


def test_plan_survives_a_json_round_trip(client: QdrantClient, e5: EmbeddingProvider) -> None:
    plan = assess(client, small_spec(), e5, QdrantStateStore(client))
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


def test_assess_writes_nothing(client: QdrantClient, e5: EmbeddingProvider) -> None:
    before = snapshot(client, "articles_v1")
    assess(client, small_spec(), e5, QdrantStateStore(client))
    after = snapshot(client, "articles_v1")
    assert after == before
    assert len(after["points"]) == SEED_POINTS
    assert after["collections"] == ["articles_v1"]  # not even the state collection


def test_missing_text_field_lists_the_fields_present(
    client: QdrantClient, e5: EmbeddingProvider
) -> None:
    with pytest.raises(CompatibilityError) as error:
        assess(client, small_spec(text_field="body"), e5, QdrantStateStore(client))
    message = str(error.value)
    assert f"None of {SAMPLE_SIZE} sampled points of 'articles_v1'" in message
    assert "'body'" in message
    assert "Fields present: kind, module, text, title." in message


def test_declared_dimensions_must_match_the_model(
    client: QdrantClient, e5: EmbeddingProvider
) -> None:
    with pytest.raises(CompatibilityError) as error:
        assess(client, small_spec(dimensions=256), e5, QdrantStateStore(client))
    message = str(error.value)
    assert "returns 384-dimensional vectors, but dimensions=256 was requested" in message
    assert "Set dimensions to 384" in message
    plan = assess(client, small_spec(dimensions=384), e5, QdrantStateStore(client))
    assert plan.target_collection.endswith("-384d__v1")


def test_partial_text_coverage_is_reported(client: QdrantClient, e5: EmbeddingProvider) -> None:
    first_ids = [p.id for p in client.scroll("articles_v1", limit=16)[0]]
    client.delete_payload("articles_v1", keys=["text"], points=first_ids[:16:2], wait=True)
    plan = assess(client, small_spec(), e5, QdrantStateStore(client))
    assert plan.source.text_coverage == round(1 - 8 / SAMPLE_SIZE, 4)
    assert not set(first_ids[:16:2]) & set(plan.source.sample_ids)
    assert any("bad_text_policy='skip'" in r for r in plan.reasons)


def test_nested_text_field(e5: EmbeddingProvider) -> None:
    store = QdrantClient(":memory:")
    make_source(store, "docs_v1", [(i, {"doc": {"body": f"text {i}"}}) for i in range(5)])
    info = read_source(store, "docs_v1", "doc.body")
    assert info.text_coverage == 1.0
    assert info.sample_ids == [0, 1, 2, 3, 4]


def test_target_name_versions(client: QdrantClient) -> None:
    assert target_name(client, "articles_v1", "e5") == "articles_v1__e5__v1"
    for name in ("articles_v1__minilm__v3", "other__e5__v9", "articles_v1_backup"):
        client.create_collection(name, vectors_config=qm.VectorParams(size=2, distance="Cosine"))
    # one above any version of the same base, whichever model made it
    assert target_name(client, "articles_v1", "e5") == "articles_v1__e5__v4"
    # migrating a migrated collection keeps the base instead of stacking suffixes
    assert target_name(client, "articles_v1__minilm__v3", "e5") == "articles_v1__e5__v4"


def test_a_started_migration_keeps_its_target(client: QdrantClient, e5: EmbeddingProvider) -> None:
    state = QdrantStateStore(client)
    spec = small_spec()
    state.put(
        "migration",
        spec.migration_id("articles_v1"),
        {"target_collection": "articles_v1__multilingual-e5-small__v7"},
    )
    plan = assess(client, spec, e5, state)
    assert plan.target_collection == "articles_v1__multilingual-e5-small__v7"
    assert plan.reasons[0].startswith(f"Continuing migration {plan.migration_id}")


def test_named_vector_source_is_supported(e5: EmbeddingProvider) -> None:
    store = QdrantClient(":memory:")
    make_source(
        store, "named_v1", [(1, {"text": "hello world"})], alias="named", vector_name="dense"
    )
    plan = assess(store, small_spec(alias="named"), e5, QdrantStateStore(store))
    assert plan.source.vector_name == "dense"
    assert plan.source.size == 8


@pytest.mark.parametrize(
    ("vectors", "sparse", "match"),
    [
        (
            {
                "a": qm.VectorParams(size=2, distance=qm.Distance.COSINE),
                "b": qm.VectorParams(size=2, distance=qm.Distance.COSINE),
            },
            None,
            "has 2 named vectors \\(a, b\\)",
        ),
        (
            qm.VectorParams(size=2, distance=qm.Distance.COSINE),
            {"keywords": qm.SparseVectorParams()},
            "has sparse vectors \\(keywords\\)",
        ),
    ],
)
def test_layouts_that_would_lose_vectors_are_refused(
    vectors: object, sparse: dict[str, qm.SparseVectorParams] | None, match: str
) -> None:
    store = QdrantClient(":memory:")
    store.create_collection("multi", vectors_config=vectors, sparse_vectors_config=sparse)  # type: ignore[arg-type]
    with pytest.raises(CompatibilityError, match=match):
        read_source(store, "multi", "text")
