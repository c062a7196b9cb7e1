"""The Qdrant-side budget of a migration: what it may ask of the cluster that serves production.

The provider budgets (``provider_options``) protect the embedding account. This one protects
the Qdrant cluster, which serves the application's searches while a migration scrolls,
writes and builds an index beside them. It is the ``qdrant_budget`` param, a JSON object:

* ``points_per_second``: points the migration writes per second, backfill and catch-up,
  shared by its parallel backfill tasks (each gets its share, as with the provider
  budget), so the writes the cluster sees stay within it plus one sub-batch (the backfill
  reads the source no faster, in pieces of the same size);
* ``max_search_p99_ms``: the adaptive mode. Probe queries search the source as the
  application does; each one slower than this (a tail bound: one is enough) makes the
  migration write slower (halving its rate), and it speeds up again by small steps while
  they stay under it (additive increase, multiplicative decrease), never above
  ``points_per_second``, from which it starts at a twentieth, not at full speed;
* ``min_points_per_second``: the adaptive mode never goes slower than this;
* ``probe_interval_s``: seconds between probe queries (they are also the latency
  evidence in the report and the migrations page);
* ``max_indexing_threads``: the new vectors' HNSW build and optimizer use at most this
  many threads until the swap, which lifts the cap (0: Qdrant's own choice, no cap).

Nothing here is required: without ``points_per_second`` or ``max_search_p99_ms`` the
migration writes as fast as the provider and the cluster go, and only probes and caps
the index threads. A bad value (negative, zero, not a number, an unknown key) fails
``assess_compatibility`` with the key, the value and what to write instead.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from include.qdrant_migration.choices import named_with_hints

#: A probe every second: cheap (one search) and enough samples for a p99 over minutes.
DEFAULT_PROBE_INTERVAL_S = 1.0
#: The adaptive mode probes faster, so that it reacts within seconds.
ADAPTIVE_PROBE_INTERVAL_S = 0.5
#: Threads of the new vectors' index build until the swap: one, so the cluster's other
#: cores stay with serving while a migration that serves nobody yet is indexed.
DEFAULT_INDEXING_THREADS = 1

_RATES = ("points_per_second", "max_search_p99_ms", "min_points_per_second", "probe_interval_s")
KEYS = (*_RATES, "max_indexing_threads")
_EXAMPLE = '{"points_per_second": 500, "max_search_p99_ms": 50}'


class BudgetError(ValueError):
    """``qdrant_budget`` is not usable; the message names the key and what to write."""


def _number(options: Mapping[str, Any], key: str) -> float | None:
    value = options.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BudgetError(
            f"qdrant_budget.{key} must be a number, not {type(value).__name__} {value!r} "
            f'(write {key}: 500, not "500"); e.g. {_EXAMPLE}.'
        )
    if not math.isfinite(value) or value <= 0:
        raise BudgetError(
            f"qdrant_budget.{key} must be a positive number; got {value!r}. Leave the key "
            f"out for no limit; e.g. {_EXAMPLE}."
        )
    return float(value)


def _threads(options: Mapping[str, Any]) -> int:
    value = options.get("max_indexing_threads", DEFAULT_INDEXING_THREADS)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BudgetError(
            "qdrant_budget.max_indexing_threads must be a whole number of threads, 0 or more "
            f"(0: no cap, Qdrant chooses); got {value!r}."
        )
    return value


def _check_keys(options: Mapping[str, Any]) -> None:
    unknown = sorted(set(map(str, options)) - set(KEYS))
    if not unknown:
        return
    raise BudgetError(
        f"Unknown qdrant_budget key(s): {named_with_hints(unknown, KEYS)}. "
        f"Known: {', '.join(KEYS)}."
    )


@dataclass(frozen=True)
class QdrantBudget:
    """``qdrant_budget``, validated; :meth:`share` is one parallel task's part of it."""

    points_per_second: float | None = None
    max_search_p99_ms: float | None = None
    min_points_per_second: float | None = None
    probe_interval_s: float | None = None
    max_indexing_threads: int = DEFAULT_INDEXING_THREADS

    @classmethod
    def from_options(cls, options: object) -> QdrantBudget:
        """The budget of a ``qdrant_budget`` param; :class:`BudgetError` when it is bad."""
        if options is None:
            return cls()
        if not isinstance(options, Mapping):
            raise BudgetError(
                f"qdrant_budget must be a JSON object, e.g. {_EXAMPLE}; got "
                f"{type(options).__name__} {options!r}."
            )
        _check_keys(options)
        rates = {key: _number(options, key) for key in _RATES}
        budget = cls(**rates, max_indexing_threads=_threads(options))  # type: ignore[arg-type]
        ceiling, floor = budget.points_per_second, budget.min_points_per_second
        if floor is not None and budget.max_search_p99_ms is None:
            raise BudgetError(
                "qdrant_budget.min_points_per_second is the adaptive mode's floor: set "
                "max_search_p99_ms too, or use points_per_second for a fixed rate."
            )
        if floor is not None and ceiling is not None and floor > ceiling:
            raise BudgetError(
                f"qdrant_budget.min_points_per_second ({floor:g}) is above points_per_second "
                f"({ceiling:g}): the floor must be at most the ceiling."
            )
        return budget

    @property
    def adaptive(self) -> bool:
        return self.max_search_p99_ms is not None

    @property
    def paces(self) -> bool:
        """Whether writes are paced at all (a fixed rate, or the adaptive mode)."""
        return self.points_per_second is not None or self.adaptive

    @property
    def probe_every_s(self) -> float:
        if self.probe_interval_s is not None:
            return self.probe_interval_s
        return ADAPTIVE_PROBE_INTERVAL_S if self.adaptive else DEFAULT_PROBE_INTERVAL_S

    def share(self, ways: int) -> QdrantBudget:
        """One of ``ways`` tasks writing at once: an equal part of the rates, and of the
        probes (each task probes ``ways`` times less often, so the migration's probe
        searches add the same load to the cluster however many tasks it runs)."""
        ways = max(1, ways)
        ceiling, floor = self.points_per_second, self.min_points_per_second
        return dataclasses.replace(
            self,
            points_per_second=None if ceiling is None else ceiling / ways,
            min_points_per_second=None if floor is None else floor / ways,
            probe_interval_s=self.probe_every_s * ways,
        )

    def describe(self) -> str:
        """One line for the plan and the report."""
        parts = []
        if self.points_per_second is not None:
            parts.append(f"at most {self.points_per_second:g} points/s written")
        if self.adaptive:
            floor = self.min_points_per_second
            parts.append(
                f"slower while probe searches of the source take over "
                f"{self.max_search_p99_ms:g} ms (AIMD"
                + (f", never below {floor:g} points/s" if floor else "")
                + ")"
            )
        if not parts:
            parts.append("writes not paced")
        threads = self.max_indexing_threads
        parts.append(
            f"index built with at most {threads} thread{'s' if threads != 1 else ''} until the swap"
            if threads
            else "index threads not capped"
        )
        return "; ".join(parts)
