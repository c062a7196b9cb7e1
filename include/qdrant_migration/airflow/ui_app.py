"""The "Qdrant migrations" UI: a FastAPI app the plugin mounts in Airflow's api-server.

Every route requires what Airflow's own API requires for the same thing, through Airflow's
own security dependencies (a JWT as ``Authorization: Bearer`` or the UI's ``_token``
cookie): reading pages and JSON needs read access to the migration DAG's runs; answering an
approval needs ``PUT`` on its human-in-the-loop details; rollback and retire need to
trigger ``qdrant_migration_lifecycle``. What the pages show of Airflow (runs, pending
approvals, task tries) and every action go through Airflow's public REST API, in process,
with the caller's own token: Airflow authorizes and audits them as that user. Actions take
a JSON body, which a form on another site cannot send (no cross-site request forgery).

The migrations come from the state store of each Qdrant connection in
``QMM_UI_QDRANT_CONN_IDS`` (default ``qdrant_default``), read at most every
:data:`STORE_TTL_S` seconds whoever looks: a refresh costs the store a handful of
indexed reads, never a scan of points.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar, cast
from urllib.parse import quote

import httpx
from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import Body, Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse
from qdrant_client import QdrantClient
from starlette.types import ASGIApp

from include.qdrant_migration.airflow.approvals import (
    APPROVE,
    DAG_ID,
    LIFECYCLE_DAG_ID,
    REJECT,
    answer_body,
    answer_path,
    pending_path,
    run_of,
)
from include.qdrant_migration.airflow.hooks import MigrationQdrantHook
from include.qdrant_migration.airflow.workarounds import seconds_to_settle
from include.qdrant_migration.qdrant import connect, is_local
from include.qdrant_migration.settings import settings
from include.qdrant_migration.state import QdrantStateStore
from include.qdrant_migration.ui import pages, views
from include.qdrant_migration.ui.views import (
    AirflowFacts,
    PendingApproval,
    RunFacts,
    TaskFacts,
)

log = logging.getLogger(__name__)

URL_PREFIX = "/qdrant-migrations"
#: Seconds the store's answer is reused, whoever asks.
STORE_TTL_S = 3.0
BACKFILL_TASK = "backfill_batch"
T = TypeVar("T")

can_read = Depends(requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=DAG_ID))
can_answer = Depends(requires_access_dag("PUT", DagAccessEntity.HITL_DETAIL, param_dag_id=DAG_ID))
can_trigger = Depends(
    requires_access_dag("POST", DagAccessEntity.RUN, param_dag_id=LIFECYCLE_DAG_ID)
)
#: An action's body: JSON only (see the module docstring), e.g. ``{"confirm": true}``.
ActionBody = Annotated[dict[str, Any], Body(media_type="application/json")]


def conn_ids() -> list[str]:
    return list(settings().ui_qdrant_conn_ids)


class Stores:
    """The state stores the UI reads, each through one client kept open (a server) or opened
    per read (an embedded store: its lock is held only that long), with a short cache."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self._clients: dict[str, QdrantClient] = {}
        self._cache: dict[tuple[str, ...], tuple[float, Any]] = {}
        self._lock = threading.Lock()

    @contextmanager
    def open(self, conn_id: str) -> Iterator[tuple[QdrantClient, QdrantStateStore]]:
        client = self._clients.get(conn_id)
        if client is not None:
            yield client, QdrantStateStore(client)
            return
        hook = MigrationQdrantHook(conn_id)
        client = connect(hook.settings)
        if is_local(client):
            try:
                yield client, QdrantStateStore(client)
            finally:
                client.close()
            return
        store = QdrantStateStore(client)
        store.ensure_indexes()
        self._clients[conn_id] = client
        yield client, store

    def cached(self, key: tuple[str, ...], read: Callable[[], T]) -> T:
        """``read()``, or its answer to the same question less than STORE_TTL_S ago (one
        read at a time: viewers refreshing together cost the store one read)."""
        with self._lock:
            now = time.monotonic()
            hit = self._cache.get(key)
            if hit is not None and now - hit[0] < STORE_TTL_S:
                return hit[1]  # type: ignore[no-any-return]
            self._cache = {k: v for k, v in self._cache.items() if now - v[0] < STORE_TTL_S}
            value = read()
            self._cache[key] = (time.monotonic(), value)
            return value

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()


