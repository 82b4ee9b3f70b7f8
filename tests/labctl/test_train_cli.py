"""`labctl train` / `labctl evaluate` end to end on a tiny bench and a tiny IDX dataset."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from labctl import cli
from labctl.config import builtin_bench_path
from labctl.errors import EXIT_USAGE
from sims.data import IDX_FILES, load_mnist_5k


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory) -> Path:
    """The shipped sim bench with a 32×32-neuron ROI, so training takes seconds."""
    folder = tmp_path_factory.mktemp("bench")
    sim = builtin_bench_path("sim")
    text = sim.read_text().replace("roi = [860, 440, 200, 200]", "roi = [860, 440, 64, 64]")
    text = text.replace('name = "sim"', 'name = "tiny"')
    for resp in sim.parent.glob("*.response.json"):
        (folder / resp.name).write_bytes(resp.read_bytes())
    (folder / "tiny.toml").write_text(text)
    return folder / "tiny.toml"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """300 training / 100 test real digits as IDX files."""
    folder = tmp_path_factory.mktemp("idx")
    d = load_mnist_5k()
    parts = {"train_images": d.train_images[::13][:300], "train_labels": d.train_labels[::13][:300],
             "test_images": d.test_images[::10], "test_labels": d.test_labels[::10]}
    for key, stem in IDX_FILES.items():
        a = parts[key].astype(np.uint8)
        raw = struct.pack(">BBBB", 0, 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()
        (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
    return folder


def _train(bench: Path, data: Path, out: Path, *extra: str) -> int:
    return cli.main(["train", "--bench", str(bench), "--dataset", "mnist", "--data-dir", str(data), "--out", str(out),
                     "--name", "m", "--epochs", "2", "--batch-size", "50", "--lr", "0.3", "--tau-start", "5",
                     "--threads", "1", *extra])


def test_train_writes_artifact_and_evaluate_reproduces_it(tiny_bench, tiny_data, tmp_path, capsys) -> None:
    assert _train(tiny_bench, tiny_data, tmp_path) == 0
    out = capsys.readouterr()
    assert "test accuracy" in out.out
    folder = tmp_path / "m"
    meta = json.loads((folder / "model.json").read_text())
    assert meta["schema"] == "labctl.model/1"
    assert meta["geometry"]["size"] == [32, 32] and meta["geometry"]["pitch_m"] == pytest.approx(72e-6)
    assert meta["geometry"]["propagation"] == {"method": "asm", "pad_factor": 2}
    assert [layer["slm"] for layer in meta["layers"]] == ["slm1", "slm2", "slm3"]
    assert all(len(layer["levels_gray"]) == 8 and len(layer["calibration"]["sha256"]) == 64
               for layer in meta["layers"])
    assert meta["training"]["method"] == "gs" and meta["training"]["dataset"] == "mnist"
    assert set(meta["metrics"]["confidence"]) == {"1%", "3%", "5%"}
    with np.load(folder / "layers.npz", allow_pickle=False) as npz:
        assert sorted(npz.files) == ["gray_1", "gray_2", "gray_3", "t_1", "t_2", "t_3"]
        assert npz["gray_1"].dtype == np.uint8 and npz["gray_1"].shape == (32, 32)
        assert npz["t_2"].dtype == np.complex64
        assert set(np.unique(npz["gray_3"]).tolist()) <= set(meta["layers"][2]["levels_gray"])

    assert cli.main(["evaluate", str(folder), "--data-dir", str(tiny_data), "--json", "--confidence"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["test_accuracy"] == meta["metrics"]["test_accuracy"]
    assert report["confidence"] == meta["metrics"]["confidence"]
    assert cli.main(["evaluate", str(folder), "--data-dir", str(tiny_data)]) == 0
    assert "reproduced" in capsys.readouterr().out


def test_resume_continues_to_the_same_model(tiny_bench, tiny_data, tmp_path, monkeypatch, capsys) -> None:
    assert _train(tiny_bench, tiny_data, tmp_path / "straight") == 0
    import sims.train

    real_write = sims.train.write_bytes_atomic

    def write_then_interrupt(path, data):
        real_write(path, data)
        raise KeyboardInterrupt  # Ctrl-C right after the first epoch's checkpoint

    monkeypatch.setattr(sims.train, "write_bytes_atomic", write_then_interrupt)
    assert _train(tiny_bench, tiny_data, tmp_path / "resumed") == 1
    assert "interrupted" in capsys.readouterr().err
    assert not (tmp_path / "resumed" / "m" / "model.json").exists()
    monkeypatch.setattr(sims.train, "write_bytes_atomic", real_write)
    assert _train(tiny_bench, tiny_data, tmp_path / "resumed", "--resume") == 0
    meta = json.loads((tmp_path / "resumed" / "m" / "model.json").read_text())
    assert [h["epoch"] for h in meta["training"]["history"]] == [1, 2]
    with np.load(tmp_path / "straight" / "m" / "layers.npz", allow_pickle=False) as a, \
            np.load(tmp_path / "resumed" / "m" / "layers.npz", allow_pickle=False) as b:
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])


def test_bad_calibration_is_one_line_exit_2(tiny_bench, tiny_data, tmp_path, capsys) -> None:
    bad = tmp_path / "bad.cal.json"
    bad.write_text(json.dumps({"gray": list(range(256)), "phase_rad": [0.0] * 255, "amplitude": [1.0] * 256}))
    assert _train(tiny_bench, tiny_data, tmp_path, "--calibration", str(bad)) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("labctl: error:") and "phase_rad" in err[0] and "256" in err[0]
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("args,needle", [
    (["--calibration", "a.json", "--calibration", "b.json"], "one per layer"),
    (["--preset", "bench"], "either --preset or --bench"),
    (["--dataset", "fashion-mnist", "--data-dir", "/nonexistent"], "not a folder"),
])
def test_usage_errors(tiny_bench, tiny_data, tmp_path, capsys, args, needle) -> None:
    if args[0] == "--dataset":
        code = cli.main(["train", "--bench", str(tiny_bench), "--out", str(tmp_path), *args])
    else:
        code = _train(tiny_bench, tiny_data, tmp_path, *args)
    assert code == EXIT_USAGE
    assert needle in capsys.readouterr().err


def test_config_file(tiny_bench, tiny_data, tmp_path, capsys) -> None:
    cfg = tmp_path / "train.toml"
    cfg.write_text(f'[train]\nbench = "{tiny_bench}"\ndataset = "mnist"\ndata_dir = "{tiny_data}"\n'
                   f'epochs = 1\nmethod = "full"\nlr = 0.05\nname = "fromfile"\nout = "{tmp_path}"\nthreads = 1\n')
    assert cli.main(["train", "--config", str(cfg)]) == 0
    meta = json.loads((tmp_path / "fromfile" / "model.json").read_text())
    assert meta["training"]["method"] == "full" and meta["training"]["epochs"] == 1
    cfg.write_text('[train]\nepoch = 3\n')
    assert cli.main(["train", "--config", str(cfg)]) == EXIT_USAGE
    assert "unknown key 'epoch'" in capsys.readouterr().err


def test_evaluate_missing_or_broken_model(tmp_path, capsys) -> None:
    assert cli.main(["evaluate", str(tmp_path / "nope")]) == EXIT_USAGE
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.json").write_text('{"schema": "other"}')
    assert cli.main(["evaluate", str(tmp_path / "m")]) == EXIT_USAGE
    assert "labctl.model/1" in capsys.readouterr().err


def test_bench_sim_and_bench_preset_are_the_same_twin() -> None:
    from labctl.commands.train import DEFAULTS, _geometry
    from sims.donn import preset

    from_bench, names = _geometry({**DEFAULTS, "bench": "sim"})
    assert from_bench == preset("bench")
    assert names == ["slm1", "slm2", "slm3"]
