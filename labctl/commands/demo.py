"""``labctl demo``: the whole loop on the simulated bench in one command.

serve (a subprocess on a free loopback port) → calibrate every SLM and the camera
registration → refine the twin (its alignment, crosstalk and distances, fitted to
probe frames) → train a Gumbel-Softmax model on those calibrations through the
refined twin → deploy it through the server → report. Each stage is the real
subcommand, called with the arguments a user would type; the server is stopped at
the end whatever happens.
See docs/deploy.md.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from labctl.errors import BenchUnreachable, LabctlError, UsageError
from labctl.options import out_option

# Settings measured on the simulated bench (docs/performance.md, "Deploy and demo").
# The full demo trains on the SLM-pixel grid (oversample = the bench's upsample,
# "0"): the grid the bench's light really crosses, 5x the cost per epoch of the
# neuron grid. The quick one keeps the neuron grid and a token fit: a smoke test.
# No shift augmentation, label smoothing or averaging: they pay off over long runs
# (docs/results.md), not in two epochs, and the demo's figures were measured without.
FULL = {"epochs": 2, "average": 1, "limit": None,
        "refine": ["--sets", "4", "--inputs", "8", "--iterations", "150", "--oversample", "0"]}
QUICK = {"epochs": 1, "average": 1, "limit": 100,
         "refine": ["--sets", "1", "--inputs", "4", "--iterations", "10", "--oversample", "1"]}
MODEL_NAME = "demo-gs"
SERVER_START_S = 90.0

# What each stage needs: module → what it provides (named in the error when missing).
NEEDS = {
    "labctl.commands.calibrate": "`labctl calibrate` (SLM responses and camera registration)",
    "calibration.response": "the calibration package (calibration/response.py)",
    "labctl.commands.refine": "`labctl refine` (labctl/commands/refine.py)",
    "sims.refine": "the twin's refinement (sims/refine.py)",
    "labctl.commands.train": "`labctl train` (labctl/commands/train.py)",
    "sims.train": "the twin's trainer (sims/train.py)",
    "labctl.commands.deploy": "`labctl deploy` (labctl/commands/deploy.py)",
    "labctl.commands.serve": "`labctl serve` (labctl/commands/serve.py)",
}


def check_pieces() -> None:
    """Fail with the exact missing piece before anything starts."""
    for module, what in NEEDS.items():
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            raise UsageError(f"labctl demo needs {what}, which this installation lacks (no module {e.name!r})") \
                from None


def free_loopback_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


class DemoServer:
    """`labctl serve --bench sim` as a child process, stopped by :meth:`stop`."""

    def __init__(self, log_path: Path):
        self.endpoint = free_loopback_endpoint()
        self.log_path = log_path
        # One torch thread: the simulated bench's FFTs are small, and on a shared
        # machine extra threads make them ~10x slower (docs/performance.md).
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "labctl", "serve", "--bench", "sim", "--bind",
                                      self.endpoint], stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                                     env=env, start_new_session=True)

    def wait_ready(self, timeout_s: float = SERVER_START_S) -> str:
        from labctl.client import BenchClient

        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
                raise LabctlError(f"the demo's bench server exited at start: {tail[0]}")
            try:
                with BenchClient(self.endpoint, timeout_s=1.0, retries=0) as c:
                    return c.hello()["server"]
            except BenchUnreachable:
                if time.monotonic() > deadline:
                    raise BenchUnreachable(f"the demo's bench server did not answer within {timeout_s:g} s") from None

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)  # the server blanks the SLMs and closes the shutter
                try:
                    self.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        finally:
            self._log.close()


def _run(command: Any, args: list[str], stage: str) -> None:
    click.echo(f"\n== {stage}: labctl {command.name} {' '.join(args)}", err=True)
    command.main(args=args, prog_name=f"labctl {command.name}", standalone_mode=False)


@click.command(help="The whole loop on the simulated bench: start a bench server, calibrate every SLM and the "
                    "camera, train a model on those calibrations, deploy it, and write the bench-vs-twin report.")
@out_option("demo", "Folder for the calibrations, model, run and report.")
@click.option("--quick", is_flag=True, help=f"Fewer epochs and {QUICK['limit']} test images (a smoke test).")
@click.option("--epochs", type=click.IntRange(1), default=None, help=f"Training epochs (default {FULL['epochs']}, quick {QUICK['epochs']}).")
def demo(out: Path, quick: bool, epochs: int | None) -> None:
    check_pieces()
    from labctl.commands.calibrate import calibrate
    from labctl.commands.deploy import deploy
    from labctl.commands.refine import refine
    from labctl.commands.train import train
    from labctl.hil.refine import twin_file

    settings = dict(QUICK if quick else FULL)
    if epochs is not None:
        settings["epochs"] = epochs
    out.mkdir(parents=True, exist_ok=True)
    cal, models, runs = out / "calibrations", out / "models", out / "runs"
    t0 = time.monotonic()
    server = DemoServer(out / "serve.log")
    try:
        click.echo(f"== bench server: labctl serve --bench sim --bind {server.endpoint} (log {server.log_path})",
                   err=True)
        _run(calibrate, ["--bench", "sim", "--slm", "all", "--registration", "--average", str(settings["average"]),
                         "--out", str(cal)], "calibrate")
        t_cal = time.monotonic()
        server.wait_ready()
        _run(refine, ["--endpoint", server.endpoint, "--bench", "sim", "--calibrations", str(cal),
                      *settings["refine"]], "refine")
        t_refine = time.monotonic()
        layers = [f"{cal}/{name}.cal.json" for name in _layer_slms()]
        train_args = ["--bench", "sim", *sum((["--calibration", p] for p in layers), []),
                      "--twin", str(twin_file(cal, "sim")),
                      "--augment-shift", "0", "--label-smoothing", "0", "--average", "0",
                      "--epochs", str(settings["epochs"]), "--threads", "1", "--out", str(models),
                      "--name", MODEL_NAME]
        _run(train, train_args, "train")
        t_train = time.monotonic()
        deploy_args = [str(models / MODEL_NAME), "--endpoint", server.endpoint, "--bench", "sim",
                       "--calibrations", str(cal), "--out", str(runs)]
        if settings["limit"]:
            deploy_args += ["--limit", str(settings["limit"])]
        _run(deploy, deploy_args, "deploy")
    finally:
        server.stop()
    t_end = time.monotonic()
    report = _latest_report(runs)
    click.echo(f"\ndemo finished in {t_end - t0:.0f} s (calibrate {t_cal - t0:.0f} s, refine {t_refine - t_cal:.0f} s, "
               f"train {t_train - t_refine:.0f} s, deploy {t_end - t_train:.0f} s)")
    click.echo(f"report: {report}")


def _layer_slms() -> list[str]:
    from labctl.config import load_bench

    return [s.name for s in load_bench("sim").layer_slms]


def _latest_report(runs: Path) -> Path:
    reports = sorted(runs.glob("*/report.md"), key=lambda p: p.stat().st_mtime)
    if not reports:
        raise LabctlError(f"{runs}: the deploy wrote no report")
    return reports[-1]
