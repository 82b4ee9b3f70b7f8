"""The DONN model: input encoding, detector scores, presets and geometry checks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sims.device import ideal_levels
from sims.donn import DONN, PRESETS, Geometry, encode_images, layout_regions, preset
from sims.errors import SamplingError, SimulationError
from sims.optics import propagate
from sims.quantizers import Fixed, GumbelSoftmax


def _small_geometry(**kw) -> Geometry:
    base = dict(size=32, pitch_m=36e-6, wavelength_m=532e-9, distances_m=(0.02, 0.02, 0.02),
                regions=((4, 4, 6, 6), (20, 20, 6, 6)), input_size=20, method="asm", pad_factor=2)
    base.update(kw)
    return Geometry(**base)


def test_encoding_follows_the_design_convention() -> None:
    img = torch.zeros(1, 28, 28, dtype=torch.uint8)
    img[0, 5:20, 9:12] = 255
    field = encode_images(img, 41, 21)
    assert field.dtype == torch.complex64 and field.shape == (1, 41, 41)
    ref = F.interpolate(img.float()[:, None] / 255, size=(21, 21), mode="bilinear", align_corners=False)[0, 0]
    off = (41 - 21) // 2
    torch.testing.assert_close(field[0, off:off + 21, off:off + 21].real, ref)
    assert float(field.imag.abs().max()) == 0
    mask = torch.ones(41, 41, dtype=torch.bool)
    mask[off:off + 21, off:off + 21] = False
    assert float(field[0][mask].abs().max()) == 0


def test_scores_are_region_sums_of_detector_intensity() -> None:
    geo = _small_geometry()
    rng = np.random.default_rng(0)
    layers = [Fixed(np.exp(1j * rng.uniform(0, 6.3, (32, 32))), np.zeros((32, 32)), ideal_levels(2))
              for _ in range(2)]
    model = DONN(geo, layers).eval()
    images = torch.from_numpy(rng.integers(0, 256, (3, 28, 28)).astype(np.uint8))
    scores = model(images)
    # independent re-computation with the public propagate()
    u = encode_images(images, 32, 20)
    u = propagate(u, 0.02, 36e-6, 532e-9)
    for layer in layers:
        u = propagate(u * layer.t, 0.02, 36e-6, 532e-9)
    intensity = u.abs() ** 2
    expected = torch.stack([intensity[:, r:r + h, c:c + w].sum(dim=(1, 2)) for r, c, h, w in geo.regions], dim=1)
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-6)
    # phase-only layers, light leaves the window but is never created
    assert float(intensity.sum()) <= float(encode_images(images, 32, 20).abs().pow(2).sum()) * 1.0001


def test_gs_model_evaluates_hard_and_trains_soft() -> None:
    geo = _small_geometry()
    g = torch.Generator().manual_seed(0)
    model = DONN(geo, [GumbelSoftmax((32, 32), ideal_levels(4), generator=g) for _ in range(2)])
    x = torch.randint(0, 256, (2, 28, 28), dtype=torch.uint8)
    model.eval()
    a, b = model(x), model(x)
    assert torch.equal(a, b)  # hard argmax: no noise in evaluation
    model.train()
    model(x).sum().backward()
    assert all(float(q.logits.grad.abs().sum()) > 0 for q in model.layers)


def test_presets() -> None:
    paper = preset("iccad22")
    assert (paper.layers, paper.size, paper.pitch_m, paper.wavelength_m) == (5, 200, 36e-6, 532e-9)
    assert set(paper.distances_m) == {0.2794} and len(paper.regions) == 10
    assert all(r[2:] == (20, 20) for r in paper.regions)
    bench = preset("bench")
    assert (bench.layers, bench.size, bench.pitch_m, bench.method, bench.pad_factor) == (3, 100, 72e-6, "asm", 2)
    for geo in PRESETS.values():
        occupied = np.zeros((geo.size, geo.size), dtype=int)
        for r, c, h, w in geo.regions:
            occupied[r:r + h, c:c + w] += 1
        assert occupied.max() == 1  # regions never overlap
    with pytest.raises(SimulationError, match="unknown preset"):
        preset("nope")


def test_layout_regions_centred_rows() -> None:
    regions = layout_regions(100, 10)
    assert [len([r for r in regions if r[0] == row]) for row in sorted({r[0] for r in regions})] == [3, 4, 3]
    centre_cols = np.mean([r[1] + r[3] / 2 for r in regions])
    assert abs(centre_cols - 50) < 1
    with pytest.raises(SimulationError, match="do not fit"):
        layout_regions(20, 10)


def test_geometry_errors() -> None:
    with pytest.raises(SimulationError, match="detector region"):
        _small_geometry(regions=((30, 30, 6, 6), (0, 0, 2, 2)))
    with pytest.raises(SimulationError, match="input size"):
        _small_geometry(input_size=40)
    with pytest.raises(SamplingError):
        _small_geometry(distances_m=(5.0, 5.0))
    with pytest.raises(SimulationError, match="layers"):
        DONN(_small_geometry(), [GumbelSoftmax((32, 32), ideal_levels(2))])
    assert dataclasses.replace(_small_geometry(), method="fresnel").method == "fresnel"
