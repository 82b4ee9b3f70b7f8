"""`labctl show`: map validation, the sim bench, and a real HDMI window under Xvfb."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from labctl.cli import main

ROOT = Path(__file__).resolve().parents[2]


def run(capsys, *args: str) -> tuple[int, str]:
    code = main(["show", *args])
    err = capsys.readouterr().err
    return code, err


@pytest.fixture
def good_map(tmp_path):
    p = tmp_path / "map.npy"
    np.save(p, np.random.default_rng(0).integers(0, 256, (200, 200), dtype=np.uint8))
    return p


def test_shows_npy_on_sim_bench_and_blanks(capsys, good_map):
    code, err = run(capsys, "--bench", "sim", "--slm", "slm2", "--seconds", "0.05", str(good_map))
    assert code == 0, err
    assert "showing" in err and "SLM 'slm2'" in err and "ROI x=860 y=440 w=200 h=200" in err
    assert "blanked" in err


def test_shows_8bit_gray_png(capsys, tmp_path):
    p = tmp_path / "map.png"
    cv2.imwrite(str(p), np.full((200, 200), 9, np.uint8))
    code, err = run(capsys, "--bench", "sim", "--slm", "slm0", "--seconds", "0", str(p))
    assert code == 0, err


@pytest.mark.parametrize(
    "name, make, message",
    [
        ("small.npy", lambda p: np.save(p, np.zeros((100, 100), np.uint8)),
         r"map is 100x100 \(rows x cols\), the SLM ROI is 200x200; maps are never resized"),
        ("float.npy", lambda p: np.save(p, np.zeros((200, 200), np.float32)), r"map dtype is float32, expected uint8"),
        ("rgb.png", lambda p: cv2.imwrite(str(p), np.zeros((200, 200, 3), np.uint8)),
         r"PNG has 3 channels, expected an 8-bit grayscale PNG"),
        ("deep.png", lambda p: cv2.imwrite(str(p), np.zeros((200, 200), np.uint16)),
         r"PNG is 16-bit, expected an 8-bit grayscale PNG"),
        ("map.tif", lambda p: p.write_bytes(b"II*\x00"), r"unknown map format '.tif'"),
        ("junk.npy", lambda p: p.write_bytes(b"not numpy"), r"not a readable .npy array"),
        ("junk.png", lambda p: p.write_bytes(b"not png"), r"not a readable PNG image"),
    ],
)
def test_bad_maps_are_one_line_usage_errors(capsys, tmp_path, name, make, message):
    import re

    p = tmp_path / name
    make(p)
    code, err = run(capsys, "--bench", "sim", "--slm", "slm1", "--seconds", "0", str(p))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("labctl: error: ")
    assert re.search(message, err), err


def test_missing_map_and_unknown_slm(capsys, tmp_path, good_map):
    code, err = run(capsys, "--bench", "sim", "--slm", "slm1", "--seconds", "0", str(tmp_path / "nope.npy"))
    assert code == 2 and "map file not found" in err
    code, err = run(capsys, "--bench", "sim", "--slm", "slmX", "--seconds", "0", str(good_map))
    assert code == 2 and "no SLM named 'slmX'; this bench has: slm0, slm1, slm2, slm3" in err


def _default_sigint() -> None:
    # A suite started as a background job inherits SIGINT ignored, and so would
    # `labctl show`; these tests are about what it does when Ctrl-C does arrive.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def labctl(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "labctl", *args], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True, preexec_fn=_default_sigint,
    )


def wait_for_line(proc: subprocess.Popen, needle: str, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    seen = ""
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen += line
        if needle in line:
            return seen
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"never saw {needle!r}; stderr so far: {seen!r}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_runs_until_interrupted_then_blanks(good_map, sig):
    proc = labctl("show", "--bench", "sim", "--slm", "slm1", str(good_map))
    try:
        wait_for_line(proc, "until Ctrl-C")
        time.sleep(0.2)
        assert proc.poll() is None, "show must keep running until interrupted"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "blanked" in err


HDMI_BENCH = """
[bench]
name = "hdmi-check"
wavelength_m = 532e-9
distances_m = [0.1, 0.1]
[laser]
driver = "sim"
[camera]
driver = "opencv"
pitch_m = 5.86e-6
resolution = [640, 480]
bit_depth = 8
[[slm]]
name = "in"
role = "input"
driver = "hdmi"
monitor = 0
resolution = [640, 480]
pitch_m = 8e-6
roi = [100, 60, 120, 80]
settle_s = 0.0
[[slm]]
name = "l1"
role = "layer"
driver = "hdmi"
monitor = 0
resolution = [640, 480]
pitch_m = 8e-6
roi = [0, 0, 120, 80]
settle_s = 0.0
"""


@pytest.mark.display
def test_hdmi_map_is_on_screen_while_show_runs(tmp_path):
    from PIL import ImageGrab

    from drivers.virtual_display import VirtualDisplay

    bench = tmp_path / "hdmi.toml"
    bench.write_text(HDMI_BENCH)
    gray = np.random.default_rng(5).integers(0, 256, (80, 120), dtype=np.uint8)
    p = tmp_path / "map.png"
    cv2.imwrite(str(p), gray)
    with VirtualDisplay(640, 480) as vd:
        proc = labctl("show", "--bench", str(bench), "--slm", "in", str(p), env=dict(os.environ))
        try:
            wait_for_line(proc, "until Ctrl-C")
            deadline = time.monotonic() + 5
            while True:
                screen = np.asarray(ImageGrab.grab(xdisplay=vd.display))
                if np.array_equal(screen[60:140, 100:220, 2], gray) or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            np.testing.assert_array_equal(screen[60:140, 100:220, 2], gray)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
