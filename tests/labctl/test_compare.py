"""labctl compare: the report is rebuilt from a run's records alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from labctl.cli import main
from labctl.deploy.records import RUN_SCHEMA, RunDir


def _synthetic_run(folder: Path, n: int = 60, seed: int = 3) -> tuple[RunDir, np.ndarray, np.ndarray, np.ndarray]:
    """A run whose captured scores are the twin's plus noise, with some labels wrong on purpose."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    twin = rng.uniform(0.5, 1.5, (n, 10))
    twin[np.arange(n), labels] += 2.0
    twin[::7, (labels[::7] + 3) % 10] += 4.0  # every 7th image: the twin is wrong too
    captured = twin * rng.normal(1.0, 0.05, (n, 10)) * 1000.0
    captured[5, 9] += 5000.0  # one image the bench gets wrong alone
    run = RunDir(folder)
    run.path.mkdir(parents=True)
    run.write_meta({"schema": RUN_SCHEMA, "model": {"name": "synthetic"}, "bench": {"name": "sim"},
                    "status": "done", "dataset": {"images": n}, "exposure_s": 1e-3})
    run.open_for_append()
    for i in range(n):
        run.append({"index": i, "label": int(labels[i]), "captured": captured[i].tolist(), "twin": twin[i].tolist(),
                    "pred_captured": int(captured[i].argmax()), "pred_twin": int(twin[i].argmax()), "crc32": i,
                    "timestamp": 1000.0 + i * 0.05, "saturated": 0})
    run.close()
    frame = np.zeros((120, 160), np.float32)
    frame[40:60, 50:70] = 100.0
    run.write_examples([0, 1], [frame, frame * 2], [[40, 50, 20, 20], [40, 90, 20, 20]])
    return run, labels, captured, twin


def test_compare_rebuilds_the_report_from_records(tmp_path: Path, capsys):
    run, labels, captured, twin = _synthetic_run(tmp_path / "run")
    assert main(["compare", str(run.path)]) == 0
    out = capsys.readouterr().out
    assert f"report: {run.path / 'report.md'}" in out
    m = json.loads((run.path / "report.json").read_text())["metrics"]
    pc, pt = captured.argmax(1), twin.argmax(1)
    assert m["images"] == 60
    assert m["accuracy_captured"] == (pc == labels).mean()
    assert m["accuracy_twin"] == (pt == labels).mean()
    assert m["agreement"] == (pc == pt).mean() < 1.0
    nc = captured / captured.sum(1, keepdims=True)
    nt = twin / twin.sum(1, keepdims=True)
    assert abs(m["pearson_r"] - np.corrcoef(nc.ravel(), nt.ravel())[0, 1]) < 1e-12
    conf = np.array(m["confusion_captured"])
    assert conf.sum() == 60 and np.trace(conf) == (pc == labels).sum()
    assert m["disagreements"] == [i for i in range(60) if pc[i] != pt[i]]
    text = (run.path / "report.md").read_text()
    assert "| agreement (same predicted class) |" in text and "examples.png" in text
    for png in ("confusion.png", "scores.png", "examples.png"):
        assert (run.path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Deleting the report and running again gives the same numbers.
    first = (run.path / "report.json").read_text()
    for f in ("report.md", "report.json", "scores.png"):
        (run.path / f).unlink()
    assert main(["compare", str(run.path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["agreement"] == m["agreement"]
    assert (run.path / "report.json").read_text() == first


def test_compare_errors_are_one_line(tmp_path: Path, capsys):
    assert main(["compare", str(tmp_path / "missing")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    empty = RunDir(tmp_path / "empty")
    empty.path.mkdir()
    empty.write_meta({"schema": RUN_SCHEMA, "status": "running"})
    assert main(["compare", str(empty.path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no records" in err
    (tmp_path / "notarun").mkdir()
    assert main(["compare", str(tmp_path / "notarun")]) == 2
    assert "run.json" in capsys.readouterr().err