class AirflowApi:
    """Airflow's public REST API in this process, as the caller (their own token)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://airflow.internal",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.http.get(path, params=params)
        _raise_for(response)
        return response.json()

    async def tasks(self, run_id: str) -> dict[int, TaskFacts]:
        """The backfill task instances of ``run_id``, by map index."""
        found = await self.get(
            f"/api/v2/dags/{DAG_ID}/dagRuns/{_q(run_id)}/taskInstances",
            task_id=BACKFILL_TASK,
            limit=1000,
        )
        return {
            int(ti["map_index"]): TaskFacts(
                map_index=int(ti["map_index"]),
                state=ti.get("state"),
                try_number=int(ti.get("try_number") or 0),
                hostname=ti.get("hostname"),
            )
            for ti in found.get("task_instances", [])
        }

    async def facts(self) -> AirflowFacts:
        """The migration DAG's runs and pending approvals."""
        runs = await self.get(f"/api/v2/dags/{DAG_ID}/dagRuns", limit=100, order_by="-run_after")
        pending = await self.get(pending_path(), response_received="false")
        return AirflowFacts(
            dag_id=DAG_ID,
            runs={
                r["dag_run_id"]: RunFacts(
                    r["dag_run_id"], r.get("state"), r.get("start_date"), r.get("end_date")
                )
                for r in runs.get("dag_runs", [])
            },
            approvals={
                run_of(d): PendingApproval(
                    run_id=run_of(d),
                    task_id=d.get("task_instance", d)["task_id"],
                    map_index=int(d.get("task_instance", d).get("map_index", -1)),
                    options=tuple(d.get("options") or ()),
                    created_at=d.get("created_at"),
                )
                for d in pending.get("hitl_details", [])
            },
        )

    async def answer(self, run_id: str, option: str) -> dict[str, Any]:
        pending = await self.get(pending_path(), response_received="false")
        detail = next((d for d in pending.get("hitl_details", []) if run_of(d) == run_id), None)
        if detail is None:
            raise HTTPException(409, f"Run {run_id} has no pending approval (answered already?).")
        await asyncio.sleep(seconds_to_settle(detail))
        response = await self.http.patch(answer_path(detail), json=answer_body(option))
        _raise_for(response)
        return dict(response.json())

    async def trigger(self, dag_id: str, conf: dict[str, Any]) -> dict[str, Any]:
        response = await self.http.post(
            f"/api/v2/dags/{_q(dag_id)}/dagRuns", json={"logical_date": None, "conf": conf}
        )
        _raise_for(response)
        return dict(response.json())

    async def close(self) -> None:
        await self.http.aclose()


def _q(value: str) -> str:
    return quote(value, safe="")


def _raise_for(response: httpx.Response) -> None:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise HTTPException(response.status_code, f"Airflow refused: {detail}")


