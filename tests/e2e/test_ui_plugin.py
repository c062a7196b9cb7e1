"""The "Qdrant migrations" UI plugin on the real api-server, in a real browser.

One migration (alias ``docs``, embedded through the OpenAI stand-in, slowed down so the
backfill is seen running) is followed in the plugin's pages inside Airflow's UI: the list
and the migration page are photographed during the backfill and at the approval, the
approval is given from the page (the alias moves), and then the JSON API rolls it back
and retires it through the lifecycle DAG. Every plugin route refuses an anonymous caller,
a viewer may read but not act, and no page carries a document's text or a secret.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from include.qdrant_migration.airflow.ui_app import ROUTES, URL_PREFIX
from include.qdrant_migration.providers import get_provider
from include.qdrant_migration.qdrant import open_client
from scripts.seeding import read_corpus, seed_collection
from tests.e2e.conftest import DAG_ID, ROOT, SOURCE_MODEL, AirflowServices
from tests.e2e.test_trigger_form import BROWSER_MISSING, browser, log_in  # noqa: F401
from tests.standin import OPENAI_KEY, StandIn

pytestmark = pytest.mark.e2e

ALIAS, SOURCE = "docs", "docs_v1"
POINTS = 200
CONN_ID = "ui_openai"
SHOTS = ROOT / "artifacts"
#: 40 requests of 5 texts in 2 partitions at 1 s each: the backfill runs ~20 s.
CONF: dict[str, Any] = {
    "alias": ALIAS,
    "provider": "openai",
    "model": "text-embedding-3-small",
    "provider_conn_id": CONN_ID,
    # The seeded source records no lineage: name its model (quality, rollback need it).
    "source_provider": "local",
    "source_model": SOURCE_MODEL,
    "points_per_partition": 100,
    "batch_size": 5,
    "embed_concurrency": 1,
}
LATENCY_S = 1.0


@pytest.fixture(scope="module")
def standin_server() -> Iterator[StandIn]:
    with StandIn() as server:
        yield server


@pytest.fixture(scope="module")
def docs(airflow_services: AirflowServices, standin_server: StandIn) -> list[str]:
    """The ``docs`` alias seeded on the services' store, and the stand-in's connection."""
    records = read_corpus(limit=POINTS)
    with open_client(airflow_services.qdrant) as client:
        seed_collection(
            client,
            collection=SOURCE,
            alias=ALIAS,
            records=records,
            provider=get_provider("local", SOURCE_MODEL),
        )
    added = airflow_services.airflow(
        "connections",
        "add",
        CONN_ID,
        "--conn-json",
        json.dumps(
            {
                "conn_type": "generic",
                "password": OPENAI_KEY,
                "extra": {"base_url": standin_server.openai_base_url},
            }
        ),
    )
    assert added.returncode == 0, added.stdout + added.stderr
    unpaused = airflow_services.airflow("dags", "unpause", "qdrant_migration_lifecycle")
    assert unpaused.returncode == 0, unpaused.stdout + unpaused.stderr
    return [str(r["text"]) for r in records]


def token(services: AirflowServices, user: str, password: str) -> str:
    response = httpx.post(
        f"{services.url}/auth/token", json={"username": user, "password": password}, timeout=30
    )
    assert response.status_code == 201, response.text
    return str(response.json()["access_token"])


def api(services: AirflowServices, bearer: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    return httpx.Client(base_url=services.url + URL_PREFIX, headers=headers, timeout=120)


def wait_until(what: str, check: Callable[[], Any], timeout_s: float = 240.0) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    pytest.fail(f"{what} did not happen within {timeout_s:.0f}s (last: {last!r})")


def the_row(services: AirflowServices) -> dict[str, Any] | None:
    with api(services, services.token) as http:
        response = http.get("/api/migrations")
    response.raise_for_status()
    rows = [r for r in response.json()["migrations"] if r["alias"] == ALIAS]
    return rows[0] if rows else None


def frame(driver: WebDriver, services: AirflowServices) -> WebDriverWait[WebDriver]:
    """Open the plugin's page in Airflow's UI and enter its iframe."""
    wait = WebDriverWait(driver, 60)
    driver.switch_to.default_content()
    driver.get(f"{services.url}/plugin/qdrant-migrations")
    wait.until(ec.frame_to_be_available_and_switch_to_it((By.TAG_NAME, "iframe")))
    return wait


def click(driver: WebDriver, by: str, value: str) -> None:
    """Click what the page's refresh may replace between finding and clicking it."""
    for _ in range(5):
        try:
            WebDriverWait(driver, 30).until(ec.element_to_be_clickable((by, value))).click()
            return
        except StaleElementReferenceException:
            continue
    pytest.fail(f"{value} kept going stale")


