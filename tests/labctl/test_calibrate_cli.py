"""`labctl calibrate` end to end on the simulated bench: files, plots, history, drift, errors, exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from calibration.files import calibration_dict, write_calibration
from calibration.response import Response
from labctl.cli import main
from sims.device import load_response, select_levels
from tests.calibration.conftest import sim_bench_file
from tests.labctl.test_train_cli import tiny_bench, tiny_data  # noqa: F401 - fixtures: a seconds-long training


def _fake(slm="slm3", phase_shift=0.0, amp_scale=1.0, created="2026-01-02T03:04:05Z") -> dict:
    g = np.arange(256)
    phase = 6.0 * g / 255 + phase_shift * g / 255
    amp = np.clip(1.0 - 0.2 * np.sin(np.pi * g / 255) * amp_scale, 0, 1)
    resp = Response(slm, g, phase, amp / amp.max(), np.full(256, 0.01), np.full(256, 0.002), 530, 0, 1e-3, 0.6, 1.0)
    return calibration_dict(resp, serial="SIM-0003", wavelength_m=532e-9, bench_name="sim", bench_sha256="0" * 64,
                            software_version="test", created=created)


def test_nothing_to_do_is_a_usage_error(capsys):
    assert main(["calibrate", "--bench", "sim"]) == 2
    assert "nothing to do" in capsys.readouterr().err


def test_unknown_slm_names_the_bench_slms(capsys, tmp_path):
    assert main(["calibrate", "--bench", "sim", "--slm", "slm9", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "slm9" in err and "slm1" in err and "Traceback" not in err


def test_compare_reports_drift_and_writes_a_plot(capsys, tmp_path):
    a = write_calibration(tmp_path / "a", _fake())
    b = write_calibration(tmp_path / "b", _fake(phase_shift=0.3, amp_scale=1.5))
    assert main(["calibrate", "--compare", str(a), str(b), "--out", str(tmp_path), "--json"]) == 0
    drift = json.loads(capsys.readouterr().out)
    g = np.arange(256)
    assert drift["phase_max_rad"] == pytest.approx(0.3, abs=1e-5)
    assert drift["phase_rms_rad"] == pytest.approx(float(np.sqrt(np.mean((0.3 * g / 255) ** 2))), abs=1e-5)
    assert drift["amplitude_max"] > 0.05 and drift["phase_significant_levels"] > 100
    assert (tmp_path / drift["plot"].split("/")[-1]).stat().st_size > 1000


def test_compare_refuses_a_file_that_is_not_a_calibration(capsys, tmp_path):
    a = write_calibration(tmp_path, _fake())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"gray": [0, 1]}))
    assert main(["calibrate", "--compare", str(a), str(bad), "--out", str(tmp_path)]) == 2
    assert "bad.json" in capsys.readouterr().err
    assert main(["calibrate", "--compare", str(a), str(tmp_path / "missing.json")]) == 2


def test_history_keeps_the_previous_calibration(tmp_path):
    write_calibration(tmp_path, _fake(created="2026-01-02T03:04:05Z"))
    write_calibration(tmp_path, _fake(phase_shift=0.1, created="2026-02-02T03:04:05Z"))
    old = tmp_path / "history" / "slm3.20260102T030405Z.cal.json"
    assert old.exists()
    assert json.loads(old.read_text())["created"] == "2026-01-02T03:04:05Z"
    assert json.loads((tmp_path / "slm3.cal.json").read_text())["created"] == "2026-02-02T03:04:05Z"


def test_registration_is_written_and_readable(capsys, tmp_path):
    assert main(["calibrate", "--bench", "sim", "--registration", "--out", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    data = json.loads((tmp_path / "sim.registration.json").read_text())
    assert data["schema"] == "labctl.registration/1" and data["neurons"] == [100, 100]
    assert out["registration"]["pixels_per_neuron"] == pytest.approx(4.05, abs=0.05)


def test_blocked_beam_exits_3_with_one_line(capsys, tmp_path):
    bench = sim_bench_file(tmp_path, (r'^\[shutter\]\ndriver = "sim"', '[shutter]\ndriver = "sim"\n[shutter.truth]\nstuck = true'))
    assert main(["calibrate", "--bench", str(bench), "--registration", "--out", str(tmp_path / "cal")]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("labctl: error:") and "no light" in err[0]


@pytest.mark.slow
def test_calibrate_one_slm_writes_design_file_plot_and_history(capsys, tmp_path, tiny_bench, tiny_data):  # noqa: F811
    out = tmp_path / "calibrations"
    write_calibration(out, _fake(created="2025-12-31T23:59:59Z"))  # an earlier calibration of slm3
    assert main(["calibrate", "--bench", "sim", "--slm", "slm3", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    path = out / "slm3.cal.json"
    data = json.loads(path.read_text())
    assert set(data) == {"schema", "slm", "wavelength_m", "created", "method", "gray", "phase_rad", "amplitude",
                         "phase_std_rad", "amplitude_std", "frames", "bench", "software"}
    assert data["slm"] == {"name": "slm3", "serial": "SIM-0003"}
    assert data["created"].endswith("Z") and data["phase_rad"][0] == 0.0 and max(data["amplitude"]) == 1.0
    assert len(data["bench"]["sha256"]) == 64 and data["frames"] == summary["slms"]["slm3"]["frames"]
    assert (out / "slm3.cal.png").stat().st_size > 5000
    assert (out / "history" / "slm3.20251231T235959Z.cal.json").exists()
    assert (out / "sim.registration.json").exists()  # measured first, as none was stored
    # The twin reads it and picks K levels from it (DESIGN §5, sims.device).
    response = load_response(path)
    levels = select_levels(response, 8)
    assert len(set(levels.gray)) == 8
    # And `labctl train` consumes it.
    models = tmp_path / "models"
    code = main(["train", "--bench", str(tiny_bench), "--dataset", "mnist", "--data-dir", str(tiny_data),
                 "--calibration", str(path), "--levels", "4", "--epochs", "1", "--batch-size", "50", "--threads", "1",
                 "--out", str(models), "--name", "m"])
    assert code == 0, capsys.readouterr().err
    model = json.loads((models / "m" / "model.json").read_text())
    assert all(len(layer["levels_gray"]) == 4 for layer in model["layers"])
    assert all(layer["calibration"]["file"].endswith("slm3.cal.json") for layer in model["layers"])
