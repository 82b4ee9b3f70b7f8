"""Simulated laser and shutter of the shared ``SimWorld`` (no serial link; see
``drivers.sim.serial_instruments`` for the pty-served protocol simulators)."""

from __future__ import annotations

from drivers.errors import DeviceError
from drivers.laser import Laser
from drivers.shutter import Shutter
from drivers.sim.world import REFERENCE_POWER_W, SimWorld

MAX_POWER_W = 5e-3


class SimLaser(Laser):
    """The simulated bench laser (set point 0..5 mW, nominal 1 mW).

    Fault injection: ``inject_trip()`` switches emission off as an interlock would;
    ``inject_interlock(True)`` makes ``on()`` refuse until cleared.
    """

    driver_name = "sim"

    def __init__(self, world: SimWorld, name: str = "laser"):
        self.name = name
        self._world = world
        self._on = False
        self._power_w = REFERENCE_POWER_W
        self._interlock = False
        self._connected = False

    def connect(self) -> "SimLaser":
        self._connected = True
        return self

    def disconnect(self) -> None:
        self._connected = False

    def _need(self) -> None:
        if not self._connected:
            raise DeviceError(f"laser {self.name!r} is not connected (use it as a context manager or call connect())")

    def on(self) -> None:
        self._need()
        if self._interlock:
            raise DeviceError(f"laser {self.name!r}: refused to switch on: interlock open")
        self._on = True
        self._world._set_laser(True)

    def off(self) -> None:
        self._need()
        self._on = False
        self._world._set_laser(False)

    @property
    def is_on(self) -> bool:
        return self._on

    @property
    def power_w(self) -> float:
        return self._power_w

    @power_w.setter
    def power_w(self, value: float) -> None:
        self._need()
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = float("nan")
        if not 0 <= v <= MAX_POWER_W:
            raise DeviceError(f"laser {self.name!r}: power must be 0..{MAX_POWER_W:g} W, got {value!r}")
        self._power_w = v
        self._world._set_laser_power(v)

    def inject_trip(self) -> None:
        """Emission stops now, as when an interlock trips."""
        self._on = False
        self._world._set_laser(False)

    def inject_interlock(self, engaged: bool = True) -> None:
        """While engaged, ``on()`` raises DeviceError."""
        self._interlock = bool(engaged)
        if engaged:
            self.inject_trip()


class SimShutter(Shutter):
    """The simulated bench shutter.

    Fault injection: ``inject_jam(True)`` makes ``open``/``close`` raise DeviceError.
    """

    driver_name = "sim"

    def __init__(self, world: SimWorld, name: str = "shutter"):
        self.name = name
        self._world = world
        self._open = False
        self._jammed = False
        self._connected = False

    def connect(self) -> "SimShutter":
        self._connected = True
        return self

    def disconnect(self) -> None:
        self._connected = False

    def _move(self, want_open: bool) -> None:
        if not self._connected:
            raise DeviceError(f"shutter {self.name!r} is not connected (use it as a context manager or call connect())")
        if self._jammed:
            raise DeviceError(f"shutter {self.name!r}: blade jammed, did not {'open' if want_open else 'close'}")
        self._open = want_open
        self._world._set_shutter(want_open)

    def open(self) -> None:
        self._move(True)

    def close(self) -> None:
        self._move(False)

    @property
    def is_open(self) -> bool:
        return self._open

    def inject_jam(self, jammed: bool = True) -> None:
        """While jammed, ``open``/``close`` raise DeviceError and the blade stays put."""
        self._jammed = bool(jammed)

