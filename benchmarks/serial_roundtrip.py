"""Serial round trip of the laser driver on a pseudo-terminal, against bare pyserial on the same pty.

Run:  .venv/bin/python benchmarks/serial_roundtrip.py [--n 500]

The simulated laser (drivers.sim.serial_instruments) serves its line protocol on
a pty from a thread. Measured in the same run: a bare pyserial ``write`` +
``read_until`` of ``OUT?`` (baseline: what the tty and the simulator cost), the
driver's ``laser.is_on`` (transport: input flush, lock, terminators, error check,
parse) and a set command ``laser.on()`` (acknowledged with ``OK``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import serial  # noqa: E402

from drivers.laser import SerialLaser  # noqa: E402
from drivers.serial_io import SerialTransport  # noqa: E402
from drivers.sim.serial_instruments import LaserModel, PtyInstrument  # noqa: E402


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    args = ap.parse_args()
    with PtyInstrument(LaserModel()) as pty:
        ser = serial.Serial(pty.port, 9600, timeout=1.0)

        def bare() -> None:
            ser.write(b"OUT?\n")
            if not ser.read_until(b"\r\n").endswith(b"\r\n"):
                raise SystemExit("bare pyserial read timed out")

        timed(bare, 20)
        t_bare = timed(bare, args.n)
        ser.close()
        laser = SerialLaser(SerialTransport(pty.port, timeout_s=1.0)).connect()
        timed(lambda: laser.is_on, 20)
        t_query = timed(lambda: laser.is_on, args.n)
        t_set = timed(laser.on, args.n)
        laser.disconnect()

    def row(name: str, v: list[float]) -> str:
        med = statistics.median(v)
        p95 = sorted(v)[int(0.95 * (len(v) - 1))]
        return f"| {name} | {med * 1e3:.3f} | {p95 * 1e3:.3f} | {med / statistics.median(t_bare):.2f} |"

    print(f"pty round trips, {args.n} each")
    print("| measurement | median ms | p95 ms | ratio to bare |")
    print("|---|---:|---:|---:|")
    print(row("bare pyserial `OUT?` (baseline)", t_bare))
    print(row("driver query `laser.is_on`", t_query))
    print(row("driver set `laser.on()`", t_set))


if __name__ == "__main__":
    main()
