"""Device responses: reading calibration/response files, level selection, ideal device."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sims.device import (CALIBRATION_SCHEMA, DeviceLevels, ideal_levels, levels_from_arrays, load_response,
                         select_levels)
from sims.errors import DataError

SHIPPED = Path(__file__).resolve().parents[2] / "labctl" / "benches" / "layer_a.response.json"


def _calibration(phase: np.ndarray, amplitude: np.ndarray) -> dict:
    return {"schema": CALIBRATION_SCHEMA, "slm": {"name": "slm1", "serial": "X"}, "wavelength_m": 532e-9,
            "created": "2026-11-29T00:00:00Z", "method": "test", "gray": list(range(256)),
            "phase_rad": phase.tolist(), "amplitude": amplitude.tolist(), "phase_std_rad": [0.0] * 256,
            "amplitude_std": [0.0] * 256, "frames": 1, "bench": {"name": "sim", "sha256": "0"},
            "software": {"version": "0"}}


def test_reads_shipped_response_and_selects_eight_levels() -> None:
    r = load_response(SHIPPED)
    assert len(r.phase_rad) == 256 and len(r.sha256) == 64
    lv = select_levels(r, 8)
    assert lv.k == 8 and len(set(lv.gray)) == 8
    # each chosen level carries the response measured for its own gray value
    for g, p, a in zip(lv.gray, lv.phase_rad, lv.amplitude):
        assert p == r.phase_rad[g] and a == r.amplitude[g]
    # range ≥ 7/8 of 2π: levels spread around the circle, neighbours about 2π/8 apart
    gaps = np.diff(lv.phase_rad)
    assert np.all(np.abs(gaps - 2 * math.pi / 8) < 0.15)


def test_calibration_schema_file(tmp_path: Path) -> None:
    phase = np.linspace(0, 1.5 * math.pi, 256)
    amp = np.linspace(1.0, 0.5, 256)
    path = tmp_path / "slm1.cal.json"
    path.write_text(json.dumps(_calibration(phase, amp)))
    r = load_response(path)
    assert r.name == "slm1"
    lv = select_levels(r, 4)
    # range < 3/4·2π: targets span the measured range end to end; near the dim end a
    # slightly brighter level a few grays earlier wins over the exact phase
    assert lv.gray[0] == 0 and 240 <= lv.gray[-1] < 255
    np.testing.assert_allclose(np.diff(lv.phase_rad), 0.5 * math.pi, atol=0.1)


def test_selection_prefers_bright_levels_at_equal_phase() -> None:
    phase = np.repeat(np.linspace(0, 2 * math.pi, 128, endpoint=False), 2)  # pairs of equal phase
    amp = np.tile([0.3, 0.9], 128)  # odd gray values are brighter
    from sims.device import response_from_dict
    r = response_from_dict({"gray": list(range(256)), "phase_rad": phase.tolist(), "amplitude": amp.tolist()})
    lv = select_levels(r, 8)
    assert all(g % 2 == 1 for g in lv.gray)


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.pop("phase_rad"), "missing key 'phase_rad'"),
    (lambda d: d.update(amplitude=[1.0] * 255), "256"),
    (lambda d: d.update(gray=list(range(1, 257))), "'gray' must be 0"),
    (lambda d: d.update(amplitude=[-1.0] * 256), ">= 0"),
    (lambda d: d.update(phase_rad=["x"] * 256), "only numbers"),
    (lambda d: d.update(schema="labctl.calibration/9"), "unsupported schema"),
])
def test_bad_files_raise_data_error(tmp_path: Path, mutate, match: str) -> None:
    d = _calibration(np.zeros(256), np.ones(256))
    mutate(d)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(DataError, match=match):
        load_response(path)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_response(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(DataError, match="not a JSON"):
        load_response(tmp_path / "x.json")


def test_ideal_device_and_transmissions() -> None:
    lv = ideal_levels(4)
    t = lv.transmissions(torch.complex128)
    np.testing.assert_allclose(t.numpy(), [1, 1j, -1, -1j], atol=1e-12)
    assert lv.gray == (0, 64, 128, 192)
    with pytest.raises(DataError):
        ideal_levels(1)
    with pytest.raises(DataError):
        select_levels(load_response(SHIPPED), 300)


def test_levels_from_arrays_round_trip() -> None:
    lv = levels_from_arrays(np.array([3, 9], dtype=np.uint8), np.array([0.5, 1j], dtype=np.complex64))
    assert isinstance(lv, DeviceLevels) and lv.gray == (3, 9)
    np.testing.assert_allclose(lv.amplitude, [0.5, 1.0], rtol=1e-6)
    with pytest.raises(DataError):
        levels_from_arrays(np.array([3, 3]), np.array([1, 1], dtype=complex))
