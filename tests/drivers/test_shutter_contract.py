"""The Shutter contract, run against the serial driver on a pty-served simulator and the simulated shutter."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(params=["serial-pty", "sim"])
def shutter(request):
    if request.param == "sim":
        from drivers.sim.instruments import SimShutter
        from drivers.sim.world import SimWorld

        yield SimShutter(SimWorld(shape=(8, 8), pitch_m=1e-5, wavelength_m=5e-7, distances_m=(0.1,)))
        return
    from drivers.serial_io import SerialTransport
    from drivers.shutter import SerialShutter
    from drivers.sim.serial_instruments import PtyInstrument, ShutterModel

    with PtyInstrument(ShutterModel()) as pty:
        yield SerialShutter(SerialTransport(pty.port, timeout_s=0.5))


def test_open_close(shutter):
    with shutter:
        shutter.close()
        assert shutter.is_open is False
        shutter.open()
        assert shutter.is_open is True
        shutter.close()
        assert shutter.is_open is False


def test_status(shutter):
    with shutter:
        shutter.open()
        s = json.loads(json.dumps(shutter.status()))
    assert s["kind"] == "shutter" and s["open"] is True
