"""The task bodies' failure paths, called as plain functions with a fake Airflow context.

What a user gets wrong (the params, the alias, a lifecycle action that does not apply)
must fail the task at once with its message and change nothing; what cannot migrate
(a dry run, a quantization change) is skipped. The tasks reach Qdrant as in a DAG run:
through the real hook, an Airflow connection to an embedded store, and the real writer
leases; only ``get_current_context`` is stood in for (:class:`FakeTi`), and the models
are hashing stand-ins (tests/fakes.py). The DAG runs themselves are tests/dags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from include.qdrant_migration import aliases, codec
from include.qdrant_migration.airflow import tasks, writers
from include.qdrant_migration.airflow.approvals import DAG_ID, LIFECYCLE_DAG_ID
from include.qdrant_migration.airflow.workarounds import ANSWER_KEY
from include.qdrant_migration.plan import Plan
from include.qdrant_migration.spec import Strategy
from include.qdrant_migration.state import (
    STATE_COLLECTION,
    Leases,
    Migrations,
    MigrationStatus,
)
from include.qdrant_migration.strategy import AlreadyMigratedError
from tests.fakes import HashingProvider
from tests.qdrant_migration.airflow.helpers import (
    ALIAS,
    SOURCE,
    claim,
    opened,
    plan_of,
    put,
    record_of,
)
from tests.qdrant_migration.helpers import make_source

PARAMS = {"alias": ALIAS, "provider": "local", "model": "multilingual-e5-small"}


@dataclass
class FakeTi:
    """The task instance in ``get_current_context()``: its run, the XComs of the run's
    other tasks, and the states of the DAG runs it asks about."""

    run_id: str = "run-mine"
    dag_id: str = DAG_ID
    xcoms: dict[tuple[str, str], Any] = field(default_factory=dict)
    run_states: dict[str, str] = field(default_factory=dict)

    def xcom_pull(self, task_ids: str, key: str = "return_value") -> Any:
        return self.xcoms.get((task_ids, key))

    def get_dagrun_state(self, dag_id: str, run_id: str) -> str:
        try:
            return self.run_states[f"{dag_id}/{run_id}"]
        except KeyError:
            raise RuntimeError(f"DagRun {run_id} not found") from None


@pytest.fixture
def ti(monkeypatch: pytest.MonkeyPatch) -> FakeTi:
    fake = FakeTi()

    def context() -> dict[str, Any]:
        return {"ti": fake, "run_id": fake.run_id}

    monkeypatch.setattr(tasks, "get_current_context", context)
    monkeypatch.setattr(writers, "get_current_context", context)
    return fake


@pytest.fixture
def hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The params' model is a hashing stand-in: nothing is loaded."""
    monkeypatch.setattr(tasks, "build_provider", lambda spec, **_: HashingProvider("hash-new-8"))


def collections_of(path: Path) -> set[str]:
    with opened(path) as (client, _state):
        return {c.name for c in client.get_collections().collections}


def fails(call: Any, *args: Any) -> str:
    """What the task says when it fails for good (AirflowFailException: no retries)."""
    with pytest.raises(AirflowFailException) as failed:
        call(*args)
    return str(failed.value)


def skips(call: Any, *args: Any) -> str:
    with pytest.raises(AirflowSkipException) as skipped:
        call(*args)
    return str(skipped.value)


# -- fail_fast ---------------------------------------------------------------------------


@pytest.mark.parametrize("error", tasks.USER_ERRORS, ids=lambda e: e.__name__)
def test_a_user_error_fails_the_task_for_good_with_its_message(error: type[Exception]) -> None:
    @tasks.fail_fast
    def task() -> None:
        raise error("what was wrong, and what to do")

    with pytest.raises(AirflowFailException) as failed:
        task()

    assert str(failed.value) == f"{error.__name__}: what was wrong, and what to do"
    assert isinstance(failed.value.__cause__, error)
    assert task.__name__ == "task"  # Airflow names the task after the body


def test_an_already_migrated_source_skips_the_task() -> None:
    @tasks.fail_fast
    def task() -> None:
        raise AlreadyMigratedError("docs_v1 already has the vectors of hash-new")

    assert skips(task) == "docs_v1 already has the vectors of hash-new"


