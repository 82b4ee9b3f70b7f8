"""The pieces of a deploy without a bench: input encoding, camera regions, run records, calibration checks."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from calibration.registration import Registration
from drivers.slm import upsample_map
from labctl.config import builtin_bench_path, load_bench
from labctl.deploy.checks import plan_layers
from labctl.deploy.encode import InputEncoder, inverse_amplitude_lut
from labctl.deploy.records import RunDir, read_records
from labctl.deploy.regions import camera_regions
from labctl.errors import ConfigError, UsageError
from sims.artifact import load_model
from sims.device import DeviceResponse
from tests.labctl.deploy_support import RESPONSES, make_model


def _response(amplitude: np.ndarray) -> DeviceResponse:
    return DeviceResponse("in", tuple(np.zeros(256).tolist()), tuple(amplitude.tolist()))


def test_inverse_lut_picks_the_gray_of_the_nearest_measured_amplitude():
    g = np.arange(256) / 255.0
    amp = 0.03 + 0.97 * g**2  # a gamma-like curve with a dark floor, like the simulated input SLM
    lut = inverse_amplitude_lut(_response(amp), steps=1001)
    for target in (0.0, 0.03, 0.25, 0.5, 0.9, 1.0):
        gray = lut[round(target * 1000)]
        assert abs(amp[gray] - target) == pytest.approx(np.abs(amp - target).min())
    assert lut[0] == 0 and lut[-1] == 255
    assert np.all(np.diff(lut.astype(int)) >= 0)  # a monotone curve inverts to a monotone table


def test_inverse_lut_refuses_a_device_that_cannot_encode_amplitude():
    with pytest.raises(ConfigError, match="only spans"):
        inverse_amplitude_lut(_response(np.full(256, 0.9) + np.linspace(0, 0.05, 256)))


def test_encoder_matches_twin_amplitude_and_upsamples_like_the_slm_driver():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    identity = inverse_amplitude_lut(_response(np.arange(256) / 255.0))
    enc = InputEncoder(size=100, input_size=56, upsample=2, lut=identity)
    maps = enc.encode(images)
    assert maps.shape == (3, 200, 200) and maps.dtype == np.uint8
    amp = enc.amplitude(images)
    # a linear device: gray/255 is the twin's amplitude to within half a gray level
    assert np.abs(enc.neuron_gray(images) / 255.0 - amp).max() <= 0.5 / 255 + 1e-3
    for k in range(3):
        assert np.array_equal(maps[k], upsample_map(enc.neuron_gray(images)[k], 2))
    # the digit sits centred: the border outside the 56x56 window is dark
    assert amp[:, :22].max() == 0 and amp[:, 78:].max() == 0


def test_camera_regions_follow_the_registration():
    s, theta = 4.0, math.radians(0.2)
    m = np.array([[s * math.cos(theta), -s * math.sin(theta), 120.0], [s * math.sin(theta), s * math.cos(theta), 40.0]])
    reg = Registration(m, (100, 100), (480, 640))
    rects = camera_regions(reg, [(10, 20, 10, 10), (45, 45, 10, 10)])
    for (r, c, h, w), (nr, nc, nh, nw) in zip(rects, [(10, 20, 10, 10), (45, 45, 10, 10)]):
        assert (h, w) == (40, 40)
        cx, cy = reg.to_camera(np.array([nc + nw / 2, nr + nh / 2]))
        assert abs(c + w / 2 - 0.5 - cx) <= 0.5 and abs(r + h / 2 - 0.5 - cy) <= 0.5
    # a camera ROI shifts the rectangles into frame coordinates
    roi_rects = camera_regions(reg, [(10, 20, 10, 10)], camera_roi=(100, 30, 400, 300))
    assert roi_rects[0] == (rects[0][0] - 30, rects[0][1] - 100, 40, 40)
    with pytest.raises(ConfigError, match="outside the camera frame"):
        camera_regions(reg, [(90, 90, 10, 10)], camera_roi=(0, 0, 300, 300))


def _rec(i: int) -> dict:
    return {"index": i, "label": i % 10, "captured": [1.0, 2.0], "twin": [1.0, 2.5], "pred_captured": 1,
            "pred_twin": 1, "crc32": 7}


def test_records_survive_a_torn_last_line_and_resume_appends_after_it(tmp_path: Path):
    run = RunDir(tmp_path / "run")
    run.open_for_append()
    for i in range(3):
        run.append(_rec(i))
    run.close()
    with open(run.records_file, "ab") as f:
        f.write(b'{"index": 3, "label"')  # the process died inside this write
    loaded = read_records(run.records_file)
    assert [r["index"] for r in loaded.records] == [0, 1, 2] and loaded.dropped_tail
    again = run.open_for_append()
    assert len(again.records) == 3
    run.append(_rec(3))
    run.close()
    lines = run.records_file.read_text().splitlines()
    assert [json.loads(x)["index"] for x in lines] == [0, 1, 2, 3]


def test_records_refuse_a_damaged_middle_line_and_duplicates(tmp_path: Path):
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(_rec(0)) + "\nnot json\n" + json.dumps(_rec(1)) + "\n")
    with pytest.raises(UsageError, match="line 2"):
        read_records(path)
    path.write_text("".join(json.dumps(_rec(i)) + "\n" for i in (0, 1, 1)))
    assert read_records(path).duplicates == 1
    with pytest.raises(UsageError, match="duplicated"):
        RunDir(tmp_path).open_for_append()


def test_plan_layers_lists_every_mismatch(tmp_path: Path):
    cal = tmp_path / "cal"
    cal.mkdir()
    for slm, resp in RESPONSES.items():
        shutil.copyfile(builtin_bench_path("sim").parent / f"{resp}.response.json", cal / f"{slm}.cal.json")
    model = make_model(tmp_path / "m", cal)
    loaded = load_model(model)
    bench = load_bench("sim")
    plans, problems = plan_layers(loaded, bench, cal)
    assert problems == [] and [p.slm for p in plans] == ["slm1", "slm2", "slm3"]
    assert plans[0].gray_map.shape == (200, 200)
    (cal / "slm3.cal.json").unlink()
    (cal / "slm1.cal.json").write_text((cal / "slm2.cal.json").read_text())
    _, problems = plan_layers(loaded, bench, cal)
    assert len(problems) == 2 and "slm1" in problems[0] and "no calibration" in problems[1]
