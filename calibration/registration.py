"""Camera registration: where the detector plane's neurons land on the camera sensor.

Each layer SLM in turn shows a grid of binary Fresnel zone-plate lenslets whose
focal length is its distance to the detector plane, so each lenslet focuses a spot
on the detector plane right below its centre. The spots are found in the camera
frame (lenslet frame minus a flat frame), centroided, and an affine transform
neuron coordinates → camera pixels is fitted to all layers' spots together with
OpenCV (robust estimate, then least squares on the inliers). Pooling the layers
makes the result the bench's common frame rather than one SLM's misalignment.

A binary zone plate focuses at the same place whatever phase step its two gray
levels make (only its efficiency changes), so registration needs no SLM calibration.
The spots sit below each SLM's own pixels, so they carry that SLM's lateral
misalignment (~0.1 neuron); the estimate is then refined by aligning the modelled
flat-field image (every SLM uniform: the beam aperture's diffraction, independent
of any SLM response) to the measured one with ``cv2.findTransformECC``.
Coordinates are those of :mod:`calibration.geometry`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from calibration.acquire import Acquisition
from calibration.errors import CalibrationError
from calibration.geometry import BenchGeometry
from sims.io import write_json_atomic

SCHEMA = "labctl.registration/1"
# Gray pairs tried for the zone plates, in order, until the spots stand out.
GRAY_PAIRS = ((0, 128), (0, 64), (0, 192), (64, 192))
MIN_SPOT_CONTRAST = 8.0  # spot peak over the difference image's noise (robust sigma)


@dataclass(frozen=True)
class Registration:
    """Affine map neuron coordinates (x, y) → camera sensor pixels (x, y).

    ``matrix`` is 2×3; ``neurons`` (rows, cols) of the detector plane;
    ``sensor_shape`` (rows, cols) of the full camera sensor. ``rms_px``/``max_px`` are
    the fit residuals over ``points`` spots.
    """

    matrix: np.ndarray
    neurons: tuple[int, int]
    sensor_shape: tuple[int, int]
    rms_px: float = 0.0
    max_px: float = 0.0
    points: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def to_camera(self, xy: np.ndarray) -> np.ndarray:
        """Neuron coordinates (..., 2) → camera pixel coordinates (..., 2)."""
        xy = np.asarray(xy, dtype=np.float64)
        return xy @ self.matrix[:, :2].T + self.matrix[:, 2]

    def to_neuron(self, xy: np.ndarray) -> np.ndarray:
        """Camera pixel coordinates (..., 2) → neuron coordinates (..., 2)."""
        inv = cv2.invertAffineTransform(self.matrix)
        xy = np.asarray(xy, dtype=np.float64)
        return xy @ inv[:, :2].T + inv[:, 2]

    @property
    def pixels_per_neuron(self) -> float:
        """Mean camera pixels per neuron side (the transform's scale)."""
        return float(math.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))

    def region_mask(self, region: Sequence[int], roi: Sequence[int] | None = None, supersample: int = 4) -> np.ndarray:
        """Fraction (0..1, float32) of each camera pixel that lies in a detector region.

        ``region`` is ``[row, col, h, w]`` in neurons; ``roi`` the camera ROI
        ``(x, y, w, h)`` the frames cover (default: the full sensor). Each pixel is
        sampled on a ``supersample``² sub-grid, so a region edge through a pixel counts
        that pixel partly.
        """
        row, col, h, w = (float(v) for v in region)
        if h <= 0 or w <= 0:
            raise CalibrationError(f"detector region {list(region)}: height and width must be > 0 neurons")
        rx, ry, rw, rh = roi if roi is not None else (0, 0, self.sensor_shape[1], self.sensor_shape[0])
        corners = self.to_camera(np.array([[col, row], [col + w, row], [col, row + h], [col + w, row + h]]))
        x0 = max(int(math.floor(corners[:, 0].min())) - 1, rx)
        x1 = min(int(math.ceil(corners[:, 0].max())) + 2, rx + rw)
        y0 = max(int(math.floor(corners[:, 1].min())) - 1, ry)
        y1 = min(int(math.ceil(corners[:, 1].max())) + 2, ry + rh)
        mask = np.zeros((int(rh), int(rw)), dtype=np.float32)
        if x1 <= x0 or y1 <= y0:
            return mask
        sub = (np.arange(supersample) + 0.5) / supersample - 0.5
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
        xs = xs[..., None, None] + sub[None, None, None, :]
        ys = ys[..., None, None] + sub[None, None, :, None]
        xy = np.stack(np.broadcast_arrays(xs, ys), axis=-1)
        n = self.to_neuron(xy)
        inside = (n[..., 0] >= col) & (n[..., 0] < col + w) & (n[..., 1] >= row) & (n[..., 1] < row + h)
        mask[y0 - ry : y1 - ry, x0 - rx : x1 - rx] = inside.mean(axis=(-1, -2))
        return mask

    def region_scores(self, frame: np.ndarray, regions: Sequence[Sequence[int]],
                      roi: Sequence[int] | None = None) -> np.ndarray:
        """Summed camera signal (DN, float64) in each detector region of ``frame`` (dark-subtracted)."""
        frame = np.asarray(frame, dtype=np.float64)
        rx, ry, rw, rh = roi if roi is not None else (0, 0, self.sensor_shape[1], self.sensor_shape[0])
        if frame.shape != (rh, rw):
            raise CalibrationError(f"frame is {frame.shape[1]}x{frame.shape[0]} pixels but the ROI is {rw}x{rh}")
        return np.array([float((self.region_mask(r, (rx, ry, rw, rh)) * frame).sum()) for r in regions])

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "matrix": [[float(v) for v in row] for row in self.matrix],
            "coordinates": "neuron (x=col, y=row; neuron [r, c] spans [c, c+1) x [r, r+1)) -> "
            "camera sensor pixel (x, y), pixel centres at integers",
            "neurons": list(self.neurons),
            "sensor_shape": list(self.sensor_shape),
            "rms_px": self.rms_px,
            "max_px": self.max_px,
            "points": self.points,
            **self.meta,
        }

    @staticmethod
    def from_dict(data: Any, source: str = "<memory>") -> "Registration":
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise CalibrationError(f"{source}: not a camera registration (expected schema {SCHEMA!r})")
        try:
            m = np.asarray(data["matrix"], dtype=np.float64)
            neurons = tuple(int(v) for v in data["neurons"])
            sensor = tuple(int(v) for v in data["sensor_shape"])
        except (KeyError, TypeError, ValueError):
            raise CalibrationError(f"{source}: registration needs matrix [2][3], neurons [2], sensor_shape [2]") from None
        if m.shape != (2, 3) or not np.isfinite(m).all() or abs(np.linalg.det(m[:, :2])) < 1e-9:
            raise CalibrationError(f"{source}: registration matrix must be a finite, invertible 2x3 affine transform")
        meta = {k: v for k, v in data.items()
                if k not in {"schema", "matrix", "coordinates", "neurons", "sensor_shape", "rms_px", "max_px", "points"}}
        return Registration(m, neurons, sensor, float(data.get("rms_px", 0.0)), float(data.get("max_px", 0.0)),
                            int(data.get("points", 0)), meta)


