"""Shared set-up for the deploy, compare and demo tests: calibrations, a model, bench servers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from labctl.client import BenchClient
from labctl.config import builtin_bench_path, load_bench
from labctl.errors import BenchUnreachable

ROOT = Path(__file__).resolve().parents[2]
RESPONSES = {"slm0": "input", "slm1": "layer_a", "slm2": "layer_b", "slm3": "layer_c"}


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def server_env() -> dict[str, str]:
    # One torch thread: two threads on a shared 2-core machine make every FFT ~10x slower.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


class ServeProcess:
    """`labctl serve --bench BENCH` (default: sim) in a subprocess on a loopback port."""

    def __init__(self, endpoint: str | None = None, bench: str | Path = "sim"):
        self.endpoint = endpoint or free_endpoint()
        self.proc = subprocess.Popen([sys.executable, "-m", "labctl", "serve", "--bench", str(bench), "--bind",
                                      self.endpoint], env=server_env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"labctl serve exited: {self.proc.stderr.read().decode()}")
            try:
                with BenchClient(self.endpoint, timeout_s=1.0, retries=0) as c:
                    self.server_id = c.hello()["server"]
                return
            except BenchUnreachable:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError("labctl serve did not answer within 60 s")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def make_calibrations(folder: Path) -> Path:
    """<slm>.cal.json per SLM (the simulated responses, in the plain response format the
    twin reads) and a camera registration measured on the simulated bench."""
    from calibration.acquire import Acquisition
    from calibration.geometry import BenchGeometry
    from calibration.registration import register_camera, save_registration
    from labctl.bench import open_bench

    folder.mkdir(parents=True, exist_ok=True)
    benches = builtin_bench_path("sim").parent
    for slm, resp in RESPONSES.items():
        shutil.copyfile(benches / f"{resp}.response.json", folder / f"{slm}.cal.json")
    cfg = load_bench("sim")
    s = cfg.input_slm
    geom = BenchGeometry(cfg.name, cfg.wavelength_m, s.pitch_m, (s.roi[3], s.roi[2]), s.upsample,
                         tuple(x.name for x in [s, *cfg.layer_slms]), tuple(cfg.distances_m), cfg.propagation,
                         cfg.pad_factor)
    with open_bench(cfg) as bench:
        acq = Acquisition(bench.camera, bench.laser, bench.shutter, bench.slms, flat={s.name: 255})
        reg = register_camera(acq, geom, [x.name for x in cfg.layer_slms])
    save_registration(folder / f"{cfg.name}.registration.json", reg)
    return folder


def make_model(folder: Path, cal_dir: Path, seed: int = 0, block: int = 10) -> Path:
    """A 3-layer model of the simulated bench built straight from device levels: every
    ``block``×``block`` patch of neurons takes one random level (no training)."""
    import torch

    from sims.artifact import save_model
    from sims.device import load_response, select_levels
    from sims.donn import Geometry, layout_regions

    cfg = load_bench("sim")
    n = cfg.size[0]
    geo = Geometry(size=n, pitch_m=cfg.pitch_m, wavelength_m=cfg.wavelength_m, distances_m=tuple(cfg.distances_m),
                   regions=layout_regions(n, 10), input_size=56, method=cfg.propagation, pad_factor=cfg.pad_factor)
    rng = np.random.default_rng(seed)
    layers, levels = [], []
    for s in cfg.layer_slms:
        lv = select_levels(load_response(cal_dir / f"{s.name}.cal.json"), 8)
        pick = rng.integers(0, lv.k, (n // block, n // block)).repeat(block, 0).repeat(block, 1)
        t = lv.transmissions(torch.complex64).numpy()[pick]
        layers.append((np.asarray(lv.gray, dtype=np.uint8)[pick], t.astype(np.complex64)))
        levels.append(lv)
    save_model(folder, geometry=geo, layers=layers, levels=levels, training={"method": "random", "seed": seed},
               metrics={}, slm_names=[s.name for s in cfg.layer_slms])
    return folder


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for_lines(path: Path, count: int, timeout_s: float = 120.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.is_file():
            n = path.read_bytes().count(b"\n")
            if n >= count:
                return n
        time.sleep(0.02)
    raise AssertionError(f"{path}: fewer than {count} records after {timeout_s} s")


def only_run(out: Path) -> Path:
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]
