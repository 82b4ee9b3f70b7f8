"""Bench server behaviour seen through the client: ops, leases, idempotency, jobs, concurrency."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from labctl.client import BenchClient
from labctl.protocol import BAD_ARGS, BAD_BUFFER, BUSY, LEASE_HELD, LEASE_REQUIRED, NOT_FOUND, WireError
from tests.labctl.conftest import FAKE_SHAPE
from tests.labctl.fakes import FakeBench, start_server

SHAPE = FAKE_SHAPE


def _maps(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *SHAPE), dtype=np.uint8)


def _code(fn, *a, **k):
    with pytest.raises(WireError) as e:
        fn(*a, **k)
    return e.value.code


def test_hello_describes_server_and_devices(client, server):
    h = client.hello()
    assert h["server"] == server.server_id and h["protocol"] == 1 and h["bench"] == "fake"
    assert h["devices"]["input_slm"] == "in" and h["devices"]["layer_slms"] == ["l1", "l2"]
    assert h["devices"]["slms"]["l1"]["shape"] == list(SHAPE)
    assert client.server_id == server.server_id


def test_server_starts_with_slms_blank_and_shutter_closed():
    bench = FakeBench(SHAPE)
    bench.shutter.open()
    bench.input_slm._current[:] = 9
    srv = start_server(bench)
    try:
        assert not bench.shutter.is_open and not bench.input_slm.current().any()
    finally:
        srv.close()


def test_changes_need_the_lease_and_reads_do_not(client, server, bench):
    gray = _maps(1)[0]
    assert _code(client.show, "in", gray) == LEASE_REQUIRED
    assert client.grab().data.shape == bench.camera.shape  # a read: no lease needed
    client.acquire_lease(ttl_s=10)
    client.show("in", gray)
    np.testing.assert_array_equal(bench.input_slm.current(), gray)
    with BenchClient(server.endpoint, timeout_s=5) as other:
        assert _code(other.acquire_lease) == LEASE_HELD
        assert _code(other.show, "in", gray) == LEASE_HELD
        assert _code(other.set_laser, True) == LEASE_HELD
        assert other.status()["lease"]["holder"] == client.name  # reads stay open
        assert other.release_lease() is False  # not the holder: nothing released
        other.acquire_lease(force=True)  # an operator may take an abandoned bench over
        assert _code(client.show, "in", gray) == LEASE_HELD
        assert other.release_lease() is True
    assert _code(client.renew_lease) == LEASE_REQUIRED


def test_lease_expires_without_renewal(client, server):
    client.acquire_lease(ttl_s=0.2)
    time.sleep(0.35)
    with BenchClient(server.endpoint, timeout_s=5) as other:
        assert other.acquire_lease()["holder"] == other.name


def test_device_ops_change_the_devices(client, bench):
    client.acquire_lease()
    assert client.set_laser(True) is True and bench.laser.is_on
    assert client.set_shutter(True) is True and bench.shutter.is_open
    cfg = client.configure_camera(exposure_s=2e-3, gain_db=3.0)
    assert cfg["exposure_s"] == 2e-3 and bench.camera.gain_db == 3.0
    client.configure_camera(dark="grab", dark_frames=2)
    assert bench.camera.dark is not None
    client.configure_camera(dark="clear")
    assert bench.camera.dark is None
    maps = _maps(2, seed=3)
    dep = client.deploy("m", "ab" * 32, {"l1": maps[0], "l2": maps[1]})
    assert dep["layers"] == ["l1", "l2"]
    np.testing.assert_array_equal(bench.slms["l2"].current(), maps[1])
    assert client.status()["deployed"]["model_sha256"] == "ab" * 32
    assert client.blank("l1") == ["l1"] and not bench.slms["l1"].current().any()


def test_bad_arguments_are_refused_before_touching_devices(client, bench):
    client.acquire_lease()
    shown = bench.input_slm.shown
    assert _code(client.show, "nope", _maps(1)[0]) == BAD_ARGS
    assert _code(client.show, "in", np.zeros((SHAPE[0], SHAPE[1] + 1), np.uint8)) == BAD_BUFFER  # never resized
    assert _code(client.show, "in", np.zeros(SHAPE, np.uint16)) == BAD_BUFFER
    assert _code(client.call, "slm.show", {"slm": "in"}) == BAD_BUFFER  # map missing
    assert _code(client.call, "laser.set", {"on": "yes"}) == BAD_ARGS
    assert _code(client.call, "laser.set", {"on": True, "power": 1}) == BAD_ARGS  # unknown argument
    assert _code(client.configure_camera, exposure_s=-1.0) == BAD_ARGS
    assert _code(client.run, _maps(2), regions=[[0, 0, 100, 100]]) == BAD_ARGS  # outside the frame
    assert _code(client.run, _maps(2)) == BAD_ARGS  # neither regions nor frames asked for
    assert _code(client.call, "deploy", {"name": "m", "model_sha256": "x", "layers": ["l1", "l1"]},
                 list(_maps(2))) == BAD_ARGS
    assert bench.input_slm.shown == shown


def test_repeated_request_id_is_executed_once(client, bench):
    client.acquire_lease()
    gray = _maps(1)[0]
    shown = bench.input_slm.shown
    first = client.call("slm.show", {"slm": "in"}, [gray], request_id="same-id-1")
    again = client.call("slm.show", {"slm": "in"}, [gray], request_id="same-id-1")
    assert first.result == again.result
    assert bench.input_slm.shown == shown + 1
    # also for ops answered by the loop itself: the second run is not a second job
    j1 = client.call("run", {"regions": [[0, 0, 2, 2]]}, [_maps(3)], request_id="run-1").result["job"]
    j2 = client.call("run", {"regions": [[0, 0, 2, 2]]}, [_maps(3)], request_id="run-1").result["job"]
    assert j1 == j2 and len(client.status()["jobs"]) == 1


def test_run_job_scores_each_input(client, bench):
    client.acquire_lease()
    maps = _maps(7, seed=1)
    w = bench.camera.shape[1]
    regions = [[0, 0, 4, 5], [2, w // 2, 3, 3]]
    job = client.run(maps, regions=regions, return_frames=True, blank_after=True)
    st = client.wait_job(job, timeout_s=10)
    assert st["state"] == "done" and st["done"] == 7
    records, frames = client.job_records(job, page=3)  # paged: 3 + 3 + 1
    assert [r["index"] for r in records] == list(range(7)) and len(frames) == 7
    for r, m in zip(records, maps):
        assert r["scores"][0] == pytest.approx(20 * m.mean(), rel=1e-5)
        assert r["scores"][1] == pytest.approx(9 * float(m[0, 0]))
        assert frames[r["buffers"][0]][0, 0] == pytest.approx(m.mean(), rel=1e-5)
    assert not bench.input_slm.current().any()  # blank_after


def test_job_queries_and_cancel(client, bench):
    client.acquire_lease()
    bench.camera.delay_s = 0.02
    job = client.run(_maps(200), regions=[[0, 0, 2, 2]])
    time.sleep(0.1)
    st = client.job_status(job)
    assert st["state"] == "running" and 0 < st["done"] < 200
    assert _code(client.show, "in", _maps(1)[0]) == BUSY  # would disturb the job
    assert client.cancel_job(job)["cancelled"] is True
    st = client.wait_job(job, timeout_s=5)
    assert st["state"] == "cancelled" and st["done"] < 200
    part, _ = client.job_result(job, limit=1000)
    assert len(part["records"]) == st["done"]  # what was measured before the cancel is kept
    assert _code(client.job_status, "no-such-job") == NOT_FOUND
    client.show("in", _maps(1)[0])  # devices free again


def test_ping_answers_while_a_long_job_runs(client, bench):
    client.acquire_lease()
    bench.camera.delay_s = 0.05
    job = client.run(_maps(40), regions=[[0, 0, 2, 2]])
    time.sleep(0.1)
    rtts = [client.ping() for _ in range(20)]
    assert client.job_status(job)["state"] == "running"
    assert max(rtts) < 0.05  # never waits for a device step
    client.cancel_job(job)


def test_abort_blanks_slms_closes_shutter_and_cancels_jobs(client, server, bench):
    client.acquire_lease()
    client.set_shutter(True)
    client.deploy("m", "0" * 64, {"l1": _maps(1)[0], "l2": _maps(1, 1)[0]})
    bench.camera.delay_s = 0.02
    job = client.run(_maps(100), regions=[[0, 0, 2, 2]])
    time.sleep(0.05)
    with BenchClient(server.endpoint, timeout_s=5) as other:  # anyone may hit the emergency stop
        out = other.abort()
    assert out["cancelled_jobs"] == [job] and out["shutter_closed"] is True
    assert not bench.shutter.is_open
    assert all(not s.current().any() for s in bench.slms.values())
    assert client.job_status(job)["state"] == "cancelled"


def test_concurrent_clients_get_their_own_replies(server):
    n_clients, n_requests = 8, 200
    errors: list[str] = []

    def worker(k: int) -> None:
        try:
            with BenchClient(server.endpoint, timeout_s=10) as c:
                for i in range(n_requests):
                    if i % 2:
                        assert c.call("ping").result["time_unix"] > 0
                    else:
                        job = f"client{k}-req{i}"
                        try:
                            c.call("job.status", {"job": job})
                        except WireError as e:  # the error must name this client's own job
                            assert e.code == NOT_FOUND and job in e.message, e.message
                        else:
                            raise AssertionError("a job status for a job that does not exist")
        except Exception as e:  # noqa: BLE001
            errors.append(f"client {k}: {e!r}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert server.handled >= n_clients * n_requests


def test_client_times_out_with_bench_unreachable():
    from labctl.errors import BenchUnreachable

    import socket

    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with BenchClient(f"tcp://127.0.0.1:{port}", timeout_s=0.3) as c:
        with pytest.raises(BenchUnreachable, match="within 0.3 s"):
            c.ping()
    assert time.monotonic() - t0 < 2


# ---------------------------------------------------------------------------
# The command line, against the shipped simulated bench


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(endpoint: str, proc, limit_s: float = 60.0) -> dict:
    from labctl.errors import BenchUnreachable

    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        assert proc.poll() is None, proc.stderr.read()
        try:
            with BenchClient(endpoint, timeout_s=0.5, retries=0) as c:
                return c.hello()
        except BenchUnreachable:
            time.sleep(0.2)
    raise AssertionError(f"labctl serve did not answer within {limit_s} s")


def test_serve_sim_end_to_end_and_sigterm_leaves_the_bench_safe(capsys):
    import signal
    import subprocess
    import sys

    from labctl.cli import main

    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    proc = subprocess.Popen([sys.executable, "-m", "labctl", "serve", "--bench", "sim", "--bind", endpoint],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        hello = _wait_ready(endpoint, proc)
        assert hello["bench"] == "sim" and hello["devices"]["input_slm"] == "slm0"
        rows, cols = hello["devices"]["slms"]["slm0"]["shape"]
        with BenchClient(endpoint, timeout_s=30) as c:
            c.acquire_lease()
            c.set_laser(True)
            c.set_shutter(True)
            frame = c.grab()
            assert frame.data.dtype == np.float32 and frame.data.ndim == 2
            maps = np.zeros((3, rows, cols), np.uint8)
            maps[1, rows // 4: 3 * rows // 4, cols // 4: 3 * cols // 4] = 255  # a bright square vs. dark inputs
            h, w = frame.data.shape
            job = c.run(maps, regions=[[0, 0, h, w]], blank_after=True)
            c.wait_job(job, timeout_s=60)
            records, _ = c.job_records(job)
            totals = [r["scores"][0] for r in records]
            # inputs 0 and 2 are the same map (they differ by camera noise only); input 1 changes the light
            assert abs(totals[1] - totals[0]) > 20 * abs(totals[2] - totals[0])
            assert main(["status", "--endpoint", endpoint]) == 0
            out = capsys.readouterr().out
            assert f"held by {c.name}" in out and "done" in out and "SLM slm3" in out
            devs = c.devices()
            assert devs["shutter"]["open"] is True or devs["shutter"].get("is_open") is True
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "SLMs blank, shutter closed" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_status_of_an_unreachable_server_is_one_line_and_exit_4(capsys):
    from labctl.cli import main

    t0 = time.monotonic()
    assert main(["status", "--endpoint", f"tcp://127.0.0.1:{_free_port()}", "--timeout", "0.5"]) == 4
    assert time.monotonic() - t0 < 3
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no answer from the bench server" in err


def test_status_command_shows_lease_and_jobs(server, client, capsys):
    from labctl.cli import main

    client.acquire_lease()
    job = client.run(_maps(2), regions=[[0, 0, 2, 2]])
    client.wait_job(job, timeout_s=5)
    assert main(["status", "--endpoint", server.endpoint]) == 0
    out = capsys.readouterr().out
    assert f"held by {client.name}" in out and job in out and "2/2" in out and "SLM l2" in out
    assert main(["status", "--endpoint", server.endpoint, "--json"]) == 0
    import json

    data = json.loads(capsys.readouterr().out)
    assert data["status"]["jobs"][0]["job"] == job


def test_status_device_snapshot_follows_changes(client, bench):
    client.acquire_lease()
    client.show("l1", _maps(1, seed=5)[0])
    end = time.monotonic() + 3
    while time.monotonic() < end:
        st = client.status()
        if st["devices"]["slms"]["l1"]["maps_shown"] == bench.slms["l1"].shown:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("status never showed the new map")
    assert st["devices"]["slms"]["l1"]["mean_gray"] == pytest.approx(float(bench.slms["l1"].current().mean()))


def test_devices_are_only_touched_by_the_device_thread(client, bench):
    for s in bench.slms.values():
        s.threads.clear()
    client.acquire_lease()
    client.show("in", _maps(1)[0])
    bench.camera.delay_s = 0.01
    first = client.run(_maps(20), regions=[[0, 0, 2, 2]], blank_after=True)
    queued = client.run(_maps(5), regions=[[0, 0, 2, 2]], blank_after=True)
    client.cancel_job(queued)  # cancelled while queued: its cleanup must not run in the server loop
    client.wait_job(first, timeout_s=10)
    client.abort()
    threads = set().union(*(s.threads for s in bench.slms.values()))
    assert threads == {"labctl-devices"}
    assert not bench.input_slm.current().any()


def test_only_the_newest_jobs_keep_their_frames(client):
    client.acquire_lease()
    jobs = [client.run(_maps(1, seed=i), return_frames=True) for i in range(6)]
    for j in jobs:
        client.wait_job(j, timeout_s=5)
    client.run(_maps(1), return_frames=True)  # adding a job trims the frames of old ones
    old, old_frames = client.job_result(jobs[0])
    new, new_frames = client.job_result(jobs[-1])
    assert old["frames_released"] and not old_frames and old["records"][0]["buffers"] == []
    assert not new["frames_released"] and len(new_frames) == 1
    assert len(old["records"]) == 1  # records (scores, checksums) are kept
