"""Saturable-absorber activation: 003 Eq. 4 forward, Eq. 5 (probe) backward."""

from __future__ import annotations

import math

import pytest
import torch

from sims.donn import DONN, Geometry, layout_regions
from sims.device import ideal_levels
from sims.errors import SimulationError
from sims.nonlinear import NonlinearDONN, SaturableAbsorber, exact_derivative, saturable_absorber, transmission
from sims.quantizers import QUANTIZERS


def test_forward_is_eq4_for_real_and_complex_fields() -> None:
    e = torch.linspace(-3, 3, 61)
    alpha0 = 10.0
    expected = e * torch.exp(-(alpha0 / 2) / (1 + e ** 2))
    assert torch.allclose(saturable_absorber(e, alpha0), expected, atol=1e-7)
    z = torch.polar(e.abs(), torch.linspace(0, 6, 61))
    out = saturable_absorber(z, alpha0)
    assert torch.allclose(out.abs(), expected.abs(), atol=1e-6)
    # the absorber changes no phase
    mask = e.abs() > 1e-3
    assert torch.allclose(torch.angle(out)[mask], torch.angle(z)[mask], atol=1e-5)


def test_strong_fields_saturate_weak_fields_are_absorbed() -> None:
    alpha0 = 30.0
    assert float(transmission(torch.tensor(0.0), alpha0)) == pytest.approx(math.exp(-15), rel=1e-5)
    assert float(transmission(torch.tensor(30.0), alpha0)) > 0.98


def test_optical_backward_is_the_probe_transmission() -> None:
    e = torch.linspace(-2, 2, 41, requires_grad=True)
    alpha0 = 10.0
    saturable_absorber(e, alpha0, "optical").sum().backward()
    assert torch.allclose(e.grad, transmission(e.detach(), alpha0), atol=1e-7)


def test_exact_backward_matches_eq6_and_the_probe_differs_by_a_bounded_factor() -> None:
    e = torch.linspace(-2, 2, 41, dtype=torch.float64, requires_grad=True)
    alpha0 = 10.0
    saturable_absorber(e, alpha0, "exact").sum().backward()
    exact = exact_derivative(e.detach(), alpha0)
    assert torch.allclose(e.grad, exact, atol=1e-10)
    ratio = exact / transmission(e.detach(), alpha0)
    # g'/T = 1 + α0 E²/(1+E²)² ∈ [1, 1 + α0/4]: the factor 003 absorbs into the learning rate
    assert float(ratio.min()) >= 1 - 1e-12 and float(ratio.max()) <= 1 + alpha0 / 4 + 1e-12


def test_complex_optical_gradient_scales_by_t() -> None:
    z = torch.polar(torch.full((5,), 0.7), torch.linspace(0, 3, 5)).requires_grad_(True)
    out = saturable_absorber(z, 5.0)
    w = torch.randn(5, dtype=torch.complex64)
    (out * w).real.sum().backward()
    assert torch.allclose(z.grad, w.conj() * transmission(z.detach(), 5.0), atol=1e-6)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(SimulationError, match="optical depth"):
        SaturableAbsorber(-1.0)
    with pytest.raises(SimulationError, match="gradient"):
        SaturableAbsorber(1.0, "magic")


def test_sa_between_donn_layers() -> None:
    g = Geometry(size=16, pitch_m=72e-6, wavelength_m=532e-9, distances_m=(0.02,) * 3,
                 regions=layout_regions(16, 2), input_size=12)
    gen = torch.Generator().manual_seed(0)
    donn = DONN(g, [QUANTIZERS["full"]((16, 16), ideal_levels(4), generator=gen) for _ in range(2)])
    images = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    linear = NonlinearDONN(donn, alpha0=0.0)
    assert torch.allclose(linear(images), donn(images), rtol=1e-5, atol=1e-9)
    sa = NonlinearDONN(donn, alpha0=10.0, field_scale=3.0)
    scores = sa(images)
    assert scores.shape == (3, g.classes) and bool((scores >= 0).all())
    # nonlinear: doubling the input does not scale the output by 4
    double = NonlinearDONN(donn, alpha0=10.0, field_scale=6.0)(images)
    assert not torch.allclose(double, 4 * scores, rtol=0.05)
    scores.sum().backward()
    assert all(q.phase.grad is not None and torch.isfinite(q.phase.grad).all() for q in donn.layers)
