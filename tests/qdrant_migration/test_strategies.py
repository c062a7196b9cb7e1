"""The cheaper strategies end to end in a real embedded store: truncation against the OpenAI
stand-in, and the learned linear map with the real local models.

(Quantization in place and fitting the map are in test_quantization.py and
test_linear_map.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient

from include.qdrant_migration import collections, compatibility, linear_map
from include.qdrant_migration.plan import Plan
from include.qdrant_migration.providers import Credentials, EmbeddingProvider, get_provider
from include.qdrant_migration.state import QdrantStateStore
from include.qdrant_migration.strategies import strategy_of
from include.qdrant_migration.sync.backfill import BackfillSettings, BackfillSummary
from include.qdrant_migration.sync.partitions import plan_partitions
from include.qdrant_migration.sync.transform import PartitionTransform
from tests.qdrant_migration.helpers import (
    SEED_POINTS,
    CountingProvider,
    all_points,
    seed_standin_source,
    small_spec,
)
from tests.standin import OPENAI_KEY, StandIn, expected_vector, standin, standin_server  # noqa: F401

MODEL = "text-embedding-3-small"


@pytest.fixture
def openai_256(standin: StandIn) -> Iterator[EmbeddingProvider]:  # noqa: F811
    provider = get_provider(
        "openai",
        MODEL,
        dimensions=256,
        credentials=Credentials("standin", api_key=OPENAI_KEY, base_url=standin.openai_base_url),
    )
    yield provider
    provider.close()


def _transform_all(client: QdrantClient, plan: Plan, state: Any) -> BackfillSummary:
    collections.create_target(client, plan, state)
    parts = plan_partitions(
        client,
        state,
        migration_id=plan.migration_id,
        source_collection=plan.source.collection,
        points_per_partition=100,
        expected_points=plan.source.points,
    )
    derive = strategy_of(plan).transform(state)  # type: ignore[attr-defined]
    settings = BackfillSettings(batch_size=32)
    return BackfillSummary.of(
        [PartitionTransform(client, plan, p, derive, state, settings).run() for p in parts]
    )


@pytest.mark.parametrize("source_size", [1536, 512])
def test_truncation_writes_exactly_what_the_model_returns_for_fewer_dimensions(
    corpus: list[dict[str, Any]],
    standin: StandIn,  # noqa: F811
    openai_256: EmbeddingProvider,
    source_size: int,
) -> None:
    client = QdrantClient(":memory:")
    seed_standin_source(client, corpus, dimensions=source_size)
    state = QdrantStateStore(client)
    spec = small_spec(
        alias="docs", provider="openai", model=MODEL, dimensions=256, provider_conn_id="standin"
    )

    plan = compatibility.assess(client, spec, openai_256, state)
    assert plan.strategy == "matryoshka_truncation"
    assert plan.target_dimension == 256
    assert plan.target_lineage["dimensions"] == 256
    assert plan.target_lineage["strategy"] == "matryoshka_truncation"
    assert plan.target_lineage["truncated_from"] == source_size
    assert plan.estimate.texts_to_embed == 0 and plan.estimate.tokens == 0
    assert plan.estimate.vectors_copied == SEED_POINTS
    probe_only = len(standin.requests())
    assert probe_only == 1  # the dimension probe, one fixed query; no document

    totals = _transform_all(client, plan, state)

    assert len(standin.requests()) == probe_only  # not one embedding call for the documents
    assert totals.transformed == SEED_POINTS
    assert totals.embedded == totals.embed_requests == totals.tokens == 0
    target = all_points(client, plan.target_collection)
    assert len(target) == SEED_POINTS
    assert [p.payload for p in target] == [p.payload for p in all_points(client, "docs_v1")]
    got = np.array([p.vector for p in target])
    want = np.array([expected_vector(MODEL, p.payload["text"], "", 256) for p in target])
    np.testing.assert_allclose(got, want, atol=1e-6)
    # ... which is what the stand-in (like OpenAI) returns when asked for 256 dimensions
    asked = openai_256.embed_documents([target[0].payload["text"]])[0]
    np.testing.assert_allclose(got[0], asked, atol=1e-6)
    meta = client.get_collection(plan.target_collection).config.metadata["qdrant_migration"]
    assert meta["dimensions"] == 256 and meta["model"] == MODEL


def test_linear_map_maps_every_vector_without_embedding_them(
    client: QdrantClient, e5: EmbeddingProvider
) -> None:
    state = QdrantStateStore(client)
    spec = small_spec(allow_linear_map=True, min_map_retention=0.3, map_sample_size=200)
    plan = compatibility.assess(client, spec, e5, state)
    assert plan.estimate.texts_to_embed == 200
    counting = CountingProvider(e5)

    fitted = linear_map.fit_for_plan(client, plan, counting, state)

    assert fitted.sample == 200 and fitted.held_out == 40 and fitted.k == 10
    assert 0.3 <= fitted.retention <= 1.0
    assert counting.texts_embedded == 200  # the sample, and nothing else

    totals = _transform_all(client, plan, state)

    assert counting.texts_embedded == 200
    assert totals.transformed == SEED_POINTS and totals.embed_requests == 0
    source = all_points(client, "articles_v1")
    target = all_points(client, plan.target_collection)
    assert [p.id for p in target] == [p.id for p in source]
    mapped = linear_map.load(state, plan.migration_id).apply([p.vector for p in source])
    np.testing.assert_allclose([p.vector for p in target], mapped, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm([p.vector for p in target], axis=1), 1, atol=1e-5)
