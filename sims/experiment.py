"""Method comparisons as grids of independent, resumable cells.

A grid (``[experiment]`` table of a TOML file, validated by :func:`grid_from_dict`) names
a *kind* of experiment and its axes:

* ``donn``: quantization methods × levels × depth × seeds × device (``measured``
  levels selected from a calibration file, or the ``ideal`` uniform phase device) on
  the DONN of a preset.
* ``qpi``: the same axes on QuATON's quantitative-phase-imaging task (:mod:`sims.qpi`).
* ``fc``: activations × optical depths × seeds on 003's fully connected network
  (:mod:`sims.fc`).

Every cell is a pure function of (grid, cell): it writes ``cells/<id>.json`` atomically
when it finishes, and a cell whose file exists is never run again, so a killed grid
resumes where it stopped, on one machine or on a cluster. Cells run in *phases*: the
full-precision models that post-training methods (PTQ, WSQ) and warm starts need
(``bases/``) come first.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from sims.data import Dataset, load_dataset
from sims.device import DeviceLevels, ideal_levels, load_response, select_levels
from sims.donn import DONN, Geometry, layout_regions, preset
from sims.errors import DataError, SimulationError
from sims.io import write_json_atomic, write_npz_atomic, write_text_atomic
from sims.quantizers import QUANTIZERS
from sims.quantizers.gumbel import GumbelSoftmax
from sims.quantizers.schedules import make_schedule
from sims.train import TrainConfig, accuracy, build_model, confidence_study, predict_scores, train

KINDS = ("donn", "qpi", "fc")
DEVICES = ("ideal", "measured")
# Methods that train nothing of their own: evaluated from the full-precision base.
POST_TRAINING = ("full", "ptq", "wsq", "wsq-raw")
# GS warm start: logits = −GS_WARM_SCALE · |exp(iφ) − t_k|² (QuATON starts every method
# from the full-precision phases).
GS_WARM_SCALE = 10.0
CELLS_DIR, BASES_DIR, WORK_DIR = "cells", "bases", "work"


@dataclass(frozen=True)
class Grid:
    """One comparison. Epoch counts are full passes over the (sub-sampled) training set."""

    name: str
    kind: str = "donn"
    preset: str = "bench"
    methods: tuple[str, ...] = ("ptq", "gs")
    levels: tuple[int, ...] = (8,)
    depths: tuple[int, ...] = (3,)
    seeds: tuple[int, ...] = (0,)
    devices: tuple[str, ...] = ("ideal",)
    calibration: tuple[str, ...] = ()  # response/calibration files, cycled over layers
    epochs: int = 3  # full-precision bases and methods trained from scratch
    finetune_epochs: int = 2  # methods warm-started from the base
    warm_start: bool = False
    train_images: int = 1000  # 0 = the whole training split
    test_images: int = 1000
    batch_size: int = 64
    lr: float = 0.5
    finetune_lr: float = 0.0  # learning rate of warm-started runs; 0 = `lr`
    loss: str = "mse"
    schedule: str = "linear"
    dataset: str = "mnist-5k"
    # fc kind
    activations: tuple[str, ...] = ()
    alphas: tuple[float, ...] = ()

    def to_json(self) -> dict:
        return asdict(self)


_INT_TUPLES = ("levels", "depths", "seeds")
_STR_TUPLES = ("methods", "devices", "calibration", "activations")


def grid_from_dict(data: dict, *, base_dir: Path | None = None) -> Grid:
    """Validate the ``[experiment]`` table; relative calibration paths are taken from ``base_dir``."""
    if not isinstance(data, dict):
        raise SimulationError("grid must be a table of settings")
    known = set(Grid.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise SimulationError(f"unknown grid key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(known))}")
    if not isinstance(data.get("name"), str) or not data["name"]:
        raise SimulationError("grid needs a non-empty `name`")
    kwargs: dict = {}
    for key, value in data.items():
        if key in _INT_TUPLES or key in _STR_TUPLES or key == "alphas":
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                value = [value]
            if not isinstance(value, list) or not value and key not in ("calibration", "activations", "alphas"):
                raise SimulationError(f"grid key `{key}` must be a non-empty list")
            want = int if key in _INT_TUPLES else float if key == "alphas" else str
            for v in value:
                ok = isinstance(v, want) or (want is float and isinstance(v, int))
                if not ok or isinstance(v, bool):
                    raise SimulationError(f"grid key `{key}` must list {want.__name__} values, got {v!r}")
            kwargs[key] = tuple(want(v) for v in value)
        else:
            kwargs[key] = value
    if "calibration" in kwargs and base_dir is not None:
        kwargs["calibration"] = tuple(str((base_dir / p).resolve()) if not Path(p).is_absolute() else p
                                      for p in kwargs["calibration"])
    try:
        grid = Grid(**kwargs)
    except TypeError as e:
        raise SimulationError(f"bad grid: {e}") from None
    _validate(grid)
    return grid


def _validate(g: Grid) -> None:
    if g.kind not in KINDS:
        raise SimulationError(f"unknown experiment kind {g.kind!r}; expected one of {', '.join(KINDS)}")
    for name in ("epochs", "finetune_epochs", "batch_size", "test_images"):
        if not isinstance(getattr(g, name), int) or getattr(g, name) < 1:
            raise SimulationError(f"grid key `{name}` must be an integer >= 1, got {getattr(g, name)!r}")
    if not isinstance(g.train_images, int) or g.train_images < 0:
        raise SimulationError("grid key `train_images` must be an integer >= 0 (0 = all)")
    if not (isinstance(g.lr, (int, float)) and g.lr > 0):
        raise SimulationError(f"grid key `lr` must be > 0, got {g.lr!r}")
    if not (isinstance(g.finetune_lr, (int, float)) and g.finetune_lr >= 0):
        raise SimulationError(f"grid key `finetune_lr` must be >= 0, got {g.finetune_lr!r}")
    if g.kind == "fc":
        from sims.fc import ACTIVATIONS
        bad = [a for a in g.activations if a not in ACTIVATIONS]
        if not g.activations or bad:
            raise SimulationError(f"fc grid needs `activations` from {', '.join(ACTIVATIONS)}, got {list(g.activations)}")
        if "sa" in g.activations and not g.alphas:
            raise SimulationError("fc grid with activation 'sa' needs `alphas` (optical depths α0)")
        return
    bad = [m for m in g.methods if m not in QUANTIZERS or m == "fixed"]
    if bad:
        raise SimulationError(f"unknown method(s) {', '.join(bad)}; expected some of "
                              f"{', '.join(m for m in QUANTIZERS if m != 'fixed')}")
    for k in g.levels:
        if not 2 <= k <= 256:
            raise SimulationError(f"levels must be in 2..256, got {k}")
    for d in g.depths:
        if not 1 <= d <= 20:
            raise SimulationError(f"depths must be in 1..20 layers, got {d}")
    bad = [d for d in g.devices if d not in DEVICES]
    if bad:
        raise SimulationError(f"unknown device(s) {', '.join(bad)}; expected {' or '.join(DEVICES)}")
    if "measured" in g.devices and not g.calibration:
        raise SimulationError("device 'measured' needs `calibration` (a calibration or response JSON file)")
    grid_preset(g.preset)
    make_schedule(g.schedule)


# ---------------------------------------------------------------- planning

def cell_id(cell: dict) -> str:
    return cell["id"]


def plan(grid: Grid) -> list[list[dict]]:
    """Cells in phases; the cells of one phase are independent of each other, and the
    first phase holds the full-precision bases the second one needs."""
    if grid.kind == "fc":
        from sims.fc import plan_cells
        return [plan_cells(grid)]
    # seed-major order: a grid stopped half-way still holds every method for its first seeds
    bases, cells, free = {}, [], []
    for seed in grid.seeds:
        for depth in grid.depths:
            for k in grid.levels:
                for device in grid.devices:
                    for method in grid.methods:
                        cell = {"id": f"{method}_{device}_L{k}_D{depth}_s{seed}", "kind": grid.kind,
                                "method": method, "device": device, "levels": k, "depth": depth, "seed": seed}
                        if method in POST_TRAINING or grid.warm_start:
                            b = base_cell(grid, depth, seed)
                            bases[b["id"]] = b
                            cells.append(cell)
                        else:
                            free.append(cell)
    # nothing in the first phase waits for a base; seed-major like the rest
    first = sorted([*bases.values(), *free], key=lambda c: (c["seed"], c["depth"]))
    return [ph for ph in (first, cells) if ph]


def base_cell(grid: Grid, depth: int, seed: int) -> dict:
    return {"id": f"base_D{depth}_s{seed}", "kind": grid.kind, "method": "full", "depth": depth, "seed": seed,
            "base": True}


def done(out_dir: Path, cell: dict) -> bool:
    return _cell_path(out_dir, cell).is_file()


def _cell_path(out_dir: Path, cell: dict) -> Path:
    return Path(out_dir) / (BASES_DIR if cell.get("base") else CELLS_DIR) / f"{cell['id']}.json"


# ---------------------------------------------------------------- running

_DATA: dict[tuple, Dataset] = {}


def subsample(data: Dataset, train_images: int, test_images: int) -> Dataset:
    """Evenly spaced images of each split (the splits are sorted by class, so every
    class keeps its share)."""
    def pick(n_all: int, n: int) -> np.ndarray:
        if n == 0 or n >= n_all:
            return np.arange(n_all)
        return np.unique(np.linspace(0, n_all - 1, n).round().astype(int))
    tr, te = pick(len(data.train_labels), train_images), pick(len(data.test_labels), test_images)
    return Dataset(data.name, f"{data.split} (every {len(data.train_labels) / len(tr):g}th train, "
                   f"{len(te)} test)", data.train_images[tr], data.train_labels[tr], data.test_images[te],
                   data.test_labels[te])


def grid_data(grid: Grid) -> Dataset:
    key = (grid.dataset, grid.train_images, grid.test_images)
    if key not in _DATA:
        _DATA[key] = subsample(load_dataset(grid.dataset), grid.train_images, grid.test_images)
    return _DATA[key]


# Smoke-test geometry (not a bench): 24×24 neurons, 4 cm gaps, ten 3×3 detectors.
TINY = Geometry(size=24, pitch_m=72e-6, wavelength_m=532e-9, distances_m=(0.04,) * 2,
                regions=layout_regions(24, 3), input_size=20)


def grid_preset(name: str) -> Geometry:
    return TINY if name == "tiny" else preset(name)


def geometry_for(grid: Grid, depth: int) -> Geometry:
    g = grid_preset(grid.preset)
    return replace(g, distances_m=(g.distances_m[0],) * (depth + 1))


def levels_for(grid: Grid, device: str, k: int, depth: int) -> tuple[DeviceLevels, ...]:
    if device == "ideal":
        return (ideal_levels(k),) * depth
    responses = [load_response(p) for p in grid.calibration]
    return tuple(select_levels(responses[i % len(responses)], k) for i in range(depth))


def run_cell(grid: Grid, cell: dict, out_dir: str | Path, threads: int = 1) -> dict:
    """Run one cell (unless its result exists) and return its result row."""
    out_dir = Path(out_dir)
    path = _cell_path(out_dir, cell)
    if path.is_file():
        return json.loads(path.read_text())
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    if grid.kind == "fc":
        from sims.fc import run_fc_cell
        row = run_fc_cell(grid, cell)
    elif cell.get("base"):
        row = _run_base(grid, cell, out_dir)
    else:
        row = _run_method(grid, cell, out_dir)
    row = {**{k: v for k, v in cell.items() if k not in ("kind", "base")}, **row,
           "seconds": round(time.perf_counter() - t0, 2)}
    write_json_atomic(path, row)
    shutil.rmtree(out_dir / WORK_DIR / cell["id"], ignore_errors=True)
    return row


def _evaluate(grid: Grid, model: DONN, data: Dataset) -> dict:
    if grid.kind == "qpi":
        from sims.qpi import evaluate_qpi
        return evaluate_qpi(model, data)
    scores = predict_scores(model, data.test_images)
    conf = confidence_study(scores, data.test_labels)
    return {"test_accuracy": accuracy(scores, data.test_labels),
            **{f"confidence_{k.rstrip('%')}pct": v for k, v in conf.items()}}


def _config(grid: Grid, method: str, levels: tuple[DeviceLevels, ...], depth: int, seed: int,
            epochs: int, lr: float = 0.0) -> TrainConfig:
    return TrainConfig(geometry=geometry_for(grid, depth), levels=levels, method=method, epochs=epochs,
                       lr=float(lr or grid.lr), batch_size=grid.batch_size, loss=grid.loss,
                       schedule=make_schedule(grid.schedule), seed=seed, dataset=grid.dataset, threads=0)


def _train(grid: Grid, config: TrainConfig, data: Dataset, work: Path, init=None) -> DONN:
    if grid.kind == "qpi":
        from sims.qpi import train_qpi
        return train_qpi(config, data, work, init=init)
    try:
        return train(config, data, work, resume=True, eval_every_epoch=False, init=init).model
    except DataError:
        # a checkpoint left by an older version of this cell: the cell starts over
        shutil.rmtree(work, ignore_errors=True)
        return train(config, data, work, resume=False, eval_every_epoch=False, init=init).model


def _run_base(grid: Grid, cell: dict, out_dir: Path) -> dict:
    data = grid_data(grid) if grid.kind == "donn" else _qpi_data(grid)
    config = _config(grid, "full", (ideal_levels(2),) * cell["depth"], cell["depth"], cell["seed"], grid.epochs)
    model = _train(grid, config, data, out_dir / WORK_DIR / cell["id"])
    phases = {f"phase_{i}": q.phase.detach().numpy().astype(np.float32) for i, q in enumerate(model.layers)}
    write_npz_atomic(out_dir / BASES_DIR / f"{cell['id']}.npz", phases)
    return {"epochs": grid.epochs, **_evaluate(grid, model.eval(), data)}


def _qpi_data(grid: Grid) -> Dataset:
    from sims.qpi import phase_digits
    return phase_digits(grid_data(grid))


def load_base(out_dir: Path, grid: Grid, depth: int, seed: int) -> list[torch.Tensor]:
    path = out_dir / BASES_DIR / f"{base_cell(grid, depth, seed)['id']}.npz"
    if not path.is_file():
        raise SimulationError(f"{path}: full-precision base missing; run the grid's first phase before its cells")
    with np.load(path, allow_pickle=False) as z:
        return [torch.from_numpy(z[f"phase_{i}"]) for i in range(depth)]


def warm_start(model: DONN, phases: list[torch.Tensor]) -> None:
    """Put full-precision phases (radians) into every layer, whatever its method."""
    with torch.no_grad():
        for q, phase in zip(model.layers, phases):
            if hasattr(q, "init_from_phase"):
                q.init_from_phase(phase)
            elif isinstance(q, GumbelSoftmax):
                t = torch.polar(q.level_amplitude, q.level_phase)
                q.logits.copy_(-GS_WARM_SCALE * (torch.polar(torch.ones_like(phase), phase)[..., None] - t).abs()
                               .square())
            elif hasattr(q, "phase"):
                q.phase.copy_(phase)
            else:
                raise SimulationError(f"method {q.name!r} cannot start from full-precision phases")


def _run_method(grid: Grid, cell: dict, out_dir: Path) -> dict:
    data = grid_data(grid) if grid.kind == "donn" else _qpi_data(grid)
    method, depth, seed = cell["method"], cell["depth"], cell["seed"]
    levels = levels_for(grid, cell["device"], cell["levels"], depth)
    if method in POST_TRAINING:
        config = _config(grid, method, levels, depth, seed, grid.epochs)
        model = build_model(config)
        warm_start(model, load_base(out_dir, grid, depth, seed))
        return {"epochs": grid.epochs, "warm_start": False, **_evaluate(grid, model.eval(), data)}
    init = None
    epochs, lr = grid.epochs, grid.lr
    if grid.warm_start:
        phases = load_base(out_dir, grid, depth, seed)
        epochs, lr = grid.finetune_epochs, grid.finetune_lr or grid.lr

        def init(model: DONN) -> None:
            warm_start(model, phases)
    config = _config(grid, method, levels, depth, seed, epochs, lr)
    model = _train(grid, config, data, out_dir / WORK_DIR / cell["id"], init=init)
    return {"epochs": epochs, "warm_start": grid.warm_start, **_evaluate(grid, model.eval(), data)}


# ---------------------------------------------------------------- results

def collect(out_dir: str | Path) -> list[dict]:
    """Every finished method cell, sorted by id."""
    folder = Path(out_dir) / CELLS_DIR
    rows = []
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            rows.append(json.loads(p.read_text()))
        except json.JSONDecodeError:
            raise DataError(f"{p}: corrupt cell result; delete it to rerun the cell") from None
    return rows


def metric_names(rows: list[dict]) -> list[str]:
    skip = {"id", "method", "device", "levels", "depth", "seed", "epochs", "warm_start", "seconds", "activation",
            "alpha0"}
    names: list[str] = []
    for r in rows:
        for k, v in r.items():
            if k not in skip and k not in names and isinstance(v, (int, float)) and not isinstance(v, bool):
                names.append(k)
    return names


def group_keys(rows: list[dict]) -> list[str]:
    if rows and "activation" in rows[0]:
        return ["activation", "alpha0"]
    return ["method", "device", "levels", "depth"]


def to_csv(rows: list[dict]) -> str:
    if not rows:
        return ""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    lines = [",".join(cols)]
    for r in rows:
        lines.append(",".join("" if r.get(c) is None else
                              (f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c])) for c in cols))
    return "\n".join(lines) + "\n"


def summarize(rows: list[dict], metrics: list[str] | None = None) -> list[dict]:
    """Mean and sample standard deviation over seeds per group."""
    keys = group_keys(rows)
    metrics = metrics or metric_names(rows)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    out = []
    for key, members in groups.items():
        s = dict(zip(keys, key))
        s["n"] = len(members)
        for m in metrics:
            vals = np.array([r[m] for r in members if isinstance(r.get(m), (int, float))], dtype=float)
            s[m] = float(vals.mean()) if len(vals) else math.nan
            s[m + "_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
        out.append(s)
    order = {k: i for i, k in enumerate(_method_order(rows))}
    out.sort(key=lambda s: tuple(order.get(s[k], 99) if k in ("method", "activation") else
                                 (s[k] if s[k] is not None else -1) for k in keys))
    return out


def _method_order(rows: list[dict]) -> list[str]:
    seen: list[str] = []
    for r in rows:
        m = r.get("method", r.get("activation"))
        if m not in seen:
            seen.append(m)
    preferred = ["full", "ptq", "qat", "wsq-raw", "wsq", "ste", "gs", "dsq", "psq-ft", "psq-li", "psq-lt",
                 "linear", "relu", "sa", "sa-exact"]
    return [m for m in preferred if m in seen] + [m for m in seen if m not in preferred]


def markdown_table(summary: list[dict], metrics: list[str]) -> str:
    if not summary:
        return "_no finished cells_\n"
    keys = [k for k in ("method", "activation", "alpha0", "device", "levels", "depth") if k in summary[0]]
    head = keys + ["n"] + metrics
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary:
        cells = [str(s[k]) if s[k] is not None else "" for k in keys] + [str(s["n"])]
        for m in metrics:
            mean, std = s[m], s[m + "_std"]
            cells.append("—" if math.isnan(mean) else f"{mean:.3f}" + ("" if math.isnan(std) else f" ± {std:.3f}"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_reports(out_dir: str | Path, grid: Grid) -> dict[str, Path]:
    """results.csv and results.md (mean ± std over seeds) from the finished cells."""
    out_dir = Path(out_dir)
    rows = collect(out_dir)
    metrics = metric_names(rows)
    summary = summarize(rows, metrics)
    csv = write_text_atomic(out_dir / "results.csv", to_csv(rows))
    md = write_text_atomic(out_dir / "results.md", f"# {grid.name}\n\n{len(rows)} finished cells; mean ± sample "
                           f"std over seeds.\n\n" + markdown_table(summary, metrics))
    write_json_atomic(out_dir / "grid.json", grid.to_json())
    return {"csv": csv, "markdown": md}
