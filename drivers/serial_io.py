"""Serial transport shared by the laser and shutter drivers (pyserial)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PortInfo:
    device: str
    description: str
    hwid: str


def list_serial_ports() -> list[PortInfo]:
    """Serial ports pyserial can see."""
    from serial.tools import list_ports

    return [PortInfo(p.device, p.description or "", p.hwid or "") for p in list_ports.comports()]
