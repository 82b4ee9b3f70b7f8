"""The Laser contract, run against the serial driver on a pty-served simulator and the simulated laser."""

from __future__ import annotations

import json

import pytest

from drivers.errors import DeviceError


@pytest.fixture(params=["serial-pty", "sim"])
def laser(request):
    if request.param == "sim":
        from drivers.sim.instruments import SimLaser
        from drivers.sim.world import SimWorld

        yield SimLaser(SimWorld(shape=(8, 8), pitch_m=1e-5, wavelength_m=5e-7, distances_m=(0.1,)))
        return
    from drivers.laser import SerialLaser
    from drivers.serial_io import SerialTransport
    from drivers.sim.serial_instruments import LaserModel, PtyInstrument

    with PtyInstrument(LaserModel()) as pty:
        yield SerialLaser(SerialTransport(pty.port, timeout_s=0.5))


def test_on_off(laser):
    with laser:
        laser.off()
        assert laser.is_on is False
        laser.on()
        assert laser.is_on is True
        laser.off()
        assert laser.is_on is False


def test_power_set_point(laser):
    with laser:
        laser.power_w = 2e-3
        assert laser.power_w == pytest.approx(2e-3)
        with pytest.raises(DeviceError, match=r"power must be 0\.\.0\.005 W"):
            laser.power_w = 1.0
        with pytest.raises(DeviceError):
            laser.power_w = "a lot"
        assert laser.power_w == pytest.approx(2e-3)


def test_status(laser):
    with laser:
        laser.on()
        s = json.loads(json.dumps(laser.status()))
    assert s["kind"] == "laser" and s["on"] is True and s["power_w"] > 0
