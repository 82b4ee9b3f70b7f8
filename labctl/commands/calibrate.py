"""``labctl calibrate``: measure SLM responses, register the camera, compare calibrations.

The measurement itself lives in ``calibration`` (drivers only, no simulated
truth); this command wires the bench file, the devices, the files and the plots.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import click

from labctl import __version__
from labctl.config import BenchConfig, load_bench
from labctl.errors import UsageError
from labctl.options import bench_option, out_option
from labctl.progress import progress


def geometry_of(cfg: BenchConfig) -> Any:
    """The bench geometry ``calibration`` works in (SLM pixels, beam order)."""
    from calibration.geometry import BenchGeometry

    first = cfg.input_slm
    return BenchGeometry(
        name=cfg.name,
        wavelength_m=cfg.wavelength_m,
        pitch_m=first.pitch_m,
        shape=(first.roi[3], first.roi[2]),
        upsample=first.upsample,
        planes=tuple(s.name for s in (cfg.input_slm, *cfg.layer_slms)),
        distances_m=tuple(cfg.distances_m),
        method=cfg.propagation,
        pad_factor=cfg.pad_factor,
    )


def registration_path(out_dir: Path, cfg: BenchConfig) -> Path:
    return Path(out_dir) / f"{cfg.name}.registration.json"


@contextmanager
def _single_thread() -> Iterator[None]:
    # The bench model's FFTs are small (a few hundred pixels a side): threads add
    # nothing and, on a shared machine, oversubscription slows them tenfold.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _input_flat_gray(out_dir: Path, cfg: BenchConfig) -> int:
    """Brightest gray of the input SLM's calibration if there is one, else 255."""
    import numpy as np

    from calibration.files import calibration_path, load_calibration

    path = calibration_path(out_dir, cfg.input_slm.name)
    if not path.exists():
        return 255
    try:
        return int(np.argmax(load_calibration(path)["amplitude"]))
    except Exception:  # noqa: BLE001 - an unreadable old file must not block a new calibration
        return 255


