"""Twin refinement: fit the bench's unknown geometry to captured detector images.

The plain twin assumes perfectly aligned planes at their nominal distances and a
camera registration that is exact. A real (or simulated) bench differs; this module
describes those differences with a few physical parameters, fits them by gradient
descent through :mod:`sims.optics`, and applies them to a DONN so training and
prediction see the bench as it is. It knows nothing of hardware: the fit takes the
probe inputs and the captured detector images as tensors.

Parameters (``TwinCorrections``), all relative to the nominal geometry:

* per layer plane: ``shift_px`` (rows, cols) in neurons — the map appears displaced
  by this much — ``rotation_deg`` about the plane centre (the image-processing sense:
  positive turns the map counter-clockwise as seen on the detector, rows pointing
  down), and ``phase_scale`` — the SLM's phase response relative to its calibration
  (1 = as calibrated);
* per gap: ``distance_error_m`` added to ``distances_m[i]`` (metres);
* detector: ``shift_px``, ``rotation_deg``, ``magnification`` of the detector image
  relative to the camera registration, and ``gain``/``offset`` from twin intensity
  (|E|² per neuron) to the measured neuron image (camera DN per neuron).

* ``oversample``: SLM pixels per neuron side the twin simulates (the plain twin: 1,
  one sample per neuron). A bench shows each neuron as ``u``×``u`` square pixels whose
  edges diffract into angles a neuron-sampled field cannot hold; with ``oversample =
  u`` the twin propagates on the SLM-pixel grid and sums intensity per neuron.
* ``fringing_px``: Gaussian sigma (SLM pixels, i.e. oversampled samples) of the
  crosstalk that smears every plane's pattern across pixel borders.

The input plane is the reference: a shift common to every plane and the detector
cannot be told from a registration error, so it is not a parameter.

Twin file (``labctl.twin/1``, JSON): ``schema``, ``geometry`` (the nominal
:meth:`Geometry.to_json`), ``layers`` [{slm, shift_px, rotation_deg, phase_scale}],
``distance_error_m`` [L+1], ``detector`` {shift_px, rotation_deg, magnification,
gain, offset}, ``oversample`` (int), ``fringing_px``, ``fit`` {frames, iterations, loss_initial, loss_final, ...},
``created``, ``source`` (free-form: bench, calibrations, probes).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sims.donn import DONN, Geometry
from sims.errors import DataError, SimulationError
from sims.io import write_json_atomic
from sims.optics import Propagator, transfer_function

SCHEMA = "labctl.twin/1"


# -- the corrections as data -----------------------------------------------------------


@dataclass(frozen=True)
class PlaneCorrection:
    """Misalignment and response error of one layer plane (neurons, degrees, ratio)."""

    shift_px: tuple[float, float] = (0.0, 0.0)
    rotation_deg: float = 0.0
    phase_scale: float = 1.0


@dataclass(frozen=True)
class DetectorCorrection:
    """Detector image relative to the camera registration, and DN per unit twin intensity."""

    shift_px: tuple[float, float] = (0.0, 0.0)
    rotation_deg: float = 0.0
    magnification: float = 1.0
    gain: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True)
class TwinCorrections:
    """Everything refinement found; ``identity(L)`` is the plain twin."""

    layers: tuple[PlaneCorrection, ...]
    distance_error_m: tuple[float, ...]
    detector: DetectorCorrection = DetectorCorrection()
    slm_names: tuple[str, ...] = ()
    fit: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    oversample: int = 1
    fringing_px: float = 0.0

    @staticmethod
    def identity(layers: int, oversample: int = 1) -> "TwinCorrections":
        return TwinCorrections(tuple(PlaneCorrection() for _ in range(layers)), (0.0,) * (layers + 1),
                               oversample=oversample)

    def check(self, geometry: Geometry) -> None:
        """Raise :class:`SimulationError` unless these corrections fit ``geometry``."""
        if len(self.layers) != geometry.layers or len(self.distance_error_m) != geometry.layers + 1:
            raise SimulationError(f"twin corrections are for {len(self.layers)} layers, the model has "
                                  f"{geometry.layers}")
        if not isinstance(self.oversample, int) or not 1 <= self.oversample <= 8:
            raise SimulationError(f"twin oversample must be an integer 1..8, got {self.oversample!r}")
        if not (math.isfinite(self.fringing_px) and 0 <= self.fringing_px <= 4 * self.oversample):
            raise SimulationError(f"twin fringing_px must be 0..{4 * self.oversample} samples, got {self.fringing_px}")
        for i, (d, e) in enumerate(zip(geometry.distances_m, self.distance_error_m)):
            if not d + e > 0:
                raise SimulationError(f"twin distance {i}: {d} m + error {e} m is not a positive distance")

    def to_json(self, geometry: Geometry) -> dict[str, Any]:
        names = list(self.slm_names) or [f"layer{i + 1}" for i in range(len(self.layers))]
        return {
            "schema": SCHEMA,
            "geometry": geometry.to_json(),
            "layers": [{"slm": n, "shift_px": list(p.shift_px), "rotation_deg": p.rotation_deg,
                        "phase_scale": p.phase_scale} for n, p in zip(names, self.layers)],
            "distance_error_m": list(self.distance_error_m),
            "detector": {"shift_px": list(self.detector.shift_px), "rotation_deg": self.detector.rotation_deg,
                         "magnification": self.detector.magnification, "gain": self.detector.gain,
                         "offset": self.detector.offset},
            "oversample": self.oversample,
            "fringing_px": self.fringing_px,
            "fit": self.fit,
            "source": self.source,
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    @staticmethod
    def from_json(data: Any, where: str = "<memory>") -> "TwinCorrections":
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise DataError(f"{where}: not a refined twin (expected schema {SCHEMA!r})")
        try:
            layers = tuple(PlaneCorrection(_pair(p["shift_px"]), float(p["rotation_deg"]), float(p["phase_scale"]))
                           for p in data["layers"])
            names = tuple(str(p.get("slm", "")) for p in data["layers"])
            det = data["detector"]
            detector = DetectorCorrection(_pair(det["shift_px"]), float(det["rotation_deg"]),
                                          float(det["magnification"]), float(det["gain"]), float(det["offset"]))
            dist = tuple(float(v) for v in data["distance_error_m"])
            oversample = data.get("oversample", 1)
            fringing = float(data.get("fringing_px", 0.0))
            if not isinstance(oversample, int) or isinstance(oversample, bool) or not 1 <= oversample <= 8:
                raise ValueError(f"oversample must be an integer 1..8, got {oversample!r}")
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{where}: malformed refined twin ({type(e).__name__}: {e})") from None
        values = [fringing] + [v for p in layers for v in (*p.shift_px, p.rotation_deg, p.phase_scale)] + list(dist) + \
            [*detector.shift_px, detector.rotation_deg, detector.magnification, detector.gain, detector.offset]
        if not all(math.isfinite(v) for v in values):
            raise DataError(f"{where}: refined twin holds non-finite values")
        if not all(p.phase_scale > 0 for p in layers) or not detector.magnification > 0:
            raise DataError(f"{where}: phase_scale and magnification must be > 0")
        if fringing < 0:
            raise DataError(f"{where}: fringing_px must be >= 0")
        return TwinCorrections(layers, dist, detector, names, dict(data.get("fit") or {}),
                               dict(data.get("source") or {}), oversample, fringing)


def _pair(v: Any) -> tuple[float, float]:
    a, b = v
    return (float(a), float(b))


def save_twin(path: str | Path, corrections: TwinCorrections, geometry: Geometry) -> Path:
    """Write the twin file atomically."""
    return write_json_atomic(path, corrections.to_json(geometry))


def load_twin(path: str | Path) -> tuple[TwinCorrections, dict[str, Any]]:
    """(corrections, nominal geometry as stored) of a twin file."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{p}: refined twin file not found (write one with `labctl refine`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{p}: not a readable twin file ({e})") from None
    return TwinCorrections.from_json(data, str(p)), dict(data.get("geometry") or {})


