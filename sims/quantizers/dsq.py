"""Differentiable soft quantization (Gong et al. 2019) as QuATON uses it (§4.5.4).

Inside step ``i`` (between levels ``i`` and ``i+1``, width ``Δ_i`` rad, centre ``m_i``)
the weight toward level ``i+1`` is ``(1 + s·tanh(k(x − m_i)))/2`` with
``k = ln(2/α − 1)/Δ_i`` and ``s = 1/tanh(kΔ_i/2)``, so the curve meets the levels at the
step ends. ``α`` ∈ (0, 0.5) is learnable per layer (small α = close to hard). The raw
phase is clamped to the device range first (zero gradient outside: the DSQ weakness
QuATON's PSQ removes). The quantization bounds stay fixed: they are the device's.
"""

from __future__ import annotations

import math

import torch

from sims.device import DeviceLevels
from sims.quantizers.base import register
from sims.quantizers.staircase import PhaseStaircase

ALPHA_INIT = 0.2


@register
class DifferentiableSoft(PhaseStaircase):
    name = "dsq"

    def __init__(self, shape: tuple[int, int], levels: DeviceLevels, **kwargs: object) -> None:
        super().__init__(shape, levels, **kwargs)
        # α = 0.5·sigmoid(θ): stays inside (0, 0.5) whatever the optimizer does.
        self.alpha_logit = torch.nn.Parameter(torch.tensor(math.log(ALPHA_INIT / (0.5 - ALPHA_INIT))))

    @property
    def alpha(self) -> torch.Tensor:
        return 0.5 * torch.sigmoid(self.alpha_logit).clamp(1e-4, 1 - 1e-4)

    def soft(self) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = self.phase_range
        x = self.phase.clamp(lo, hi)
        i = (x.detach()[..., None] >= self.level_phase[1:-1]).sum(dim=-1) if self.levels.k > 2 \
            else torch.zeros_like(x, dtype=torch.int64)
        width = self.step_phase[i]
        log_term = torch.log(2 / self.alpha - 1)
        k = log_term / width
        s = 1 / torch.tanh(log_term / 2)
        frac = (1 + s * torch.tanh(k * (x - self.mid[i]))) / 2
        phase = self.level_phase[i] + width * frac
        amp = self.level_amplitude[i] + self.step_amplitude[i] * frac
        return amp, phase

    def describe(self) -> dict:
        return {"method": self.name, "alpha": float(self.alpha.detach())}