def test_any_other_error_is_left_to_airflows_retries() -> None:
    @tasks.fail_fast
    def task() -> None:
        raise ConnectionError("Qdrant did not answer")

    with pytest.raises(ConnectionError):
        task()


# -- assess_compatibility ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "says"),
    [
        (
            PARAMS | {"modle": "x"},
            "SpecError: Unknown param(s) for qdrant_model_migration: 'modle' (did you mean "
            "'model'?)",
        ),
        (
            PARAMS | {"alias": ""},
            'SpecError: No alias given. Trigger with conf {"alias": ',
        ),
        (
            PARAMS | {"qdrant_budget": {"min_points_per_second": 50}},
            "SpecError: qdrant_budget.min_points_per_second is the adaptive mode's floor",
        ),
        (
            PARAMS
            | {
                "qdrant_budget": {
                    "points_per_second": 10,
                    "min_points_per_second": 50,
                    "max_search_p99_ms": 40,
                }
            },
            "SpecError: qdrant_budget.min_points_per_second (50) is above points_per_second (10)",
        ),
        (
            PARAMS | {"qdrant_budget": {"points_per_sec": 10}},
            "SpecError: Unknown qdrant_budget key(s): 'points_per_sec' (did you mean "
            "'points_per_second'?)",
        ),
        (
            PARAMS | {"qdrant_budget": [500]},
            "SpecError: qdrant_budget must be a JSON object",
        ),
        (
            PARAMS | {"model": "no-such-model"},
            "ProviderConfigError: Unknown local model 'no-such-model'.",
        ),
        (
            PARAMS | {"qdrant_conn_id": "qdrant_nowhere"},
            "SpecError: Airflow connection 'qdrant_nowhere' (Qdrant) does not exist",
        ),
        (
            PARAMS | {"query_log": ["json dumps"], "judge": {"conn_id": "no_judge"}},
            "SpecError: Airflow connection 'no_judge' (the judge's API key) does not exist",
        ),
    ],
    ids=[
        "misspelled",
        "no-alias",
        "floor-alone",
        "floor-over-ceiling",
        "budget-key",
        "not-json",
        "model",
        "conn",
        "judge-conn",
    ],
)
def test_a_bad_request_fails_the_first_task_and_creates_nothing(
    store: Path, params: dict[str, Any], says: str
) -> None:
    before = collections_of(store)

    assert fails(tasks.assess_compatibility, params).startswith(says)

    assert collections_of(store) == before == {SOURCE}


def test_a_bad_query_log_fails_the_first_task(store: Path, hashing: None) -> None:
    missing = PARAMS | {"query_log": "/nowhere/queries.jsonl"}
    assert fails(tasks.assess_compatibility, missing).startswith(
        "QueryLogError: query_log file '/nowhere/queries.jsonl' does not exist on this worker"
    )
    # a good log, but no old model to replay it on
    said = fails(tasks.assess_compatibility, PARAMS | {"query_log": ["json dumps"]})
    assert said.startswith("CompatibilityError: query_log replays each query on the old model")
    assert collections_of(store) == {SOURCE}


def test_an_unknown_alias_fails_naming_what_exists(store: Path, hashing: None) -> None:
    said = fails(tasks.assess_compatibility, PARAMS | {"alias": "dcos"})

    assert said == (
        "CompatibilityError: Alias 'dcos' does not exist. Existing aliases: docs -> docs_v1. "
        "Existing collections: docs_v1."
    )
    assert collections_of(store) == {SOURCE}


def test_a_dry_run_plans_then_every_later_task_stands_aside(
    store: Path, hashing: None, ti: FakeTi
) -> None:
    plan = tasks.assess_compatibility(PARAMS | {"dry_run": True})

    assert plan["spec"]["dry_run"] and plan["alias"] == ALIAS
    assert plan["source"]["collection"] == SOURCE
    assert collections_of(store) == {SOURCE}  # a dry run writes nothing
    assert tasks.choose_path(plan) is None
    assert skips(tasks.finish_migration, plan).startswith("Nothing was migrated (a dry run")


