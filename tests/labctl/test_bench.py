"""labctl.bench: building devices from bench files (real, simulated, plugins, serial ports)."""

from __future__ import annotations

import sys
import textwrap

import cv2
import numpy as np
import pytest

from drivers.camera import OpenCvCamera
from drivers.errors import DeviceError
from labctl.bench import camera_plugins, open_bench
from labctl.config import load_bench
from labctl.errors import ConfigError

BASE = """
[bench]
name = "t"
wavelength_m = 532e-9
distances_m = [0.005, 0.005]
{laser}
{shutter}
{camera}
[[slm]]
name = "in"
role = "input"
driver = "sim"
resolution = [64, 48]
pitch_m = 8e-6
roi = [0, 0, 40, 40]
upsample = 2
{truth}
[[slm]]
name = "l1"
role = "layer"
driver = "sim"
resolution = [64, 48]
pitch_m = 8e-6
roi = [4, 4, 40, 40]
upsample = 2
"""
SIM_LASER = '[laser]\ndriver = "sim"'
SIM_CAMERA = '[camera]\ndriver = "sim"\npitch_m = 5e-6\nresolution = [64, 48]'


def write(tmp_path, laser=SIM_LASER, shutter="", camera=SIM_CAMERA, truth=""):
    p = tmp_path / "bench.toml"
    p.write_text(BASE.format(laser=laser, shutter=shutter, camera=camera, truth=truth))
    return load_bench(p)


def test_response_file_is_resolved_next_to_the_bench_file(tmp_path):
    import json

    sub = tmp_path / "resp"
    sub.mkdir()
    g = list(range(256))
    (sub / "in.json").write_text(json.dumps({"gray": g, "phase_rad": [0.0] * 256, "amplitude": [x / 255 for x in g]}))
    cfg = write(tmp_path, truth='[slm.truth]\nresponse_file = "resp/in.json"')
    with open_bench(cfg) as b:
        assert b.shutter is None
        b.laser.on()  # no shutter: the beam is gated by the laser alone
        b.input_slm.show(np.full((40, 40), 255, np.uint8))
        assert b.camera.grab().data.mean() > 0


def test_missing_response_file_is_a_device_error_naming_it(tmp_path):
    cfg = write(tmp_path, truth='[slm.truth]\nresponse_file = "nope.json"')
    with pytest.raises(DeviceError, match=r"nope.json: SLM response file not found"):
        open_bench(cfg)


def test_opencv_camera_path_relative_to_bench(tmp_path):
    w = cv2.VideoWriter(str(tmp_path / "cam.avi"), cv2.VideoWriter_fourcc(*"FFV1"), 5, (64, 48), False)
    w.write(np.full((48, 64), 12, np.uint8))
    w.release()
    camera = ('[camera]\ndriver = "opencv"\npitch_m = 5e-6\nresolution = [64, 48]\nbit_depth = 8\n'
              'device = "cam.avi"\n[camera.options]\ntimeout_s = 1.5')
    cfg = write(tmp_path, camera=camera)
    b = open_bench(cfg)
    assert isinstance(b.camera, OpenCvCamera) and b.camera.timeout_s == 1.5
    with b:
        assert b.camera.grab().data.mean() == 12


def test_unknown_opencv_option_and_unknown_driver(tmp_path):
    camera = '[camera]\ndriver = "opencv"\npitch_m = 5e-6\nresolution = [64, 48]\n[camera.options]\nfps = 3'
    with pytest.raises(ConfigError, match=r"camera.options: unknown key 'fps' for the opencv driver"):
        open_bench(write(tmp_path, camera=camera))
    camera = '[camera]\ndriver = "genicam"\npitch_m = 5e-6\nresolution = [64, 48]'
    with pytest.raises(ConfigError, match=r"no camera driver 'genicam' installed \(known: opencv, sim"):
        open_bench(write(tmp_path, camera=camera))


