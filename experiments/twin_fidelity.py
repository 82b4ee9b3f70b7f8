"""How well does a twin predict what the bench captured? Re-predict a finished deploy run.

For every image of a deploy run (records.jsonl: dataset index, label, captured
scores) the model is re-simulated with the plain twin and with refined twin files,
and each twin's predictions are compared with the captured ones: accuracy the twin
promises vs accuracy captured, and agreement (same predicted class). A twin that
knows the bench predicts the captured accuracy, right or wrong.

    .venv/bin/python experiments/twin_fidelity.py RUN_DIR [TWIN.json ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sims.artifact import load_model  # noqa: E402
from sims.data import load_dataset  # noqa: E402
from sims.refine import apply_twin, load_twin  # noqa: E402
from sims.train import model_from_layers, predict_scores  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    run = Path(sys.argv[1])
    meta = json.loads((run / "run.json").read_text())
    recs = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines() if line.strip()]
    data = load_dataset("mnist-5k")
    pos = np.array([r["dataset_index"] // 5 for r in recs])
    images, labels = data.test_images[pos], np.array([r["label"] for r in recs])
    captured = np.array([int(np.argmax(r["captured"])) for r in recs])
    m = load_model(meta["model"]["path"])
    print(f"{run.name}: {len(recs)} images, captured accuracy {np.mean(captured == labels):.4f}")
    print("| twin | twin accuracy | captured accuracy | agreement with captured |")
    print("|---|---|---|---|")
    for spec in ["plain", *sys.argv[2:]]:
        model = model_from_layers(m.geometry, m.gray, m.transmission, m.levels)
        if spec != "plain":
            apply_twin(model, load_twin(spec)[0])
        pred = predict_scores(model, images).argmax(-1).numpy()
        print(f"| {spec if spec == 'plain' else Path(spec).name} | {np.mean(pred == labels):.4f} | "
              f"{np.mean(captured == labels):.4f} | {np.mean(pred == captured):.4f} |")


if __name__ == "__main__":
    main()
