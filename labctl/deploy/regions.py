"""Detector regions on the camera: neuron rectangles → camera-pixel rectangles.

The registration maps neuron coordinates (x = col, y = row; neuron [r, c] spans
[c, c+1) × [r, r+1)) to sensor pixels whose centres are at integers. The bench
server sums axis-aligned rectangles, so each region becomes the rectangle of the
same centre and the registered size; a camera pixel belongs to it when its centre
lies inside. The registrations of a bench rotate the plane by a fraction of a
degree, so the corners of a 40-pixel region move by well under a pixel.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from calibration.registration import Registration
from labctl.errors import ConfigError

Rect = tuple[int, int, int, int]


def camera_regions(registration: Registration, regions: Sequence[Sequence[int]],
                   camera_roi: Sequence[int] | None = None) -> list[Rect]:
    """``[row, col, h, w]`` rectangles in frame pixels (the camera ROI ``(x, y, w, h)``,
    default the whole sensor) for detector ``regions`` given in neurons."""
    sensor_rows, sensor_cols = registration.sensor_shape
    rx, ry, rw, rh = camera_roi if camera_roi is not None else (0, 0, sensor_cols, sensor_rows)
    m = registration.matrix
    scale_x = float(np.hypot(m[0, 0], m[1, 0]))  # camera pixels per neuron along a neuron row
    scale_y = float(np.hypot(m[0, 1], m[1, 1]))
    out: list[Rect] = []
    for k, region in enumerate(regions):
        row, col, h, w = (float(v) for v in region)
        cx, cy = registration.to_camera(np.array([col + w / 2, row + h / 2]))
        half_w, half_h = w * scale_x / 2, h * scale_y / 2
        x0, x1 = math.ceil(cx - half_w), math.ceil(cx + half_w)
        y0, y1 = math.ceil(cy - half_h), math.ceil(cy + half_h)
        if x1 <= x0 or y1 <= y0:
            raise ConfigError(f"detector region {k} {list(region)} is smaller than one camera pixel")
        if x0 < rx or y0 < ry or x1 > rx + rw or y1 > ry + rh:
            raise ConfigError(
                f"detector region {k} {list(region)} lands on camera pixels x {x0}..{x1 - 1}, y {y0}..{y1 - 1}, "
                f"outside the camera frame (ROI x {rx}..{rx + rw - 1}, y {ry}..{ry + rh - 1}); "
                "check the registration and the camera ROI")
        out.append((y0 - ry, x0 - rx, y1 - y0, x1 - x0))
    return out