def test_camera_plugin_from_entry_point(tmp_path, monkeypatch):
    pkg = tmp_path / "site"
    pkg.mkdir()
    (pkg / "fakecam.py").write_text(textwrap.dedent("""
        import numpy as np
        from drivers.camera import Camera

        class FakeCam(Camera):
            driver_name = "fakecam"

            def __init__(self, name, resolution, pitch_m, bit_depth, exposure_s, gain_db, device, level=0):
                super().__init__(name, (resolution[1], resolution[0]), bit_depth, exposure_s, gain_db, pitch_m)
                self.level = level

            def _grab_raw(self):
                return np.full(self.sensor_shape, self.level, np.uint16)

        class NotACamera:
            pass
    """))
    dist = pkg / "fakecam-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakecam\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[labctl.cameras]\nfakecam = fakecam:FakeCam\nbroken = fakecam:NotACamera\nmissing = nomodule:X\n"
    )
    monkeypatch.syspath_prepend(str(pkg))
    assert {"fakecam", "broken", "missing"} <= set(camera_plugins())
    camera = '[camera]\ndriver = "fakecam"\npitch_m = 5e-6\nresolution = [64, 48]\n[camera.options]\nlevel = 33'
    with open_bench(write(tmp_path, camera=camera)) as b:
        assert b.camera.driver_name == "fakecam" and b.camera.grab().data.mean() == 33
    camera = '[camera]\ndriver = "broken"\npitch_m = 5e-6\nresolution = [64, 48]'
    with pytest.raises(DeviceError, match="camera plugin 'broken' is not a drivers.camera.Camera subclass"):
        open_bench(write(tmp_path, camera=camera))
    camera = '[camera]\ndriver = "missing"\npitch_m = 5e-6\nresolution = [64, 48]'
    with pytest.raises(DeviceError, match="camera plugin 'missing' failed to load: ModuleNotFoundError"):
        open_bench(write(tmp_path, camera=camera))
    sys.modules.pop("fakecam", None)


def test_serial_laser_and_shutter_from_bench(tmp_path):
    from drivers.sim.serial_instruments import LaserModel, PtyInstrument, ShutterModel

    with PtyInstrument(LaserModel()) as lp, PtyInstrument(ShutterModel()) as sp:
        laser = f'[laser]\ndriver = "serial"\nport = "{lp.port}"\ntimeout_s = 0.5'
        shutter = f'[shutter]\ndriver = "serial"\nport = "{sp.port}"\ntimeout_s = 0.5'
        cfg = write(tmp_path, laser=laser, shutter=shutter)
        with open_bench(cfg) as b:
            assert not b.laser.is_on and not b.shutter.is_open
            b.laser.on()
            b.shutter.open()
            assert lp.model.on and sp.model.is_open
        assert not lp.model.on and not sp.model.is_open  # exit leaves the bench safe


def test_unplugged_serial_laser_fails_connect_cleanly(tmp_path):
    laser = f'[laser]\ndriver = "serial"\nport = "{tmp_path / "ttyUSB7"}"\ntimeout_s = 0.2'
    b = open_bench(write(tmp_path, laser=laser))
    with pytest.raises(DeviceError, match=r"ttyUSB7: cannot open it"):
        b.connect()
    assert not any(s.connected for s in b.slms.values())


def test_sim_camera_needs_sim_slms(tmp_path):
    text = BASE.format(laser=SIM_LASER, shutter="", camera=SIM_CAMERA, truth="")
    text = text.replace('driver = "sim"\nresolution = [64, 48]\npitch_m = 8e-6\nroi = [4, 4',
                        'driver = "hdmi"\nmonitor = 0\nresolution = [64, 48]\npitch_m = 8e-6\nroi = [4, 4')
    p = tmp_path / "mixed.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match="a simulated camera needs every SLM simulated"):
        open_bench(load_bench(p))


def test_undersampled_sim_bench_is_refused_when_built(tmp_path):
    text = BASE.format(laser=SIM_LASER, shutter="", camera=SIM_CAMERA, truth="")
    p = tmp_path / "far.toml"
    p.write_text(text.replace("distances_m = [0.005, 0.005]", "distances_m = [0.05, 0.05]"))
    with pytest.raises(DeviceError, match=r"simulated bench cannot propagate: grid too coarse .* z=0.05 m"):
        open_bench(load_bench(p))


def test_status_is_json_and_names_every_device(tmp_path):
    import json

    cfg = write(tmp_path, shutter='[shutter]\ndriver = "sim"')
    b = open_bench(cfg)
    before = json.loads(json.dumps(b.status()))
    assert before["laser"] == {"name": "laser"}  # not connected: no state claimed
    with b:
        s = json.loads(json.dumps(b.status()))
    assert s["bench"] == "t" and list(s["slms"]) == ["in", "l1"]
    assert s["laser"]["on"] is False and s["shutter"]["open"] is False and s["camera"]["connected"]


@pytest.mark.parametrize("verify", [True, False])
def test_hdmi_slm_gets_the_verify_setting(tmp_path, verify):
    from labctl.bench import open_slm

    text = BASE.format(laser=SIM_LASER, shutter="", camera=SIM_CAMERA, truth="")
    text = text.replace('driver = "sim"\nresolution = [64, 48]\npitch_m = 8e-6\nroi = [4, 4',
                        f'driver = "hdmi"\nmonitor = 0\nverify = {str(verify).lower()}\n'
                        'resolution = [64, 48]\npitch_m = 8e-6\nroi = [4, 4')
    p = tmp_path / "hdmi.toml"
    p.write_text(text)
    slm = open_slm(load_bench(p), "l1")  # built, not connected: no display needed
    assert slm.verify is verify
