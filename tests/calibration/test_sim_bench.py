"""Calibration on the simulated bench, checked against its hidden truth.

The calibration code only drives the devices; these tests (and only they) read the
truth — the response files and the world's camera transform — to score it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from calibration.acquire import Acquisition
from calibration.errors import CalibrationError
from calibration.registration import Registration, register_camera
from calibration.response import measure_response
from labctl.bench import open_bench
from labctl.commands.calibrate import geometry_of
from labctl.config import load_bench
from tests.calibration.conftest import BENCHES, sim_bench_file

TRUTH = {"slm0": "input", "slm1": "layer_a", "slm2": "layer_b", "slm3": "layer_c"}


def _truth_response(slm: str) -> tuple[np.ndarray, np.ndarray]:
    d = json.loads((BENCHES / f"{TRUTH[slm]}.response.json").read_text())
    p, a = np.asarray(d["phase_rad"]), np.asarray(d["amplitude"])
    return p - p[0], a / a.max()


def _truth_matrix(bench) -> np.ndarray:
    """Neuron coordinates → camera pixels, from the simulated world's hidden camera transform."""
    m, _ = bench._world._sensor_map(bench.camera.sensor_shape, bench.camera.pitch_m)
    up = bench.config.input_slm.upsample
    return m @ np.array([[up, 0.0, -0.5], [0.0, up, -0.5], [0.0, 0.0, 1.0]])


def _registration_error_px(reg: Registration, truth: np.ndarray) -> tuple[float, float]:
    rows, cols = reg.neurons
    pts = np.array([[x, y] for x in np.linspace(0, cols, 11) for y in np.linspace(0, rows, 11)])
    err = np.linalg.norm(reg.to_camera(pts) - (pts @ truth[:, :2].T + truth[:, 2]), axis=1)
    return float(np.sqrt(np.mean(err**2))), float(err.max())


def _acq(bench) -> Acquisition:
    return Acquisition(bench.camera, bench.laser, bench.shutter, bench.slms, {bench.config.input_slm.name: 255})


@pytest.fixture(scope="module")
def sim_registration():
    cfg = load_bench("sim")
    with open_bench(cfg) as b:
        reg = register_camera(_acq(b), geometry_of(cfg), [s.name for s in cfg.layer_slms][-2:])
        truth = _truth_matrix(b)
    return reg, truth


def test_registration_within_half_a_camera_pixel(sim_registration):
    reg, truth = sim_registration
    rms, worst = _registration_error_px(reg, truth)
    assert rms <= 0.5 and worst <= 0.5, (rms, worst)
    assert reg.rms_px < 1.0 and reg.points >= 24


def test_registration_region_mask_covers_the_region(sim_registration):
    reg, truth = sim_registration
    mask = reg.region_mask([40, 30, 10, 12])
    px = reg.pixels_per_neuron
    assert mask.sum() == pytest.approx(10 * 12 * px * px, rel=0.03)
    cy, cx = np.average(np.indices(mask.shape), axis=(1, 2), weights=mask)
    expected = np.array([30 + 6, 40 + 5]) @ truth[:, :2].T + truth[:, 2]
    assert np.hypot(cx - expected[0], cy - expected[1]) < 0.5
    frame = np.ones(reg.sensor_shape)
    scores = reg.region_scores(frame, [[40, 30, 10, 12], [0, 0, 5, 5]])
    assert scores[0] == pytest.approx(mask.sum())


@pytest.mark.slow
@pytest.mark.parametrize("slm", ["slm1", "slm2", "slm3"])
def test_layer_response_matches_truth(slm, sim_registration):
    """layer_a: non-monotonic amplitude; layer_b: phase range < 2π; layer_c: > 2π-ish, dip in amplitude."""
    reg, _ = sim_registration
    cfg = load_bench("sim")
    with open_bench(cfg) as b:
        resp = measure_response(_acq(b), geometry_of(cfg), slm, reg)
    tp, ta = _truth_response(slm)
    phase_rms = float(np.sqrt(np.mean((resp.phase_rad - tp) ** 2)))
    amp_rms = float(np.sqrt(np.mean((resp.amplitude - ta) ** 2)))
    assert phase_rms <= 0.05, phase_rms
    assert amp_rms <= 0.03, amp_rms
    assert resp.frames <= 256 * 2 + 32
    assert np.all(resp.phase_std_rad[1:] > 0) and np.all(resp.amplitude_std > 0)
    assert resp.amplitude.max() == pytest.approx(1.0)


@pytest.mark.slow
def test_input_slm_amplitude_matches_truth(sim_registration):
    reg, _ = sim_registration
    cfg = load_bench("sim")
    with open_bench(cfg) as b:
        resp = measure_response(_acq(b), geometry_of(cfg), "slm0", reg)
    _, ta = _truth_response("slm0")
    assert float(np.sqrt(np.mean((resp.amplitude - ta) ** 2))) <= 0.03
    # Phase is poorly defined where the modulator is nearly dark; where it is bright it must be right.
    tp, _ = _truth_response("slm0")
    bright = ta > 0.3
    rel = resp.phase_rad - tp
    assert np.std(rel[bright]) < 0.05


# -- signal faults -----------------------------------------------------------------

def _run_registration(path):
    cfg = load_bench(path)
    with open_bench(cfg) as b:
        register_camera(_acq(b), geometry_of(cfg), [s.name for s in cfg.layer_slms][-2:])


def test_laser_blocked_is_a_clear_error(tmp_path):
    path = sim_bench_file(tmp_path, (r'^\[shutter\]\ndriver = "sim"', '[shutter]\ndriver = "sim"\n[shutter.truth]\nstuck = true'))
    with pytest.raises(CalibrationError, match="no light reaches the camera"):
        _run_registration(path)


def test_laser_tripped_is_a_clear_error(sim_registration):
    reg, _ = sim_registration
    cfg = load_bench("sim")
    with open_bench(cfg) as b:
        acq = _acq(b)
        acq.light(True)
        b.laser.inject_interlock(True)
        b.laser.inject_trip()
        with pytest.raises(Exception, match="interlock|no light"):
            measure_response(acq, geometry_of(cfg), "slm1", reg)


def test_beam_missing_the_camera_is_a_clear_error(tmp_path):
    path = sim_bench_file(tmp_path, (r"^offset_px = .*$", "offset_px = [2000.0, 0.0]"))
    with pytest.raises(CalibrationError, match="no light reaches the camera"):
        _run_registration(path)


def test_saturation_at_shortest_exposure_is_a_clear_error(tmp_path):
    path = sim_bench_file(tmp_path, (r"^photons_per_s = .*$", "photons_per_s = 1.0e17"))
    with pytest.raises(CalibrationError, match="saturates even at"):
        _run_registration(path)


def test_dead_slm_is_a_clear_error(tmp_path, sim_registration):
    reg, _ = sim_registration
    path = sim_bench_file(tmp_path, (r'^(response_file = ".*layer_a\.response\.json")$', r"\1\ndead = true"))
    cfg = load_bench(path)
    with open_bench(cfg) as b:
        acq = _acq(b)
        with pytest.raises(CalibrationError, match="does not modulate"):
            measure_response(acq, geometry_of(cfg), "slm1", reg)
        assert acq.frames < 32  # found out before the 256-level sweep
