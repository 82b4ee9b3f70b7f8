"""Phase unwrapping along the gray axis that survives noisy levels.

``np.unwrap`` trusts every sample: one noisy level (a dark gray whose phase is
poorly measured) can add a spurious 2π to every level after it. Here each level
is unwrapped against a prediction extrapolated from the last *reliable* levels,
and unreliable levels never move that prediction.
"""

from __future__ import annotations

import math

import numpy as np


def unwrap_robust(phase_rad: np.ndarray, std_rad: np.ndarray, max_std_rad: float = 0.3, window: int = 4) -> np.ndarray:
    """Unwrap ``phase_rad`` (wrapped, radians, ordered by gray) using ``std_rad`` as per-level reliability.

    A level is reliable when its std is at most ``max_std_rad``. Each level takes the
    2π branch closest to a linear extrapolation of the last ``window`` reliable
    levels (a constant when fewer than two are known).
    """
    phase = np.asarray(phase_rad, dtype=np.float64)
    std = np.asarray(std_rad, dtype=np.float64)
    out = np.empty_like(phase)
    ref_x: list[int] = []
    ref_y: list[float] = []
    for i, p in enumerate(phase):
        if not ref_x:
            pred = p
        elif len(ref_x) == 1:
            pred = ref_y[-1]
        else:
            x = np.array(ref_x[-window:], dtype=np.float64)
            y = np.array(ref_y[-window:])
            slope, icpt = np.polyfit(x, y, 1)
            pred = slope * i + icpt
        out[i] = p + 2 * math.pi * round((pred - p) / (2 * math.pi))
        if std[i] <= max_std_rad or not ref_x:
            ref_x.append(i)
            ref_y.append(float(out[i]))
    return out
