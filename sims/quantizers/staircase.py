"""Shared machinery of the quantizers that train one raw phase per pixel.

The K device levels are sorted by measured phase ``φ_0 < … < φ_{K−1}`` (radians) with
amplitudes ``a_k``. The hard quantizer is QuATON's Eq. 1 generalised to non-uniform
levels: a raw phase ``x`` takes level ``i`` = number of midpoints
``m_j = (φ_j + φ_{j+1})/2`` below it, so values outside the device's phase range clamp
to the first or last level. Soft quantizers move along the chord between adjacent
levels with one weight for phase *and* amplitude (a state the device can reach at the
end points, never an independent amplitude/phase mix).
"""

from __future__ import annotations

import math

import torch

from sims.device import DeviceLevels
from sims.errors import SimulationError
from sims.quantizers.base import Quantizer


class PhaseStaircase(Quantizer):
    """Base of PTQ-like and soft-staircase methods: parameter ``phase`` (radians, raw)."""

    quantized = True

    def __init__(self, shape: tuple[int, int], levels: DeviceLevels, *, generator: torch.Generator | None = None,
                 **_: object) -> None:
        super().__init__(shape, levels)
        phase = torch.tensor(levels.phase_rad, dtype=torch.float64)
        if levels.k < 2 or bool((phase[1:] <= phase[:-1]).any()):
            raise SimulationError(f"{self.name}: needs >= 2 levels sorted by strictly increasing phase, "
                                  f"got {list(levels.phase_rad)}")
        self.register_buffer("mid", ((phase[1:] + phase[:-1]) / 2).float(), persistent=False)
        self.register_buffer("step_phase", (phase[1:] - phase[:-1]).float(), persistent=False)
        amp = self.level_amplitude
        self.register_buffer("step_amplitude", (amp[1:] - amp[:-1]).float(), persistent=False)
        # Mean step (rad): temperatures are per step, so K=2 and K=16 harden alike.
        self.mean_step = float((phase[-1] - phase[0]) / (levels.k - 1))
        lo, hi = float(phase[0]), float(phase[-1])
        init = lo + torch.rand(self.shape, generator=generator) * (hi - lo)
        self.phase = torch.nn.Parameter(init.float())

    @property
    def phase_range(self) -> tuple[float, float]:
        return float(self.level_phase[0]), float(self.level_phase[-1])

    def init_from_phase(self, phase: torch.Tensor) -> None:
        """Start from a trained full-precision phase map (radians): wrapped into
        ``[φ_0, φ_0 + 2π)`` so that no weight starts clamped (QuATON §4.4)."""
        lo = self.phase_range[0]
        with torch.no_grad():
            self.phase.copy_(torch.remainder(phase.to(self.phase.dtype) - lo, 2 * math.pi) + lo)

    def staircase_indices(self, x: torch.Tensor) -> torch.Tensor:
        return (x.detach()[..., None] > self.mid).sum(dim=-1)

    def hard_indices(self) -> torch.Tensor:
        return self.staircase_indices(self.phase)

    def chord(self, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(amplitude, phase) for per-step weights ``(N, N, K−1)`` in [0, 1]."""
        phase = self.level_phase[0] + weights @ self.step_phase
        amp = self.level_amplitude[0] + weights @ self.step_amplitude
        return amp, phase

    def polar(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.training:
            return self.hard_polar()
        return self.soft()

    def soft(self) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError
