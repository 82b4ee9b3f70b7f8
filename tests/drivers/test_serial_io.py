"""Serial transport on a real pseudo-terminal: timeouts, retries, garbage, unplugged ports."""

from __future__ import annotations

import time

import pytest

from drivers.errors import DeviceError, DeviceTimeout
from drivers.laser import SerialLaser
from drivers.serial_io import SerialTransport, list_serial_ports
from drivers.shutter import SerialShutter
from drivers.sim.serial_instruments import LaserModel, PtyInstrument, ShutterModel


@pytest.fixture
def laser_pty():
    with PtyInstrument(LaserModel()) as p:
        yield p


def test_query_over_pty_round_trip(laser_pty):
    t = SerialTransport(laser_pty.port, timeout_s=0.5)
    t.connect()
    try:
        assert t.query("*IDN?").startswith("LABCTL,LASER,")
        assert t.query("OUT?") == "0"
        assert laser_pty.received == ["*IDN?", "OUT?"]
    finally:
        t.disconnect()


def test_silent_device_times_out_after_retries_naming_the_port(laser_pty):
    t = SerialTransport(laser_pty.port, timeout_s=0.2, retries=2)
    t.connect()
    laser_pty.set_mode("silent")
    start = time.monotonic()
    with pytest.raises(DeviceTimeout, match=rf"{laser_pty.port}: no reply to 'OUT\?' within 0.2 s"):
        t.query("OUT?")
    elapsed = time.monotonic() - start
    t.disconnect()
    assert laser_pty.received == ["OUT?"] * 3  # first try + 2 retries
    assert 0.55 < elapsed < 2.0


def test_retry_recovers_from_one_lost_reply(laser_pty):
    t = SerialTransport(laser_pty.port, timeout_s=0.2, retries=1)
    t.connect()
    laser_pty.set_mode("silent")
    # The device comes back while the first attempt is waiting.
    import threading

    threading.Timer(0.1, laser_pty.set_mode, args=("ok",)).start()
    assert t.query("OUT?") == "0"
    t.disconnect()


def test_garbage_is_a_device_error_not_a_hang(laser_pty):
    dev = SerialLaser(SerialTransport(laser_pty.port, timeout_s=0.3))
    laser_pty.set_mode("garbage")
    start = time.monotonic()
    with pytest.raises(DeviceError, match=rf"{laser_pty.port}: garbled reply to '\*IDN\?'"):
        dev.connect()
    assert time.monotonic() - start < 2.0
    assert not dev.transport.connected


def test_unplugged_port_is_a_device_error_naming_it(tmp_path):
    missing = str(tmp_path / "ttyUSB9")
    with pytest.raises(DeviceError, match=rf"serial port {missing}: cannot open it"):
        SerialShutter(SerialTransport(missing, timeout_s=0.2)).connect()


def test_device_unplugged_while_connected(laser_pty):
    dev = SerialLaser(SerialTransport(laser_pty.port, timeout_s=0.2, retries=0)).connect()
    laser_pty.stop()  # closes both ends: the tty hangs up
    start = time.monotonic()
    with pytest.raises(DeviceError, match=laser_pty.port):
        dev.on()
    assert time.monotonic() - start < 1.5
    dev.disconnect()


def test_slow_reply_within_timeout_is_fine():
    with PtyInstrument(ShutterModel(), reply_delay_s=0.1) as p:
        dev = SerialShutter(SerialTransport(p.port, timeout_s=0.5)).connect()
        dev.open()
        assert dev.is_open
        dev.disconnect()


def test_late_reply_is_not_read_as_the_answer_to_the_next_query():
    with PtyInstrument(LaserModel(), reply_delay_s=0.3) as p:
        t = SerialTransport(p.port, timeout_s=0.15, retries=0)
        t.connect()
        with pytest.raises(DeviceTimeout):
            t.query("OUT?")
        p.reply_delay_s = 0.0
        time.sleep(0.3)  # the late "0" arrives now and must be discarded
        assert t.query("*IDN?").startswith("LABCTL,LASER,")
        t.disconnect()


def test_port_is_exclusive(laser_pty):
    a = SerialTransport(laser_pty.port, timeout_s=0.2)
    a.connect()
    try:
        with pytest.raises(DeviceError, match="cannot open"):
            SerialTransport(laser_pty.port, timeout_s=0.2).connect()
    finally:
        a.disconnect()


def test_list_serial_ports_returns_port_infos():
    ports = list_serial_ports()
    assert all(p.device for p in ports)