# -- choose_path ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        (Strategy.QUANTIZATION_ONLY, ["quantization_report"]),
        (Strategy.MATRYOSHKA_TRUNCATION, ["create_collection"]),
        (Strategy.LINEAR_MAP, ["fit_linear_map", "create_collection"]),
        (Strategy.FULL_REEMBED, ["create_collection"]),
        (Strategy.IN_PLACE, ["create_collection"]),
    ],
)
def test_choose_path_branches_to_the_strategys_first_tasks(kind: Strategy, path: list[str]) -> None:
    assert set(path) <= {"quantization_report", "fit_linear_map", "create_collection"}
    assert tasks.choose_path(codec.encode_dict(plan_of(kind))) == path
    dry = codec.encode_dict(plan_of(kind, dry_run=True))
    assert tasks.choose_path(dry) is None


# -- finish_migration --------------------------------------------------------------------


def test_finish_skips_what_did_not_migrate(ti: FakeTi) -> None:
    assert skips(tasks.finish_migration, None).startswith("Nothing was migrated")
    quantized = codec.encode_dict(plan_of(Strategy.QUANTIZATION_ONLY))
    assert skips(tasks.finish_migration, quantized) == (
        "A quantization change: apply_quantization is the end."
    )


def test_finish_fails_a_run_that_does_not_hold_the_migration(store: Path, ti: FakeTi) -> None:
    plan = plan_of(Strategy.FULL_REEMBED)
    put(store, record_of(plan, MigrationStatus.READY))
    ti.xcoms[("approve_swap", ANSWER_KEY)] = "Reject"
    with opened(store) as (_client, state):
        claim(state, plan.migration_id, "run-other")

    said = fails(tasks.finish_migration, codec.encode_dict(plan))

    assert said == f"This run did not migrate: {DAG_ID}/run-other drives mig-1."
    with opened(store) as (_client, state):
        lease = Leases(state).get("run/mig-1")
        record = Migrations(state).require("mig-1")
    assert lease is not None and lease.owner == f"{DAG_ID}/run-other"  # still its
    assert record.status is MigrationStatus.READY  # this run's "Reject" is not recorded


def test_finish_fails_a_run_when_no_run_holds_the_migration(store: Path, ti: FakeTi) -> None:
    plan = plan_of(Strategy.FULL_REEMBED)
    put(store, record_of(plan, MigrationStatus.LOADING))

    assert fails(tasks.finish_migration, codec.encode_dict(plan)) == (
        "This run did not migrate: no run drives mig-1."
    )


def test_finish_records_a_rejection_and_frees_the_migration(store: Path, ti: FakeTi) -> None:
    plan = plan_of(Strategy.FULL_REEMBED)
    put(store, record_of(plan, MigrationStatus.READY))
    with opened(store) as (_client, state):
        claim(state, plan.migration_id, ti.run_id)
    ti.xcoms[("approve_swap", ANSWER_KEY)] = "Reject"

    done = tasks.finish_migration(codec.encode_dict(plan))

    assert done["outcome"].startswith("rejected: the alias stays")
    with opened(store) as (_client, state):
        assert Migrations(state).require("mig-1").status is MigrationStatus.REJECTED
        assert Leases(state).get("run/mig-1") is None  # the next run may start


# -- the lifecycle: retire -----------------------------------------------------------------


LIFECYCLE = {"qdrant_conn_id": "qdrant_default", "observation_days": 7}
ROLLBACK = LIFECYCLE | {"action": "rollback", "alias": ALIAS}


def retire_params(migration_id: str) -> dict[str, Any]:
    return LIFECYCLE | {"action": "retire", "migration_id": migration_id}


def loading_with_target(store: Path) -> Plan:
    """A full re-embed whose target exists and is being filled."""
    plan = plan_of(Strategy.FULL_REEMBED)
    put(store, record_of(plan, MigrationStatus.LOADING))
    with opened(store) as (client, _state):
        make_source(client, plan.target_collection, [])
    return plan


