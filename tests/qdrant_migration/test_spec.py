from __future__ import annotations

import dataclasses
from typing import Any

import jsonschema
import pytest

from include.qdrant_migration.spec import PARAM_SCHEMA, MigrationSpec, SpecError


def test_schema_and_dataclass_agree_on_fields_and_defaults() -> None:
    fields = {f.name: f for f in dataclasses.fields(MigrationSpec)}
    assert set(fields) == set(PARAM_SCHEMA)
    spec = MigrationSpec(alias="x")
    for name, schema in PARAM_SCHEMA.items():
        if name == "alias":
            continue
        assert getattr(spec, name) == schema["default"], name


@pytest.mark.parametrize("name", sorted(PARAM_SCHEMA))
def test_every_param_has_form_text_and_a_valid_default(name: str) -> None:
    schema = PARAM_SCHEMA[name]
    assert schema["title"] and len(schema["description"]) > 20
    if name != "alias":  # the empty alias default is caught by from_params, with advice
        jsonschema.validate(schema["default"], schema)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("alias", "has space"),
        ("provider", "huggingface"),
        ("batch_size", 0),
        ("batch_size", 4096),
        ("points_per_partition", 10),
        ("recall_threshold", 1.5),
        ("bad_text_policy", "ignore"),
        ("dimensions", "256"),
    ],
)
def test_schema_rejects_bad_values(name: str, value: Any) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(value, PARAM_SCHEMA[name])


def test_from_params_requires_an_alias() -> None:
    with pytest.raises(SpecError, match="No alias given"):
        MigrationSpec.from_params({"model": "multilingual-e5-small"})
    with pytest.raises(SpecError, match="No alias given"):
        MigrationSpec.from_params({"alias": ""})


def test_remote_provider_needs_a_connection() -> None:
    with pytest.raises(SpecError, match="provider_conn_id"):
        MigrationSpec.from_params({"alias": "a", "provider": "openai"})
    spec = MigrationSpec.from_params(
        {"alias": "a", "provider": "openai", "provider_conn_id": "openai_default"}
    )
    assert spec.provider_conn_id == "openai_default"


def test_from_params_ignores_unknown_keys_and_round_trips() -> None:
    params = {"alias": "articles", "batch_size": 32, "surprise": 1}
    spec = MigrationSpec.from_params(params)
    assert spec.batch_size == 32
    assert "surprise" not in spec.to_dict()
    assert MigrationSpec.from_params(spec.to_dict()) == spec


@pytest.mark.parametrize(
    ("model", "dimensions", "slug"),
    [
        ("multilingual-e5-small", None, "multilingual-e5-small"),
        ("intfloat/multilingual-e5-small", None, "multilingual-e5-small"),
        ("text-embedding-3-small", 256, "text-embedding-3-small-256d"),
        ("embed-v4.0", None, "embed-v4-0"),
        ("Org/Some_Model v2", None, "some-model-v2"),
    ],
)
def test_model_slug_is_collection_name_safe(model: str, dimensions: int | None, slug: str) -> None:
    assert MigrationSpec(alias="a", model=model, dimensions=dimensions).model_slug() == slug


def test_migration_id_depends_on_what_changes_the_vectors_only() -> None:
    base = MigrationSpec(alias="articles")
    mid = base.migration_id("articles_v1")
    assert mid.startswith("mig-") and len(mid) == 16
    assert MigrationSpec(alias="articles").migration_id("articles_v1") == mid
    # Tuning knobs do not start a new migration: a rerun with other sizes continues.
    tuned = dataclasses.replace(base, batch_size=7, points_per_partition=100, recall_k=3)
    assert tuned.migration_id("articles_v1") == mid
    # What the vectors are made from does.
    others = {
        base.migration_id("articles_v2"),
        dataclasses.replace(base, model="all-MiniLM-L6-v2").migration_id("articles_v1"),
        dataclasses.replace(base, dimensions=256).migration_id("articles_v1"),
        dataclasses.replace(base, text_field="body").migration_id("articles_v1"),
        dataclasses.replace(base, provider="openai").migration_id("articles_v1"),
    }
    assert mid not in others and len(others) == 5
