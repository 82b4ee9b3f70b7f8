"""Straight-through estimator (QuATON §4.5.2): the hard staircase in the forward pass,
gradient 1 to the raw phase in the backward pass."""

from __future__ import annotations

import torch

from sims.quantizers.base import register
from sims.quantizers.staircase import PhaseStaircase


@register
class StraightThrough(PhaseStaircase):
    name = "ste"

    def soft(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.staircase_indices(self.phase)
        # value of the displayed level, gradient of the raw phase: ∂Q/∂x = 1
        phase = self.level_phase[idx] + (self.phase - self.phase.detach())
        return self.level_amplitude[idx], phase
