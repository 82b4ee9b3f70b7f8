"""Does a model fit a bench? Geometry, layer count and the calibrations it was trained on.

A model is trained on the levels *measured* on particular SLMs; shown on SLMs whose
calibration has changed since, it is a different network. So each model layer's
calibration sha256 must equal the sha256 of the bench's current calibration file
for that SLM (``<calibrations>/<slm>.cal.json``). Differences are returned as a list
of one-line reasons; the command refuses them unless forced. What cannot be
deployed at all (wrong layer count or neuron grid) raises at once.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drivers.slm import upsample_map
from labctl.config import BenchConfig
from labctl.errors import ConfigError
from sims.artifact import LoadedModel

CALIBRATION_SUFFIX = ".cal.json"
# `labctl calibrate` stores the registration as <bench name>.registration.json.
REGISTRATION_SUFFIX = ".registration.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def calibration_file(cal_dir: Path, slm: str) -> Path:
    return cal_dir / f"{slm}{CALIBRATION_SUFFIX}"


def registration_file(cal_dir: Path, bench_name: str) -> Path:
    """The camera registration stored with the bench's calibrations."""
    path = cal_dir / f"{bench_name}{REGISTRATION_SUFFIX}"
    if not path.is_file():
        raise ConfigError(f"{path}: no camera registration for bench {bench_name!r}; "
                          "run `labctl calibrate --registration` first")
    return path


@dataclass(frozen=True)
class LayerPlan:
    slm: str  # bench SLM that shows this layer
    model_slm: str  # SLM the model was trained for
    gray_map: np.ndarray  # uint8, the SLM's ROI shape
    calibration: str | None  # bench calibration file (None: missing)
    calibration_sha256: str | None
    model_sha256: str | None


def plan_layers(model: LoadedModel, bench: BenchConfig, cal_dir: Path) -> tuple[list[LayerPlan], list[str]]:
    """One LayerPlan per model layer (in beam order) and the list of mismatches."""
    layers = bench.layer_slms
    mpath = model.path / "model.json"
    if len(model.gray) != len(layers):
        raise ConfigError(f"{mpath}: the model has {len(model.gray)} layers but bench {bench.name!r} has "
                          f"{len(layers)} layer SLMs ({', '.join(s.name for s in layers)})")
    geo = model.geometry
    rows, cols = bench.size
    if (geo.size, geo.size) != (rows, cols):
        raise ConfigError(f"{mpath}: the model is {geo.size}x{geo.size} neurons but bench {bench.name!r} gives "
                          f"{rows}x{cols} neurons per SLM")
    problems: list[str] = []
    if not math.isclose(geo.pitch_m, bench.pitch_m, rel_tol=1e-6):
        problems.append(f"neuron pitch: model {geo.pitch_m:g} m, bench {bench.pitch_m:g} m")
    if not math.isclose(geo.wavelength_m, bench.wavelength_m, rel_tol=1e-6):
        problems.append(f"wavelength: model {geo.wavelength_m:g} m, bench {bench.wavelength_m:g} m")
    if len(geo.distances_m) != len(bench.distances_m) or not all(
            math.isclose(a, b, rel_tol=1e-6) for a, b in zip(geo.distances_m, bench.distances_m)):
        problems.append(f"distances: model {list(geo.distances_m)} m, bench {list(bench.distances_m)} m")
    plans: list[LayerPlan] = []
    for i, (slm, meta) in enumerate(zip(layers, model.meta["layers"]), start=1):
        model_slm = str(meta.get("slm", ""))
        if model_slm != slm.name:
            problems.append(f"layer {i}: trained for SLM {model_slm!r}, the bench's layer {i} is {slm.name!r}")
        cal = meta.get("calibration") or {}
        want = cal.get("sha256") if isinstance(cal, dict) else None
        path = calibration_file(cal_dir, slm.name)
        have = sha256_file(path) if path.is_file() else None
        if have is None:
            problems.append(f"layer {i} (SLM {slm.name}): no calibration {path} to compare with")
        elif want is None:
            problems.append(f"layer {i} (SLM {slm.name}): the model records no calibration sha256")
        elif have != want:
            problems.append(f"layer {i} (SLM {slm.name}): model trained on calibration sha256 {want[:12]}…, "
                            f"the bench's {path.name} is {have[:12]}…")
        gray = upsample_map(model.gray[i - 1], slm.upsample)
        if gray.shape != (slm.roi[3], slm.roi[2]):
            raise ConfigError(f"layer {i}: a {model.gray[i - 1].shape} map upsampled x{slm.upsample} is "
                              f"{gray.shape}, but SLM {slm.name}'s ROI is {(slm.roi[3], slm.roi[2])}")
        plans.append(LayerPlan(slm.name, model_slm, gray.astype(np.uint8), str(path) if have else None, have, want))
    return plans, problems