def enter_frame(driver: WebDriver) -> None:
    driver.switch_to.frame(driver.find_element(By.TAG_NAME, "iframe"))


def shoot(driver: WebDriver, name: str) -> None:
    path = SHOTS / name
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.switch_to.default_content()
    assert driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000


def test_plugin_is_loaded(airflow_services: AirflowServices) -> None:
    listed = airflow_services.airflow("plugins", "--output", "json")
    assert listed.returncode == 0, listed.stderr
    (plugin,) = [p for p in json.loads(listed.stdout) if p["name"] == "qdrant_migrations"]
    assert plugin["fastapi_apps"][0]["url_prefix"] == URL_PREFIX
    assert plugin["external_views"][0]["url_route"] == "qdrant-migrations"
    with airflow_services.http() as http:
        served = http.get("/api/v2/plugins").json()["plugins"]
    assert "qdrant_migrations" in {p["name"] for p in served}


def test_every_route_requires_airflow_auth(airflow_services: AirflowServices) -> None:
    services = airflow_services
    with api(services) as anonymous, api(services, "not-a-jwt") as forged:
        for method, path, _endpoint, _allowed in ROUTES:
            url = path.replace("{migration_id}", "mig-000000000000")
            for client in (anonymous, forged):
                response = client.request(method, url, json={"confirm": True})
                assert response.status_code in (401, 403), (method, url, response.status_code)
    viewer = token(services, "viewer", services.viewer_password)
    with api(services, viewer) as http:
        assert http.get("/api/migrations").status_code == 200  # a viewer may read
        for action in ("approve", "reject", "rollback", "retire"):
            refused = http.post(f"/api/migrations/mig-000000000000/{action}", json={})
            assert refused.status_code == 403, (action, refused.text)


