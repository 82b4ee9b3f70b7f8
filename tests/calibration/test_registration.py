"""Registration pieces that need no bench: spot finding, the affine fit, the file, region masks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from calibration.errors import CalibrationError
from calibration.geometry import BenchGeometry
from calibration.registration import (
    Registration,
    find_spots,
    fit_affine,
    lenslet_centres,
    lenslet_map,
    load_registration,
    refine_spots,
    save_registration,
)

M = np.array([[4.0 * math.cos(0.01), -4.0 * math.sin(0.01), 120.3], [4.0 * math.sin(0.01), 4.0 * math.cos(0.01), 35.7]])


def _spot_image(centres: np.ndarray, shape=(480, 640), width=2.5, seed=0) -> np.ndarray:
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    img = np.zeros(shape)
    for x, y in centres:
        img += 1000 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * width**2))
    img += 30 + 0.05 * xs  # sloped background
    return img + np.random.default_rng(seed).normal(0, 3, shape)


def test_spots_are_found_in_row_major_order_and_centroided_subpixel():
    truth = np.array([[100.3 + 80 * i + 0.4 * j, 60.7 + 80 * j - 0.4 * i] for j in range(4) for i in range(4)])
    img = _spot_image(truth)
    rough = find_spots(img, 16, 4)
    fine = refine_spots(img, rough, 6.0)
    assert np.max(np.linalg.norm(fine - truth, axis=1)) < 0.1


def test_too_few_spots_is_a_clear_error():
    img = _spot_image(np.array([[100.0, 100.0], [300.0, 200.0]]))
    with pytest.raises(CalibrationError, match="found 2 focused spots"):
        find_spots(img, 16, 4)
    with pytest.raises(CalibrationError, match="no focused spots"):
        find_spots(np.random.default_rng(1).normal(0, 1, (100, 100)), 16, 4)


def test_affine_fit_ignores_an_outlier():
    src = np.array([[x, y] for x in range(10, 100, 20) for y in range(10, 100, 20)], dtype=float)
    dst = src @ M[:, :2].T + M[:, 2] + np.random.default_rng(0).normal(0, 0.05, src.shape)
    dst[3] += [9.0, -7.0]
    m, keep = fit_affine(src, dst)
    assert not keep[3] and keep.sum() == len(src) - 1
    pred = src @ m[:, :2].T + m[:, 2]
    assert np.max(np.linalg.norm(pred - (src @ M[:, :2].T + M[:, 2]), axis=1)) < 0.1


def test_lenslets_are_binary_zone_plates_centred_on_the_grid():
    geom = BenchGeometry("t", 532e-9, 36e-6, (200, 200), 2, ("in", "a"), (0.28, 0.28))
    m = lenslet_map(geom, 0.28, (0, 128))
    assert set(np.unique(m)) == {0, 128}
    c = lenslet_centres(geom, 4)
    assert c.shape == (16, 2) and np.allclose(c.mean(axis=0), [99.5, 99.5])
    # Symmetric about each centre (mirror through the half-pixel centre).
    u, v = (int(c[5, 0] + 0.5), int(c[5, 1] + 0.5))
    patch = m[v - 20 : v + 20, u - 20 : u + 20]
    assert np.array_equal(patch, patch[::-1, ::-1])


def test_registration_file_round_trip_and_errors(tmp_path):
    reg = Registration(M, (100, 100), (480, 640), 0.1, 0.2, 32, {"method": "test"})
    path = save_registration(tmp_path / "sim.registration.json", reg)
    back = load_registration(path)
    np.testing.assert_allclose(back.matrix, M)
    assert back.neurons == (100, 100) and back.sensor_shape == (480, 640) and back.meta["method"] == "test"
    pts = np.array([[3.0, 4.0], [50.5, 70.25]])
    np.testing.assert_allclose(back.to_neuron(back.to_camera(pts)), pts, atol=1e-9)
    (tmp_path / "bad.json").write_text(json.dumps({"schema": "labctl.registration/1", "matrix": [[1, 0, 0], [0, 0, 0]],
                                                   "neurons": [1, 1], "sensor_shape": [1, 1]}))
    with pytest.raises(CalibrationError, match="invertible"):
        load_registration(tmp_path / "bad.json")
    with pytest.raises(CalibrationError, match="not found"):
        load_registration(tmp_path / "missing.json")


def test_region_mask_area_and_partial_pixels():
    reg = Registration(np.array([[2.5, 0.0, 10.0], [0.0, 2.5, 20.0]]), (100, 100), (300, 300))
    mask = reg.region_mask([10, 20, 4, 6])  # 4 x 6 neurons = 10 x 15 camera pixels, edges mid-pixel
    assert mask.sum() == pytest.approx(4 * 6 * 2.5**2, rel=1e-6)
    assert 0 < mask.min(initial=1, where=mask > 0) < 1  # partly covered border pixels
    roi = (40, 30, 200, 200)
    sub = reg.region_mask([10, 20, 4, 6], roi)
    assert sub.shape == (200, 200) and sub.sum() == pytest.approx(mask.sum())
    with pytest.raises(CalibrationError, match="height and width"):
        reg.region_mask([0, 0, 0, 3])
