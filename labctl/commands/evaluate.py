"""``labctl evaluate MODEL``: re-simulate a model from its two artifact files and report
its accuracy (and, on request, the ICCAD'22 Table-1 confidence study)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from labctl.errors import UsageError


@click.command(help="Re-simulate MODEL (a folder with model.json + layers.npz) on the twin and report test "
                    "accuracy; the dataset and split are the ones recorded in model.json unless overridden.")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--dataset", type=click.Choice(["mnist-5k", "mnist", "fashion-mnist"]), default=None,
              help="Evaluate on another dataset than the one the model was trained on.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder with the IDX files of mnist / fashion-mnist.")
@click.option("--confidence", is_flag=True,
              help="Also run the confidence study: take 1/3/5 %% from the top softmax probability of each "
                   "correct sample, spread it over the other classes, report the accuracy.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def evaluate(model: Path, dataset: str | None, data_dir: str | None, confidence: bool, as_json: bool) -> None:
    from sims.artifact import load_model
    from sims.data import load_dataset
    from sims.train import accuracy, confidence_study, model_from_layers, predict_scores

    if not model.exists():
        raise UsageError(f"{model}: no such model folder")
    loaded = load_model(model)
    training = loaded.meta.get("training") if isinstance(loaded.meta.get("training"), dict) else {}
    name = dataset or training.get("dataset") or "mnist-5k"
    folder = data_dir
    if name != "mnist-5k" and folder is None:
        folder = f"data/{name}"
    data = load_dataset(name, folder)
    donn = model_from_layers(loaded.geometry, loaded.gray, loaded.transmission, loaded.levels)
    scores = predict_scores(donn, data.test_images)
    acc = accuracy(scores, data.test_labels)
    stored = (loaded.meta.get("metrics") or {}).get("test_accuracy")
    report: dict = {"model": str(loaded.path), "dataset": data.name, "test_samples": int(len(data.test_labels)),
                    "test_accuracy": acc, "stored_test_accuracy": stored}
    if confidence:
        scale = float(training.get("softmax_scale", 10.0))
        report["confidence"] = confidence_study(scores, data.test_labels, softmax_scale=scale)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    line = f"{loaded.path}: test accuracy {acc:.4f} on {report['test_samples']} {data.name} images"
    if stored is not None and name == training.get("dataset"):
        line += f" (stored: {stored:.4f}{', reproduced' if abs(stored - acc) < 1e-9 else ', DIFFERS'})"
    click.echo(line)
    if confidence:
        for drop, value in report["confidence"].items():
            click.echo(f"  confidence -{drop}: accuracy {value:.4f}")
