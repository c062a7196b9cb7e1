from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from include.qdrant_migration import codec
from include.qdrant_migration.choices import (
    BAD_TEXT_POLICIES,
    EMBEDDING_MODES,
    PROVIDER_NAMES,
    QUANTIZATIONS,
)
from include.qdrant_migration.providers import PROVIDERS
from include.qdrant_migration.spec import (
    CATCH_UP_PARAM_SCHEMA,
    LIFECYCLE_PARAM_SCHEMA,
    PARAM_SCHEMA,
    STRATEGY_CHOICES,
    MigrationSpec,
    SpecError,
    Strategy,
    lifecycle_action,
    parse_eval_set,
)


def test_schema_and_dataclass_agree_on_fields_and_defaults() -> None:
    fields = {f.name: f for f in dataclasses.fields(MigrationSpec)}
    assert set(fields) == set(PARAM_SCHEMA)
    spec = MigrationSpec(alias="x")
    for name, schema in PARAM_SCHEMA.items():
        if name == "alias":
            continue
        assert getattr(spec, name) == schema["default"], name


FORMS = {
    "migration": PARAM_SCHEMA,
    "lifecycle": LIFECYCLE_PARAM_SCHEMA,
    "catch_up": CATCH_UP_PARAM_SCHEMA,
}


@pytest.mark.parametrize(
    ("form", "name"), [(form, name) for form, schema in FORMS.items() for name in sorted(schema)]
)
def test_every_param_has_form_text_and_a_valid_default(form: str, name: str) -> None:
    schema = FORMS[form][name]
    assert schema["title"] and len(schema["description"]) > 20
    if name != "alias":  # the empty alias default is caught by from_params, with advice
        jsonschema.validate(schema["default"], schema)


def test_max_catch_up_lag_bounds_the_lag_the_checks_start_from() -> None:
    schema = PARAM_SCHEMA["max_catch_up_lag"]
    assert (schema["type"], schema["default"], schema["minimum"]) == ("integer", 1000, 0)
    assert schema["title"] == "Largest catch-up lag before the checks"
    assert "fails with the measured rates" in schema["description"]
    assert MigrationSpec(alias="a").max_catch_up_lag == 1000
    spec = MigrationSpec.from_params({"alias": "a", "max_catch_up_lag": 0})
    assert spec.max_catch_up_lag == 0
    assert codec.decode(MigrationSpec, codec.encode_dict(spec)) == spec
    for bad in (-1, 2.5, "10"):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    # a tuning knob: another bound continues the same migration
    same = dataclasses.replace(spec, max_catch_up_lag=50)
    assert same.migration_id("articles_v1") == spec.migration_id("articles_v1")


