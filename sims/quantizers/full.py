"""Unconstrained phase-only layers: the full-precision reference twin."""

from __future__ import annotations

import torch

from sims.device import DeviceLevels
from sims.quantizers.base import Quantizer, register


@register
class FullPrecision(Quantizer):
    """Per-pixel phase ``φ`` (radians, any value), transmission ``exp(iφ)``.

    For the artifact the map is rounded to the nearest device level (complex
    distance) so it can be shown, but ``t_i`` stores the unconstrained transmission
    the twin assumed: this is the reference, not a deployable design.
    """

    name = "full"
    quantized = False

    def __init__(self, shape: tuple[int, int], levels: DeviceLevels, *, generator: torch.Generator | None = None,
                 **_: object) -> None:
        super().__init__(shape, levels)
        init = torch.rand(self.shape, generator=generator) * 2 * torch.pi
        self.phase = torch.nn.Parameter(init)

    def polar(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.ones_like(self.phase), self.phase

    def hard_indices(self) -> torch.Tensor:
        with torch.no_grad():
            t = self.forward()
            levels = torch.polar(self.level_amplitude, self.level_phase)
            return (t[..., None] - levels).abs().argmin(dim=-1)
