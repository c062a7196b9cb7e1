"""Provider options as the user typed them: unknown keys refused, values read with their range.

``provider_options`` is a JSON object from the trigger form. A typo in a key
(``too_long_polciy``) or a value out of range (``max_concurrency: -1``) must fail when the
provider is built, with a message that says what is wrong and how to fix it, never pass
silently or fail mid-backfill. Every provider declares the keys it reads
(``EmbeddingProvider.known_options``) and may refuse keys that belong to another kind of
provider with a reason (``refused_options``).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from typing import Any, overload

from include.qdrant_migration.providers.errors import ProviderConfigError


def check_keys(
    options: Mapping[str, Any],
    *,
    known: Iterable[str],
    provider: str,
    refused: Mapping[str, str] | None = None,
) -> None:
    """Raise :class:`ProviderConfigError` for every key of ``options`` the provider does not read.

    A key in ``refused`` is named with its reason; any other unknown key with the closest
    known key (a likely typo) and the list of known keys.
    """
    known_keys = sorted(set(known))
    problems: list[str] = []
    for key in sorted(map(str, options)):
        if key in known_keys:
            continue
        if refused and key in refused:
            problems.append(f"option {key!r} does not apply: {refused[key]}")
            continue
        close = difflib.get_close_matches(key, known_keys, n=1)
        hint = f": did you mean {close[0]!r}?" if close else ""
        problems.append(f"unknown provider option {key!r}{hint}")
    if problems:
        said = "; ".join(problems)
        said += " " if said.endswith("?") else ". "
        raise ProviderConfigError(
            f"{provider} provider: {said}Known: {', '.join(known_keys)}. "
            "Fix or remove the key in provider_options."
        )


@overload
def int_option(options: Mapping[str, Any], key: str, default: int, *, minimum: int) -> int: ...


@overload
def int_option(
    options: Mapping[str, Any], key: str, default: None = None, *, minimum: int
) -> int | None: ...


def int_option(
    options: Mapping[str, Any], key: str, default: int | None = None, *, minimum: int
) -> int | None:
    """``options[key]`` as an integer of at least ``minimum``; ``default`` when unset (None).

    Whole numbers written as floats (``4.0``) or strings (``"4"``) are accepted; booleans,
    fractions and anything else are refused, naming the key.
    """
    value = options.get(key)
    if value is None:
        return default
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            number = None
    if number is None or number < minimum:
        raise ProviderConfigError(
            f"Provider option {key} must be a whole number >= {minimum}; got {value!r}."
        )
    return number


@overload
def float_option(
    options: Mapping[str, Any], key: str, default: float, *, minimum: float, inclusive: bool = ...
) -> float: ...


@overload
def float_option(
    options: Mapping[str, Any],
    key: str,
    default: None = None,
    *,
    minimum: float,
    inclusive: bool = ...,
) -> float | None: ...


def float_option(
    options: Mapping[str, Any],
    key: str,
    default: float | None = None,
    *,
    minimum: float,
    inclusive: bool = True,
) -> float | None:
    """``options[key]`` as a finite number above ``minimum`` (or equal, when ``inclusive``)."""
    value = options.get(key)
    if value is None:
        return default
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    in_range = number is not None and (number >= minimum if inclusive else number > minimum)
    if number is None or not math.isfinite(number) or not in_range:
        bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
        raise ProviderConfigError(f"Provider option {key} must be a number {bound}; got {value!r}.")
    return number


def bool_option(options: Mapping[str, Any], key: str, default: bool) -> bool:
    """``options[key]`` as true/false; a string such as ``"false"`` is refused, not truthy."""
    value = options.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ProviderConfigError(f"Provider option {key} must be true or false; got {value!r}.")
    return value
