"""Lasers: the interface, and the serial driver for the bench's line-protocol laser.

Protocol (host → device lines end with LF, replies end with CR LF; docs/drivers.md):
``*IDN?`` → ``LABCTL,LASER,<model>,<serial>,<firmware>``; ``OUT?`` → ``1``/``0``;
``OUT 1``/``OUT 0`` → ``OK``; ``POW?`` → watts; ``POW <watts>`` → ``OK``;
``MAX?`` → the largest settable power in watts; any refusal → ``ERR <code> <text>``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

from drivers.errors import DeviceError
from drivers.serial_io import LineInstrument, SerialTransport, control, measurement, one_of


class Laser(ABC):
    """A laser source. ``power_w`` is the optical power set point in watts."""

    driver_name = "abstract"
    name: str

    @abstractmethod
    def connect(self) -> "Laser": ...

    @abstractmethod
    def disconnect(self) -> None:
        """Release the device (the emission state is left as it is)."""

    @abstractmethod
    def on(self) -> None:
        """Start emission."""

    @abstractmethod
    def off(self) -> None:
        """Stop emission."""

    @property
    @abstractmethod
    def is_on(self) -> bool:
        """True while emitting."""

    @property
    @abstractmethod
    def power_w(self) -> float:
        """Optical power set point, watts."""

    @power_w.setter
    @abstractmethod
    def power_w(self, value: float) -> None: ...

    def status(self) -> dict[str, Any]:
        return {"kind": "laser", "name": self.name, "driver": self.driver_name, "on": self.is_on, "power_w": self.power_w}

    def __enter__(self) -> "Laser":
        return self.connect()

    def __exit__(self, *exc: Any) -> None:
        self.disconnect()


def _finite(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError("expected a finite number")
    return v


def _check_power(self: "SerialLaser", value: Any) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    top = self.max_power_w
    if not (0 <= v <= top):
        raise DeviceError(f"laser {self.name!r} on {self.port}: power must be 0..{top:g} W, got {value!r}")
    return f"{v:.6g}"


class SerialLaser(LineInstrument, Laser):
    """The bench laser on a serial port (see the module docstring for its protocol)."""

    IDN_PREFIX = "LABCTL,LASER,"
    kind = "laser"
    driver_name = "serial"

    def __init__(self, transport: SerialTransport, name: str = "laser"):
        LineInstrument.__init__(self, transport, name)

    is_on = measurement("OUT?", one_of({"1": True, "0": False}), "True while emitting.")
    power_w = control("POW?", "POW {}", _finite, _check_power, "Optical power set point, watts.")
    max_power_w = measurement("MAX?", _finite, "Largest settable power, watts.")

    def connect(self) -> "SerialLaser":
        if not self.transport.connected:
            self.connect_transport()
        return self

    def disconnect(self) -> None:
        self.transport.disconnect()

    def on(self) -> None:
        self.write("OUT 1")

    def off(self) -> None:
        self.write("OUT 0")

    def status(self) -> dict[str, Any]:
        s = super().status()
        s.update(port=self.port, identity=self.identity)
        return s
