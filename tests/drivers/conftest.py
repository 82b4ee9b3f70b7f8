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
def xvfb():
    """An Xvfb server of 1280x720 for this test process; yields its DISPLAY string.

    One per process: OpenCV's Qt GUI binds to the display of its first window.
    """
    import shutil

    from drivers.virtual_display import VirtualDisplay

    if shutil.which("Xvfb") is None:
        pytest.fail("Xvfb is not installed; run `bash tools/bootstrap.sh --test` (Debian package xvfb)")
    with VirtualDisplay(1280, 720) as vd:
        yield vd.display
