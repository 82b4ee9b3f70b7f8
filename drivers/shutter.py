"""Shutters: the interface, and the serial driver for the bench's line-protocol shutter.

Protocol (host → device lines end with LF, replies end with CR LF; docs/drivers.md):
``*IDN?`` → ``LABCTL,SHUTTER,<model>,<serial>,<firmware>``; ``SHUT?`` →
``OPEN``/``CLOSED``; ``SHUT OPEN``/``SHUT CLOSE`` → ``OK`` once the blade has
moved; any refusal (jammed blade...) → ``ERR <code> <text>``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from drivers.errors import DeviceError
from drivers.serial_io import LineInstrument, SerialTransport, measurement, one_of


class Shutter(ABC):
    """A beam shutter. ``open``/``close`` move the blade; ``connect``/``disconnect`` the link."""

    driver_name = "abstract"
    name: str

    @abstractmethod
    def connect(self) -> "Shutter": ...

    @abstractmethod
    def disconnect(self) -> None: ...

    @abstractmethod
    def open(self) -> None:
        """Let the beam through; raises DeviceError if the blade did not move."""

    @abstractmethod
    def close(self) -> None:
        """Block the beam; raises DeviceError if the blade did not move."""

    @property
    @abstractmethod
    def is_open(self) -> bool: ...

    def status(self) -> dict[str, Any]:
        return {"kind": "shutter", "name": self.name, "driver": self.driver_name, "open": self.is_open}

    def __enter__(self) -> "Shutter":
        return self.connect()

    def __exit__(self, *exc: Any) -> None:
        self.disconnect()


class SerialShutter(LineInstrument, Shutter):
    """The bench shutter on a serial port (see the module docstring for its protocol)."""

    IDN_PREFIX = "LABCTL,SHUTTER,"
    kind = "shutter"
    driver_name = "serial"

    def __init__(self, transport: SerialTransport, name: str = "shutter"):
        LineInstrument.__init__(self, transport, name)

    is_open = measurement("SHUT?", one_of({"OPEN": True, "CLOSED": False}), "True while the beam passes.")

    def connect(self) -> "SerialShutter":
        if not self.transport.connected:
            self.connect_transport()
        return self

    def disconnect(self) -> None:
        self.transport.disconnect()

    def _move(self, word: str, want_open: bool) -> None:
        self.write(f"SHUT {word}")
        # The OK acknowledges the command; the state query confirms the blade moved.
        if self.is_open != want_open:
            raise DeviceError(f"shutter {self.name!r} on {self.port}: did not {word.lower()} (state query disagrees)")

    def open(self) -> None:
        self._move("OPEN", True)

    def close(self) -> None:
        self._move("CLOSE", False)

    def status(self) -> dict[str, Any]:
        s = super().status()
        s.update(port=self.port, identity=self.identity)
        return s
