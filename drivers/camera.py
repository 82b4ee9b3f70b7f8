"""Cameras: the interface every camera implements, and the OpenCV driver.

The base class owns exposure/gain bookkeeping, the ROI crop, averaging in float,
saturation counting and dark subtraction; a device implements ``_open_hw``,
``_close_hw`` and ``_grab_raw`` (one raw full-sensor frame in DN). Third-party
cameras (GenICam...) register a ``Camera`` subclass in the ``labctl.cameras``
entry-point group; see docs/drivers.md.
"""

from __future__ import annotations

import glob
import os
import re
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from drivers.errors import DeviceError, DeviceTimeout

# OpenCV prints a warning for every index that fails to open; discovery expects failures.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")


def list_cameras(max_index: int = 10) -> list[int]:
    """OpenCV camera indices that open. On Linux only existing /dev/video* nodes are tried."""
    import cv2

    nodes = sorted(glob.glob("/dev/video*"))
    if nodes:
        indices = sorted({int(m.group(1)) for n in nodes if (m := re.search(r"video(\d+)$", n))})
    elif os.name == "nt" or os.uname().sysname == "Darwin":
        indices = list(range(max_index))
    else:
        indices = []
    found = []
    for i in indices:
        cap = cv2.VideoCapture(i)
        try:
            if cap.isOpened():
                found.append(i)
        finally:
            cap.release()
    return found


@dataclass(frozen=True)
class Frame:
    """One (possibly averaged) camera frame.

    ``data`` is float32 DN over the camera ROI, averaged in float and dark-subtracted
    when a dark frame is set. ``timestamp`` is the Unix time (seconds) at which the
    last averaged raw frame arrived; ``saturated`` counts ROI pixels that reached
    the maximum DN in any averaged raw frame.
    """

    data: np.ndarray
    timestamp: float
    exposure_s: float
    gain_db: float
    saturated: int
    n_average: int
    dark_subtracted: bool = False


