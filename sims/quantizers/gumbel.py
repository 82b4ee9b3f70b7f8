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
        """Soft one-hot weights ``(K, N, N)``: noisy in training, plain softmax in eval mode.

        Levels lead: torch's CPU softmax over a trailing axis of K = 8 took 2.4 ms per
        layer and step (forward + backward, 100×100) against 0.2 ms over a leading one,
        a fifth of the bench preset's whole step."""
        z = self.logits.permute(2, 0, 1).contiguous()
        if self.training:
            u = torch.rand(z.shape, generator=self.noise_generator, device=z.device)
            z = z - u.clamp_(1e-10, 1.0 - 1e-7).log_().neg_().log_()  # + Gumbel(0, 1) noise
        return torch.softmax(z * (1.0 / self.tau), dim=0)

    def polar(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.training:
            return self.hard_polar()
        # (2, K), stacked per call: a refined twin may rescale the level phases in place
        levels = torch.stack((self.level_amplitude, self.level_phase))
        amp, phase = torch.tensordot(levels, self.weights(), dims=1)
        return amp, phase

    def hard_indices(self) -> torch.Tensor:
        return self.logits.detach().argmax(dim=-1)

    def describe(self) -> dict:
        return {"method": self.name, "schedule": self.schedule.describe(), "init_std": self.init_std}
