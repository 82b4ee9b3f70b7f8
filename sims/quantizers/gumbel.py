"""Gumbel-Softmax device-to-system mapping (Li et al., ICCAD'22).

Per pixel, logits over the K measured levels; while training
``w = softmax((logits + g)/τ)`` with ``g ~ Gumbel(0, 1)`` and the transmission is
``(w·A)·exp(i·(w·P))`` (A, P: measured amplitude and phase of the K levels, the
paper's Eq. 4). Evaluation and export use ``argmax(logits)``: exactly the level the
SLM will display.
"""

from __future__ import annotations

import torch

from sims.device import DeviceLevels
from sims.quantizers.base import Quantizer, register
from sims.quantizers.schedules import Schedule, make_schedule


@register
class GumbelSoftmax(Quantizer):
    name = "gs"
    quantized = True

    def __init__(self, shape: tuple[int, int], levels: DeviceLevels, *, schedule: Schedule | None = None,
                 generator: torch.Generator | None = None, init_std: float = 1.0, **_: object) -> None:
        super().__init__(shape, levels)
        self.schedule = schedule if schedule is not None else make_schedule("linear")
        self.tau = float(self.schedule(0.0, 1))
        self.init_std = float(init_std)
        self.logits = torch.nn.Parameter(torch.randn(*self.shape, levels.k, generator=generator) * self.init_std)
        self.noise_generator: torch.Generator | None = None  # set by the trainer for reproducible noise

    def set_progress(self, epoch: float, epochs: int) -> None:
        self.tau = float(self.schedule(epoch, epochs))

    def weights(self) -> torch.Tensor:
        """Soft one-hot weights ``(N, N, K)``: noisy in training, plain softmax in eval mode."""
        if not self.training:
            return torch.softmax(self.logits / self.tau, dim=-1)
        u = torch.rand(self.logits.shape, generator=self.noise_generator, device=self.logits.device)
        gumbel = -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-7)))
        return torch.softmax((self.logits + gumbel) / self.tau, dim=-1)

    def polar(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.training:
            return self.hard_polar()
        w = self.weights()
        return w @ self.level_amplitude, w @ self.level_phase

    def hard_indices(self) -> torch.Tensor:
        return self.logits.detach().argmax(dim=-1)

    def describe(self) -> dict:
        return {"method": self.name, "schedule": self.schedule.describe(), "init_std": self.init_std}
