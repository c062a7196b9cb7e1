"""The UI app's routes, in process: who may do what, what the actions send to Airflow, the
page cache, and what the pages and the JSON show.

Airflow is stood in for at its two seams. Its auth dependencies (``GetUserDep`` and the
``requires_access_dag`` of each route) are replaced through ``app.dependency_overrides``
by a fake auth manager with two users, an admin and a viewer. Its REST API, which the app
calls in process with the caller's own token, is :class:`FakeAirflow`, handed to
``create_app`` as ``airflow_app``. The migrations are hand-made records in a real embedded
store, read through the real :class:`Stores` and the Airflow connection. The same routes
run on a real api-server and in a browser in tests/e2e/test_ui_plugin.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.core_api.security import GetUserDep, get_user
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.testclient import TestClient
from qdrant_client import QdrantClient

from include.qdrant_migration.airflow import ui_app
from include.qdrant_migration.airflow.approvals import APPROVAL_TASK, DAG_ID, LIFECYCLE_DAG_ID
from include.qdrant_migration.airflow.ui_app import ROUTES, STORE_TTL_S, Stores
from include.qdrant_migration.spec import Strategy
from include.qdrant_migration.state import MigrationStatus, QdrantStateStore
from include.qdrant_migration.ui import views
from tests.qdrant_migration.airflow.helpers import (
    ALIAS,
    SOURCE,
    claim,
    opened,
    plan_of,
    put,
    record_of,
)

ADMIN, VIEWER = "admin-token", "viewer-token"
READ = ("GET", DagAccessEntity.RUN, DAG_ID)
ANSWER = ("PUT", DagAccessEntity.HITL_DETAIL, DAG_ID)
TRIGGER = ("POST", DagAccessEntity.RUN, LIFECYCLE_DAG_ID)
ACTIONS = ("approve", "reject", "rollback", "retire")
#: Long ago: the approval has settled (ui_app waits approvals.SETTLE_S on a fresh one).
ASKED_AT = "2020-01-01T00:00:00+00:00"


@dataclass(frozen=True)
class FakeUser:
    name: str
    grants: frozenset[tuple[str, DagAccessEntity, str]]

    def get_id(self) -> str:
        return self.name

    def get_name(self) -> str:
        return self.name


USERS = {
    ADMIN: FakeUser("admin", frozenset({READ, ANSWER, TRIGGER})),
    VIEWER: FakeUser("viewer", frozenset({READ})),
}


class FakeAuthManager:
    """Allows a user exactly its grants (``ui_app.viewer`` asks it which buttons to enable)."""

    def is_authorized_dag(
        self, *, method: str, access_entity: DagAccessEntity, details: DagDetails, user: FakeUser
    ) -> bool:
        return (method, access_entity, details.id) in user.grants


async def fake_get_user(request: Request) -> FakeUser:
    """Airflow's ``get_user``: the bearer token, else the ``_token`` cookie; none is 401 and
    a token Airflow did not issue is 403, as ``resolve_user_from_token`` answers."""
    token = ui_app.token_of(request)
    if not token:
        raise HTTPException(401, "Not authenticated")
    if token not in USERS:
        raise HTTPException(403, "Invalid JWT token")
    return USERS[token]


def fake_requires_access(method: str, entity: DagAccessEntity, dag_id: str) -> Any:
    """``requires_access_dag(method, entity, param_dag_id=dag_id)``, asking the fake manager
    (the real one also asks Airflow's DB for the DAG's team)."""

    def inner(user: GetUserDep) -> None:
        details = DagDetails(id=dag_id)
        allowed = FakeAuthManager().is_authorized_dag(
            method=method, access_entity=entity, details=details, user=user
        )
        if not allowed:
            raise HTTPException(403, "Forbidden")

    return inner


@dataclass
class FakeAirflow:
    """Airflow's REST API as the app calls it: the migration DAG's runs, the pending
    approvals, a run's backfill tasks, answering (409 once answered, in Airflow's words)
    and triggering. Every call is recorded with the token it came with."""

    runs: dict[str, str] = field(default_factory=dict)
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    answers: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    triggered: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    #: The approvals list lags behind an answer (another user's, given just now).
    lagging: bool = False
    broken: bool = False

    def ask(self, run_id: str) -> None:
        """``run_id`` is running and parked at its approval."""
        self.runs[run_id] = "running"
        self.pending[run_id] = {
            "task_instance": {
                "dag_id": DAG_ID,
                "dag_run_id": run_id,
                "task_id": APPROVAL_TASK,
                "map_index": -1,
            },
            "options": ["Approve", "Reject"],
            "subject": "Swap?",
            "created_at": ASKED_AT,
            "response_received": False,
        }

    def answered_elsewhere(self, run_id: str) -> None:
        """Someone else answers ``run_id``'s approval after the page read the list."""
        self.answers[run_id] = ("colleague", ["Reject"])
        self.lagging = True

    @property
    def writes(self) -> list[tuple[str, str, str]]:
        return [c for c in self.calls if c[0] != "GET"]

    def app(self) -> FastAPI:
        app = FastAPI(dependencies=[Depends(self._record)])
        runs_path = "/api/v2/dags/{dag_id}/dagRuns"
        app.add_api_route(runs_path, self._list_runs, methods=["GET"])
        app.add_api_route(runs_path, self._trigger, methods=["POST"])
        app.add_api_route(f"{runs_path}/~/hitlDetails", self._list_pending, methods=["GET"])
        app.add_api_route(f"{runs_path}/{{run_id}}/taskInstances", self._tasks, methods=["GET"])
        app.add_api_route(
            f"{runs_path}/{{run_id}}/taskInstances/{{task_id}}/{{map_index}}/hitlDetails",
            self._answer,
            methods=["PATCH"],
        )
        return app

    def _record(self, request: Request) -> None:
        self.calls.append(
            (request.method, request.url.path, request.headers.get("authorization", ""))
        )
        if self.broken:
            raise HTTPException(503, "The metadata DB is down")

    def _list_runs(self, dag_id: str) -> dict[str, Any]:
        assert dag_id == DAG_ID
        found = [{"dag_run_id": r, "state": s} for r, s in self.runs.items()]
        return {"dag_runs": found, "total_entries": len(found)}

    def _list_pending(self, dag_id: str, response_received: bool) -> dict[str, Any]:
        assert (dag_id, response_received) == (DAG_ID, False)
        found = [d for r, d in self.pending.items() if self.lagging or r not in self.answers]
        return {"hitl_details": found, "total_entries": len(found)}

    def _tasks(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        ti = {"map_index": 0, "state": "success", "try_number": 2, "hostname": "worker-7"}
        return {"task_instances": [ti] if task_id == "backfill_batch" else []}

    def _answer(
        self, request: Request, run_id: str, task_id: str, map_index: int, body: dict[str, Any]
    ) -> dict[str, Any]:
        assert (task_id, map_index) == (APPROVAL_TASK, -1)
        if run_id in self.answers:
            raise HTTPException(
                409,
                "Human-in-the-loop detail has already been updated for Task Instance with id "
                "0199 and is not allowed to write again.",
            )
        user = USERS[ui_app.token_of(request)]
        self.answers[run_id] = (user.name, body["chosen_options"])
        # Airflow's HITLDetailResponse
        return {
            "responded_by": {"id": user.get_id(), "name": user.name},
            "responded_at": "2026-12-01T12:00:00Z",
            "chosen_options": body["chosen_options"],
            "params_input": body.get("params_input", {}),
        }

    def _trigger(self, dag_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self.triggered.append((dag_id, body["conf"]))
        return {"dag_run_id": f"manual__{len(self.triggered)}", "dag_id": dag_id, "state": "queued"}


class CountingStores(Stores):
    """The real stores, counting how often the state store is opened for a read."""

    def __init__(self) -> None:
        super().__init__(["qdrant_default"])
        self.reads = 0

    def open(self, conn_id: str) -> Any:
        self.reads += 1
        return super().open(conn_id)


class Clock:
    """``ui_app``'s ``time``: the cache's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def airflow() -> FakeAirflow:
    return FakeAirflow()


@pytest.fixture
def stores() -> CountingStores:
    return CountingStores()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    ticking = Clock()
    monkeypatch.setattr(ui_app, "time", ticking)
    return ticking


@pytest.fixture
def http(
    store: Path,
    airflow: FakeAirflow,
    stores: CountingStores,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[TestClient]:
    monkeypatch.setattr(ui_app, "get_auth_manager", FakeAuthManager)
    fake = airflow.app()
    app = ui_app.create_app(stores, airflow_app=lambda: fake)
    app.dependency_overrides.update(
        {
            get_user: fake_get_user,
            ui_app.can_read.dependency: fake_requires_access(*READ),
            ui_app.can_answer.dependency: fake_requires_access(*ANSWER),
            ui_app.can_trigger.dependency: fake_requires_access(*TRIGGER),
        }
    )
    with TestClient(app) as client:
        yield client


def as_user(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def awaiting_approval(store: Path, airflow: FakeAirflow, migration_id: str = "mig-ready") -> None:
    """A full re-embed, ready, whose run ``run-1`` waits at its approval."""
    put(store, record_of(plan_of(Strategy.FULL_REEMBED, migration_id), MigrationStatus.READY))
    with opened(store) as (_client, state):
        claim(state, migration_id, "run-1")
    airflow.ask("run-1")


def swapped(store: Path, migration_id: str = "mig-swapped") -> None:
    plan = plan_of(Strategy.FULL_REEMBED, migration_id)
    put(store, record_of(plan, MigrationStatus.SWAPPED))


# -- who may do what -------------------------------------------------------------------


def test_every_route_refuses_a_caller_airflow_does_not_know(
    http: TestClient, airflow: FakeAirflow, stores: CountingStores
) -> None:
    for method, path, _endpoint, _allowed in ROUTES:
        url = path.replace("{migration_id}", "mig-1")
        anonymous = http.request(method, url, json={"confirm": True})
        assert anonymous.status_code == 401, (method, url, anonymous.text)
        forged = http.request(method, url, json={"confirm": True}, headers=as_user("forged"))
        assert forged.status_code == 403, (method, url, forged.text)
    assert airflow.calls == [] and stores.reads == 0  # refused before anything is read


def test_a_viewer_reads_everything_but_may_not_act(
    http: TestClient, store: Path, airflow: FakeAirflow
) -> None:
    awaiting_approval(store, airflow)
    swapped(store)
    viewer = as_user(VIEWER)
    for path in ("/", "/api/migrations", "/migrations/mig-ready", "/api/migrations/mig-swapped"):
        assert http.get(path, headers=viewer).status_code == 200, path
    for migration_id in ("mig-ready", "mig-swapped"):
        for action in ACTIONS:
            refused = http.post(
                f"/api/migrations/{migration_id}/{action}", json={"confirm": True}, headers=viewer
            )
            assert refused.status_code == 403, (migration_id, action, refused.text)
    assert airflow.writes == [] and airflow.triggered == [] and airflow.answers == {}
    # The page offers the actions, disabled for the viewer; the admin may use them.
    page = http.get("/migrations/mig-swapped", headers=viewer).text
    assert page.count('disabled title="viewer may not do this"') == 2  # rollback, retire
    admin_page = http.get("/migrations/mig-swapped", headers=as_user(ADMIN)).text
    assert 'data-action="rollback"' in admin_page and "may not do this" not in admin_page


def test_the_cookie_of_airflows_ui_is_a_caller_too(http: TestClient, store: Path) -> None:
    swapped(store)
    http.cookies.set("_token", VIEWER)
    assert http.get("/api/migrations").status_code == 200
    refused = http.post("/api/migrations/mig-swapped/rollback", json={"confirm": True})
    assert refused.status_code == 403


def test_an_action_is_json_only(http: TestClient, store: Path, airflow: FakeAirflow) -> None:
    """A form on another site cannot post JSON: an action sent as a form is refused."""
    awaiting_approval(store, airflow)
    swapped(store)
    on = {"approve": "mig-ready", "reject": "mig-ready", "rollback": "mig-swapped"}
    for action, migration_id in (on | {"retire": "mig-swapped"}).items():
        form = http.post(
            f"/api/migrations/{migration_id}/{action}",
            data={"confirm": "1"},
            headers=as_user(ADMIN),
        )
        assert form.status_code == 422, (action, form.text)
    assert airflow.writes == []


# -- approvals -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "option", "after"),
    [
        ("approve", "Approve", "the alias moves after a final catch-up"),
        ("reject", "Reject", "the alias stays"),
    ],
)
def test_an_answer_is_airflows_hitl_patch_as_the_caller(
    http: TestClient,
    store: Path,
    airflow: FakeAirflow,
    action: str,
    option: str,
    after: str,
) -> None:
    awaiting_approval(store, airflow)

    answered = http.post(
        f"/api/migrations/mig-ready/{action}", json={"confirm": True}, headers=as_user(ADMIN)
    )

    assert answered.status_code == 200, answered.text
    assert answered.json() == {
        "message": f"{option} recorded for run run-1 by admin; {after}.",
        "run_id": "run-1",
        "chosen_options": [option],
    }
    assert airflow.answers == {"run-1": ("admin", [option])}
    (patch,) = airflow.writes
    assert patch == (
        "PATCH",
        f"/api/v2/dags/{DAG_ID}/dagRuns/run-1/taskInstances/{APPROVAL_TASK}/-1/hitlDetails",
        f"Bearer {ADMIN}",  # Airflow authorizes and audits the answer as the caller
    )
    assert {bearer for _, _, bearer in airflow.calls} == {f"Bearer {ADMIN}"}


def test_an_approval_answered_already_is_a_409_that_says_so(
    http: TestClient, store: Path, airflow: FakeAirflow
) -> None:
    awaiting_approval(store, airflow)
    admin = as_user(ADMIN)
    assert http.post("/api/migrations/mig-ready/approve", json={}, headers=admin).is_success

    again = http.post("/api/migrations/mig-ready/reject", json={}, headers=admin)

    assert again.status_code == 409
    assert again.json()["detail"] == "mig-ready has no pending approval (ready)."
    assert airflow.answers == {"run-1": ("admin", ["Approve"])}  # the first answer stands


def test_an_approval_answered_by_someone_else_meanwhile_is_airflows_409(
    http: TestClient, store: Path, airflow: FakeAirflow
) -> None:
    awaiting_approval(store, airflow)
    airflow.answered_elsewhere("run-1")  # after the list the page reads was made

    late = http.post("/api/migrations/mig-ready/approve", json={}, headers=as_user(ADMIN))

    assert late.status_code == 409
    detail = late.json()["detail"]
    assert detail.startswith("Airflow refused: Human-in-the-loop detail has already been updated")
    assert airflow.answers == {"run-1": ("colleague", ["Reject"])}


# -- the lifecycle -----------------------------------------------------------------------


def test_rollback_and_retire_trigger_the_lifecycle_dag(
    http: TestClient, store: Path, airflow: FakeAirflow
) -> None:
    swapped(store)
    admin = as_user(ADMIN)

    rolled = http.post("/api/migrations/mig-swapped/rollback", json={}, headers=admin)
    retired = http.post("/api/migrations/mig-swapped/retire", json={}, headers=admin)

    assert rolled.status_code == retired.status_code == 200, (rolled.text, retired.text)
    assert rolled.json() == {
        "message": f"Rollback of mig-swapped: {LIFECYCLE_DAG_ID} run manual__1 triggered.",
        "run_id": "manual__1",
        "run_url": f"/dags/{LIFECYCLE_DAG_ID}/runs/manual__1",
    }
    assert airflow.triggered == [
        (
            LIFECYCLE_DAG_ID,
            {"action": "rollback", "qdrant_conn_id": "qdrant_default"} | {"alias": ALIAS},
        ),
        (
            LIFECYCLE_DAG_ID,
            {"action": "retire", "qdrant_conn_id": "qdrant_default", "migration_id": "mig-swapped"},
        ),
    ]


@pytest.mark.parametrize(
    ("kind", "status", "run_state", "action"),
    [
        # A quantization change made no collection and moved no alias.
        (Strategy.QUANTIZATION_ONLY, MigrationStatus.QUANTIZED, None, "rollback"),
        (Strategy.QUANTIZATION_ONLY, MigrationStatus.QUANTIZED, None, "retire"),
        # Its run drives it: nothing to roll back, and retiring waits for the run.
        (Strategy.FULL_REEMBED, MigrationStatus.LOADING, "running", "rollback"),
        (Strategy.FULL_REEMBED, MigrationStatus.LOADING, "running", "retire"),
        (Strategy.IN_PLACE, MigrationStatus.READY, "queued", "retire"),
        # Rolled back already; retired: nothing is left to do.
        (Strategy.LINEAR_MAP, MigrationStatus.ROLLED_BACK, None, "rollback"),
        (Strategy.FULL_REEMBED, MigrationStatus.RETIRED, None, "retire"),
    ],
)
def test_a_lifecycle_action_that_does_not_apply_is_refused_and_triggers_nothing(
    http: TestClient,
    store: Path,
    airflow: FakeAirflow,
    kind: Strategy,
    status: MigrationStatus,
    run_state: str | None,
    action: str,
) -> None:
    put(store, record_of(plan_of(kind, "mig-x"), status))
    if run_state:
        with opened(store) as (_client, state):
            claim(state, "mig-x", "run-2")
        airflow.runs["run-2"] = run_state

    refused = http.post(f"/api/migrations/mig-x/{action}", json={}, headers=as_user(ADMIN))

    assert refused.status_code == 409, refused.text
    reason = refused.json()["detail"]
    # The lifecycle DAG's own reason (the strategy says why), not a generic one.
    assert reason.startswith(f"mig-x is {status.value}: mig-x "), reason
    assert action in reason, reason
    assert airflow.triggered == [] and airflow.writes == []


def test_an_action_on_an_unknown_migration_is_404(
    http: TestClient, store: Path, airflow: FakeAirflow
) -> None:
    for action in ACTIONS:
        missing = http.post(f"/api/migrations/mig-nope/{action}", json={}, headers=as_user(ADMIN))
        assert missing.status_code == 404, missing.text
        assert missing.json()["detail"] == "No migration 'mig-nope' is recorded."
    assert airflow.writes == []


# -- the cache ---------------------------------------------------------------------------


def test_viewers_within_the_ttl_cost_the_store_one_read(
    http: TestClient, store: Path, stores: CountingStores, clock: Clock
) -> None:
    swapped(store)
    assert http.get("/api/migrations", headers=as_user(ADMIN)).status_code == 200
    clock.now += STORE_TTL_S * 0.9
    assert http.get("/api/migrations", headers=as_user(VIEWER)).status_code == 200
    assert http.get("/", headers=as_user(VIEWER)).status_code == 200  # the same read
    assert stores.reads == 1

    clock.now += STORE_TTL_S * 0.2  # the first answer is now older than the TTL
    assert http.get("/api/migrations", headers=as_user(VIEWER)).status_code == 200
    assert stores.reads == 2
    # A migration's page is another question: its own read, then cached too.
    http.get("/api/migrations/mig-swapped", headers=as_user(ADMIN))
    http.get("/migrations/mig-swapped", headers=as_user(VIEWER))
    assert stores.reads == 3


def test_an_action_drops_the_cache(
    http: TestClient, store: Path, airflow: FakeAirflow, stores: CountingStores
) -> None:
    swapped(store)
    admin = as_user(ADMIN)
    http.get("/api/migrations/mig-swapped", headers=admin)
    reads = stores.reads
    assert http.post("/api/migrations/mig-swapped/retire", json={}, headers=admin).is_success
    http.get("/api/migrations/mig-swapped", headers=admin)
    # The action decided on the cached page (the lifecycle DAG checks again), then dropped
    # the cache: the next view reads the store.
    assert stores.reads == reads + 1


# -- what the pages show ---------------------------------------------------------------


def test_the_pages_render_and_the_json_is_the_view_data(
    http: TestClient, store: Path, airflow: FakeAirflow
) -> None:
    awaiting_approval(store, airflow)
    swapped(store)
    admin = as_user(ADMIN)

    listed = http.get("/", headers=admin)
    page = http.get("/migrations/mig-ready", headers=admin)
    rows = http.get("/api/migrations", headers=admin).json()
    one = http.get("/api/migrations/mig-ready", headers=admin).json()

    assert listed.status_code == page.status_code == 200
    assert listed.headers["content-type"].startswith("text/html")
    assert 'data-migration="mig-ready"' in listed.text
    assert 'data-migration="mig-swapped"' in listed.text
    assert "mig-ready" in page.text and 'data-action="approve"' in page.text
    facts = views.AirflowFacts(
        DAG_ID,
        runs={"run-1": views.RunFacts("run-1", "running")},
        approvals={
            "run-1": views.PendingApproval(
                "run-1", APPROVAL_TASK, -1, ("Approve", "Reject"), ASKED_AT
            )
        },
    )
    with opened(store) as (client, state):
        expected_rows = views.migration_rows(state, facts)
        expected_page = _page(state, client, "mig-ready", facts)
    assert rows == {"migrations": views.as_dict(expected_rows), "problem": None}
    statuses = {r["migration_id"]: r["status"] for r in rows["migrations"]}
    assert statuses == {"mig-ready": views.AWAITING_APPROVAL, "mig-swapped": "swapped"}
    # The page adds its run's backfill tasks (tries and workers), read from Airflow.
    tasks = {0: views.TaskFacts(0, "success", 2, "worker-7")}
    assert one == views.as_dict(views.with_tasks(expected_page, tasks)) | {"problem": None}
    assert one["approval"]["run_id"] == "run-1"
    assert [a["name"] for a in one["actions"]] == ["approve", "reject"]


def _page(
    state: QdrantStateStore, client: QdrantClient, migration_id: str, facts: views.AirflowFacts
) -> views.MigrationPage:
    page = views.migration_page(state, client, migration_id, facts)
    assert page is not None
    return page


def test_when_airflows_api_fails_the_store_is_still_shown(
    http: TestClient, store: Path, airflow: FakeAirflow
) -> None:
    swapped(store)
    airflow.broken = True

    rows = http.get("/api/migrations", headers=as_user(ADMIN))
    page = http.get("/migrations/mig-swapped", headers=as_user(ADMIN))

    assert rows.status_code == page.status_code == 200
    problem = rows.json()["problem"]
    assert problem == "Airflow's API could not be read: Airflow refused: The metadata DB is down"
    assert [r["migration_id"] for r in rows.json()["migrations"]] == ["mig-swapped"]
    assert "The metadata DB is down" in page.text and SOURCE in page.text
