"""The newest artifacts an operator wants next to the live picture.

Read-only and defensive: files are being written by other commands while the
view runs (atomically, by rename), so anything unreadable is skipped, never fatal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labctl.web.overlay import REGISTRATION_SCHEMA

MAX_PLOTS = 8
MAX_REPORT_BYTES = 256 * 1024


@dataclass(frozen=True)
class ArtifactDirs:
    """Where ``labctl calibrate``, ``train`` and ``deploy`` put their outputs (relative to the server's cwd)."""

    calibrations: Path = Path("calibrations")
    models: Path = Path("models")
    runs: Path = Path("runs")


def mtime(p: Path) -> float:
    """Modification time (Unix seconds), -1 when the file is gone."""
    try:
        return p.stat().st_mtime
    except OSError:
        return -1.0


def _newest(paths: list[Path]) -> list[Path]:
    return sorted(paths, key=lambda p: (mtime(p), p.name), reverse=True)


def _read_json(p: Path) -> Any:
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def latest_registration(dirs: ArtifactDirs, bench_name: str | None = None) -> tuple[Path, dict[str, Any]] | None:
    """The bench's registration (``<bench>.registration.json``, what ``labctl deploy`` uses), else the
    newest ``labctl.registration/1`` JSON file in the calibrations directory."""
    if not dirs.calibrations.is_dir():
        return None
    if bench_name and "/" not in bench_name and not bench_name.startswith("."):
        own = dirs.calibrations / f"{bench_name}.registration.json"
        data = _read_json(own)
        if isinstance(data, dict) and data.get("schema") == REGISTRATION_SCHEMA:
            return own, data
    for p in _newest(list(dirs.calibrations.glob("*.json"))):
        data = _read_json(p)
        if isinstance(data, dict) and data.get("schema") == REGISTRATION_SCHEMA:
            return p, data
    return None


def calibration_plots(dirs: ArtifactDirs) -> list[Path]:
    """The newest calibration plots (PNG), newest first."""
    if not dirs.calibrations.is_dir():
        return []
    return _newest(list(dirs.calibrations.glob("*.png")))[:MAX_PLOTS]


def model_regions(dirs: ArtifactDirs, model_name: str | None) -> list[list[int]] | None:
    """Detector regions [[row, col, h, w], ...] of ``models/<name>/model.json``, if it is there and sane."""
    if not model_name or "/" in model_name or "\\" in model_name or model_name.startswith("."):
        return None
    data = _read_json(dirs.models / model_name / "model.json")
    try:
        regions = data["detector"]["regions"]
        out = [[int(v) for v in r] for r in regions]
    except (TypeError, KeyError, ValueError):
        return None
    return out if all(len(r) == 4 for r in out) else None


def latest_run(dirs: ArtifactDirs) -> dict[str, Any] | None:
    """The newest run directory that has a report: its id, report text and plot files."""
    if not dirs.runs.is_dir():
        return None
    reports = [d for d in dirs.runs.iterdir() if (d / "report.md").is_file()]
    for d in _newest([r / "report.md" for r in reports]):
        run_dir = d.parent
        try:
            raw = d.read_bytes()[:MAX_REPORT_BYTES]
        except OSError:
            continue
        return {
            "id": run_dir.name,
            "dir": run_dir,
            "report": raw.decode("utf-8", errors="replace"),
            "plots": _newest(list(run_dir.glob("*.png")))[:MAX_PLOTS],
            "run": _read_json(run_dir / "run.json"),
        }
    return None