def check_geometry(stored: dict[str, Any], geometry: Geometry, where: str) -> None:
    """Refuse a twin refined for another grid, wavelength or distances."""
    mine = geometry.to_json()
    for key in ("wavelength_m", "pitch_m", "size", "distances_m"):
        a, b = stored.get(key), mine[key]
        if a is None:
            raise DataError(f"{where}: twin file has no geometry.{key}")
        if not np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=1e-6, atol=0):
            raise DataError(f"{where}: twin refined for {key} = {a}, the model has {b}")


# -- differentiable pieces -----------------------------------------------------------------


def _affine_sample(x: torch.Tensor, rot_rad: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor | float = 1.0,
                   padding: str = "border") -> torch.Tensor:
    """Image ``x`` (B, N, N) real, moved: out(q) = x(p) with q − c = s·R(θ)(p − c) + shift.

    ``shift`` (rows, cols) in pixels; R turns the image counter-clockwise for
    positive θ in a rows-down frame (OpenCV's ``getRotationMatrix2D`` convention);
    ``s`` magnifies about the centre c = ((N−1)/2, (N−1)/2). Bilinear.
    """
    n_rows, n_cols = x.shape[-2:]
    dev, dt = x.device, x.dtype
    ys = torch.arange(n_rows, device=dev, dtype=dt) - (n_rows - 1) / 2
    xs = torch.arange(n_cols, device=dev, dtype=dt) - (n_cols - 1) / 2
    qy, qx = torch.meshgrid(ys, xs, indexing="ij")
    qy = qy - shift[0]
    qx = qx - shift[1]
    c, s = torch.cos(rot_rad), torch.sin(rot_rad)
    # Forward map (x, y) → (c·x + s·y, −s·x + c·y); its inverse is the transpose.
    px = (c * qx - s * qy) / scale
    py = (s * qx + c * qy) / scale
    grid = torch.stack((px / ((n_cols - 1) / 2), py / ((n_rows - 1) / 2)), dim=-1)
    grid = grid.expand(x.shape[0], n_rows, n_cols, 2) if grid.dim() == 3 else grid
    return F.grid_sample(x[:, None], grid, mode="bilinear", padding_mode=padding, align_corners=True)[:, 0]


