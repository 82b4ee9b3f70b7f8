"""CLI skeleton: help everywhere, version, exit codes, one-line errors, --debug."""

from __future__ import annotations

import os
import subprocess
import sys

import click
import pytest

from labctl import cli
from labctl.errors import ConfigError, EXIT_DEVICE, EXIT_TIMEOUT, EXIT_USAGE
from drivers.errors import DeviceError, DeviceTimeout


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "labctl", *args], capture_output=True, text=True, timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_version():
    r = run("--version")
    assert r.returncode == 0 and "labctl, version" in r.stdout


def test_top_level_help_lists_every_command():
    r = run("--help")
    assert r.returncode == 0
    for name in cli.COMMANDS:
        assert name in r.stdout


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_subcommand_has_help(name):
    assert cli.main([name, "--help"]) == 0


def test_unknown_command_is_usage_error(capsys):
    assert cli.main(["frobnicate"]) == EXIT_USAGE
    assert "No such command" in capsys.readouterr().err


def _register(monkeypatch, exc: BaseException) -> None:
    @click.command(name="boom")
    def boom() -> None:
        raise exc

    module = type(sys)("labctl_test_boom")
    module.boom = boom  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "labctl_test_boom", module)
    monkeypatch.setitem(cli.COMMANDS, "boom", ("labctl_test_boom", "boom", "test"))


@pytest.mark.parametrize(
    "exc,code",
    [
        (ConfigError("bench.toml: camera.pitch_m: expected > 0"), EXIT_USAGE),
        (DeviceError("slm1: monitor 2 not found"), EXIT_DEVICE),
        (DeviceTimeout("/dev/ttyUSB0: no reply within 1.0 s"), EXIT_TIMEOUT),
    ],
)
def test_known_errors_print_one_line(monkeypatch, capsys, exc, code):
    _register(monkeypatch, exc)
    assert cli.main(["boom"]) == code
    err = capsys.readouterr().err
    assert err == f"labctl: error: {exc}\n"


def test_bug_prints_one_line_without_debug_and_traceback_with(monkeypatch, capsys):
    _register(monkeypatch, ZeroDivisionError("division by zero"))
    assert cli.main(["boom"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error" in err and "--debug" in err
    assert cli.main(["--debug", "boom"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_devices_without_display_says_no_monitors():
    r = run("devices", env={"DISPLAY": "", "WAYLAND_DISPLAY": ""})
    assert r.returncode == 0, r.stderr
    assert "no monitors found" in r.stdout
    assert "Serial ports" in r.stdout


def test_devices_json():
    import json

    r = run("devices", "--json", env={"DISPLAY": "", "WAYLAND_DISPLAY": ""})
    data = json.loads(r.stdout)
    assert data["monitors"] == [] and isinstance(data["serial_ports"], list)


def test_help_does_not_import_torch():
    code = "import sys; from labctl.cli import main; main(['--help']); print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip().endswith("False")
