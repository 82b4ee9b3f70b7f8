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

    def forward(self) -> torch.Tensor:
        return self.t

    def hard_indices(self) -> torch.Tensor:
        lut = {g: i for i, g in enumerate(self.levels.gray)}
        flat = [lut.get(int(g), -1) for g in self.gray.flatten().tolist()]
        return torch.tensor(flat, dtype=torch.int64).reshape(self.shape)

    def export(self) -> tuple[np.ndarray, np.ndarray]:
        return self.gray.numpy().astype(np.uint8), self.t.numpy()
