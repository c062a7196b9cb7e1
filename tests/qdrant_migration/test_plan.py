"""The plan crosses task boundaries as an XCom: plain JSON out, the typed plan back in."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from qdrant_client import QdrantClient

from include.qdrant_migration import codec, compatibility
from include.qdrant_migration.plan import Estimate, Lineage, Plan, SourceInfo
from include.qdrant_migration.spec import MigrationSpec, Strategy
from include.qdrant_migration.state import QdrantStateStore
from tests.fakes import HashingProvider
from tests.qdrant_migration.hashed import OLD_MODEL, hash_spec
from tests.qdrant_migration.helpers import NoEmbeddingProvider


def _through_xcom(data: dict[str, Any]) -> dict[str, Any]:
    """What Airflow stores and hands the next task: JSON."""
    loaded: dict[str, Any] = json.loads(json.dumps(data))
    return loaded


def _plan_for(
    client: QdrantClient,
    provider: HashingProvider | NoEmbeddingProvider,
    overrides: dict[str, Any],
) -> Plan:
    return compatibility.assess(client, hash_spec(**overrides), provider, QdrantStateStore(client))


@pytest.mark.parametrize(
    ("overrides", "strategy"),
    [
        ({}, Strategy.FULL_REEMBED),
        ({"allow_linear_map": True}, Strategy.LINEAR_MAP),
        (
            {"model": OLD_MODEL, "source_model": OLD_MODEL, "quantization": "binary"},
            Strategy.QUANTIZATION_ONLY,
        ),
    ],
    ids=["full_reembed", "linear_map", "quantization_only"],
)
def test_an_assessed_plan_round_trips_through_an_xcom(
    fast_client: QdrantClient,
    new_model: HashingProvider,
    old_model: HashingProvider,
    overrides: dict[str, Any],
    strategy: Strategy,
) -> None:
    provider = NoEmbeddingProvider(old_model) if "source_model" in overrides else new_model
    plan = _plan_for(fast_client, provider, overrides)
    assert plan.strategy is strategy
    xcom = _through_xcom(codec.encode_dict(plan))
    assert xcom == codec.encode_dict(plan)  # already plain JSON
    assert xcom["strategy"] == strategy.value and type(xcom["strategy"]) is str
    restored = codec.decode(Plan, xcom)
    assert restored == plan
    assert restored.strategy is strategy
    assert isinstance(restored.source, SourceInfo)
    assert isinstance(restored.spec, MigrationSpec)
    assert isinstance(restored.estimate, Estimate)
    assert restored.spec.forced_strategy is None
    assert restored.creates_target is (strategy is not Strategy.QUANTIZATION_ONLY)


def test_every_field_survives_the_round_trip() -> None:
    spec = MigrationSpec(
        alias="docs",
        provider="openai",
        model="text-embedding-3-small",
        dimensions=256,
        provider_conn_id="openai_default",
        provider_options={"requests_per_minute": 3000, "nested": {"a": [1, 2]}},
        updated_at_field="updated_at",
        eval_set=[{"query": "q", "relevant_ids": [1, "5b0f6a5e-8d0c-4d57-9b1c-2a5b8d3c7e11"]}],
        strategy="matryoshka_truncation",
        quantization="scalar_int8",
        dry_run=True,
        approval_timeout_hours=0.5,
    )
    plan = Plan(
        migration_id="mig-0123456789ab",
        alias="docs",
        strategy=Strategy.MATRYOSHKA_TRUNCATION,
        reasons=["Matryoshka truncation: ...", "2% of sampled points lack text"],
        source=SourceInfo(
            collection="docs_v1",
            vector_name="dense",
            size=1536,
            distance="Dot",
            points=1234,
            sample_ids=[1, "5b0f6a5e-8d0c-4d57-9b1c-2a5b8d3c7e11"],
            text_coverage=0.98,
            lineage=Lineage(provider="openai", model="text-embedding-3-small", dimensions=1536),
            quantization="binary",
        ),
        target_collection="docs_v1__text-embedding-3-small-256d__v2",
        target_dimension=256,
        target_lineage=Lineage(
            provider="openai",
            model="text-embedding-3-small",
            dimensions=256,
            strategy="matryoshka_truncation",
            truncated_from=1536,
        ),
        spec=spec,
        estimate=Estimate(
            points=1234,
            vectors_copied=1234,
            price_per_million_tokens=None,
            duration_s=1.8,
            ram_before_bytes=None,
            creates=["docs_v1__text-embedding-3-small-256d__v2"],
            alias_change="docs: docs_v1 -> docs_v1__text-embedding-3-small-256d__v2 on approval",
        ),
    )
    restored = codec.decode(Plan, _through_xcom(codec.encode_dict(plan)))
    assert restored == plan
    assert restored.strategy is Strategy.MATRYOSHKA_TRUNCATION
    assert restored.strategy.derives_vectors and restored.creates_target
    assert restored.vector_name == "dense"
    assert restored.spec.forced_strategy is Strategy.MATRYOSHKA_TRUNCATION


def _minimal_plan() -> Plan:
    return Plan(
        migration_id="mig-1",
        alias="a",
        strategy=Strategy.FULL_REEMBED,
        reasons=[],
        source=SourceInfo("a_v1", None, 4, "Cosine", 0, [], 1.0),
        target_collection="a_v1__m__v1",
        target_dimension=4,
        target_lineage=Lineage(),
        spec=MigrationSpec(alias="a"),
    )


def test_a_plan_without_an_estimate_gets_the_empty_one() -> None:
    plan = _minimal_plan()
    xcom = _through_xcom(codec.encode_dict(plan))
    for missing in (None, "absent"):
        if missing is None:
            xcom["estimate"] = None
        else:
            xcom.pop("estimate")
        assert codec.decode(Plan, xcom) == plan
        assert codec.decode(Plan, xcom).estimate == Estimate()
    assert plan.source.lineage == {} and plan.source.quantization == "none"


def test_a_spec_round_trips_through_an_xcom() -> None:
    spec = MigrationSpec.from_params(
        {
            "alias": "articles",
            "provider_options": {"tokens_per_minute": 1_000_000},
            "eval_set": [{"query": "q", "relevant_ids": [1]}],
            "strategy": "linear_map",
            "allow_linear_map": True,
        }
    )
    restored = codec.decode(MigrationSpec, _through_xcom(codec.encode_dict(spec)))
    assert restored == spec
    assert restored.forced_strategy is Strategy.LINEAR_MAP
    # a record written by an older version may hold fields this one does not know
    assert codec.decode(MigrationSpec, codec.encode_dict(spec) | {"retired_field": 1}) == spec


def test_a_restored_plan_is_immutable() -> None:
    plan = codec.decode(Plan, _through_xcom(codec.encode_dict(_minimal_plan())))
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.target_collection = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.spec.alias = "other"  # type: ignore[misc]
