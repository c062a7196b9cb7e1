"""The strategy choice: pure rules, one test per rule and per refusal."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from include.qdrant_migration.providers import ModelInfo, canonical_model
from include.qdrant_migration.providers.cohere_provider import COHERE_MODELS
from include.qdrant_migration.providers.local import MODELS as LOCAL_MODELS
from include.qdrant_migration.providers.openai_provider import OPENAI_MODELS
from include.qdrant_migration.spec import Strategy
from include.qdrant_migration.strategy import (
    AlreadyMigratedError,
    CompatibilityError,
    Facts,
    OldModel,
    choose_strategy,
    old_model,
)

MINILM = LOCAL_MODELS["all-MiniLM-L6-v2"].info
E5 = LOCAL_MODELS["multilingual-e5-small"].info
SMALL = OPENAI_MODELS["text-embedding-3-small"]


def facts(**overrides: Any) -> Facts:
    """A MiniLM source (384-d, Cosine, lineage known) migrating to e5-small."""
    base: dict[str, Any] = {
        "source_collection": "articles_v1",
        "source_size": 384,
        "source_distance": "Cosine",
        "source_points": 10_000,
        "old": OldModel("local", "all-MiniLM-L6-v2", "lineage"),
        "new_provider": "local",
        "new_model": "multilingual-e5-small",
        "new_info": E5,
        "dimensions": None,
        "current_quantization": "none",
    }
    base.update(overrides)
    return Facts(**base)


def openai_source(size: int = 1536, **overrides: Any) -> Facts:
    return facts(
        **{
            "source_size": size,
            "old": OldModel("openai", "text-embedding-3-small", "lineage"),
            "new_provider": "openai",
            "new_model": "text-embedding-3-small",
            "new_info": SMALL,
            **overrides,
        }
    )


def same_minilm(**overrides: Any) -> Facts:
    return facts(new_model="all-MiniLM-L6-v2", new_info=MINILM, **overrides)


def test_another_model_is_a_full_reembed() -> None:
    decision = choose_strategy(facts())
    assert decision.strategy is Strategy.FULL_REEMBED
    assert decision.reasons[0].startswith("Full re-embed: 10000 points of 'articles_v1'")
    assert "local/all-MiniLM-L6-v2" in decision.reasons[0]


def test_an_unknown_old_model_is_a_full_reembed() -> None:
    assert choose_strategy(facts(old=None)).strategy is Strategy.FULL_REEMBED


def test_same_model_and_size_with_a_new_quantization_changes_it_in_place() -> None:
    decision = choose_strategy(same_minilm(quantization="scalar_int8"))
    assert decision.strategy is Strategy.QUANTIZATION_ONLY
    reason = decision.reasons[0]
    assert "changed in place from 'none' to 'scalar_int8'" in reason
    assert "no new collection, no embedding calls, no points written" in reason


def test_same_model_size_and_quantization_is_already_migrated() -> None:
    with pytest.raises(AlreadyMigratedError, match="already holds 384-d vectors"):
        choose_strategy(same_minilm(quantization="none"))
    with pytest.raises(AlreadyMigratedError):
        choose_strategy(same_minilm(dimensions=384))


def test_same_matryoshka_model_with_fewer_dimensions_is_truncated() -> None:
    for size in (1536, 512):
        decision = choose_strategy(openai_source(size, dimensions=256))
        assert decision.strategy is Strategy.MATRYOSHKA_TRUNCATION
        assert f"the first 256 of the {size} stored dimensions" in decision.reasons[0]
        assert "dimensions=256" in decision.reasons[0]


def test_truncating_a_model_that_is_not_matryoshka_trained_is_refused() -> None:
    with pytest.raises(CompatibilityError) as error:
        choose_strategy(same_minilm(dimensions=128))
    message = str(error.value)
    assert "local/all-MiniLM-L6-v2 is not Matryoshka-trained" in message
    assert "first 128 of its 384 dimensions" in message
    for name in ("multilingual-e5-small", "all-MiniLM-L6-v2"):
        assert not LOCAL_MODELS[name].info.matryoshka
    assert not OPENAI_MODELS["text-embedding-ada-002"].matryoshka
    assert COHERE_MODELS["embed-v4.0"].matryoshka and SMALL.matryoshka


def test_more_dimensions_than_the_source() -> None:
    # auto: cutting cannot add dimensions, so the texts are embedded again
    decision = choose_strategy(openai_source(512, dimensions=1024))
    assert decision.strategy is Strategy.FULL_REEMBED
    assert "cannot add dimensions" in decision.reasons[0]
    # asking for truncation explicitly is refused
    with pytest.raises(CompatibilityError, match="cutting vectors cannot add dimensions"):
        choose_strategy(openai_source(512, dimensions=1024, forced=Strategy.MATRYOSHKA_TRUNCATION))


@pytest.mark.parametrize("distance", ["Euclid", "Manhattan"])
def test_a_distance_the_model_was_not_trained_for_is_refused(distance: str) -> None:
    with pytest.raises(CompatibilityError) as error:
        choose_strategy(facts(source_distance=distance))
    message = str(error.value)
    assert f"uses {distance} distance" in message
    assert "trained for Cosine similarity" in message
    assert "Cosine, Dot" in message


def test_dot_is_fine_for_a_normalized_cosine_model_and_unknown_models_pass() -> None:
    assert choose_strategy(facts(source_distance="Dot")).strategy is Strategy.FULL_REEMBED
    unknown = ModelInfo("served-model", None, distance=None)
    assert choose_strategy(facts(source_distance="Manhattan", new_info=unknown))
    int8 = dataclasses.replace(COHERE_MODELS["embed-v4.0"], normalized=False)
    assert int8.trained_distances() == ("Cosine",)


def test_quantization_only_keeps_whatever_distance_the_source_has() -> None:
    decision = choose_strategy(same_minilm(source_distance="Euclid", quantization="binary"))
    assert decision.strategy is Strategy.QUANTIZATION_ONLY


def test_linear_map_only_when_allowed() -> None:
    assert choose_strategy(facts()).strategy is Strategy.FULL_REEMBED
    decision = choose_strategy(facts(allow_linear_map=True, min_map_retention=0.9))
    assert decision.strategy is Strategy.LINEAR_MAP
    assert "2000 of 10000 texts are embedded" in decision.reasons[0]
    assert "is at least 90% and it searches no worse than the old model" in decision.reasons[0]
    small = choose_strategy(facts(allow_linear_map=True, source_points=240))
    assert "The sample is the whole source" in small.reasons[1]
    # the map does not need to know the old model: it learns from the stored vectors
    assert choose_strategy(facts(old=None, allow_linear_map=True)).strategy is Strategy.LINEAR_MAP


def test_forced_strategies_say_why_they_cannot_work() -> None:
    with pytest.raises(CompatibilityError, match="has no lineage metadata"):
        choose_strategy(facts(old=None, forced=Strategy.QUANTIZATION_ONLY, quantization="binary"))
    with pytest.raises(CompatibilityError, match="do not share a space"):
        choose_strategy(facts(forced=Strategy.MATRYOSHKA_TRUNCATION, dimensions=256))
    with pytest.raises(CompatibilityError, match="already uses 'none'"):
        choose_strategy(same_minilm(forced=Strategy.QUANTIZATION_ONLY, quantization="none"))
    with pytest.raises(CompatibilityError, match="maps vectors between two models"):
        choose_strategy(same_minilm(forced=Strategy.LINEAR_MAP))
    assert choose_strategy(facts(forced=Strategy.LINEAR_MAP)).strategy is Strategy.LINEAR_MAP
    # a forced full re-embed rebuilds even a collection of the same model
    assert (
        choose_strategy(same_minilm(forced=Strategy.FULL_REEMBED)).strategy is Strategy.FULL_REEMBED
    )


def test_old_model_from_params_wins_over_lineage() -> None:
    lineage = {"provider": "local", "model": "all-MiniLM-L6-v2"}
    assert old_model(lineage, None, None, "openai") == OldModel(
        "local", "all-MiniLM-L6-v2", "lineage"
    )
    assert old_model(lineage, "openai", "text-embedding-3-small", "local") == OldModel(
        "openai", "text-embedding-3-small", "params"
    )
    # a model without provider: the lineage's, else the new one's
    assert old_model({}, None, "text-embedding-3-small", "openai").provider == "openai"
    assert old_model({}, None, None, "local") is None


def test_old_model_names_are_made_canonical_by_the_provider_given() -> None:
    alias = "sentence-transformers/all-MiniLM-L6-v2"
    # strategy.py knows no provider: without ``canonical`` names are taken as given...
    assert old_model({}, "local", alias, "local") == OldModel("local", alias, "params")
    # ...and the caller resolves a provider's aliases of one model
    resolved = old_model({}, "local", alias, "local", canonical_model)
    assert resolved == OldModel("local", "all-MiniLM-L6-v2", "params")
    from_lineage = old_model(
        {"provider": "local", "model": alias}, None, None, "openai", canonical_model
    )
    assert from_lineage == OldModel("local", "all-MiniLM-L6-v2", "lineage")
    seen: list[tuple[str, str]] = []
    old_model({}, "cohere", "embed-v4.0", "local", lambda p, m: seen.append((p, m)) or m)
    assert seen == [("cohere", "embed-v4.0")]


def test_the_same_model_is_the_same_provider_and_canonical_name() -> None:
    assert same_minilm(old=OldModel("local", "all-MiniLM-L6-v2", "params")).same_model
    assert not facts().same_model
    assert not facts(old=None).same_model
    assert not openai_source(old=OldModel("cohere", "text-embedding-3-small", "params")).same_model


def test_quantized_provider_vectors_cannot_be_truncated() -> None:
    int8 = dataclasses.replace(COHERE_MODELS["embed-v4.0"], normalized=False)
    cohere = OldModel("cohere", "embed-v4.0", "lineage")
    with pytest.raises(CompatibilityError, match="cannot be renormalized"):
        choose_strategy(
            facts(
                source_size=1536,
                old=cohere,
                new_provider="cohere",
                new_model="embed-v4.0",
                new_info=int8,
                dimensions=256,
            )
        )
