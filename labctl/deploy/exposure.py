"""Auto-exposure through the bench server, shared by deploy and hardware-in-the-loop runs.

(``calibration.acquire`` has its own, driver-level loop: it judges light against the
measured dark noise and knows the camera's shortest exposure.)
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from drivers.errors import DeviceError

# The brightest probe pixel as a share of the camera's range: inputs brighter than
# the probed ones still have 2x headroom.
TARGET_PEAK = 0.5
MAX_EXPOSURE_S = 10.0
MAX_TRIES = 12


def settle_exposure(start_s: float, probe: Callable[[float], tuple[float, int]], max_dn: float,
                    echo: Callable[[str], None]) -> float:
    """An exposure (seconds) whose brightest probe pixel sits near ``TARGET_PEAK`` of ``max_dn``.

    ``probe(exposure_s)`` sets that exposure, grabs the probe scenes and returns
    (peak DN above dark, saturated pixel count). Saturation quarters the exposure; no
    light multiplies it by 30; otherwise it is scaled towards the target (at most 16×
    per step). Raises DeviceError when no light arrives even at ``MAX_EXPOSURE_S`` or
    the level never settles.
    """
    exposure = float(start_s)
    for _ in range(MAX_TRIES):
        peak, saturated = probe(exposure)
        if saturated:
            exposure /= 4
            continue
        if peak <= 0:
            exposure *= 30
        else:
            ratio = TARGET_PEAK * max_dn / peak
            if 0.7 <= ratio <= 1.4:
                echo(f"exposure {exposure:.4g} s: brightest probe pixel {peak:.0f} DN of {max_dn:.0f}")
                return exposure
            exposure *= float(np.clip(ratio, 1 / 16, 16))
        if exposure > MAX_EXPOSURE_S:
            raise DeviceError(f"no light reaches the camera even at {MAX_EXPOSURE_S:g} s exposure; check the "
                              "laser, the shutter and the input SLM")
    raise DeviceError("auto-exposure did not settle: the light level keeps changing (laser unstable?)")
