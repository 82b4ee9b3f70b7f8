"""HDMI SLM `show` latency under Xvfb: from the call until the X server holds the new pixels.

Run:  .venv/bin/python benchmarks/hdmi_latency.py [--n 40] [--size 1280x720] [--roi 200]

Starts its own Xvfb (Debian package xvfb) and opens an HdmiSlm on it with
settle_s = 0. For ``--n`` random ROI maps it measures, in the same run:
- baseline: one bare read-back of the ROI from the X server (libX11 XGetImage);
- verified ``show`` (the default): returns only once its own read-back matched;
  an independent full-screen grab (Pillow) right after must match too;
- unverified ``show`` (``slm.verify = False``, same window): the call returns,
  then the ROI is polled until it matches — call → pixels readable.
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
from drivers.x11_readback import ScreenReader  # noqa: E402


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
    reads, raw, verified = [], [], []
    mismatched = 0
    with VirtualDisplay(width, height) as vd:
        reader = ScreenReader()
        with HdmiSlm("bench", 0, (x, y, side, side), (height, width), 8e-6, settle_s=0.0) as slm:
            for i in range(args.n + 3):
                gray = rng.integers(0, 256, (side, side), dtype=np.uint8)
                t0 = time.perf_counter()
                slm.show(gray)
                t1 = time.perf_counter()
                screen = np.asarray(ImageGrab.grab(xdisplay=vd.display))
                mismatched += not np.array_equal(screen[y : y + side, x : x + side, 1], gray)
                if i >= 3:  # the first maps pay for Qt's warm-up
                    verified.append(t1 - t0)
            rebuilds = slm.status()["window_rebuilds"]
            # Same (now known-good) window without verification: poll until the pixels are there.
            slm.verify = False
            for i in range(args.n):
                gray = rng.integers(0, 256, (side, side), dtype=np.uint8)
                t0 = time.perf_counter()
                slm.show(gray)
                while True:
                    r0 = time.perf_counter()
                    ok = np.array_equal(reader.read(x, y, side, side)[..., 0], gray)
                    r1 = time.perf_counter()
                    if ok:
                        break
                    if r1 - t0 > 5.0:
                        raise SystemExit(f"map {i} never became visible within 5 s (unverified)")
                    slm.hold(0.0005)
                raw.append(r1 - t0)
                reads.append(r1 - r0)
        reader.close()

    def ms(v: list[float]) -> str:
        return f"{statistics.median(v) * 1e3:.2f} | {sorted(v)[int(0.95 * (len(v) - 1))] * 1e3:.2f}"

    base = statistics.median(reads)
    print(f"Xvfb {width}x{height}, ROI {side}x{side}, {args.n} maps each")
    print("| measurement | median ms | p95 ms | ratio to one read-back |")
    print("|---|---:|---:|---:|")
    print(f"| one ROI read-back, XGetImage (baseline) | {ms(reads)} | 1.0 |")
    print(f"| unverified `show` call → pixels readable | {ms(raw)} | {statistics.median(raw) / base:.1f} |")
    print(f"| verified `show` (returns when read-back matches) | {ms(verified)} | "
          f"{statistics.median(verified) / base:.1f} |")
    print(f"independent full-screen grabs after verified show: {mismatched} of {args.n + 3} mismatched; "
          f"window rebuilds: {rebuilds}")


if __name__ == "__main__":
    main()
