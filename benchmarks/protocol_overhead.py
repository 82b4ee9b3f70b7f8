"""What the bench protocol costs per request, against a bare ZMQ REQ/REP echo.

Run:  .venv/bin/python benchmarks/protocol_overhead.py [--bench sim] [--n 2000]

Three processes on this machine, talking over 127.0.0.1:
- a bare REQ/REP echo server (the baseline: what ZMQ alone costs for the same bytes),
- a labctl bench server on the given bench (it also times ``slm.show`` called
  directly on the device, so device time can be taken out),
- this process as the client.

Reported: median (and 95th percentile) round trip of ``ping`` and of ``slm.show``
of an ROI-sized map (200x200 on the sim bench), the echo baseline for the same
payload, and the protocol overhead = labctl round trip - device time - echo round
trip. Figures are medians of many requests, so one hiccup does not move them.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _echo_server(ready: "mp.Queue", stop: "mp.Event") -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    sock.bind("tcp://127.0.0.1:*")
    ready.put(sock.last_endpoint.decode())
    while not stop.is_set():
        if sock.poll(100):
            sock.send_multipart(sock.recv_multipart(copy=False), copy=False)
    sock.close(linger=0)
    ctx.term()


def _bench_server(bench_spec: str, ready: "mp.Queue", stop: "mp.Event", reps: int) -> None:
    from labctl.bench import open_bench
    from labctl.config import load_bench
    from labctl.server import BenchServer

    cfg = load_bench(bench_spec)
    with open_bench(cfg) as devices:
        slm = devices.input_slm
        gray = np.random.default_rng(0).integers(0, 256, slm.shape, dtype=np.uint8)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            slm.show(gray)
            times.append(time.perf_counter() - t0)
        server = BenchServer(devices, bind="tcp://127.0.0.1:*", bench_name=cfg.name)
        endpoint = server.start()
        ready.put((endpoint, slm.name, list(slm.shape), statistics.median(times)))
        stop.wait()
        server.close()


def _timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _ms(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return 1e3 * statistics.median(s), 1e3 * s[int(0.95 * (len(s) - 1))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", default="sim", help="bench file or `sim` (default)")
    ap.add_argument("--n", type=int, default=2000, help="pings per measurement (map uploads: n/4)")
    args = ap.parse_args()
    n_ping, n_map = args.n, max(50, args.n // 4)

    from labctl.client import BenchClient

    mpc = mp.get_context("spawn")
    stop = mpc.Event()
    q_echo, q_bench = mpc.Queue(), mpc.Queue()
    procs = [mpc.Process(target=_echo_server, args=(q_echo, stop)),
             mpc.Process(target=_bench_server, args=(args.bench, q_bench, stop, n_map))]
    for p in procs:
        p.start()
    try:
        echo_ep = q_echo.get(timeout=60)
        bench_ep, slm_name, shape, device_s = q_bench.get(timeout=300)
        gray = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)

        ctx = zmq.Context()
        req = ctx.socket(zmq.REQ)
        req.linger = 0
        req.connect(echo_ep)

        def echo(payload: list) -> None:
            req.send_multipart(payload, copy=False)
            req.recv_multipart(copy=False)

        small = [b'{"v":1,"id":"0123456789abcdef0123456789abcdef","op":"ping","args":{}}']
        big = [small[0], gray.tobytes()]
        _timed(lambda: echo(small), 200)  # warm-up: connections, caches
        echo_small = _timed(lambda: echo(small), n_ping)
        echo_big = _timed(lambda: echo(big), n_map)

        with BenchClient(bench_ep, timeout_s=30) as client:
            client.acquire_lease(ttl_s=600)
            _timed(client.ping, 200)
            ping = _timed(client.ping, n_ping)
            show = _timed(lambda: client.show(slm_name, gray), n_map)
        req.close()
        ctx.term()
    finally:
        stop.set()
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()

    e_small, e_small95 = _ms(echo_small)
    e_big, e_big95 = _ms(echo_big)
    p_med, p95 = _ms(ping)
    s_med, s95 = _ms(show)
    dev_ms = device_s * 1e3
    ping_over = p_med - e_small
    show_over = s_med - dev_ms - e_big
    print(f"# labctl protocol overhead ({platform.processor() or platform.machine()}, "
          f"{mp.cpu_count()} CPUs, bench {args.bench!r}, {n_ping} pings, {n_map} map uploads)")
    print("| measurement | median ms | p95 ms |")
    print("|---|---:|---:|")
    print(f"| bare REQ/REP echo, header only | {e_small:.3f} | {e_small95:.3f} |")
    print(f"| labctl `ping` round trip | {p_med:.3f} | {p95:.3f} |")
    print(f"| bare REQ/REP echo, header + {shape[0]}x{shape[1]} uint8 | {e_big:.3f} | {e_big95:.3f} |")
    print(f"| `slm.show` called directly on the device (no network) | {dev_ms:.3f} | |")
    print(f"| labctl `slm.show` {shape[0]}x{shape[1]} round trip | {s_med:.3f} | {s95:.3f} |")
    print()
    print(f"protocol overhead, ping: {ping_over:.3f} ms ({p_med / e_small:.2f}x the bare echo)")
    print(f"protocol overhead, map upload: {show_over:.3f} ms "
          f"(round trip - device - bare echo; round trip - device = {(s_med - dev_ms) / e_big:.2f}x the bare echo)")
    goal = 2.0
    verdict = "within" if max(ping_over, show_over) <= goal else "OVER"
    print(f"goal <= {goal:g} ms per image: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
