"""QuATON's QPI task: phase encoding, BerHu loss, SSIM metric, training."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from sims.data import Dataset
from sims.device import ideal_levels
from sims.donn import Geometry, layout_regions
from sims.errors import DataError
from sims.qpi import berhu, encode_phase, evaluate_qpi, phase_digits, ssim, train_qpi
from sims.train import TrainConfig


def test_phase_encoding_is_unit_amplitude_with_phase_pi_times_image() -> None:
    images = torch.zeros(2, 28, 28, dtype=torch.uint8)
    images[0, 10:18, 10:18] = 255
    images[1, :, :] = 128
    field, target = encode_phase(images, 40, 28)
    assert field.shape == target.shape == (2, 40, 40)
    assert torch.allclose(field.abs(), torch.ones(2, 40, 40))
    assert abs(complex(field[0, 6 + 14, 6 + 14]) - complex(-1, 0)) < 1e-5  # exp(iπ)
    assert float(target[1, 0, 0]) == 0.0  # outside the input region: phase 0, target 0
    assert float(target[1, 20, 20]) == pytest.approx(128 / 255, abs=1e-6)
    with pytest.raises(DataError):
        encode_phase(torch.zeros(28, 28), 40, 28)


def test_berhu_is_l1_below_c_and_quadratic_above() -> None:
    target = torch.zeros(5)
    pred = torch.tensor([0.1, -0.1, 0.5, 1.0, 0.0])
    c = 0.2 * 1.0
    expected = torch.tensor([0.1, 0.1, (0.25 + c * c) / (2 * c), (1 + c * c) / (2 * c), 0.0]).mean()
    assert float(berhu(pred, target)) == pytest.approx(float(expected), rel=1e-6)
    # continuous at |r| = c
    assert float(berhu(torch.tensor([c, 1.0]), torch.zeros(2))) == pytest.approx((c + (1 + c * c) / (2 * c)) / 2)


def test_ssim_properties() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 32, 32, generator=g)
    assert torch.allclose(ssim(a, a), torch.ones(3), atol=1e-5)
    noisy = (a + 0.3 * torch.randn(3, 32, 32, generator=g)).clamp(0, 1)
    s = ssim(a, noisy)
    assert bool((s < 0.9).all()) and torch.allclose(s, ssim(noisy, a), atol=1e-6)
    # a constant offset keeps structure but loses luminance: between the two
    shifted = ssim(a * 0.5, a * 0.5 + 0.2)
    assert bool((shifted < 0.999).all()) and bool((shifted > s).all())
    with pytest.raises(DataError):
        ssim(a, a[:2])


def _tiny() -> tuple[Geometry, Dataset]:
    g = Geometry(size=24, pitch_m=72e-6, wavelength_m=532e-9, distances_m=(0.05,) * 3,
                 regions=layout_regions(24, 3), input_size=20)
    rng = np.random.default_rng(0)
    images = np.zeros((24, 28, 28), np.uint8)
    for i in range(24):  # blobs at random places: phase objects with structure
        r, c = rng.integers(4, 20, 2)
        images[i, r - 4:r + 4, c - 4:c + 4] = rng.integers(100, 256)
    labels = np.zeros(24, np.int64)
    return g, phase_digits(Dataset("blobs", "t", images[:16], labels[:16], images[16:], labels[16:]))


@pytest.mark.parametrize("method", ["full", "psq-lt"])
def test_training_lowers_the_loss(tmp_path, method: str) -> None:
    g, data = _tiny()
    config = TrainConfig(geometry=g, levels=(ideal_levels(16),) * 2, method=method, epochs=20, batch_size=16,
                         lr=0.05, seed=1)
    model = train_qpi(config, data, tmp_path)
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history) == 20
    assert np.mean([h["loss"] for h in history[-3:]]) < 0.9 * history[0]["loss"]
    result = evaluate_qpi(model, data)
    assert -1 <= result["ssim"] <= 1 and result["berhu"] > 0
    out, target = model(torch.from_numpy(data.test_images))
    assert out.shape == target.shape == (8, 24, 24)
