"""Time per simulated camera frame at the shipped `sim` bench preset, against a bare FFT baseline.

Run:  .venv/bin/python benchmarks/sim_camera.py [--bench sim] [--n 50] [--threads 1]

Reported (medians of ``--n`` frames, measured in this one run):
- cold frame: one layer SLM gets a new map, then ``camera.grab()`` — the whole beam
  path is re-propagated (what calibration and deployment pay per image);
- warm frame: ``camera.grab()`` with nothing changed (the detector intensity is
  cached, only the sensor rendering and noise are new);
- ``slm.show`` alone (response lookup, fringing, plane misalignment);
- baseline: one bare ``torch.fft.fft2`` + ``ifft2`` pair on the padded field
  (2N x 2N complex64), the irreducible core of one propagation step.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.slm import upsample_map  # noqa: E402
from labctl.bench import open_bench  # noqa: E402
from labctl.config import load_bench  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", default="sim")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: leave torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_bench(args.bench)
    rng = np.random.default_rng(0)
    rows, cols = cfg.input_slm.roi[3], cfg.input_slm.roi[2]
    padded = torch.ones((rows * cfg.pad_factor, cols * cfg.pad_factor), dtype=torch.complex64)
    maps = [upsample_map(rng.integers(0, 256, cfg.size, dtype=np.uint8), cfg.input_slm.upsample) for _ in range(8)]

    def fft_pair() -> None:
        torch.fft.ifft2(torch.fft.fft2(padded))

    # Interleaved, so that the baseline and the frames see the same machine load.
    t_fft, t_cold, t_warm, t_show = [], [], [], []
    with open_bench(cfg) as b:
        b.laser.on()
        if b.shutter is not None:
            b.shutter.open()
        b.input_slm.show(np.full(b.input_slm.shape, 255, np.uint8))
        for s in b.layer_slms:
            s.show(maps[0])
        for i in range(args.n + 5):
            t0 = time.perf_counter()
            fft_pair()
            t1 = time.perf_counter()
            b.layer_slms[0].show(maps[i % len(maps)])
            b.camera.grab()
            t2 = time.perf_counter()
            b.camera.grab()
            t3 = time.perf_counter()
            b.layer_slms[1].show(maps[(i + 3) % len(maps)])
            t4 = time.perf_counter()
            if i >= 5:  # warm-up: transfer functions get cached
                t_fft.append(t1 - t0)
                t_cold.append(t2 - t1)
                t_warm.append(t3 - t2)
                t_show.append(t4 - t3)
    t_fft, t_cold, t_warm, t_show = (statistics.median(v) * 1e3 for v in (t_fft, t_cold, t_warm, t_show))
    n_prop = len(cfg.distances_m)

    print(f"bench {cfg.name}: ROI {rows}x{cols} SLM px, pad {cfg.pad_factor}, {n_prop} propagations, "
          f"camera {cfg.camera.resolution[0]}x{cfg.camera.resolution[1]}; torch threads {torch.get_num_threads()}; "
          f"{platform.processor() or platform.machine()}")
    print("| measurement | median ms | ratio to one bare FFT pair |")
    print("|---|---:|---:|")
    print(f"| bare fft2+ifft2, {rows * cfg.pad_factor}x{cols * cfg.pad_factor} complex64 (baseline) | {t_fft:.3f} | 1.0 |")
    print(f"| `slm.show` on a simulated layer | {t_show:.3f} | {t_show / t_fft:.1f} |")
    print(f"| cold frame (new layer map + grab) | {t_cold:.3f} | {t_cold / t_fft:.1f} |")
    print(f"| warm frame (grab, maps unchanged) | {t_warm:.3f} | {t_warm / t_fft:.1f} |")
    print(f"cold frame / ({n_prop} bare FFT pairs) = {t_cold / (n_prop * t_fft):.2f}; goal <= 20 ms per frame: "
          f"{'met' if t_cold <= 20 else 'NOT met'}")


if __name__ == "__main__":
    main()
