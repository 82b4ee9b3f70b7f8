"""The bench-vs-twin gap on a misaligned simulated bench, and what closes it.

Bench: experiments/benches/misaligned.toml (50x50 neurons, 3 layers shifted by about
a neuron and turned by about a degree; the plain twin knows none of it). Stages, each
a labctl command (printed and logged), each skipped when its output exists:

1. calibrations: SLM responses + camera registration (tests/labctl/hil_support.py)
2. plain:   labctl train on the nominal twin → labctl deploy → captured vs twin
3. refined: labctl refine → labctl train --twin → labctl deploy
4. in-situ: labctl train --in-situ (from the plain model) → labctl deploy

Results: OUT/results.csv and OUT/results.md (accuracy of twin and bench on the same
test images, gap, bench frames each approach used).

    .venv/bin/python experiments/hil_gap.py [--out experiments/results/hil_gap] [--epochs 6] [--limit 500]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from labctl.config import load_bench  # noqa: E402
from tests.labctl.hil_support import MISALIGNED, free_endpoint, make_calibrations  # noqa: E402

LABCTL = [sys.executable, "-m", "labctl"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(args: list[str]) -> None:
    shown = " ".join(["labctl", *args])
    log(f"$ {shown}")
    t0 = time.time()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    subprocess.run([*LABCTL, *args], check=True, cwd=ROOT, env=env)
    log(f"  done in {time.time() - t0:.0f} s")


def report(run_parent: Path) -> dict:
    runs = sorted(p for p in run_parent.iterdir() if (p / "report.json").is_file())
    return json.loads((runs[-1] / "report.json").read_text())["metrics"] if runs else {}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "hil_gap")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--limit", type=int, default=500, help="test images deployed per approach")
    ap.add_argument("--sets", type=int, default=4)
    ap.add_argument("--inputs", type=int, default=8)
    ap.add_argument("--insitu-epochs", type=int, default=16)
    ap.add_argument("--insitu-images", type=int, default=512)
    ap.add_argument("--insitu-lr", type=float, default=0.1)
    ap.add_argument("--stages", default="plain,refined,insitu,insitu-refined")
    ap.add_argument("--bench", type=Path, default=MISALIGNED, help="bench file (default: the misaligned bench)")
    a = ap.parse_args()
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    bench = str(a.bench.resolve())
    bench_name = load_bench(bench).name
    cal = out / "calibrations"
    models = out / "models"
    if not (cal / "registration.json").is_file():
        log("calibrations: SLM responses and camera registration")
        make_calibrations(bench, cal)
    cal_args = [x for s in ("slm1", "slm2", "slm3") for x in ("--calibration", str(cal / f"{s}.cal.json"))]
    # Pinned: the documented runs predate shift augmentation, label smoothing and averaging as defaults.
    common = ["--bench", bench, *cal_args, "--out", str(models), "--threads", "1", "--augment-shift", "0",
              "--label-smoothing", "0", "--average", "0"]
    stages = a.stages.split(",")
    endpoint = free_endpoint()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([*LABCTL, "serve", "--bench", bench, "--bind", endpoint], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=open(out / "serve.log", "a"))
    rows: list[dict] = []
    try:
        time.sleep(5)

        def deploy(model: str) -> dict:
            runs = out / "runs" / model
            if not report_ok(runs):
                runs.mkdir(parents=True, exist_ok=True)
                run(["deploy", str(models / model), "--endpoint", endpoint, "--bench", bench, "--calibrations",
                     str(cal), "--limit", str(a.limit), "--out", str(runs), "--timeout", "60"])
            return report(runs)

        def report_ok(runs: Path) -> bool:
            return runs.is_dir() and bool(report(runs))

        if "plain" in stages or "insitu" in stages:
            if not (models / "plain" / "model.json").is_file():
                run(["train", *common, "--name", "plain", "--epochs", str(a.epochs)])
        if "plain" in stages:
            m = deploy("plain")
            rows.append(_row("plain twin", m, 0))
            _write(out, rows)
        if "refined" in stages:
            twin = cal / f"{bench_name}.twin.json"
            if not twin.is_file():
                run(["refine", "--endpoint", endpoint, "--bench", bench, "--calibrations", str(cal), "--sets",
                     str(a.sets), "--inputs", str(a.inputs)])
            frames = json.loads(twin.read_text())["source"]["bench_frames"]
            if not (models / "refined" / "model.json").is_file():
                run(["train", *common, "--name", "refined", "--epochs", str(a.epochs), "--twin", str(twin)])
            m = deploy("refined")
            rows.append(_row("refined twin", m, frames))
            _write(out, rows)
        if "insitu" in stages:
            if not (models / "insitu" / "model.json").is_file():
                run(["train", *common, "--name", "insitu", "--epochs", str(a.insitu_epochs), "--in-situ", endpoint,
                     "--init", str(models / "plain"), "--images", str(a.insitu_images), "--resume"])
            meta = json.loads((models / "insitu" / "model.json").read_text())
            m = deploy("insitu")
            rows.append(_row("in-situ training (plain twin backward)", m, int(meta["training"].get("bench_frames", 0))))
            _write(out, rows)
        if "insitu-refined" in stages:
            twin = cal / f"{bench_name}.twin.json"
            name = "insitu-refined" if a.insitu_lr == 0.1 else f"insitu-refined-lr{a.insitu_lr:g}"
            if not (models / name / "model.json").is_file():
                run(["train", *common, "--name", name, "--epochs", str(a.insitu_epochs), "--in-situ",
                     endpoint, "--init", str(models / "refined"), "--twin", str(twin), "--images",
                     str(a.insitu_images), "--lr", str(a.insitu_lr), "--resume"])
            meta = json.loads((models / name / "model.json").read_text())
            refine_frames = json.loads(twin.read_text())["source"]["bench_frames"]
            m = deploy(name)
            rows.append(_row(f"refined twin + in-situ (lr {a.insitu_lr:g})", m,
                             refine_frames + int(meta["training"].get("bench_frames", 0))))
            _write(out, rows)
    finally:
        server.terminate()
        server.wait(timeout=60)
    log(f"results in {out / 'results.md'}")


def _row(name: str, m: dict, frames: int) -> dict:
    twin, cap = m.get("accuracy_twin"), m.get("accuracy_captured")
    return {"approach": name, "images": m.get("images"), "twin_accuracy": twin, "captured_accuracy": cap,
            "gap_points": None if twin is None or cap is None else round(100 * (twin - cap), 2),
            "agreement": m.get("agreement"), "bench_frames_training": frames}


def _write(out: Path, rows: list[dict]) -> None:
    # Rows of earlier invocations (other stages) stay; this run's rows replace theirs.
    old = []
    if (out / "results.csv").is_file():
        with open(out / "results.csv", newline="") as f:
            old = [r for r in csv.DictReader(f) if r["approach"] not in {x["approach"] for x in rows}]
        for r in old:
            for k in ("twin_accuracy", "captured_accuracy", "gap_points", "agreement"):
                r[k] = float(r[k])
    order = ["plain twin", "refined twin", "in-situ training (plain twin backward)"]
    rows = sorted(old + rows, key=lambda r: (order.index(r["approach"]) if r["approach"] in order else 99,
                                             r["approach"]))
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = ["| approach | test images | twin accuracy | captured accuracy | gap (points) | agreement | "
             "bench frames before deploy |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['approach']} | {r['images']} | {r['twin_accuracy']:.4f} | {r['captured_accuracy']:.4f} | "
                     f"{r['gap_points']:+.1f} | {r['agreement']:.4f} | {r['bench_frames_training']} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    log("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
