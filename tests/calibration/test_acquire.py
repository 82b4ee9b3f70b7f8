"""Exposure control against a scripted camera: converges, and fails clearly at the limits."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from calibration.acquire import MAX_EXPOSURE_S, MIN_EXPOSURE_S, TARGET_PEAK, Acquisition
from calibration.errors import CalibrationError


class ScriptedCamera:
    """Signal proportional to exposure (``rate_dn_per_s`` at the brightest pixel), 12-bit, dark 100 DN."""

    max_dn = 4095

    def __init__(self, rate_dn_per_s: float):
        self.exposure_s = 1e-3
        self.rate = rate_dn_per_s
        self.light = False
        self.rng = np.random.default_rng(0)

    def grab(self, n: int = 1):
        img = np.full((20, 20), 100.0) + self.rng.normal(0, 2, (20, 20))
        if self.light:
            img[5:10, 5:10] += self.rate * self.exposure_s
        raw = np.clip(img, 0, self.max_dn)
        return SimpleNamespace(data=raw.astype(np.float32), saturated=int((raw >= self.max_dn).sum()),
                               exposure_s=self.exposure_s)


class Switch:
    def __init__(self, cam):
        self.cam = cam

    def on(self):
        self.cam.light = True

    def off(self):
        self.cam.light = False


def _acq(rate):
    cam = ScriptedCamera(rate)
    return Acquisition(cam, Switch(cam), None, {}), cam


def test_auto_exposure_reaches_the_target_without_saturating():
    acq, cam = _acq(5e6)  # saturates at the initial 1 ms
    acq.light(True)
    data = acq.auto_expose("test")
    peak = float(data.max())
    assert 0.7 * TARGET_PEAK * 3995 <= peak <= 1.35 * TARGET_PEAK * 3995
    assert acq.frames < 16


def test_no_light_at_longest_exposure_is_an_error():
    acq, cam = _acq(0.0)
    acq.light(True)
    with pytest.raises(CalibrationError, match="no light reaches the camera"):
        acq.auto_expose("test")
    assert cam.exposure_s == pytest.approx(MAX_EXPOSURE_S)


def test_saturation_at_shortest_exposure_is_an_error_not_a_loop():
    acq, cam = _acq(1e12)
    acq.light(True)
    with pytest.raises(CalibrationError, match="saturates even at"):
        acq.auto_expose("test")
    cam.exposure_s = 4e-6
    with pytest.raises(CalibrationError, match="saturates even at"):
        acq.grab_unsaturated(1, "test")
    assert cam.exposure_s == pytest.approx(MIN_EXPOSURE_S)


def test_dark_is_taken_with_the_beam_blocked_and_per_exposure():
    acq, cam = _acq(1e5)
    acq.light(True)
    data, _ = acq.grab(1)
    assert cam.light  # the beam is back on after the dark frame
    assert abs(float(np.median(data))) < 3 and data.max() > 90
    cam.exposure_s = 2e-3
    acq.grab(1)
    assert acq.frames == 2 + 1 + 2 + 1  # a new dark for the new exposure
