"""One optical world shared by the simulated laser, shutter, SLMs and camera.

laser → shutter → input SLM (amplitude modulator) → gap → layer SLM → … → gap →
detector plane → imaged onto the camera sensor. Fields are sampled at SLM-pixel
resolution over the SLM ROI; propagation is ``sims.optics.propagate`` (one physics
implementation for the twin and the simulated bench). Every hidden non-ideality
lives here, in private attributes; the devices only see what a real driver would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from drivers.errors import DeviceError
from drivers.sim.truth import CameraTruth, LaserTruth, ShutterTruth, SlmTruth
from sims.errors import SimulationError
from sims.optics import check_sampling, propagate

# |E|² = 1 per SLM pixel is the unmodulated beam at this laser power.
REFERENCE_POWER_W = 1e-3


@dataclass
class _Plane:
    name: str
    role: str
    truth: SlmTruth
    upsample: int
    gray: np.ndarray
    transmission: np.ndarray  # complex64 (rows, cols), what the beam sees


class SimWorld:
    """The simulated bench's physics.

    ``pitch_m`` is the SLM pixel pitch (metres) and ``shape`` the ROI (rows, cols)
    every plane shares; ``distances_m`` has one gap per layer plus the last one to
    the detector plane. ``seed`` fixes every noise draw.
    """

    def __init__(
        self,
        *,
        shape: tuple[int, int],
        pitch_m: float,
        wavelength_m: float,
        distances_m: tuple[float, ...],
        method: str = "asm",
        pad_factor: int = 2,
        seed: int = 0,
        has_shutter: bool = True,
    ):
        self._shape = (int(shape[0]), int(shape[1]))
        self._pitch_m = float(pitch_m)
        self._wavelength_m = float(wavelength_m)
        self._distances_m = tuple(float(d) for d in distances_m)
        self._method = method
        self._pad_factor = int(pad_factor)
        self._rng = np.random.default_rng(seed)
        # Per-pixel noise comes from torch's generator: faster than numpy's for a full frame.
        self._noise = torch.Generator().manual_seed(int(seed))
        self._input: _Plane | None = None
        self._layers: list[_Plane] = []
        self._camera: CameraTruth = CameraTruth()
        self._laser = LaserTruth()
        self._shutter = ShutterTruth()
        self._laser_on = False
        self._laser_setpoint_w = REFERENCE_POWER_W
        # Without a shutter in the bench the beam is never blocked by one.
        self._shutter_open = not has_shutter
        self._version = 0
        self._cache: tuple[int, np.ndarray] | None = None

    # -- building ------------------------------------------------------------

    def add_slm(self, name: str, role: str, shape: tuple[int, int], pitch_m: float, upsample: int,
                truth: SlmTruth) -> None:
        """Place an SLM plane: the input, or the next layer in beam order."""
        if tuple(shape) != self._shape or not math.isclose(pitch_m, self._pitch_m, rel_tol=1e-9):
            raise DeviceError(
                f"simulated SLM {name!r}: ROI {tuple(shape)} at {pitch_m:g} m differs from the simulated grid "
                f"{self._shape} at {self._pitch_m:g} m; the simulated bench needs identical SLM planes"
            )
        gray = np.zeros(self._shape, dtype=np.uint8)
        plane = _Plane(name, role, truth, int(upsample), gray, np.empty(0, np.complex64))
        plane.transmission = self._transmission(plane, gray)
        if role == "input":
            if self._input is not None:
                raise DeviceError(f"simulated SLM {name!r}: the bench already has an input SLM ({self._input.name!r})")
            self._input = plane
        else:
            self._layers.append(plane)
        self._version += 1

    def set_camera_truth(self, truth: CameraTruth) -> None:
        self._camera = truth

    def set_laser_truth(self, truth: LaserTruth) -> None:
        self._laser = truth

    def set_shutter_truth(self, truth: ShutterTruth) -> None:
        self._shutter = truth

    def check(self) -> None:
        """Refuse a bench whose planes do not match its distances."""
        if self._input is None:
            raise DeviceError("simulated bench has no input SLM")
        if len(self._distances_m) != len(self._layers) + 1:
            raise DeviceError(
                f"simulated bench: {len(self._layers)} layer SLMs need {len(self._layers) + 1} distances, "
                f"got {len(self._distances_m)}"
            )
        for z in self._distances_m:
            try:
                check_sampling(self._shape, z, self._pitch_m, self._wavelength_m, self._method, self._pad_factor)
            except SimulationError as e:
                raise DeviceError(f"simulated bench cannot propagate: {e}") from None

    # -- state the devices change ---------------------------------------------

    def _set_map(self, name: str, gray: np.ndarray) -> None:
        plane = self._plane(name)
        plane.gray = gray
        plane.transmission = self._transmission(plane, gray)
        self._version += 1

    def _plane(self, name: str) -> _Plane:
        for p in ([self._input] if self._input else []) + self._layers:
            if p.name == name:
                return p
        raise DeviceError(f"simulated bench has no SLM named {name!r}")

    def _set_laser(self, on: bool) -> None:
        self._laser_on = on

    def _set_laser_power(self, watts: float) -> None:
        self._laser_setpoint_w = watts

    def _set_shutter(self, is_open: bool) -> None:
        self._shutter_open = is_open

    # -- physics ------------------------------------------------------------------

    def _transmission(self, plane: _Plane, gray: np.ndarray) -> np.ndarray:
        """Complex transmission the beam sees for a shown map (complex64, ROI shape)."""
        t = plane.truth
        if t.dead:
            gray = np.zeros_like(gray)
        phase = t.phase_rad.astype(np.float32)[gray]
        amp = t.amplitude.astype(np.float32)[gray]
        if t.fringing_px > 0:
            # Fringing fields smear the liquid-crystal response across pixel borders.
            phase = cv2.GaussianBlur(phase, (0, 0), t.fringing_px, borderType=cv2.BORDER_REPLICATE)
            amp = cv2.GaussianBlur(amp, (0, 0), t.fringing_px, borderType=cv2.BORDER_REPLICATE)
        dy, dx = (v * plane.upsample for v in t.shift_px)
        if dx or dy or t.rotation_deg:
            rows, cols = self._shape
            m = cv2.getRotationMatrix2D(((cols - 1) / 2, (rows - 1) / 2), t.rotation_deg, 1.0)
            m[0, 2] += dx
            m[1, 2] += dy
            warp = dict(flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            phase = cv2.warpAffine(phase, m, (cols, rows), **warp)
            amp = cv2.warpAffine(amp, m, (cols, rows), **warp)
        t = np.empty(self._shape, dtype=np.complex64)
        t.real = amp * np.cos(phase)
        t.imag = amp * np.sin(phase)
        return t

    def _light_on(self) -> bool:
        return self._laser_on and self._shutter_open and not self._shutter.stuck

    def _detector_intensity(self) -> np.ndarray:
        """|E|² on the detector plane for unit reference power (float32, ROI shape); cached per state."""
        if self._cache is not None and self._cache[0] == self._version:
            return self._cache[1]
        assert self._input is not None
        field = torch.from_numpy(self._input.transmission.copy())
        try:
            for plane, z in zip(self._layers, self._distances_m):
                field = propagate(field, z, self._pitch_m, self._wavelength_m, method=self._method,
                                  pad_factor=self._pad_factor)
                field = field * torch.from_numpy(plane.transmission)
            field = propagate(field, self._distances_m[-1], self._pitch_m, self._wavelength_m, method=self._method,
                              pad_factor=self._pad_factor)
        except SimulationError as e:
            raise DeviceError(f"simulated bench cannot propagate: {e}") from None
        intensity = (field.real**2 + field.imag**2).numpy().astype(np.float32)
        self._cache = (self._version, intensity)
        return intensity

    def _sensor_map(self, sensor_shape: tuple[int, int], camera_pitch_m: float) -> tuple[np.ndarray, float]:
        """Affine map detector plane (SLM pixels) → sensor (camera pixels), and the pixel scale."""
        c = self._camera
        scale = c.magnification * self._pitch_m / camera_pitch_m
        rows, cols = self._shape
        srows, scols = sensor_shape
        theta = math.radians(c.rotation_deg)
        a, b = scale * math.cos(theta), scale * math.sin(theta)
        rot = np.array([[a, -b], [b, a]])
        src_c = np.array([(cols - 1) / 2, (rows - 1) / 2])
        dst_c = np.array([(scols - 1) / 2 + c.offset_px[0], (srows - 1) / 2 + c.offset_px[1]])
        m = np.hstack([rot, (dst_c - rot @ src_c)[:, None]])
        return m, scale

    def _render(self, sensor_shape: tuple[int, int], camera_pitch_m: float, bit_depth: int, exposure_s: float,
                gain_db: float) -> np.ndarray:
        """One raw camera frame (uint16 DN, sensor shape) of the current state, with fresh noise."""
        c = self._camera
        srows, scols = sensor_shape
        max_dn = (1 << bit_depth) - 1
        dn_per_e = np.float32(max_dn / c.full_well_e * 10.0 ** (gain_db / 20.0))
        noise = torch.randn(sensor_shape, generator=self._noise, dtype=torch.float32).numpy()
        if self._light_on():
            m, scale = self._sensor_map(sensor_shape, camera_pitch_m)
            electrons = cv2.warpAffine(self._detector_intensity(), m, (scols, srows), flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            fluct = 1.0 + self._laser.relative_noise * float(self._rng.standard_normal())
            power = self._laser.power_w * (self._laser_setpoint_w / REFERENCE_POWER_W) / REFERENCE_POWER_W
            # A camera pixel collects 1/scale² of one SLM-pixel area of the detector plane.
            electrons *= np.float32(c.photons_per_s * exposure_s * power * max(fluct, 0.0) / (scale * scale))
            # Shot noise (Gaussian limit of Poisson) and read noise in one draw, in place.
            sigma = electrons + np.float32(c.read_noise_e**2)
            np.sqrt(sigma, out=sigma)
            noise *= sigma
            noise += electrons
        else:
            noise *= np.float32(c.read_noise_e)
        dn = noise
        # The well saturates; below zero is read noise around the ADC offset, clipped only in DN.
        np.minimum(dn, np.float32(c.full_well_e), out=dn)
        dn *= dn_per_e
        dn += np.float32(c.dark_dn)
        np.rint(dn, out=dn)
        np.clip(dn, 0, max_dn, out=dn)
        return dn.astype(np.uint16)