def plot_calibration(data: dict[str, Any], path: Path) -> Path:
    """Phase and amplitude vs gray with 1-sigma error bars, as a PNG written atomically."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sims.io import write_bytes_atomic

    gray = data["gray"]
    fig, (ax_p, ax_a) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    ax_p.errorbar(gray, data["phase_rad"], yerr=data["phase_std_rad"], fmt=".", ms=3, lw=0.8, capsize=0)
    ax_p.set_ylabel("phase rel. gray 0 (rad)")
    ax_p.grid(alpha=0.3)
    ax_a.errorbar(gray, data["amplitude"], yerr=data["amplitude_std"], fmt=".", ms=3, lw=0.8, capsize=0, color="C1")
    ax_a.set_ylabel("amplitude (rel. max)")
    ax_a.set_xlabel("gray level")
    ax_a.set_ylim(0, 1.05)
    ax_a.grid(alpha=0.3)
    fig.suptitle(f"{data['slm']['name']} ({data['slm'].get('serial') or 'no serial'}), {data['created']}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return write_bytes_atomic(path, buf.getvalue())


def plot_compare(a: dict[str, Any], b: dict[str, Any], labels: tuple[str, str], path: Path) -> Path:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from sims.io import write_bytes_atomic

    fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True)
    for data, label in zip((a, b), labels):
        axes[0, 0].plot(data["gray"], data["phase_rad"], label=label)
        axes[1, 0].plot(data["gray"], data["amplitude"], label=label)
    axes[0, 1].plot(a["gray"], np.subtract(b["phase_rad"], a["phase_rad"]), color="C3")
    axes[1, 1].plot(a["gray"], np.subtract(b["amplitude"], a["amplitude"]), color="C3")
    axes[0, 0].set_ylabel("phase (rad)")
    axes[1, 0].set_ylabel("amplitude")
    axes[0, 1].set_ylabel("Δ phase (rad)")
    axes[1, 1].set_ylabel("Δ amplitude")
    for ax in axes[1]:
        ax.set_xlabel("gray level")
    for ax in axes.ravel():
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return write_bytes_atomic(path, buf.getvalue())


def _compare(paths: tuple[Path, Path], out_dir: Path, as_json: bool) -> None:
    from calibration.files import compare, load_calibration

    a, b = (load_calibration(p) for p in paths)
    drift = compare(a, b)
    stem = lambda p: Path(p).name.removesuffix(".json").removesuffix(".cal")  # noqa: E731
    plot = plot_compare(a, b, (stem(paths[0]), stem(paths[1])), out_dir / f"drift_{stem(paths[0])}_vs_{stem(paths[1])}.png")
    drift["plot"] = str(plot)
    if as_json:
        click.echo(json.dumps(drift, indent=2))
        return
    click.echo(f"drift {paths[0]} -> {paths[1]}")
    click.echo(f"  phase:     rms {drift['phase_rms_rad']:.4f} rad, max {drift['phase_max_rad']:.4f} rad "
               f"(gray {drift['phase_max_gray']})")
    click.echo(f"  amplitude: rms {drift['amplitude_rms']:.4f}, max {drift['amplitude_max']:.4f} "
               f"(gray {drift['amplitude_max_gray']})")
    if "phase_significant_levels" in drift:
        click.echo(f"  levels beyond 3 sigma: phase {drift['phase_significant_levels']}, "
                   f"amplitude {drift['amplitude_significant_levels']}")
    if "warning" in drift:
        click.echo(f"  warning: {drift['warning']}")
    click.echo(f"  plot: {plot}")


def _registration(acq: Any, geom: Any, cfg: BenchConfig, path: Path, bench: Any) -> Any:
    from calibration.registration import register_camera, save_registration

    layers = [s.name for s in cfg.layer_slms][-2:]
    reg = register_camera(acq, geom, layers)
    reg.meta.update({"bench": {"name": cfg.name, "sha256": cfg.sha256}, "software": {"version": __version__},
                     "camera_roi": list(bench.camera.roi)})
    save_registration(path, reg)
    return reg


@click.command(help="Measure the phase and amplitude of all 256 gray levels of an SLM in situ, register the "
               "camera on the detector plane, or compare two calibrations (--compare A B).")
@bench_option()
@click.option("--slm", "slms", multiple=True, metavar="NAME",
              help="SLM to calibrate (repeat for several; `all` for every SLM of the bench).")
@click.option("--registration", "do_registration", is_flag=True,
              help="Measure the detector-plane → camera transform (done anyway when none is stored).")
@out_option("calibrations", "Where calibration files, plots and the registration go.")
@click.option("--average", "n_average", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Exposures averaged per gray level.")
@click.option("--compare", "compare_paths", nargs=2, type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="A B", help="Show the drift between two calibration files (no bench needed).")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def calibrate(bench: str, slms: tuple[str, ...], do_registration: bool, out: Path, n_average: int,
              compare_paths: tuple[Path, Path] | None, as_json: bool) -> None:
    if compare_paths:
        if slms or do_registration:
            raise UsageError("--compare takes two calibration files and no --slm/--registration")
        _compare(compare_paths, out, as_json)
        return
    if not slms and not do_registration:
        raise UsageError("nothing to do: give --slm NAME (or `all`), --registration, or --compare A B")
    cfg = load_bench(bench)
    # The input SLM goes first: the layers are then measured with it at its brightest level.
    every = [cfg.input_slm.name, *(s.name for s in cfg.layer_slms)]
    names = every if "all" in slms else list(dict.fromkeys(slms))
    for name in names:
        cfg.slm(name)  # a clear ConfigError naming the bench's SLMs

    from calibration.acquire import Acquisition
    from calibration.files import calibration_dict, calibration_path, plot_path, write_calibration
    from calibration.registration import load_registration
    from calibration.response import GRAYS, measure_response
    from labctl.bench import open_bench

    geom = geometry_of(cfg)
    reg_path = registration_path(out, cfg)
    summary: dict[str, Any] = {"bench": cfg.name, "slms": {}}
    flat = {cfg.input_slm.name: _input_flat_gray(out, cfg)}
    with _single_thread(), open_bench(cfg) as b:
        acq = Acquisition(b.camera, b.laser, b.shutter, b.slms, flat)
        stale = False
        if names and not do_registration and reg_path.exists():
            stored = load_registration(reg_path)
            # A changed bench file (distances, ROI, camera) may have moved the detector plane: measure again.
            stale = stored.meta.get("bench", {}).get("sha256") not in (None, cfg.sha256)
            if stale and not as_json:
                click.echo(f"{reg_path} was measured with another version of the bench file; measuring it again")
        if do_registration or stale or (names and not reg_path.exists()):
            reg = _registration(acq, geom, cfg, reg_path, b)
            summary["registration"] = {"file": str(reg_path), "rms_px": reg.rms_px, "points": reg.points,
                                       "pixels_per_neuron": reg.pixels_per_neuron}
            if not as_json:
                click.echo(f"registration: {reg.points} spots, residual {reg.rms_px:.2f} px rms, "
                           f"{reg.pixels_per_neuron:.3f} camera px per neuron -> {reg_path}")
        else:
            reg = load_registration(reg_path) if names else None
        if reg is not None and tuple(reg.sensor_shape) != tuple(b.camera.sensor_shape):
            raise UsageError(f"{reg_path}: registration was measured on a {reg.sensor_shape} sensor, this camera is "
                             f"{b.camera.sensor_shape}; run `labctl calibrate --registration`")
        for name in names:
            with progress(total=GRAYS, desc=f"calibrate {name}", unit="level") as bar:
                resp = measure_response(acq, geom, name, reg, n_average=n_average, progress=bar.update)
            slm_cfg = cfg.slm(name)
            data = calibration_dict(resp, serial=slm_cfg.serial, wavelength_m=cfg.wavelength_m, bench_name=cfg.name,
                                    bench_sha256=cfg.sha256, software_version=__version__)
            path = write_calibration(out, data)
            plot = plot_calibration(data, plot_path(calibration_path(out, name)))
            info = {
                "file": str(path), "plot": str(plot), "frames": resp.frames, "bench_time_s": resp.bench_time_s,
                "wall_time_s": resp.wall_time_s, "reference_gray": resp.reference_gray,
                "phase_range_rad": float(resp.phase_rad.max() - resp.phase_rad.min()),
                "amplitude_min": float(resp.amplitude.min()), **resp.diagnostics,
            }
            summary["slms"][name] = info
            if not as_json:
                click.echo(f"{name}: phase range {info['phase_range_rad']:.2f} rad, amplitude min "
                           f"{info['amplitude_min']:.2f}, {resp.frames} frames, bench time {resp.bench_time_s:.2f} s, "
                           f"wall {resp.wall_time_s:.1f} s -> {path}")
            if name == cfg.input_slm.name:
                # Later SLMs of this run see the input at its brightest measured level.
                acq.flat = {**acq.flat, name: int(resp.amplitude.argmax())}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
