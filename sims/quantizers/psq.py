"""Progressive sigmoid quantization (QuATON, Eq. 2) with its three temperature schemes.

``Q_s(x, τ) = φ_0 + Σ_i Δ_i·sig(τ·(x − m_i)/Δ̄)`` over the K−1 steps (midpoints
``m_i``, widths ``Δ_i``; amplitude follows with the same weights). ``τ`` is measured
per mean step ``Δ̄`` (rad), so one schedule suits every K; as τ grows Q_s → the hard
staircase, and unlike DSQ the tails keep a gradient outside the device range.

* ``psq-ft``: fixed τ = 5.
* ``psq-li``: τ grows linearly from 1 to 20 over the run (Eq. 6 with a continuous
  step, because short runs have few epochs).
* ``psq-lt``: learnable τ = 1/(|k| + γ) per layer (Eq. 7, γ = 1/20 caps τ at 20), with
  the regularizer ``R_t = λ1·s_t·(k² − λ2²)``, ``s_t = 2^⌊t/β⌋`` (Eq. 8) added to the
  loss, with β a quarter of the run (a fixed β in epochs would grow s_t without bound
  on long runs). ``k = K_SCALE·κ`` with κ the optimized parameter: the trainer's one Adam learning
  rate is sized for phases (≈0.5 rad per step) and would otherwise jump τ to its cap in a
  step or two.

The paper gives no values for τ0, Δτ, γ, λ1, λ2 or β; the ones here are documented in
docs/methods.md.
"""

from __future__ import annotations

import torch

from sims.device import DeviceLevels
from sims.quantizers.base import register
from sims.quantizers.staircase import PhaseStaircase

TAU_FIXED = 5.0
TAU_START, TAU_END = 1.0, 20.0
GAMMA = 1.0 / TAU_END
LAMBDA1, LAMBDA2 = 1e-3, 0.0
BETA_FRACTION = 0.25  # β = a quarter of the run: s_t doubles 3 times (1, 2, 4, 8)
K_SCALE = 0.05


class _Psq(PhaseStaircase):
    def temperature(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def tau(self) -> float:
        return float(self.temperature().detach())

    def soft(self) -> tuple[torch.Tensor, torch.Tensor]:
        z = (self.phase[..., None] - self.mid) / self.mean_step
        return self.chord(torch.sigmoid(self.temperature() * z))

    def describe(self) -> dict:
        return {"method": self.name, "tau_final": self.tau}


@register
class PsqFixed(_Psq):
    name = "psq-ft"

    def temperature(self) -> torch.Tensor:
        return torch.tensor(TAU_FIXED)


@register
class PsqLinear(_Psq):
    name = "psq-li"

    def __init__(self, shape: tuple[int, int], levels: DeviceLevels, **kwargs: object) -> None:
        super().__init__(shape, levels, **kwargs)
        self._tau = TAU_START

    def set_progress(self, epoch: float, epochs: int) -> None:
        self._tau = TAU_START + (TAU_END - TAU_START) * min(max(epoch / max(epochs, 1), 0.0), 1.0)

    def temperature(self) -> torch.Tensor:
        return torch.tensor(self._tau)


@register
class PsqLearnable(_Psq):
    name = "psq-lt"

    def __init__(self, shape: tuple[int, int], levels: DeviceLevels, **kwargs: object) -> None:
        super().__init__(shape, levels, **kwargs)
        # start at τ = TAU_START: |k| = 1/τ − γ
        self.kappa = torch.nn.Parameter(torch.tensor((1 / TAU_START - GAMMA) / K_SCALE))
        self._epoch, self._epochs = 0.0, 1

    def set_progress(self, epoch: float, epochs: int) -> None:
        self._epoch, self._epochs = epoch, max(int(epochs), 1)

    def temperature(self) -> torch.Tensor:
        return 1 / ((K_SCALE * self.kappa).abs() + GAMMA)

    def regularizer(self) -> torch.Tensor:
        beta = max(BETA_FRACTION * self._epochs, 1.0)
        s_t = 2.0 ** int(self._epoch // beta)
        k = K_SCALE * self.kappa
        return LAMBDA1 * s_t * (k.square() - LAMBDA2 ** 2)
