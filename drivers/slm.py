"""The SLM interface every spatial light modulator implements.

An SLM shows 8-bit gray "voltage maps" in a region of interest (ROI) of its screen.
The base class owns everything common — map validation, the settle wait, the
bookkeeping of what is shown — and a device implements three hooks: ``_open_hw``,
``_write_hw`` and ``_close_hw``.
"""

from __future__ import annotations

import time
import zlib
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from drivers.errors import DeviceError


def upsample_map(neurons: np.ndarray, upsample: int) -> np.ndarray:
    """Repeat every neuron ``upsample`` times along both axes (nearest neighbour, exact).

    A DONN layer of (N, N) neurons becomes an (N·u, N·u) SLM map; ``np.repeat`` keeps
    the values bit-exact, which interpolation would not.
    """
    if not isinstance(upsample, (int, np.integer)) or isinstance(upsample, bool) or upsample < 1:
        raise DeviceError(f"upsample must be an integer >= 1, got {upsample!r}")
    a = np.asarray(neurons)
    if a.ndim != 2:
        raise DeviceError(f"a neuron map must be 2-D (rows, cols), got shape {a.shape}")
    return np.repeat(np.repeat(a, upsample, axis=0), upsample, axis=1)


class Slm(ABC):
    """A spatial light modulator showing uint8 maps in a fixed ROI of its screen.

    ``roi`` is (x, y, w, h) on the screen in SLM pixels; ``shape`` is (h, w), the only
    map shape ``show`` accepts. ``pitch_m`` is the pixel pitch in metres and
    ``settle_s`` the liquid-crystal settle time waited after every map, in seconds.
    """

    def __init__(
        self,
        name: str,
        roi: tuple[int, int, int, int],
        screen_shape: tuple[int, int],
        pitch_m: float,
        settle_s: float = 0.0,
    ):
        x, y, w, h = (int(v) for v in roi)
        rows, cols = (int(v) for v in screen_shape)
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > cols or y + h > rows:
            raise DeviceError(
                f"SLM {name!r}: ROI {list(roi)} (x, y, w, h) does not fit its {cols}x{rows} screen"
            )
        if not pitch_m > 0:
            raise DeviceError(f"SLM {name!r}: pitch_m must be > 0 metres, got {pitch_m!r}")
        if not settle_s >= 0:
            raise DeviceError(f"SLM {name!r}: settle_s must be >= 0 seconds, got {settle_s!r}")
        self.name = name
        self.roi = (x, y, w, h)
        self.screen_shape = (rows, cols)
        self.pitch_m = float(pitch_m)
        self.settle_s = float(settle_s)
        self._current = np.zeros((h, w), dtype=np.uint8)
        self._connected = False
        self._shown = 0

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the ROI in SLM pixels: the shape ``show`` accepts."""
        return (self.roi[3], self.roi[2])

    @property
    def connected(self) -> bool:
        return self._connected

    # -- lifecycle ---------------------------------------------------------

    def connect(self) -> "Slm":
        """Acquire the device and show a blank map (gray 0)."""
        if not self._connected:
            self._open_hw()
            self._connected = True
            self.blank()
        return self

    def disconnect(self) -> None:
        """Blank the SLM and release it; safe to call twice."""
        if not self._connected:
            return
        try:
            self.blank()
        finally:
            self._connected = False
            self._close_hw()

    def __enter__(self) -> "Slm":
        return self.connect()

    def __exit__(self, *exc: Any) -> None:
        self.disconnect()

    # -- maps --------------------------------------------------------------

    def show(self, gray: np.ndarray) -> None:
        """Show ``gray`` (uint8, exactly ``shape``) in the ROI, then wait ``settle_s``.

        Anything else is refused: a map is never resized, cast or clipped.
        """
        if not self._connected:
            raise DeviceError(f"SLM {self.name!r} is not connected (use it as a context manager or call connect())")
        if not isinstance(gray, np.ndarray):
            raise DeviceError(f"SLM {self.name!r}: expected a numpy uint8 array, got {type(gray).__name__}")
        if gray.dtype != np.uint8:
            raise DeviceError(f"SLM {self.name!r}: expected dtype uint8, got {gray.dtype} (maps are never cast)")
        if gray.shape != self.shape:
            raise DeviceError(
                f"SLM {self.name!r}: map shape {gray.shape} does not match the ROI {self.shape} "
                "(rows, cols); maps are never resized"
            )
        frozen = np.array(gray, dtype=np.uint8, copy=True, order="C")
        frozen.flags.writeable = False
        self._write_hw(frozen)
        self._current = frozen
        self._shown += 1
        if self.settle_s > 0:
            time.sleep(self.settle_s)

    def blank(self) -> None:
        """Show gray 0 everywhere in the ROI."""
        self.show(np.zeros(self.shape, dtype=np.uint8))

    def hold(self, seconds: float) -> None:
        """Wait ``seconds`` while keeping the shown map alive (a GUI window keeps repainting)."""
        deadline = time.monotonic() + max(0.0, float(seconds))
        while (left := deadline - time.monotonic()) > 0:
            self._idle(min(left, 0.05))

    def _idle(self, seconds: float) -> None:
        """Let the device run for ``seconds`` (default: sleep)."""
        time.sleep(seconds)

    def current(self) -> np.ndarray:
        """A copy of the map shown now (uint8, ``shape``)."""
        return self._current.copy()

    def status(self) -> dict[str, Any]:
        """Public state, JSON-serialisable."""
        return {
            "kind": "slm",
            "name": self.name,
            "driver": self.driver_name,
            "connected": self._connected,
            "roi": list(self.roi),
            "shape": list(self.shape),
            "screen_shape": list(self.screen_shape),
            "pitch_m": self.pitch_m,
            "settle_s": self.settle_s,
            "maps_shown": self._shown,
            "current_crc32": zlib.crc32(self._current.tobytes()),
        }

    driver_name = "abstract"

    # -- hooks -------------------------------------------------------------

    def _open_hw(self) -> None:
        """Acquire the hardware (window, port...). Raise DeviceError on failure."""

    def _close_hw(self) -> None:
        """Release the hardware; must not raise."""

    @abstractmethod
    def _write_hw(self, gray: np.ndarray) -> None:
        """Put the validated map (uint8, ``shape``, read-only) on the device."""
