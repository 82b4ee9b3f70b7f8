"""Who may talk to a bench server: loopback by default, CURVE allow-list otherwise."""

from __future__ import annotations

import os
import stat

import pytest
import zmq

from labctl.cli import main
from labctl.client import BenchClient
from labctl.errors import BenchUnreachable, UsageError
from labctl.server.security import (
    check_bind, generate_keys, is_loopback, list_keys, load_client_keys, load_server_keys,
)
from tests.labctl.fakes import start_server


@pytest.mark.parametrize("addr", ["tcp://127.0.0.1:5555", "tcp://127.3.4.5:1", "tcp://localhost:5555",
                                  "tcp://[::1]:5555", "ipc:///tmp/labctl.sock", "inproc://x"])
def test_loopback_addresses(addr):
    assert is_loopback(addr)
    assert check_bind(addr, None, insecure=False) is None


@pytest.mark.parametrize("addr", ["tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://192.168.1.10:5555",
                                  "tcp://eth0:5555", "tcp://bench-pc.lab:5555", "tcp://[::]:5555"])
def test_network_addresses_need_keys_or_insecure(addr, tmp_path):
    assert not is_loopback(addr)
    with pytest.raises(UsageError, match="not a loopback address"):
        check_bind(addr, None, insecure=False)
    assert "WARNING" in check_bind(addr, None, insecure=True)
    generate_keys(tmp_path)
    assert check_bind(addr, load_server_keys(tmp_path), insecure=False) is None


@pytest.mark.parametrize("addr", ["127.0.0.1:5555", "tcp://", "tcp://:5555", "udp://1.2.3.4:5"])
def test_malformed_bind_addresses(addr):
    with pytest.raises(UsageError, match="expected tcp://HOST:PORT"):
        check_bind(addr, None, insecure=False)


def test_serve_refuses_a_network_bind_without_keys_before_binding(monkeypatch, capsys):
    def boom(*a, **k):
        raise AssertionError("nothing may be opened or bound")

    monkeypatch.setattr(zmq.Socket, "bind", boom)
    monkeypatch.setattr("labctl.commands.serve.load_bench", boom)
    assert main(["serve", "--bench", "sim", "--bind", "tcp://0.0.0.0:5599"]) == 2
    err = capsys.readouterr().err
    assert "refusing to bind tcp://0.0.0.0:5599" in err and "--keys" in err and "Traceback" not in err


def test_key_generation_layout_permissions_and_no_overwrite(tmp_path):
    created = generate_keys(tmp_path, ("alice", "bob"))
    names = sorted(p.relative_to(tmp_path).as_posix() for p in created)
    assert "server/server.key_secret" in names and "authorized/alice.key" in names and "clients/bob.key_secret" in names
    for secret in tmp_path.rglob("*.key_secret"):
        assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    info = list_keys(tmp_path)
    assert [c["name"] for c in info["authorized"]] == ["alice", "bob"]
    assert all("secret" not in str(v) for v in info.values())
    server_before = (tmp_path / "server" / "server.key_secret").read_bytes()
    with pytest.raises(UsageError, match="never overwritten"):
        generate_keys(tmp_path, ("alice",))
    generate_keys(tmp_path, ("carol",))  # adding a client keeps the server's keys
    assert (tmp_path / "server" / "server.key_secret").read_bytes() == server_before
    with pytest.raises(UsageError, match="letters, digits"):
        generate_keys(tmp_path, ("../evil",))


def test_keys_cli(tmp_path, capsys):
    assert main(["keys", "generate", str(tmp_path), "--client", "op1"]) == 0
    assert main(["keys", "list", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "authorized  op1" in out


@pytest.fixture()
def curve_server(tmp_path):
    generate_keys(tmp_path, ("good", "revoked"))
    (tmp_path / "authorized" / "revoked.key").unlink()
    srv = start_server(keys=load_server_keys(tmp_path))
    yield srv, tmp_path
    srv.close()


def test_curve_accepts_the_authorized_key(curve_server):
    srv, keys = curve_server
    with BenchClient(srv.endpoint, timeout_s=3, keys=load_client_keys(keys, "good")) as c:
        assert c.hello()["server"] == srv.server_id


def test_curve_refuses_a_revoked_key_a_foreign_key_and_no_key(curve_server, tmp_path_factory):
    srv, keys = curve_server
    with BenchClient(srv.endpoint, timeout_s=0.5, keys=load_client_keys(keys, "revoked")) as c:
        with pytest.raises(BenchUnreachable):
            c.ping()
    other = tmp_path_factory.mktemp("other")
    generate_keys(other, ("good",))  # same name, different key pair, other server key
    foreign = load_client_keys(other, "good")
    real_server = load_client_keys(keys, "good").server_public
    from labctl.server.security import ClientKeys

    with BenchClient(srv.endpoint, timeout_s=0.5, keys=ClientKeys(foreign.public, foreign.secret, real_server)) as c:
        with pytest.raises(BenchUnreachable):
            c.ping()
    with BenchClient(srv.endpoint, timeout_s=0.5) as c:  # plain text against a CURVE server
        with pytest.raises(BenchUnreachable):
            c.ping()
    with BenchClient(srv.endpoint, timeout_s=3, keys=load_client_keys(keys, "good")) as c:
        assert c.ping() < 1  # refusals did not disturb the server


def test_missing_keys_are_config_errors(tmp_path):
    from labctl.errors import ConfigError

    with pytest.raises(ConfigError, match="key file not found"):
        load_server_keys(tmp_path)
    generate_keys(tmp_path)
    for p in (tmp_path / "authorized").glob("*.key"):
        p.unlink()
    with pytest.raises(ConfigError, match="no authorized client keys"):
        load_server_keys(tmp_path)
