"""Deployment settings: every ``QMM_*`` environment variable, typed, checked, in one place.

They are not run params because they shape the task graph (a pool, a schedule, how many
tasks run at once) or belong to the deployment rather than to one migration. Set them
the same way on every Airflow component (dag-processor, scheduler, workers, api-server):
``docker-compose.yaml`` does it in ``x-airflow-common``.

Everything reads them through :func:`settings`, once per process, never at import time;
DAG files call it while they are parsed, which is when these values shape the graph.
A bad value fails with a message naming the variable; an empty value counts as unset.
``docs/settings.md`` is generated from :class:`Settings` (``make settings-doc``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class SettingsError(ValueError):
    """An environment variable holds a value its setting cannot take; the message says which."""


def _whole(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError
    return value


def _seconds(raw: str) -> float:
    value = float(raw)
    if not value > 0 or value == float("inf"):
        raise ValueError
    return value


def _seconds_or_zero(raw: str) -> float:
    value = float(raw)
    if not value >= 0 or value == float("inf"):
        raise ValueError
    return value


def _name(raw: str) -> str:
    return raw.strip()


def _schedule(raw: str) -> str | None:
    return None if raw.strip().lower() == "none" else raw.strip()


def _names(raw: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not names:
        raise ValueError
    return names


#: What each parser accepts, as the docs and the error messages say it.
_KINDS: dict[Callable[[str], Any], str] = {
    _whole: "a whole number, at least 1",
    _seconds: "seconds, more than 0",
    _seconds_or_zero: "seconds, 0 or more",
    _name: "a name",
    _schedule: 'a cron expression or preset (e.g. "@daily"), or "none"',
    _names: "names separated by commas",
}


def _setting(
    default: Any, *, env: str, parse: Callable[[str], Any], meaning: str, read: str
) -> Any:
    """A field of :class:`Settings`: its variable, how its text is read, and its docs."""
    return dataclasses.field(
        default=default,
        metadata={
            "env": env,
            "parse": parse,
            "kind": _KINDS[parse],
            "meaning": meaning,
            "read": read,
        },
    )


@dataclass(frozen=True)
class Settings:
    """The deployment's settings. ``Settings()`` is the defaults; see :meth:`from_env`."""

    max_parallel_partitions: int = _setting(
        4,
        env="QMM_MAX_PARALLEL_PARTITIONS",
        parse=_whole,
        meaning="Backfill tasks of one migration run that run at once. Each one gets this "
        "share of the run's provider budget (`provider_options` requests and tokens per "
        "minute), so a migration stays within the budget in its params. With a backfill "
        "pool of as many slots, migrations given one provider account's whole limit stay "
        "within it together.",
        read="When the migration DAG is parsed (the backfill task's "
        "`max_active_tis_per_dagrun`), and by its tasks (each backfill task's share of "
        "the budget, the dry run's duration): give every component the same value.",
    )
    max_active_migrations: int = _setting(
        4,
        env="QMM_MAX_ACTIVE_MIGRATIONS",
        parse=_whole,
        meaning="Runs of the migration DAG active at once. A run waiting for its approval "
        "holds no worker, but counts here.",
        read="When the migration DAG is parsed (its `max_active_runs`).",
    )
    backfill_pool: str = _setting(
        "default_pool",
        env="QMM_BACKFILL_POOL",
        parse=_name,
        meaning="The Airflow pool of the backfill tasks: its slots cap them across runs "
        "and DAGs, which is how several migrations share one provider account's limits. "
        "The pool must exist (docker-compose's `airflow-init` creates `qdrant_backfill`).",
        read="When the migration DAG is parsed (the backfill task's `pool`).",
    )
    recall_poke_s: float = _setting(
        30.0,
        env="QMM_RECALL_POKE_S",
        parse=_seconds,
        meaning="Seconds between `recall_check`'s looks at the new index (the sensor holds "
        "no worker in between).",
        read="When the migration DAG is parsed (the sensor's `poke_interval`).",
    )
    catch_up_schedule: str | None = _setting(
        "@daily",
        env="QMM_CATCH_UP_SCHEDULE",
        parse=_schedule,
        meaning="When the catch-up DAG keeps unfinished migrations level with the "
        'application\'s writes; "none" leaves it unscheduled (triggered by hand only).',
        read="When the catch-up DAG is parsed (its `schedule`).",
    )
    lease_ttl_s: float = _setting(
        300.0,
        env="QMM_LEASE_TTL_S",
        parse=_seconds,
        meaning="Seconds a migration's writer lease lives without a renewal: how long a "
        "killed writer (a lost worker) blocks the next one. Holders renew it every sixth "
        "of this while they work.",
        read="By tasks, when they take or renew a writer lease.",
    )
    lease_wait_s: float = _setting(
        900.0,
        env="QMM_LEASE_WAIT_S",
        parse=_seconds_or_zero,
        meaning="Seconds a task waits for another writer of the same migration (its "
        "nightly catch-up, a rollback) before it fails, naming the holder. The catch-up "
        "DAG never waits: it skips a busy migration until its next run.",
        read="By tasks, when they wait for a writer lease.",
    )
    aliases: tuple[str, ...] = _setting(
        (),
        env="QMM_ALIASES",
        parse=_names,
        meaning="The aliases your applications read, whose Asset "
        "(`x-qdrant-alias://<alias>`) Airflow registers when it parses the migration DAG, "
        "so the event a swap or rollback publishes finds it. An alias not listed here gets "
        "its Asset created by Airflow at its first move, with two warnings in the task's "
        "log (the Asset was not found, then was inactive).",
        read="When the migration and lifecycle DAGs are parsed (the swap and rollback "
        "tasks' `inlets`).",
    )
    ui_qdrant_conn_ids: tuple[str, ...] = _setting(
        ("qdrant_default",),
        env="QMM_UI_QDRANT_CONN_IDS",
        parse=_names,
        meaning='The Qdrant connections whose state stores the "Qdrant migrations" page '
        "lists migrations from.",
        read="By the api-server, when it loads the UI plugin.",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """The settings ``environ`` gives (unset or empty: the default), or a
        :class:`SettingsError` naming every variable with a value it cannot take."""
        values: dict[str, Any] = {}
        problems: list[str] = []
        for spec in dataclasses.fields(cls):
            meta = spec.metadata
            raw = environ.get(meta["env"], "")
            if not raw.strip():
                continue
            try:
                values[spec.name] = meta["parse"](raw)
            except ValueError:
                problems.append(f"{meta['env']} must be {meta['kind']}; got {raw!r}.")
        if problems:
            raise SettingsError(
                " ".join(problems) + " Fix the environment of the Airflow components "
                "(docker-compose.yaml, .env), or unset the variable for its default "
                "(docs/settings.md)."
            )
        return cls(**values)


@functools.cache
def settings() -> Settings:
    """This process's settings, read from the environment at the first call.

    Tests that change a ``QMM_*`` variable call ``settings.cache_clear()`` afterwards
    (``tests/conftest.py`` clears it around every test).
    """
    return Settings.from_env(os.environ)
