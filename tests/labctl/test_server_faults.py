"""The server under abuse: malformed and random messages, device faults, clients that vanish."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import time
import zlib

import numpy as np
import pytest
import zmq

from labctl.client import BenchClient
from labctl.protocol import (
    BAD_ARGS, BAD_BUFFER, BAD_MESSAGE, BAD_VERSION, DEVICE_ERROR, TOO_LARGE, UNKNOWN_OP, Limits, decode_reply,
    encode_request,
)
from tests.labctl.fakes import FakeBench, start_server

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture()
def bench():
    return FakeBench()


@pytest.fixture()
def server(bench):
    srv = start_server(bench, limits=Limits(max_buffer_bytes=1 << 20, max_message_bytes=2 << 20))
    yield srv
    srv.close()


@pytest.fixture()
def raw(server):
    """A bare DEALER socket that sends whatever frames a test gives it."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(server.endpoint)

    def exchange(frames, timeout_ms=3000):
        sock.send_multipart(frames)
        assert sock.poll(timeout_ms), f"no reply to {frames!r:.80}"
        return decode_reply(sock.recv_multipart())

    yield exchange
    sock.close()
    ctx.term()


def _alive(server) -> None:
    with BenchClient(server.endpoint, timeout_s=3) as c:
        assert c.ping() < 1


def _h(**kw) -> bytes:
    h = {"v": 1, "id": "m1", "op": "ping", "args": {}, "buffers": []}
    h.update(kw)
    return json.dumps(h).encode()


def _buf_header(op="slm.show", args=None, data=b"\x00" * 4, **desc):
    d = {"dtype": "uint8", "shape": [len(data)], "crc32": zlib.crc32(data), **desc}
    return _h(op=op, args=args or {"slm": "in"}, buffers=[d])


MALFORMED = [
    ([b"not json at all"], BAD_MESSAGE),
    ([b"\x80\x81\x82"], BAD_MESSAGE),
    ([b"[]"], BAD_MESSAGE),
    ([_h(v=99)], BAD_VERSION),
    ([_h(op="laser.explode")], UNKNOWN_OP),
    ([_h(op="lease.acquire", args={"ttl_s": "long"})], BAD_ARGS),
    ([_h(op="job.status", args={})], BAD_ARGS),
    ([_buf_header(), b"\x00" * 4, b"\x00"], BAD_BUFFER),  # one frame more than described
    ([_buf_header()], BAD_BUFFER),  # one frame fewer
    ([_buf_header(), b"\x00" * 3], BAD_BUFFER),  # size mismatch
    ([_buf_header(crc32=1), b"\x00" * 4], BAD_BUFFER),  # crc mismatch
    ([_buf_header(data=b"\x00" * (1 << 20) + b"\x00"), b"\x00" * ((1 << 20) + 1)], TOO_LARGE),
    ([_h(args={"pad": "x" * 70_000})], TOO_LARGE),
]


@pytest.mark.parametrize("frames, code", MALFORMED, ids=[c + str(i) for i, (_, c) in enumerate(MALFORMED)])
def test_each_malformed_message_gets_an_error_reply(raw, server, frames, code):
    reply = raw(frames)
    assert not reply.ok and reply.error.code == code, reply.error
    assert reply.server == server.server_id
    _alive(server)


def test_error_reply_carries_the_request_id_when_readable(raw):
    assert raw([_h(v=7, id="keep-me")]).id == "keep-me"
    assert raw([b"garbage"]).id is None


def test_random_mutations_never_kill_the_server(raw, server):
    rng = random.Random(1234)
    _, good = encode_request("slm.show", {"slm": "in"}, [np.arange(600, dtype=np.uint8).reshape(20, 30)])
    good = [bytes(f) for f in good]
    for i in range(300):
        frames = [bytearray(f) for f in good]
        for _ in range(rng.randint(1, 4)):
            f = frames[rng.randrange(len(frames))]
            kind = rng.random()
            if kind < 0.5 and f:
                f[rng.randrange(len(f))] = rng.randrange(256)  # flip a byte
            elif kind < 0.7 and f:
                del f[rng.randrange(len(f)):]  # truncate
            elif kind < 0.85:
                f.extend(rng.randbytes(rng.randint(1, 16)))
            else:
                frames.insert(rng.randrange(len(frames) + 1), bytearray(rng.randbytes(rng.randint(0, 8))))
        reply = raw([bytes(f) for f in frames])
        assert reply.ok or reply.error.code, f"mutation {i}: reply without a code"
    _alive(server)


def test_camera_fault_mid_run_fails_the_job_and_the_next_job_works(server, bench):
    with BenchClient(server.endpoint, timeout_s=5) as c:
        c.acquire_lease()
        bench.camera.fail_after = bench.camera.grabs + 3
        job = c.run(np.zeros((10, 20, 30), np.uint8), regions=[[0, 0, 2, 2]])
        with pytest.raises(Exception) as e:
            c.wait_job(job, timeout_s=5)
        assert e.value.code == DEVICE_ERROR and "frame timeout" in str(e.value) and "step 3" in str(e.value)
        st = c.job_status(job)
        assert st["state"] == "failed" and st["done"] == 3 and st["error"]["step"] == 3
        bench.camera.fail_after = None
        job2 = c.run(np.zeros((4, 20, 30), np.uint8), regions=[[0, 0, 2, 2]])
        assert c.wait_job(job2, timeout_s=5)["done"] == 4


