"""Twin refinement: recovery of injected bench errors, the twin file, and applying it to a DONN."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from sims.device import ideal_levels
from sims.donn import DONN, Geometry, layout_regions
from sims.errors import DataError, SimulationError
from sims.quantizers.fixed import Fixed
from sims.refine import (BenchTwin, DetectorCorrection, FitOptions, PlaneCorrection, Probe, TwinCorrections,
                         apply_twin, check_geometry, fit_twin, load_twin, save_twin)

N = 32
GEO = Geometry(size=N, pitch_m=72e-6, wavelength_m=532e-9, distances_m=(0.12,) * 4, regions=layout_regions(N, 3),
               input_size=18)
TRUTH = TwinCorrections(
    (PlaneCorrection((0.6, -0.4), 0.8, 1.0), PlaneCorrection((-0.3, 0.5), -0.6, 1.0),
     PlaneCorrection((0.2, 0.35), 0.5, 1.0)),
    (0.0, 0.002, -0.0015, 0.0),
    DetectorCorrection((0.3, -0.25), 0.3, 1.02))


def _blocks(gen: torch.Generator, shape: tuple[int, ...], block: int = 4) -> torch.Tensor:
    cells = torch.rand(*shape[:-2], N // block, N // block, generator=gen)
    return cells.repeat_interleave(block, -2).repeat_interleave(block, -1)


def _probes(truth: TwinCorrections, sets: int = 3, inputs: int = 4, gain: float = 250.0,
            offset: float = 4.0) -> list[Probe]:
    twin = BenchTwin(GEO, truth)
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(sets):
        phase = [torch.floor(_blocks(gen, (N, N)) * 8) * (2 * math.pi / 8) for _ in range(GEO.layers)]
        amp = [torch.ones(N, N) for _ in range(GEO.layers)]
        inp = _blocks(gen, (inputs, N, N))
        with torch.no_grad():
            measured = gain * twin(inp, [p[None] for p in phase], [a[None] for a in amp]) + offset
        out.append(Probe(inp, tuple(phase), tuple(amp), measured))
    return out


@pytest.mark.slow
def test_fit_recovers_injected_misalignment_distances_and_camera():
    torch.manual_seed(0)
    c = fit_twin(GEO, _probes(TRUTH), options=FitOptions(iterations=150, lr=0.05))
    for got, want in zip(c.layers, TRUTH.layers):
        assert np.allclose(got.shift_px, want.shift_px, atol=0.05), (got, want)
        assert abs(got.rotation_deg - want.rotation_deg) < 0.1
        assert abs(got.phase_scale - 1.0) < 0.02
    assert np.allclose(c.distance_error_m[1:3], TRUTH.distance_error_m[1:3], atol=5e-4)
    assert np.allclose(c.detector.shift_px, TRUTH.detector.shift_px, atol=0.05)
    assert abs(c.detector.magnification - 1.02) < 0.005
    assert abs(c.detector.gain - 250.0) / 250.0 < 0.02
    assert c.fit["loss_final"] < 0.01 * c.fit["loss_plain"]


def test_plain_twin_is_worse_than_truth_and_probe_shapes_are_checked():
    probes = _probes(TRUTH, sets=1, inputs=2)
    c = fit_twin(GEO, probes, options=FitOptions(iterations=2))
    assert c.fit["loss_plain"] > 0.01  # the injected errors are visible to the fit
    bad = Probe(probes[0].inputs, probes[0].layer_phase, probes[0].layer_amp, probes[0].measured[:, :5])
    with pytest.raises(SimulationError, match="probe 0"):
        fit_twin(GEO, [bad])
    with pytest.raises(SimulationError, match="at least one probe"):
        fit_twin(GEO, [])


def test_twin_file_round_trip_and_bad_files(tmp_path):
    path = save_twin(tmp_path / "b.twin.json", TRUTH, GEO)
    c, geo = load_twin(path)
    assert c.layers == TRUTH.layers and c.distance_error_m == TRUTH.distance_error_m
    assert c.detector == TRUTH.detector
    check_geometry(geo, GEO, str(path))
    other = Geometry(size=N, pitch_m=72e-6, wavelength_m=633e-9, distances_m=(0.12,) * 4,
                     regions=layout_regions(N, 3), input_size=18)
    with pytest.raises(DataError, match="wavelength_m"):
        check_geometry(geo, other, str(path))
    with pytest.raises(DataError, match="not found"):
        load_twin(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("{")
    with pytest.raises(DataError, match="not a readable twin file"):
        load_twin(tmp_path / "x.json")
    data = json.loads(path.read_text())
    data["layers"][0]["phase_scale"] = -1
    (tmp_path / "neg.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="phase_scale"):
        load_twin(tmp_path / "neg.json")
    del data["detector"]
    (tmp_path / "m.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="malformed"):
        load_twin(tmp_path / "m.json")


def _fixed_model(seed: int = 3) -> tuple[DONN, list[np.ndarray]]:
    lv = ideal_levels(8)
    rng = np.random.default_rng(seed)
    layers, phases = [], []
    for _ in range(GEO.layers):
        idx = rng.integers(0, 8, (N // 4, N // 4)).repeat(4, 0).repeat(4, 1)
        t = lv.transmissions().numpy()[idx]
        layers.append(Fixed(t, np.asarray(lv.gray)[idx], lv))
        phases.append(np.asarray(lv.phase_rad, dtype=np.float32)[idx])
    return DONN(GEO, layers).eval(), phases


def test_applied_twin_scores_match_the_fitted_forward_model():
    """apply_twin (warped layers, moved masks) and BenchTwin (warped image) describe the same bench."""
    images = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    plain, phases = _fixed_model()
    with torch.no_grad():
        before = plain(images)
        same = apply_twin(_fixed_model()[0], TwinCorrections.identity(GEO.layers))(images)
    assert torch.allclose(before, same, rtol=1e-4)
    model = apply_twin(_fixed_model()[0], TRUTH)
    from sims.donn import encode_images
    twin = BenchTwin(GEO, TRUTH)
    with torch.no_grad():
        got = model(images)
        image = twin(encode_images(images, N, GEO.input_size).real,
                     [torch.from_numpy(p)[None] for p in phases], [torch.ones(1, N, N)] * GEO.layers)
    want = torch.stack([image[:, r:r + h, c:c + w].sum(dim=(1, 2)) for r, c, h, w in GEO.regions], dim=1)
    assert torch.allclose(got, want, rtol=0.05), (got / want)
    assert not torch.allclose(got, before, rtol=0.05)  # the corrections do change the prediction


def test_corrections_must_fit_the_geometry():
    with pytest.raises(SimulationError, match="layers"):
        BenchTwin(GEO, TwinCorrections.identity(2))
    bad = TwinCorrections(TRUTH.layers, (0.0, -0.2, 0.0, 0.0))
    with pytest.raises(SimulationError, match="positive distance"):
        bad.check(GEO)


def test_oversampled_twin_applied_and_fitted_forward_models_agree():
    """With SLM-pixel oversampling and fringing, the two descriptions still match."""
    from dataclasses import replace

    from sims.donn import encode_images

    truth = replace(TRUTH, oversample=2, fringing_px=0.6)
    images = torch.randint(0, 256, (2, 28, 28), dtype=torch.uint8)
    model, phases = _fixed_model()
    model = apply_twin(model, truth)
    twin = BenchTwin(GEO, truth)
    with torch.no_grad():
        got = model(images)
        image = twin(encode_images(images, N, GEO.input_size).real,
                     [torch.from_numpy(p)[None] for p in phases], [torch.ones(1, N, N)] * GEO.layers)
        plain = _fixed_model()[0](images)
    want = torch.stack([image[:, r:r + h, c:c + w].sum(dim=(1, 2)) for r, c, h, w in GEO.regions], dim=1)
    assert torch.allclose(got, want, rtol=0.05), (got / want)
    assert not torch.allclose(got / got.sum(), plain / plain.sum(), rtol=0.05)
    c, _ = TwinCorrections.from_json(truth.to_json(GEO)), None
    assert c.oversample == 2 and c.fringing_px == 0.6
    with pytest.raises(SimulationError, match="oversample"):
        replace(truth, oversample=0).check(GEO)
