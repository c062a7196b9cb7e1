"""The trigger form in a real browser: the params' titles and defaults reach the UI.

Driven by Selenium with Debian's ``chromium`` and ``chromium-driver`` packages. Selenium
over Playwright because the driver comes from the same Debian source package as the
browser, so their versions always match; Playwright pins its own Chromium build and only
promises to work with that one (an ``executable_path`` browser may drift from its CDP
client), and it needs a Node.js driver. Neither downloads anything here: the driver path
is given, so Selenium Manager is never asked to fetch one.

Skipped when the browser is missing on a developer's machine; in CI (``CI`` set) a
missing browser fails, because ``.ci/run`` installs it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from include.qdrant_migration.spec import PARAM_SCHEMA
from tests.e2e.conftest import DAG_ID, ROOT, AirflowServices

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT = ROOT / "artifacts" / "trigger_form.png"
FIELD_TITLES = (
    "Alias the application reads",
    "New embedding model",
    "Batch size",
    "Query log (production queries)",
    "Relevance judge (reranker)",
)
BROWSER_MISSING = not (CHROMIUM.exists() and CHROMEDRIVER.exists())

pytestmark = [
    pytest.mark.e2e,
    # Decided before the (session) services start, so a skip costs nothing.
    pytest.mark.skipif(
        BROWSER_MISSING and not os.environ.get("CI"),
        reason=f"{CHROMIUM} or {CHROMEDRIVER} missing: "
        "apt-get install -y chromium chromium-driver (CI installs them and never skips)",
    ),
]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    if BROWSER_MISSING:
        pytest.fail(f"CI must run the browser test, but {CHROMIUM} or {CHROMEDRIVER} is missing")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",  # root in a container: Chromium's sandbox cannot start
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        # Tall enough that the screenshot shows the first params of the form.
        "--window-size=1400,1600",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def log_in(driver: WebDriver, services: AirflowServices, next_path: str) -> None:
    """The SimpleAuthManager login page, as a person fills it in."""
    wait = WebDriverWait(driver, 60)
    driver.get(f"{services.url}{next_path}")
    wait.until(ec.element_to_be_clickable((By.NAME, "username"))).send_keys("admin")
    driver.find_element(By.NAME, "password").send_keys(services.password)
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "button[type=submit]"))).click()
    wait.until(ec.url_contains(next_path))


def field_label(dialog: WebElement, title: str) -> WebElement:
    # The label holds the title and a "*" marking required fields.
    return dialog.find_element(By.XPATH, f".//label[starts-with(normalize-space(.), '{title}')]")


def test_trigger_form_shows_the_params(
    airflow_services: AirflowServices, browser: WebDriver
) -> None:
    wait = WebDriverWait(browser, 60)
    log_in(browser, airflow_services, f"/dags/{DAG_ID}")

    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "button[aria-label='Trigger Dag']")))
    browser.find_element(By.CSS_SELECTOR, "button[aria-label='Trigger Dag']").click()
    dialog = wait.until(
        ec.visibility_of_element_located(
            (By.CSS_SELECTOR, "[data-scope=dialog][data-part=content][data-state=open]")
        )
    )
    wait.until(lambda _: field_label(dialog, FIELD_TITLES[0]).is_displayed())

    assert f"Trigger Dag - {DAG_ID}" in dialog.text
    for title in FIELD_TITLES:
        label = field_label(dialog, title)
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", label)
        assert label.is_displayed(), title
    # The fields carry the params' defaults.
    model = dialog.find_element(By.NAME, "element_model")
    assert model.get_attribute("value") == PARAM_SCHEMA["model"]["default"]
    batch_size = dialog.find_element(By.NAME, "element_batch_size")
    assert batch_size.get_attribute("value") == str(PARAM_SCHEMA["batch_size"]["default"])
    # Fill in the alias as a person would (the run is not triggered).
    alias = dialog.find_element(By.NAME, "element_alias")
    alias.clear()
    alias.send_keys("articles")
    wait.until(lambda _: alias.get_attribute("value") == "articles")

    browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", dialog)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000
