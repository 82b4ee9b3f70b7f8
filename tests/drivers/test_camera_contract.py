"""The Camera contract, run against the OpenCV driver (on a video file) and the simulated camera."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from drivers.camera import Camera, Frame
from drivers.errors import DeviceError


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("cc") / "v.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 10, (80, 60), False)
    rng = np.random.default_rng(3)
    for _ in range(5):
        w.write(rng.integers(0, 250, (60, 80), dtype=np.uint8))
    w.release()
    return str(path)


def make_sim() -> Camera:
    from labctl.bench import open_bench
    from labctl.config import load_bench

    return open_bench(load_bench("sim")).camera


@pytest.fixture(params=["opencv", "sim"])
def cam(request, video):
    if request.param == "opencv":
        from drivers.camera import OpenCvCamera

        return OpenCvCamera(video, (80, 60), bit_depth=8)
    return make_sim()


def test_frame_metadata_and_type(cam):
    with cam:
        f = cam.grab()
    assert isinstance(f, Frame)
    assert f.data.dtype == np.float32 and f.data.shape == cam.shape
    assert f.exposure_s == cam.exposure_s and f.gain_db == cam.gain_db
    assert 0 <= f.saturated <= f.data.size and f.n_average == 1 and not f.dark_subtracted
    assert f.timestamp > 0
    assert 0 <= f.data.min() and f.data.max() <= cam.max_dn == (1 << cam.bit_depth) - 1


def test_averaging_reduces_noise_or_keeps_the_scene(cam):
    with cam:
        f = cam.grab(n_average=4)
    assert f.n_average == 4 and f.data.shape == cam.shape


def test_dark_subtraction_of_a_static_scene(cam):
    with cam:
        cam.set_dark(cam.grab(n_average=4))
        f = cam.grab(n_average=4)
    assert f.dark_subtracted
    assert abs(float(f.data.mean())) < 0.2 * cam.max_dn  # same sensor, no light change


def test_roi_and_shape(cam):
    with cam:
        rows, cols = cam.sensor_shape
        cam.roi = (2, 3, cols // 2, rows // 2)
        assert cam.shape == (rows // 2, cols // 2)
        assert cam.grab().data.shape == cam.shape


def test_exposure_and_gain_are_validated_and_kept(cam):
    with cam:
        cam.exposure_s = 2e-3
        cam.gain_db = 3.0
        assert cam.exposure_s == 2e-3 and cam.gain_db == 3.0
        with pytest.raises(DeviceError):
            cam.exposure_s = -1
        with pytest.raises(DeviceError):
            cam.gain_db = float("nan")
        assert cam.exposure_s == 2e-3


def test_status_is_json(cam):
    with cam:
        s = json.loads(json.dumps(cam.status()))
    assert s["kind"] == "camera" and s["bit_depth"] == cam.bit_depth and s["connected"]


def test_grab_needs_connect(cam):
    with pytest.raises(DeviceError, match="not connected"):
        cam.grab()
