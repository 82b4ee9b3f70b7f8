"""Live view pictures: overlay geometry, display scaling, histogram, artifact discovery."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from labctl.web import render
from labctl.web.artifacts import ArtifactDirs, calibration_plots, latest_registration, latest_run, model_regions
from labctl.web.compose import compose
from labctl.web.overlay import build_overlay, grid_step, registration_matrix


def registration(scale=4.0, offset=(10.0, 20.0), rot_deg=0.0, neurons=(100, 100)):
    c, s = np.cos(np.radians(rot_deg)), np.sin(np.radians(rot_deg))
    m = [[scale * c, -scale * s, offset[0]], [scale * s, scale * c, offset[1]]]
    return {"schema": "labctl.registration/1", "matrix": m, "neurons": list(neurons), "sensor_shape": [480, 640]}


def test_overlay_maps_neuron_corners_through_the_affine_and_the_roi_origin():
    ov = build_overlay(registration(), regions=[[10, 20, 5, 6]], roi_origin=(4, 8))
    # neuron (x=0, y=0) → sensor (10, 20) → frame (6, 12); (100, 100) → (410, 420) → (406, 412)
    assert ov.outline == [[6.0, 12.0], [406.0, 12.0], [406.0, 412.0], [6.0, 412.0]]
    # region [row 10, col 20, h 5, w 6]: corners (x=20..26, y=10..15)
    assert ov.regions == [[[86.0, 52.0], [110.0, 52.0], [110.0, 72.0], [86.0, 72.0]]]


def test_overlay_grid_has_at_most_ten_lines_each_way_and_follows_rotation():
    ov = build_overlay(registration(rot_deg=90.0, neurons=(30, 50)))
    assert grid_step(50) == 5 and grid_step(30) == 3 and grid_step(7) == 1
    assert len(ov.grid) == (50 // 5 - 1) + (30 // 3 - 1)
    # rotated 90°: a vertical neuron line x = 5 becomes a horizontal camera line
    first = np.array(ov.grid[0])
    assert first[0, 1] == pytest.approx(first[1, 1]) and first[0, 0] != pytest.approx(first[1, 0])


@pytest.mark.parametrize("doc, message", [
    ({"schema": "other"}, "not a camera registration"),
    ({"schema": "labctl.registration/1", "matrix": [[1, 0]], "neurons": [10, 10]}, "finite 2x3"),
    ({"schema": "labctl.registration/1", "matrix": [[1, 0, 0], [0, 1, 0]]}, "neurons"),
    ({"schema": "labctl.registration/1", "matrix": [[1, 0, float("nan")], [0, 1, 0]], "neurons": [2, 2]}, "finite"),
])
def test_bad_registration_is_refused_with_a_clear_message(doc, message):
    with pytest.raises(ValueError, match=message):
        registration_matrix(doc)


def test_display_scaling_rounds_clips_and_marks_saturation_red():
    data = np.array([[-20, 2047.5], [4095, 5000]], np.float32)
    gray = render.to_gray(data, 4095)
    assert gray.dtype == np.uint8 and gray.tolist() == [[0, 128], [255, 255]]  # negative noise is black
    bgr = render.to_bgr(data, 4095, 4095)
    assert bgr.shape == (2, 2, 3) and tuple(bgr[0, 1]) == (128, 128, 128)
    assert tuple(bgr[1, 0]) == (0, 0, 255) and tuple(bgr[1, 1]) == (0, 0, 255)
    unsaturated = np.array([[0, 100], [200, 300]], np.float32)
    assert render.to_picture(unsaturated, 4095, 4095).ndim == 2  # gray JPEGs when nothing clips: cheaper


def test_histogram_counts_every_pixel_in_display_level_bins():
    data = np.array([[-20, 2047.5], [4095, 5000]], np.float32)
    h = render.histogram(data, 4095.0, bins=4)
    assert h["counts"] == [1, 0, 1, 2] and h["max_dn"] == 4095.0
    frame = np.random.default_rng(0).uniform(0, 4095, (48, 64)).astype(np.float32)
    h = render.histogram(frame, 4095.0)
    assert sum(h["counts"]) == frame.size and len(h["counts"]) == 64
    expected, _ = np.histogram(render.to_gray(frame, 4095.0), bins=64, range=(0, 256))
    assert h["counts"] == expected.tolist()
    with pytest.raises(ValueError, match="divide 256"):
        render.histogram(frame, 4095.0, bins=60)


def test_auto_white_ignores_a_hot_pixel():
    assert render.full_scale_dn(12) == 4095.0
    frame = np.zeros((100, 100), np.float32)
    frame[0, 0] = 1e6
    frame[1:, :] = 50.0
    assert render.auto_white(frame) == pytest.approx(50.0)
    big = np.full((480, 640), 30.0, np.float32)
    big[::4, ::4] = 30.0
    assert render.auto_white(big) == pytest.approx(30.0)
    jpeg = render.encode_jpeg(render.to_picture(frame, 100, 4095))
    assert jpeg[:2] == b"\xff\xd8"


def test_compose_draws_overlay_status_and_map_strip():
    data = np.full((120, 160), 100.0, np.float32)
    meta = {"exposure_s": 1e-3, "saturated": 0, "source": "idle", "max_dn": 100.0,
            "histogram": render.histogram(data, 4095.0)}
    ov = build_overlay(registration(scale=1.0, offset=(10, 10), neurons=(50, 50)), [[0, 0, 10, 10]])
    plain = compose(data, meta, 3, None, {}, None)
    drawn = compose(data, meta, 3, ov, {"slm0": np.zeros((20, 20), np.uint8)},
                    {"devices": {"laser": {"on": True}, "shutter": {"open": False}}})
    assert plain.shape[1] == drawn.shape[1] and drawn.shape[0] > plain.shape[0]  # the maps strip
    row = 44 + 10  # status bar height + the outline's top edge
    assert (drawn[row, 20:50] != plain[row, 20:50]).any()


def _write(path, text, mtime):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (mtime, mtime))


def test_artifacts_pick_the_newest_registration_plots_and_report(tmp_path):
    dirs = ArtifactDirs(tmp_path / "calibrations", tmp_path / "models", tmp_path / "runs")
    assert latest_registration(dirs) is None and calibration_plots(dirs) == [] and latest_run(dirs) is None
    _write(dirs.calibrations / "old.registration.json", json.dumps(registration()), 1000)
    _write(dirs.calibrations / "new.registration.json", json.dumps(registration(scale=3)), 2000)
    _write(dirs.calibrations / "slm1.cal.json", json.dumps({"schema": "labctl.calibration/1"}), 3000)
    _write(dirs.calibrations / "broken.json", "{not json", 4000)
    _write(dirs.calibrations / "slm1.png", "png", 1500)
    _write(dirs.calibrations / "slm2.png", "png", 2500)
    path, doc = latest_registration(dirs)
    assert path.name == "new.registration.json" and doc["matrix"][0][0] == 3
    # the served bench's own registration wins over a newer one of another bench
    _write(dirs.calibrations / "old.registration.json", json.dumps(registration()), 1000)
    assert latest_registration(dirs, "old")[0].name == "old.registration.json"
    assert latest_registration(dirs, "absent")[0].name == "new.registration.json"
    assert [p.name for p in calibration_plots(dirs)] == ["slm2.png", "slm1.png"]
    _write(dirs.runs / "r1" / "report.md", "# run 1", 1000)
    _write(dirs.runs / "r2" / "report.md", "# run 2", 2000)
    _write(dirs.runs / "r2" / "confusion.png", "png", 2000)
    _write(dirs.runs / "r3" / "records.jsonl", "{}", 3000)  # still running: no report yet
    run = latest_run(dirs)
    assert run["id"] == "r2" and run["report"] == "# run 2" and [p.name for p in run["plots"]] == ["confusion.png"]


def test_model_regions_read_the_deployed_model_and_refuse_path_tricks(tmp_path):
    dirs = ArtifactDirs(tmp_path / "c", tmp_path / "models", tmp_path / "r")
    _write(dirs.models / "m1" / "model.json", json.dumps({"detector": {"regions": [[1, 2, 3, 4], [5, 6, 7, 8]]}}), 1)
    _write(dirs.models / "bad" / "model.json", json.dumps({"detector": {"regions": [[1, 2, 3]]}}), 1)
    assert model_regions(dirs, "m1") == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert model_regions(dirs, "bad") is None
    assert model_regions(dirs, "missing") is None and model_regions(dirs, None) is None
    assert model_regions(dirs, "../models/m1") is None and model_regions(dirs, "..") is None
