"""The Claims tab in a real browser, against a real ``airflow api-server`` on loopback.

One LocalExecutor deployment (PostgreSQL, values on local disk) with SimpleAuthManager
users ``admin`` and ``viewer`` (passwords from a passwords file, no all-admins mode)
runs the example DAG ``orders_pipeline`` once. Headless Chromium from the Debian
packages, driven by Selenium through ``/usr/bin/chromedriver``, then logs in through
Airflow's login page, opens the DAG run, clicks its "Claims" tab and reads what the
tab's frame shows; releases a claim as the admin; and as the viewer, opens a task
instance's Claims tab and is refused. Screenshots go to the test's output folder.
Without Chromium, chromedriver or Selenium the tests skip loudly (fail under CI=true).
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from tests.conftest import service_unavailable
from tests.system.conftest import ORDERS_PIPELINE, SESSION
from tests.system.deployment import (
    Deployment,
    DeploymentError,
    create_database,
    drop_database,
    postgres_admin_url,
)

pytestmark = pytest.mark.system

DAG_ID = "orders_pipeline"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
README_SCREENSHOT = Path("/tmp/claims-tab.png")
WAIT = 60  # seconds for one page element (the UI loads its bundle on first visit)


# --- the deployment and the browser --------------------------------------------------------------


@pytest.fixture(scope="module")
def passwords() -> dict[str, str]:
    return {"admin": secrets.token_urlsafe(12), "viewer": secrets.token_urlsafe(12)}


@pytest.fixture(scope="module")
def browser_available() -> None:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        service_unavailable(
            "Chromium", f"{', '.join(missing)} missing: apt-get install chromium chromium-driver"
        )
    try:
        import selenium  # noqa: F401
    except ImportError as exc:
        service_unavailable("Selenium", f"{exc}: pip install selenium")


@pytest.fixture(scope="module")
def ui_run(browser_available, passwords, tmp_path_factory) -> Iterator[tuple[Deployment, str, Path]]:
    """A deployment with an admin and a viewer that has run the example DAG: (deployment, run id, out)."""
    root = tmp_path_factory.mktemp("airflow-ui")
    password_file = root / "passwords.json"
    password_file.write_text(json.dumps(passwords))
    database = f"tfx_sys_{SESSION}_ui"
    try:
        create_database(database)
    except psycopg.OperationalError as exc:
        service_unavailable("PostgreSQL for the system tests", f"{postgres_admin_url()}: {exc}")
    deployment = Deployment(
        "ui",
        root,
        executor="LocalExecutor",
        database=database,
        dag_files=[ORDERS_PIPELINE],
        env={
            "AIRFLOW_VAR_TASKFLOW_EXCLUSIVE_STORAGE_URL": (root / "store").as_uri(),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file),
        },
        credentials=("admin", passwords["admin"]),
    )
    try:
        try:
            deployment.start()
        except DeploymentError as exc:
            service_unavailable("Airflow ui deployment", f"{exc}\n{deployment.log_tails()}")
        try:
            deployment.wait_for_dags([DAG_ID])
            run_id = deployment.trigger(DAG_ID)
            state = deployment.wait_for_runs([(DAG_ID, run_id)], timeout=240)[DAG_ID]
        except DeploymentError as exc:
            pytest.fail(f"{exc}\n{deployment.log_tails()}", pytrace=False)
        assert state == "success", deployment.log_tails()
        yield deployment, run_id, root
    finally:
        deployment.stop()
        drop_database(database)


def _chromium(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1600,1100",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


@pytest.fixture
def browser(ui_run, tmp_path) -> Iterator:
    driver = _chromium(tmp_path / "chromium-profile")
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, condition, what: str, timeout: float = WAIT):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout).until(condition)
    except TimeoutException:
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what}; at {driver.current_url}"
        ) from None


def log_in(driver, base_url: str, username: str, password: str) -> None:
    """Through Airflow's own login page (SimpleAuthManager), which sets the UI's session cookie."""
    from selenium.webdriver.common.by import By

    driver.get(f"{base_url}/auth/login")
    field = _wait(driver, lambda d: d.find_element(By.NAME, "username"), "the login form")
    field.send_keys(username)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait(
        driver, lambda d: any(c["name"] == "_token" for c in d.get_cookies()), f"{username} to be logged in"
    )


def open_claims_tab(driver, page_url: str):
    """Open an Airflow UI page, click its "Claims" tab, switch into the tab's frame; the frame body."""
    from selenium.webdriver.common.by import By

    driver.get(page_url)
    tab = _wait(
        driver,
        lambda d: next(
            (e for e in d.find_elements(By.XPATH, "//a[normalize-space()='Claims']") if e.is_displayed()),
            None,
        ),
        f"a Claims tab on {page_url}",
    )
    tab.click()
    frame = _wait(
        driver, lambda d: d.find_element(By.CSS_SELECTOR, "iframe[title='Claims']"), "the tab's frame"
    )
    driver.switch_to.frame(frame)
    _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "p.summary"), "the Claims page in the frame")
    return driver.find_element(By.TAG_NAME, "body")


def screenshot(driver, path: Path) -> Path:
    driver.switch_to.default_content()
    assert driver.save_screenshot(str(path)), path
    assert path.stat().st_size > 10_000  # a rendered page, not a blank image
    return path


def consumer(run_id: str, task_id: str, map_index: int = -1) -> str:
    return f"{DAG_ID}/{run_id}/{task_id}/{map_index}"


