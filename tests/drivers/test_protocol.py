"""The laser and shutter line protocols as tables of (bytes sent, bytes replied)."""

from __future__ import annotations

import pytest

from drivers.errors import DeviceError
from drivers.laser import SerialLaser
from drivers.serial_io import SerialTransport
from drivers.shutter import SerialShutter

LASER_IDN = (b"*IDN?\n", b"LABCTL,LASER,M1,SN42,2.1\r\n")
SHUTTER_IDN = (b"*IDN?\n", b"LABCTL,SHUTTER,S1,SN7,1.0\r\n")


def laser(port):
    return SerialLaser(SerialTransport(port, timeout_s=0.2)).connect()


def shutter(port):
    return SerialShutter(SerialTransport(port, timeout_s=0.2)).connect()


def test_laser_protocol_table(scripted):
    port = scripted([
        LASER_IDN,
        (b"OUT?\n", b"0\r\n"),
        (b"OUT 1\n", b"OK\r\n"),
        (b"OUT?\n", b"1\r\n"),
        (b"POW?\n", b"0.001\r\n"),
        (b"MAX?\n", b"0.005\r\n"),
        (b"POW 0.0025\n", b"OK\r\n"),
        (b"OUT 0\n", b"OK\r\n"),
    ])
    dev = laser(port)
    assert dev.identity == "LABCTL,LASER,M1,SN42,2.1"
    assert dev.is_on is False
    dev.on()
    assert dev.is_on is True
    assert dev.power_w == pytest.approx(1e-3)
    dev.power_w = 2.5e-3
    dev.off()


def test_shutter_protocol_table(scripted):
    port = scripted([
        SHUTTER_IDN,
        (b"SHUT OPEN\n", b"OK\r\n"),
        (b"SHUT?\n", b"OPEN\r\n"),
        (b"SHUT CLOSE\n", b"OK\r\n"),
        (b"SHUT?\n", b"CLOSED\r\n"),
        (b"SHUT?\n", b"CLOSED\r\n"),
    ])
    dev = shutter(port)
    dev.open()
    dev.close()
    assert dev.is_open is False


def test_error_reply_is_parsed_with_code_and_text(scripted):
    port = scripted([LASER_IDN, (b"OUT 1\n", b"ERR 3 interlock open\r\n")])
    dev = laser(port)
    with pytest.raises(DeviceError, match=r"scripted.*'OUT 1'.*error 3: interlock open"):
        dev.on()


def test_power_out_of_range_is_refused_before_sending(scripted):
    port = scripted([LASER_IDN, (b"MAX?\n", b"0.005\r\n")])
    dev = laser(port)
    with pytest.raises(DeviceError, match=r"power must be 0..0.005 W"):
        dev.power_w = 0.01


def test_unexpected_reply_names_command_and_port(scripted):
    port = scripted([LASER_IDN, (b"OUT?\n", b"maybe\r\n")])
    dev = laser(port)
    with pytest.raises(DeviceError, match=r"laser 'laser' on scripted: unexpected reply 'maybe' to 'OUT\?'"):
        dev.is_on


def test_shutter_that_acknowledges_but_does_not_move_is_an_error(scripted):
    port = scripted([SHUTTER_IDN, (b"SHUT OPEN\n", b"OK\r\n"), (b"SHUT?\n", b"CLOSED\r\n")])
    dev = shutter(port)
    with pytest.raises(DeviceError, match="did not open"):
        dev.open()


def test_wrong_device_on_port_is_refused(scripted):
    port = scripted([(b"*IDN?\n", b"LABCTL,SHUTTER,S1,SN7,1.0\r\n")])
    with pytest.raises(DeviceError, match=r"expected a device starting 'LABCTL,LASER,'"):
        laser(port)
    assert port.closed


def test_set_command_needs_ok(scripted):
    port = scripted([LASER_IDN, (b"OUT 1\n", b"DONE\r\n")])
    dev = laser(port)
    with pytest.raises(DeviceError, match=r"expected OK to 'OUT 1', got 'DONE'"):
        dev.on()
