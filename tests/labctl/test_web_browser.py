"""End to end in headless Chromium: `labctl serve --http` on the simulated bench, a real page.

Chromium and chromedriver are Debian's (`bash tools/bootstrap.sh --test` installs
them); selenium drives them by path, so nothing is downloaded at test time. The
screenshot lands in test-artifacts/live-view.png.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from labctl.client import BenchClient
from tests.labctl.test_web_overlay import registration

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1100")

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def served(tmp_path):
    """`labctl serve --bench sim --http 127.0.0.1:0` with a registration and a deploy report to show."""
    cal = tmp_path / "calibrations"
    cal.mkdir()
    # roughly the sim bench's truth: 72 µm neurons → ~4 camera pixels, detector plane near the centre
    (cal / "camera.registration.json").write_text(json.dumps(registration(4.05, (120.0, 40.0), 0.4, (100, 100))))
    models = tmp_path / "models" / "demo"
    models.mkdir(parents=True)
    regions = [[20 + 25 * (k // 4), 10 + 22 * (k % 4), 12, 12] for k in range(10)]
    (models / "model.json").write_text(json.dumps({"detector": {"regions": regions}}))
    run = tmp_path / "runs" / "20261129-demo"
    run.mkdir(parents=True)
    (run / "report.md").write_text("# Deploy report\n\nbench accuracy 0.91, twin 0.93\n")
    zmq_endpoint = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-m", "labctl", "serve", "--bench", "sim", "--bind", zmq_endpoint,
                             "--http", "127.0.0.1:0", "--artifacts", str(tmp_path)],
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    url = None
    lines = []
    deadline = time.time() + 60
    while url is None and time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"live view on (http://\S+)", line)
        if m:
            url = m.group(1)
    if url is None:
        proc.kill()
        pytest.fail("labctl serve --http did not start: " + "".join(lines))
    try:
        yield url, zmq_endpoint
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rest = proc.communicate(timeout=20)[1]
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("labctl serve did not stop on SIGTERM")
        assert proc.returncode == 0, "".join(lines) + rest


@pytest.fixture()
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for tool in (CHROMIUM, CHROMEDRIVER):
        if not os.access(tool, os.X_OK):
            pytest.fail(f"{tool} missing: run `bash tools/bootstrap.sh --test` (Debian chromium, chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    opts.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(what: str, fn, timeout: float = 20.0):
    end = time.time() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.time() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_page_shows_live_frames_and_abort_stops_a_job(served, browser):
    from selenium.webdriver.common.by import By

    url, endpoint = served
    text = lambda el_id: browser.find_element(By.ID, el_id).text
    browser.get(url)
    first = wait_for("a first frame", lambda: int(text("frame-seq") or 0))
    wait_for("frames to update", lambda: int(text("frame-seq") or 0) > first + 2)
    wait_for("the bench name", lambda: "bench sim" in text("bench-name"))
    wait_for("the overlay", lambda: "camera.registration.json" in text("overlay-source"))
    wait_for("the deploy report", lambda: "bench accuracy 0.91" in text("run-report"))
    wait_for("four SLM maps", lambda: len(browser.find_elements(By.CSS_SELECTOR, "#slms img")) == 4)

    with BenchClient(endpoint, timeout_s=10) as op:
        op.acquire_lease(ttl_s=60)
        op.set_laser(True)
        op.set_shutter(True)
        op.deploy("demo", "0" * 64, {f"slm{i}": np.full((200, 200), 128, np.uint8) for i in (1, 2, 3)})
        wait_for("the deployed model's detector regions", lambda: "regions of demo" in text("overlay-source"))
        maps = np.random.default_rng(1).integers(0, 256, (200, 200, 200), dtype=np.uint8)
        job = op.run(maps, regions=[[100, 100, 20, 20]])
        wait_for("the running job on the page",
                 lambda: job in text("job") and browser.find_element(By.ID, "job").get_attribute("data-state") == "running")
        wait_for("a frame of the job", lambda: text("frame-source").startswith("run step"))
        wait_for("the shutter shown open", lambda: text("shutter") == "shutter OPEN")
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "live-view.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

        browser.find_element(By.ID, "btn-abort").click()
        wait_for("the abort to be acknowledged",
                 lambda: browser.find_element(By.ID, "action-result").get_attribute("data-outcome") == "ok")
        assert op.job_status(job)["state"] == "cancelled"
        assert op.job_status(job)["done"] < 200
        wait_for("the page to show the job cancelled",
                 lambda: browser.find_element(By.ID, "job").get_attribute("data-state") == "cancelled")
        wait_for("the shutter shown closed", lambda: text("shutter") == "shutter closed")
        assert op.status()["devices"]["shutter"]["open"] is False
