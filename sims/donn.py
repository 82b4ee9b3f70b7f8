"""The diffractive network: amplitude-encoded input, L phase layers, C detector regions.

Conventions (DESIGN §3): a 28×28 uint8 image → /255 → bilinear resize (no
antialias, align_corners=False) to ``input_size`` → centred at offset (N−h)//2 in the
N×N field as amplitude; ``distances_m[0]`` input→layer 1, ``distances_m[L]`` layer
L→detector; score of class c = summed |E|² over region c = [row, col, h, w].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sims.errors import SimulationError
from sims.optics import METHODS, Propagator, check_sampling
from sims.quantizers.base import Quantizer

Region = tuple[int, int, int, int]


@dataclass(frozen=True)
class Geometry:
    """Everything the twin needs about a bench. Lengths in metres, sizes in neurons."""

    size: int  # N: neurons per side of every plane
    pitch_m: float  # neuron pitch
    wavelength_m: float
    distances_m: tuple[float, ...]  # L + 1 gaps
    regions: tuple[Region, ...]  # detector regions, [row, col, h, w]
    input_size: int  # side of the resized input image, neurons
    method: str = "asm"
    pad_factor: int = 2

    def __post_init__(self) -> None:
        if self.size < 2:
            raise SimulationError(f"size must be >= 2 neurons, got {self.size}")
        if len(self.distances_m) < 2:
            raise SimulationError("distances_m needs at least 2 gaps (input→layer 1, layer 1→detector)")
        if any(not (math.isfinite(d) and d > 0) for d in self.distances_m):
            raise SimulationError(f"distances_m must be positive metres, got {list(self.distances_m)}")
        if self.method not in METHODS:
            raise SimulationError(f"propagation method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not 1 <= self.input_size <= self.size:
            raise SimulationError(f"input size {self.input_size} must be between 1 and the field size {self.size}")
        if len(self.regions) < 2:
            raise SimulationError("need at least 2 detector regions (one per class)")
        for r in self.regions:
            if len(r) != 4 or r[2] < 1 or r[3] < 1 or r[0] < 0 or r[1] < 0 or r[0] + r[2] > self.size \
                    or r[1] + r[3] > self.size:
                raise SimulationError(f"detector region {list(r)} must be [row, col, h, w] inside the "
                                      f"{self.size}x{self.size} detector plane")
        for d in self.distances_m:
            check_sampling((self.size, self.size), d, self.pitch_m, self.wavelength_m, self.method, self.pad_factor)

    @property
    def layers(self) -> int:
        return len(self.distances_m) - 1

    @property
    def classes(self) -> int:
        return len(self.regions)

    def to_json(self) -> dict:
        return {"wavelength_m": self.wavelength_m, "pitch_m": self.pitch_m, "size": [self.size, self.size],
                "distances_m": list(self.distances_m),
                "propagation": {"method": self.method, "pad_factor": self.pad_factor}}


def layout_regions(size: int, region: int, rows: tuple[int, ...] = (3, 4, 3), span: float = 0.6) -> tuple[Region, ...]:
    """Square regions of side ``region`` in rows of ``rows`` regions (the paper's 3-4-3
    layout), spread evenly over the central ``span`` of the plane, rows and columns
    centred."""
    if region * max(rows) > span * size or region * len(rows) > span * size:
        raise SimulationError(f"{max(rows)} regions of {region} px do not fit in {span:.0%} of {size} px")
    out: list[Region] = []
    extent = span * size

    def centres(n: int) -> list[float]:
        step = extent / n
        return [(size - extent) / 2 + step * (i + 0.5) for i in range(n)]

    for row_c, n in zip(centres(len(rows)), rows):
        for col_c in centres(n):
            out.append((int(round(row_c - region / 2)), int(round(col_c - region / 2)), region, region))
    return tuple(out)


def default_input_size(size: int) -> int:
    """Side of the resized digit for an N-neuron field: 56 % of N (56 of 100 on the
    bench, 2 neurons per MNIST pixel). Leaving a dark margin trained better than
    filling the field (docs/twin.md)."""
    return max(1, round(0.56 * size))


PRESETS: dict[str, Geometry] = {
    # Li et al., ICCAD'22: 5 layers of 200×200, 36 µm, 532 nm, 27.94 cm gaps, ten 20×20 detectors.
    "iccad22": Geometry(size=200, pitch_m=36e-6, wavelength_m=532e-9, distances_m=(0.2794,) * 6,
                        regions=layout_regions(200, 20), input_size=default_input_size(200), method="fresnel", pad_factor=2),
    # labctl/benches/sim.toml: 3 layers of 100×100 neurons of 72 µm (36 µm SLM pixels, upsample 2).
    "bench": Geometry(size=100, pitch_m=72e-6, wavelength_m=532e-9, distances_m=(0.2794,) * 4,
                      regions=layout_regions(100, 10), input_size=default_input_size(100), method="asm", pad_factor=2),
}


def preset(name: str) -> Geometry:
    if name not in PRESETS:
        raise SimulationError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    return PRESETS[name]


def encode_images(images: torch.Tensor, size: int, input_size: int) -> torch.Tensor:
    """uint8 ``(B, 28, 28)`` (or float in [0, 1]) → complex64 amplitude field ``(B, N, N)``."""
    if images.dim() != 3:
        raise SimulationError(f"images must be (B, h, w), got shape {tuple(images.shape)}")
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    x = F.interpolate(x[:, None], size=(input_size, input_size), mode="bilinear", align_corners=False,
                      antialias=False)[:, 0]
    offset = (size - input_size) // 2
    field = torch.zeros(x.shape[0], size, size, dtype=torch.float32, device=x.device)
    field[:, offset:offset + input_size, offset:offset + input_size] = x
    return field.to(torch.complex64)


class DONN(torch.nn.Module):
    """A DONN of ``geometry`` whose layer ``i`` transmission comes from ``quantizers[i]``."""

    def __init__(self, geometry: Geometry, quantizers: list[Quantizer]) -> None:
        super().__init__()
        if len(quantizers) != geometry.layers:
            raise SimulationError(f"geometry has {geometry.layers} layers but {len(quantizers)} layer models were given")
        self.geometry = geometry
        n = geometry.size
        self.layers = torch.nn.ModuleList(quantizers)
        self.gaps = torch.nn.ModuleList(
            Propagator((n, n), geometry.pitch_m, geometry.wavelength_m, d, geometry.method, geometry.pad_factor)
            for d in geometry.distances_m)
        masks = torch.zeros(geometry.classes, n, n)
        for c, (r, col, h, w) in enumerate(geometry.regions):
            masks[c, r:r + h, col:col + w] = 1.0
        self.register_buffer("masks", masks.reshape(geometry.classes, n * n).T.contiguous(), persistent=False)

    def set_progress(self, epoch: float, epochs: int) -> None:
        for q in self.layers:
            q.set_progress(epoch, epochs)

    def detector_field(self, images: torch.Tensor) -> torch.Tensor:
        """Complex field on the detector plane, ``(B, N, N)``."""
        g = self.geometry
        u = encode_images(images, g.size, g.input_size)
        u = self.gaps[0](u)
        for layer, gap in zip(self.layers, self.gaps[1:]):
            t = layer() if self.training else layer.evaluation_transmission()
            u = gap(u * t)
        return u

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Detector scores ``(B, C)``: summed intensity per region."""
        u = self.detector_field(images)
        intensity = u.real.square() + u.imag.square()
        return intensity.reshape(intensity.shape[0], -1) @ self.masks
