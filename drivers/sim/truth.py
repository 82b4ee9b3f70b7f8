"""Hidden non-idealities of simulated devices, built from a bench file's ``truth`` tables.

Only ``drivers.sim`` reads these. The keys mirror ``labctl.config.*_TRUTH_KEYS``;
values there are already type-checked, so here only physics consistency is checked.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drivers.errors import DeviceError


def load_response(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(phase_rad[256], amplitude[256]) of an SLM response file (JSON: gray, phase_rad, amplitude)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise DeviceError(f"{p}: SLM response file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DeviceError(f"{p}: not a readable JSON response file ({e})") from None
    if not isinstance(data, dict) or not {"gray", "phase_rad", "amplitude"} <= set(data):
        raise DeviceError(f"{p}: expected a JSON object with gray, phase_rad and amplitude arrays")
    try:
        gray = np.asarray(data["gray"], dtype=np.int64)
        phase = np.asarray(data["phase_rad"], dtype=np.float64)
        amp = np.asarray(data["amplitude"], dtype=np.float64)
    except (TypeError, ValueError):
        raise DeviceError(f"{p}: gray, phase_rad and amplitude must be arrays of numbers") from None
    if gray.shape != (256,) or not np.array_equal(gray, np.arange(256)):
        raise DeviceError(f"{p}: gray must be the 256 levels 0..255 in order")
    if phase.shape != (256,) or amp.shape != (256,):
        raise DeviceError(f"{p}: phase_rad and amplitude must have 256 entries each")
    if not (np.isfinite(phase).all() and np.isfinite(amp).all()) or amp.min() < 0 or amp.max() > 1:
        raise DeviceError(f"{p}: phase_rad must be finite and amplitude within 0..1")
    return phase, amp


@dataclass(frozen=True)
class SlmTruth:
    """Per-gray transmission and misalignment of one simulated SLM plane.

    ``shift_px`` is (rows, cols) in neurons, ``rotation_deg`` about the ROI centre,
    ``fringing_px`` the Gaussian sigma (SLM pixels) of inter-pixel crosstalk.
    """

    phase_rad: np.ndarray
    amplitude: np.ndarray
    shift_px: tuple[float, float] = (0.0, 0.0)
    rotation_deg: float = 0.0
    fringing_px: float = 0.0
    dead: bool = False

    @staticmethod
    def ideal(role: str) -> "SlmTruth":
        """A perfect device: linear phase 0..2π·255/256 (layer) or amplitude gray/255 (input)."""
        g = np.arange(256, dtype=np.float64)
        if role == "input":
            return SlmTruth(np.zeros(256), g / 255.0)
        return SlmTruth(2 * math.pi * g / 256.0, np.ones(256))

    @staticmethod
    def from_table(table: dict[str, Any], role: str, response_path: Path | None) -> "SlmTruth":
        base = SlmTruth.ideal(role)
        phase, amp = load_response(response_path) if response_path is not None else (base.phase_rad, base.amplitude)
        return SlmTruth(
            phase_rad=phase,
            amplitude=amp,
            shift_px=tuple(float(v) for v in table.get("shift_px", (0.0, 0.0))),  # type: ignore[arg-type]
            rotation_deg=float(table.get("rotation_deg", 0.0)),
            fringing_px=float(table.get("fringing_px", 0.0)),
            dead=bool(table.get("dead", False)),
        )


@dataclass(frozen=True)
class CameraTruth:
    """How the detector plane lands on the sensor, and the sensor's noise.

    ``magnification`` is optical (detector plane → sensor); ``offset_px`` (x, y) of
    the detector centre from the frame centre in camera pixels; ``photons_per_s``
    photo-electrons per second collected from one detector-plane SLM-pixel area
    at unit intensity (|E|² = 1, the unmodulated beam at the 1 mW reference power).
    """

    magnification: float = 0.33
    offset_px: tuple[float, float] = (0.0, 0.0)
    rotation_deg: float = 0.0
    dark_dn: float = 0.0
    read_noise_e: float = 0.0
    full_well_e: float = 20000.0
    photons_per_s: float = 2.0e9

    @staticmethod
    def from_table(table: dict[str, Any]) -> "CameraTruth":
        d = CameraTruth()
        return CameraTruth(
            magnification=float(table.get("magnification", d.magnification)),
            offset_px=tuple(float(v) for v in table.get("offset_px", d.offset_px)),  # type: ignore[arg-type]
            rotation_deg=float(table.get("rotation_deg", d.rotation_deg)),
            dark_dn=float(table.get("dark_dn", d.dark_dn)),
            read_noise_e=float(table.get("read_noise_e", d.read_noise_e)),
            full_well_e=float(table.get("full_well_e", d.full_well_e)),
            photons_per_s=float(table.get("photons_per_s", d.photons_per_s)),
        )


@dataclass(frozen=True)
class LaserTruth:
    """Emitted power at the nominal set point (watts) and its frame-to-frame fluctuation."""

    power_w: float = 1e-3
    relative_noise: float = 0.0

    @staticmethod
    def from_table(table: dict[str, Any]) -> "LaserTruth":
        return LaserTruth(float(table.get("power_w", 1e-3)), float(table.get("relative_noise", 0.0)))


@dataclass(frozen=True)
class ShutterTruth:
    """``stuck``: the blade never opens, although the shutter reports what it was told."""

    stuck: bool = False

    @staticmethod
    def from_table(table: dict[str, Any]) -> "ShutterTruth":
        return ShutterTruth(bool(table.get("stuck", False)))
