"""The simulated bench: its physics, determinism, hidden truth and fault injection."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from drivers.errors import DeviceError, DeviceTimeout
from drivers.slm import upsample_map
from labctl.bench import open_bench
from labctl.config import builtin_bench_path, load_bench

SIM = builtin_bench_path("sim")


def bench_file(tmp_path: Path, replace: dict[str, str] | None = None) -> Path:
    """A copy of the shipped sim bench (with its response files), edited by plain text replacement."""
    text = SIM.read_text()
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    for resp in SIM.parent.glob("*.response.json"):
        shutil.copy(resp, tmp_path / resp.name)
    path = tmp_path / "bench.toml"
    path.write_text(text)
    return path


def lit(bench):
    bench.laser.on()
    bench.shutter.open()
    bench.input_slm.show(np.full(bench.input_slm.shape, 255, np.uint8))


def test_same_seed_same_frames_other_seed_other_noise(tmp_path):
    frames = []
    for seed in (0, 0, 1):
        cfg = load_bench(bench_file(tmp_path, {"seed = 0": f"seed = {seed}"}))
        with open_bench(cfg) as b:
            lit(b)
            frames.append(b.camera.grab().data)
    np.testing.assert_array_equal(frames[0], frames[1])
    assert not np.array_equal(frames[0], frames[2])
    assert abs(frames[0].mean() - frames[2].mean()) < 0.01 * frames[0].mean()


def test_dark_frame_is_dark_level_plus_read_noise():
    cfg = load_bench("sim")
    with open_bench(cfg) as b:
        f = b.camera.grab()
    k = 4095 / 20000.0  # DN per electron at 0 dB
    assert f.data.mean() == pytest.approx(100.0, abs=0.1)
    assert f.data.std() == pytest.approx(6.0 * k, rel=0.1)
    assert f.saturated == 0


@pytest.mark.parametrize("gate", ["laser off", "shutter closed", "stuck shutter"])
def test_light_needs_laser_on_and_shutter_open(tmp_path, gate):
    replace = {"[shutter]\ndriver = \"sim\"": "[shutter]\ndriver = \"sim\"\n[shutter.truth]\nstuck = true"}
    cfg = load_bench(bench_file(tmp_path, replace if gate == "stuck shutter" else None))
    with open_bench(cfg) as b:
        b.input_slm.show(np.full(b.input_slm.shape, 255, np.uint8))
        b.laser.on()
        b.shutter.open()
        if gate == "laser off":
            b.laser.off()
        elif gate == "shutter closed":
            b.shutter.close()
        else:
            assert b.shutter.is_open  # a stuck shutter reports what it was told
        blocked = b.camera.grab().data.mean()
    assert blocked == pytest.approx(100.0, abs=0.2)


def test_input_slm_is_an_amplitude_modulator():
    with open_bench(load_bench("sim")) as b:
        lit(b)
        bright = b.camera.grab().data.mean() - 100.0
        b.input_slm.show(np.zeros(b.input_slm.shape, np.uint8))
        dim = b.camera.grab().data.mean() - 100.0
    resp = json.loads((SIM.parent / "input.response.json").read_text())
    expected = (resp["amplitude"][255] / resp["amplitude"][0]) ** 2
    assert bright > 50
    # Dim is almost all noise floor; the ratio only has to be of the right order.
    assert bright / max(dim, 1e-3) > expected / 10


def test_shot_noise_follows_the_signal(tmp_path):
    cfg = load_bench(bench_file(tmp_path, {"relative_noise = 0.002": "relative_noise = 0.0"}))
    with open_bench(cfg) as b:
        lit(b)
        a, c = b.camera.grab().data, b.camera.grab().data
    k = 4095 / 20000.0
    mean = (a + c) / 2 - 100.0
    bright = mean > 200
    assert bright.sum() > 1000
    predicted = 2 * (k * mean[bright] + (k * 6.0) ** 2).mean()
    measured = (a - c)[bright].var()
    assert measured == pytest.approx(predicted, rel=0.15)


def test_saturation_at_bit_depth(tmp_path):
    with open_bench(load_bench("sim")) as b:
        lit(b)
        b.camera.exposure_s = 0.05
        f = b.camera.grab()
    assert f.saturated > 100
    assert f.data.max() == 4095


def test_camera_geometry_follows_magnification_offset_rotation(tmp_path):
    # Short gaps: the detector plane is nearly the input plane, so a bright square maps straight to the sensor.
    cfg = load_bench(bench_file(tmp_path, {
        "distances_m = [0.2794, 0.2794, 0.2794, 0.2794]": "distances_m = [1e-4, 1e-4, 1e-4, 1e-4]",
        "fringing_px = 0.6": "fringing_px = 0.0",
    }))
    with open_bench(cfg) as b:
        b.laser.on()
        b.shutter.open()
        gray = np.zeros((200, 200), np.uint8)
        r0, c0 = 40, 130
        gray[r0 : r0 + 10, c0 : c0 + 10] = 255
        b.input_slm.show(gray)
        f = b.camera.grab(n_average=4).data - 100.0
    rows, cols = np.indices(f.shape)
    w = np.clip(f, 0, None) * (f > 20)
    cy, cx = (rows * w).sum() / w.sum(), (cols * w).sum() / w.sum()
    s = 0.33 * 36e-6 / 5.86e-6
    th = np.radians(0.4)
    src = np.array([c0 + 4.5 - 99.5, r0 + 4.5 - 99.5])
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    ex, ey = s * rot @ src + np.array([319.5 + 3.2, 239.5 - 2.1])
    assert cx == pytest.approx(ex, abs=0.5) and cy == pytest.approx(ey, abs=0.5)
    # the square is s times larger on the sensor
    assert (f > f.max() / 2).sum() == pytest.approx((10 * s) ** 2, rel=0.25)


def test_plane_shift_and_fringing_act_on_the_transmission():
    from drivers.sim.truth import SlmTruth
    from drivers.sim.world import SimWorld

    world = SimWorld(shape=(40, 40), pitch_m=36e-6, wavelength_m=532e-9, distances_m=(0.1, 0.1))
    base = SlmTruth.ideal("layer")
    world.add_slm("in", "input", (40, 40), 36e-6, 2, SlmTruth.ideal("input"))
    world.add_slm("a", "layer", (40, 40), 36e-6, 2, base)
    world.add_slm("b", "layer", (40, 40), 36e-6, 2, SlmTruth(base.phase_rad, base.amplitude, shift_px=(1.0, 0.0)))
    world.add_slm("c", "layer", (40, 40), 36e-6, 2, SlmTruth(base.phase_rad, base.amplitude, fringing_px=1.0))
    gray = upsample_map(np.random.default_rng(0).integers(0, 128, (20, 20), dtype=np.uint8), 2)
    for name in "abc":
        world._set_map(name, gray)
    ta, tb, tc = (world._plane(n).transmission for n in "abc")
    np.testing.assert_allclose(tb[2:, :], ta[:-2, :], atol=1e-5)  # 1 neuron = 2 SLM pixels down
    assert np.angle(tc).std() < 0.8 * np.angle(ta).std()  # crosstalk smooths the phase


def test_truth_is_not_visible_through_driver_interfaces():
    cfg = load_bench("sim")
    secrets = {"response", "truth", "phase_rad", "amplitude", "magnification", "shift", "fringing", "dark_dn",
               "read_noise", "full_well", "photons", "stuck", "relative_noise", "world"}
    with open_bench(cfg) as b:
        for dev in b.devices():
            text = json.dumps(dev.status()).lower()
            assert not [s for s in secrets if s in text], dev.status()
            public = {k: v for k, v in vars(dev).items() if not k.startswith("_")}
            assert not [k for k in public if any(s in k.lower() for s in secrets)], public
            assert not [n for n in dir(dev) if not n.startswith("_") and any(s in n.lower() for s in secrets)]
            for v in public.values():
                assert not hasattr(v, "_camera") and not hasattr(v, "_layers"), "the world leaks through an attribute"


def test_fault_injection_hooks():
    with open_bench(load_bench("sim")) as b:
        b.camera.inject_grab_error()
        with pytest.raises(DeviceError, match="injected fault"):
            b.camera.grab()
        b.camera.grab()  # recovers
        b.camera.inject_grab_error(2, timeout=True)
        for _ in range(2):
            with pytest.raises(DeviceTimeout):
                b.camera.grab()
        lit(b)
        b.laser.inject_trip()
        assert not b.laser.is_on
        assert b.camera.grab().data.mean() == pytest.approx(100.0, abs=0.2)
        b.laser.inject_interlock(True)
        with pytest.raises(DeviceError, match="interlock open"):
            b.laser.on()
        b.laser.inject_interlock(False)
        b.laser.on()
        b.shutter.inject_jam()
        with pytest.raises(DeviceError, match="jammed"):
            b.shutter.close()
        b.shutter.inject_jam(False)
        b.layer_slms[1].inject_show_error()
        with pytest.raises(DeviceError, match="display link lost"):
            b.layer_slms[1].show(np.zeros((200, 200), np.uint8))
        b.layer_slms[1].show(np.zeros((200, 200), np.uint8))


def test_bench_starts_safe_and_ends_safe_even_after_an_error():
    cfg = load_bench("sim")
    b = open_bench(cfg)
    with pytest.raises(RuntimeError, match="boom"):
        with b:
            assert not b.laser.is_on and not b.shutter.is_open
            assert all(not s.current().any() for s in b.slms.values())
            lit(b)
            for s in b.layer_slms:
                s.show(np.full((200, 200), 7, np.uint8))
            raise RuntimeError("boom")
    assert not b.shutter.is_open and not b.laser.is_on
    assert all(not s.current().any() for s in b.slms.values())
    assert list(b.slms) == ["slm0", "slm1", "slm2", "slm3"]
    assert [s.name for s in b.layer_slms] == ["slm1", "slm2", "slm3"] and b.input_slm.name == "slm0"


def test_abort_blanks_and_closes_even_if_one_slm_fails():
    with open_bench(load_bench("sim")) as b:
        lit(b)
        for s in b.layer_slms:
            s.show(np.full((200, 200), 9, np.uint8))
        b.layer_slms[0].inject_show_error()
        with pytest.raises(DeviceError, match="display link lost"):
            b.abort()
        assert not b.shutter.is_open
        assert not b.layer_slms[1].current().any() and not b.layer_slms[2].current().any()
