"""The server's live-view slot: viewers get frames the bench grabbed anyway and never queue device work."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from labctl.client import BenchClient
from labctl.protocol import BAD_ARGS, WireError
from tests.labctl.conftest import FAKE_SHAPE
from tests.labctl.fakes import FakeBench

SHAPE = FAKE_SHAPE


def frame(client, since=-1):
    reply = client.call("view.frame", {"since": since})
    return reply.result, reply.buffers


def test_unwatched_server_never_grabs_for_viewers(server, bench):
    time.sleep(0.6)
    assert bench.camera.grabs == 0 and server.state.live.idle_grabs == 0


def test_a_grab_by_a_client_is_what_viewers_see(client, bench):
    got = client.grab()
    r, bufs = frame(client)
    assert r["new"] and r["source"] == "camera.grab" and r["seq"] >= 1
    # the viewer may already see a newer idle frame; the one it was handed is a real frame of the same camera
    assert bufs[0].shape == got.data.shape and bufs[0].dtype == np.float32
    r2, bufs2 = frame(client, since=r["seq"] + 10**6)
    assert not r2["new"] and bufs2 == []  # nothing newer: metadata only, no pixels sent


def test_idle_bench_grabs_at_most_every_idle_period_however_many_viewers(server, bench):
    live = server.state.live
    stop = threading.Event()
    polls = [0]

    def viewer():
        with BenchClient(server.endpoint, timeout_s=5) as c:
            seq = -1
            while not stop.is_set():
                r, _ = frame(c, seq)
                seq = r["seq"] if r["new"] else seq
                polls[0] += 1

    threads = [threading.Thread(target=viewer) for _ in range(5)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join()
    grabs = live.idle_grabs
    assert polls[0] > 50  # the viewers really hammered the server
    # 1.5 s at one grab per 0.1 s at most (plus the quiet wait), whatever five viewers asked for
    assert 3 <= grabs <= 1.5 / live.idle_grab_s + 1
    assert bench.camera.grabs == grabs


def test_viewers_cause_no_extra_grab_while_a_job_runs(server, bench, client):
    client.acquire_lease()
    bench.camera.delay_s = 0.05
    maps = np.random.default_rng(0).integers(0, 256, (20, *SHAPE), dtype=np.uint8)
    seen = set()
    with BenchClient(server.endpoint, timeout_s=5) as viewer:
        frame(viewer)  # watched from now on
        time.sleep(0.05)
        before = bench.camera.grabs
        job = client.run(maps, regions=[[0, 0, 4, 4]])
        while client.job_status(job)["state"] not in ("done", "failed", "cancelled"):
            r, _ = frame(viewer, -1)
            seen.add(r.get("source"))
            time.sleep(0.01)
    assert client.job_status(job)["state"] == "done"
    # idle grabs may happen before the job starts; none while it runs
    assert bench.camera.grabs - before - 20 <= 1
    assert any(s and s.startswith("run step") for s in seen)


def test_view_maps_returns_each_slm_map_only_when_changed(server, bench, client):
    r0 = client.call("view.maps", {"since": -1}).result  # starts watching
    deadline = time.time() + 3
    while True:
        reply = client.call("view.maps", {"since": -1})
        if reply.result["slms"] or time.time() > deadline:
            break
        time.sleep(0.05)
    assert reply.result["slms"] == ["in", "l1", "l2"] and all(b.dtype == np.uint8 for b in reply.buffers)
    seq = reply.result["seq"]
    same = client.call("view.maps", {"since": seq})
    assert not same.result["new"] and same.buffers == []
    client.acquire_lease()
    gray = np.full(SHAPE, 77, np.uint8)
    client.show("l2", gray)
    deadline = time.time() + 3
    while time.time() < deadline:
        reply = client.call("view.maps", {"since": seq})
        if reply.result["new"]:
            break
        time.sleep(0.05)
    assert reply.result["new"] and reply.result["seq"] > seq >= r0["seq"]
    np.testing.assert_array_equal(reply.buffers[reply.result["slms"].index("l2")], gray)


@pytest.mark.parametrize("args", [{"since": "x"}, {"since": -2}, {"bogus": 1}])
def test_view_ops_check_their_arguments(client, args):
    with pytest.raises(WireError) as e:
        client.call("view.frame", args)
    assert e.value.code == BAD_ARGS


def test_feed_keeps_counting_up_across_a_server_restart():
    import socket

    from labctl.server import BenchServer
    from labctl.web.feed import LiveFeed

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    feed = LiveFeed(lambda: BenchClient(endpoint, timeout_s=1.0, retries=0), fps=20)
    feed.touch()
    feed.start()

    def seq_reaches(target, timeout=8.0):
        end = time.time() + timeout
        while time.time() < end:
            feed.touch()
            if feed.frame_seq() >= target:
                return feed.frame_seq()
            time.sleep(0.05)
        raise AssertionError(f"feed stuck at frame {feed.frame_seq()} (error: {feed.error()})")

    try:
        first = BenchServer(FakeBench(SHAPE), bind=endpoint)
        first.start()
        seq_reaches(3)
        from drivers.camera import Frame

        # an hour of frames on the first server: its counter is far ahead of where a new server starts
        frame = Frame(np.zeros((24, 32), np.float32), time.time(), 1e-3, 0.0, 0, 1)
        for _ in range(5000):
            first.state.live.put_frame(frame, "test")
        seq = seq_reaches(feed.frame_seq() + 1)
        jpeg_seq, jpeg = feed.frame_jpeg("full")
        assert jpeg is not None and jpeg[:2] == b"\xff\xd8"
        first.close()
        second = BenchServer(FakeBench(SHAPE), bind=endpoint)  # counts its frames from 1 again
        second.start()
        try:
            seq_reaches(seq + 3)
        finally:
            second.close()
    finally:
        feed.stop()


def test_feed_slows_to_its_job_rate_while_a_job_runs(server, bench, client):
    from labctl.web.feed import LiveFeed

    feed = LiveFeed(lambda: BenchClient(server.endpoint, timeout_s=2.0, retries=0), fps=20, job_fps=2,
                    status_every_s=0.1, encode=False)
    feed.touch()
    feed.start()
    try:
        def fetched_during(seconds: float, keep_going=lambda: True) -> tuple[int, float]:
            start, t0 = feed.frames_fetched, time.monotonic()
            while time.monotonic() - t0 < seconds and keep_going():
                feed.touch()
                time.sleep(0.02)
            return feed.frames_fetched - start, time.monotonic() - t0

        fetched_during(0.5)  # connected, first frames in
        idle, idle_s = fetched_during(1.5)
        client.acquire_lease()
        bench.camera.delay_s = 0.02
        maps = np.random.default_rng(1).integers(0, 256, (120, *SHAPE), dtype=np.uint8)
        job = client.run(maps, regions=[[0, 0, 4, 4]])
        while not feed.job_running():
            time.sleep(0.01)
        during, during_s = fetched_during(
            3.0, lambda: client.job_status(job)["state"] not in ("done", "failed", "cancelled"))
    finally:
        feed.stop()
    assert during_s > 1.0, "the job ended too soon to measure the feed's rate"
    assert idle / idle_s > 4  # idle: as fast as the server grabs for viewers (every 0.1 s)
    assert during / during_s <= 2 + 1.5 / during_s  # running: 2 frames/s, plus the frame in flight
