"""Calibration files (DESIGN §5, schema ``labctl.calibration/1``): build, write, keep history, compare.

A new calibration of an SLM never destroys the previous one: the old file (and its
plot) moves to ``<out>/history/<slm>.<created>.cal.json`` first. Files are written
atomically with ``sims.io``; ``sims.device.load_response`` reads them back.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from calibration.response import METHOD, Response
from sims.device import CALIBRATION_SCHEMA, response_from_dict
from sims.errors import DataError
from sims.io import write_json_atomic

HISTORY_DIR = "history"


def utc_now() -> str:
    """Current time, ISO 8601 UTC with a ``Z`` suffix, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def calibration_dict(resp: Response, *, serial: str, wavelength_m: float, bench_name: str, bench_sha256: str,
                     software_version: str, created: str | None = None, method: str = METHOD) -> dict[str, Any]:
    """The calibration file's content, exactly the keys of DESIGN §5 (plus ``schema``)."""
    return {
        "schema": CALIBRATION_SCHEMA,
        "slm": {"name": resp.slm, "serial": serial},
        "wavelength_m": float(wavelength_m),
        "created": created or utc_now(),
        "method": method,
        "gray": [int(g) for g in resp.gray],
        "phase_rad": [round(float(v), 6) for v in resp.phase_rad],
        "amplitude": [round(float(v), 6) for v in resp.amplitude],
        "phase_std_rad": [round(float(v), 6) for v in resp.phase_std_rad],
        "amplitude_std": [round(float(v), 6) for v in resp.amplitude_std],
        "frames": int(resp.frames),
        "bench": {"name": bench_name, "sha256": bench_sha256},
        "software": {"version": software_version},
    }


def calibration_path(out_dir: str | Path, slm: str) -> Path:
    return Path(out_dir) / f"{slm}.cal.json"


def plot_path(cal_path: str | Path) -> Path:
    p = Path(cal_path)
    return p.with_name(p.name[: -len(".cal.json")] + ".cal.png") if p.name.endswith(".cal.json") else p.with_suffix(".png")


def _stamp(created: Any) -> str:
    text = re.sub(r"[^0-9TZ]", "", str(created)) or "unknown"
    return text


def archive_previous(out_dir: str | Path, slm: str) -> Path | None:
    """Move an existing ``<slm>.cal.json`` (and its plot) into ``history/``; returns the new path."""
    current = calibration_path(out_dir, slm)
    if not current.exists():
        return None
    try:
        created = json.loads(current.read_text()).get("created", "")
    except (OSError, ValueError, AttributeError):
        created = datetime.fromtimestamp(current.stat().st_mtime, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    hist = Path(out_dir) / HISTORY_DIR
    hist.mkdir(parents=True, exist_ok=True)
    stem = f"{slm}.{_stamp(created)}"
    target = hist / f"{stem}.cal.json"
    n = 1
    while target.exists():
        target = hist / f"{stem}-{n}.cal.json"
        n += 1
    os.replace(current, target)
    old_plot = plot_path(current)
    if old_plot.exists():
        os.replace(old_plot, plot_path(target))
    return target


def write_calibration(out_dir: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as ``<out>/<slm>.cal.json`` atomically, keeping any earlier file in history."""
    slm = data["slm"]["name"]
    # Check it reads back before anything is moved: a file the twin cannot read is no calibration.
    response_from_dict(data, source=f"{slm}.cal.json")
    archive_previous(out_dir, slm)
    return write_json_atomic(calibration_path(out_dir, slm), data)


def load_calibration(path: str | Path) -> dict[str, Any]:
    """Read and validate a calibration file; DataError (exit 2) names what is wrong."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise DataError(f"{p}: calibration file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{p}: not a readable JSON calibration file ({e})") from None
    response_from_dict(data, source=str(p))
    for key in ("phase_std_rad", "amplitude_std"):
        if key in data and (not isinstance(data[key], list) or len(data[key]) != 256):
            raise DataError(f"{p}: {key!r} must be a list of 256 numbers")
    return data


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Drift from calibration ``a`` to ``b``: RMS and max differences of phase (rad) and amplitude.

    Both phases are relative to gray 0, so they compare directly. Differences larger
    than the two measurements' combined uncertainty are counted as significant.
    """
    wa, wb = a.get("wavelength_m"), b.get("wavelength_m")
    if isinstance(wa, (int, float)) and isinstance(wb, (int, float)) and not np.isclose(wa, wb, rtol=1e-6):
        raise DataError(f"the calibrations were measured at different wavelengths ({wa:g} m, {wb:g} m); "
                        "their phases do not compare")
    pa, pb = np.asarray(a["phase_rad"], float), np.asarray(b["phase_rad"], float)
    aa, ab = np.asarray(a["amplitude"], float), np.asarray(b["amplitude"], float)
    dp, da = pb - pa, ab - aa
    out: dict[str, Any] = {
        "phase_rms_rad": float(np.sqrt(np.mean(dp**2))),
        "phase_max_rad": float(np.max(np.abs(dp))),
        "phase_max_gray": int(np.argmax(np.abs(dp))),
        "amplitude_rms": float(np.sqrt(np.mean(da**2))),
        "amplitude_max": float(np.max(np.abs(da))),
        "amplitude_max_gray": int(np.argmax(np.abs(da))),
    }
    if all(k in c for c in (a, b) for k in ("phase_std_rad", "amplitude_std")):
        sp = np.hypot(np.asarray(a["phase_std_rad"], float), np.asarray(b["phase_std_rad"], float))
        sa = np.hypot(np.asarray(a["amplitude_std"], float), np.asarray(b["amplitude_std"], float))
        out["phase_significant_levels"] = int(np.sum(np.abs(dp) > 3 * sp))
        out["amplitude_significant_levels"] = int(np.sum(np.abs(da) > 3 * sa))
    if a.get("slm", {}).get("name") != b.get("slm", {}).get("name"):
        out["warning"] = "the two files are of different SLMs"
    return out
