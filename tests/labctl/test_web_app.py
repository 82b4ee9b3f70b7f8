"""The live view's HTTP side: pages, frames, safe actions, host and header checks, `serve --http` rules."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from labctl.cli import main
from labctl.client import BenchClient
from labctl.web.artifacts import ArtifactDirs
from labctl.web.http import HttpAddress, bind_socket, check_http_bind, parse_http
from labctl.web.service import WebView
from tests.labctl.conftest import FAKE_SHAPE
from tests.labctl.fakes import start_server
from tests.labctl.test_web_overlay import registration

SHAPE = FAKE_SHAPE


@pytest.fixture()
def dirs(tmp_path):
    d = ArtifactDirs(tmp_path / "calibrations", tmp_path / "models", tmp_path / "runs")
    d.calibrations.mkdir()
    (d.calibrations / "cam.registration.json").write_text(json.dumps(registration(1.0, (2, 2), neurons=(10, 10))))
    (d.calibrations / "slm1.png").write_bytes(b"\x89PNG fake")
    (d.runs / "r1").mkdir(parents=True)
    (d.runs / "r1" / "report.md").write_text("# deploy r1\naccuracy 0.9\n")
    return d


@pytest.fixture()
def web(bench, dirs):
    server = start_server(bench)
    view = WebView(server, bind_socket(HttpAddress("127.0.0.1", 0)), dirs, fps=20).start()
    yield view, server
    view.stop()
    server.close()


def get(url, headers=None, method="GET", timeout=10):
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def wait_state(url, pred, timeout=5.0):
    import time

    end = time.time() + timeout
    while True:
        code, _, body = get(url + "api/state")
        state = json.loads(body)
        if pred(state) or time.time() > end:
            return state
        time.sleep(0.05)


def test_page_state_and_frames(web):
    view, server = web
    code, headers, body = get(view.url)
    assert code == 200 and b"labctl live view" in body and headers["cache-control"] == "no-store"
    code, headers, jpeg = get(view.url + "api/frame.jpg?after=0")
    assert code == 200 and jpeg[:2] == b"\xff\xd8" and int(headers["x-frame-seq"]) >= 1
    seq = int(headers["x-frame-seq"])
    code, headers, jpeg = get(view.url + f"api/frame.jpg?after={seq}&scale=auto")
    assert code == 200 and int(headers["x-frame-seq"]) > seq  # the idle bench keeps producing frames
    state = wait_state(view.url, lambda s: s["status"] and s["overlay"] and s["maps"]["slms"])
    assert state["bench"]["bench"] == "fake" and state["error"] is None
    assert state["frame"]["histogram"]["bins"] == 64 and state["frame"]["source"] == "idle"
    assert state["overlay"]["source"]["registration"] == "cam.registration.json"
    assert state["artifacts"]["calibration_plots"] == ["slm1.png"]
    assert state["artifacts"]["run"]["id"] == "r1" and "accuracy 0.9" in state["artifacts"]["run"]["report"]
    code, headers, png = get(view.url + "api/slm/l1.png")
    assert code == 200 and png[:4] == b"\x89PNG"
    assert get(view.url + "api/slm/nope.png")[0] == 404
    assert get(view.url + "api/files/calibration/slm1.png")[2] == b"\x89PNG fake"
    assert get(view.url + "api/files/calibration/..%2Fruns%2Fr1%2Freport.md")[0] == 404
    assert get(view.url + "api/files/secrets/x")[0] == 404
    assert get(view.url + "api/frame.jpg?scale=loud")[0] == 400
    assert get(view.url + "api/frame.jpg?after=x")[0] == 400


def test_a_page_from_another_host_name_is_refused(web):
    view, _ = web
    assert get(view.url + "api/state", {"Host": "evil.example:80"})[0] == 400  # DNS rebinding


def test_actions_need_the_header_and_abort_cancels_a_job(web, bench):
    view, server = web
    post = lambda name, h=None: get(view.url + f"api/action/{name}", h, "POST")
    assert post("abort")[0] == 403  # no header: what a cross-site form would send
    assert post("laser-on", {"X-Labctl-Action": "1"})[0] == 404  # only the safe actions exist
    assert get(view.url + "api/action/abort")[0] == 405
    with BenchClient(server.endpoint, timeout_s=5) as owner:
        owner.acquire_lease()
        owner.set_shutter(True)
        bench.camera.delay_s = 0.05
        job = owner.run(np.zeros((200, *SHAPE), np.uint8), regions=[[0, 0, 2, 2]])
        # blank/close need the bench free: refused while another client holds the lease
        code, _, body = post("blank", {"X-Labctl-Action": "1"})
        assert code == 409 and "lease" in json.loads(body)["error"]
        code, _, body = post("abort", {"X-Labctl-Action": "1"})
        result = json.loads(body)
        assert code == 200 and result["ok"] and job in result["result"]["cancelled_jobs"]
        assert owner.wait_job(job, timeout_s=5)["state"] == "cancelled"
        assert not bench.shutter.is_open
        owner.release_lease()
    bench.shutter.is_open = True
    code, _, body = post("close-shutter", {"X-Labctl-Action": "1"})
    assert code == 200 and json.loads(body)["result"] == {"shutter_open": False} and not bench.shutter.is_open
    bench.input_slm._current[:] = 5
    assert post("blank", {"X-Labctl-Action": "1"})[0] == 200 and not bench.input_slm.current().any()
    assert server.state.leases.describe() is None  # the web view borrowed the lease and gave it back


@pytest.mark.parametrize("value, host, port", [("8080", "127.0.0.1", 8080), ("localhost:0", "localhost", 0),
                                               ("0.0.0.0:9000", "0.0.0.0", 9000)])
def test_parse_http(value, host, port):
    assert parse_http(value) == HttpAddress(host, port)


@pytest.mark.parametrize("value", ["http", "70000", "-1", "[::1]:80", "::1:80"])
def test_parse_http_refuses_bad_values(value):
    from labctl.errors import UsageError

    with pytest.raises(UsageError, match="--http"):
        parse_http(value)


def test_network_facing_http_needs_insecure():
    from labctl.errors import UsageError

    assert check_http_bind(HttpAddress("127.0.0.1", 80), False) is None
    with pytest.raises(UsageError, match="add --insecure"):
        check_http_bind(HttpAddress("0.0.0.0", 80), False)
    assert "WITHOUT encryption" in check_http_bind(HttpAddress("0.0.0.0", 80), True)


def test_serve_refuses_network_http_before_opening_anything(capsys):
    code = main(["serve", "--bench", "sim", "--http", "0.0.0.0:0"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "add --insecure" in err


def test_serve_reports_a_busy_http_port(capsys):
    sock = bind_socket(HttpAddress("127.0.0.1", 0))
    try:
        code = main(["serve", "--bench", "sim", "--bind", "tcp://127.0.0.1:0", "--http", f"127.0.0.1:{sock.getsockname()[1]}"])
    finally:
        sock.close()
    err = capsys.readouterr().err
    assert code == 2 and "cannot listen on 127.0.0.1" in err