class Camera(ABC):
    """A camera grabbing ``bit_depth`` frames of ``sensor_shape`` (rows, cols) pixels."""

    driver_name = "abstract"

    def __init__(
        self,
        name: str,
        sensor_shape: tuple[int, int],
        bit_depth: int,
        exposure_s: float,
        gain_db: float = 0.0,
        pitch_m: float | None = None,
    ):
        rows, cols = (int(v) for v in sensor_shape)
        if rows <= 0 or cols <= 0:
            raise DeviceError(f"camera {name!r}: sensor shape must be positive, got {sensor_shape!r}")
        if not 1 <= int(bit_depth) <= 16:
            raise DeviceError(f"camera {name!r}: bit_depth must be 1..16, got {bit_depth!r}")
        self.name = name
        self.sensor_shape = (rows, cols)
        self.bit_depth = int(bit_depth)
        self.pitch_m = pitch_m
        self._exposure_s = self._check_exposure(exposure_s)
        self._gain_db = self._check_gain(gain_db)
        self._roi = (0, 0, cols, rows)
        self._dark: Frame | None = None
        self._connected = False
        self._grabs = 0

    # -- properties --------------------------------------------------------

    @property
    def max_dn(self) -> int:
        """Largest raw value the sensor reports (saturation), DN."""
        return (1 << self.bit_depth) - 1

    @property
    def roi(self) -> tuple[int, int, int, int]:
        """(x, y, w, h) of the grabbed region on the sensor, camera pixels."""
        return self._roi

    @roi.setter
    def roi(self, roi: tuple[int, int, int, int]) -> None:
        x, y, w, h = (int(v) for v in roi)
        rows, cols = self.sensor_shape
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > cols or y + h > rows:
            raise DeviceError(f"camera {self.name!r}: ROI {list(roi)} (x, y, w, h) does not fit the {cols}x{rows} sensor")
        if (x, y, w, h) != self._roi:
            self._dark = None  # a dark frame of another region cannot be subtracted
        self._roi = (x, y, w, h)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the frames ``grab`` returns (the ROI)."""
        return (self._roi[3], self._roi[2])

    @property
    def exposure_s(self) -> float:
        """Exposure time, seconds."""
        return self._exposure_s

    @exposure_s.setter
    def exposure_s(self, value: float) -> None:
        v = self._check_exposure(value)
        if self._connected:
            self._apply_exposure(v)
        self._exposure_s = v

    @property
    def gain_db(self) -> float:
        """Analogue gain, dB (0 = unity)."""
        return self._gain_db

    @gain_db.setter
    def gain_db(self, value: float) -> None:
        v = self._check_gain(value)
        if self._connected:
            self._apply_gain(v)
        self._gain_db = v

    @property
    def connected(self) -> bool:
        return self._connected

    def _check_exposure(self, value: Any) -> float:
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = float("nan")
        if not (v > 0 and np.isfinite(v)):
            raise DeviceError(f"camera {self.name!r}: exposure must be > 0 seconds, got {value!r}")
        return v

    def _check_gain(self, value: Any) -> float:
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = float("nan")
        if not (v >= 0 and np.isfinite(v)):
            raise DeviceError(f"camera {self.name!r}: gain must be >= 0 dB, got {value!r}")
        return v

    # -- lifecycle ---------------------------------------------------------

    def connect(self) -> "Camera":
        if not self._connected:
            self._open_hw()
            self._connected = True
            try:
                self._apply_exposure(self._exposure_s)
                self._apply_gain(self._gain_db)
            except BaseException:
                self.disconnect()
                raise
        return self

    def disconnect(self) -> None:
        if self._connected:
            self._connected = False
            self._close_hw()

    def __enter__(self) -> "Camera":
        return self.connect()

    def __exit__(self, *exc: Any) -> None:
        self.disconnect()

    # -- frames ------------------------------------------------------------

    def set_dark(self, frame: Frame | None) -> None:
        """Subtract ``frame`` from every later grab (None stops subtracting).

        The dark frame must be a raw (not dark-subtracted) frame of the current ROI;
        grabs at another exposure or gain are refused until a new dark is set.
        """
        if frame is None:
            self._dark = None
            return
        if not isinstance(frame, Frame):
            raise DeviceError(f"camera {self.name!r}: set_dark expects a Frame, got {type(frame).__name__}")
        if frame.dark_subtracted:
            raise DeviceError(f"camera {self.name!r}: the dark frame is itself dark-subtracted; grab it with no dark set")
        if frame.data.shape != self.shape:
            raise DeviceError(f"camera {self.name!r}: dark frame shape {frame.data.shape} does not match the ROI {self.shape}")
        self._dark = frame

    @property
    def has_dark(self) -> bool:
        return self._dark is not None

    def grab(self, n_average: int = 1) -> Frame:
        """Grab ``n_average`` raw frames and return their float mean over the ROI."""
        if not self._connected:
            raise DeviceError(f"camera {self.name!r} is not connected (use it as a context manager or call connect())")
        if not isinstance(n_average, (int, np.integer)) or isinstance(n_average, bool) or n_average < 1:
            raise DeviceError(f"camera {self.name!r}: n_average must be an integer >= 1, got {n_average!r}")
        dark = self._dark
        if dark is not None and (dark.exposure_s != self._exposure_s or dark.gain_db != self._gain_db):
            raise DeviceError(
                f"camera {self.name!r}: dark frame was taken at {dark.exposure_s:g} s / {dark.gain_db:g} dB but the "
                f"camera is at {self._exposure_s:g} s / {self._gain_db:g} dB; set a new dark frame (or set_dark(None))"
            )
        x, y, w, h = self._roi
        acc: np.ndarray | None = None
        peak: np.ndarray | None = None
        stamp = 0.0
        for _ in range(int(n_average)):
            raw = self._grab_raw()
            if raw.shape[:2] != self.sensor_shape:
                raise DeviceError(
                    f"camera {self.name!r}: delivered a {raw.shape[1]}x{raw.shape[0]} frame, expected "
                    f"{self.sensor_shape[1]}x{self.sensor_shape[0]} (check the configured resolution)"
                )
            crop = raw[y : y + h, x : x + w]
            if acc is None or peak is None:
                # float64 sums stay exact for any realistic number of 16-bit frames;
                # a single frame converts to float32 exactly and directly.
                acc, peak = crop.astype(np.float64 if n_average > 1 else np.float32), crop
            else:
                acc += crop
                peak = np.maximum(peak, crop)
            stamp = time.time()
        assert acc is not None and peak is not None
        self._grabs += n_average
        data = (acc / n_average).astype(np.float32) if n_average > 1 else acc
        if dark is not None:
            data = data - dark.data
        return Frame(
            data=data,
            timestamp=stamp,
            exposure_s=self._exposure_s,
            gain_db=self._gain_db,
            saturated=int(np.count_nonzero(peak >= self.max_dn)),
            n_average=int(n_average),
            dark_subtracted=dark is not None,
        )

    def status(self) -> dict[str, Any]:
        return {
            "kind": "camera",
            "name": self.name,
            "driver": self.driver_name,
            "connected": self._connected,
            "sensor_shape": list(self.sensor_shape),
            "roi": list(self._roi),
            "shape": list(self.shape),
            "bit_depth": self.bit_depth,
            "exposure_s": self._exposure_s,
            "gain_db": self._gain_db,
            "pitch_m": self.pitch_m,
            "dark_set": self._dark is not None,
            "frames_grabbed": self._grabs,
        }

    # -- hooks -------------------------------------------------------------

    def _open_hw(self) -> None:
        """Acquire the camera; raise DeviceError naming it on failure."""

    def _close_hw(self) -> None:
        """Release the camera; must not raise."""

    def _apply_exposure(self, exposure_s: float) -> None:
        """Send the exposure to the hardware (called only while open)."""

    def _apply_gain(self, gain_db: float) -> None:
        """Send the gain to the hardware (called only while open)."""

    @abstractmethod
    def _grab_raw(self) -> np.ndarray:
        """One full-sensor raw frame, (rows, cols) integer-valued DN."""


# ---------------------------------------------------------------------------
# OpenCV VideoCapture driver

# V4L2 reports absolute exposure in units of 100 µs; other backends are not portable.
_V4L2_EXPOSURE_UNIT_S = 100e-6
_PIXEL_FORMATS = ("GREY", "Y16 ", "Y10 ", "Y12 ", "YUYV", "MJPG")


class OpenCvCamera(Camera):
    """A camera read through ``cv2.VideoCapture``: a device index or a video file/URL.

    A video file stands in for a camera (tests, replays): it loops at its end, and
    exposure/gain are bookkeeping only because a file has no sensor to set. On a
    live device a refused exposure or gain is a DeviceError. Colour frames are
    converted to gray (equal channels of a mono camera convert exactly).
    ``timeout_s`` bounds every read; a read that does not return in time raises
    DeviceTimeout and the camera must be reconnected.
    """

    driver_name = "opencv"

    def __init__(
        self,
        device: int | str,
        resolution: tuple[int, int],
        bit_depth: int = 8,
        exposure_s: float = 1e-3,
        gain_db: float = 0.0,
        pixel_format: str | None = None,
        timeout_s: float = 2.0,
        name: str = "camera",
        pitch_m: float | None = None,
    ):
        width, height = resolution
        super().__init__(name, (height, width), bit_depth, exposure_s, gain_db, pitch_m)
        if pixel_format is not None:
            fourcc = pixel_format.ljust(4)
            if fourcc not in _PIXEL_FORMATS:
                raise DeviceError(
                    f"camera {name!r}: pixel format {pixel_format!r} not supported; expected one of "
                    + ", ".join(f.strip() for f in _PIXEL_FORMATS)
                )
            pixel_format = fourcc
        if not timeout_s > 0:
            raise DeviceError(f"camera {name!r}: timeout_s must be > 0 seconds, got {timeout_s!r}")
        self.device = device
        self.pixel_format = pixel_format
        self.timeout_s = float(timeout_s)
        self._cap: Any = None
        self._is_file = isinstance(device, str) and os.path.exists(device)
        self._broken: str | None = None

    def _where(self) -> str:
        return f"camera {self.name!r} ({self.device!r})"

    def _open_hw(self) -> None:
        import cv2

        if isinstance(self.device, str) and not self._is_file and "://" not in self.device:
            raise DeviceError(f"{self._where()}: no such video file or device")
        cap = cv2.VideoCapture(self.device)
        if not cap.isOpened():
            cap.release()
            raise DeviceError(f"{self._where()}: OpenCV could not open it (unplugged, busy, or not a video)")
        self._cap = cap
        self._broken = None
        if not self._is_file:
            rows, cols = self.sensor_shape
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, cols)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, rows)
            if self.pixel_format is not None:
                ok = cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.pixel_format))
                if not ok:
                    self._close_hw()
                    raise DeviceError(f"{self._where()}: refused pixel format {self.pixel_format.strip()!r}")
                if self.pixel_format.strip() in ("Y16", "Y10", "Y12"):
                    cap.set(cv2.CAP_PROP_CONVERT_RGB, 0)

    def _close_hw(self) -> None:
        if self._cap is not None:
            try:
                self._cap.release()
            finally:
                self._cap = None

    def _apply_exposure(self, exposure_s: float) -> None:
        if self._is_file:
            return
        import cv2

        self._cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, 1)  # V4L2: 1 = manual
        if not self._cap.set(cv2.CAP_PROP_EXPOSURE, exposure_s / _V4L2_EXPOSURE_UNIT_S):
            raise DeviceError(f"{self._where()}: refused exposure {exposure_s:g} s")

    def _apply_gain(self, gain_db: float) -> None:
        if self._is_file:
            return
        import cv2

        if not self._cap.set(cv2.CAP_PROP_GAIN, gain_db):
            raise DeviceError(f"{self._where()}: refused gain {gain_db:g} dB")

    def _read_once(self) -> tuple[bool, Any]:
        ok, img = self._cap.read()
        if not ok and self._is_file:
            import cv2

            # End of a stand-in video file: start again, like a camera that keeps streaming.
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, img = self._cap.read()
        return ok, img

    def _grab_raw(self) -> np.ndarray:
        import cv2

        if self._broken:
            raise DeviceError(f"{self._where()}: {self._broken}; disconnect and reconnect the camera")
        result: list[Any] = []
        error: list[BaseException] = []

        def reader() -> None:
            try:
                result.append(self._read_once())
            except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                error.append(e)

        # VideoCapture.read has no portable timeout; a daemon thread lets us give up.
        t = threading.Thread(target=reader, name=f"camera-read-{self.name}", daemon=True)
        t.start()
        t.join(self.timeout_s)
        if t.is_alive():
            self._broken = f"a read did not return within {self.timeout_s:g} s"
            raise DeviceTimeout(f"{self._where()}: no frame within {self.timeout_s:g} s (timeout)")
        if error:
            raise DeviceError(f"{self._where()}: read failed: {error[0]}")
        ok, img = result[0]
        if not ok or img is None:
            raise DeviceError(f"{self._where()}: delivered no frame (unplugged or stream ended)")
        if img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.shape[2] == 3 else img[:, :, 0]
        bits = 8 if img.dtype == np.uint8 else 16
        if img.dtype not in (np.uint8, np.uint16):
            raise DeviceError(f"{self._where()}: unsupported frame dtype {img.dtype} (expected 8- or 16-bit)")
        if bits == 8 and self.bit_depth != 8:
            raise DeviceError(
                f"{self._where()}: delivers 8-bit frames but bit_depth is {self.bit_depth}; set bit_depth = 8"
            )
        return img

    def status(self) -> dict[str, Any]:
        s = super().status()
        s.update(device=self.device, pixel_format=(self.pixel_format or "").strip() or None, timeout_s=self.timeout_s)
        return s
