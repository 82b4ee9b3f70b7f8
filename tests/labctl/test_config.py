"""Bench config: the shipped bench loads; every kind of mistake is named precisely."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from labctl.config import builtin_bench_path, load_bench
from labctl.errors import ConfigError

SIM_TEXT = builtin_bench_path("sim").read_text()


def write(tmp_path: Path, text: str, name: str = "bench.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def edited(old: str, new: str, count: int = 1) -> str:
    assert old in SIM_TEXT, old
    return SIM_TEXT.replace(old, new, count)


def error_for(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_bench(write(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "bench.toml") in message  # names the file
    return message


def test_shipped_sim_bench_loads_by_name():
    b = load_bench("sim")
    assert b.name == "sim"
    assert b.size == (100, 100)
    assert b.pitch_m == pytest.approx(72e-6)
    assert [s.name for s in b.layer_slms] == ["slm1", "slm2", "slm3"]
    assert b.input_slm.name == "slm0"
    assert len(b.distances_m) == len(b.layer_slms) + 1
    assert b.slm("slm2").truth["response_file"] == "layer_b.response.json"
    assert b.resolve("layer_b.response.json").exists()
    assert len(b.sha256) == 64


def test_same_file_same_hash_and_copy_loads(tmp_path):
    a = load_bench(write(tmp_path, SIM_TEXT))
    assert a.sha256 == load_bench("sim").sha256


def test_unknown_bench_name():
    with pytest.raises(ConfigError, match="no shipped bench"):
        load_bench("nonexistent-bench")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_bench(tmp_path / "missing.toml")


def test_invalid_toml(tmp_path):
    msg = error_for(tmp_path, SIM_TEXT + "\n[bench\n")
    assert "invalid TOML" in msg


@pytest.mark.parametrize(
    "old,new,expect",
    [
        ('name = "sim"\nwavelength_m = 532e-9\n', 'name = "sim"\n', r"bench\.wavelength_m: missing required key"),
        ("wavelength_m = 532e-9", 'wavelength_m = "green"', r"bench\.wavelength_m: expected .* got 'green'"),
        ("wavelength_m = 532e-9", "wavelength_m = 532", r"not an optical wavelength"),
        ("distances_m = [0.2794, 0.2794, 0.2794, 0.2794]", "distances_m = [0.2794, -0.1, 0.2794, 0.2794]",
         r"bench\.distances_m: expected .*each > 0"),
        ("distances_m = [0.2794, 0.2794, 0.2794, 0.2794]", "distances_m = [0.2794, 0.0, 0.2794, 0.2794]",
         r"bench\.distances_m"),
        ("distances_m = [0.2794, 0.2794, 0.2794, 0.2794]", "distances_m = [0.2794, 0.2794]",
         r"expected 4 distances"),
        ("pitch_m = 5.86e-6", "pitch_m = 0", r"camera\.pitch_m: expected the camera pixel pitch in metres, > 0"),
        ("pitch_m = 36e-6", "pitch_m = -36e-6", r"slm 'slm0'\.pitch_m: expected .*> 0"),
        ('[laser]\ndriver = "sim"', '[laser]\ndriver = "tcp"', r"laser\.driver: expected one of serial, sim, got 'tcp'"),
        ('name = "slm1"\nrole = "layer"\ndriver = "sim"', 'name = "slm1"\nrole = "layer"\ndriver = "dvi"',
         r"slm 'slm1'\.driver: expected one of hdmi, sim"),
        ("roi = [860, 440, 200, 200]", "roi = [1800, 440, 200, 200]", r"slm 'slm0'\.roi: .*outside the 1920x1080"),
        ("roi = [860, 440, 200, 200]", "roi = [860, 440, 200]", r"slm 'slm0'\.roi: expected \[x, y, w, h\]"),
        ("roi = [860, 440, 200, 200]", "roi = [860, 440, 201, 201]", r"not a whole number of 2-pixel neurons"),
        ('name = "slm2"', 'name = "slm1"', r"slm 'slm1': duplicate device name"),
        ("pitch_m = 5.86e-6", "pitch_um = 5.86", r"camera\.pitch_m: missing required key .*found unknown key 'pitch_um' \(a typo\?\)"),
        ("seed = 0", "sead = 0", r"bench: unknown key 'sead'"),
        ("magnification = 0.33", "magnificaton = 0.33", r"camera\.truth: unknown key 'magnificaton'"),
        ("upsample = 2", "upsample = 2.5", r"upsample: expected SLM pixels per neuron side"),
        ('role = "input"', 'role = "layer"', r"exactly one SLM with role = \"input\", found 0"),
        ("bit_depth = 12", "bit_depth = true", r"camera\.bit_depth: expected bits per pixel"),
    ],
)
def test_bad_bench_files_are_named_precisely(tmp_path, old, new, expect):
    msg = error_for(tmp_path, edited(old, new))
    assert re.search(expect, msg), msg


def test_missing_table(tmp_path):
    text = SIM_TEXT.split("[laser]")[0] + "[shutter]" + SIM_TEXT.split("[shutter]")[1]
    msg = error_for(tmp_path, text)
    assert "missing required table [laser]" in msg


def test_no_slms(tmp_path):
    text = SIM_TEXT.split("[[slm]]")[0]
    assert "needs one input SLM" in error_for(tmp_path, text)


def test_truth_only_on_simulated_devices(tmp_path):
    text = edited('driver = "sim"\nresolution = [1920, 1080]', 'driver = "hdmi"\nmonitor = 1\nresolution = [1920, 1080]')
    assert "truth table is only allowed on a simulated device" in error_for(tmp_path, text)


def test_hdmi_needs_monitor(tmp_path):
    text = edited('driver = "sim"\nresolution = [1920, 1080]', 'driver = "hdmi"\nresolution = [1920, 1080]')
    text = text.replace('[slm.truth]\nresponse_file = "input.response.json"\nshift_px = [0.0, 0.0]\n'
                        'rotation_deg = 0.0\nfringing_px = 0.6\n', "", 1)
    assert "needs a monitor" in error_for(tmp_path, text)


def test_serial_laser_needs_port(tmp_path):
    text = edited('[laser]\ndriver = "sim"\n[laser.truth]\npower_w = 1e-3\nrelative_noise = 0.002',
                  '[laser]\ndriver = "serial"')
    assert "laser.port: missing required key" in error_for(tmp_path, text)
    ok = load_bench(write(tmp_path, text.replace('driver = "serial"', 'driver = "serial"\nport = "/dev/ttyUSB0"', 1)))
    assert ok.laser.serial.port == "/dev/ttyUSB0" and ok.laser.serial.baudrate == 9600


def test_port_on_simulated_laser_is_refused(tmp_path):
    text = edited('[laser]\ndriver = "sim"', '[laser]\ndriver = "sim"\nport = "/dev/ttyUSB0"')
    assert "only meaningful with driver = \"serial\"" in error_for(tmp_path, text)


def test_mismatched_neuron_grid(tmp_path):
    text = edited("roi = [860, 440, 200, 200]\nupsample = 2", "roi = [860, 440, 200, 200]\nupsample = 4")
    assert "all planes must match" in error_for(tmp_path, text)


def test_config_objects_are_frozen():
    b = load_bench("sim")
    with pytest.raises(AttributeError):
        b.name = "other"  # type: ignore[misc]


def test_unknown_slm_name_lists_known():
    b = load_bench("sim")
    with pytest.raises(ConfigError, match="slm0, slm1, slm2, slm3"):
        b.slm("slm9")


def test_hdmi_verify_flag(tmp_path):
    hdmi = edited('driver = "sim"\nresolution = [1920, 1080]', 'driver = "hdmi"\nmonitor = 1\nverify = false\n'
                  'resolution = [1920, 1080]')
    hdmi = hdmi.replace('[slm.truth]\nresponse_file = "input.response.json"\nshift_px = [0.0, 0.0]\n'
                        'rotation_deg = 0.0\nfringing_px = 0.6\n', "", 1)
    b = load_bench(write(tmp_path, hdmi))
    assert b.input_slm.verify is False and b.slm("slm1").verify is True
    bad = edited('name = "slm1"\nrole = "layer"\ndriver = "sim"', 'name = "slm1"\nrole = "layer"\ndriver = "sim"\nverify = false')
    assert 'verify: only meaningful with driver = "hdmi"' in error_for(tmp_path, bad)
