"""Where bench and twin part ways: the deploy comparison with the simulated bench's
non-idealities switched off one group at a time.

The shipped simulated bench (labctl/benches/sim.toml) hides, per SLM, a pixel
crosstalk blur (``fringing_px``), a misalignment (``shift_px``, ``rotation_deg``), a
measured-like response, and camera/laser noise. The twin models none of the first
two. For each variant of the bench file this script shows the model's layers on the
bench's own devices (in process, no server: the protocol is not what is measured),
grabs a frame per test digit, sums the detector rectangles exactly as deploy does,
and compares with the twin: agreement of the predicted class, Pearson r of the
normalized scores, accuracies.

    .venv/bin/python benchmarks/deploy_fidelity.py --model demo/models/demo-gs \
        --calibrations demo/calibrations --images 300
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

ALIGNED = {"fringing_px": "0.0", "shift_px": "[0.0, 0.0]", "rotation_deg": "0.0"}
# (changes to every [slm.truth], changes to every [[slm]]) per variant
VARIANTS = {
    "shipped sim bench": ({}, {}),
    "no fringing": ({"fringing_px": "0.0"}, {}),
    "no misalignment": ({"shift_px": "[0.0, 0.0]", "rotation_deg": "0.0"}, {}),
    "no fringing, no misalignment": (ALIGNED, {}),
    # One SLM pixel per neuron: the bench then propagates on the twin's own grid.
    "as above, and 72 um SLM pixels (twin's sampling)": (
        ALIGNED, {"pitch_m": "72e-6", "roi": "[860, 440, 100, 100]", "upsample": "1"}),
}


def variant_bench(folder: Path, truth: dict[str, str], slm: dict[str, str]) -> Path:
    """A copy of the shipped bench file with ``truth`` changes in every [slm.truth] table
    and ``slm`` changes in every [[slm]] table."""
    from labctl.config import builtin_bench_path

    src = builtin_bench_path("sim")
    for f in src.parent.glob("*.response.json"):
        shutil.copyfile(f, folder / f.name)
    out, table = [], ""
    for line in src.read_text().splitlines():
        head = re.match(r"\s*\[+([^\]]+)\]+", line)
        if head:
            table = head.group(1).strip()
        key = re.match(r"\s*([A-Za-z_]+)\s*=", line)
        changes = truth if table == "slm.truth" else slm if table == "slm" else {}
        if key and key.group(1) in changes:
            line = f"{key.group(1)} = {changes[key.group(1)]}"
        out.append(line)
    path = folder / "bench.toml"
    path.write_text("\n".join(out) + "\n")
    return path


def measure(bench_path: Path, plan, rects, exposure_s: float):
    import dataclasses

    import numpy as np

    from drivers.slm import upsample_map
    from labctl.bench import open_bench
    from labctl.config import load_bench

    cfg = load_bench(bench_path)
    encoder = dataclasses.replace(plan.encoder, upsample=cfg.input_slm.upsample)
    maps = encoder.encode(plan.images)
    scores = np.zeros((plan.total, len(rects)))
    with open_bench(cfg) as bench:
        for s, gray in zip(cfg.layer_slms, plan.model.gray):
            bench.slms[s.name].show(upsample_map(gray, s.upsample))
        bench.laser.on()
        bench.camera.exposure_s = exposure_s
        bench.shutter.close()
        bench.camera.set_dark(bench.camera.grab(8))
        bench.shutter.open()
        for k, m in enumerate(maps):
            bench.input_slm.show(m)
            frame = bench.camera.grab().data
            scores[k] = [frame[r:r + h, c:c + w].sum(dtype=np.float64) for r, c, h, w in rects]
    return scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("demo/models/demo-gs"))
    ap.add_argument("--calibrations", type=Path, default=Path("demo/calibrations"))
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--exposure", type=float, default=2.5e-3, help="camera exposure, seconds (no saturation)")
    args = ap.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from labctl.deploy.plan import build_twin, make_plan, twin_scores
    from labctl.deploy.regions import camera_regions
    from labctl.deploy.report import pearson

    plan = make_plan(args.model, "sim", args.calibrations, args.images)
    rects = camera_regions(plan.registration, plan.model.geometry.regions)
    twin = twin_scores(build_twin(plan), plan.images)
    norm = lambda a: a / a.sum(1, keepdims=True)  # noqa: E731
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (truth, slm) in VARIANTS.items():
            folder = Path(tmp) / re.sub(r"\W+", "-", name)
            folder.mkdir()
            cap = measure(variant_bench(folder, truth, slm), plan, rects, args.exposure)
            rows.append({
                "bench": name,
                "agreement": round(float((cap.argmax(1) == twin.argmax(1)).mean()), 4),
                "pearson_r": round(float(pearson(norm(cap), norm(twin))), 4),
                "accuracy_captured": round(float((cap.argmax(1) == plan.labels).mean()), 4),
                "accuracy_twin": round(float((twin.argmax(1) == plan.labels).mean()), 4),
            })
            print(json.dumps(rows[-1]), flush=True)
    print("\n| simulated bench | agreement | Pearson r | accuracy bench | accuracy twin |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['bench']} | {r['agreement']:.3f} | {r['pearson_r']:.3f} | {r['accuracy_captured']:.3f} | "
              f"{r['accuracy_twin']:.3f} |")
    print(f"\n{args.images} test images, model {args.model}, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
