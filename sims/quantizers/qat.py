"""Quantization-aware training as 000 §4.2 runs it: unconstrained phases are trained,
and once per epoch (the best clipping interval the paper found) every pixel is
rounded to its nearest device level, so each epoch starts from a deployable map and
the loss sees the rounded values. Evaluation shows the nearest levels."""

from __future__ import annotations

import math

import torch

from sims.device import DeviceLevels
from sims.quantizers.base import register
from sims.quantizers.full import FullPrecision


@register
class QuantizationAware(FullPrecision):
    name = "qat"
    quantized = True

    def __init__(self, shape: tuple[int, int], levels: DeviceLevels, **kwargs: object) -> None:
        super().__init__(shape, levels, **kwargs)
        self._rounded_epoch: int | None = None

    def set_progress(self, epoch: float, epochs: int) -> None:
        e = int(math.floor(epoch + 1e-9))
        if e != self._rounded_epoch:
            self._rounded_epoch = e
            self.round_to_levels()

    def round_to_levels(self) -> None:
        """Replace every phase by its nearest level's phase (the level amplitude is applied
        by the bench, not trained: the forward pass keeps unit amplitude)."""
        with torch.no_grad():
            idx = self.hard_indices()
            self.phase.copy_(self.level_phase[idx])

    def init_from_phase(self, phase: torch.Tensor) -> None:
        with torch.no_grad():
            self.phase.copy_(torch.remainder(phase, 2 * math.pi))
