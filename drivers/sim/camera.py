"""Simulated camera: renders the shared ``SimWorld`` onto a noisy sensor."""

from __future__ import annotations

import numpy as np

from drivers.camera import Camera
from drivers.errors import DeviceError, DeviceTimeout
from drivers.sim.world import SimWorld


class SimCamera(Camera):
    """The simulated bench's camera (``pitch_m`` metres per sensor pixel).

    Fault injection: ``inject_grab_error(n, timeout=False)`` makes the next ``n``
    raw reads fail with DeviceError (DeviceTimeout when ``timeout``), as a camera
    that stops streaming would.
    """

    driver_name = "sim"

    def __init__(self, world: SimWorld, name: str, resolution: tuple[int, int], pitch_m: float, bit_depth: int = 12,
                 exposure_s: float = 1e-3, gain_db: float = 0.0):
        width, height = resolution
        super().__init__(name, (height, width), bit_depth, exposure_s, gain_db, pitch_m)
        self._world = world
        self._fail_grabs = 0
        self._fail_timeout = False

    def inject_grab_error(self, count: int = 1, timeout: bool = False) -> None:
        """Make the next ``count`` raw reads fail (DeviceTimeout if ``timeout``)."""
        self._fail_grabs = int(count)
        self._fail_timeout = bool(timeout)

    def _grab_raw(self) -> np.ndarray:
        if self._fail_grabs > 0:
            self._fail_grabs -= 1
            if self._fail_timeout:
                raise DeviceTimeout(f"camera {self.name!r}: no frame within the timeout (injected fault)")
            raise DeviceError(f"camera {self.name!r}: frame transfer failed (injected fault)")
        assert self.pitch_m is not None
        return self._world._render(self.sensor_shape, self.pitch_m, self.bit_depth, self._exposure_s, self._gain_db)
