"""OpenCV camera driver on a synthetic lossless video (FFV1): averaging, saturation, dark, ROI, timeouts."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from drivers.camera import Frame, OpenCvCamera
from drivers.errors import DeviceError, DeviceTimeout

W, H = 64, 48


def make_frames(n: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    frames = []
    for i in range(n):
        f = rng.integers(0, 200, (H, W), dtype=np.uint8)
        f[:4, :5] = 255  # 20 pixels saturated in every frame
        if i == 1:
            f[10, 10] = 255  # one more, only in frame 1
        frames.append(f)
    return frames


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("cam") / "frames.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 10, (W, H), False)
    assert writer.isOpened(), "this OpenCV build cannot write FFV1"
    frames = make_frames()
    for f in frames:
        writer.write(f)
    writer.release()
    return str(path), frames


def camera(path: str, **kw) -> OpenCvCamera:
    return OpenCvCamera(path, (W, H), bit_depth=8, **kw)


def test_single_grab_is_the_frame_exactly(video):
    path, frames = video
    with camera(path) as cam:
        f = cam.grab()
    assert isinstance(f, Frame) and f.data.dtype == np.float32 and f.n_average == 1
    np.testing.assert_array_equal(f.data, frames[0].astype(np.float32))
    assert f.saturated == 20
    assert f.exposure_s == cam.exposure_s and abs(f.timestamp - time.time()) < 5


def test_average_is_float_mean_and_saturation_counts_any_frame(video):
    path, frames = video
    with camera(path) as cam:
        cam.grab()
        f = cam.grab(n_average=3)
    expected = np.mean([frames[i].astype(np.float64) for i in (1, 2, 3)], axis=0)
    np.testing.assert_allclose(f.data, expected, rtol=0, atol=1e-4)
    assert not np.allclose(expected, np.round(expected)), "test frames must have non-integer means"
    assert f.saturated == 21 and f.n_average == 3


def test_video_loops_like_a_streaming_camera(video):
    path, frames = video
    with camera(path) as cam:
        for i in range(len(frames) + 2):
            f = cam.grab()
            np.testing.assert_array_equal(f.data, frames[i % len(frames)])


def test_dark_subtraction_and_its_exposure_check(video):
    path, frames = video
    with camera(path, exposure_s=2e-3) as cam:
        dark = cam.grab()
        cam.set_dark(dark)
        f = cam.grab()
        assert f.dark_subtracted
        np.testing.assert_array_equal(f.data, frames[1].astype(np.float32) - frames[0])
        with pytest.raises(DeviceError, match="is itself dark-subtracted"):
            cam.set_dark(f)
        cam.exposure_s = 4e-3
        with pytest.raises(DeviceError, match=r"dark frame was taken at 0.002 s / 0 dB but the camera is at 0.004 s"):
            cam.grab()
        cam.set_dark(None)
        assert not cam.grab().dark_subtracted


def test_roi_crops_and_invalidates_dark(video):
    path, frames = video
    with camera(path) as cam:
        cam.set_dark(cam.grab())
        cam.roi = (8, 4, 20, 10)
        assert cam.shape == (10, 20) and not cam.has_dark
        f = cam.grab()
        np.testing.assert_array_equal(f.data, frames[1][4:14, 8:28])
        with pytest.raises(DeviceError, match=r"ROI \[60, 0, 10, 10\] .* does not fit the 64x48 sensor"):
            cam.roi = (60, 0, 10, 10)


def test_wrong_resolution_and_bit_depth_are_refused(video):
    path, _ = video
    with OpenCvCamera(path, (640, 480), bit_depth=8) as cam:
        with pytest.raises(DeviceError, match=r"delivered a 64x48 frame, expected 640x480"):
            cam.grab()
    with OpenCvCamera(path, (W, H), bit_depth=12) as cam:
        with pytest.raises(DeviceError, match=r"delivers 8-bit frames but bit_depth is 12; set bit_depth = 8"):
            cam.grab()


def test_missing_or_bogus_source_names_it(tmp_path):
    missing = str(tmp_path / "nope.avi")
    with pytest.raises(DeviceError, match=rf"camera 'camera' \('{missing}'\): no such video file"):
        camera(missing).connect()
    bogus = tmp_path / "bogus.avi"
    bogus.write_bytes(b"\x00" * 100)
    with pytest.raises(DeviceError, match="could not open it"):
        camera(str(bogus)).connect()
    with pytest.raises(DeviceError, match=r"pixel format 'RGBX' not supported"):
        camera(str(bogus), pixel_format="RGBX")


def test_read_timeout_is_a_clear_error_and_camera_must_reconnect(video):
    path, frames = video
    cam = camera(path, timeout_s=0.2)
    cam.connect()
    real = cam._cap

    class StuckCapture:  # a driver that stops delivering frames, without failing
        def read(self):
            time.sleep(1.0)
            return real.read()

        def __getattr__(self, name):
            return getattr(real, name)

    cam._cap = StuckCapture()
    start = time.monotonic()
    with pytest.raises(DeviceTimeout, match=r"no frame within 0.2 s \(timeout\)"):
        cam.grab()
    assert time.monotonic() - start < 0.8
    with pytest.raises(DeviceError, match="disconnect and reconnect"):
        cam.grab()
    time.sleep(1.0)  # let the stuck read finish before releasing the capture
    cam.disconnect()
    with cam:
        np.testing.assert_array_equal(cam.grab().data, frames[0])


def test_bad_arguments(video):
    path, _ = video
    with camera(path) as cam:
        for bad in (0, -1, 1.5, True):
            with pytest.raises(DeviceError, match="n_average must be an integer >= 1"):
                cam.grab(bad)
        with pytest.raises(DeviceError, match="exposure must be > 0 seconds"):
            cam.exposure_s = 0
        with pytest.raises(DeviceError, match="gain must be >= 0 dB"):
            cam.gain_db = -3
    with pytest.raises(DeviceError, match="not connected"):
        cam.grab()
