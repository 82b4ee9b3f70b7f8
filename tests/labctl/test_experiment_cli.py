"""`labctl experiment`: grids, resume, reports, errors and the submitit engine."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from labctl.cli import main

RESPONSE = Path(__file__).resolve().parents[2] / "labctl" / "benches" / "layer_a.response.json"


def write_grid(path: Path, **overrides: object) -> Path:
    settings = {
        "name": "tiny", "preset": "tiny", "methods": ["ptq", "ste"], "levels": [2], "depths": [1],
        "seeds": [0, 1], "devices": ["ideal", "measured"], "calibration": [str(RESPONSE)], "epochs": 1,
        "train_images": 20, "test_images": 20, "batch_size": 10, "lr": 0.1,
    }
    settings.update(overrides)
    lines = ["[experiment]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def rows(out: Path) -> list[dict]:
    with open(out / "results.csv") as f:
        return list(csv.DictReader(f))


def test_grid_runs_resumes_and_reports(tmp_path, capsys) -> None:
    grid = write_grid(tmp_path / "g.toml")
    out = tmp_path / "out"
    assert main(["experiment", str(grid), "--out", str(out), "--workers", "1"]) == 0
    got = rows(out)
    assert len(got) == 8  # 2 methods × 2 devices × 2 seeds
    assert {r["method"] for r in got} == {"ptq", "ste"} and {r["device"] for r in got} == {"ideal", "measured"}
    assert all(0 <= float(r["test_accuracy"]) <= 1 for r in got)
    table = (out / "results.md").read_text()
    assert "| ptq | ideal | 2 | 1 | 2 |" in table and " ± " in table
    assert (out / "test_accuracy_ideal.png").stat().st_size > 1000
    assert (out / "bases" / "base_D1_s0.npz").is_file()  # PTQ comes from the full-precision base
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    capsys.readouterr()
    assert main(["experiment", str(grid), "--out", str(out)]) == 0
    assert "0 to run" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()} == stamps


def test_killed_grid_reruns_only_missing_cells(tmp_path) -> None:
    grid = write_grid(tmp_path / "g.toml", methods=["ste"], devices=["ideal"])
    out = tmp_path / "out"
    assert main(["experiment", str(grid), "--out", str(out), "--workers", "1"]) == 0
    first = json.loads((out / "cells" / "ste_ideal_L2_D1_s0.json").read_text())
    (out / "cells" / "ste_ideal_L2_D1_s1.json").unlink()  # as if killed before this cell finished
    assert main(["experiment", str(grid), "--out", str(out), "--workers", "1"]) == 0
    assert json.loads((out / "cells" / "ste_ideal_L2_D1_s0.json").read_text()) == first
    assert len(rows(out)) == 2


def test_changed_grid_is_refused_in_the_same_folder(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["experiment", str(write_grid(tmp_path / "a.toml", methods=["ptq"], devices=["ideal"],
                                               seeds=[0])), "--out", str(out)]) == 0
    capsys.readouterr()
    code = main(["experiment", str(write_grid(tmp_path / "b.toml", methods=["ptq"], devices=["ideal"], seeds=[0],
                                              lr=0.3)), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "different grid" in err and "lr" in err and "Traceback" not in err


@pytest.mark.parametrize("bad,message", [
    ({"methods": ["nope"]}, "unknown method"),
    ({"levels": ["eight"]}, "levels"),
    ({"devices": ["measured"], "calibration": []}, "calibration"),
    ({"kind": "spectral"}, "kind"),
    ({"epochs": 0}, "epochs"),
])
def test_bad_grids_are_one_line_errors(tmp_path, capsys, bad: dict, message: str) -> None:
    code = main(["experiment", str(write_grid(tmp_path / "g.toml", **bad)), "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_unknown_key_and_missing_file(tmp_path, capsys) -> None:
    path = tmp_path / "g.toml"
    path.write_text('[experiment]\nname = "x"\nmethod = ["gs"]\n')
    assert main(["experiment", str(path), "--dry-run"]) == 2
    assert "unknown grid key(s) method" in capsys.readouterr().err
    assert main(["experiment", str(tmp_path / "none.toml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_fc_grid(tmp_path) -> None:
    grid = write_grid(tmp_path / "fc.toml", kind="fc", methods=["ptq"], devices=["ideal"], activations=["linear", "sa"],
                      alphas=[1.0], seeds=[0], epochs=1, train_images=50, lr=5e-4)
    out = tmp_path / "out"
    assert main(["experiment", str(grid), "--out", str(out), "--workers", "1"]) == 0
    assert sorted(r["activation"] for r in rows(out)) == ["linear", "sa"]
    assert (out / "fc_alpha.png").is_file()


def test_submitit_debug_engine_matches_local_engine(tmp_path) -> None:
    pytest.importorskip("submitit")
    grid = write_grid(tmp_path / "g.toml", methods=["ste", "psq-lt"], devices=["ideal"], seeds=[3])
    assert main(["experiment", str(grid), "--out", str(tmp_path / "local"), "--workers", "1"]) == 0
    assert main(["experiment", str(grid), "--out", str(tmp_path / "sub"), "--engine", "submitit",
                 "--cluster", "debug"]) == 0
    local = {r["id"]: float(r["test_accuracy"]) for r in rows(tmp_path / "local")}
    sub = {r["id"]: float(r["test_accuracy"]) for r in rows(tmp_path / "sub")}
    assert local.keys() == sub.keys() and all(math.isclose(local[k], sub[k]) for k in local)


@pytest.mark.slow
def test_parallel_engines_local_processes_and_submitit_local_executor(tmp_path) -> None:
    pytest.importorskip("submitit")
    grid = write_grid(tmp_path / "g.toml", methods=["ste"], devices=["ideal"], seeds=[0, 1])
    assert main(["experiment", str(grid), "--out", str(tmp_path / "pool"), "--workers", "2"]) == 0
    assert main(["experiment", str(grid), "--out", str(tmp_path / "sub"), "--engine", "submitit",
                 "--cluster", "local", "--workers", "2"]) == 0
    pool = {r["id"]: r["test_accuracy"] for r in rows(tmp_path / "pool")}
    sub = {r["id"]: r["test_accuracy"] for r in rows(tmp_path / "sub")}
    assert len(pool) == 2 and pool == sub
    assert any((tmp_path / "sub" / "submitit").iterdir())  # the engine's own job folder


def test_qpi_grid_with_warm_start(tmp_path) -> None:
    grid = write_grid(tmp_path / "q.toml", kind="qpi", methods=["ptq", "psq-li"], devices=["ideal"], levels=[4],
                      seeds=[0], warm_start=True, finetune_epochs=1, finetune_lr=0.05)
    out = tmp_path / "out"
    assert main(["experiment", str(grid), "--out", str(out), "--workers", "1"]) == 0
    got = {r["method"]: r for r in rows(out)}
    assert set(got) == {"ptq", "psq-li"}
    assert all(-1 <= float(r["ssim"]) <= 1 and float(r["berhu"]) > 0 for r in got.values())
    assert got["psq-li"]["warm_start"] == "True"
    assert (out / "ssim_ideal.png").is_file()
