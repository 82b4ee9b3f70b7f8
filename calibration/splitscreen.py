"""Split-screen phase steps fitted through the propagation model.

The SLM under test shows its reference gray r on the left half of its ROI and gray
g on the right half; every other SLM shows a uniform map (a constant factor). The
camera sees the two halves' diffraction patterns interfere along the split line;
their fringes move with the phase step Δ_g and their contrast follows the
amplitude ratio ρ_g of ``t_g / t_r = ρ_g exp(iΔ_g)``.

Model: the detector field is ``Σ_m u_m F_m`` where the fields ``F_m`` (unit
transmission) of the left part, the right part and each pixel column near the
split line come from ``sims.optics`` with the bench's own distances and apertures.
Far from the line ``u = 1`` (left) and ``u = t_g`` (right). Near it the liquid
crystal does not switch sharply (fringing fields), and the line sits a fraction of
a pixel off (misalignment): column j takes ``a_j exp(iΔ W_j)`` with
``a_j = 1 + (ρ − 1) W_j`` and ``W_j`` a smooth step of width ``σ`` centred at the
line + ``δ``. The intensity ``|Σ u_m F_m|²`` is a fixed set of product images
(``F_m F_n*``) mapped onto the camera through the registration, weighted by
products of the ``u``; per frame, a scale S (laser power × exposure) and a
stray-light constant are fitted with (ρ, Δ) by Gauss–Newton, and the global
nuisances (σ, δ) by golden-section search on the total residual. Working in the
coordinates of the product images keeps every step a small dense computation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
import torch

from calibration.errors import CalibrationError
from calibration.geometry import BenchGeometry
from sims.errors import SimulationError
from sims.optics import propagate

BIN = 2  # camera pixels per side binned together before fitting (the camera oversamples the SLM pixel ~2x)
TRANSITION_PX = 8  # pixel columns around the split line modelled one by one


def split_map(shape: tuple[int, int], ref_gray: int, gray: int) -> np.ndarray:
    """uint8 ROI map: ``ref_gray`` on the left half, ``gray`` on the right half."""
    out = np.full(shape, ref_gray, dtype=np.uint8)
    out[:, shape[1] // 2 :] = gray
    return out


def _propagate(field: torch.Tensor, geom: BenchGeometry, gaps: tuple[float, ...]) -> torch.Tensor:
    try:
        for z in gaps:
            field = propagate(field, z, geom.pitch_m, geom.wavelength_m, method=geom.method, pad_factor=geom.pad_factor)
    except SimulationError as e:
        raise CalibrationError(f"cannot model the bench's propagation: {e}") from None
    return field


def column_fields(geom: BenchGeometry, slm: str) -> tuple[np.ndarray, np.ndarray]:
    """Detector-plane fields (M, rows, cols) complex64 of: the left part, the right part, and
    each of the ``TRANSITION_PX`` pixel columns around the split line; and those columns'
    centre positions relative to the split line (SLM pixels).

    Each SLM crops the beam to its ROI (every gap is propagated separately, as the
    bench does).
    """
    idx = geom.index(slm)
    rows, cols = geom.shape
    incident = torch.ones((rows, cols), dtype=torch.complex64)
    incident = _propagate(incident, geom, geom.distances_m[:idx])
    first = cols // 2 - TRANSITION_PX // 2
    masks = np.zeros((2 + TRANSITION_PX, cols), dtype=np.float32)
    masks[0, :first] = 1.0
    masks[1, first + TRANSITION_PX :] = 1.0
    for k in range(TRANSITION_PX):
        masks[2 + k, first + k] = 1.0
    full = torch.from_numpy(np.ascontiguousarray(np.broadcast_to(masks[:, None, :], (len(masks), rows, cols))))
    fields = _propagate(incident * full, geom, geom.distances_m[idx:]).numpy()
    positions = np.arange(first, first + TRANSITION_PX) - (cols / 2 - 0.5)
    return fields, positions


def camera_matrix(geom: BenchGeometry, registration_matrix: np.ndarray, roi: tuple[int, int, int, int]) -> np.ndarray:
    """2×3 affine: SLM pixel index on the detector plane → camera frame pixel (inside ``roi``)."""
    m = np.vstack([registration_matrix, [0.0, 0.0, 1.0]]) @ geom.pixel_to_neuron()
    m[0, 2] -= roi[0]
    m[1, 2] -= roi[1]
    return m[:2]


def bin_frame(a: np.ndarray) -> np.ndarray:
    """Sum ``BIN``×``BIN`` blocks (trailing rows/cols that do not fill a block are dropped)."""
    h, w = (a.shape[-2] // BIN) * BIN, (a.shape[-1] // BIN) * BIN
    a = a[..., :h, :w]
    return a.reshape(*a.shape[:-2], h // BIN, BIN, w // BIN, BIN).sum(axis=(-1, -3))


@dataclass
class Footprint:
    """Where the detector plane lands on the (binned) frame: a bounding box and a mask inside it."""

    y0: int
    y1: int
    x0: int
    x1: int
    mask: np.ndarray  # bool, (y1 - y0, x1 - x0) binned pixels

    def take(self, binned: np.ndarray) -> np.ndarray:
        return binned[..., self.y0 : self.y1, self.x0 : self.x1][..., self.mask]


def footprint(geom: BenchGeometry, cam: np.ndarray, frame_shape: tuple[int, int]) -> Footprint:
    """Binned frame pixels fully inside the detector plane's image; CalibrationError if it misses the frame."""
    ones = np.ones(geom.shape, dtype=np.float32)
    warped = cv2.warpAffine(ones, cam, (frame_shape[1], frame_shape[0]), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    inside = bin_frame(warped) >= BIN * BIN * 0.999
    ys, xs = np.nonzero(inside)
    full = (geom.shape[0] * geom.shape[1]) * abs(np.linalg.det(cam[:, :2])) / (BIN * BIN)
    if len(ys) < 0.5 * full:
        raise CalibrationError(
            f"only {len(ys) / max(full, 1):.0%} of the detector plane falls on the camera frame; "
            "check the camera ROI and the registration")
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return Footprint(int(y0), int(y1), int(x0), int(x1), inside[y0:y1, x0:x1])


def _warp(img: np.ndarray, cam: np.ndarray, frame_shape: tuple[int, int], fp: Footprint) -> np.ndarray:
    # The same bilinear sampling a camera pixel centre makes of the detector plane.
    w = cv2.warpAffine(img.astype(np.float32), cam, (frame_shape[1], frame_shape[0]), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return fp.take(bin_frame(w)).astype(np.float64)


@dataclass
class Sufficient:
    """Everything the fit needs from the frames, in product-image coordinates.

    ``gram`` (K, K) = B Bᵀ, ``bsum`` (K,) = B·1, ``h`` (n, K) = frames · Bᵀ, ``ysum`` and
    ``yy`` (n,) the frames' sums and squared norms, ``pixels`` P.
    """

    gram: np.ndarray
    bsum: np.ndarray
    h: np.ndarray
    ysum: np.ndarray
    yy: np.ndarray
    pixels: int


class SplitModel:
    """The split-screen model of one SLM on one bench, mapped onto the camera frame."""

    def __init__(self, geom: BenchGeometry, slm: str, cam: np.ndarray, frame_shape: tuple[int, int], fp: Footprint):
        fields, self.positions = column_fields(geom, slm)
        m = len(fields)
        self.pairs = [(i, j) for i in range(m) for j in range(i + 1, m)]
        images = [np.abs(f) ** 2 for f in fields]
        for i, j in self.pairs:
            prod = fields[i] * np.conj(fields[j])
            images += [2 * prod.real, -2 * prod.imag]
        self.images = np.stack([_warp(img, cam, frame_shape, fp) for img in images])
        self.n_fields = m

    def sufficient(self, y: np.ndarray) -> Sufficient:
        """Reduce frames ``y`` (n, P) to the statistics the fit needs (done once)."""
        b = self.images
        y = np.asarray(y, dtype=np.float64)
        return Sufficient(_mm(b, b.T), b.sum(axis=1), _mm(y, b.T), y.sum(axis=1), np.einsum("ij,ij->i", y, y),
                          y.shape[1])

    def transmissions(self, rho: np.ndarray, delta: np.ndarray, sigma: float, shift: float,
                      turns: np.ndarray | None = None) -> np.ndarray:
        """u (n, M): complex weight of each field for amplitude ratios ``rho`` and phase steps ``delta``.

        Across the split line the phase goes continuously from 0 to ``delta + 2π·turns``:
        the liquid crystal passes through the intermediate states of its own response,
        which may wind more than half a turn.
        """
        z = (self.positions - shift) / (np.sqrt(2.0) * max(sigma, 1e-3))
        w = 0.5 * (1.0 + np.array([math.erf(v) for v in z]))  # 0 left of the line, 1 right of it
        rho = np.asarray(rho, dtype=np.float64)[:, None]
        delta = np.asarray(delta, dtype=np.float64)[:, None]
        path = delta if turns is None else delta + 2 * np.pi * np.asarray(turns, dtype=np.float64)[:, None]
        cols = (1.0 + (rho - 1.0) * w) * np.exp(1j * path * w)
        return np.concatenate([np.ones_like(cols[:, :1]), rho * np.exp(1j * delta), cols], axis=1)

    def weights(self, u: np.ndarray) -> np.ndarray:
        """Product-image weights (n, K) of field weights ``u`` (n, M)."""
        out = [np.abs(u) ** 2]
        i = np.array([p[0] for p in self.pairs])
        j = np.array([p[1] for p in self.pairs])
        prod = u[:, i] * np.conj(u[:, j])
        inter = np.empty((u.shape[0], 2 * len(self.pairs)))
        inter[:, 0::2] = prod.real
        inter[:, 1::2] = prod.imag
        out.append(inter)
        return np.concatenate(out, axis=1)


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Matrix product through torch, whose thread count the caller controls (``torch.set_num_threads``);
    numpy's BLAS would spawn a thread per core, which on a loaded machine is several times slower."""
    return (torch.from_numpy(np.ascontiguousarray(a)) @ torch.from_numpy(np.ascontiguousarray(b))).numpy()


@dataclass
class LevelFit:
    """Per-level results: ``rho``, ``delta`` (wrapped, rad), their 1-sigma errors, scale, residuals."""

    rho: np.ndarray
    delta: np.ndarray
    rho_std: np.ndarray
    delta_std: np.ndarray
    scale: np.ndarray
    cost: np.ndarray
    sigma_px: float
    shift_px: float

    @property
    def total_cost(self) -> float:
        return float(self.cost.sum())


def _solve_levels(model: SplitModel, st: Sufficient, rho: np.ndarray, delta: np.ndarray, sigma: float,
                  shift: float, iterations: int = 12, turns: np.ndarray | None = None) -> LevelFit:
    """Gauss–Newton on (S, b, ρ, Δ) for every level at once, in product-image coordinates."""
    n = len(rho)
    rho, delta = rho.astype(np.float64).copy(), delta.astype(np.float64).copy()
    g, bs, p = st.gram, st.bsum, float(st.pixels)
    eps = 1e-4

    def parts(r: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w = model.weights(model.transmissions(r, d, sigma, shift, turns))
        dw_r = (model.weights(model.transmissions(r + eps, d, sigma, shift, turns)) - w) / eps
        dw_d = (model.weights(model.transmissions(r, d + eps, sigma, shift, turns)) - w) / eps
        return w, dw_r, dw_d

    def linear(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Best scale and stray light for fixed shape, and the resulting cost."""
        aa = (_mm(w, g) * w).sum(axis=1)
        a1 = w @ bs
        ay = (w * st.h).sum(axis=1)
        det = aa * p - a1 * a1
        det = np.where(np.abs(det) < 1e-300, 1e-300, det)
        s = (ay * p - a1 * st.ysum) / det
        b = (aa * st.ysum - a1 * ay) / det
        cost = st.yy - 2 * s * ay - 2 * b * st.ysum + s * s * aa + 2 * s * b * a1 + b * b * p
        return s, b, np.maximum(cost, 0.0)

    s, b, cost = linear(model.weights(model.transmissions(rho, delta, sigma, shift, turns)))
    lam = np.full(n, 1e-3)
    jtj = np.zeros((n, 4, 4))
    for _ in range(iterations):
        w, dw_r, dw_d = parts(rho, delta)
        # Columns of J in product-image coordinates: d/dS, d/dρ, d/dΔ, and the constant (d/db).
        d = np.stack([w, s[:, None] * dw_r, s[:, None] * dw_d], axis=1)  # (n, 3, K)
        gd = _mm(d, g)
        jtj[:, :3, :3] = _mm(gd, d.transpose(0, 2, 1))
        jtj[:, :3, 3] = jtj[:, 3, :3] = d @ bs
        jtj[:, 3, 3] = p
        resid_proj = st.h - s[:, None] * _mm(w, g) - b[:, None] * bs[None]
        jtr = np.empty((n, 4))
        jtr[:, :3] = _mm(d, resid_proj[:, :, None])[:, :, 0]
        jtr[:, 3] = st.ysum - s * (w @ bs) - b * p
        damp = jtj + lam[:, None, None] * np.diagonal(jtj, axis1=1, axis2=2)[:, :, None] * np.eye(4)[None]
        step = np.linalg.solve(damp, jtr[..., None])[..., 0]
        r_new = np.clip(rho + step[:, 1], 0.0, None)
        d_new = delta + step[:, 2]
        s_new, b_new, c_new = linear(model.weights(model.transmissions(r_new, d_new, sigma, shift, turns)))
        better = c_new <= cost
        rho = np.where(better, r_new, rho)
        delta = np.where(better, d_new, delta)
        s, b, cost = np.where(better, s_new, s), np.where(better, b_new, b), np.where(better, c_new, cost)
        lam = np.where(better, lam * 0.3, lam * 10.0)
    sigma2 = cost / max(st.pixels - 4, 1)
    try:
        cov = np.linalg.inv(jtj) * sigma2[:, None, None]
    except np.linalg.LinAlgError:
        cov = np.full((n, 4, 4), np.inf)
    rho_std = np.sqrt(np.maximum(cov[:, 1, 1], 0.0))
    delta_std = np.sqrt(np.maximum(cov[:, 2, 2], 0.0))
    delta = (delta + np.pi) % (2 * np.pi) - np.pi
    return LevelFit(rho, delta, rho_std, delta_std, s, cost, sigma, shift)


def _golden(f, lo: float, hi: float, tol: float) -> float:
    g = (math.sqrt(5) - 1) / 2
    c, d = hi - g * (hi - lo), lo + g * (hi - lo)
    fc, fd = f(c), f(d)
    while hi - lo > tol:
        if fc < fd:
            hi, d, fd = d, c, fc
            c = hi - g * (hi - lo)
            fc = f(c)
        else:
            lo, c, fc = c, d, fd
            d = lo + g * (hi - lo)
            fd = f(d)
    return c if fc < fd else d


def fit_split_screen(model: SplitModel, y: np.ndarray, unwrap: Callable[[np.ndarray, np.ndarray], np.ndarray],
                     reference: int, passes: int = 3) -> LevelFit:
    """Fit every level of frames ``y`` (n, P), with the nuisances σ (transition width) and δ (line offset).

    ``unwrap(delta, delta_std)`` unwraps the phase steps along the gray axis; it
    tells how many turns each level's transition winds relative to ``reference``,
    and the fit is repeated with those windings until they stop changing.
    """
    st = model.sufficient(y)
    n = y.shape[0]
    # Start: a coarse grid over Δ with ρ = 1; keep each level's best.
    best: LevelFit | None = None
    for d0 in np.linspace(-np.pi, np.pi, 8, endpoint=False):
        trial = _solve_levels(model, st, np.ones(n), np.full(n, d0), 0.5, 0.0, iterations=6)
        if best is None:
            best = trial
        else:
            take = trial.cost < best.cost
            for name in ("rho", "delta", "rho_std", "delta_std", "scale", "cost"):
                getattr(best, name)[take] = getattr(trial, name)[take]
    assert best is not None
    fit = best
    turns = np.zeros(n, dtype=np.int64)
    sigma, shift = 0.5, 0.0
    for _ in range(passes):
        start = fit

        def run(sg: float, sh: float, start: LevelFit = start) -> LevelFit:
            return _solve_levels(model, st, start.rho, start.delta, sg, sh, iterations=6, turns=turns)

        shift = _golden(lambda v: run(sigma, v).total_cost, -1.5, 1.5, 0.02)
        sigma = _golden(lambda v: run(v, shift).total_cost, 0.05, 1.5, 0.02)
        fit = _solve_levels(model, st, start.rho, start.delta, sigma, shift, iterations=15, turns=turns)
        unwrapped = unwrap(fit.delta, fit.delta_std)
        unwrapped = unwrapped - unwrapped[reference]
        new_turns = np.rint((unwrapped - fit.delta) / (2 * np.pi)).astype(np.int64)
        if np.array_equal(new_turns, turns):
            break
        turns = new_turns
    return fit
