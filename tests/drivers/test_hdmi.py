"""HDMI SLM under a real X server (Xvfb): maps read back from the screen, pixel for pixel."""

from __future__ import annotations

import time

import numpy as np
import pytest

from drivers.errors import DeviceError
from drivers.hdmi import HdmiSlm, display_available, list_monitors

SCREEN = (720, 1280)  # the Xvfb screen, rows x cols


def grab_screen(display: str) -> np.ndarray:
    from PIL import ImageGrab

    return np.asarray(ImageGrab.grab(xdisplay=display))


def screen_when(display: str, ready, timeout_s: float = 2.0) -> np.ndarray:
    """The screen once ``ready(screen)`` holds (the X server paints asynchronously), or the last grab."""
    deadline = time.monotonic() + timeout_s
    while True:
        screen = grab_screen(display)
        if ready(screen) or time.monotonic() > deadline:
            return screen
        time.sleep(0.01)


class FakeMonitor:
    def __init__(self, x, y, width, height, name, is_primary=False):
        self.x, self.y, self.width, self.height, self.name, self.is_primary = x, y, width, height, name, is_primary


@pytest.fixture
def two_monitors(monkeypatch):
    """Two 640x480 monitors side by side on the Xvfb screen, as screeninfo would list them."""
    import screeninfo

    monitors = [FakeMonitor(0, 0, 640, 480, "DP-1", True), FakeMonitor(640, 0, 640, 480, "HDMI-2")]
    monkeypatch.setattr(screeninfo, "get_monitors", lambda: monitors)
    return monitors


def test_no_display_is_a_device_error_not_an_abort(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":987")  # nothing listens there
    assert not display_available()
    assert list_monitors() == []
    slm = HdmiSlm("slm0", 0, (0, 0, 10, 10), (480, 640), 8e-6)
    with pytest.raises(DeviceError, match=r"no X display reachable \(DISPLAY=':987'\)"):
        slm.connect()
    monkeypatch.delenv("DISPLAY")
    assert not display_available()


@pytest.mark.display
def test_random_maps_are_pixel_exact_in_the_roi(xvfb):
    assert display_available()
    [mon] = list_monitors()
    assert (mon.height, mon.width) == SCREEN
    roi = (101, 57, 300, 200)
    rng = np.random.default_rng(1)
    with HdmiSlm("slm0", 0, roi, SCREEN, 8e-6, settle_s=0.0) as slm:
        for _ in range(3):
            gray = rng.integers(0, 256, slm.shape, dtype=np.uint8)
            slm.show(gray)
            x, y, w, h = roi
            screen = screen_when(xvfb, lambda s: np.array_equal(s[y : y + h, x : x + w, 0], gray))
            for c in range(3):
                np.testing.assert_array_equal(screen[y : y + h, x : x + w, c], gray)
            outside = screen.copy()
            outside[y : y + h, x : x + w] = 0
            assert not outside.any(), "pixels outside the ROI must stay black"
        np.testing.assert_array_equal(slm.current(), gray)
    assert not slm.connected


@pytest.mark.display
@pytest.mark.parametrize("monitor", [1, "HDMI-2"])
def test_map_lands_on_the_chosen_monitor(xvfb, two_monitors, monitor):
    roi = (20, 30, 64, 48)
    gray = np.random.default_rng(2).integers(1, 256, (48, 64), dtype=np.uint8)
    with HdmiSlm("slm1", monitor, roi, (480, 640), 8e-6, settle_s=0.0) as slm:
        slm.show(gray)
        screen = screen_when(xvfb, lambda s: np.array_equal(s[30 : 30 + 48, 660:724, 1], gray))
        np.testing.assert_array_equal(screen[30 : 30 + 48, 640 + 20 : 640 + 20 + 64, 1], gray)
        assert not screen[:480, :640].any(), "monitor 0 must not show the map"
        assert slm.status()["monitor_geometry"] == [640, 0, 640, 480]


@pytest.mark.display
def test_two_slms_on_two_monitors(xvfb, two_monitors):
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (100, 100), dtype=np.uint8)
    b = rng.integers(0, 256, (100, 100), dtype=np.uint8)
    with HdmiSlm("a", 0, (10, 10, 100, 100), (480, 640), 8e-6, 0.0) as sa, \
         HdmiSlm("b", 1, (10, 10, 100, 100), (480, 640), 8e-6, 0.0) as sb:
        sa.show(a)
        sb.show(b)
        screen = screen_when(xvfb, lambda s: np.array_equal(s[10:110, 10:110, 0], a)
                             and np.array_equal(s[10:110, 650:750, 0], b))
        np.testing.assert_array_equal(screen[10:110, 10:110, 0], a)
        np.testing.assert_array_equal(screen[10:110, 650:750, 0], b)


