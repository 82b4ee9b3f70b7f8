"""Set-up shared by the refinement and in-situ tests and the gap experiment:
calibrations of a simulated bench file and a bench server in a thread."""

from __future__ import annotations

import shutil
from pathlib import Path

from labctl.config import BenchConfig, load_bench
from tests.labctl.deploy_support import ROOT, free_endpoint
from tests.labctl.deploy_support import ServeProcess as _ServeProcess

MISALIGNED = ROOT / "experiments" / "benches" / "misaligned.toml"


def make_calibrations(bench: str | Path, folder: Path) -> Path:
    """<slm>.cal.json per SLM (the simulated responses: SLM calibration is not what these
    experiments are about) and a camera registration measured on the simulated bench
    with the last layer's lenslets
    (``<bench>.registration.json`` and ``registration.json``)."""
    from calibration.acquire import Acquisition
    from calibration.geometry import BenchGeometry
    from calibration.registration import register_camera, save_registration
    from labctl.bench import open_bench

    cfg = load_bench(bench)
    folder.mkdir(parents=True, exist_ok=True)
    for s in [cfg.input_slm, *cfg.layer_slms]:
        shutil.copyfile(cfg.resolve(s.truth["response_file"]), folder / f"{s.name}.cal.json")
    s = cfg.input_slm
    geom = BenchGeometry(cfg.name, cfg.wavelength_m, s.pitch_m, (s.roi[3], s.roi[2]), s.upsample,
                         tuple(x.name for x in [s, *cfg.layer_slms]), tuple(cfg.distances_m), cfg.propagation,
                         cfg.pad_factor)
    with open_bench(cfg) as devices:
        acq = Acquisition(devices.camera, devices.laser, devices.shutter, devices.slms, flat={s.name: 255})
        # The last layer alone: pooling misaligned layers (this bench's point) leaves
        # residuals the registration rightly refuses; the twin's frame is then that layer's.
        reg = register_camera(acq, geom, [cfg.layer_slms[-1].name], grid=3)
    save_registration(folder / f"{cfg.name}.registration.json", reg)
    save_registration(folder / "registration.json", reg)
    return folder


class ThreadServer:
    """A bench server for ``cfg`` in a background thread of this process."""

    def __init__(self, cfg: BenchConfig, endpoint: str | None = None):
        from labctl.bench import open_bench
        from labctl.server import BenchServer

        self.cfg = cfg
        self._devices = open_bench(cfg)
        self._devices.__enter__()
        self.server = BenchServer(self._devices, bind=endpoint or free_endpoint(), bench_name=cfg.name)
        self.endpoint = self.server.start()
        self.server_id = self.server.server_id

    def close(self) -> None:
        try:
            self.server.close()
        finally:
            self._devices.__exit__(None, None, None)


class ServeProcess(_ServeProcess):
    """`labctl serve --bench FILE` in a subprocess on a loopback port (killable, restartable)."""

    def __init__(self, bench: str | Path, endpoint: str | None = None):
        super().__init__(endpoint, bench=bench)


def make_random_model(bench: str | Path, cal_dir: Path, folder: Path, seed: int = 0, block: int = 5) -> Path:
    """A model of ``bench`` built straight from device levels: every ``block``×``block``
    patch of neurons takes one random level (no training)."""
    import numpy as np
    import torch

    from labctl.hil.refine import bench_geometry
    from sims.artifact import save_model
    from sims.device import load_response, select_levels

    cfg = load_bench(bench)
    geo = bench_geometry(cfg)
    n = geo.size
    rng = np.random.default_rng(seed)
    layers, levels = [], []
    for s in cfg.layer_slms:
        lv = select_levels(load_response(cal_dir / f"{s.name}.cal.json"), 8)
        cells = -(-n // block)
        pick = rng.integers(0, lv.k, (cells, cells)).repeat(block, 0).repeat(block, 1)[:n, :n]
        t = lv.transmissions(torch.complex64).numpy()[pick]
        layers.append((np.asarray(lv.gray, dtype=np.uint8)[pick], t.astype(np.complex64)))
        levels.append(lv)
    save_model(folder, geometry=geo, layers=layers, levels=levels, training={"method": "random", "seed": seed},
               metrics={}, slm_names=[s.name for s in cfg.layer_slms])
    return folder
