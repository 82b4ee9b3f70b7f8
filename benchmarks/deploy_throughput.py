"""Deploy throughput on the simulated bench, against the bare device rate measured in the same run.

Baseline: in this process, the simulated bench's own devices — show an input map on
the input SLM, grab a frame — with no server, no protocol, no twin, no records.
Deploy: `labctl serve --bench sim` in a subprocess and a full deploy through it
(jobs, paging, the twin's prediction, one fsynced record per image).

    .venv/bin/python benchmarks/deploy_throughput.py --images 300

Without --model/--calibrations it builds throw-away ones (the simulated responses as
calibrations, a measured registration, an untrained block model): throughput does
not depend on what the model learned.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")


def baseline(plan, n: int) -> float:
    """Images per second of show + grab on the bare simulated devices."""
    from labctl.bench import open_bench

    maps = plan.encoder.encode(plan.images[:n])
    with open_bench(plan.bench) as bench:
        for slm, gray in plan.maps.items():
            bench.slms[slm].show(gray)
        bench.laser.on()
        bench.shutter.open()
        bench.input_slm.show(maps[0])
        bench.camera.grab()  # warm-up: transfer functions
        t0 = time.perf_counter()
        for m in maps:
            bench.input_slm.show(m)
            bench.camera.grab()
        return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=300, help="test images deployed")
    ap.add_argument("--baseline-images", type=int, default=100, help="images for the bare-device baseline")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--calibrations", type=Path, default=None)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from labctl.client import BenchClient
    from labctl.deploy.plan import make_plan
    from labctl.deploy.records import RUN_SCHEMA, RunDir
    from labctl.deploy.runner import DeployOptions, Deployment
    from tests.labctl.deploy_support import ServeProcess, make_calibrations, make_model

    work = Path(tempfile.mkdtemp(prefix="deploy-bench-"))
    cal = args.calibrations or make_calibrations(work / "calibrations")
    model = args.model or make_model(work / "model", cal)
    plan = make_plan(model, "sim", cal, args.images)

    # The machine is shared: the baseline is measured before and after the deploy.
    base_before = baseline(plan, args.baseline_images)

    server = ServeProcess()
    times: list[float] = []
    try:
        run = RunDir(work / "run")
        run.path.mkdir()
        meta = {"schema": RUN_SCHEMA, "model": {"name": plan.model_name}, "bench": {"name": "sim"},
                "dataset": {"images": plan.total}, "started": None}
        t0 = time.perf_counter()
        with BenchClient(server.endpoint, timeout_s=10) as client:
            Deployment(plan, run, meta, client, DeployOptions(batch=args.batch), echo=lambda s: None,
                       on_record=lambda r: times.append(time.perf_counter())).execute()
        total_s = time.perf_counter() - t0
    finally:
        server.stop()
    base_after = baseline(plan, args.baseline_images)
    base = (base_before + base_after) / 2
    steady = (len(times) - 1) / (times[-1] - times[0])
    result = {
        "images": plan.total,
        "baseline_show_grab_images_per_s": [round(base_before, 2), round(base_after, 2)],
        "deploy_steady_images_per_s": round(steady, 2),
        "deploy_steady_vs_baseline_mean": round(steady / base, 3),
        "deploy_overall_images_per_s": round(plan.total / total_s, 2),
        "deploy_total_s_incl_setup_and_exposure": round(total_s, 2),
        "setup_s": round(times[0] - t0, 2),
        "load_average_1min": os.getloadavg()[0],
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