@pytest.mark.display
def test_window_not_placed_on_the_monitor_is_refused(xvfb, two_monitors, monkeypatch):
    import cv2

    # What a window manager does when it keeps a title bar: the image starts 38 px lower.
    real = cv2.getWindowImageRect
    monkeypatch.setattr(cv2, "getWindowImageRect", lambda w: (lambda r: (r[0], r[1] + 38, r[2], r[3]))(real(w)))
    slm = HdmiSlm("s", 1, (0, 0, 10, 10), (480, 640), 8e-6, 0.0)
    with pytest.raises(DeviceError, match=r"window geometry \[640, 38, 640, 480\] .* is not the monitor's \[640, 0, 640, 480\]"):
        slm.connect()
    assert not slm.connected


@pytest.mark.display
def test_window_moved_after_placement_is_detected_on_show(xvfb, two_monitors, monkeypatch):
    import cv2

    with HdmiSlm("s", 0, (0, 0, 10, 10), (480, 640), 8e-6, 0.0) as slm:
        monkeypatch.setattr(cv2, "getWindowImageRect", lambda w: (5, 0, 640, 480))
        with pytest.raises(DeviceError, match=r"window moved or resized to \[5, 0, 640, 480\]"):
            slm.show(np.ones((10, 10), np.uint8))
        monkeypatch.undo()


@pytest.mark.display
def test_resolution_mismatch_and_unknown_monitor(xvfb, two_monitors):
    with pytest.raises(DeviceError, match=r"monitor 'HDMI-2' is 640x480 but the bench says the SLM is 1920x1080"):
        HdmiSlm("s", "HDMI-2", (0, 0, 10, 10), (1080, 1920), 8e-6).connect()
    with pytest.raises(DeviceError, match=r"monitor 'DVI-9' not found; monitors here: \[0\] DP-1 640x480 at \(0, 0\)"):
        HdmiSlm("s", "DVI-9", (0, 0, 10, 10), (480, 640), 8e-6).connect()
    with pytest.raises(DeviceError, match=r"monitor 5 not found"):
        HdmiSlm("s", 5, (0, 0, 10, 10), (480, 640), 8e-6).connect()


@pytest.mark.display
def test_wrong_map_is_refused_and_screen_unchanged(xvfb):
    with HdmiSlm("slm0", 0, (0, 0, 50, 40), SCREEN, 8e-6, 0.0) as slm:
        good = np.full((40, 50), 77, np.uint8)
        slm.show(good)
        with pytest.raises(DeviceError, match="does not match the ROI"):
            slm.show(np.zeros((50, 40), np.uint8))
        with pytest.raises(DeviceError, match="expected dtype uint8"):
            slm.show(np.zeros((40, 50), np.uint16))
        assert (screen_when(xvfb, lambda s: (s[:40, :50, 0] == 77).all())[:40, :50, 0] == 77).all()


@pytest.mark.display
def test_map_that_never_reaches_the_screen_is_refused(xvfb, monkeypatch):
    import cv2

    with HdmiSlm("slm0", 0, (0, 0, 50, 40), SCREEN, 8e-6, 0.0) as slm:
        slm.show(np.full((40, 50), 200, np.uint8))
        # A display path that dithers: every pixel comes out one level off.
        real = cv2.imshow
        monkeypatch.setattr(cv2, "imshow", lambda name, img: real(name, img ^ 1))
        with pytest.raises(DeviceError, match=r"2000 of 2000 ROI pixels on the X screen differ from the map"):
            slm.show(np.full((40, 50), 100, np.uint8))
        assert slm.status()["window_rebuilds"] == 1
        monkeypatch.undo()


@pytest.mark.display
def test_verified_show_returns_only_when_the_pixels_are_on_screen(xvfb):
    rng = np.random.default_rng(9)
    with HdmiSlm("slm0", 0, (200, 100, 64, 64), SCREEN, 8e-6, 0.0) as slm:
        assert slm.status()["verified"]
        for _ in range(5):
            gray = rng.integers(0, 256, (64, 64), dtype=np.uint8)
            slm.show(gray)
            np.testing.assert_array_equal(grab_screen(xvfb)[100:164, 200:264, 0], gray)
