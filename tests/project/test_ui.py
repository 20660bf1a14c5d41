"""The Dagster UI: the webserver serves HMS's definitions, and a real browser finds the memories asset."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import unavailable

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        unavailable("Debian's chromium and chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def webserver(hms_home):
    env = {**os.environ}
    run = subprocess.run([sys.executable, "-m", "hms_jobs.cli", "run"], cwd=ROOT, env=env, capture_output=True, timeout=300)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-webserver")), "-w", str(ROOT / "workspace.yaml"),
         "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/server_info", timeout=2)
            break
        except OSError:
            assert proc.poll() is None, "dagster-webserver exited"
            time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_asset_graph_shows_the_materialized_memories_asset_with_passing_checks_and_its_chart(browser, webserver, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{webserver}/locations/hms/asset-groups/memory_store")
    try:
        WebDriverWait(browser, 60).until(lambda d: "3 / 3 Passed" in d.find_element(By.TAG_NAME, "body").text)
    finally:
        browser.save_screenshot(str(tmp_path / "asset-graph.png"))
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "memories" in body
    assert "Never materialized" not in body

    # The chart in the memories asset's metadata opens as an image, not as markdown source.
    browser.get(f"{webserver}/assets/memories")
    link = "//tr[.//td[normalize-space()='live_memories_by_type']]//*[normalize-space(text())='[Show Markdown]']"
    image = "//img[starts-with(@src, 'data:image/png;base64,')]"
    try:
        WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.XPATH, link))
        browser.find_element(By.XPATH, link).click()
        WebDriverWait(browser, 30).until(lambda d: any(i.size["width"] > 0 for i in d.find_elements(By.XPATH, image)))
    finally:
        browser.save_screenshot(str(tmp_path / "memories-chart.png"))

