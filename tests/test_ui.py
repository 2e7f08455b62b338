"""The Airflow UI in a real headless browser (Debian's chromium + chromedriver, driven by Selenium): log in, open
a DAG, open its trigger form and see the typed params, trigger it, see the run succeed.

Screenshots go to ``$NPUFLOW_TEST_ARTIFACTS/ui`` (default ``var/test-artifacts/ui``) whether the test passes
or not.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.airflow_services import Services, quote
from tests.conftest import ROOT

pytestmark = pytest.mark.services

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DAG_ID = "yolor_p6_coco"
ARTIFACTS = Path(os.environ.get("NPUFLOW_TEST_ARTIFACTS", ROOT / "var" / "test-artifacts")) / "ui"


@pytest.fixture
def browser() -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        assert Path(path).is_file(), f"{path} missing: install Debian's chromium and chromium-driver (make test does)"
    profile = tempfile.mkdtemp(prefix="npuflow-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # This machine has no network: without the background-networking flags chromium keeps dialling out.
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_log_in_open_the_trigger_form_trigger_and_see_the_run_succeed(airflow_services: Services, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    s = airflow_services
    s.unpause(DAG_ID)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    wait = WebDriverWait(browser, 60)

    def shot(name: str, height: int = 1000, width: int = 1400) -> None:
        browser.set_window_size(width, height)
        browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))

    # log in: the UI sends us to the login page and back to the DAG
    browser.get(f"{s.url}/dags/{DAG_ID}")
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "input[name=username]")))
    shot("01-login")
    browser.find_element(By.CSS_SELECTOR, "input[name=username]").send_keys("operator")
    browser.find_element(By.CSS_SELECTOR, "input[name=password]").send_keys(s.password("operator"))
    browser.find_element(By.XPATH, "//button[normalize-space()='Sign in']").click()
    wait.until(ec.url_contains(f"/dags/{DAG_ID}"))
    trigger = wait.until(ec.element_to_be_clickable((By.XPATH, "//button[normalize-space()='Trigger']")))
    shot("02-dag")

    # the trigger form shows the DAG's typed params with their descriptions: what a run changes first open at the
    # top, the rest in closed sections (operators/dag_factory.py SECTIONS)
    from operators.dag_factory import SECTIONS

    trigger.click()
    wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "input[name=element_epochs]")))
    dialog = browser.find_element(By.XPATH, "//*[@role='dialog'][.//input[@name='element_epochs']]")
    text = dialog.text
    for param in ("profile", "stages", "epochs", "iters", "batch_size", "resume", "promotion"):
        assert param in text, f"param {param} not in the trigger form's first group"
    assert "Override the training length in epochs." in text
    assert "Recipe profile: production on the NPU servers, smoke on CPU." in text
    assert browser.find_element(By.CSS_SELECTOR, "input[name=element_profile]").get_attribute("value") == "smoke"
    assert "toolkit_dir" not in text and text.index("resume") < text.index(next(iter(SECTIONS)))
    browser.find_element(By.CSS_SELECTOR, "input[name=element_epochs]").send_keys("2")
    shot("03-trigger-form", height=3600)  # the whole form on screen: the dialog itself does not scroll
    # one section open at a time (the form's accordion): each shows its params
    for i, (section, names) in enumerate(SECTIONS.items()):
        dialog.find_element(By.XPATH, f".//button[normalize-space()={section!r}]").click()
        wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, f"input[name=element_{names[0]}]")))
        assert all(name in dialog.text for name in names), (section, names)
        shot(f"03{'bcdefgh'[i]}-trigger-form-section", height=3600)
    # runner and rendezvous: an input left empty for the profile's, its choices offered, no "null" among them
    for name, choices in (("runner", ["process", "docker"]), ("rendezvous", ["c10d", "static"])):
        field = dialog.find_element(By.CSS_SELECTOR, f"input[name=element_{name}]")
        options = dialog.find_elements(By.CSS_SELECTOR, f"datalist#{field.get_attribute('list')} option")
        assert field.get_attribute("value") == "" and [o.get_attribute("value") for o in options] == choices
    assert "null" not in dialog.text.lower()

    # trigger: the UI opens the new run's page; reload it until the run has finished
    dialog.find_element(By.XPATH, ".//button[normalize-space()='Trigger']").click()
    wait.until(ec.url_contains(f"/dags/{DAG_ID}/runs/"))
    run_id = browser.current_url.rstrip("/").rsplit("/runs/", 1)[1]
    from urllib.parse import unquote

    run_id = unquote(run_id)
    deadline = time.monotonic() + 600
    state = None
    while time.monotonic() < deadline:
        state = s.ok("GET", s.run_path(DAG_ID, run_id))["state"]
        if state in ("success", "failed"):
            break
        time.sleep(3)
    browser.refresh()
    try:
        WebDriverWait(browser, 60).until(
            ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "Success" if state == "success" else "Failed"))
    finally:
        shot("04-run")
    assert state == "success", {k: v["state"] for k, v in s.task_instances(DAG_ID, run_id).items()}
    page = browser.find_element(By.TAG_NAME, "body").text
    assert run_id in page and "Success" in page and "operator" in page  # state and triggering user, as shown
    conf = s.ok("GET", s.run_path(DAG_ID, run_id))["conf"]
    assert conf["epochs"] == 2 and conf["profile"] == "smoke"

    def extra_link(task: str, name: str, screenshot: str) -> tuple[Any, str]:
        """The task's Details tab shows its extra link ``name``; returns it and what the REST API says it is."""
        browser.get(f"{s.url}/dags/{DAG_ID}/runs/{quote(run_id)}/tasks/{task}/details")
        try:
            found = wait.until(ec.element_to_be_clickable((By.LINK_TEXT, name)))
        finally:
            shot(screenshot)
        return found, s.ok("GET", f"{s.run_path(DAG_ID, run_id)}/taskInstances/{task}/links")["extra_links"][name]

    # the report task's "HTML report" extra link opens the self-contained report
    link, expected = extra_link("report", "HTML report", "05-report-task-details")
    assert link.get_attribute("href") == s.url + expected
    link.click()
    wait.until(ec.presence_of_element_located((By.ID, "verdict")))
    assert browser.current_url == s.url + expected
    images = browser.find_elements(By.TAG_NAME, "img")
    loaded = browser.execute_script("return Array.from(document.images).map(i => i.complete && i.naturalWidth)")
    height = browser.execute_script("return document.body.scrollHeight")
    shot("06-html-report", height=min(int(height) + 100, 6000))
    assert len(images) >= 3 and all(w and w > 100 for w in loaded), loaded  # loss/lr, throughput, latency plots
    assert "gate(s) passed" in browser.find_element(By.ID, "verdict").text

    # the track task's "MLflow run" link opens the run in MLflow's own UI (npuflow airflow up --mlflow started it)
    link, expected = extra_link("track", "MLflow run", "07-track-task-details")
    assert s.mlflow_url and link.get_attribute("href") == expected and expected.startswith(s.mlflow_url)
    browser.get(expected)
    try:  # the run's name is the Airflow run id; its metrics and the report among its artifacts
        wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), run_id))
    finally:
        shot("08-mlflow-run", height=1400)
    # the registered model: versions, and the champion alias on the model that earned it
    browser.set_window_size(2200, 1400)  # wide enough for both alias chips of a version
    browser.get(f"{s.mlflow_url}/#/models/{DAG_ID}")
    try:
        wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "champion"))
    finally:
        shot("09-mlflow-registered-model", height=1400, width=2200)
    assert "challenger" in browser.find_element(By.TAG_NAME, "body").text
