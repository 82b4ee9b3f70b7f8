"""Calibration cost and accuracy on the simulated bench, against the bare sweep measured in the same run.

Baseline: the 256 split-screen maps shown and 2 frames grabbed per level on the bare
simulated devices (no auto-exposure, no scan, no fit) — what the sweep cannot go
below. Calibration: `calibration.response.measure_response` in full. The bench-time
goal is 256 × (settle + 2 exposures); frames used and bench time are counted by the
calibration itself. Accuracy is scored against the simulated bench's hidden truth
(this script, like the tests, may read it; the calibration code never does).

    .venv/bin/python benchmarks/calibration_time.py            # every SLM of the sim bench
    .venv/bin/python benchmarks/calibration_time.py --slm slm1 --json
    .venv/bin/python benchmarks/calibration_time.py --figures docs/img   # also the figures of docs/calibration.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from calibration.acquire import Acquisition  # noqa: E402
from calibration.registration import register_camera  # noqa: E402
from calibration.response import measure_response  # noqa: E402
from calibration.splitscreen import split_map  # noqa: E402
from labctl.bench import open_bench  # noqa: E402
from labctl.commands.calibrate import geometry_of  # noqa: E402
from labctl.config import load_bench  # noqa: E402


def truth_response(cfg, slm: str) -> tuple[np.ndarray, np.ndarray]:
    s = cfg.slm(slm)
    d = json.loads(cfg.resolve(s.truth["response_file"]).read_text())
    p, a = np.asarray(d["phase_rad"]), np.asarray(d["amplitude"])
    return p - p[0], a / a.max()


def truth_registration(bench) -> np.ndarray:
    m, _ = bench._world._sensor_map(bench.camera.sensor_shape, bench.camera.pitch_m)
    up = bench.config.input_slm.upsample
    return m @ np.array([[up, 0.0, -0.5], [0.0, up, -0.5], [0.0, 0.0, 1.0]])


def baseline_sweep(bench, slm: str, shape: tuple[int, int]) -> float:
    """Wall seconds for 256 × (show split map + grab 2 frames) on the bare devices."""
    bench.laser.on()
    if bench.shutter is not None:
        bench.shutter.open()
    t0 = time.perf_counter()
    for g in range(256):
        bench.slms[slm].show(split_map(shape, 0, g))
        bench.camera.grab(2)
    return time.perf_counter() - t0


def figures(out: Path, bench, geom, reg, results: dict, cfg) -> None:
    """The figures of docs/calibration.md: split-screen frames, measured vs true responses, registration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from calibration.registration import lenslet_map

    out.mkdir(parents=True, exist_ok=True)
    acq = Acquisition(bench.camera, bench.laser, bench.shutter, bench.slms, {cfg.input_slm.name: 255})
    acq.light(True)
    slm = cfg.layer_slms[0].name
    corners = reg.to_camera(np.array([[0, 0], [reg.neurons[1], 0], [reg.neurons[1], reg.neurons[0]],
                                      [0, reg.neurons[0]], [0, 0]]))

    # 1. split-screen maps and what the camera sees
    fig, axes = plt.subplots(2, 3, figsize=(11, 7))
    for col, g in enumerate((0, 60, 140)):
        m = split_map(geom.shape, 0, g)
        acq.show({slm: m})
        frame, _ = acq.grab(2)
        axes[0, col].imshow(m, cmap="gray", vmin=0, vmax=255)
        axes[0, col].set_title(f"{slm} map: 0 | {g}")
        axes[1, col].imshow(frame, cmap="inferno")
        axes[1, col].plot(corners[:, 0], corners[:, 1], "c-", lw=0.6)
        axes[1, col].set_title("camera frame")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(out / "calibration_split_screen.png", dpi=80)
    plt.close(fig)

    # 2. measured vs true responses
    fig, axes = plt.subplots(2, len(results), figsize=(3.6 * len(results), 6), sharex=True, squeeze=False)
    for i, (name, resp) in enumerate(results.items()):
        tp, ta = truth_response(cfg, name)
        g = np.arange(256)
        axes[0, i].plot(g, tp, "k-", lw=1, label="truth")
        axes[0, i].errorbar(g[::3], resp.phase_rad[::3], yerr=resp.phase_std_rad[::3], fmt=".", ms=3, label="measured")
        axes[1, i].plot(g, ta, "k-", lw=1)
        axes[1, i].errorbar(g[::3], resp.amplitude[::3], yerr=resp.amplitude_std[::3], fmt=".", ms=3, color="C1")
        axes[0, i].set_title(f"{name} ({cfg.slm(name).truth['response_file'].split('.')[0]})")
        axes[1, i].set_xlabel("gray")
        axes[1, i].set_ylim(0, 1.05)
    axes[0, 0].set_ylabel("phase rel. gray 0 (rad)")
    axes[1, 0].set_ylabel("amplitude (rel. max)")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "calibration_vs_truth.png", dpi=80)
    plt.close(fig)

    # 3. registration: lenslet spots and the flat field with the registered detector outline
    last = cfg.layer_slms[-1].name
    acq.show({last: lenslet_map(geom, geom.distance_to_detector_m(last), (0, 128))})
    acq.auto_expose("figure")
    spots, _ = acq.grab(2)
    acq.show({})
    acq.auto_expose("figure")
    flat, _ = acq.grab(2)
    acq.light(False)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    axes[0].imshow(spots, cmap="inferno")
    axes[0].set_title(f"zone-plate lenslets on {last}")
    axes[1].imshow(flat, cmap="gray")
    axes[1].plot(corners[:, 0], corners[:, 1], "c-", lw=0.8)
    grid = np.array([[x, y] for x in range(10, reg.neurons[1], 20) for y in range(10, reg.neurons[0], 20)])
    cam = reg.to_camera(grid)
    axes[1].plot(cam[:, 0], cam[:, 1], "c+", ms=5)
    axes[1].set_title("flat field, registered detector plane")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(out / "calibration_registration.png", dpi=80)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", default="sim")
    ap.add_argument("--slm", action="append", help="SLM(s) to calibrate (default: all)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--figures", type=Path, help="also write the docs figures (PNG) into this folder")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_bench(args.bench)
    geom = geometry_of(cfg)
    names = args.slm or [cfg.input_slm.name, *(s.name for s in cfg.layer_slms)]
    rows = []
    results = {}
    with open_bench(cfg) as bench:
        acq = Acquisition(bench.camera, bench.laser, bench.shutter, bench.slms, {cfg.input_slm.name: 255})
        t0 = time.perf_counter()
        frames0 = acq.frames
        reg = register_camera(acq, geom, [s.name for s in cfg.layer_slms][-2:])
        reg_wall = time.perf_counter() - t0
        truth = truth_registration(bench)
        pts = np.array([[x, y] for x in np.linspace(0, reg.neurons[1], 11) for y in np.linspace(0, reg.neurons[0], 11)])
        err = np.linalg.norm(reg.to_camera(pts) - (pts @ truth[:, :2].T + truth[:, 2]), axis=1)
        registration = {"frames": acq.frames - frames0, "wall_s": reg_wall, "error_rms_px": float(np.sqrt(np.mean(err**2))),
                        "error_max_px": float(err.max())}
        for name in names:
            base = baseline_sweep(bench, name, geom.shape)
            resp = measure_response(acq, geom, name, reg)
            results[name] = resp
            settle = bench.slms[name].settle_s
            goal = 256 * (settle + 2 * resp.exposure_s)
            tp, ta = truth_response(cfg, name)
            rows.append({
                "slm": name, "frames": resp.frames, "bench_time_s": resp.bench_time_s, "goal_bench_time_s": goal,
                "wall_s": resp.wall_time_s, "baseline_wall_s": base, "wall_ratio": resp.wall_time_s / base,
                "phase_rms_rad": float(np.sqrt(np.mean((resp.phase_rad - tp) ** 2))),
                "amplitude_rms": float(np.sqrt(np.mean((resp.amplitude - ta) ** 2))),
                "phase_std_median_rad": float(np.median(resp.phase_std_rad[1:])),
                "transition_width_px": resp.diagnostics["transition_width_px"],
                "split_line_offset_px": resp.diagnostics["split_line_offset_px"],
            })
        if args.figures:
            figures(args.figures, bench, geom, reg, results, cfg)
    if args.json:
        print(json.dumps({"registration": registration, "slms": rows}, indent=2))
        return
    print(f"registration: {registration['frames']} frames, {registration['wall_s']:.1f} s wall, error vs truth "
          f"{registration['error_rms_px']:.3f} px rms / {registration['error_max_px']:.3f} px max")
    print()
    print("| SLM | frames | bench time s | goal s | wall s | bare sweep s | wall / bare | phase RMS rad | amplitude RMS |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['slm']} | {r['frames']} | {r['bench_time_s']:.3f} | {r['goal_bench_time_s']:.3f} | "
              f"{r['wall_s']:.1f} | {r['baseline_wall_s']:.1f} | {r['wall_ratio']:.2f} | {r['phase_rms_rad']:.4f} | "
              f"{r['amplitude_rms']:.4f} |")


if __name__ == "__main__":
    main()
