"""`labctl view`: the live view in an OpenCV window, run for real under Xvfb."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from labctl.cli import main
from labctl.client import BenchClient
from tests.labctl.fakes import FakeBench, start_server
from tests.labctl.test_web_overlay import registration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def display():
    from drivers.virtual_display import VirtualDisplay

    if shutil.which("Xvfb") is None:
        pytest.fail("Xvfb is not installed; run `bash tools/bootstrap.sh --test` (Debian package xvfb)")
    with VirtualDisplay(1280, 720) as vd:
        yield vd.display


@pytest.fixture()
def server():
    bench = FakeBench((20, 30))
    srv = start_server(bench)
    yield srv, bench
    srv.close()


def run_view(display: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DISPLAY": display}
    return subprocess.run([sys.executable, "-m", "labctl", "view", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_without_a_display_it_is_one_line_and_exit_3(monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    code = main(["view", "--endpoint", "tcp://127.0.0.1:1", "--seconds", "1"])
    err = capsys.readouterr().err
    assert code == 3 and err.count("\n") == 1 and "no X display" in err


@pytest.mark.display
def test_window_shows_frames_with_overlay_and_saves_a_snapshot(display, server, tmp_path):
    srv, bench = server
    cal = tmp_path / "calibrations"
    cal.mkdir()
    (cal / "cam.registration.json").write_text(json.dumps(registration(1.0, (3, 4), neurons=(16, 24))))
    with BenchClient(srv.endpoint) as op:
        op.acquire_lease()
        op.show("in", np.full((20, 30), 200, np.uint8))  # a bright frame, so the picture is not all black
    shot = tmp_path / "out" / "view.png"
    r = run_view(display, "--endpoint", srv.endpoint, "--seconds", "2", "--snapshot", str(shot),
                 "--artifacts", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[1] >= 480
    assert srv.state.live.idle_grabs >= 2  # frames really came from the bench while the window was open
    # the camera frame sits under the 44-px status bar: mean 200 on the left half, first pixel 200 on the right
    frame = img[44: 44 + 24, :32]
    assert np.median(frame[..., 1]) > 5  # a lit frame, not the "waiting" placeholder
    # the registration outline starts at frame pixel (3, 4): its edge differs from the flat frame around it
    assert tuple(img[44 + 4, 10]) != tuple(img[44 + 12, 10])


@pytest.mark.display
def test_unreachable_server_exits_4(display, tmp_path):
    r = run_view(display, "--endpoint", "tcp://127.0.0.1:9", "--seconds", "4", cwd=tmp_path)
    assert r.returncode == 4 and "no frames from tcp://127.0.0.1:9" in r.stderr


def test_snapshot_must_be_png(display, monkeypatch, capsys):
    monkeypatch.setenv("DISPLAY", display)
    code = main(["view", "--snapshot", "x.jpg", "--seconds", "1"])
    assert code == 2 and "expected a .png" in capsys.readouterr().err
