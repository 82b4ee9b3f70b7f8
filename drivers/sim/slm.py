"""Simulated SLM: shows maps into the shared ``SimWorld``."""

from __future__ import annotations

import numpy as np

from drivers.errors import DeviceError
from drivers.sim.world import SimWorld
from drivers.slm import Slm


class SimSlm(Slm):
    """An SLM plane of the simulated bench; behaves like an HDMI SLM, minus the window.

    Fault injection (for tests of higher layers): ``inject_show_error(n)`` makes the
    next ``n`` calls to ``show`` raise DeviceError, as an unplugged HDMI cable would.
    """

    driver_name = "sim"

    def __init__(self, world: SimWorld, name: str, roi: tuple[int, int, int, int], screen_shape: tuple[int, int],
                 pitch_m: float, settle_s: float = 0.0):
        super().__init__(name, roi, screen_shape, pitch_m, settle_s)
        self._world = world
        self._fail_shows = 0

    def inject_show_error(self, count: int = 1) -> None:
        """Make the next ``count`` shows fail with DeviceError."""
        self._fail_shows = int(count)

    def _write_hw(self, gray: np.ndarray) -> None:
        if self._fail_shows > 0:
            self._fail_shows -= 1
            raise DeviceError(f"SLM {self.name!r}: display link lost (injected fault)")
        self._world._set_map(self.name, gray)
