"""labctl deploy on the simulated bench: end to end, calibration checks, faults, kills and resumes."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from labctl.cli import main
from tests.labctl.deploy_support import (
    ROOT, ServeProcess, make_calibrations, make_model, only_run, read_lines, server_env, wait_for_lines,
)


@pytest.fixture(scope="module")
def cal_dir(tmp_path_factory) -> Path:
    return make_calibrations(tmp_path_factory.mktemp("cal") / "calibrations")


@pytest.fixture(scope="module")
def model(tmp_path_factory, cal_dir) -> Path:
    return make_model(tmp_path_factory.mktemp("models") / "blocks", cal_dir)


@pytest.fixture()
def server():
    srv = ServeProcess()
    yield srv
    srv.stop()


def _deploy_args(model: Path, endpoint: str, cal_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["deploy", str(model), "--endpoint", endpoint, "--calibrations", str(cal_dir), "--out", str(out), *extra]


def _deploy_proc(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "labctl", *args], env=server_env(), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _complete(run: Path, total: int) -> list[dict]:
    recs = read_lines(run / "records.jsonl")
    indices = [r["index"] for r in recs]
    assert len(indices) == len(set(indices)), "duplicated records"
    assert sorted(indices) == list(range(total)), "lost records"
    return recs


@pytest.mark.slow
def test_deploy_end_to_end_records_and_report(server, model, cal_dir, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(_deploy_args(model, server.endpoint, cal_dir, out, "--limit", "40", "--batch", "16")) == 0
    printed = capsys.readouterr()
    run = only_run(out)
    assert f"report: {run / 'report.md'}" in printed.out
    recs = _complete(run, 40)
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "done" and meta["recorded"] == 40 and meta["servers"] == [server.server_id]
    assert meta["deployed"]["model_sha256"] == meta["model"]["sha256"]
    assert 0 < meta["exposure_s"] < 1
    # the 40 images are spread over the class-sorted split, so every digit appears
    assert sorted({r["label"] for r in recs}) == list(range(10))
    assert all(r["dataset_index"] % 5 == 4 and len(r["captured"]) == 10 and len(r["twin"]) == 10 for r in recs)
    assert all(isinstance(r["crc32"], int) and r["saturated"] == 0 for r in recs)

    # The twin's scores are those of the artifact re-simulated on its own.
    from labctl.deploy.plan import build_twin, make_plan, twin_scores
    plan = make_plan(model, "sim", cal_dir, 40)
    expect = twin_scores(build_twin(plan), plan.images[:5])
    got = np.array([r["twin"] for r in recs[:5]])
    np.testing.assert_allclose(got, expect, rtol=1e-5)

    # Captured and predicted normalized scores follow each other on the simulated bench.
    report = json.loads((run / "report.json").read_text())["metrics"]
    assert report["images"] == 40
    assert report["pearson_r"] > 0.8, report["pearson_r"]
    for png in ("confusion.png", "scores.png", "examples.png"):
        assert (run / png).stat().st_size > 5000
    text = (run / "report.md").read_text()
    assert "agreement" in text and "![example frames](examples.png)" in text

    # The bench is left safe and the lease free.
    from labctl.client import BenchClient
    with BenchClient(server.endpoint) as c:
        lease, devices = c.status()["lease"], c.devices()
    assert lease is None and devices["shutter"]["open"] is False and devices["laser"]["on"] is False


def test_calibration_mismatch_is_refused_unless_forced(server, model, cal_dir, tmp_path, capsys):
    changed = tmp_path / "cal"
    shutil.copytree(cal_dir, changed)
    data = json.loads((changed / "slm2.cal.json").read_text())
    data["phase_rad"][10] += 0.01  # a recalibrated SLM
    (changed / "slm2.cal.json").write_text(json.dumps(data))
    out = tmp_path / "runs"
    assert main(_deploy_args(model, server.endpoint, changed, out, "--limit", "4")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "slm2" in err and "--force" in err and "slm1" not in err
    assert not out.exists() or not any(out.iterdir())

    assert main(_deploy_args(model, server.endpoint, changed, out, "--limit", "4", "--force")) == 0
    assert "warning: deploying anyway" in capsys.readouterr().err
    run = only_run(out)
    meta = json.loads((run / "run.json").read_text())
    assert meta["forced"] is True and any("slm2" in p for p in meta["problems"])
    assert "--force" in (run / "report.md").read_text()
    _complete(run, 4)


def test_missing_registration_and_bad_model_are_one_line_errors(model, cal_dir, tmp_path, capsys):
    no_reg = tmp_path / "cal"
    shutil.copytree(cal_dir, no_reg)
    (no_reg / "sim.registration.json").unlink()
    assert main(_deploy_args(model, "tcp://127.0.0.1:9", no_reg, tmp_path / "runs")) == 2
    assert "registration" in capsys.readouterr().err
    assert main(_deploy_args(tmp_path / "nope", "tcp://127.0.0.1:9", cal_dir, tmp_path / "runs")) == 2
    assert "no such model folder" in capsys.readouterr().err


@pytest.mark.slow
def test_server_killed_mid_deploy_then_resume_loses_nothing(model, cal_dir, tmp_path):
    srv = ServeProcess()
    out = tmp_path / "runs"
    proc = _deploy_proc(_deploy_args(model, srv.endpoint, cal_dir, out, "--limit", "60", "--batch", "8",
                                     "--reconnect-timeout", "1", "--timeout", "2"))
    try:
        run_dir = None
        deadline = time.monotonic() + 120
        while run_dir is None and time.monotonic() < deadline:
            runs = list(out.glob("*/records.jsonl")) if out.exists() else []
            run_dir = runs[0].parent if runs else None
            time.sleep(0.05)
        assert run_dir is not None
        wait_for_lines(run_dir / "records.jsonl", 10)
        srv.kill()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 4, err
    assert "--resume" in err.strip().splitlines()[-1]
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "interrupted"
    before = len(read_lines(run_dir / "records.jsonl"))
    assert 10 <= before < 60

    srv2 = ServeProcess(srv.endpoint)
    try:
        assert main(["deploy", "--resume", str(run_dir), "--endpoint", srv2.endpoint]) == 0
    finally:
        srv2.stop()
    _complete(run_dir, 60)
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "done" and meta["servers"] == [srv.server_id, srv2.server_id]


@pytest.mark.slow
def test_server_restart_during_deploy_is_followed(model, cal_dir, tmp_path):
    srv = ServeProcess()
    out = tmp_path / "runs"
    proc = _deploy_proc(_deploy_args(model, srv.endpoint, cal_dir, out, "--limit", "60", "--batch", "8",
                                     "--timeout", "2"))
    srv2 = None
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("*/records.jsonl")) and time.monotonic() < deadline:
            time.sleep(0.05)
        run_dir = list(out.glob("*/records.jsonl"))[0].parent
        wait_for_lines(run_dir / "records.jsonl", 10)
        srv.kill()
        srv2 = ServeProcess(srv.endpoint)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
        if srv2 is not None:
            srv2.stop()
    assert proc.returncode == 0, err
    assert "restarted" in err
    _complete(run_dir, 60)
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["servers"] == [srv.server_id, srv2.server_id] and meta["resumes"] == 0


@pytest.mark.slow
def test_client_killed_mid_run_keeps_every_flushed_record(server, model, cal_dir, tmp_path):
    out = tmp_path / "runs"
    proc = _deploy_proc(_deploy_args(model, server.endpoint, cal_dir, out, "--limit", "60", "--batch", "30"))
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("*/records.jsonl")) and time.monotonic() < deadline:
            time.sleep(0.05)
        run_dir = list(out.glob("*/records.jsonl"))[0].parent
        seen = wait_for_lines(run_dir / "records.jsonl", 12)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Every line the file had when the client died is complete and valid JSON.
    lines = (run_dir / "records.jsonl").read_bytes().split(b"\n")
    complete = [json.loads(x) for x in lines[:-1]]
    assert len(complete) >= seen
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
    # The killed client still holds the lease and its job still runs: resume takes both back.
    assert main(["deploy", "--resume", str(run_dir), "--endpoint", server.endpoint]) == 0
    recs = _complete(run_dir, 60)
    assert [r["index"] for r in recs[: len(complete)]] == [r["index"] for r in complete]


@pytest.mark.slow
def test_camera_fault_mid_run_fails_cleanly_and_next_run_works(model, cal_dir, tmp_path, capsys):
    from labctl.bench import open_bench
    from labctl.config import load_bench
    from labctl.server import BenchServer

    with open_bench(load_bench("sim")) as devices:
        server = BenchServer(devices, bind="tcp://127.0.0.1:*", bench_name="sim")
        endpoint = server.start()
        try:
            out = tmp_path / "runs"
            stop = threading.Event()

            def inject() -> None:
                while not stop.is_set():
                    runs = list(out.glob("*/records.jsonl")) if out.exists() else []
                    if runs and runs[0].read_bytes().count(b"\n") >= 5:
                        devices.camera.inject_grab_error(count=1)
                        return
                    time.sleep(0.005)

            t = threading.Thread(target=inject, daemon=True)
            t.start()
            code = main(_deploy_args(model, endpoint, cal_dir, out, "--limit", "40", "--batch", "40"))
            stop.set()
            t.join(5)
            err = capsys.readouterr().err
            assert code == 3, err
            last = err.strip().splitlines()[-1]
            assert "injected fault" in last and "--resume" in last and last.startswith("labctl: error:")
            run = only_run(out)
            meta = json.loads((run / "run.json").read_text())
            assert meta["status"] == "failed" and "injected fault" in meta["error"]
            kept = read_lines(run / "records.jsonl")
            assert 5 <= len(kept) < 40
            # The server stayed up, the bench is safe, and the next run works.
            assert devices.shutter.is_open is False
            assert main(["deploy", "--resume", str(run), "--endpoint", endpoint]) == 0
            _complete(run, 40)
            assert main(_deploy_args(model, endpoint, cal_dir, out, "--limit", "8")) == 0
        finally:
            server.close()