def token_of(request: Request) -> str:
    """The caller's JWT, as Airflow's ``get_user`` read it (header first, then cookie)."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:]
    return request.cookies.get(COOKIE_NAME_JWT_TOKEN, "")


def _airflow_app() -> ASGIApp:
    # The api-server's own app (imported late: this module is loaded while it is built).
    from airflow.api_fastapi.main import app

    return cast(ASGIApp, app)


def links(request: Request) -> pages.Links:
    base = request.scope.get("root_path", "").rstrip("/")
    airflow = base[: -len(URL_PREFIX)] if base.endswith(URL_PREFIX) else ""
    return pages.Links(base=base, airflow=airflow, dag_id=DAG_ID)


def viewer(user: Any) -> pages.Viewer:
    """Who looks, and whether Airflow lets them answer approvals and trigger the lifecycle."""
    manager = get_auth_manager()

    def allowed(method: Any, entity: DagAccessEntity, dag_id: str) -> bool:
        details = DagDetails(id=dag_id)
        return bool(
            manager.is_authorized_dag(
                method=method, access_entity=entity, details=details, user=user
            )
        )

    return pages.Viewer(
        name=user.get_name(),
        can_answer=allowed("PUT", DagAccessEntity.HITL_DETAIL, DAG_ID),
        can_trigger=allowed("POST", DagAccessEntity.RUN, LIFECYCLE_DAG_ID),
    )


class MigrationsUi:
    """What the routes do: read the stores and Airflow, answer, trigger."""

    def __init__(self, stores: Stores, airflow_app: Callable[[], ASGIApp]) -> None:
        self.stores = stores
        self.airflow_app = airflow_app

    def api(self, request: Request) -> AirflowApi:
        return AirflowApi(self.airflow_app(), token_of(request))

    async def facts(self, request: Request) -> AirflowFacts:
        api = self.api(request)
        try:
            return await api.facts()
        except (HTTPException, httpx.HTTPError) as error:
            detail = getattr(error, "detail", error)
            return AirflowFacts(dag_id=DAG_ID, problem=f"Airflow's API could not be read: {detail}")
        finally:
            await api.close()

    def _each_store(self, read: Callable[[str], T]) -> Iterator[T | str]:
        """``read(conn_id)`` for every store, or what failed (the page shows the rest)."""
        for conn_id in self.stores.names:
            try:
                yield read(conn_id)
            except Exception as error:
                log.warning("Could not read the state store of %s: %s", conn_id, error)
                yield f"The state store of connection {conn_id!r} could not be read: {error}"

    def read_rows(self, found: AirflowFacts) -> tuple[list[views.MigrationRow], str | None]:
        def rows_of(conn_id: str) -> list[views.MigrationRow]:
            def read() -> list[views.MigrationRow]:
                with self.stores.open(conn_id) as (_client, store):
                    return views.migration_rows(store, found)

            return self.stores.cached(("rows", conn_id, repr(found)), read)

        rows: list[views.MigrationRow] = []
        problems = [found.problem] if found.problem else []
        for result in self._each_store(rows_of):
            if isinstance(result, str):
                problems.append(result)
            else:
                rows += result
        rows.sort(key=lambda r: r.created_at, reverse=True)
        return rows, " ".join(problems) or None

    def read_page(
        self, migration_id: str, found: AirflowFacts
    ) -> tuple[views.MigrationPage | None, str | None]:
        def page_of(conn_id: str) -> views.MigrationPage | None:
            def read() -> views.MigrationPage | None:
                with self.stores.open(conn_id) as (client, store):
                    return views.migration_page(store, client, migration_id, found)

            return self.stores.cached(("page", conn_id, migration_id, repr(found)), read)

        problems = [found.problem] if found.problem else []
        for result in self._each_store(page_of):
            if isinstance(result, str):
                problems.append(result)
            elif result is not None:
                return result, " ".join(problems) or None
        return None, " ".join(problems) or None

    async def rows(self, request: Request) -> tuple[list[views.MigrationRow], str | None]:
        return await run_in_threadpool(self.read_rows, await self.facts(request))

    async def page(
        self, request: Request, migration_id: str
    ) -> tuple[views.MigrationPage, str | None]:
        """A migration's page, with its run's backfill tasks (tries and workers per partition)."""
        page, problem = await run_in_threadpool(
            self.read_page, migration_id, await self.facts(request)
        )
        if page is None:
            raise HTTPException(404, problem or f"No migration {migration_id!r} is recorded.")
        if not page.row.run_id:
            return page, problem
        api = self.api(request)
        try:  # added to the page read above: the store is not read twice
            tasks = await api.tasks(page.row.run_id)
        except (HTTPException, httpx.HTTPError):
            return page, problem  # the page without tries and workers
        finally:
            await api.close()
        return views.with_tasks(page, tasks), problem

    async def answer(self, request: Request, migration_id: str, option: str) -> JSONResponse:
        page, _ = await self.page(request, migration_id)
        if page.approval is None or page.row.run_id is None:
            raise HTTPException(409, f"{migration_id} has no pending approval ({page.row.status}).")
        api = self.api(request)
        try:
            answered = await api.answer(page.row.run_id, option)
        finally:
            await api.close()
        self.stores.forget()
        after = "the alias moves after a final catch-up" if option == APPROVE else "the alias stays"
        # The PATCH answers with Airflow's HITLDetailResponse: the user is "responded_by".
        by = (answered.get("responded_by") or {}).get("name") or "you"
        return JSONResponse(
            {
                "message": f"{option} recorded for run {page.row.run_id} by {by}; {after}.",
                "run_id": page.row.run_id,
                "chosen_options": answered.get("chosen_options"),
            }
        )

    async def lifecycle(self, request: Request, migration_id: str, action: str) -> JSONResponse:
        """Trigger ``qdrant_migration_lifecycle`` for ``action`` if the page offers it."""
        page, _ = await self.page(request, migration_id)
        if not any(a.name == action for a in page.actions):
            why = page.refused.get(action, f"{action} is not possible now.")
            raise HTTPException(409, f"{migration_id} is {page.row.status}: {why}")
        conf = {"action": action, "qdrant_conn_id": page.row.qdrant_conn_id}
        conf |= (
            {"alias": page.row.alias} if action == "rollback" else {"migration_id": migration_id}
        )
        api = self.api(request)
        try:
            run = await api.trigger(LIFECYCLE_DAG_ID, conf)
        finally:
            await api.close()
        self.stores.forget()
        return JSONResponse(
            {
                "message": f"{action.capitalize()} of {migration_id}: {LIFECYCLE_DAG_ID} run "
                f"{run['dag_run_id']} triggered.",
                "run_id": run["dag_run_id"],
                "run_url": links(request).run(run["dag_run_id"], LIFECYCLE_DAG_ID),
            }
        )


def ui(request: Request) -> MigrationsUi:
    return cast(MigrationsUi, request.app.state.ui)


Ui = Annotated[MigrationsUi, Depends(ui)]


async def list_html(request: Request, user: GetUserDep, ui: Ui) -> HTMLResponse:
    rows, problem = await ui.rows(request)
    return HTMLResponse(pages.list_page(rows, links(request), viewer(user), problem))


async def migration_html(
    request: Request, migration_id: str, user: GetUserDep, ui: Ui
) -> HTMLResponse:
    page, problem = await ui.page(request, migration_id)
    return HTMLResponse(pages.migration_html(page, links(request), viewer(user), problem))


async def list_json(request: Request, ui: Ui) -> JSONResponse:
    rows, problem = await ui.rows(request)
    return JSONResponse({"migrations": views.as_dict(rows), "problem": problem})


async def migration_json(request: Request, migration_id: str, ui: Ui) -> JSONResponse:
    page, problem = await ui.page(request, migration_id)
    return JSONResponse(views.as_dict(page) | {"problem": problem})


async def approve(request: Request, migration_id: str, _body: ActionBody, ui: Ui) -> JSONResponse:
    return await ui.answer(request, migration_id, APPROVE)


async def reject(request: Request, migration_id: str, _body: ActionBody, ui: Ui) -> JSONResponse:
    return await ui.answer(request, migration_id, REJECT)


async def rollback(request: Request, migration_id: str, _body: ActionBody, ui: Ui) -> JSONResponse:
    return await ui.lifecycle(request, migration_id, "rollback")


async def retire(request: Request, migration_id: str, _body: ActionBody, ui: Ui) -> JSONResponse:
    return await ui.lifecycle(request, migration_id, "retire")


#: Every route, and what Airflow must allow the caller for it.
ROUTES: list[tuple[str, str, Callable[..., Any], Any]] = [
    ("GET", "/", list_html, can_read),
    ("GET", "/migrations/{migration_id}", migration_html, can_read),
    ("GET", "/api/migrations", list_json, can_read),
    ("GET", "/api/migrations/{migration_id}", migration_json, can_read),
    ("POST", "/api/migrations/{migration_id}/approve", approve, can_answer),
    ("POST", "/api/migrations/{migration_id}/reject", reject, can_answer),
    ("POST", "/api/migrations/{migration_id}/rollback", rollback, can_trigger),
    ("POST", "/api/migrations/{migration_id}/retire", retire, can_trigger),
]


def create_app(
    stores: Stores | None = None, airflow_app: Callable[[], ASGIApp] = _airflow_app
) -> FastAPI:
    app = FastAPI(
        title="Qdrant migrations",
        description="Progress, evidence, lineage and actions of qdrant_model_migration runs.",
    )
    app.state.ui = MigrationsUi(stores or Stores(conn_ids()), airflow_app)
    for method, path, endpoint, allowed in ROUTES:
        html = HTMLResponse if path in ("/", "/migrations/{migration_id}") else JSONResponse
        app.add_api_route(
            path, endpoint, methods=[method], dependencies=[allowed], response_class=html
        )
    return app