def save_registration(path: str | Path, reg: Registration) -> Path:
    return write_json_atomic(path, reg.to_dict())


def load_registration(path: str | Path) -> Registration:
    import json

    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise CalibrationError(f"{p}: camera registration not found (run `labctl calibrate --registration`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CalibrationError(f"{p}: not a readable registration file ({e})") from None
    return Registration.from_dict(data, str(p))


# -- patterns -------------------------------------------------------------------

def lenslet_centres(geom: BenchGeometry, grid: int) -> np.ndarray:
    """Lenslet centres in SLM pixel coordinates (u, v), row-major, ``grid``² of them."""
    rows, cols = geom.shape
    pitch = min(rows, cols) // (grid + 1)
    offs = (np.arange(grid) - (grid - 1) / 2) * pitch
    us = (cols / 2 - 0.5) + offs
    vs = (rows / 2 - 0.5) + offs
    return np.array([(u, v) for v in vs for u in us])


def lenslet_map(geom: BenchGeometry, focal_m: float, grays: tuple[int, int], grid: int = 4) -> np.ndarray:
    """Binary zone-plate lenslets (focal length ``focal_m``) on a background of ``grays[0]`` (uint8 ROI map)."""
    rows, cols = geom.shape
    pitch = min(rows, cols) // (grid + 1)
    half = pitch / 2
    v, u = np.mgrid[0:rows, 0:cols].astype(np.float64)
    out = np.full((rows, cols), grays[0], dtype=np.uint8)
    for uc, vc in lenslet_centres(geom, grid):
        du, dv = u - uc, v - vc
        inside = (np.abs(du) < half) & (np.abs(dv) < half)
        r2 = (du * du + dv * dv) * geom.pitch_m**2
        zone = np.floor(r2 / (geom.wavelength_m * focal_m)).astype(np.int64) % 2 == 1
        out[inside & zone] = grays[1]
    return out


# -- spot finding -----------------------------------------------------------------

def _robust_sigma(a: np.ndarray) -> float:
    med = np.median(a)
    return float(1.4826 * np.median(np.abs(a - med))) or 1e-6


def find_spots(diff: np.ndarray, count: int, grid: int) -> np.ndarray:
    """Rough centres (x, y) in frame pixels of the ``count`` brightest spots, row-major."""
    smooth = cv2.GaussianBlur(diff.astype(np.float32), (0, 0), 1.5)
    noise = _robust_sigma(smooth)
    peak = float(smooth.max())
    if peak < MIN_SPOT_CONTRAST * noise:
        raise CalibrationError(f"no focused spots in the registration frame (peak {peak:.1f} DN, noise {noise:.1f} DN)")
    binary = (smooth > 0.3 * peak).astype(np.uint8)
    n, labels, stats, cents = cv2.connectedComponentsWithStats(binary, connectivity=8)
    sums = np.array([smooth[labels == i].sum() for i in range(1, n)])
    if len(sums) < count:
        raise CalibrationError(f"found {len(sums)} focused spots in the registration frame, expected {count}; "
                               "is the whole detector plane on the camera?")
    keep = np.argsort(sums)[::-1][:count] + 1
    pts = cents[keep]
    # Row-major order: split by y into grid rows, then sort each by x.
    pts = pts[np.argsort(pts[:, 1])]
    rows = [r[np.argsort(r[:, 0])] for r in np.split(pts, grid)]
    return np.concatenate(rows)


def refine_spots(diff: np.ndarray, approx: np.ndarray, radius_px: float, iterations: int = 4) -> np.ndarray:
    """Centroids of ``diff`` in circular windows of ``radius_px`` (the spot's first dark ring), re-centred.

    The window stops at the first zero of the focal spot, where the lenslet's own
    light ends and its neighbours' scattered light begins.
    """
    h, w = diff.shape
    r = max(float(radius_px), 2.0)
    outer = 1.6 * r
    out = []
    for cx, cy in approx:
        for _ in range(iterations):
            x0, x1 = max(int(cx - outer) - 1, 0), min(int(cx + outer) + 2, w)
            y0, y1 = max(int(cy - outer) - 1, 0), min(int(cy + outer) + 2, h)
            ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
            win = diff[y0:y1, x0:x1].astype(np.float64)
            rr = (xs - cx) ** 2 + (ys - cy) ** 2
            ring = (rr > r * r) & (rr <= outer * outer)
            # The spot sits on its neighbours' sloped scattered light: remove a plane fitted just outside it.
            a = np.stack([np.ones(int(ring.sum())), xs[ring] - cx, ys[ring] - cy], axis=1)
            coef, *_ = np.linalg.lstsq(a, win[ring], rcond=None)
            plane = coef[0] + coef[1] * (xs - cx) + coef[2] * (ys - cy)
            win = np.clip((win - plane) * (rr <= r * r), 0.0, None)
            total = win.sum()
            if total <= 0:
                raise CalibrationError("a registration spot vanished during centroiding (is the light stable?)")
            cx, cy = (xs * win).sum() / total, (ys * win).sum() / total
        out.append((cx, cy))
    return np.array(out)


def fit_affine(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Affine src → dst: robust (LMedS) inlier choice, then least squares on the inliers. Returns (2×3, inlier mask)."""
    m, inliers = cv2.estimateAffine2D(src.astype(np.float64), dst.astype(np.float64), method=cv2.LMEDS)
    if m is None:
        raise CalibrationError("registration: spot positions do not fit an affine transform")
    keep = inliers.ravel().astype(bool)
    # Accept every point within 1.5 px: LMedS may discard good ones.
    pred = src @ m[:, :2].T + m[:, 2]
    keep |= np.linalg.norm(pred - dst, axis=1) < 1.5
    if keep.sum() < 3:
        raise CalibrationError("registration: fewer than 3 consistent spots")
    a = np.hstack([src[keep], np.ones((int(keep.sum()), 1))])
    sol, *_ = np.linalg.lstsq(a, dst[keep], rcond=None)
    return sol.T, keep


def register_camera(acq: Acquisition, geom: BenchGeometry, layers: Sequence[str], grid: int = 4,
                    n_average: int = 2, refine: bool = True) -> Registration:
    """Measure the detector-plane → camera transform: lenslet spots of ``layers`` give a first
    estimate (no prior knowledge of the magnification needed), the flat-field image refines it
    (``refine``)."""
    if not layers:
        raise CalibrationError("registration needs at least one layer SLM")
    to_neuron = geom.pixel_to_neuron()
    centres_px = lenslet_centres(geom, grid)
    centres_n = centres_px @ to_neuron[:2, :2].T + to_neuron[:2, 2]
    src, dst = [], []
    roi = acq.camera.roi
    acq.light(True)
    for name in layers:
        focal = geom.distance_to_detector_m(name)
        last_error: CalibrationError | None = None
        for grays in GRAY_PAIRS:
            lens = lenslet_map(geom, focal, grays, grid)
            acq.show({name: lens})
            acq.auto_expose(f"registration ({name})")
            spots_frame = acq.grab_unsaturated(n_average, f"registration ({name})")
            acq.show({name: np.full(geom.shape, grays[0], dtype=np.uint8)})
            flat_frame, _ = acq.grab(n_average)
            diff = spots_frame - flat_frame
            try:
                rough = find_spots(diff, grid * grid, grid)
            except CalibrationError as e:
                last_error = e
                continue
            # Camera pixels per metre on the detector plane, from the rough spot grid.
            spacing_m = (centres_px[1, 0] - centres_px[0, 0]) * geom.pitch_m
            px_per_m = float(np.median(np.linalg.norm(np.diff(rough.reshape(grid, grid, 2), axis=1), axis=-1))) / spacing_m
            aperture_m = spacing_m
            first_zero_px = geom.wavelength_m * focal / aperture_m * px_per_m
            spots = refine_spots(diff, rough, first_zero_px)
            src.append(centres_n)
            dst.append(spots + np.array([roi[0], roi[1]]))
            break
        else:
            assert last_error is not None
            raise CalibrationError(f"registration with SLM {name!r}: {last_error}")
    acq.show({})
    src_a, dst_a = np.concatenate(src), np.concatenate(dst)
    m, keep = fit_affine(src_a, dst_a)
    res = np.linalg.norm(src_a @ m[:, :2].T + m[:, 2] - dst_a, axis=1)
    reg = Registration(
        matrix=m, neurons=geom.neurons, sensor_shape=tuple(acq.camera.sensor_shape),
        rms_px=float(np.sqrt(np.mean(res[keep] ** 2))), max_px=float(res[keep].max()), points=int(keep.sum()),
        meta={"created": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
              "method": f"zone-plate lenslets ({grid}x{grid}) on layers {', '.join(layers)}",
              "frames": acq.frames},
    )
    if reg.rms_px > 2.0:
        raise CalibrationError(f"registration residual {reg.rms_px:.2f} px is too large; spots were misidentified")
    return refine_with_flat_field(acq, geom, reg) if refine else reg


def flat_field_model(geom: BenchGeometry) -> np.ndarray:
    """Detector-plane intensity (float32, ROI shape, SLM pixels) with every SLM showing a uniform map.

    Uniform maps only scale the beam, so this image depends on the geometry alone:
    the ROI-sized beam and its edge diffraction over every gap.
    """
    import torch

    from sims.errors import SimulationError
    from sims.optics import propagate

    field = torch.ones(geom.shape, dtype=torch.complex64)
    try:
        for z in geom.distances_m:
            field = propagate(field, z, geom.pitch_m, geom.wavelength_m, method=geom.method,
                              pad_factor=geom.pad_factor)
    except SimulationError as e:
        raise CalibrationError(f"cannot model the bench's propagation: {e}") from None
    return (field.abs() ** 2).numpy().astype(np.float32)


def refine_with_flat_field(acq: Acquisition, geom: BenchGeometry, reg: Registration, n_average: int = 4) -> Registration:
    """Refine ``reg`` by aligning the modelled flat-field image to the measured one (``cv2.findTransformECC``).

    Lenslet spots sit below each SLM's own (slightly misaligned) pixels; the flat
    field's edges come from the beam's aperture, the frame the twin's grid is
    defined in. ECC is blind to brightness and contrast, so neither the laser power
    nor the SLMs' transmission need to be known.
    """
    acq.light(True)
    acq.show({})
    acq.auto_expose("registration (flat field)")
    frame, _ = acq.grab(n_average)
    template = flat_field_model(geom)
    roi = acq.camera.roi
    m = np.vstack([reg.matrix, [0.0, 0.0, 1.0]]) @ geom.pixel_to_neuron()
    warp = (m[:2] - np.array([[0, 0, roi[0]], [0, 0, roi[1]]])).astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 200, 1e-6)
    try:
        _, warp = cv2.findTransformECC(template, frame.astype(np.float32), warp, cv2.MOTION_AFFINE, criteria, None, 1)
    except cv2.error as e:
        raise CalibrationError(f"registration refinement did not converge on the flat-field image ({e.err})") from None
    w = np.vstack([warp.astype(np.float64), [0.0, 0.0, 1.0]])
    w[0, 2] += roi[0]
    w[1, 2] += roi[1]
    matrix = (w @ np.linalg.inv(geom.pixel_to_neuron()))[:2]
    shift = np.abs(Registration(matrix, reg.neurons, reg.sensor_shape).to_camera(
        np.array([[geom.neurons[1] / 2, geom.neurons[0] / 2]])) - reg.to_camera(
        np.array([[geom.neurons[1] / 2, geom.neurons[0] / 2]]))).max()
    if shift > 5.0:
        raise CalibrationError(f"flat-field refinement moved the registration by {shift:.1f} px; the lenslet "
                               "registration or the bench distances are wrong")
    meta = dict(reg.meta)
    meta["method"] = f"{meta.get('method', 'lenslets')}, refined by ECC on the flat-field diffraction image"
    meta["frames"] = acq.frames
    meta["refinement_px"] = float(shift)
    return Registration(matrix, reg.neurons, reg.sensor_shape, reg.rms_px, reg.max_px, reg.points, meta)
