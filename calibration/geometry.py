"""The bench geometry a calibration needs, in SLM pixels, independent of any config format.

``calibration`` may not import ``labctl``; the CLI builds a :class:`BenchGeometry`
from the bench file and hands it over together with the devices.

Coordinates used throughout ``calibration``:
- SLM pixel index (u, v) = (col, row) of a pixel of the ROI; its centre is at the
  integer position, like OpenCV.
- neuron coordinates (x, y) = (col, row), continuous; neuron [r, c] covers
  ``[c, c+1) × [r, r+1)``, so its centre is (c + 0.5, r + 0.5) and SLM pixel centre
  u maps to x = (u + 0.5) / upsample.
- camera coordinates (x, y) = (col, row) on the full sensor, pixel centres integer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BenchGeometry:
    """Free-space geometry of a DONN bench.

    ``shape`` is the SLM ROI (rows, cols) in SLM pixels, identical for every plane;
    ``pitch_m`` the SLM pixel pitch (metres); ``planes`` the SLM names in beam order,
    input first; ``distances_m[i]`` the gap after ``planes[i]`` (the last one ends on
    the detector plane). ``method`` and ``pad_factor`` are those of ``sims.optics``.
    """

    name: str
    wavelength_m: float
    pitch_m: float
    shape: tuple[int, int]
    upsample: int
    planes: tuple[str, ...]
    distances_m: tuple[float, ...]
    method: str = "asm"
    pad_factor: int = 2

    def __post_init__(self) -> None:
        if len(self.distances_m) != len(self.planes):
            raise ValueError(f"{len(self.planes)} planes need {len(self.planes)} distances, got {len(self.distances_m)}")

    @property
    def neurons(self) -> tuple[int, int]:
        """(rows, cols) of neurons per plane."""
        return (self.shape[0] // self.upsample, self.shape[1] // self.upsample)

    def index(self, slm: str) -> int:
        """Position of ``slm`` in beam order (0 = input)."""
        return self.planes.index(slm)

    def distance_to_detector_m(self, slm: str) -> float:
        """Sum of the gaps from ``slm`` to the detector plane, metres."""
        return float(sum(self.distances_m[self.index(slm):]))

    def pixel_to_neuron(self) -> np.ndarray:
        """3×3 homogeneous matrix: SLM pixel index (u, v, 1) → neuron coordinates (x, y, 1)."""
        s = 1.0 / self.upsample
        return np.array([[s, 0.0, 0.5 * s], [0.0, s, 0.5 * s], [0.0, 0.0, 1.0]])
