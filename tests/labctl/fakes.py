"""A small in-memory bench with the driver interfaces, for server tests.

The camera "sees" the input SLM: every frame is the mean gray of the input map in
one half of the sensor and its first pixel in the other, so detector scores change
with the input and a test can tell which map produced which frame. Faults are
injected the way the simulated devices allow it: a camera that fails after n grabs,
a camera that is slow.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from drivers.camera import Frame
from drivers.errors import DeviceError


class FakeSlm:
    def __init__(self, name: str, shape: tuple[int, int] = (20, 30)):
        self.name = name
        self.shape = shape
        self.pitch_m = 36e-6
        self._current = np.zeros(shape, np.uint8)
        self.shown = 0
        self.fail = False
        self.threads: set[str] = set()

    def show(self, gray: np.ndarray) -> None:
        self.threads.add(threading.current_thread().name)
        if self.fail:
            raise DeviceError(f"SLM {self.name!r}: HDMI output lost")
        if not isinstance(gray, np.ndarray) or gray.dtype != np.uint8 or gray.shape != self.shape:
            raise DeviceError(f"SLM {self.name!r}: expected uint8 {self.shape}")
        self._current = gray.copy()
        self.shown += 1

    def blank(self) -> None:
        self.show(np.zeros(self.shape, np.uint8))

    def current(self) -> np.ndarray:
        return self._current.copy()

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "maps_shown": self.shown,
                "mean_gray": float(self._current.mean())}


class FakeCamera:
    def __init__(self, source: FakeSlm, shape: tuple[int, int] = (24, 32)):
        self.name = "cam"
        self.shape = shape
        self.bit_depth = 12
        self.exposure_s = 1e-3
        self.gain_db = 0.0
        self.source = source
        self.grabs = 0
        self.fail_after: int | None = None  # raise DeviceError on the grab after this many
        self.delay_s = 0.0
        self.dark: Frame | None = None

    def set_dark(self, frame: Frame | None) -> None:
        self.dark = frame

    def grab(self, n_average: int = 1) -> Frame:
        if self.fail_after is not None and self.grabs >= self.fail_after:
            raise DeviceError("camera 'cam': frame timeout (USB link reset)")
        if self.delay_s:
            time.sleep(self.delay_s)
        self.grabs += 1
        src = self.source.current()
        data = np.zeros(self.shape, np.float32)
        data[:, : self.shape[1] // 2] = src.mean()
        data[:, self.shape[1] // 2:] = src.flat[0]
        if self.dark is not None:
            data = data - self.dark.data
        return Frame(data=data, timestamp=time.time(), exposure_s=self.exposure_s, gain_db=self.gain_db,
                     saturated=0, n_average=n_average)

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "exposure_s": self.exposure_s, "gain_db": self.gain_db, "grabs": self.grabs}


class FakeLaser:
    def __init__(self) -> None:
        self.is_on = False
        self.power_w = 1e-3

    def on(self) -> None:
        self.is_on = True

    def off(self) -> None:
        self.is_on = False

    def status(self) -> dict[str, Any]:
        return {"on": self.is_on, "power_w": self.power_w}


class FakeShutter:
    def __init__(self) -> None:
        self.is_open = False

    def open(self) -> None:
        self.is_open = True

    def close(self) -> None:
        self.is_open = False

    def status(self) -> dict[str, Any]:
        return {"open": self.is_open}


class FakeBench:
    def __init__(self, shape: tuple[int, int] = (20, 30), layers: int = 2):
        self.input_slm = FakeSlm("in", shape)
        self.layer_slms = [FakeSlm(f"l{i + 1}", shape) for i in range(layers)]
        self.slms = {s.name: s for s in [self.input_slm, *self.layer_slms]}
        self.camera = FakeCamera(self.input_slm)
        self.laser = FakeLaser()
        self.shutter = FakeShutter()
        self.closed = False

    def close(self) -> None:
        self.closed = True


def start_server(bench: Any = None, **kwargs: Any):
    """A BenchServer on a free loopback port, serving in a background thread."""
    from labctl.server import BenchServer

    server = BenchServer(bench if bench is not None else FakeBench(), bind="tcp://127.0.0.1:*",
                         bench_name="fake", **kwargs)
    server.start()
    return server
