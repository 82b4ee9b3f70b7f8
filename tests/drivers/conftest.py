"""Shared fixtures for driver tests: a scripted byte-level serial wire."""

from __future__ import annotations

import pytest


class ScriptedPort:
    """A pyserial stand-in that plays a table of (bytes sent, bytes replied) pairs.

    It fails on the first byte the driver sends that the table did not expect, so a
    table of pairs is an exact, executable statement of the protocol.
    """

    port = "scripted"

    def __init__(self, script: list[tuple[bytes, bytes]]):
        self.script = list(script)
        self.pending = b""
        self.closed = False

    def reset_input_buffer(self) -> None:
        self.pending = b""

    def write(self, data: bytes) -> int:
        assert self.script, f"driver sent {data!r} after the script ended"
        sent, reply = self.script.pop(0)
        assert data == sent, f"driver sent {data!r}, protocol table expects {sent!r}"
        self.pending += reply
        return len(data)

    def flush(self) -> None:
        pass

    def read_until(self, expected: bytes, size: int) -> bytes:
        i = self.pending.find(expected)
        end = min(size, len(self.pending)) if i < 0 else min(size, i + len(expected))
        out, self.pending = self.pending[:end], self.pending[end:]
        return out

    def close(self) -> None:
        self.closed = True

    def done(self) -> bool:
        return not self.script


@pytest.fixture
def scripted():
    ports: list[ScriptedPort] = []

    def make(script: list[tuple[bytes, bytes]]) -> ScriptedPort:
        p = ScriptedPort(script)
        ports.append(p)
        return p

    yield make
    for p in ports:
        assert p.done(), f"protocol table not fully played; left: {p.script[:2]}"


@pytest.fixture(scope="session")
def xvfb(tmp_path_factory):
    """An Xvfb server of 1280x720 for this test process; yields its DISPLAY string.

    OpenCV's Qt GUI binds to the display of its first window for the life of the
    process, so there is one server per process and DISPLAY stays set while it runs.
    """
    import os
    import shutil
    import subprocess

    exe = shutil.which("Xvfb")
    if exe is None:
        pytest.fail("Xvfb is not installed; run `bash tools/bootstrap.sh --test` (Debian package xvfb)")
    read_fd, write_fd = os.pipe()
    log = open(tmp_path_factory.mktemp("xvfb") / "xvfb.log", "w")
    proc = subprocess.Popen(
        [exe, "-displayfd", str(write_fd), "-screen", "0", "1280x720x24", "-nolisten", "tcp", "-noreset"],
        pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
    )
    os.close(write_fd)
    import select

    # Read up to the newline and keep our end open while Xvfb runs: it writes the
    # number and the newline separately and dies of EPIPE if the pipe is closed early.
    number = ""
    while not number.endswith("\n"):
        ready, _, _ = select.select([read_fd], [], [], 10.0)
        chunk = os.read(read_fd, 32).decode() if ready else ""
        if not chunk:
            break
        number += chunk
    number = number.strip()
    if not number.isdigit():
        proc.kill()
        pytest.fail("Xvfb did not report a display number within 10 s")
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = f":{number}"
    yield f":{number}"
    if old is None:
        os.environ.pop("DISPLAY", None)
    else:
        os.environ["DISPLAY"] = old
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
    os.close(read_fd)