def test_a_rollback_may_accept_lost_writes_only_when_asked() -> None:
    schema = LIFECYCLE_PARAM_SCHEMA["accept_lost_writes"]
    assert (schema["type"], schema["default"]) == ("boolean", False)
    assert schema["title"] == "Roll back without the old model"
    assert "losing those writes" in schema["description"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate("yes", schema)
    assert "accept_lost_writes" not in PARAM_SCHEMA  # a lifecycle choice, not a migration's
    assert set(LIFECYCLE_PARAM_SCHEMA) == {
        "action",
        "alias",
        "migration_id",
        "observation_days",
        "accept_lost_writes",
        "qdrant_conn_id",
    }


def test_the_strategy_choices_are_auto_and_every_strategy() -> None:
    assert PARAM_SCHEMA["strategy"]["enum"] == list(STRATEGY_CHOICES)
    assert ("auto", *(s.value for s in Strategy)) == STRATEGY_CHOICES
    assert [s.value for s in Strategy] == [
        "quantization_only",
        "matryoshka_truncation",
        "linear_map",
        "full_reembed",
        "in_place",
    ]


def test_every_closed_set_is_the_schemas_choice_list() -> None:
    assert PARAM_SCHEMA["provider"]["enum"] == list(PROVIDER_NAMES)
    assert PARAM_SCHEMA["source_provider"]["enum"] == [None, *PROVIDER_NAMES]
    assert PARAM_SCHEMA["embedding_mode"]["enum"] == list(EMBEDDING_MODES)
    assert PARAM_SCHEMA["bad_text_policy"]["enum"] == list(BAD_TEXT_POLICIES)
    assert PARAM_SCHEMA["quantization"]["enum"] == [None, *QUANTIZATIONS]
    assert set(PROVIDERS) == set(PROVIDER_NAMES)  # one provider class per name


@pytest.mark.parametrize(
    "field", ["provider", "source_provider", "embedding_mode", "bad_text_policy", "quantization"]
)
def test_a_value_outside_its_closed_set_is_refused(field: str) -> None:
    with pytest.raises(SpecError, match=f"{field} must be one of .*; got 'acme'"):
        MigrationSpec(alias="a", **{field: "acme"})


@pytest.mark.parametrize(
    ("provider", "model", "refused"),
    [
        ("openai", "text-embedding-3-small", None),
        ("cohere", "embed-english-v3.0", None),  # Cohere's embed jobs
        ("cohere", "embed-v4.0", "'embed-v4.0' is not among the models Cohere's embed jobs run"),
        ("local", "all-MiniLM-L6-v2", "provider 'local' has no batch API"),
    ],
)
def test_batch_mode_needs_a_batch_api_that_runs_the_model(
    provider: str, model: str, refused: str | None
) -> None:
    params = {
        "alias": "a",
        "provider": provider,
        "model": model,
        "embedding_mode": "batch",
        "provider_conn_id": "embeddings" if provider != "local" else None,
    }
    if refused is None:
        assert MigrationSpec.from_params(params).embedding_mode == "batch"
    else:
        with pytest.raises(SpecError, match=re.escape(f"not available: {refused}")):
            MigrationSpec.from_params(params)


def test_the_spec_is_typed_and_its_dict_is_plain_json() -> None:
    spec = MigrationSpec.from_params(
        {"alias": "a", "strategy": "linear_map", "quantization": "binary", "allow_linear_map": True}
    )
    assert spec.strategy is Strategy.LINEAR_MAP and spec.forced_strategy is Strategy.LINEAR_MAP
    plain = codec.encode_dict(spec)
    assert type(plain["strategy"]) is str and plain["strategy"] == "linear_map"
    assert codec.decode(MigrationSpec, plain) == spec
    assert (
        codec.decode(MigrationSpec, codec.encode_dict(MigrationSpec(alias="a"))).strategy == "auto"
    )


def test_what_each_strategy_does_to_collections_and_vectors() -> None:
    creates = {s for s in Strategy if s.creates_target}
    derives = {s for s in Strategy if s.derives_vectors}
    assert creates == set(Strategy) - {Strategy.QUANTIZATION_ONLY, Strategy.IN_PLACE}
    assert derives == {Strategy.MATRYOSHKA_TRUNCATION, Strategy.LINEAR_MAP}


def test_forced_strategy_is_typed() -> None:
    assert MigrationSpec(alias="a").forced_strategy is None  # "auto"
    for strategy in Strategy:
        forced = MigrationSpec(alias="a", strategy=strategy.value).forced_strategy
        assert forced is strategy
    with pytest.raises(ValueError, match="'cheapest' is not a valid Strategy"):
        _ = MigrationSpec(alias="a", strategy="cheapest").forced_strategy


def test_backfill_options_share_the_budget_among_parallel_tasks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QMM_MAX_PARALLEL_PARTITIONS", "4")
    options = {"requests_per_minute": 3000, "tokens_per_minute": 1_000_000, "max_concurrency": 4}
    spec = MigrationSpec(alias="a", provider_options=options)
    # at most 4 of 10 partitions run at once: each gets a quarter, spent paced from the start
    assert spec.backfill_options(10) == {
        "requests_per_minute": 750.0,
        "tokens_per_minute": 250_000.0,
        "max_concurrency": 4,
        "paced_start": True,
    }
    assert spec.backfill_options(2)["requests_per_minute"] == 1500.0
    for alone in (1, 0):
        assert spec.backfill_options(alone)["tokens_per_minute"] == 1_000_000.0
    assert spec.provider_options == options  # the spec's own options are left alone
    unlimited = MigrationSpec(alias="a", provider_options={"requests_per_minute": None})
    assert unlimited.backfill_options(10) == {"requests_per_minute": None}
    assert MigrationSpec(alias="a").backfill_options(10) == {}


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


def test_from_params_refuses_unknown_keys_naming_the_closest_param() -> None:
    with pytest.raises(SpecError, match=r"'modle' \(did you mean 'model'\?\)"):
        MigrationSpec.from_params({"alias": "articles", "modle": "all-MiniLM-L6-v2"})
    with pytest.raises(SpecError, match=r"'surprise'. Known params: add_sparse, alias, "):
        MigrationSpec.from_params({"alias": "articles", "surprise": 1})


def test_from_params_round_trips_and_records_ignore_fields_of_newer_versions() -> None:
    spec = MigrationSpec.from_params({"alias": "articles", "batch_size": 32})
    assert spec.batch_size == 32
    assert MigrationSpec.from_params(codec.encode_dict(spec)) == spec
    assert codec.decode(MigrationSpec, codec.encode_dict(spec) | {"surprise": 1}) == spec


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"source_provider": "local"}, "source_model is empty"),
        ({"source_provider": "cohere", "source_model": "embed-v4.0"}, "source_provider_conn_id"),
        ({"provider_options": ["max_concurrency", 4]}, "JSON object"),
    ],
)
def test_fields_that_need_each_other_are_refused_together(
    params: dict[str, Any], words: str
) -> None:
    with pytest.raises(SpecError, match=words):
        MigrationSpec.from_params({"alias": "articles", **params})


