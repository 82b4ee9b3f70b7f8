"""Input encoding: a digit becomes a gray map on the input SLM (DESIGN §3).

The twin's amplitude (``sims.donn.encode_images``: /255, bilinear resize to the
model's input size, centred in the N×N field) is turned into gray values through
the inverse of the input SLM's *measured* amplitude curve, then each neuron is
repeated ``upsample`` times per side (``drivers.slm.upsample_map`` semantics).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from labctl.errors import ConfigError
from sims.device import DeviceResponse
from sims.donn import encode_images

# Target amplitudes are looked up on this many steps of [0, 1]: finer than 8 bits, so
# the lookup adds no error beyond the SLM's own gray quantization.
LUT_STEPS = 4096


def inverse_amplitude_lut(response: DeviceResponse, steps: int = LUT_STEPS) -> np.ndarray:
    """uint8 ``(steps,)``: for target amplitude ``k / (steps - 1)``, the gray whose measured
    amplitude is closest (ties go to the lowest gray)."""
    amp = np.asarray(response.amplitude, dtype=np.float64)
    if amp.shape != (256,) or not np.isfinite(amp).all():
        raise ConfigError(f"{response.source or response.name}: the input SLM calibration needs 256 finite amplitudes")
    peak = amp.max()
    if not peak > 0:
        raise ConfigError(f"{response.source or response.name}: the input SLM transmits no light at any gray level")
    rel = amp / peak  # calibrations are relative already; this guards plain response files
    if rel.max() - rel.min() < 0.2:
        raise ConfigError(f"{response.source or response.name}: the input SLM's amplitude only spans "
                          f"{rel.min():.2f}..{rel.max():.2f}; it cannot encode an image in amplitude")
    targets = np.linspace(0.0, 1.0, steps)
    return np.abs(rel[None, :] - targets[:, None]).argmin(axis=1).astype(np.uint8)


@dataclass(frozen=True)
class InputEncoder:
    """Digits → uint8 maps of the input SLM's ROI.

    ``size`` is N (neurons per side), ``input_size`` the side of the resized digit in
    neurons, ``upsample`` SLM pixels per neuron side.
    """

    size: int
    input_size: int
    upsample: int
    lut: np.ndarray  # from inverse_amplitude_lut

    @property
    def map_shape(self) -> tuple[int, int]:
        side = self.size * self.upsample
        return (side, side)

    def amplitude(self, images: np.ndarray) -> np.ndarray:
        """float32 ``(B, N, N)``: the amplitude the twin puts on the input plane."""
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ConfigError(f"inputs must be uint8 images (B, rows, cols), got {images.dtype} {list(images.shape)}")
        with torch.no_grad():
            field = encode_images(torch.from_numpy(np.ascontiguousarray(images)), self.size, self.input_size)
        return field.real.numpy()

    def neuron_gray(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(B, N, N)``: the gray value of every neuron."""
        amp = self.amplitude(images)
        steps = len(self.lut)
        idx = np.clip(np.rint(amp * (steps - 1)), 0, steps - 1).astype(np.intp)
        return self.lut[idx]

    def encode(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(B, N·u, N·u)``: the maps to show on the input SLM."""
        gray = self.neuron_gray(images)
        u = self.upsample
        return np.ascontiguousarray(np.repeat(np.repeat(gray, u, axis=1), u, axis=2))
