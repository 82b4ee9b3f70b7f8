"""``labctl refine``: show probe maps on the bench, capture frames, fit the twin to them.

Writes ``<bench>.twin.json`` (schema ``labctl.twin/1``, see ``sims.refine`` and
docs/hil.md) next to the calibrations; ``labctl train --twin FILE`` trains on the
refined twin and ``labctl evaluate``-style predictions use it.
"""

from __future__ import annotations

from pathlib import Path

import click

from labctl.commands.status import client_keys_options
from labctl.errors import ConfigError
from labctl.options import bench_option, endpoint_option, seed_option


def find_registration(cal_dir: Path, bench_name: str, given: Path | None) -> Path:
    """The camera registration: ``given``, else ``<bench>.registration.json`` or ``registration.json``."""
    if given is not None:
        if not given.is_file():
            raise ConfigError(f"{given}: camera registration file not found")
        return given
    for name in (f"{bench_name}.registration.json", "registration.json"):
        if (cal_dir / name).is_file():
            return cal_dir / name
    raise ConfigError(f"{cal_dir}: no camera registration ({bench_name}.registration.json); run "
                      "`labctl calibrate` first or give --registration FILE")


@click.command(help="Refine the digital twin on the bench: display probe maps, capture frames through a bench "
                    "server, fit per-plane shift and rotation, distance errors, SLM phase scale and camera "
                    "residuals by gradient descent, and write <bench>.twin.json next to the calibrations.")
@endpoint_option()
@client_keys_options
@bench_option()
@click.option("--calibrations", "cal_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("calibrations"), show_default=True,
              help="The bench's calibrations: <slm>.cal.json per SLM and the camera registration.")
@click.option("--registration", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Camera registration file (default: found in --calibrations).")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for <bench>.twin.json (default: the calibrations folder).")
@click.option("--sets", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Probe layer-map sets (each set is one deploy of random patch maps).")
@click.option("--inputs", type=click.IntRange(2, 256), default=8, show_default=True,
              help="Input maps per set (half random patches, half training digits); frames = sets x inputs.")
@click.option("--iterations", type=click.IntRange(1, 100000), default=150, show_default=True,
              help="Gradient-descent steps of the fit.")
@click.option("--no-distances", is_flag=True, help="Keep the distances of the bench file (fit the rest).")
@click.option("--oversample", type=click.IntRange(0, 8), default=0, show_default=True,
              help="SLM pixels per neuron side the refined twin simulates (0: the bench's upsample; 1: the "
                   "plain neuron grid). Training on an oversampled twin costs oversample^2 times more.")
@click.option("--exposure", "exposure_s", type=click.FloatRange(min=0, min_open=True, max=60), default=None,
              help="Camera exposure in seconds (default: chosen on the first probe frames).")
@seed_option()
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds to wait for each server reply.")
def refine(endpoint: str, keys_dir: Path | None, key_name: str, bench: str, cal_dir: Path, registration: Path | None,
           out: Path | None, sets: int, inputs: int, iterations: int, no_distances: bool, oversample: int,
           exposure_s: float | None,
           seed: int, timeout_s: float) -> None:
    import torch

    from calibration.errors import CalibrationError
    from calibration.registration import load_registration
    from labctl.client import BenchClient
    from labctl.config import load_bench
    from labctl.deploy.checks import sha256_file
    from labctl.hil.refine import ProbeOptions, describe, run_refinement, source_info, twin_file
    from labctl.hil.session import HilSession
    from labctl.progress import progress
    from labctl.server.security import load_client_keys
    from sims.device import load_response
    from sims.errors import DataError
    from sims.refine import FitOptions, save_twin

    torch.set_num_threads(1)  # the bench server shares this CPU
    cfg = load_bench(bench)
    if cfg.size[0] != cfg.size[1]:
        raise ConfigError(f"{cfg.path}: the twin needs a square neuron grid, this bench gives {cfg.size}")
    if not cal_dir.is_dir():
        raise ConfigError(f"{cal_dir}: no calibrations folder; run `labctl calibrate` or give --calibrations DIR")
    responses, cal_files = {}, {}
    for s in [cfg.input_slm, *cfg.layer_slms]:
        f = cal_dir / f"{s.name}.cal.json"
        if not f.is_file():
            raise ConfigError(f"{f}: no calibration of SLM {s.name!r}; run `labctl calibrate` on it")
        try:
            responses[s.name] = load_response(f)
        except DataError as e:
            raise ConfigError(str(e)) from None
        cal_files[s.name] = {"file": str(f), "sha256": sha256_file(f)}
    reg_path = find_registration(cal_dir, cfg.name, registration)
    try:
        reg = load_registration(reg_path)
    except CalibrationError as e:
        raise ConfigError(str(e)) from None
    if tuple(reg.neurons) != tuple(cfg.size):
        raise ConfigError(f"{reg_path}: registered for {reg.neurons[0]}x{reg.neurons[1]} neurons, bench "
                          f"{cfg.name!r} has {cfg.size[0]}x{cfg.size[1]}")
    cal_files["registration"] = {"file": str(reg_path), "sha256": sha256_file(reg_path)}
    target = twin_file(out if out is not None else cal_dir, cfg.name)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    probe = ProbeOptions(sets=sets, inputs=inputs, seed=seed)
    fit = FitOptions(iterations=iterations, fit_distances=not no_distances, blur_end_px=0.5,
                     oversample=oversample or cfg.input_slm.upsample)
    keys = load_client_keys(keys_dir, key_name) if keys_dir is not None else None
    echo = lambda s: click.echo(s, err=True)  # noqa: E731
    bar = progress(total=iterations, desc="refine fit", unit="step")
    try:
        with BenchClient(endpoint, timeout_s=timeout_s, keys=keys) as client:
            with HilSession(client, cfg.input_slm.name, tuple(s.name for s in cfg.layer_slms), bench_name=cfg.name,
                            exposure_s=exposure_s, echo=echo) as session:
                cam = client.devices()["camera"]
                roi = cam.get("roi")
                corrections, geo = run_refinement(session, cfg, responses, reg, probe=probe, fit=fit,
                                                  camera_roi=roi, echo=echo, on_step=lambda _: bar.update(1))
                info = source_info(cfg, cal_files, probe, session)
    finally:
        bar.close()
    from dataclasses import replace

    corrections = replace(corrections, source=info)
    save_twin(target, corrections, geo)
    click.echo(describe(corrections))
    click.echo(f"{target}: refined twin from {info['bench_frames']} bench frames")