def test_retire_refuses_a_migration_another_run_drives(store: Path, ti: FakeTi) -> None:
    plan = loading_with_target(store)
    with opened(store) as (_client, state):
        claim(state, plan.migration_id, "run-2")
    ti.run_states[f"{DAG_ID}/run-2"] = "running"
    ti.dag_id, ti.run_id = LIFECYCLE_DAG_ID, "manual__retire"

    said = fails(tasks.retire, retire_params("mig-1"))

    assert said == (
        f"LifecycleError: mig-1 is being run by {DAG_ID}/run-2; let it finish (approve or "
        "reject) before you retire it."
    )
    assert plan.target_collection in collections_of(store)
    with opened(store) as (_client, state):
        assert Migrations(state).require("mig-1").status is MigrationStatus.LOADING
        assert Leases(state).get("writer/mig-1") is None  # the writer lease is let go


def test_retire_deletes_the_target_of_a_migration_whose_run_is_over(
    store: Path, ti: FakeTi
) -> None:
    plan = loading_with_target(store)
    with opened(store) as (_client, state):
        claim(state, plan.migration_id, "run-2")
    ti.run_states[f"{DAG_ID}/run-2"] = "failed"  # nobody resumed it

    retired = tasks.retire(retire_params("mig-1"))

    assert retired == {"migration_id": "mig-1", "deleted": plan.target_collection}
    assert collections_of(store) == {SOURCE, STATE_COLLECTION}


def test_retire_refuses_an_unknown_migration(store: Path, ti: FakeTi) -> None:
    assert fails(tasks.retire, retire_params("mig-nope")) == (
        "LifecycleError: No migration 'mig-nope' is recorded."
    )


def test_retire_refuses_a_quantization_change(store: Path, ti: FakeTi) -> None:
    put(store, record_of(plan_of(Strategy.QUANTIZATION_ONLY), MigrationStatus.QUANTIZED))

    said = fails(tasks.retire, retire_params("mig-1"))

    assert said.startswith(
        "LifecycleError: mig-1 changed the quantization of 'docs_v1' in place; it made no "
        "collection and moved no alias, so there is nothing to retire."
    )
    assert SOURCE in collections_of(store)


# -- the lifecycle: rollback ---------------------------------------------------------------


def swapped_without_the_old_model(store: Path) -> Plan:
    """A swap whose params named no old model, from a source that records none."""
    plan = plan_of(Strategy.FULL_REEMBED)
    put(store, record_of(plan, MigrationStatus.SWAPPED, swapped_at="2026-11-30T12:00:00+00:00"))
    with opened(store) as (client, _state):
        make_source(client, plan.target_collection, [])
        aliases.move_alias(client, ALIAS, expected=SOURCE, new=plan.target_collection)
    return plan


def test_a_rollback_that_would_lose_writes_is_refused(
    store: Path, ti: FakeTi, hashing: None
) -> None:
    plan = swapped_without_the_old_model(store)

    said = fails(tasks.rollback, ROLLBACK)

    assert said.startswith(
        "LifecycleError: The model that made 'docs_v1''s vectors is unknown, so what was "
        f"written to {plan.target_collection!r} since the swap cannot be copied back"
    )
    assert "accept_lost_writes=true" in said
    with opened(store) as (client, state):
        assert aliases.current_target(client, ALIAS) == plan.target_collection
        assert Migrations(state).require("mig-1").status is MigrationStatus.SWAPPED


def test_a_rollback_without_a_swap_is_refused(store: Path, ti: FakeTi) -> None:
    said = fails(tasks.rollback, ROLLBACK)

    assert said == (
        "LifecycleError: No swapped migration moved alias 'docs' to its current collection "
        "'docs_v1'; there is nothing to roll back."
    )


def test_the_lifecycle_params_are_checked_first() -> None:
    assert fails(tasks.choose_action, {"action": "retire"}).startswith(
        "SpecError: retire needs the migration to retire"
    )
    assert fails(tasks.choose_action, {"action": "rollback", "alias": ""}).startswith(
        "SpecError: A rollback needs the alias to roll back"
    )
    assert tasks.choose_action({"action": "retire", "migration_id": "mig-1"}) == "retire"
