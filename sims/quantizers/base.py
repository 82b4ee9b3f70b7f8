"""The quantizer interface every DONN layer uses."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from sims.device import DeviceLevels
from sims.errors import SimulationError

QUANTIZERS: dict[str, type["Quantizer"]] = {}


def register(cls: type["Quantizer"]) -> type["Quantizer"]:
    """Class decorator: make a quantizer selectable by its ``name`` (``--method NAME``)."""
    if cls.name in QUANTIZERS:
        raise SimulationError(f"quantizer name {cls.name!r} registered twice")
    QUANTIZERS[cls.name] = cls
    return cls


class Quantizer(torch.nn.Module):
    """Trainable parameters of one layer → complex transmission ``(N, N)``.

    Subclasses implement :meth:`polar` (amplitude and phase of the transmission used
    while training, may be soft/noisy) and :meth:`hard_indices` (the level index per
    pixel the bench shows); the rest is shared. Amplitude and phase are kept apart, the
    phase unwrapped as the device's levels are, because an SLM's pixel crosstalk smooths
    the liquid crystal's retardance, i.e. the phase map, not the complex field
    (``sims.refine.slm_pixels``). ``levels`` are the K device levels of this layer's SLM.
    Temperature-like state follows :meth:`set_progress`, called by the trainer before
    every step with the fractional epoch.
    """

    name: ClassVar[str] = ""
    quantized: ClassVar[bool] = True  # False: transmissions are not restricted to the levels

    def __init__(self, shape: tuple[int, int], levels: DeviceLevels) -> None:
        super().__init__()
        self.shape = (int(shape[0]), int(shape[1]))
        self.levels = levels
        t = levels.transmissions(torch.complex64)
        self.register_buffer("level_amplitude", t.abs().float(), persistent=False)
        self.register_buffer("level_phase", torch.tensor(levels.phase_rad, dtype=torch.float32), persistent=False)

    def set_progress(self, epoch: float, epochs: int) -> None:
        """Update schedules; ``epoch`` is fractional (0 at the start, ``epochs`` at the end)."""

    def regularizer(self) -> torch.Tensor | None:
        """A term the trainer adds to the loss (e.g. PSQ-LT's temperature push); None = nothing."""
        return None

    def polar(self) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        """(amplitude, phase in radians), each ``(N, N)``: the training transmission."""
        raise NotImplementedError

    def forward(self) -> torch.Tensor:
        return torch.polar(*self.polar())

    def hard_indices(self) -> torch.Tensor:  # pragma: no cover - abstract
        """Level index per pixel, int64 ``(N, N)``: what the SLM will display."""
        raise NotImplementedError

    def hard_polar(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(amplitude, phase in radians) of the displayed levels."""
        idx = self.hard_indices()
        return self.level_amplitude[idx], self.level_phase[idx]

    def hard_transmission(self) -> torch.Tensor:
        """The transmission of the displayed levels, complex64 ``(N, N)``."""
        return torch.polar(*self.hard_polar())

    def evaluation_polar(self) -> tuple[torch.Tensor, torch.Tensor]:
        """What evaluation simulates, as (amplitude, phase): the hard levels for quantized methods."""
        return self.hard_polar() if self.quantized else self.polar()

    def evaluation_transmission(self) -> torch.Tensor:
        """What evaluation simulates: the hard levels for quantized methods."""
        return torch.polar(*self.evaluation_polar())

    def export(self) -> tuple[np.ndarray, np.ndarray]:
        """(gray uint8 ``(N, N)``, t complex64 ``(N, N)``) for the model artifact."""
        with torch.no_grad():
            idx = self.hard_indices().cpu().numpy()
            gray = np.asarray(self.levels.gray, dtype=np.uint8)[idx]
            t = self.evaluation_transmission().detach().cpu().numpy().astype(np.complex64)
        return gray, t

    def describe(self) -> dict:
        """JSON-able settings recorded in model.json ``training``."""
        return {"method": self.name}
