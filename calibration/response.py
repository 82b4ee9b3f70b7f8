"""Measure one SLM's response (phase and amplitude of all 256 gray levels) in situ.

Sequence (docs/calibration.md): dark frame → auto-exposure → a coarse brightness
scan picks the reference gray (the brightest, so every interference term is as
strong as it can be) → 256 split-screen frames (reference | gray g), each the
mean of ``n_average`` exposures, re-taken shorter if saturated → model fit
(:mod:`calibration.splitscreen`) → robust unwrapping → phase relative to gray 0,
amplitude relative to the brightest level.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from calibration.acquire import Acquisition
from calibration.errors import CalibrationError
from calibration.geometry import BenchGeometry
from calibration.registration import Registration
from calibration.splitscreen import SplitModel, bin_frame, camera_matrix, fit_split_screen, footprint, split_map
from calibration.unwrap import unwrap_robust

GRAYS = 256
SCAN_GRAYS = tuple(range(0, 256, 32)) + (255,)
METHOD = "split-screen phase steps fitted through the propagation model"
# Below these ranges the SLM does not modulate at all (dead, unplugged, wrong screen).
MIN_PHASE_RANGE_RAD = 0.05
MIN_AMPLITUDE_RANGE = 0.02


@dataclass
class Response:
    """A measured response, ready to be written as a calibration file."""

    slm: str
    gray: np.ndarray
    phase_rad: np.ndarray
    amplitude: np.ndarray
    phase_std_rad: np.ndarray
    amplitude_std: np.ndarray
    frames: int
    reference_gray: int
    exposure_s: float
    bench_time_s: float
    wall_time_s: float
    diagnostics: dict[str, Any] = field(default_factory=dict)


def _scan(acq: Acquisition, slm: str, shape: tuple[int, int], fp: Any) -> int:
    """Coarse scan of split maps (0 | g) for g in SCAN_GRAYS → the brightest gray.

    Also the early check that the SLM modulates at all: a dead or disconnected SLM
    leaves every frame equal to the brightest one within noise (estimated from a
    repeat of the brightest frame), and the 256-level sweep would be wasted.
    """
    totals: dict[int, float] = {}
    frames: dict[int, np.ndarray] = {}

    def take(g: int) -> np.ndarray:
        acq.show({slm: split_map(shape, 0, g)})
        data = acq.grab_unsaturated(1, f"SLM {slm!r}")
        totals[g] = float(data.sum()) / acq.exposure_s
        norm = fp.take(bin_frame(data)).astype(np.float64)
        # Normalised to unit total: laser drift must not look like modulation.
        return norm / max(float(np.abs(norm).sum()), 1e-30)

    for g in SCAN_GRAYS:
        frames[g] = take(g)
    # The left half (gray 0) adds the same light to every frame; the brightest total is the brightest gray.
    brightest = max(totals, key=totals.__getitem__)
    repeat = take(brightest)
    noise = float(np.sqrt(np.mean((repeat - frames[brightest]) ** 2)))
    change = max(float(np.sqrt(np.mean((f - frames[brightest]) ** 2))) for f in frames.values())
    if change < 5 * noise:
        raise CalibrationError(
            f"SLM {slm!r} does not modulate the beam (the camera image does not change between gray levels: "
            f"{change / max(noise, 1e-30):.1f}x the noise); check its video cable, that its ROI is on the beam, and "
            "the monitor index")
    return brightest


@dataclass
class Sweep:
    """The raw split-screen measurement of one SLM: binned footprint pixels per level (DN)."""

    slm: str
    frames_dn: np.ndarray  # (256, P) float32
    reference_gray: int
    cam: np.ndarray  # SLM pixel → frame pixel affine (2×3)
    frame_shape: tuple[int, int]
    footprint: Any
    frames: int
    bench_time_s: float
    exposure_s: float


def sweep(acq: Acquisition, geom: BenchGeometry, slm: str, registration: Registration, n_average: int = 1,
          progress: Callable[[int], None] | None = None) -> Sweep:
    """Take the 256 split-screen frames of ``slm`` (through the driver interfaces only)."""
    frames0, bench0 = acq.frames, acq.bench_time_s
    shape = geom.shape
    frame_shape = tuple(acq.camera.shape)
    cam = camera_matrix(geom, registration.matrix, tuple(acq.camera.roi))
    fp = footprint(geom, cam, frame_shape)

    acq.light(True)
    # Both extremes on screen: the scan then rarely saturates (nor sits in the dark, as
    # it would after exposing on gray 0 of an amplitude modulator).
    acq.show({slm: split_map(shape, 0, 255)})
    acq.auto_expose(f"SLM {slm!r}")
    ref = _scan(acq, slm, shape, fp)
    acq.show({slm: np.full(shape, ref, dtype=np.uint8)})
    acq.auto_expose(f"SLM {slm!r} at reference gray {ref}")

    y = None
    for g in range(GRAYS):
        acq.show({slm: split_map(shape, ref, g)})
        data = acq.grab_unsaturated(n_average, f"SLM {slm!r} gray {g}")
        row = fp.take(bin_frame(data)).astype(np.float32)
        if y is None:
            y = np.empty((GRAYS, row.size), dtype=np.float32)
        y[g] = row
        if progress is not None:
            progress(1)
    acq.show({})
    assert y is not None
    return Sweep(slm, y, int(ref), cam, frame_shape, fp, acq.frames - frames0, acq.bench_time_s - bench0,
                 acq.exposure_s)


def analyse(geom: BenchGeometry, sw: Sweep) -> tuple[Any, tuple[np.ndarray, ...]]:
    """Fit a sweep through the split-screen model → (LevelFit, (phase, phase_std, amplitude, amplitude_std))."""
    model = SplitModel(geom, sw.slm, sw.cam, sw.frame_shape, sw.footprint)
    fit = fit_split_screen(model, sw.frames_dn, unwrap_robust, sw.reference_gray)
    return fit, to_response(fit.rho, fit.rho_std, fit.delta, fit.delta_std, sw.slm)


def measure_response(acq: Acquisition, geom: BenchGeometry, slm: str, registration: Registration,
                     n_average: int = 1, progress: Callable[[int], None] | None = None) -> Response:
    """Measure all 256 levels of ``slm`` through the driver interfaces only."""
    started = time.perf_counter()
    sw = sweep(acq, geom, slm, registration, n_average, progress)
    fit, (phase, phase_std, amplitude, amplitude_std) = analyse(geom, sw)
    y = sw.frames_dn
    return Response(
        slm=slm,
        gray=np.arange(GRAYS),
        phase_rad=phase,
        amplitude=amplitude,
        phase_std_rad=phase_std,
        amplitude_std=amplitude_std,
        frames=sw.frames,
        reference_gray=sw.reference_gray,
        exposure_s=sw.exposure_s,
        bench_time_s=sw.bench_time_s,
        wall_time_s=time.perf_counter() - started,
        diagnostics={"footprint_pixels": int(y.shape[1]), "binning": 2, "transition_width_px": fit.sigma_px,
                     "split_line_offset_px": fit.shift_px,
                     "residual_rms_dn": float(np.sqrt(fit.total_cost / (y.shape[0] * y.shape[1])))},
    )


def to_response(rho: np.ndarray, rho_std: np.ndarray, delta: np.ndarray, delta_std: np.ndarray,
                slm: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Level ratios to the reference → (phase_rad rel. gray 0, its std, amplitude rel. max, its std).

    Raises CalibrationError when nothing modulates (a dead or disconnected SLM).
    """
    phase = unwrap_robust(delta, delta_std)
    phase = phase - phase[0]
    # Every phase is a difference to gray 0, so gray 0's own error enters each level.
    phase_std = np.hypot(delta_std, delta_std[0])
    phase_std[0] = 0.0
    peak = float(np.max(rho))
    if not peak > 0:
        raise CalibrationError(f"SLM {slm!r}: no level transmits light in the fit")
    amplitude = rho / peak
    amplitude_std = rho_std / peak
    if np.ptp(phase) < MIN_PHASE_RANGE_RAD and np.ptp(amplitude) < MIN_AMPLITUDE_RANGE:
        raise CalibrationError(
            f"SLM {slm!r} does not modulate the beam (phase range {np.ptp(phase):.3f} rad, amplitude range "
            f"{np.ptp(amplitude):.3f}); check its video cable, that the ROI is on the beam, and the monitor index")
    return phase, phase_std, amplitude, amplitude_std
