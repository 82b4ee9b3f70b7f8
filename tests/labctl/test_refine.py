"""labctl refine on the misaligned simulated bench: recovered misalignment, the twin file, errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from labctl.cli import main
from labctl.config import load_bench
from tests.labctl.hil_support import MISALIGNED, ThreadServer, make_calibrations


@pytest.fixture(scope="module")
def cal(tmp_path_factory):
    return make_calibrations(MISALIGNED, tmp_path_factory.mktemp("refine") / "cal")


@pytest.mark.slow
def test_refine_recovers_the_hidden_misalignment_of_the_simulated_bench(cal, tmp_path, capsys):
    cfg = load_bench(MISALIGNED)
    server = ThreadServer(cfg)
    try:
        code = main(["refine", "--endpoint", server.endpoint, "--bench", str(MISALIGNED), "--calibrations", str(cal),
                     "--out", str(tmp_path), "--sets", "3", "--inputs", "6", "--iterations", "120"])
    finally:
        server.close()
    out = capsys.readouterr()
    assert code == 0, out.err
    twin = json.loads((tmp_path / "misaligned.twin.json").read_text())
    assert twin["schema"] == "labctl.twin/1"
    # The registration uses the input-referenced frame of the twin; the simulated bench
    # samples SLM pixels with fringing the neuron-grid twin cannot represent, so the
    # tolerance is a quarter neuron (the pure-twin test holds 0.05).
    for layer, s in zip(twin["layers"], cfg.layer_slms):
        assert layer["slm"] == s.name
        assert np.allclose(layer["shift_px"], s.truth["shift_px"], atol=0.25), (layer, s.truth)
        assert abs(layer["rotation_deg"] - s.truth["rotation_deg"]) < 0.3
    fit = twin["fit"]
    assert fit["frames"] == 18 and fit["loss_final"] < 0.4 * fit["loss_plain"]
    assert twin["source"]["bench_frames"] >= 18
    assert "refined twin from" in out.out


def test_refine_bad_inputs_are_one_line_errors(cal, tmp_path, capsys):
    bench = ["--bench", str(MISALIGNED)]
    assert main(["refine", *bench, "--calibrations", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "calibrations folder" in err
    partial = tmp_path / "partial"
    shutil.copytree(cal, partial)
    for f in partial.glob("*registration.json"):
        f.unlink()
    assert main(["refine", *bench, "--calibrations", str(partial)]) == 2
    assert "registration" in capsys.readouterr().err
    (partial / "slm2.cal.json").unlink()
    assert main(["refine", *bench, "--calibrations", str(partial)]) == 2
    assert "slm2" in capsys.readouterr().err
    assert main(["refine", *bench, "--calibrations", str(cal), "--endpoint", "tcp://127.0.0.1:1",
                 "--timeout", "0.5"]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tcp://127.0.0.1:1" in err
    assert main(["refine", *bench, "--calibrations", str(cal), "--sets", "0"]) == 2


def test_a_model_trained_on_a_refined_twin_is_predicted_with_it(cal, tmp_path):
    """record_twin puts the twin into model.json; deploy's twin (build_twin) applies it."""
    from dataclasses import replace
    from types import SimpleNamespace

    from labctl.deploy.plan import build_twin, twin_scores
    from labctl.hil.refine import bench_geometry
    from labctl.hil.twin import model_twin, record_twin, twin_init
    from sims.artifact import load_model
    from sims.data import load_dataset
    from labctl.errors import ConfigError
    from sims.refine import PlaneCorrection, TwinCorrections, save_twin
    from tests.labctl.hil_support import make_random_model

    cfg = load_bench(MISALIGNED)
    geo = bench_geometry(cfg)
    folder = make_random_model(MISALIGNED, cal, tmp_path / "m")
    images = load_dataset("mnist-5k").test_images[:20]
    plain = twin_scores(build_twin(SimpleNamespace(model=load_model(folder))), images)
    corr = replace(TwinCorrections.identity(3), layers=(PlaneCorrection((1.0, -1.0), 1.0),) * 3)
    twin_path = save_twin(tmp_path / "t.twin.json", corr, geo)
    record_twin(folder, twin_path)
    loaded = load_model(folder)
    assert model_twin(loaded.meta).layers == corr.layers
    refined = twin_scores(build_twin(SimpleNamespace(model=loaded)), images)
    assert not np.allclose(plain / plain.sum(1, keepdims=True), refined / refined.sum(1, keepdims=True), atol=1e-3)
    twin_init(twin_path, geo)  # accepted for its own geometry
    other = replace(geo, wavelength_m=633e-9)
    with pytest.raises(ConfigError, match="wavelength_m"):
        twin_init(twin_path, other)