def test_the_old_models_connection_may_be_the_new_ones_when_the_provider_is_the_same() -> None:
    spec = MigrationSpec.from_params(
        {
            "alias": "a",
            "provider": "openai",
            "provider_conn_id": "openai_default",
            "source_provider": "openai",
            "source_model": "text-embedding-ada-002",
        }
    )
    assert spec.source_provider_conn_id is None


@pytest.mark.parametrize(
    ("eval_set", "words"),
    [
        ([{"query": "q"}], "row 1 .*relevant_ids"),
        ([{"query": "", "relevant_ids": [1]}], "row 1"),
        ([{"query": "q", "relevant_ids": [True]}], "row 1"),
        ('{"query": "q", "relevant_ids": [1]}\nnot json', "line 2 is not JSON"),
        ("/nowhere/eval.jsonl", "not a file on this worker"),
        (42, "JSONL file path"),
    ],
)
def test_a_malformed_eval_set_is_refused_with_the_row(eval_set: Any, words: str) -> None:
    with pytest.raises(SpecError, match=words):
        MigrationSpec.from_params({"alias": "a", "eval_set": eval_set})


def test_an_eval_set_file_is_read_once_in_the_first_task(tmp_path: Path) -> None:
    path = tmp_path / "eval.jsonl"
    path.write_text('{"query": "what", "relevant_ids": [1, "b"]}\n\n', encoding="utf-8")
    spec = MigrationSpec.from_params({"alias": "a", "eval_set": str(path)})
    assert spec.eval_set == [{"query": "what", "relevant_ids": [1, "b"]}]
    assert parse_eval_set(spec.eval_set) == spec.eval_set


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"action": "rollback"}, "rollback needs the alias"),
        ({"action": "retire", "alias": "a"}, "retire needs the migration"),
        ({"action": "rollback", "alias": "a", "observaton_days": 1}, "'observation_days'"),
    ],
)
def test_lifecycle_params_are_checked_before_any_action(params: dict[str, Any], words: str) -> None:
    with pytest.raises(SpecError, match=words):
        lifecycle_action(params)
    assert lifecycle_action({"action": "retire", "migration_id": "mig-1"}) == "retire"


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


def test_migration_id_of_a_cheaper_strategy_or_another_quantization() -> None:
    base = MigrationSpec(alias="articles")
    mid = base.migration_id("articles_v1")
    # a full re-embed keeps the id it always had (runs started earlier continue)
    assert base.migration_id("articles_v1", Strategy.FULL_REEMBED) == mid
    ids = {base.migration_id("articles_v1", s) for s in Strategy}
    assert len(ids) == len(Strategy)  # vectors made in different ways are never mixed
    quantized = dataclasses.replace(base, quantization="scalar_int8")
    assert quantized.migration_id("articles_v1") != mid
    assert quantized.migration_id("articles_v1") != dataclasses.replace(
        base, quantization="binary"
    ).migration_id("articles_v1")
