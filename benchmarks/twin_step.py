"""Training step time of the digital twin vs a bare FFT loop, measured in the same run.

For the `bench` and `iccad22` presets, batch 32, with pad_factor 1 and 2: one Adam
training step (forward, cross-entropy on the detector scores, backward, update) of

* twin-gs / twin-full: ``sims.donn.DONN`` with Gumbel-Softmax / full-precision layers;
* bare: the same physics written as one loop on the padded field —
  ``u *= exp(iφ_l)`` (mask zero-padded), ``fft2``, ``* H``, ``ifft2`` — with phase
  parameters only. This is the floor a hand-written training loop reaches.

One process per configuration builds all three and times them step by step in
rounds (GS, full, bare, GS, ...), so each round's ratio compares steps taken under the
same machine load; the figure is the median ratio over the rounds, with its
quartiles. Peak memory is the growth of the resident set (VmHWM after reset) of a
separate child process per kind.

    .venv/bin/python benchmarks/twin_step.py [--repeats 30] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time

RESULT_KEYS = ("twin-gs", "twin-full", "bare")


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        pass


def _stepper(preset: str, pad: int, kind: str, threads: int):
    """One Adam training step of ``kind`` on ``preset`` with ``pad``, as a closure."""
    import dataclasses

    import torch
    import torch.nn.functional as F

    from sims.device import load_response, select_levels
    from sims.donn import DONN, preset as get_preset
    from sims.optics import transfer_function
    from sims.quantizers import FullPrecision, GumbelSoftmax

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    geo = dataclasses.replace(get_preset(preset), pad_factor=pad)
    n = geo.size
    levels = select_levels(load_response(os.path.join(os.path.dirname(__file__), "..", "labctl", "benches",
                                                      "layer_a.response.json")), 8)
    images = torch.randint(0, 256, (32, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, geo.classes, (32,))

    if kind == "bare":
        m = n * pad
        off = (m - n) // 2
        hs = [transfer_function((n, n), d, geo.pitch_m, geo.wavelength_m, method=geo.method, pad_factor=pad)
              for d in geo.distances_m]
        phases = [torch.nn.Parameter(torch.rand(n, n) * 6.28) for _ in range(geo.layers)]
        opt = torch.optim.Adam(phases, lr=0.1)
        x = images.float()[:, None] / 255
        x = F.interpolate(x, size=(geo.input_size,) * 2, mode="bilinear", align_corners=False)[:, 0]
        start = off + (n - geo.input_size) // 2
        u0 = torch.zeros(32, m, m, dtype=torch.complex64)
        u0[:, start:start + geo.input_size, start:start + geo.input_size] = x

        def step() -> None:
            u = torch.fft.ifft2(torch.fft.fft2(u0) * hs[0])
            for phi, h in zip(phases, hs[1:]):
                mask = F.pad(torch.polar(torch.ones_like(phi), phi), (off, m - n - off, off, m - n - off))
                u = torch.fft.ifft2(torch.fft.fft2(u * mask) * h)
            inten = u.abs() ** 2
            scores = torch.stack([inten[:, off + r:off + r + hh, off + c:off + c + ww].sum(dim=(1, 2))
                                  for r, c, hh, ww in geo.regions], dim=1)
            loss = F.cross_entropy(10 * scores / scores.sum(-1, keepdim=True), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return step
    cls = GumbelSoftmax if kind == "twin-gs" else FullPrecision
    model = DONN(geo, [cls((n, n), levels) for _ in range(geo.layers)]).train()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)

    def step() -> None:
        scores = model(images)
        loss = F.cross_entropy(10 * scores / scores.sum(-1, keepdim=True), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def _run_timing(preset: str, pad: int, repeats: int, threads: int, queue) -> None:
    """Step times of the three kinds, interleaved step by step in one process: each
    round times twin-gs, twin-full and bare back to back, so a change of machine load
    hits all three, and the ratio of each round pairs like with like."""
    steps = {k: _stepper(preset, pad, k, threads) for k in RESULT_KEYS}
    for step in steps.values():
        step()  # warm-up: caches, allocator, transfer functions
    ms: dict[str, list[float]] = {k: [] for k in RESULT_KEYS}
    for _ in range(repeats):
        for k, step in steps.items():
            t0 = time.perf_counter()
            step()
            ms[k].append(1000 * (time.perf_counter() - t0))
    queue.put(ms)


def _run_memory(preset: str, pad: int, kind: str, threads: int, queue) -> None:
    """Peak resident-set growth of one kind's training step, alone in its process."""
    step = _stepper(preset, pad, kind, threads)
    step()
    base = _rss_kib("VmRSS")
    _reset_peak()
    step()
    step()
    queue.put((_rss_kib("VmHWM") - base) / 1024)


def _in_child(target, *args):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    out = q.get()
    p.join()
    return out


def _quartiles(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return q[0], q[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=30, help="interleaved rounds (one timed step of each kind)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--presets", default="bench,iccad22")
    ap.add_argument("--json", dest="json_out", default=None)
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    rows = []
    for preset in args.presets.split(","):
        for pad in (1, 2):
            ms = _in_child(_run_timing, preset, pad, args.repeats, args.threads)
            peaks = {k: _in_child(_run_memory, preset, pad, k, args.threads) for k in RESULT_KEYS}
            ratios_gs = [g / b for g, b in zip(ms["twin-gs"], ms["bare"])]
            ratios_full = [f / b for f, b in zip(ms["twin-full"], ms["bare"])]
            row = {"preset": preset, "pad_factor": pad,
                   **{f"{k}_ms": round(statistics.median(v), 1) for k, v in ms.items()},
                   "gs_over_bare": round(statistics.median(ratios_gs), 2),
                   "gs_over_bare_iqr": [round(q, 2) for q in _quartiles(ratios_gs)],
                   "full_over_bare": round(statistics.median(ratios_full), 2),
                   **{f"{k}_peak_mib": round(v, 1) for k, v in peaks.items()}}
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {"threads": args.threads, "batch": 32, "loadavg_1min_before": round(load_before, 2),
               "loadavg_1min_after": round(os.getloadavg()[0], 2), "rows": rows}
    print("| preset | pad | twin GS ms/step | twin full ms/step | bare loop ms/step | GS / bare (quartiles) "
          "| full / bare | peak MiB GS / full / bare |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        lo, hi = r["gs_over_bare_iqr"]
        print(f"| {r['preset']} | {r['pad_factor']}× | {r['twin-gs_ms']} | {r['twin-full_ms']} | {r['bare_ms']} | "
              f"{r['gs_over_bare']} ({lo}–{hi}) | {r['full_over_bare']} | {r['twin-gs_peak_mib']:.0f} / "
              f"{r['twin-full_peak_mib']:.0f} / {r['bare_peak_mib']:.0f} |")
    print(f"load average (1 min) before/after: {summary['loadavg_1min_before']} / {summary['loadavg_1min_after']}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
