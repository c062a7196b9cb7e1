"""The migration through real Airflow services: CLI trigger, scheduler, REST approval.

Unlike ``tests/dags`` (``dag.test()`` in-process), these runs go through the scheduler, the
LocalExecutor's worker processes and the api-server's execution API, as in production.
Each test leaves no task running, so even an embedded store can be opened between runs.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest

from scripts.approvals_client import ApprovalClient
from tests.e2e.conftest import (
    ALIAS,
    DAG_ID,
    E2E_POINTS,
    SOURCE_COLLECTION,
    AirflowServices,
)

pytestmark = pytest.mark.e2e

#: 200 points at 100 per partition: two mapped backfill tasks, small sub-batches.
CONF: dict[str, Any] = {"alias": ALIAS, "points_per_partition": 100, "batch_size": 32}


def trigger(services: AirflowServices, run_id: str, conf: dict[str, Any]) -> Any:
    return services.airflow(
        "dags", "trigger", DAG_ID, "--run-id", run_id, "--conf", json.dumps(conf)
    )


def new_run_id(kind: str) -> str:
    # ':' and '+' as in Airflow's own run ids: the clients must URL-encode them.
    return f"e2e:{kind}+{secrets.token_hex(3)}"


def test_approved_migration_moves_alias(airflow_services: AirflowServices) -> None:
    """Two runs of the same migration, triggered together: one does the work and asks for
    the approval; the other stops at once, naming it; every text is embedded once."""
    services = airflow_services
    run_ids = [new_run_id("approve"), new_run_id("twin")]
    for started in run_ids:
        triggered = trigger(services, started, CONF)
        assert triggered.returncode == 0, triggered.stdout + triggered.stderr

    detail = services.wait_for_any_approval(run_ids)
    run_id = detail.get("task_instance", detail)["dag_run_id"]
    (twin,) = [other for other in run_ids if other != run_id]
    twin_run = services.wait_for_run(twin)
    assert twin_run["state"] == "failed", services.task_states(twin)
    refused = services.task_log(twin, "create_collection") + services.task_log(
        twin, "fit_linear_map"
    )
    assert f"is being run by {DAG_ID}/{run_id}" in refused, refused[-3000:]
    twin_states = services.task_states(twin)
    ran = [k for k, s in twin_states.items() if k.startswith("backfill") and s != "upstream_failed"]
    assert not ran, twin_states  # the twin embedded nothing
    assert services.pending_approvals() == [run_id]  # one approval shown, not two
    assert "recall@10" in detail["body"], detail["body"]  # the approver sees the evidence
    listing = services.approvals_script("list")
    assert listing.returncode == 0, listing.stderr
    assert run_id in listing.stdout and "recall@10" in listing.stdout, listing.stdout
    assert services.password not in listing.stdout + listing.stderr

    api = ApprovalClient.from_server(services.url, "admin", services.password)
    try:
        answered = api.answer(detail, "Approve")
    finally:
        api.close()
    assert answered["chosen_options"] == ["Approve"]

    run = services.wait_for_run(run_id)
    states = services.task_states(run_id)
    assert run["state"] == "success", (states, services.diagnostics(run_id))
    assert states["swap_alias"] == "success"
    assert sorted(k for k in states if k.startswith("backfill_batch[")) == [
        "backfill_batch[0]",
        "backfill_batch[1]",
    ]
    embedded = sum(
        services.xcom(run_id, "backfill_batch", map_index)["embedded"] for map_index in (0, 1)
    )
    assert embedded == E2E_POINTS  # each text once, by the run that holds the migration
    assert states["finish_migration"] == "success"
    # A clean run raises no alarm: no error-level line (an XCom read past the mapped
    # results, a model's progress bar on stderr) in the logs of the tasks that did the work.
    for task_id in ("assess_compatibility", "backfill_batch", "catch_up", "build_report"):
        alarms = [
            line
            for line in services.task_log(run_id, task_id).splitlines()
            if '"level":"error"' in line.replace(" ", "")
        ]
        assert alarms == [], (task_id, alarms[:5])
    # No task runs now: even an embedded store's lock is free for the test.
    target = services.alias_target()
    assert target == f"{SOURCE_COLLECTION}__multilingual-e5-small__v1"
    assert services.collection_points(target) == E2E_POINTS
    assert services.collection_points(SOURCE_COLLECTION) == E2E_POINTS  # kept for rollback


def test_rejected_migration_leaves_alias(airflow_services: AirflowServices) -> None:
    services = airflow_services
    before = services.alias_target()
    assert before is not None
    # After the approved test the alias serves multilingual-e5-small: go back to MiniLM.
    model = "multilingual-e5-small" if before == SOURCE_COLLECTION else "all-MiniLM-L6-v2"
    run_id = new_run_id("reject")

    triggered = trigger(services, run_id, {**CONF, "model": model})
    assert triggered.returncode == 0, triggered.stdout + triggered.stderr
    services.wait_for_approval(run_id)

    rejected = services.approvals_script("reject", run_id)
    assert rejected.returncode == 0, rejected.stdout + rejected.stderr
    assert "Reject" in rejected.stdout
    assert services.password not in rejected.stdout + rejected.stderr

    run = services.wait_for_run(run_id)
    states = services.task_states(run_id)
    assert states["swap_alias"] == "skipped", (states, services.diagnostics(run_id))
    assert run["state"] == "success", states
    assert services.alias_target() == before
    # Nothing left to answer: a second answer is refused with a clear message.
    again = services.approvals_script("approve", run_id)
    assert again.returncode == 1
    assert "No pending approval" in again.stderr


def test_bad_conf_is_refused_by_the_cli(airflow_services: AirflowServices) -> None:
    services = airflow_services
    runs_before = services.dag_run_ids()
    run_id = new_run_id("bad-conf")

    refused = trigger(services, run_id, {"alias": ALIAS, "batch_size": "300"})

    output = refused.stdout + refused.stderr
    assert refused.returncode != 0, output
    # The param's own message, from the params' JSON schema.
    assert "Invalid input for param batch_size: '300' is not of type 'integer'" in output, output
    assert services.dag_run(run_id) is None
    assert services.dag_run_ids() == runs_before
