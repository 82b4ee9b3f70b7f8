"""The Slm contract, run against every implementation (simulated, and HDMI on Xvfb)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from drivers.errors import DeviceError
from drivers.slm import Slm, upsample_map

ROI = (30, 20, 60, 40)  # x, y, w, h
SCREEN = (480, 640)


def make_sim(settle_s: float) -> Slm:
    from drivers.sim.slm import SimSlm
    from drivers.sim.truth import SlmTruth
    from drivers.sim.world import SimWorld

    world = SimWorld(shape=(40, 60), pitch_m=8e-6, wavelength_m=532e-9, distances_m=(0.01,))
    world.add_slm("in", "input", (40, 60), 8e-6, 1, SlmTruth.ideal("input"))
    return SimSlm(world, "in", ROI, SCREEN, 8e-6, settle_s)


def make_hdmi(settle_s: float, request) -> Slm:
    import screeninfo

    from drivers.hdmi import HdmiSlm

    request.getfixturevalue("xvfb")

    class M:
        x, y, width, height, name, is_primary = 640, 0, 640, 480, "HDMI-1", False

    mp = request.getfixturevalue("monkeypatch")
    mp.setattr(screeninfo, "get_monitors", lambda: [M()])
    return HdmiSlm("hdmi", "HDMI-1", ROI, SCREEN, 8e-6, settle_s)


@pytest.fixture(params=["sim", pytest.param("hdmi", marks=pytest.mark.display)])
def factory(request):
    if request.param == "sim":
        return make_sim
    return lambda settle_s: make_hdmi(settle_s, request)


def test_geometry(factory):
    slm = factory(0.0)
    assert slm.shape == (40, 60) and slm.roi == ROI and slm.screen_shape == SCREEN and slm.pitch_m == 8e-6


def test_connect_blanks_and_show_keeps_an_exact_copy(factory):
    with factory(0.0) as slm:
        assert slm.connected
        assert slm.current().shape == (40, 60) and not slm.current().any()
        gray = np.random.default_rng(0).integers(0, 256, (40, 60), dtype=np.uint8)
        slm.show(gray)
        gray[0, 0] ^= 1  # the caller's array is not the shown map
        shown = slm.current()
        assert shown[0, 0] != gray[0, 0]
        shown[:] = 0
        assert slm.current().any()
    assert not slm.connected and not slm.current().any()


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((60, 40), np.uint8), r"map shape \(60, 40\) does not match the ROI \(40, 60\)"),
        (np.zeros((40, 61), np.uint8), "never resized"),
        (np.zeros((40, 60), np.int64), "expected dtype uint8, got int64"),
        (np.zeros((40, 60), np.float32), "maps are never cast"),
        (np.zeros((40, 60, 3), np.uint8), "does not match the ROI"),
        ([[0] * 60] * 40, "expected a numpy uint8 array, got list"),
    ],
)
def test_refuses_anything_but_the_roi_shape_in_uint8(factory, bad, message):
    with factory(0.0) as slm:
        ok = np.full((40, 60), 5, np.uint8)
        slm.show(ok)
        with pytest.raises(DeviceError, match=message):
            slm.show(bad)
        np.testing.assert_array_equal(slm.current(), ok)


def test_show_waits_the_settle_time(factory):
    with factory(0.05) as slm:
        start = time.monotonic()
        slm.show(np.ones((40, 60), np.uint8))
        assert time.monotonic() - start >= 0.05


def test_show_before_connect_is_an_error(factory):
    slm = factory(0.0)
    with pytest.raises(DeviceError, match="is not connected"):
        slm.show(np.zeros((40, 60), np.uint8))


def test_status_is_json_and_tracks_the_map(factory):
    with factory(0.0) as slm:
        before = slm.status()
        slm.show(np.full((40, 60), 3, np.uint8))
        after = json.loads(json.dumps(slm.status()))
    assert after["maps_shown"] == before["maps_shown"] + 1
    assert after["current_crc32"] != before["current_crc32"]
    assert after["connected"] and after["shape"] == [40, 60] and after["roi"] == list(ROI)


def test_upsample_map_is_exact_repeat():
    n = np.arange(6, dtype=np.uint8).reshape(2, 3)
    u = upsample_map(n, 2)
    assert u.shape == (4, 6) and u.dtype == np.uint8
    np.testing.assert_array_equal(u[::2, ::2], n)
    np.testing.assert_array_equal(u[1::2, 1::2], n)
    for bad in (0, 1.5, True):
        with pytest.raises(DeviceError, match="upsample must be an integer >= 1"):
            upsample_map(n, bad)
    with pytest.raises(DeviceError, match="must be 2-D"):
        upsample_map(np.zeros(3, np.uint8), 2)


def test_roi_outside_the_screen_is_refused():
    from drivers.hdmi import HdmiSlm

    with pytest.raises(DeviceError, match=r"ROI \[600, 0, 60, 40\] .* does not fit its 640x480 screen"):
        HdmiSlm("x", 0, (600, 0, 60, 40), SCREEN, 8e-6)
