"""Propagation against physics: each check has a tolerance that a wrong kernel fails."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import fresnel

from sims.errors import SamplingError, SimulationError
from sims.optics import Propagator, check_sampling, propagate, transfer_function

WL = 532e-9


def _grid(n: int, pitch: float) -> tuple[torch.Tensor, torch.Tensor]:
    c = (torch.arange(n, dtype=torch.float64) - n // 2) * pitch
    return torch.meshgrid(c, c, indexing="ij")


def _energy(u: torch.Tensor) -> float:
    return float((u.abs() ** 2).sum())


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().norm() / b.abs().norm())


def _random_field(n: int, seed: int, dtype=torch.complex128) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, n, generator=g, dtype=torch.float64).to(dtype) * torch.exp(
        1j * torch.rand(n, n, generator=g, dtype=torch.float64) * 6.28).to(dtype)


@pytest.mark.parametrize("method", ["asm", "fresnel"])
def test_energy_conserved_on_periodic_window(method: str) -> None:
    u = _random_field(64, 0)
    out = propagate(u, 0.005, 10e-6, WL, method=method, pad_factor=1)
    assert abs(_energy(out) / _energy(u) - 1) < 1e-10


def test_energy_conserved_for_compact_field_with_padding() -> None:
    x, y = _grid(128, 8e-6)
    u = torch.exp(-(x**2 + y**2) / (80e-6) ** 2).to(torch.complex64)
    out = propagate(u, 0.01, 8e-6, WL)
    assert out.dtype == torch.complex64
    assert abs(_energy(out) / _energy(u) - 1) < 1e-4


@pytest.mark.parametrize("method", ["asm", "fresnel"])
def test_forward_then_backward_returns_the_field(method: str) -> None:
    u = _random_field(64, 1, torch.complex64)
    back = propagate(propagate(u, 0.02, 20e-6, WL, method=method, pad_factor=1), -0.02, 20e-6, WL, method=method,
                     pad_factor=1)
    assert _rel(back, u) < 1e-5


def test_forward_then_backward_with_padding_for_compact_field() -> None:
    x, y = _grid(128, 10e-6)
    u = (torch.exp(-(x**2 + y**2) / (150e-6) ** 2) * torch.exp(1j * x / 50e-6)).to(torch.complex128)
    back = propagate(propagate(u, 0.02, 10e-6, WL), -0.02, 10e-6, WL)
    assert _rel(back, u) < 1e-6


@pytest.mark.parametrize("method", ["asm", "fresnel"])
def test_two_steps_equal_one(method: str) -> None:
    u = _random_field(64, 2)
    two = propagate(propagate(u, 0.01, 20e-6, WL, method=method, pad_factor=1), 0.015, 20e-6, WL, method=method,
                    pad_factor=1)
    one = propagate(u, 0.025, 20e-6, WL, method=method, pad_factor=1)
    assert _rel(two, one) < 1e-10


def test_plane_wave_gains_only_phase_kz() -> None:
    u = torch.ones(32, 32, dtype=torch.complex128)
    z = 0.001234
    out = propagate(u, z, 10e-6, WL, pad_factor=1)
    expected = complex(np.exp(1j * 2 * np.pi * z / WL))
    assert torch.allclose(out, torch.full_like(out, expected), atol=1e-9)


def test_tilted_plane_wave_gains_kz_cos_theta() -> None:
    n, pitch, z = 64, 10e-6, 0.01
    cycles = 7  # whole cycles across the window keep the wave periodic
    fx = cycles / (n * pitch)
    x, y = _grid(n, pitch)
    u = torch.exp(1j * 2 * np.pi * fx * x.T)  # varies along columns (x)
    out = propagate(u, z, pitch, WL, pad_factor=1)
    kz = 2 * np.pi * np.sqrt(1 / WL**2 - fx**2)
    assert _rel(out, u * np.exp(1j * kz * z)) < 1e-9
    # and it is not the paraxial value: the check resolves the difference.
    paraxial = 2 * np.pi / WL - np.pi * WL * fx**2
    assert abs((kz - paraxial) * z) > 1e-6


def test_gaussian_beam_width_and_gouy_phase() -> None:
    n, pitch, w0 = 256, 2e-6, 20e-6
    z_r = np.pi * w0**2 / WL
    z = z_r
    x, y = _grid(n, pitch)
    r2 = x**2 + y**2
    u = torch.exp(-r2 / w0**2).to(torch.complex128)
    out = propagate(u, z, pitch, WL)
    w_z = w0 * np.sqrt(1 + (z / z_r) ** 2)
    intensity = out.abs() ** 2
    # 1/e² radius from the second moment: <x²> = w²/4.
    w_meas = math.sqrt(4 * float((intensity * x**2).sum() / intensity.sum()))
    assert abs(w_meas / w_z - 1) < 2e-3
    k = 2 * np.pi / WL
    r_curv = z * (1 + (z_r / z) ** 2)
    analytic = (w0 / w_z) * torch.exp(-r2 / w_z**2) * torch.exp(1j * (k * z + k * r2 / (2 * r_curv) - np.arctan(z / z_r)))
    assert _rel(out, analytic) < 2e-3
    on_axis = complex(out[n // 2, n // 2])
    gouy = np.angle(on_axis * np.exp(-1j * k * z))
    assert abs(gouy - (-np.arctan(z / z_r))) < 1e-3  # −π/4 at the Rayleigh range


@pytest.mark.parametrize("method,tol", [("fresnel", 0.03), ("asm", 0.03)])
def test_square_aperture_matches_fresnel_integrals(method: str, tol: float) -> None:
    n, pitch, a, z = 512, 4e-6, 100e-6, 0.02  # Fresnel number a²/(λz) ≈ 0.94
    c = (torch.arange(n, dtype=torch.float64) - n / 2 + 0.5) * pitch  # symmetric grid, no centre sample
    x, y = torch.meshgrid(c, c, indexing="ij")
    u = ((x.abs() < a) & (y.abs() < a)).to(torch.complex128)
    out = propagate(u, z, pitch, WL, method=method)

    def factor(coord: np.ndarray) -> np.ndarray:
        s = np.sqrt(2 / (WL * z))
        s1, c1 = fresnel(s * (-a - coord))
        s2, c2 = fresnel(s * (a - coord))
        return ((c2 - c1) + 1j * (s2 - s1)) / np.sqrt(2j)

    cn = c.numpy()
    analytic = np.exp(1j * 2 * np.pi * z / WL) * np.outer(factor(cn), factor(cn))
    centre = slice(n // 2 - 64, n // 2 + 64)
    err = np.linalg.norm(out.numpy()[centre, centre] - analytic[centre, centre]) / np.linalg.norm(
        analytic[centre, centre])
    assert err < tol


def test_fresnel_and_asm_differ_by_the_paraxial_error_bound() -> None:
    # Fine sampling so the beam has non-paraxial content worth measuring.
    n, pitch, w0, z = 256, 0.5e-6, 1.5e-6, 200e-6
    x, y = _grid(n, pitch)
    u = torch.exp(-(x**2 + y**2) / w0**2).to(torch.complex128)
    asm = propagate(u, z, pitch, WL, method="asm", pad_factor=2)
    fres = propagate(u, z, pitch, WL, method="fresnel", pad_factor=2)
    # Phase the paraxial approximation drops: Δφ = kz(sqrt(1 − (λf)²) − 1 + (λf)²/2)
    # ≈ −kz(λf)⁴/8; ‖u_asm − u_fresnel‖ ≤ ‖Δφ·U‖ since |e^{iΔφ} − 1| ≤ |Δφ| (Parseval).
    f = torch.fft.fftfreq(2 * n, d=pitch, dtype=torch.float64)
    f2 = f[:, None] ** 2 + f[None, :] ** 2
    spectrum = torch.fft.fft2(torch.nn.functional.pad(u, (n // 2, n // 2, n // 2, n // 2))).abs() ** 2
    x2 = (WL**2 * f2).clamp(max=1)
    dphi = 2 * np.pi / WL * z * (torch.sqrt(1 - x2) - 1 + x2 / 2)
    bound = float(torch.sqrt((dphi**2 * spectrum).sum() / spectrum.sum()))
    diff = _rel(fres, asm)
    assert 0.01 < bound < 1  # the setup really is non-paraxial, and the bound means something
    assert 0.3 * bound < diff < 1.02 * bound


def test_fresnel_and_asm_agree_when_paraxial() -> None:
    x, y = _grid(128, 10e-6)
    u = torch.exp(-(x**2 + y**2) / (150e-6) ** 2).to(torch.complex128)
    assert _rel(propagate(u, 0.02, 10e-6, WL, method="fresnel"), propagate(u, 0.02, 10e-6, WL)) < 1e-6


def test_gradcheck_complex128() -> None:
    u = _random_field(8, 3).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda f: propagate(f, 1e-3, 20e-6, WL), (u,))
    prop = Propagator((8, 8), 20e-6, WL, 1e-3, method="fresnel")
    assert torch.autograd.gradcheck(prop, (u,))


def test_batch_and_single_field_agree() -> None:
    batch = torch.stack([_random_field(32, s, torch.complex64) for s in range(3)])
    out = propagate(batch, 0.05, 36e-6, WL)
    assert out.shape == batch.shape and out.dtype == torch.complex64
    assert torch.allclose(out[1], propagate(batch[1], 0.05, 36e-6, WL), atol=1e-6)
    prop = Propagator((32, 32), 36e-6, WL, 0.05)
    assert torch.allclose(prop(batch), out, atol=1e-6)


def test_transfer_function_is_cached() -> None:
    a = transfer_function((16, 16), 0.1, 36e-6, WL)
    b = transfer_function((16, 16), 0.1, 36e-6, WL)
    assert a is b
    assert transfer_function((16, 16), 0.05, 36e-6, WL) is not a


def test_coarse_sampling_raises_with_advice() -> None:
    # 32 samples of 36 µm over 1 m: the Fresnel chirp aliases.
    with pytest.raises(SamplingError, match="pad_factor >= "):
        propagate(torch.ones(32, 32, dtype=torch.complex64), 1.0, 36e-6, WL, method="fresnel")
    with pytest.raises(SamplingError, match="spectrum survives"):
        propagate(torch.ones(32, 32, dtype=torch.complex64), 3.0, 36e-6, WL, method="asm")
    with pytest.raises(SamplingError):
        Propagator((32, 32), 36e-6, WL, -3.0)
    # the shipped bench and the paper's geometry are fine
    check_sampling((100, 100), 0.2794, 72e-6, WL, "asm", 2)
    check_sampling((200, 200), 0.2794, 36e-6, WL, "fresnel", 2)


def test_bad_arguments_are_named() -> None:
    u = torch.ones(8, 8, dtype=torch.complex64)
    with pytest.raises(SimulationError, match="method"):
        propagate(u, 0.1, 36e-6, WL, method="rayleigh")
    with pytest.raises(SimulationError, match="pad_factor"):
        propagate(u, 0.1, 36e-6, WL, pad_factor=0)
    with pytest.raises(SimulationError, match="pitch_m"):
        propagate(u, 0.1, -1.0, WL)
    with pytest.raises(SimulationError, match="shape"):
        propagate(torch.ones(8, dtype=torch.complex64), 0.1, 36e-6, WL)
