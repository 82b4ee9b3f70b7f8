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

Each bench is compared with up to three twins of the same model: the model's own
(what deploy predicts with), the SLM-pixel twin with nominal alignment
(``--crosstalk SIGMA``: 2×2 pixels per neuron, Gaussian crosstalk of SIGMA pixels)
and a refined twin (``--refined FILE`` from ``labctl refine``).

    .venv/bin/python benchmarks/deploy_fidelity.py --model demo/models/demo-gs \
        --calibrations demo/calibrations --images 300 [--crosstalk 0.6] [--refined FILE]
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


def corrected_twin(plan, crosstalk_px: float, refined: Path | None):
    """The model on the SLM-pixel grid: nominal alignment with ``crosstalk_px``, or the
    refined twin file ``refined``. A model trained on a refined twin is rebuilt plain first."""
    import dataclasses

    from sims.refine import TwinCorrections, apply_twin, load_twin
    from sims.train import model_from_layers

    m = plan.model
    model = model_from_layers(m.geometry, m.gray, m.transmission, m.levels)
    if refined is not None:
        corrections = load_twin(refined)[0]
    else:
        upsample = plan.bench.layer_slms[0].upsample
        corrections = dataclasses.replace(TwinCorrections.identity(m.geometry.layers, oversample=upsample),
                                          fringing_px=crosstalk_px)
    return apply_twin(model, corrections)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("demo/models/demo-gs"))
    ap.add_argument("--calibrations", type=Path, default=Path("demo/calibrations"))
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--exposure", type=float, default=2.5e-3, help="camera exposure, seconds (no saturation)")
    ap.add_argument("--crosstalk", type=float, default=None,
                    help="also compare with the SLM-pixel twin, crosstalk sigma in SLM pixels")
    ap.add_argument("--refined", type=Path, default=None, help="also compare with this refined twin file")
    ap.add_argument("--benches", default=None, help="comma-separated subset of the bench variants (default all)")
    args = ap.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from labctl.deploy.plan import build_twin, make_plan, twin_scores
    from labctl.deploy.regions import camera_regions
    from labctl.deploy.report import pearson

    names = args.benches.split(",") if args.benches else list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown bench variant(s) {unknown}; expected some of {list(VARIANTS)}")
    plan = make_plan(args.model, "sim", args.calibrations, args.images)
    rects = camera_regions(plan.registration, plan.model.geometry.regions)
    twins = {"model's own": twin_scores(build_twin(plan), plan.images)}
    if args.crosstalk is not None:
        twins[f"SLM pixels, crosstalk {args.crosstalk:g}"] = twin_scores(
            corrected_twin(plan, args.crosstalk, None), plan.images)
    if args.refined is not None:
        twins["refined"] = twin_scores(corrected_twin(plan, 0.0, args.refined), plan.images)
    norm = lambda a: a / a.sum(1, keepdims=True)  # noqa: E731
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            truth, slm = VARIANTS[name]
            folder = Path(tmp) / re.sub(r"\W+", "-", name)
            folder.mkdir()
            cap = measure(variant_bench(folder, truth, slm), plan, rects, args.exposure)
            for twin_name, twin in twins.items():
                rows.append({
                    "bench": name, "twin": twin_name,
                    "agreement": round(float((cap.argmax(1) == twin.argmax(1)).mean()), 4),
                    "pearson_r": round(float(pearson(norm(cap), norm(twin))), 4),
                    "accuracy_captured": round(float((cap.argmax(1) == plan.labels).mean()), 4),
                    "accuracy_twin": round(float((twin.argmax(1) == plan.labels).mean()), 4),
                })
                print(json.dumps(rows[-1]), flush=True)
    print("\n| simulated bench | twin | agreement | Pearson r | accuracy bench | accuracy twin |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['bench']} | {r['twin']} | {r['agreement']:.3f} | {r['pearson_r']:.3f} | "
              f"{r['accuracy_captured']:.3f} | {r['accuracy_twin']:.3f} |")
    print(f"\n{args.images} test images, model {args.model}, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
