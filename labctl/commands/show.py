"""``labctl show``: put one map on one SLM and keep it there (an operator's eye check)."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from labctl.errors import UsageError
from labctl.options import bench_option


def load_map(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A uint8 map of exactly ``shape`` (rows, cols) from a .npy or 8-bit grayscale .png file."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise UsageError(f"{path}: map file not found")
    if suffix == ".npy":
        try:
            gray = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise UsageError(f"{path}: not a readable .npy array ({e})") from None
        if gray.dtype != np.uint8:
            raise UsageError(f"{path}: map dtype is {gray.dtype}, expected uint8 (values 0..255)")
    elif suffix == ".png":
        import cv2

        gray = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if gray is None:
            raise UsageError(f"{path}: not a readable PNG image")
        if gray.ndim != 2:
            raise UsageError(f"{path}: PNG has {gray.shape[2]} channels, expected an 8-bit grayscale PNG")
        if gray.dtype != np.uint8:
            raise UsageError(f"{path}: PNG is {gray.dtype.itemsize * 8}-bit, expected an 8-bit grayscale PNG")
    else:
        raise UsageError(f"{path}: unknown map format {suffix or '(none)'!r}, expected .npy (uint8) or .png (8-bit gray)")
    if gray.shape != shape:
        raise UsageError(
            f"{path}: map is {'x'.join(map(str, gray.shape))} (rows x cols), the SLM ROI is "
            f"{shape[0]}x{shape[1]}; maps are never resized"
        )
    return gray


def _stop_on_sigterm() -> None:
    """Treat SIGTERM like Ctrl-C, so a killed `show` still blanks its SLM."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def _ignore_interrupts() -> None:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


@click.command(help="Show MAP (.npy uint8 or 8-bit gray PNG, exactly the ROI size) on one SLM until Ctrl-C.")
@bench_option()
@click.option("--slm", "slm_name", required=True, metavar="NAME", help="The SLM to show the map on.")
@click.option("--seconds", type=click.FloatRange(min=0), default=None,
              help="Return after this many seconds instead of waiting for Ctrl-C.")
@click.argument("map_path", metavar="MAP", type=click.Path(path_type=Path, dir_okay=False))
def show(bench: str, slm_name: str, seconds: float | None, map_path: Path) -> None:
    from labctl.bench import open_slm
    from labctl.config import load_bench

    cfg = load_bench(bench)
    slm_cfg = cfg.slm(slm_name)
    shape = (slm_cfg.roi[3], slm_cfg.roi[2])
    gray = load_map(map_path, shape)
    slm = open_slm(cfg, slm_name)
    _stop_on_sigterm()
    interrupted = False
    try:
        with slm:
            slm.show(gray)
            x, y, w, h = slm.roi
            until = f"for {seconds:g} s" if seconds is not None else "until Ctrl-C"
            click.echo(f"showing {map_path} on SLM {slm_name!r} (ROI x={x} y={y} w={w} h={h}) {until}", err=True)
            try:
                if seconds is not None:
                    slm.hold(seconds)
                else:
                    while True:
                        slm.hold(3600.0)
            except KeyboardInterrupt:
                interrupted = True
                _ignore_interrupts()  # a second Ctrl-C must not cut the blanking short
    except KeyboardInterrupt:
        if interrupted:
            raise
        interrupted = True  # stopped before the map was up; the with-block has blanked
    click.echo(f"SLM {slm_name!r} blanked", err=True)
