"""SLM device models: the measured response of all 256 gray levels and the K levels a
DONN layer may use.

A level is one complex transmission ``t_k = a_k·exp(i·φ_k)`` measured together for
one gray value; amplitude and phase are never chosen independently (a state the
device cannot take).

Level selection (:func:`select_levels`), documented in docs/twin.md: K phase targets
are spread evenly — over the full circle (step 2π/K) when the measured phase range
reaches (K−1)/K of 2π, otherwise from the lowest to the highest measured phase — and
each target takes the gray level whose transmission is closest to the ideal phasor
``exp(i·φ_target)``; that distance trades phase error against amplitude loss, so
bright levels win among those of nearly the right phase.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sims.errors import DataError

CALIBRATION_SCHEMA = "labctl.calibration/1"
GRAY_LEVELS = 256


@dataclass(frozen=True)
class DeviceResponse:
    """The response of every gray level of one SLM: phase (rad, unwrapped) and relative amplitude."""

    name: str
    phase_rad: tuple[float, ...]
    amplitude: tuple[float, ...]
    source: str = ""  # file the response was read from ("" when built in code)
    sha256: str = ""  # of that file

    def transmission(self) -> np.ndarray:
        """Complex transmission of all 256 gray levels, complex128 ``(256,)``."""
        return np.asarray(self.amplitude) * np.exp(1j * np.asarray(self.phase_rad))


@dataclass(frozen=True)
class DeviceLevels:
    """The K gray levels a layer may show, with the transmission measured for each."""

    gray: tuple[int, ...]
    phase_rad: tuple[float, ...]
    amplitude: tuple[float, ...]
    name: str = ""
    source: str = ""
    sha256: str = ""

    @property
    def k(self) -> int:
        return len(self.gray)

    def transmissions(self, dtype: torch.dtype = torch.complex64) -> torch.Tensor:
        """``t_k = a_k·exp(iφ_k)`` as a ``(K,)`` complex tensor."""
        a = torch.tensor(self.amplitude, dtype=torch.float64)
        p = torch.tensor(self.phase_rad, dtype=torch.float64)
        return torch.polar(a, p).to(dtype)


def _sequence(data: dict, key: str, path: str) -> np.ndarray:
    if key not in data:
        raise DataError(f"{path}: missing key {key!r}; a device response needs 'gray', 'phase_rad' and 'amplitude'")
    value = data[key]
    if not isinstance(value, list) or len(value) != GRAY_LEVELS:
        got = f"{len(value)} entries" if isinstance(value, list) else type(value).__name__
        raise DataError(f"{path}: {key!r} must be a list of {GRAY_LEVELS} numbers (one per gray level), got {got}")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: {key!r} must contain only numbers") from None
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{path}: {key!r} contains NaN or infinite values")
    return arr


def response_from_dict(data: object, *, source: str = "<memory>", sha256: str = "") -> DeviceResponse:
    """Validate a calibration (schema ``labctl.calibration/1``) or plain response mapping."""
    if not isinstance(data, dict):
        raise DataError(f"{source}: expected a JSON object with 'gray', 'phase_rad' and 'amplitude'")
    name = Path(source).name.split(".")[0] if source else "device"
    if "schema" in data:
        if data["schema"] != CALIBRATION_SCHEMA:
            raise DataError(f"{source}: unsupported schema {data['schema']!r}; expected {CALIBRATION_SCHEMA!r}")
        slm = data.get("slm")
        if isinstance(slm, dict) and isinstance(slm.get("name"), str):
            name = slm["name"]
    gray = _sequence(data, "gray", source)
    if not np.array_equal(gray, np.arange(GRAY_LEVELS)):
        raise DataError(f"{source}: 'gray' must be 0, 1, ..., 255 in order")
    phase = _sequence(data, "phase_rad", source)
    amplitude = _sequence(data, "amplitude", source)
    if np.any(amplitude < 0):
        raise DataError(f"{source}: 'amplitude' must be >= 0 (a relative transmission)")
    if amplitude.max() <= 0:
        raise DataError(f"{source}: 'amplitude' is zero for every gray level; the device transmits no light")
    return DeviceResponse(name=name, phase_rad=tuple(phase.tolist()), amplitude=tuple(amplitude.tolist()),
                          source=source, sha256=sha256)


def load_response(path: str | Path) -> DeviceResponse:
    """Read a device response from a calibration file or a plain response JSON."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: calibration file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read calibration file ({e.strerror})") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a JSON calibration file ({e})") from None
    return response_from_dict(data, source=str(path), sha256=hashlib.sha256(raw).hexdigest())


def _phase_targets(phase: np.ndarray, k: int) -> np.ndarray:
    lo, hi = float(phase.min()), float(phase.max())
    if hi - lo >= 2 * math.pi * (k - 1) / k:
        return lo + 2 * math.pi * np.arange(k) / k
    return np.linspace(lo, hi, k)


def select_levels(response: DeviceResponse, k: int) -> DeviceLevels:
    """Choose ``k`` distinct gray levels of ``response`` (criterion in the module docstring)."""
    if not isinstance(k, int) or isinstance(k, bool) or not 2 <= k <= GRAY_LEVELS:
        raise DataError(f"number of levels must be an integer in 2..{GRAY_LEVELS}, got {k!r}")
    t = response.transmission()
    phase = np.asarray(response.phase_rad)
    chosen: list[int] = []
    for target in _phase_targets(phase, k):
        cost = np.abs(t - np.exp(1j * target))
        cost[chosen] = np.inf  # a gray value appears once
        chosen.append(int(np.argmin(cost)))
    chosen.sort(key=lambda g: (phase[g], g))
    return DeviceLevels(gray=tuple(chosen), phase_rad=tuple(float(phase[g]) for g in chosen),
                        amplitude=tuple(float(response.amplitude[g]) for g in chosen), name=response.name,
                        source=response.source, sha256=response.sha256)


def ideal_levels(k: int) -> DeviceLevels:
    """An ideal phase-only device: phases 2πj/K, amplitude 1, shown as gray ``j·256//K``."""
    if not isinstance(k, int) or isinstance(k, bool) or not 2 <= k <= GRAY_LEVELS:
        raise DataError(f"number of levels must be an integer in 2..{GRAY_LEVELS}, got {k!r}")
    return DeviceLevels(gray=tuple(j * GRAY_LEVELS // k for j in range(k)),
                        phase_rad=tuple(2 * math.pi * j / k for j in range(k)), amplitude=(1.0,) * k,
                        name=f"ideal-{k}")


def levels_from_arrays(gray: np.ndarray, transmission: np.ndarray, name: str = "") -> DeviceLevels:
    """Levels from stored arrays (a model artifact): gray (K,) uint8 and t (K,) complex."""
    gray = np.asarray(gray)
    transmission = np.asarray(transmission)
    if gray.ndim != 1 or gray.shape != transmission.shape or len(set(gray.tolist())) != gray.size:
        raise DataError("levels need distinct gray values and one transmission per gray value")
    return DeviceLevels(gray=tuple(int(g) for g in gray), phase_rad=tuple(np.angle(transmission).tolist()),
                        amplitude=tuple(np.abs(transmission).tolist()), name=name)
