"""Does watching the bench slow it down? Deploy throughput with 0 vs 5 live-view browsers.

Runs the simulated bench in this process exactly as ``labctl serve --bench sim
--http`` does (BenchServer + the web view's feed and HTTP thread), then times
deploy-shaped batches: a ``run`` job of N input maps with detector regions and
frames returned, waited for and fetched page by page, as ``labctl deploy`` does.

Viewers are separate processes, like browsers: each long-polls
``/api/frame.jpg`` again as soon as it has decoded the previous frame and fetches
``/api/state`` once a second, which is what the page's script does. Trials
alternate (0, 5, 5, 0, 0, 5, ...) so slow drifts of the shared machine cancel, and
the figure is the ratio of median throughputs measured in the same run.

    .venv/bin/python benchmarks/viewers_throughput.py --images 40 --trials 6
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing as mp
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def viewer(port: int, stop: "mp.synchronize.Event", counts: "mp.sharedctypes.Synchronized",
           cpu: "mp.sharedctypes.Synchronized") -> None:
    """One browser: newest frame as fast as it can draw it, the state every second."""
    import cv2

    cpu0 = time.process_time()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    seq, next_state = 0, 0.0
    while not stop.is_set():
        try:
            conn.request("GET", f"/api/frame.jpg?after={seq}&scale=full")
            r = conn.getresponse()
            body = r.read()
            if r.status == 200:
                seq = int(r.getheader("X-Frame-Seq"))
                cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)  # the browser decodes it too
                with counts.get_lock():
                    counts.value += 1
            if time.monotonic() >= next_state:
                conn.request("GET", "/api/state")
                conn.getresponse().read()
                next_state = time.monotonic() + 1.0
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            time.sleep(0.1)
    conn.close()
    with cpu.get_lock():
        cpu.value += time.process_time() - cpu0


VIEWER_THREADS = ("labctl-live-feed", "labctl-http")


def viewer_thread_cpu() -> float:
    """CPU seconds used so far by this process's live-view threads (feed, HTTP, its worker threads).

    Read per thread from /proc (Linux): a count of work done, unaffected by how busy
    the rest of the machine is, unlike wall-clock throughput.
    """
    tick = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name for t in threading.enumerate()}
    total = 0.0
    for tid in os.listdir("/proc/self/task"):
        name = names.get(int(tid), "")
        if name not in VIEWER_THREADS and not name.startswith("AnyIO"):
            continue
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread just ended
        total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return total


def deploy_batch(client, maps: np.ndarray, regions: list[list[int]]) -> tuple[float, float]:
    """One deploy-shaped batch; returns (images per second, CPU seconds of this process per image).

    This process holds the bench server, its device thread and the whole web view,
    so its CPU time is the bench's cost, counted whatever else the machine runs.
    """
    t0, c0 = time.perf_counter(), time.process_time()
    job = client.run(maps, regions=regions, return_frames=True)
    client.wait_job(job, timeout_s=600, poll_s=0.05)
    records, frames = client.job_records(job)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    assert len(records) == len(maps) and len(frames) == len(maps)
    return len(maps) / dt, dc / len(maps)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=40, help="input maps per run job")
    ap.add_argument("--trials", type=int, default=6, help="trials per condition (alternating)")
    ap.add_argument("--viewers", type=int, default=5)
    args = ap.parse_args()

    from labctl.bench import open_bench
    from labctl.client import BenchClient
    from labctl.config import load_bench
    from labctl.server import BenchServer
    from labctl.web.http import HttpAddress, bind_socket
    from labctl.web.service import WebView

    cfg = load_bench("sim")
    rng = np.random.default_rng(0)
    ctx = mp.get_context("spawn")
    with open_bench(cfg) as devices:
        server = BenchServer(devices, bind="tcp://127.0.0.1:*", bench_name=cfg.name)
        server.start()
        web = WebView(server, bind_socket(HttpAddress("127.0.0.1", 0)), fps=10).start()
        port = web.http.port
        try:
            with BenchClient(server.endpoint, timeout_s=30) as client:
                client.acquire_lease(ttl_s=3600)
                client.set_laser(True)
                client.set_shutter(True)
                shape = tuple(server.state.description["slms"][cfg.input_slm.name]["shape"])
                regions = [[200 + 20 * (k // 5), 250 + 20 * (k % 5), 12, 12] for k in range(10)]
                deploy_batch(client, rng.integers(0, 256, (4, *shape), dtype=np.uint8), regions)  # warm caches
                rates: dict[int, list[float]] = {0: [], args.viewers: []}
                cpus: dict[int, list[float]] = {0: [], args.viewers: []}
                webs: dict[int, list[float]] = {0: [], args.viewers: []}
                viewer_cpu: list[float] = []
                frames_seen: list[int] = []
                order = []
                for t in range(args.trials):
                    pair = [0, args.viewers] if t % 2 == 0 else [args.viewers, 0]
                    order.extend(pair)
                for n in order:
                    maps = rng.integers(0, 256, (args.images, *shape), dtype=np.uint8)
                    stop = ctx.Event()
                    counts = ctx.Value("i", 0)
                    vcpu = ctx.Value("d", 0.0)
                    procs = [ctx.Process(target=viewer, args=(port, stop, counts, vcpu), daemon=True)
                             for _ in range(n)]
                    for p in procs:
                        p.start()
                    if n:
                        t_wait = time.monotonic() + 30
                        while counts.value < 2 * n and time.monotonic() < t_wait:  # every browser is watching
                            time.sleep(0.05)
                    drawn0, web0 = counts.value, viewer_thread_cpu()
                    rate, cpu = deploy_batch(client, maps, regions)
                    drawn, web_cpu = counts.value - drawn0, (viewer_thread_cpu() - web0) / args.images
                    stop.set()
                    for p in procs:
                        p.join(10)
                    rates[n].append(rate)
                    cpus[n].append(cpu)
                    webs[n].append(web_cpu)
                    if n:
                        frames_seen.append(drawn)
                        viewer_cpu.append(vcpu.value)
                    print(f"  {n} viewers: {rate:6.2f} images/s, bench process {1e3 * cpu:6.1f} ms CPU/image, "
                          f"of which live view {1e3 * web_cpu:5.1f} ms"
                          + (f"  ({drawn} frames drawn during the batch)" if n else ""), flush=True)
                client.release_lease()
        finally:
            web.stop()
            server.close()
    # each trial ran one batch of each condition back to back: their ratio cancels slow drifts of the machine
    paired = sorted(v / z for v, z in zip(rates[args.viewers], rates[0]))
    q1, _, q3 = statistics.quantiles(paired, n=4) if len(paired) > 1 else (paired[0],) * 3
    base, watched = statistics.median(rates[0]), statistics.median(rates[args.viewers])
    drop = 1 - watched / base
    print(f"\nrun job of {args.images} images, {args.trials} trials each, alternating")
    print(f"0 viewers: median {base:.2f} images/s  {[round(r, 2) for r in rates[0]]}")
    print(f"{args.viewers} viewers: median {watched:.2f} images/s  {[round(r, 2) for r in rates[args.viewers]]}")
    # How sure the paired median is: its 90 % bootstrap interval (the batches are noisy on a shared machine).
    boot = np.median(np.random.default_rng(0).choice(paired, (2000, len(paired))), axis=1)
    lo, hi = np.quantile(boot, [0.05, 0.95])
    print(f"paired throughput ratio (5 viewers / 0 viewers, same trial): median {statistics.median(paired):.3f}, "
          f"quartiles {q1:.3f}..{q3:.3f}, 90 % bootstrap interval of the median {lo:.3f}..{hi:.3f}")
    print(f"ratio of medians {watched / base:.3f} (drop {100 * drop:+.1f} %); "
          f"frames drawn per viewer per batch: median {statistics.median(frames_seen) / args.viewers:.0f}")
    c0, c5 = statistics.median(cpus[0]), statistics.median(cpus[args.viewers])
    w5 = statistics.median(webs[args.viewers])
    print(f"bench process CPU per image: {1e3 * c0:.1f} ms with 0 viewers, {1e3 * c5:.1f} ms with {args.viewers} "
          f"(+{100 * (c5 / c0 - 1):.1f} %)")
    print(f"live-view threads with {args.viewers} viewers: {1e3 * w5:.1f} ms CPU per image = "
          f"{100 * w5 / c0:.1f} % of the bench's CPU per image without viewers "
          f"(with 0 viewers: {1e3 * statistics.median(webs[0]):.1f} ms)")
    print(f"the {args.viewers} viewer processes (browsers) used {statistics.median(viewer_cpu):.2f} CPU s per batch in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
