"""HDMI SLM `show` latency under Xvfb: from the call until the X server returns the new pixels.

Run:  .venv/bin/python benchmarks/hdmi_latency.py [--n 40] [--size 1280x720] [--roi 200]

Starts its own Xvfb (Debian package xvfb), opens an HdmiSlm on it with settle_s = 0,
and for each of ``--n`` random ROI maps measures: the time ``show`` takes to return,
and the time until a screen read-back (Pillow ImageGrab over XCB) first shows the
new map exactly. The baseline, measured in the same run, is one bare read-back of
the same screen — the resolution of the latency figure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.hdmi import HdmiSlm  # noqa: E402
from drivers.virtual_display import VirtualDisplay  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--roi", type=int, default=200, help="side of the square ROI, SLM pixels")
    args = ap.parse_args()
    from PIL import ImageGrab

    width, height = (int(v) for v in args.size.split("x"))
    side = args.roi
    x, y = (width - side) // 2, (height - side) // 2
    rng = np.random.default_rng(0)
    returns, visible, grabs = [], [], []
    with VirtualDisplay(width, height) as vd:
        with HdmiSlm("bench", 0, (x, y, side, side), (height, width), 8e-6, settle_s=0.0) as slm:
            for i in range(args.n + 3):
                gray = rng.integers(0, 256, (side, side), dtype=np.uint8)
                t0 = time.perf_counter()
                slm.show(gray)
                t1 = time.perf_counter()
                while True:
                    g0 = time.perf_counter()
                    screen = np.asarray(ImageGrab.grab(xdisplay=vd.display))
                    g1 = time.perf_counter()
                    if np.array_equal(screen[y : y + side, x : x + side, 0], gray):
                        break
                    if g1 - t0 > 5.0:
                        diff = screen[y : y + side, x : x + side, 0].astype(int) - gray
                        raise SystemExit(f"map {i} never became visible within 5 s ({np.count_nonzero(diff)} pixels differ)")
                    slm.hold(0.001)
                if i >= 3:  # the first maps pay for Qt's warm-up
                    returns.append(t1 - t0)
                    visible.append(g1 - t0)
                    grabs.append(g1 - g0)

    def ms(v: list[float]) -> str:
        return f"{statistics.median(v) * 1e3:.2f} | {sorted(v)[int(0.95 * (len(v) - 1))] * 1e3:.2f}"

    base = statistics.median(grabs)
    print(f"Xvfb {width}x{height}, ROI {side}x{side}, {args.n} maps")
    print("| measurement | median ms | p95 ms |")
    print("|---|---:|---:|")
    print(f"| one screen read-back (baseline) | {ms(grabs)} |")
    print(f"| `show` returns | {ms(returns)} |")
    print(f"| `show` call → pixels readable (incl. the last read-back) | {ms(visible)} |")
    print(f"call → readable = {statistics.median(visible) / base:.1f}x one read-back")


if __name__ == "__main__":
    main()
