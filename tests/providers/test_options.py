"""Provider options are checked when a provider is built: unknown keys and bad values refused.

Building a provider loads nothing and sends nothing, so these tests are fast; every
provider of the registry is held to the same contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from include.qdrant_migration.providers import PROVIDERS, EmbeddingProvider, get_provider
from include.qdrant_migration.providers.base import Credentials
from include.qdrant_migration.providers.errors import ProviderConfigError
from include.qdrant_migration.providers.options import (
    bool_option,
    check_keys,
    float_option,
    int_option,
)

#: One model of each provider, and what it needs to be built (no request is sent).
MODELS = {
    "local": "all-MiniLM-L6-v2",
    "openai": "text-embedding-3-small",
    "openai_compatible": "some-served-model",
    "cohere": "embed-v4.0",
}


def build(name: str, **options: Any) -> EmbeddingProvider:
    credentials = Credentials(f"{name}_conn", "key-123456", "http://127.0.0.1:9/v1")
    return get_provider(
        name,
        MODELS[name],
        options=options,
        credentials=credentials if PROVIDERS[name].needs_connection else None,
    )


@pytest.fixture(params=sorted(MODELS))
def provider_name(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


# -- the keys ------------------------------------------------------------------------------


def test_every_provider_is_in_this_test() -> None:
    assert set(PROVIDERS) == set(MODELS)


def test_a_misspelt_key_is_refused_naming_the_closest_known_key(provider_name: str) -> None:
    with pytest.raises(ProviderConfigError) as caught:
        build(provider_name, too_long_polciy="skip")
    message = str(caught.value)
    assert message.startswith(f"{provider_name} provider: ")
    assert "unknown provider option 'too_long_polciy': did you mean 'too_long_policy'?" in message
    assert "Known: " in message and "max_inputs_per_request" in message
    assert "Fix or remove the key in provider_options." in message


def test_every_unknown_key_is_named_at_once() -> None:
    with pytest.raises(ProviderConfigError) as caught:
        build("openai", max_concurency=2, colour="blue", encoding_format="float")
    message = str(caught.value)
    assert "'colour'; " in message  # no close key: no guess
    assert "'max_concurency': did you mean 'max_concurrency'?" in message


def test_known_keys_are_accepted(provider_name: str) -> None:
    provider = build(
        provider_name, too_long_policy="skip", max_inputs_per_request=8, max_concurrency=2
    )
    assert provider.too_long_policy == "skip"
    assert provider.limits.max_inputs_per_request == 8


def test_check_keys_on_its_own() -> None:
    check_keys({"a": 1}, known=("a", "b"), provider="p")
    with pytest.raises(ProviderConfigError, match=r"option 'c' does not apply: no c here"):
        check_keys({"c": 1}, known=("a",), refused={"c": "no c here"}, provider="p")


# -- the values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_concurrency": -1}, "max_concurrency must be a whole number >= 1; got -1"),
        ({"max_concurrency": 0}, "max_concurrency must be a whole number >= 1; got 0"),
        ({"max_concurrency": 2.5}, "max_concurrency must be a whole number >= 1; got 2.5"),
        ({"max_concurrency": True}, "max_concurrency must be a whole number >= 1; got True"),
        ({"max_inputs_per_request": 0}, "max_inputs_per_request must be a whole number >= 1"),
        ({"max_inputs_per_request": "many"}, "max_inputs_per_request must be a whole number"),
        ({"max_tokens_per_request": -5}, "max_tokens_per_request must be a whole number >= 1"),
        ({"too_long_policy": "drop"}, "too_long_policy must be one of truncate, skip, error"),
    ],
)
def test_values_out_of_range_are_refused_when_built(
    provider_name: str, options: Mapping[str, Any], message: str
) -> None:
    with pytest.raises(ProviderConfigError, match=message):
        build(provider_name, **options)


@pytest.mark.parametrize("provider_name", ["openai", "openai_compatible", "cohere"])
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tokens_per_minute": -5}, "tokens_per_minute must be a number > 0; got -5"),
        ({"requests_per_minute": "fast"}, "requests_per_minute must be a number > 0"),
        ({"rate_window_s": 0}, "rate_window_s must be a number > 0; got 0"),
        ({"max_retries": -1}, "max_retries must be a whole number >= 0; got -1"),
        ({"timeout_s": float("nan")}, "timeout_s must be a number > 0; got nan"),
        ({"backoff_base_s": 5, "backoff_max_s": 1}, "backoff_base_s <= backoff_max_s"),
    ],
)
def test_hosted_budgets_and_retries_are_checked_when_built(
    provider_name: str, options: Mapping[str, Any], message: str
) -> None:
    with pytest.raises(ProviderConfigError, match=message):
        build(provider_name, **options)


@pytest.mark.parametrize("provider_name", ["openai_compatible", "cohere"])
def test_an_estimate_of_bytes_per_token_must_be_positive(provider_name: str) -> None:
    with pytest.raises(ProviderConfigError, match="approx_bytes_per_token must be a number > 0"):
        build(provider_name, approx_bytes_per_token=0)


def test_a_budget_of_zero_or_none_means_no_local_cap() -> None:
    provider = build("openai", tokens_per_minute=0, requests_per_minute=None)
    assert provider.settings.budget.tokens_per_minute is None  # type: ignore[attr-defined]
    assert provider.settings.budget.requests_per_minute is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"native_dimension": 0}, "native_dimension must be a whole number >= 1; got 0"),
        ({"max_tokens_per_input": -1}, "max_tokens_per_input must be a whole number >= 1"),
        ({"send_dimensions": "false"}, "send_dimensions must be true or false; got 'false'"),
        ({"encoding_format": "hex"}, "encoding_format must be 'base64' or 'float'"),
    ],
)
def test_compatible_server_options_are_checked_when_built(
    options: Mapping[str, Any], message: str
) -> None:
    with pytest.raises(ProviderConfigError, match=message):
        build("openai_compatible", **options)


# -- the local provider --------------------------------------------------------------------


@pytest.mark.parametrize("key", ["requests_per_minute", "tokens_per_minute"])
def test_local_refuses_budgets_saying_it_has_no_rate_limit(key: str) -> None:
    with pytest.raises(ProviderConfigError) as caught:
        build("local", **{key: 1000})
    message = str(caught.value)
    assert f"local provider: option {key!r} does not apply" in message
    assert "no rate limit" in message and "remove it" in message


def test_local_refuses_retry_settings() -> None:
    with pytest.raises(
        ProviderConfigError, match=r"'max_retries' does not apply: .*nothing to retry"
    ):
        build("local", max_retries=3)


def test_local_accepts_a_migrations_shared_options() -> None:
    provider = build("local", max_concurrency=4, max_tokens_per_request=4096)
    assert provider.limits.max_tokens_per_request == 4096
    assert provider.limits.max_tokens_per_input == 256  # the model's window, not an option
    assert provider.limits.max_inputs_per_request == 256
    assert build("local", max_inputs_per_request=1000).limits.max_inputs_per_request == 256


def test_local_lineage_names_the_tokenizer_without_loading_the_model() -> None:
    lineage = build("local").lineage()
    assert lineage["tokenizer"] == "all-MiniLM-L6-v2 tokenizer (WordPiece)"
    assert get_provider("local", "multilingual-e5-small").limits.max_tokens_per_input == 512


# -- the readers on their own --------------------------------------------------------------


def test_readers_accept_whole_numbers_written_otherwise_and_keep_defaults() -> None:
    assert int_option({"k": 4.0}, "k", minimum=1) == 4
    assert int_option({"k": " 7 "}, "k", minimum=1) == 7
    assert int_option({}, "k", 3, minimum=1) == 3
    assert int_option({"k": None}, "k", minimum=1) is None
    assert float_option({"k": "0.5"}, "k", minimum=0, inclusive=False) == 0.5
    assert float_option({"k": 0}, "k", 1.0, minimum=0) == 0.0
    assert bool_option({}, "k", True) is True
    assert bool_option({"k": False}, "k", True) is False
    with pytest.raises(ProviderConfigError, match=r"k must be a number >= 1; got 'inf'"):
        float_option({"k": "inf"}, "k", minimum=1)