@pytest.mark.skipif(
    BROWSER_MISSING and not os.environ.get("CI"),
    reason="chromium or chromedriver missing (CI installs them and never skips)",
)
def test_follow_approve_and_roll_back_from_the_ui(
    airflow_services: AirflowServices,
    docs: list[str],
    standin_server: StandIn,
    browser: WebDriver,  # noqa: F811
) -> None:
    services = airflow_services
    standin_server.reset()
    standin_server.latency_s = LATENCY_S
    run_id = f"e2e:ui+{int(time.time())}"
    triggered = services.airflow(
        "dags", "trigger", DAG_ID, "--run-id", run_id, "--conf", json.dumps(CONF)
    )
    assert triggered.returncode == 0, triggered.stdout + triggered.stderr

    # During the backfill: the list and the migration page, with partial progress.
    row = wait_until(  # with a rate: two progress samples, at least 5 s apart
        "a partly done backfill with a rate",
        lambda: (
            (r := the_row(services))
            and 0 < r["points_done"] < r["points_total"]
            and r["rate"]
            and r
        ),
    )
    assert row["status"] == "loading" and row["run_id"] == run_id, row
    log_in(browser, services, "/plugin/qdrant-migrations")
    wait = frame(browser, services)
    listed = wait.until(
        ec.presence_of_element_located(
            (By.CSS_SELECTOR, f"tr[data-migration='{row['migration_id']}']")
        )
    ).text
    assert "loading" in listed and "points/s" in listed, listed
    shoot(browser, "ui_list_backfill.png")
    enter_frame(browser)
    click(browser, By.LINK_TEXT, ALIAS)
    wait.until(ec.presence_of_element_located((By.ID, "partitions")))
    progress = browser.find_element(By.ID, "progress").text
    assert "points/s" in progress and "ETA" in progress, progress
    assert len(browser.find_elements(By.CSS_SELECTOR, "tr[data-partition]")) == 2
    shoot(browser, "ui_migration_backfill.png")
    backfill_seen = the_row(services)
    assert backfill_seen is not None and backfill_seen["status"] == "loading", backfill_seen

    # At the approval: the page shows the evidence and offers the answer.
    wait_until("the approval", lambda: run_id in services.pending_approvals(), timeout_s=300)
    migration_id = row["migration_id"]
    wait = frame(browser, services)
    wait.until(ec.element_to_be_clickable((By.LINK_TEXT, ALIAS)))
    wait.until(ec.text_to_be_present_in_element((By.ID, "migrations"), "awaiting approval"))
    shoot(browser, "ui_list_approval.png")
    enter_frame(browser)
    click(browser, By.LINK_TEXT, ALIAS)
    wait.until(ec.presence_of_element_located((By.ID, "report")))
    report = browser.find_element(By.ID, "report").text
    assert "recall@10" in report, report[:2000]
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart"), "no chart"
    lineage = browser.find_element(By.XPATH, "//h2[starts-with(., 'Lineage')]/..").text
    assert SOURCE in lineage and SOURCE_MODEL in lineage, lineage
    shoot(browser, "ui_migration_approval.png")

    # No document text and no secret in any page or JSON answer.
    with api(services, services.token) as http:
        shown = " ".join(
            http.get(path).text
            for path in (
                "/",
                f"/migrations/{migration_id}",
                "/api/migrations",
                f"/api/migrations/{migration_id}",
            )
        )
    assert OPENAI_KEY not in shown and services.password not in shown
    quoted = [text[:60] for text in docs if len(text) >= 60 and text[:60] in shown]
    assert quoted == [], quoted[:3]

    # Approve from the page: a confirmation that says what happens, then the alias moves.
    enter_frame(browser)
    click(browser, By.CSS_SELECTOR, "button[data-action=approve]")
    dialog = wait.until(ec.visibility_of_element_located((By.ID, "confirm")))
    assert f"moves atomically from '{SOURCE}'" in dialog.text, dialog.text
    browser.find_element(By.ID, "confirm-ok").click()
    WebDriverWait(browser, 90).until(
        ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".result"), "Approve recorded")
    )
    run = services.wait_for_run(run_id)
    assert run["state"] == "success", services.task_states(run_id)
    target = services.alias_target(ALIAS)
    assert target is not None and target != SOURCE
    assert services.collection_points(target) == POINTS
    swapped = the_row(services)
    assert swapped is not None and swapped["status"] == "swapped", swapped

    # Rollback and retire go through the lifecycle DAG; a viewer may do neither.
    viewer = token(services, "viewer", services.viewer_password)
    with api(services, viewer) as http:
        assert http.post(f"/api/migrations/{migration_id}/rollback", json={}).status_code == 403
    with api(services, services.token) as http:
        not_json = http.post(f"/api/migrations/{migration_id}/rollback", data={"confirm": "1"})
        assert not_json.status_code == 422, not_json.text  # a cross-site form cannot act
        rolled = http.post(f"/api/migrations/{migration_id}/rollback", json={"confirm": True})
    assert rolled.status_code == 200, rolled.text
    _wait_lifecycle(services, rolled.json()["run_id"])
    assert services.alias_target(ALIAS) == SOURCE
    assert the_row(services)["status"] == "rolled_back"  # type: ignore[index]
    with api(services, services.token) as http:
        retired = http.post(f"/api/migrations/{migration_id}/retire", json={"confirm": True})
    assert retired.status_code == 200, retired.text
    _wait_lifecycle(services, retired.json()["run_id"])
    assert the_row(services)["status"] == "retired"  # type: ignore[index]
    with open_client(services.qdrant) as client:
        assert not client.collection_exists(target)
        assert client.collection_exists(SOURCE)


def _wait_lifecycle(services: AirflowServices, run_id: str) -> None:
    url = f"/api/v2/dags/qdrant_migration_lifecycle/dagRuns/{quote(run_id, safe='')}"

    def finished() -> dict[str, Any] | None:
        with services.http() as http:
            run = http.get(url).json()
        return run if run.get("state") in ("success", "failed") else None

    run = wait_until(f"lifecycle run {run_id}", finished, timeout_s=300)
    assert run["state"] == "success", services.diagnostics()
