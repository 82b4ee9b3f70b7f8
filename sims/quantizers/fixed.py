"""A layer whose transmissions are given (a trained model re-simulated from its artifact)."""

from __future__ import annotations

import numpy as np
import torch

from sims.device import DeviceLevels
from sims.errors import DataError
from sims.quantizers.base import Quantizer


class Fixed(Quantizer):
    """Not trainable: shows ``transmission`` ``(N, N)`` complex; ``gray`` is kept for export."""

    name = "fixed"
    quantized = False

    def __init__(self, transmission: np.ndarray, gray: np.ndarray, levels: DeviceLevels) -> None:
        transmission = np.asarray(transmission)
        gray = np.asarray(gray)
        if transmission.ndim != 2 or gray.shape != transmission.shape:
            raise DataError(f"layer transmission {transmission.shape} and gray map {gray.shape} must be equal 2-D shapes")
        super().__init__(transmission.shape, levels)
        self.register_buffer("t", torch.from_numpy(transmission.astype(np.complex64)))
        self.register_buffer("gray", torch.from_numpy(gray.astype(np.int64)))
        lut = {g: i for i, g in enumerate(self.levels.gray)}
        flat = [lut.get(int(g), -1) for g in gray.flatten().tolist()]
        idx = torch.tensor(flat, dtype=torch.int64).reshape(self.shape)
        self.register_buffer("level_index", idx, persistent=False)
        # The levels give the unwrapped phase when they are what t holds (every
        # quantized model); otherwise (a full-precision reference) the phase is t's angle.
        self.from_levels = bool((idx >= 0).all()) and bool(torch.allclose(
            torch.polar(self.level_amplitude[idx], self.level_phase[idx]), self.t, atol=1e-5))

    def polar(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.from_levels:
            return self.level_amplitude[self.level_index], self.level_phase[self.level_index]
        return self.t.abs(), self.t.angle()

    def forward(self) -> torch.Tensor:
        return self.t

    def hard_indices(self) -> torch.Tensor:
        return self.level_index

    def export(self) -> tuple[np.ndarray, np.ndarray]:
        return self.gray.numpy().astype(np.uint8), self.t.numpy()
