"""Detector regions and the registration grid, in camera frame pixels.

A camera registration (``labctl.registration/1``, written by ``labctl calibrate``)
is an affine map from neuron coordinates (x = col, y = row; neuron [r, c] covers
[c, c+1) × [r, r+1)) to camera *sensor* pixels (pixel centres at integers). Frames
are grabbed over the camera ROI, so frame pixel = sensor pixel − ROI origin.
Everything here returns polylines as lists of [x, y] frame pixels (pixel centres at
integers, like OpenCV), ready for a canvas or ``cv2.polylines``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

REGISTRATION_SCHEMA = "labctl.registration/1"
MAX_GRID_LINES = 10  # per direction: enough to judge alignment, few enough to see the beam


@dataclass(frozen=True)
class Overlay:
    """What to draw over a frame; all coordinates in frame pixels."""

    outline: list[list[float]] = field(default_factory=list)  # detector plane border (closed)
    grid: list[list[list[float]]] = field(default_factory=list)  # open polylines
    regions: list[list[list[float]]] = field(default_factory=list)  # closed, one per class
    source: dict[str, Any] = field(default_factory=dict)  # which files it came from

    def to_dict(self) -> dict[str, Any]:
        return {"outline": self.outline, "grid": self.grid, "regions": self.regions, "source": self.source}

    @property
    def empty(self) -> bool:
        return not (self.outline or self.grid or self.regions)


def registration_matrix(data: Any, where: str = "registration") -> tuple[np.ndarray, tuple[int, int]]:
    """(2×3 affine, (rows, cols) neurons) from a registration document; ValueError naming what is wrong."""
    if not isinstance(data, dict) or data.get("schema") != REGISTRATION_SCHEMA:
        raise ValueError(f"{where}: not a camera registration (expected schema {REGISTRATION_SCHEMA!r})")
    try:
        m = np.asarray(data["matrix"], dtype=np.float64)
        rows, cols = (int(v) for v in data["neurons"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{where}: expected matrix [2][3] and neurons [rows, cols]") from None
    if m.shape != (2, 3) or not np.all(np.isfinite(m)) or rows < 1 or cols < 1:
        raise ValueError(f"{where}: expected a finite 2x3 matrix and neurons >= 1")
    return m, (rows, cols)


def _apply(m: np.ndarray, xy: np.ndarray, origin: Sequence[float]) -> list[list[float]]:
    pts = xy @ m[:, :2].T + m[:, 2] - np.asarray(origin, dtype=np.float64)
    return [[round(float(x), 2), round(float(y), 2)] for x, y in pts]


def grid_step(n: int) -> int:
    """Neurons between grid lines so that at most MAX_GRID_LINES lines cross the plane."""
    return max(1, math.ceil(n / MAX_GRID_LINES))


def build_overlay(registration: Any, regions: Sequence[Sequence[int]] | None = None,
                  roi_origin: Sequence[float] = (0, 0), source: dict[str, Any] | None = None) -> Overlay:
    """The overlay for a registration document and detector regions [[row, col, h, w], ...] (neurons).

    ``roi_origin`` is the (x, y) of the camera ROI on the sensor.
    """
    m, (rows, cols) = registration_matrix(registration)
    outline = _apply(m, np.array([[0, 0], [cols, 0], [cols, rows], [0, rows]], float), roi_origin)
    grid = []
    step_c, step_r = grid_step(cols), grid_step(rows)
    for x in range(step_c, cols, step_c):
        grid.append(_apply(m, np.array([[x, 0], [x, rows]], float), roi_origin))
    for y in range(step_r, rows, step_r):
        grid.append(_apply(m, np.array([[0, y], [cols, y]], float), roi_origin))
    polys = []
    for r in regions or []:
        row, col, h, w = (float(v) for v in r)
        polys.append(_apply(m, np.array([[col, row], [col + w, row], [col + w, row + h], [col, row + h]]), roi_origin))
    return Overlay(outline, grid, polys, dict(source or {}))
