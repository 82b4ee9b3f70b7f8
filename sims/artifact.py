"""The model artifact of DESIGN §5: ``model.json`` (schema ``labctl.model/1``) + ``layers.npz``.

``layers.npz`` holds, for layer i (from 1), ``gray_i`` uint8 (N, N) — the values the
SLM displays — and ``t_i`` complex64 (N, N) — the transmission the twin assumed.
Both files are enough to re-simulate the model (:func:`load_model`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sims.device import DeviceLevels
from sims.donn import Geometry
from sims.errors import DataError, SimulationError
from sims.io import write_json_atomic, write_npz_atomic

MODEL_SCHEMA = "labctl.model/1"
MODEL_FILE = "model.json"
LAYERS_FILE = "layers.npz"


def software_version() -> str:
    try:
        return importlib.metadata.version("labctl")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class LoadedModel:
    path: Path
    meta: dict
    geometry: Geometry
    gray: tuple[np.ndarray, ...]  # uint8 (N, N) per layer
    transmission: tuple[np.ndarray, ...]  # complex64 (N, N) per layer
    levels: tuple[DeviceLevels, ...]


def save_model(folder: str | Path, *, geometry: Geometry, layers: list[tuple[np.ndarray, np.ndarray]],
               levels: list[DeviceLevels], training: dict, metrics: dict, slm_names: list[str] | None = None) -> Path:
    """Write ``folder/layers.npz`` then ``folder/model.json`` (each atomically; model.json
    last, so a folder with a model.json always has its layers)."""
    folder = Path(folder)
    if len(layers) != geometry.layers or len(levels) != geometry.layers:
        raise SimulationError("one (gray, t) pair and one level set per layer are needed")
    arrays: dict[str, np.ndarray] = {}
    for i, (gray, t) in enumerate(layers, start=1):
        arrays[f"gray_{i}"] = np.ascontiguousarray(gray, dtype=np.uint8)
        arrays[f"t_{i}"] = np.ascontiguousarray(t, dtype=np.complex64)
    npz_path = write_npz_atomic(folder / LAYERS_FILE, arrays)
    names = slm_names or [lv.name or f"layer{i}" for i, lv in enumerate(levels, start=1)]
    meta = {
        "schema": MODEL_SCHEMA,
        "geometry": geometry.to_json(),
        "input": {"encoding": "amplitude", "size": [geometry.input_size, geometry.input_size]},
        "detector": {"regions": [list(r) for r in geometry.regions]},
        "layers": [{
            "slm": names[i],
            "calibration": {"file": lv.source or None, "sha256": lv.sha256 or None},
            "levels_gray": list(lv.gray),
            "levels_phase_rad": list(lv.phase_rad),
            "levels_amplitude": list(lv.amplitude),
        } for i, lv in enumerate(levels)],
        "layers_sha256": hashlib.sha256(npz_path.read_bytes()).hexdigest(),
        "training": training,
        "metrics": metrics,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "software": {"name": "labctl", "version": software_version()},
    }
    write_json_atomic(folder / MODEL_FILE, meta)
    return folder


def _need(d: dict, key: str, where: str) -> object:
    if not isinstance(d, dict) or key not in d:
        raise DataError(f"{where}: missing key {key!r}")
    return d[key]


def load_model(folder: str | Path) -> LoadedModel:
    """Read and check a model folder (or its model.json)."""
    folder = Path(folder)
    if folder.name == MODEL_FILE:
        folder = folder.parent
    mpath = folder / MODEL_FILE
    try:
        meta = json.loads(mpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{folder}: no {MODEL_FILE}; expected a model folder written by `labctl train`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{mpath}: not a readable model file ({e})") from None
    if not isinstance(meta, dict) or meta.get("schema") != MODEL_SCHEMA:
        raise DataError(f"{mpath}: schema is {meta.get('schema') if isinstance(meta, dict) else None!r}, "
                        f"expected {MODEL_SCHEMA!r}")
    geo = _need(meta, "geometry", str(mpath))
    prop = _need(geo, "propagation", f"{mpath} geometry")
    size = _need(geo, "size", f"{mpath} geometry")
    try:
        geometry = Geometry(size=int(size[0]), pitch_m=float(_need(geo, "pitch_m", str(mpath))),
                            wavelength_m=float(_need(geo, "wavelength_m", str(mpath))),
                            distances_m=tuple(float(d) for d in _need(geo, "distances_m", str(mpath))),
                            regions=tuple(tuple(int(v) for v in r)
                                          for r in _need(_need(meta, "detector", str(mpath)), "regions", str(mpath))),
                            input_size=int(_need(_need(meta, "input", str(mpath)), "size", str(mpath))[0]),
                            method=str(_need(prop, "method", str(mpath))),
                            pad_factor=int(_need(prop, "pad_factor", str(mpath))))
    except (TypeError, ValueError, IndexError) as e:
        raise DataError(f"{mpath}: malformed geometry ({e})") from None
    except SimulationError as e:
        raise DataError(f"{mpath}: {e}") from None
    lpath = folder / LAYERS_FILE
    try:
        with np.load(lpath, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise DataError(f"{folder}: no {LAYERS_FILE} beside {MODEL_FILE}") from None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"{lpath}: not a readable npz archive ({e})") from None
    n = geometry.size
    grays, ts, levels = [], [], []
    layer_meta = _need(meta, "layers", str(mpath))
    if not isinstance(layer_meta, list) or len(layer_meta) != geometry.layers:
        raise DataError(f"{mpath}: 'layers' must list {geometry.layers} layers (one per gap but the first)")
    for i in range(1, geometry.layers + 1):
        gray, t = arrays.get(f"gray_{i}"), arrays.get(f"t_{i}")
        if gray is None or t is None:
            raise DataError(f"{lpath}: missing gray_{i} or t_{i}")
        if gray.dtype != np.uint8 or gray.shape != (n, n) or t.dtype != np.complex64 or t.shape != (n, n):
            raise DataError(f"{lpath}: layer {i} must be gray_{i} uint8 ({n}, {n}) and t_{i} complex64 ({n}, {n})")
        lm = layer_meta[i - 1]
        try:
            lv = DeviceLevels(gray=tuple(int(g) for g in _need(lm, "levels_gray", str(mpath))),
                              phase_rad=tuple(float(p) for p in lm.get("levels_phase_rad", [])),
                              amplitude=tuple(float(a) for a in lm.get("levels_amplitude", [])),
                              name=str(lm.get("slm", "")))
        except (TypeError, ValueError) as e:
            raise DataError(f"{mpath}: layer {i} levels malformed ({e})") from None
        if len(lv.phase_rad) != lv.k or len(lv.amplitude) != lv.k:
            # Older/foreign writers may give only gray values: recover t per level from the map.
            phase, amp = [], []
            for g in lv.gray:
                hit = gray == g
                value = complex(t[hit][0]) if hit.any() else 1.0 + 0j
                phase.append(float(np.angle(value)))
                amp.append(float(abs(value)))
            lv = DeviceLevels(gray=lv.gray, phase_rad=tuple(phase), amplitude=tuple(amp), name=lv.name)
        grays.append(gray)
        ts.append(t)
        levels.append(lv)
    return LoadedModel(folder, meta, geometry, tuple(grays), tuple(ts), tuple(levels))
