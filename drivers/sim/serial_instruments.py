"""Simulated serial instruments speaking the laser/shutter line protocols on a pseudo-terminal.

``PtyInstrument`` serves a protocol model from a thread on the master side of an
``os.openpty`` pair; the driver under test opens the slave's path with pyserial,
so termios, terminators and timeouts are the real thing. Fault modes make the
device silent or send garbage, to test that drivers fail clearly and never hang.
"""

from __future__ import annotations

import os
import select
import threading
import tty
from abc import ABC, abstractmethod
from typing import Any

MODES = ("ok", "silent", "garbage")


class LineModel(ABC):
    """The state machine of one instrument: one command line in, one reply line out."""

    @abstractmethod
    def handle(self, line: str) -> str:
        """Reply (without terminator) to one command line (without terminator)."""


class LaserModel(LineModel):
    """The bench laser protocol (drivers/laser.py); ``interlock`` refuses ``OUT 1``."""

    def __init__(self, serial: str = "SIM-L0", max_power_w: float = 5e-3, power_w: float = 1e-3):
        self.serial = serial
        self.max_power_w = max_power_w
        self.power_w = power_w
        self.on = False
        self.interlock = False

    def handle(self, line: str) -> str:
        words = line.split()
        if line == "*IDN?":
            return f"LABCTL,LASER,SIM-1,{self.serial},1.0"
        if line == "OUT?":
            return "1" if self.on else "0"
        if line == "POW?":
            return f"{self.power_w:.6g}"
        if line == "MAX?":
            return f"{self.max_power_w:.6g}"
        if words[:1] == ["OUT"] and len(words) == 2 and words[1] in ("0", "1"):
            if words[1] == "1" and self.interlock:
                return "ERR 3 interlock open"
            self.on = words[1] == "1"
            return "OK"
        if words[:1] == ["POW"] and len(words) == 2:
            try:
                value = float(words[1])
            except ValueError:
                return "ERR 2 bad number"
            if not 0 <= value <= self.max_power_w:
                return f"ERR 2 power out of range 0..{self.max_power_w:.6g}"
            self.power_w = value
            return "OK"
        return "ERR 1 unknown command"


class ShutterModel(LineModel):
    """The bench shutter protocol (drivers/shutter.py); ``jammed`` refuses to move."""

    def __init__(self, serial: str = "SIM-S0"):
        self.serial = serial
        self.is_open = False
        self.jammed = False

    def handle(self, line: str) -> str:
        if line == "*IDN?":
            return f"LABCTL,SHUTTER,SIM-1,{self.serial},1.0"
        if line == "SHUT?":
            return "OPEN" if self.is_open else "CLOSED"
        if line in ("SHUT OPEN", "SHUT CLOSE"):
            if self.jammed:
                return "ERR 4 blade jammed"
            self.is_open = line == "SHUT OPEN"
            return "OK"
        return "ERR 1 unknown command"


class PtyInstrument:
    """Serves a ``LineModel`` on a pseudo-terminal until ``stop``; ``port`` is the path to open.

    Commands end with LF (CR tolerated), replies end with CR LF. ``mode``:
    ``ok`` answers, ``silent`` reads but never answers, ``garbage`` answers every
    line with bytes that are no protocol at all.
    """

    def __init__(self, model: LineModel, mode: str = "ok", reply_delay_s: float = 0.0):
        self.model = model
        self.set_mode(mode)
        self.reply_delay_s = reply_delay_s
        self.received: list[str] = []
        self._master, self._slave = os.openpty()
        # Raw mode: no echo, no CR/LF translation, so the bytes are exactly what was sent.
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"pty-{type(model).__name__}", daemon=True)
        self._thread.start()

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode

    def _serve(self) -> None:
        buf = b""
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._master], [], [], 0.05)
                if not ready:
                    continue
                chunk = os.read(self._master, 4096)
            except OSError:
                return
            if not chunk:
                continue
            buf += chunk
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                line = raw.rstrip(b"\r").decode("ascii", "replace")
                self.received.append(line)
                reply = self._reply(line)
                if reply is None:
                    continue
                if self.reply_delay_s:
                    self._stop.wait(self.reply_delay_s)
                try:
                    os.write(self._master, reply)
                except OSError:
                    return

    def _reply(self, line: str) -> bytes | None:
        if self.mode == "silent":
            return None
        if self.mode == "garbage":
            return bytes(range(0x80, 0x100)) * 2
        return self.model.handle(line).encode("ascii") + b"\r\n"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> "PtyInstrument":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