def holders_seen_by_api(deployment: Deployment, run_id: str) -> dict[tuple[str, int, str], list[str]]:
    """The plugin's JSON endpoint, as the admin: holders of each value by (task, map index, XCom path)."""
    answer = deployment.api(
        "GET", "/taskflow-exclusive/api/claims", params={"dag_id": DAG_ID, "run_id": run_id}
    )
    return {
        (value["task_id"], value["map_index"], value["xcom"][0]): [h["consumer_id"] for h in value["holders"]]
        for value in answer["values"]
    }


# --- the tests -----------------------------------------------------------------------------------


def test_an_admin_sees_the_holders_in_the_run_claims_tab_and_releases_one(ui_run, browser, passwords):
    from selenium.webdriver.common.by import By

    deployment, run_id, out = ui_run
    log_in(browser, deployment.base_url, "admin", passwords["admin"])
    started = time.monotonic()
    body = open_claims_tab(browser, f"{deployment.base_url}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}")
    text = body.text

    assert f"Claims of DAG {DAG_ID}, run {run_id}" in text
    assert "7 value(s); 0 unclaimed; 0 held by a task that failed for good" in text
    assert "you may release claims" in text
    rows = browser.find_elements(By.CSS_SELECTOR, "table.values tbody tr")
    assert len(rows) == 7
    extract = next(row for row in rows if row.find_element(By.CSS_SELECTOR, "td").text == "extract")
    assert "json" in extract.text and "split_by_region" in extract.text and "(success)" in extract.text
    extract_uri = extract.get_attribute("data-uri")
    assert extract_uri.startswith((out / "store").as_uri())
    held_by = [e.get_attribute("data-consumer") for e in extract.find_elements(By.CSS_SELECTOR, "li.holder")]
    assert held_by == [consumer(run_id, "split_by_region")]
    for word in ("north", "12.25", "revenue"):  # metadata only: never the orders themselves
        assert word not in text
    shot = screenshot(browser, out / "claims-tab-admin.png")
    shutil.copyfile(shot, README_SCREENSHOT)

    # Release split_by_region's claim on the orders, with a reason, from the page.
    browser.switch_to.frame(browser.find_element(By.CSS_SELECTOR, "iframe[title='Claims']"))
    extract = browser.find_element(By.CSS_SELECTOR, f"tr[data-uri='{extract_uri}']")
    form = extract.find_element(By.CSS_SELECTOR, "form.release")
    form.find_element(By.NAME, "reason").send_keys("browser test: split_by_region is gone for good")
    form.find_element(By.TAG_NAME, "button").click()
    _wait(
        browser,
        lambda d: "Released the claim" in d.find_element(By.ID, "status").text,
        "the release to be confirmed",
    )
    _wait(
        browser,
        lambda d: "1 unclaimed" in d.find_element(By.CSS_SELECTOR, "p.summary").text,
        "the page to show the released value unclaimed",
    )
    row = browser.find_element(By.CSS_SELECTOR, f"tr[data-uri='{extract_uri}']")
    assert "unclaimed" in row.text and "nobody" in row.text
    screenshot(browser, out / "claims-tab-after-release.png")

    # The ledger agrees, and the API server logged the release like the CLI does, with who did it.
    assert holders_seen_by_api(deployment, run_id)[("extract", -1, "extract return_value")] == []
    log = (deployment.root / "api-server.log").read_text(errors="replace")
    assert "Released claim on" in log and "browser test: split_by_region is gone for good" in log
    assert "released by 'admin'" in log
    assert time.monotonic() - started < 120


def test_a_viewer_sees_a_task_instance_claims_tab_and_is_refused_a_release(ui_run, browser, passwords):
    from selenium.webdriver.common.by import By

    deployment, run_id, out = ui_run
    before = holders_seen_by_api(deployment, run_id)
    log_in(browser, deployment.base_url, "viewer", passwords["viewer"])
    page = f"{deployment.base_url}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}/tasks/summarize/mapped/1"
    body = open_claims_tab(browser, page)
    text = body.text

    assert "Claims of task summarize[1]" in text
    assert "summarize[1]: 2 value(s); 0 unclaimed; 0 held by a task that failed for good" in text
    assert "read only" in text and f"needs permission to edit DAG {DAG_ID}" in text
    produced = browser.find_elements(By.CSS_SELECTOR, "table[data-kind='produced'] tbody tr")
    claimed = browser.find_elements(By.CSS_SELECTOR, "table[data-kind='claimed'] tbody tr")
    assert len(produced) == 1 and "report" in produced[0].text  # report holds summarize[1]'s summary
    assert len(claimed) == 1 and "split_by_region" in claimed[0].text  # the batch it claimed
    buttons = browser.find_elements(By.CSS_SELECTOR, "form.release button")
    assert buttons and all(not button.is_enabled() for button in buttons)
    screenshot(browser, out / "claims-tab-viewer.png")

    # The page's own release call, made with the viewer's session: the API server refuses it.
    browser.switch_to.frame(browser.find_element(By.CSS_SELECTOR, "iframe[title='Claims']"))
    holder = produced[0].find_element(By.CSS_SELECTOR, "li.holder")
    result = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "releaseClaim(arguments[0], arguments[1], 'a viewer tries').then(done, (e) => done(String(e)));",
        produced[0].get_attribute("data-uri"),
        holder.get_attribute("data-consumer"),
    )
    assert result["ok"] is False and result["status"] == 403, result
    assert "Refused (403)" in browser.find_element(By.ID, "status").text
    assert holders_seen_by_api(deployment, run_id) == before  # nothing was released