def upsample(x: torch.Tensor, s: int) -> torch.Tensor:
    """Each sample repeated ``s``×``s`` times (a neuron shown as square SLM pixels)."""
    if s == 1:
        return x
    return x.repeat_interleave(s, dim=-2).repeat_interleave(s, dim=-1)


def pool(x: torch.Tensor, s: int) -> torch.Tensor:
    """Sum of every ``s``×``s`` block: intensity per neuron from the SLM-pixel grid."""
    if s == 1:
        return x
    *lead, h, w = x.shape
    return x.reshape(*lead, h // s, s, w // s, s).sum(dim=(-3, -1))


FRINGE_RADIUS = 3  # kernel half-width, samples: 5 sigma at the largest sigma fitted in practice (0.6)


def fringe(t: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """Gaussian crosstalk of ``sigma`` samples on a complex or real map (..., H, W); edges repeat."""
    sigma_t = torch.as_tensor(sigma, dtype=torch.float32)
    if not bool(sigma_t > 1e-3):
        return t
    x = torch.arange(-FRINGE_RADIUS, FRINGE_RADIUS + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma_t) ** 2)
    k = k / k.sum()
    parts = torch.stack((t.real, t.imag)) if t.is_complex() else t[None]
    shape = parts.shape
    flat = parts.reshape(-1, 1, shape[-2], shape[-1])
    r = FRINGE_RADIUS
    y = F.conv2d(F.pad(flat, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1)).reshape(shape)
    return torch.complex(y[0], y[1]) if t.is_complex() else y[0]


def slm_pixels(amplitude: torch.Tensor, phase: torch.Tensor, oversample: int, sigma: torch.Tensor | float,
               rot_rad: torch.Tensor | None = None, shift: torch.Tensor | None = None,
               complex_mix: float = 0.0) -> torch.Tensor:
    """The complex transmission an SLM shows for neuron maps of ``amplitude`` and
    ``phase`` (radians, unwrapped) ``(N, N)`` or ``(B, N, N)``: each neuron as
    ``oversample``² pixels, the pixel crosstalk (Gaussian, ``sigma`` pixels), then the
    plane's misalignment (``rot_rad``, ``shift`` (rows, cols) in pixels; edges repeat,
    like a real SLM whose neighbouring pixels show the border level).

    Amplitude and phase are smoothed and resampled apart, then combined, as the
    simulated bench does (drivers/sim/world.py): the crosstalk smooths the liquid
    crystal's retardance, i.e. the phase map. Smoothing or interpolating the complex
    field instead dims every edge between unlike levels, a different device (on the
    simulated bench it cost the refined twin 3 points of captured accuracy,
    docs/results.md).

    ``complex_mix`` in [0, 1] blends in the complex-field resampling: the fit starts
    there, where the loss is smoother in the shifts, and ends at 0.
    """
    a = fringe(upsample(amplitude, oversample), sigma)
    p = fringe(upsample(phase, oversample), sigma)
    if rot_rad is None or shift is None:
        return torch.polar(a, p)

    def moved(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        single = x.dim() == 2
        out = _affine_sample(torch.cat((x[None], y[None]) if single else (x, y)), rot_rad, shift)
        half = out.shape[0] // 2
        return (out[0], out[1]) if single else (out[:half], out[half:])

    t = torch.polar(*moved(a, p))
    if complex_mix > 0:
        c = torch.polar(a, p)
        t = (1 - complex_mix) * t + complex_mix * torch.complex(*moved(c.real, c.imag))
    return t


def fine_geometry(geometry: Geometry, s: int) -> Geometry:
    """The same bench sampled ``s`` times finer (pitch / s, regions and input scaled)."""
    if s == 1:
        return geometry
    return replace(geometry, size=geometry.size * s, pitch_m=geometry.pitch_m / s,
                   regions=tuple((r * s, c * s, h * s, w * s) for r, c, h, w in geometry.regions),
                   input_size=geometry.input_size * s)


class _Gap(torch.nn.Module):
    """Free space of nominal length ``z_m`` plus a trainable error ``dz`` (metres).

    The nominal transfer function is the cached one of :mod:`sims.optics`; the error
    multiplies it by exp(i·2π·dz·(kz − 1/λ)) — the exact angular-spectrum phase of
    the extra length without its irrelevant constant part.
    """

    def __init__(self, geometry: Geometry, z_m: float, dz_m: float = 0.0, trainable: bool = False) -> None:
        super().__init__()
        n = geometry.size
        self.pad = geometry.pad_factor
        self.shape = (n, n)
        h = transfer_function(self.shape, z_m, geometry.pitch_m, geometry.wavelength_m, method=geometry.method,
                              pad_factor=self.pad)
        self.register_buffer("h", h, persistent=False)
        m = n * self.pad
        f = torch.fft.fftfreq(m, d=geometry.pitch_m, dtype=torch.float64)
        f2 = f[:, None] ** 2 + f[None, :] ** 2
        lam = geometry.wavelength_m
        kz = torch.sqrt((1.0 / lam**2 - f2).clamp(min=0)) - 1.0 / lam
        # dz is stored in millimetres so Adam's step size suits it like the other parameters.
        self.register_buffer("kz_mm", (2 * math.pi * 1e-3 * kz).float(), persistent=False)
        self.dz_mm = torch.nn.Parameter(torch.tensor(float(dz_m) * 1e3), requires_grad=trainable)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        n_rows, n_cols = self.shape
        spec = torch.fft.fft2(u, s=(n_rows * self.pad, n_cols * self.pad))
        h = self.h * torch.polar(torch.ones_like(self.kz_mm), self.kz_mm * self.dz_mm)
        return torch.fft.ifft2(spec * h)[..., :n_rows, :n_cols]


class BenchTwin(torch.nn.Module):
    """The nominal twin plus trainable corrections; ``forward`` gives detector images.

    ``forward(inputs, layer_phase, layer_amp)``: ``inputs`` amplitude fields (B, N, N)
    on the input plane; ``layer_phase``/``layer_amp`` per layer (B or 1, N, N) — the
    calibrated phase (rad) and amplitude of the displayed gray levels. Returns the
    predicted neuron image (B, N, N) in the measured units: gain·|E|² + offset after
    the detector's shift/rotation/magnification.
    """

    def __init__(self, geometry: Geometry, start: TwinCorrections | None = None, *,
                 fit_distances: bool = True) -> None:
        super().__init__()
        start = start or TwinCorrections.identity(geometry.layers)
        start.check(geometry)
        self.geometry = geometry
        self.oversample = start.oversample
        fine = fine_geometry(geometry, self.oversample)
        self.fringing = torch.nn.Parameter(torch.tensor(float(start.fringing_px)), requires_grad=self.oversample > 1)
        L = geometry.layers
        self.shift = torch.nn.Parameter(torch.tensor([p.shift_px for p in start.layers], dtype=torch.float32))
        self.rot_deg = torch.nn.Parameter(torch.tensor([p.rotation_deg for p in start.layers], dtype=torch.float32))
        self.phase_scale = torch.nn.Parameter(torch.tensor([p.phase_scale for p in start.layers],
                                                           dtype=torch.float32))
        d = start.detector
        self.det_shift = torch.nn.Parameter(torch.tensor(d.shift_px, dtype=torch.float32))
        self.det_rot_deg = torch.nn.Parameter(torch.tensor(d.rotation_deg, dtype=torch.float32))
        self.det_log_mag = torch.nn.Parameter(torch.tensor(math.log(d.magnification), dtype=torch.float32))
        self.gain = d.gain
        self.offset = d.offset
        self.gaps = torch.nn.ModuleList(_Gap(fine, z, e, fit_distances)
                                        for z, e in zip(geometry.distances_m, start.distance_error_m))
        self.names = start.slm_names or tuple(f"layer{i + 1}" for i in range(L))
        self.complex_mix = 0.0  # see slm_pixels; the fit anneals it to 0

    def intensity(self, inputs: torch.Tensor, layer_phase: Sequence[torch.Tensor],
                  layer_amp: Sequence[torch.Tensor]) -> torch.Tensor:
        """|E|² per neuron on the detector plane (B, N, N), before the camera."""
        s = self.oversample
        sigma = self.fringing.clamp(0.0, float(FRINGE_RADIUS) / 2)
        u = self.gaps[0](fringe(upsample(inputs.float(), s), sigma).to(torch.complex64))
        for i, gap in enumerate(self.gaps[1:]):
            t = slm_pixels(layer_amp[i], layer_phase[i] * self.phase_scale[i], s, sigma,
                           torch.deg2rad(self.rot_deg[i]), self.shift[i] * s, self.complex_mix)
            u = gap(u * t)
        return pool(u.real.square() + u.imag.square(), s)

    def camera(self, intensity: torch.Tensor) -> torch.Tensor:
        """The detector image as the registered camera sees it (still in |E|² units)."""
        return _affine_sample(intensity, torch.deg2rad(self.det_rot_deg), self.det_shift,
                              torch.exp(self.det_log_mag), padding="zeros")

    def forward(self, inputs: torch.Tensor, layer_phase: Sequence[torch.Tensor],
                layer_amp: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.gain * self.camera(self.intensity(inputs, layer_phase, layer_amp)) + self.offset

    def corrections(self, fit: dict[str, Any] | None = None, source: dict[str, Any] | None = None) -> TwinCorrections:
        with torch.no_grad():
            layers = tuple(PlaneCorrection((float(s[0]), float(s[1])), float(r), float(k))
                           for s, r, k in zip(self.shift, self.rot_deg, self.phase_scale))
            det = DetectorCorrection((float(self.det_shift[0]), float(self.det_shift[1])), float(self.det_rot_deg),
                                     float(torch.exp(self.det_log_mag)), float(self.gain), float(self.offset))
            dist = tuple(float(g.dz_mm) * 1e-3 for g in self.gaps)
        return TwinCorrections(layers, dist, det, tuple(self.names), fit or {}, source or {}, self.oversample,
                               max(0.0, float(self.fringing.detach())))


# -- the fit ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """One group of frames taken with the same layer maps.

    ``inputs`` amplitude (M, N, N) on the input plane; ``layer_phase``/``layer_amp``
    per layer (N, N), the calibrated response at the shown grays; ``measured`` (M, N, N)
    the captured neuron images (camera DN per neuron, dark subtracted).
    """

    inputs: torch.Tensor
    layer_phase: tuple[torch.Tensor, ...]
    layer_amp: tuple[torch.Tensor, ...]
    measured: torch.Tensor


@dataclass(frozen=True)
class FitOptions:
    iterations: int = 150
    lr: float = 0.05
    fit_distances: bool = True
    fit_phase_scale: bool = True
    # Coarse-to-fine: the loss starts on images blurred by this many neurons (Gaussian
    # sigma), shrinking to 0 over the first half, so a shift of a few neurons still
    # has a gradient pointing home.
    blur_start_px: float = 2.0
    # Detail finer than this (neurons) is not compared at the end: the twin samples each
    # neuron once while a bench's SLM pixels, fringing and camera resolve finer structure
    # no neuron-grid twin can represent.
    blur_end_px: float = 0.0
    oversample: int = 1  # SLM pixels per neuron side simulated (see the module docstring)
    fringing_start_px: float = 0.5


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma < 0.3:
        return x
    r = int(math.ceil(3 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype) / sigma) ** 2)
    k = (k / k.sum()).to(x.device)
    y = F.conv2d(F.pad(x[:, None], (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return y[:, 0]


def _gain_offset(pred: torch.Tensor, meas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares gain and offset of ``meas ≈ g·pred + o`` (closed form, differentiable)."""
    p = pred.reshape(-1)
    m = meas.reshape(-1)
    pm, mm = p.mean(), m.mean()
    var = ((p - pm) ** 2).mean().clamp_min(1e-30)
    g = ((p - pm) * (m - mm)).mean() / var
    return g, mm - g * pm


def fit_twin(geometry: Geometry, probes: Sequence[Probe], *, start: TwinCorrections | None = None,
             options: FitOptions = FitOptions(), slm_names: Sequence[str] = (),
             on_step: Callable[[dict[str, float]], None] | None = None) -> TwinCorrections:
    """Fit the corrections to the probes by Adam on the relative squared error.

    Gain and offset are solved in closed form at every step (they are linear), the
    rest by gradient descent through the propagation. Returns the corrections with
    ``fit`` = {frames, iterations, loss_initial, loss_final, loss_plain}.
    """
    if not probes:
        raise SimulationError("refinement needs at least one probe")
    n = geometry.size
    for k, p in enumerate(probes):
        if p.inputs.shape[-2:] != (n, n) or p.measured.shape != p.inputs.shape or len(p.layer_phase) != \
                geometry.layers or len(p.layer_amp) != geometry.layers:
            raise SimulationError(f"probe {k}: inputs {tuple(p.inputs.shape)} and measured "
                                  f"{tuple(p.measured.shape)} must be (M, {n}, {n}) with one map per layer")
        if not torch.isfinite(p.measured).all():
            raise SimulationError(f"probe {k}: measured images hold non-finite values")
    if start is None:
        start = replace(TwinCorrections.identity(geometry.layers, options.oversample),
                        fringing_px=options.fringing_start_px if options.oversample > 1 else 0.0)
    if slm_names:
        start = replace(start, slm_names=tuple(slm_names))
    twin = BenchTwin(geometry, start, fit_distances=options.fit_distances)
    twin.phase_scale.requires_grad_(options.fit_phase_scale)
    params = [p for p in twin.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=options.lr)
    frames = sum(int(p.measured.shape[0]) for p in probes)
    scale = sum(float(p.measured.square().sum()) for p in probes) / frames

    def loss_at(sigma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        preds = [twin.camera(twin.intensity(p.inputs, [x[None] for x in p.layer_phase],
                                            [x[None] for x in p.layer_amp])) for p in probes]
        pred = torch.cat([_blur(x, sigma) for x in preds])
        meas = torch.cat([_blur(p.measured, sigma) for p in probes])
        g, o = _gain_offset(pred, meas)
        return ((g * pred + o - meas) ** 2).sum() / (frames * scale), g, o

    with torch.no_grad():
        plain = BenchTwin(geometry, fit_distances=False)
        loss_initial = float(loss_at(options.blur_end_px)[0])
        saved = twin
        twin = plain
        loss_plain = float(loss_at(options.blur_end_px)[0])
        twin = saved
    half = max(1, options.iterations // 2)
    # Cosine decay: large steps find the basin, small ones settle in it.
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, options.iterations), eta_min=options.lr * 0.02)
    for it in range(options.iterations):
        sigma = options.blur_end_px + (options.blur_start_px - options.blur_end_px) * max(0.0, 1.0 - it / half)
        twin.complex_mix = max(0.0, 1.0 - 2 * it / half)
        loss, _, _ = loss_at(sigma)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if on_step is not None:
            on_step({"iteration": it, "loss": float(loss.detach()), "blur_px": sigma})
    twin.complex_mix = 0.0
    with torch.no_grad():
        loss, g, o = loss_at(options.blur_end_px)
    twin.gain, twin.offset = float(g), float(o)
    fit = {"frames": frames, "iterations": options.iterations, "loss_plain": loss_plain,
           "loss_initial": loss_initial, "loss_final": float(loss), "lr": options.lr,
           "blur_end_px": options.blur_end_px}
    return twin.corrections(fit)


# -- using the corrections in a DONN -------------------------------------------------------


class CorrectedLayer(torch.nn.Module):
    """A quantizer seen through its plane's misalignment and response error.

    Delegates everything a trainer or exporter asks to the wrapped quantizer, so the
    maps exported are still the grays the SLM will show; only what the twin simulates
    changes.
    """

    def __init__(self, inner: torch.nn.Module, correction: PlaneCorrection, oversample: int = 1,
                 fringing_px: float = 0.0) -> None:
        super().__init__()
        self.inner = inner
        self.correction = correction
        self.oversample = int(oversample)
        self.fringing_px = float(fringing_px)
        self.register_buffer("shift", torch.tensor(correction.shift_px, dtype=torch.float32), persistent=False)
        self.register_buffer("rot", torch.tensor(math.radians(correction.rotation_deg)), persistent=False)
        self._orig_phase = inner.level_phase.clone()
        if correction.phase_scale != 1.0:
            inner.level_phase = inner.level_phase * correction.phase_scale
            if hasattr(inner, "t") and hasattr(inner, "gray"):  # a Fixed layer: rebuild its transmission
                idx = inner.hard_indices()
                if bool((idx >= 0).all()):
                    inner.t = torch.polar(inner.level_amplitude[idx], inner.level_phase[idx])

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["inner"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        # The trainer hands each layer its noise generator; the wrapped quantizer draws the noise.
        if name == "noise_generator":
            setattr(self._modules["inner"], name, value)
        else:
            super().__setattr__(name, value)

    def _warp(self, amplitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        return slm_pixels(amplitude, phase, self.oversample, self.fringing_px, self.rot, self.shift * self.oversample)

    def forward(self) -> torch.Tensor:
        return self._warp(*self.inner.polar())

    def evaluation_transmission(self) -> torch.Tensor:
        return self._warp(*self.inner.evaluation_polar())

    def set_progress(self, epoch: float, epochs: int) -> None:
        self.inner.set_progress(epoch, epochs)

    def regularizer(self) -> torch.Tensor | None:
        return self.inner.regularizer()

    def export(self) -> tuple[np.ndarray, np.ndarray]:
        gray, t = self.inner.export()
        if self.correction.phase_scale != 1.0:
            idx = self.inner.hard_indices()
            if bool((idx >= 0).all()):
                t = torch.polar(self.inner.level_amplitude[idx], self._orig_phase[idx]).numpy().astype(np.complex64)
        return gray, t


def apply_twin(model: DONN, corrections: TwinCorrections) -> DONN:
    """Make ``model`` simulate the refined bench, in place; returns it.

    Layers are wrapped (:class:`CorrectedLayer`), gaps get their corrected lengths,
    and the detector masks are moved to where the camera's registered regions really
    collect light. Gain and offset are left out: they scale every score alike.
    """
    g = model.geometry
    corrections.check(g)
    n = g.size
    s = corrections.oversample
    fine = fine_geometry(g, s)
    model.layers = torch.nn.ModuleList(CorrectedLayer(q, c, s, corrections.fringing_px)
                                       for q, c in zip(model.layers, corrections.layers))
    gaps = [Propagator((fine.size, fine.size), fine.pitch_m, g.wavelength_m, d + e, g.method, g.pad_factor)
            for d, e in zip(g.distances_m, corrections.distance_error_m)]
    gaps[0] = _InputGap(gaps[0], s, corrections.fringing_px)
    model.gaps = torch.nn.ModuleList(gaps)
    d = corrections.detector
    masks = torch.zeros(g.classes, n, n)
    for c, (r, col, h, w) in enumerate(g.regions):
        masks[c, r:r + h, col:col + w] = 1.0
    # The camera sums region R of the measured image M(q) = I(T⁻¹q): a twin pixel p
    # counts where T(p) falls in R, i.e. the mask sampled through the forward map.
    moved = upsample(_pull_back(masks, math.radians(d.rotation_deg), d.shift_px, d.magnification), s)
    model.masks = moved.reshape(g.classes, fine.size * fine.size).T.contiguous()
    return model


class _InputGap(torch.nn.Module):
    """The first gap of an oversampled twin: the neuron-grid input field shown as SLM
    pixels (with crosstalk), then propagated on the fine grid."""

    def __init__(self, gap: Propagator, oversample: int, fringing_px: float) -> None:
        super().__init__()
        self.gap = gap
        self.oversample = oversample
        self.fringing_px = fringing_px

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.gap(fringe(upsample(u, self.oversample), self.fringing_px))


def _pull_back(masks: torch.Tensor, rot_rad: float, shift: tuple[float, float], scale: float) -> torch.Tensor:
    """m'(p) = m(T p) with T(p) − c = s·R(θ)(p − c) + shift (the camera's forward map)."""
    n_rows, n_cols = masks.shape[-2:]
    ys = torch.arange(n_rows, dtype=torch.float32) - (n_rows - 1) / 2
    xs = torch.arange(n_cols, dtype=torch.float32) - (n_cols - 1) / 2
    py, px = torch.meshgrid(ys, xs, indexing="ij")
    c, s = math.cos(rot_rad), math.sin(rot_rad)
    qx = scale * (c * px + s * py) + shift[1]
    qy = scale * (-s * px + c * py) + shift[0]
    grid = torch.stack((qx / ((n_cols - 1) / 2), qy / ((n_rows - 1) / 2)), dim=-1)[None].expand(masks.shape[0], -1,
                                                                                                 -1, -1)
    return F.grid_sample(masks[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[:, 0]
