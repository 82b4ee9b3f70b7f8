"""Saturable-absorber (SA) activation with the optical gradient approximation of 003.

A two-level medium of resonant optical depth ``α0`` transmits a pump field ``E``
(normalised to the saturation threshold, dimensionless) as

    g(E) = E · exp(−(α0/2) / (1 + |E|²))        (003 Eq. 4)

A weak counter-propagating probe sees only the pump-set transmission
``T(E) = exp(−(α0/2)/(1 + |E|²))`` (Eq. 5). 003's point is that ``T`` approximates the
true derivative ``g'(E) = [1 + α0|E|²/(1+|E|²)²]·T(E)`` (Eq. 6) up to a factor that is
nearly constant where the neurons live, so an optical network can backpropagate its
errors through the absorber physically. :class:`SaturableAbsorber` uses that probe
transmission as its backward pass (``gradient="optical"``), or the exact derivative by
autograd (``gradient="exact"``). Fields may be real or complex (a DONN plane): the
transmission depends on |E| only and does not change the phase.
"""

from __future__ import annotations

import torch

from sims.errors import SimulationError

GRADIENTS = ("optical", "exact")


def transmission(field: torch.Tensor, alpha0: float) -> torch.Tensor:
    """Probe (and pump) field transmission ``T`` of the absorber, real, same shape."""
    intensity = field.real.square() + field.imag.square() if field.is_complex() else field.square()
    return torch.exp(-(alpha0 / 2) / (1 + intensity))


class _OpticalSA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, field: torch.Tensor, alpha0: float) -> torch.Tensor:  # type: ignore[override]
        t = transmission(field, alpha0)
        ctx.save_for_backward(t)
        return field * t

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        (t,) = ctx.saved_tensors
        # the error signal is the probe: it is attenuated by T, nothing else (003 Eq. 5)
        return grad_out * t, None


def saturable_absorber(field: torch.Tensor, alpha0: float, gradient: str = "optical") -> torch.Tensor:
    """``g(field)`` of 003 Eq. 4 with the chosen backward pass."""
    if gradient == "optical":
        return _OpticalSA.apply(field, float(alpha0))
    if gradient == "exact":
        return field * transmission(field, alpha0)
    raise SimulationError(f"unknown SA gradient {gradient!r}; expected one of {', '.join(GRADIENTS)}")


def exact_derivative(field: torch.Tensor, alpha0: float) -> torch.Tensor:
    """``g'(E)`` of 003 Eq. 6 for real fields."""
    e2 = field.square()
    return (1 + alpha0 * e2 / (1 + e2).square()) * transmission(field, alpha0)


class SaturableAbsorber(torch.nn.Module):
    """An SA cell: use it between DONN layers (on the complex field) or in a network."""

    def __init__(self, alpha0: float, gradient: str = "optical") -> None:
        super().__init__()
        if not (alpha0 >= 0 and alpha0 < float("inf")):
            raise SimulationError(f"optical depth α0 must be a finite number >= 0, got {alpha0!r}")
        if gradient not in GRADIENTS:
            raise SimulationError(f"unknown SA gradient {gradient!r}; expected one of {', '.join(GRADIENTS)}")
        self.alpha0 = float(alpha0)
        self.gradient = gradient

    def forward(self, field: torch.Tensor) -> torch.Tensor:
        return saturable_absorber(field, self.alpha0, self.gradient)

    def extra_repr(self) -> str:
        return f"alpha0={self.alpha0}, gradient={self.gradient}"


class NonlinearDONN(torch.nn.Module):
    """A DONN with an SA cell right after every diffractive layer.

    Wraps a :class:`sims.donn.DONN` without changing it: same geometry, layers and
    detector; ``field_scale`` is the input amplitude in units of the absorber's
    saturation field (the SA response depends on absolute power).
    """

    def __init__(self, donn: torch.nn.Module, alpha0: float, *, gradient: str = "optical",
                 field_scale: float = 1.0) -> None:
        super().__init__()
        if not field_scale > 0:
            raise SimulationError(f"field_scale must be > 0, got {field_scale!r}")
        self.donn = donn
        self.sa = SaturableAbsorber(alpha0, gradient)
        self.field_scale = float(field_scale)

    @property
    def layers(self) -> torch.nn.ModuleList:
        return self.donn.layers

    def set_progress(self, epoch: float, epochs: int) -> None:
        self.donn.set_progress(epoch, epochs)

    def detector_field(self, images: torch.Tensor) -> torch.Tensor:
        from sims.donn import encode_images

        d = self.donn
        g = d.geometry
        u = d.gaps[0](encode_images(images, g.size, g.input_size) * self.field_scale)
        for layer, gap in zip(d.layers, d.gaps[1:]):
            t = layer() if self.training else layer.evaluation_transmission()
            u = gap(self.sa(u * t))
        return u

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        u = self.detector_field(images)
        intensity = u.real.square() + u.imag.square()
        return intensity.reshape(intensity.shape[0], -1) @ self.donn.masks