def test_device_error_on_a_single_op_is_an_error_reply(server, bench):
    with BenchClient(server.endpoint, timeout_s=5) as c:
        c.acquire_lease()
        bench.slms["l1"].fail = True
        with pytest.raises(Exception) as e:
            c.show("l1", np.zeros((20, 30), np.uint8))
        assert e.value.code == DEVICE_ERROR and "HDMI output lost" in str(e.value)
        with pytest.raises(Exception) as e:
            c.abort()  # still blanks every other SLM and closes the shutter, then reports the failure
        assert "SLM l1" in str(e.value) and not bench.shutter.is_open
        bench.slms["l1"].fail = False
        assert c.abort()["shutter_closed"] is True


CLIENT_SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np
    from labctl.client import BenchClient
    c = BenchClient(sys.argv[1], timeout_s=5)
    c.acquire_lease(ttl_s=0.5)
    print(c.run(np.zeros((30, 20, 30), np.uint8), regions=[[0, 0, 2, 2]]), flush=True)
    import time; time.sleep(60)
    """
)


def test_client_killed_mid_job(server, bench):
    bench.camera.delay_s = 0.02
    proc = subprocess.Popen([sys.executable, "-c", CLIENT_SCRIPT, server.endpoint], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)
    try:
        job = proc.stdout.readline().strip()
        assert job, "the client did not start a job"
    finally:
        proc.kill()
        proc.wait(10)
    with BenchClient(server.endpoint, timeout_s=5) as c:
        st = c.wait_job(job, timeout_s=10)  # the job finishes without its client
        assert st["state"] == "done" and st["done"] == 30
        time.sleep(0.6)
        assert c.acquire_lease()["holder"] == c.name  # the dead client's lease ran out
        records, _ = c.job_records(job)
        assert len(records) == 30


def test_sim_camera_fault_mid_run_fails_the_job_and_the_next_job_works():
    """The same, on the shipped simulated bench with its own fault injection."""
    from labctl.bench import open_bench
    from labctl.config import load_bench

    with open_bench(load_bench("sim")) as devices:
        srv = start_server(devices)
        try:
            with BenchClient(srv.endpoint, timeout_s=30) as c:
                c.acquire_lease()
                rows, cols = devices.input_slm.shape
                h, w = devices.camera.shape
                maps = np.zeros((6, rows, cols), np.uint8)
                c.grab()  # first grab pays for building the propagation kernels
                devices.camera.inject_grab_error(count=1)
                job = c.run(maps, regions=[[0, 0, h, w]])
                with pytest.raises(Exception) as e:
                    c.wait_job(job, timeout_s=30)
                assert e.value.code == DEVICE_ERROR and "injected fault" in str(e.value)
                assert c.job_status(job)["state"] == "failed"
                job2 = c.run(maps, regions=[[0, 0, h, w]])
                assert c.wait_job(job2, timeout_s=30)["done"] == 6
                assert c.ping() < 1
        finally:
            srv.close()


def _dealer(server, name: bytes):
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.routing_id = name
    sock.connect(server.endpoint)
    return sock


def _replies(sock, wait_s: float) -> list:
    out, end = [], time.monotonic() + wait_s
    while (left := end - time.monotonic()) > 0:
        if sock.poll(int(left * 1000) + 1):
            out.append(decode_reply(sock.recv_multipart()))
    return out


def test_duplicate_arriving_while_the_first_runs_is_answered_once(server, bench):
    sock = _dealer(server, b"dup-tester")
    try:
        _, lease = encode_request("lease.acquire", request_id="lease-1")
        sock.send_multipart(lease)
        assert _replies(sock, 0.5)[0].ok
        bench.camera.delay_s = 0.3  # keeps the device thread busy while the duplicates arrive
        _, grab = encode_request("camera.grab", request_id="slow-grab")
        gray = np.full((20, 30), 5, np.uint8)
        _, show = encode_request("slm.show", {"slm": "in"}, [gray], request_id="show-twice")
        shown = bench.input_slm.shown
        sock.send_multipart(grab)
        sock.send_multipart(show)
        sock.send_multipart(show)
        replies = _replies(sock, 1.0)
        assert sorted(r.id for r in replies) == ["show-twice", "slow-grab"]
        assert bench.input_slm.shown == shown + 1
        sock.send_multipart(show)  # after it finished: the remembered answer, still not re-run
        again = _replies(sock, 0.5)
        assert [r.id for r in again] == ["show-twice"] and again[0].ok
        assert bench.input_slm.shown == shown + 1
    finally:
        sock.close()


def test_request_past_its_deadline_is_not_run(server, bench):
    sock = _dealer(server, b"deadline-tester")
    try:
        bench.camera.delay_s = 0.3
        _, slow = encode_request("camera.grab", request_id="slow")
        _, late = encode_request("camera.grab", request_id="late", deadline_ms=50)
        sock.send_multipart(slow)
        sock.send_multipart(late)
        grabs = bench.camera.grabs
        replies = {r.id: r for r in _replies(sock, 1.0)}
        assert replies["slow"].ok
        assert replies["late"].error.code == "deadline_exceeded" and replies["late"].error.retryable
        assert bench.camera.grabs == grabs + 1
    finally:
        sock.close()
