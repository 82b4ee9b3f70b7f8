"""Light, dark frames and auto-exposure: getting usable frames out of the bench.

Dark frames are subtracted here rather than with ``Camera.set_dark`` because the
exposure may change during a calibration (a saturated level is re-taken shorter),
and every exposure needs its own dark.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from calibration.errors import CalibrationError

# Auto-exposure aims the brightest pixel at this fraction of the sensor range: the
# split-screen patterns of a sweep can peak ~1.5× above the frame exposure was set on.
TARGET_PEAK = 0.45
MIN_EXPOSURE_S = 1e-6
MAX_EXPOSURE_S = 0.5
# A frame whose brightest pixel is less than this many dark-noise sigmas above the
# dark level has no usable signal.
MIN_SNR = 20.0


@dataclass
class Acquisition:
    """Drives camera, laser, shutter and SLMs for one measurement; counts frames and bench time.

    ``slms`` maps name → ``drivers.slm.Slm``; ``flat`` maps name → the gray every SLM
    shows while another one is measured (uniform maps behave as a constant phase).
    """

    camera: Any
    laser: Any
    shutter: Any | None
    slms: Mapping[str, Any]
    flat: Mapping[str, int] = field(default_factory=dict)
    frames: int = 0
    bench_time_s: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    _dark: dict[float, np.ndarray] = field(default_factory=dict)
    _dark_sigma: float = 1.0
    _light: bool = False

    # -- devices -------------------------------------------------------------

    def light(self, on: bool) -> None:
        """Let the beam through (laser on, shutter open) or block it."""
        if on:
            self.laser.on()
            if self.shutter is not None:
                self.shutter.open()
        else:
            if self.shutter is not None:
                self.shutter.close()
            self.laser.off()
        self._light = on

    def show(self, maps: Mapping[str, np.ndarray]) -> None:
        """Show ``maps`` (name → uint8 ROI map); every other SLM shows its flat gray."""
        for name, slm in self.slms.items():
            gray = maps.get(name)
            if gray is None:
                gray = np.full(slm.shape, self.flat.get(name, 0), dtype=np.uint8)
                if slm.current().shape == gray.shape and np.array_equal(slm.current(), gray):
                    continue
            slm.show(gray)
            self.bench_time_s += slm.settle_s

    @property
    def exposure_s(self) -> float:
        return float(self.camera.exposure_s)

    def _raw(self, n: int) -> Any:
        frame = self.camera.grab(n)
        self.frames += n
        self.bench_time_s += n * frame.exposure_s
        return frame

    # -- frames ------------------------------------------------------------------

    def dark(self, n: int = 2) -> np.ndarray:
        """Dark frame (DN) at the current exposure, taken with the beam blocked, cached per exposure."""
        key = self.exposure_s
        if key not in self._dark:
            was_on = self._light
            self.light(False)
            frame = self._raw(n)
            self._dark[key] = frame.data.astype(np.float32)
            # Pixel-to-pixel spread of an averaged dark ≈ read noise / sqrt(n); scale back to one frame.
            self._dark_sigma = max(float(np.std(frame.data)) * np.sqrt(n), 1e-3)
            if was_on:
                self.light(True)
        return self._dark[key]

    @property
    def dark_sigma_dn(self) -> float:
        """Noise of one dark frame, DN (read noise and dark noise)."""
        return self._dark_sigma

    def grab(self, n: int) -> tuple[np.ndarray, bool]:
        """(dark-subtracted mean of ``n`` frames in DN, saturated?) at the current exposure."""
        dark = self.dark()
        frame = self._raw(n)
        return frame.data - dark, frame.saturated > 0

    def grab_unsaturated(self, n: int, what: str) -> np.ndarray:
        """Like :meth:`grab`, halving the exposure until no pixel saturates (CalibrationError at the shortest)."""
        data, saturated = self.grab(n)
        while saturated:
            if self.exposure_s <= MIN_EXPOSURE_S * 1.0001:
                raise CalibrationError(
                    f"{what}: the camera saturates even at {MIN_EXPOSURE_S:g} s exposure; "
                    "reduce the laser power or add a neutral-density filter")
            self.set_exposure(self.exposure_s / 2)
            data, saturated = self.grab(n)
        return data

    def set_exposure(self, exposure_s: float) -> None:
        self.camera.exposure_s = float(np.clip(exposure_s, MIN_EXPOSURE_S, MAX_EXPOSURE_S))

    def auto_expose(self, what: str) -> np.ndarray:
        """Set the exposure so the current scene peaks near ``TARGET_PEAK`` of the range, unsaturated.

        Returns the last frame taken (dark-subtracted DN). Raises CalibrationError when
        the scene is saturated at the shortest exposure or shows no light at the longest.
        """
        max_dn = float(self.camera.max_dn)
        for _ in range(16):
            data, saturated = self.grab(1)
            usable = max_dn - float(np.median(self.dark()))
            peak = float(np.percentile(data, 99.99))
            exposure = self.exposure_s
            if saturated:
                if exposure <= MIN_EXPOSURE_S * 1.0001:
                    raise CalibrationError(
                        f"{what}: the camera saturates even at {MIN_EXPOSURE_S:g} s exposure; "
                        "reduce the laser power or add a neutral-density filter")
                self.set_exposure(exposure / 8)
                continue
            if peak < MIN_SNR * self.dark_sigma_dn:
                if exposure >= MAX_EXPOSURE_S * 0.9999:
                    raise CalibrationError(
                        f"{what}: no light reaches the camera (brightest pixel {peak:.1f} DN above dark, dark noise "
                        f"{self.dark_sigma_dn:.1f} DN at {exposure:g} s exposure); check that the laser is on, the "
                        "shutter opens and the beam hits the sensor")
                self.set_exposure(exposure * 30)
                continue
            ratio = TARGET_PEAK * usable / peak
            if 0.75 <= ratio <= 1.3 or (ratio > 1 and exposure >= MAX_EXPOSURE_S * 0.9999):
                return data
            self.set_exposure(exposure * float(np.clip(ratio, 1 / 16, 16)))
        raise CalibrationError(f"{what}: auto-exposure did not converge (the light level keeps changing)")
