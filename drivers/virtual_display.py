"""A private X display (Xvfb) for headless runs: tests, benchmarks, CI.

HDMI SLM code runs unchanged on it, and the screen can be read back from the X
server to check what a real monitor would have shown.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import tempfile
from typing import Any

from drivers.errors import DeviceError


class VirtualDisplay:
    """Runs ``Xvfb`` with one screen of ``width`` x ``height`` pixels; ``display`` is e.g. ``":3"``.

    Used as a context manager it also sets ``$DISPLAY`` while open. OpenCV's Qt GUI
    binds to the display of its first window for the life of a process, so a
    process should use one virtual display for all its HDMI windows.
    """

    def __init__(self, width: int = 1280, height: int = 720, depth: int = 24, timeout_s: float = 10.0):
        self.width, self.height, self.depth = int(width), int(height), int(depth)
        self.timeout_s = timeout_s
        self.display = ""
        self._proc: subprocess.Popen | None = None
        self._read_fd = -1
        self._log: Any = None
        self._old_display: str | None = None

    def start(self) -> str:
        exe = shutil.which("Xvfb")
        if exe is None:
            raise DeviceError("Xvfb not found; install the Debian package xvfb (tools/bootstrap.sh --test does)")
        read_fd, write_fd = os.pipe()
        self._log = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            [exe, "-displayfd", str(write_fd), "-screen", "0", f"{self.width}x{self.height}x{self.depth}",
             "-nolisten", "tcp", "-noreset"],
            pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
        )
        os.close(write_fd)
        # Xvfb writes the number and the newline separately and dies of EPIPE if our
        # end closes early, so read to the newline and keep the pipe open while it runs.
        self._read_fd = read_fd
        text = ""
        while not text.endswith("\n"):
            ready, _, _ = select.select([read_fd], [], [], self.timeout_s)
            chunk = os.read(read_fd, 32).decode() if ready else ""
            if not chunk:
                break
            text += chunk
        if not text.strip().isdigit():
            self.stop()
            raise DeviceError(f"Xvfb did not report a display number within {self.timeout_s:g} s")
        self.display = f":{text.strip()}"
        return self.display

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._read_fd >= 0:
            os.close(self._read_fd)
            self._read_fd = -1
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "VirtualDisplay":
        self.start()
        self._old_display = os.environ.get("DISPLAY")
        os.environ["DISPLAY"] = self.display
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._old_display is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = self._old_display
        self.stop()
