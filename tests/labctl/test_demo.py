"""labctl demo: the whole loop on the simulated bench; its server never outlives it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import labctl.commands.demo as demo_mod
from labctl.cli import main
from labctl.errors import LabctlError
from tests.labctl.deploy_support import ROOT, server_env


def test_demo_names_a_missing_piece_and_starts_nothing(monkeypatch, tmp_path, capsys):
    started = []
    monkeypatch.setattr(demo_mod, "NEEDS", {**demo_mod.NEEDS, "labctl.commands.nonexistent": "`labctl nonexistent`"})
    monkeypatch.setattr(demo_mod, "DemoServer", lambda *a: started.append(a))
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`labctl nonexistent`" in err and "labctl.commands.nonexistent" in err
    assert started == []


def test_demo_stops_its_server_when_a_stage_fails(monkeypatch, tmp_path, capsys):
    servers = []

    class Recorder(demo_mod.DemoServer):
        def __init__(self, *a):
            super().__init__(*a)
            servers.append(self)

    def failing_stage(command, args, stage):
        servers[0].wait_ready()  # the server really runs before the failure
        raise LabctlError(f"{stage} broke")

    monkeypatch.setattr(demo_mod, "DemoServer", Recorder)
    monkeypatch.setattr(demo_mod, "_run", failing_stage)
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 1
    assert "calibrate broke" in capsys.readouterr().err
    assert servers[0].proc.poll() is not None  # stopped, not orphaned
    assert "stopped" in (tmp_path / "demo" / "serve.log").read_text()


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_demo_quick_runs_the_whole_loop(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "labctl", "demo", "--quick", "--out", str(out)], cwd=ROOT,
                          env=server_env(), capture_output=True, text=True, timeout=1450)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = Path(proc.stdout.strip().splitlines()[-1].removeprefix("report: "))
    assert report.is_file() and report.parent.parent == out / "runs"
    metrics = json.loads((report.parent / "report.json").read_text())["metrics"]
    assert metrics["images"] == demo_mod.QUICK["limit"]
    # a trained model on its own calibrations: the bench sees far better than chance
    assert metrics["accuracy_captured"] > 0.3 and metrics["pearson_r"] > 0.5
    for name in ("slm0", "slm1", "slm2", "slm3"):
        assert (out / "calibrations" / f"{name}.cal.json").is_file()
    assert (out / "models" / demo_mod.MODEL_NAME / "model.json").is_file()
    assert "stopped" in (out / "serve.log").read_text()
