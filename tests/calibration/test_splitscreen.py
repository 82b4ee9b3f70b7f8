"""The split-screen fit against an independent forward simulation (numpy/cv2 + sims.optics).

The frames are made the way a bench makes them — phase and amplitude maps blurred
and shifted like a real liquid crystal, propagated, imaged with an affine camera,
noisy — not with the fit's own product-image model.
"""

import math

import cv2
import numpy as np
import pytest
import torch

from calibration.errors import CalibrationError
from calibration.geometry import BenchGeometry
from calibration.splitscreen import SplitModel, bin_frame, fit_split_screen, footprint, split_map
from calibration.unwrap import unwrap_robust
from sims.optics import propagate

GEOM = BenchGeometry("t", 532e-9, 36e-6, (64, 64), 2, ("in", "l1"), (0.05, 0.08))
CAM = np.array([[2.0 * math.cos(0.01), -2.0 * math.sin(0.01), 12.3], [2.0 * math.sin(0.01), 2.0 * math.cos(0.01), 9.6]])
FRAME = (150, 150)


def _frames(phase, amp, ref, fringing=0.6, shift=(0.25, -0.15), photons=3e4, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    m = np.float32([[1, 0, shift[1]], [0, 1, shift[0]]])
    for g in range(len(phase)):
        gray = split_map(GEOM.shape, ref, g)
        p = cv2.GaussianBlur(phase[gray].astype(np.float32), (0, 0), fringing, borderType=cv2.BORDER_REPLICATE)
        a = cv2.GaussianBlur(amp[gray].astype(np.float32), (0, 0), fringing, borderType=cv2.BORDER_REPLICATE)
        p = cv2.warpAffine(p, m, (64, 64), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        a = cv2.warpAffine(a, m, (64, 64), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        field = propagate(torch.ones(64, 64, dtype=torch.complex64), 0.05, 36e-6, 532e-9)
        field = propagate(field * torch.from_numpy((a * np.exp(1j * p)).astype(np.complex64)), 0.08, 36e-6, 532e-9)
        det = (field.abs() ** 2).numpy()
        img = cv2.warpAffine(det, CAM, (FRAME[1], FRAME[0]), flags=cv2.INTER_LINEAR, borderValue=0) * photons
        img = img * (1 + 0.003 * rng.standard_normal()) + 40.0  # laser drift, stray light
        out.append(img + rng.standard_normal(img.shape) * np.sqrt(img + 25))
    return np.stack(out)


def _fit(frames, ref):
    fp = footprint(GEOM, CAM, FRAME)
    model = SplitModel(GEOM, "l1", CAM, FRAME, fp)
    y = fp.take(bin_frame(frames)).astype(np.float32)
    return fit_split_screen(model, y, unwrap_robust, ref)


N = 16
X = np.linspace(0, 1, N)
PHASE = 5.8 * X**1.2  # beyond π from the reference: transitions wind the long way
AMP = 1.0 - 0.35 * np.sin(np.pi * X) ** 2  # non-monotonic


def _errors(fit, ref):
    est = unwrap_robust(fit.delta, fit.delta_std)
    est -= est[ref]
    true_phase = PHASE - PHASE[ref]
    return est - true_phase, fit.rho - AMP / AMP[ref]


def test_sharp_split_line_is_recovered_to_the_noise():
    fit = _fit(_frames(PHASE, AMP, 0, fringing=0.01, shift=(0.0, 0.0)), 0)
    dp, da = _errors(fit, 0)
    assert np.sqrt(np.mean(dp**2)) < 0.005
    assert np.sqrt(np.mean(da**2)) < 0.002


def test_recovers_phase_amplitude_and_nuisances_with_fringing():
    ref = 3
    fit = _fit(_frames(PHASE, AMP, ref), ref)
    dp, da = _errors(fit, ref)
    # The fitted transition (erf step) only approximates a blurred, resampled pixel step.
    assert np.sqrt(np.mean(dp**2)) < 0.05
    assert np.sqrt(np.mean(da**2)) < 0.01
    assert fit.sigma_px == pytest.approx(0.6, abs=0.2)
    assert fit.shift_px == pytest.approx(-0.15, abs=0.15)
    est = dp + (PHASE - PHASE[ref])
    # Reported uncertainties are of the size of the actual scatter, not orders off.
    assert np.all(fit.delta_std[np.arange(N) != ref] > 0)
    assert np.all(np.isfinite(est))


def test_footprint_off_the_frame_is_a_clear_error():
    far = CAM.copy()
    far[0, 2] += 400
    with pytest.raises(CalibrationError, match="detector plane falls on the camera"):
        footprint(GEOM, far, FRAME)
