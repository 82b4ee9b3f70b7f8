"""The quantization method zoo: every method on ideal and measured-like levels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sims.data import Dataset
from sims.device import DeviceLevels, ideal_levels
from sims.donn import Geometry, layout_regions
from sims.errors import SimulationError
from sims.quantizers import QUANTIZERS
from sims.quantizers.psq import TAU_END, TAU_START
from sims.quantizers.wsq import kmeans_1d
from sims.train import TrainConfig, build_model, train

ZOO = ["ptq", "qat", "wsq", "wsq-raw", "ste", "dsq", "psq-ft", "psq-li", "psq-lt"]

# non-uniform, lossy levels like a measured 532 nm LCoS (≈1.8π range, amplitude dips)
MEASURED = DeviceLevels(gray=(0, 40, 90, 130, 170, 255), phase_rad=(0.0, 1.0, 2.3, 3.4, 4.6, 5.6),
                        amplitude=(1.0, 0.9, 0.75, 0.8, 0.95, 0.9), name="measured-like")


def tiny_geometry(layers: int = 2) -> Geometry:
    return Geometry(size=24, pitch_m=72e-6, wavelength_m=532e-9, distances_m=(0.03,) * (layers + 1),
                    regions=layout_regions(24, 3), input_size=20)


def tiny_data(n: int = 30) -> Dataset:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = np.arange(n) % 10
    return Dataset("tiny", "test", images, labels, images[:10], labels[:10])


def level_set(q) -> torch.Tensor:
    return torch.polar(q.level_amplitude, q.level_phase)


@pytest.mark.parametrize("levels", [ideal_levels(4), MEASURED], ids=["ideal4", "measured6"])
@pytest.mark.parametrize("method", ZOO)
def test_every_method_trains_and_shows_only_device_levels(method: str, levels: DeviceLevels, tmp_path) -> None:
    config = TrainConfig(geometry=tiny_geometry(), levels=(levels, levels), method=method, epochs=2, batch_size=10,
                         lr=0.2)
    before = [p.detach().clone() for p in build_model(config).parameters()]
    result = train(config, tiny_data(), tmp_path)
    after = list(result.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after)), "training changed nothing"
    for q in result.model.layers:
        idx = q.hard_indices()
        assert idx.shape == (24, 24) and idx.min() >= 0 and idx.max() < levels.k
        gray, t = q.export()
        assert set(np.unique(gray).tolist()) <= set(levels.gray)
        if q.quantized:
            # what the twin evaluates is exactly one measured level per pixel
            dist = (torch.from_numpy(t)[..., None] - level_set(q)).abs().min(dim=-1).values
            assert float(dist.max()) < 1e-5
    assert 0.0 <= result.test_accuracy <= 1.0


def test_ptq_rounds_to_nearest_level_with_phase_wrap() -> None:
    q = QUANTIZERS["ptq"]((1, 3), ideal_levels(4))
    with torch.no_grad():
        q.phase.copy_(torch.tensor([[0.1, 1.5, 2 * math.pi - 0.2]]))
    assert q.hard_indices().tolist() == [[0, 1, 0]]  # 2π − 0.2 is next to level 0, not level 3


def test_qat_rounds_once_per_epoch_only() -> None:
    q = QUANTIZERS["qat"]((4, 4), ideal_levels(4), generator=torch.Generator().manual_seed(0))
    q.set_progress(0.0, 3)
    on_levels = torch.isclose(q.phase[..., None], q.level_phase, atol=1e-6).any(-1)
    assert bool(on_levels.all())
    with torch.no_grad():
        q.phase.add_(0.3)
    q.set_progress(0.5, 3)  # same epoch: no rounding
    assert not bool(torch.isclose(q.phase[..., None], q.level_phase, atol=1e-6).any(-1).all())
    q.set_progress(1.0, 3)
    assert bool(torch.isclose(q.phase[..., None], q.level_phase, atol=1e-6).any(-1).all())


def test_staircase_clamps_outside_the_device_range() -> None:
    q = QUANTIZERS["ste"]((1, 4), MEASURED)
    with torch.no_grad():
        q.phase.copy_(torch.tensor([[-3.0, 0.4, 0.6, 9.0]]))
    assert q.hard_indices().tolist() == [[0, 0, 1, 5]]


def test_ste_passes_the_gradient_straight_through() -> None:
    q = QUANTIZERS["ste"]((2, 2), ideal_levels(4))
    q.train()
    t = q()
    assert torch.allclose(t, q.hard_transmission())
    # ∂/∂x of Im(t·e^{-iφ_level}) = amplitude·1 under the straight-through rule
    (t * torch.polar(torch.ones(2, 2), -q.level_phase[q.hard_indices()])).imag.sum().backward()
    assert torch.allclose(q.phase.grad, torch.ones(2, 2))


@pytest.mark.parametrize("method", ["psq-ft", "psq-li", "dsq"])
def test_soft_quantizers_approach_the_hard_staircase(method: str) -> None:
    q = QUANTIZERS[method]((8, 8), MEASURED, generator=torch.Generator().manual_seed(3))
    q.train()
    if method == "psq-li":
        q.set_progress(0.0, 10)
        soft_start = (q() - q.hard_transmission()).abs().mean()
        q.set_progress(10.0, 10)
        assert q.tau == pytest.approx(TAU_END) and TAU_START < TAU_END
        soft_end = (q() - q.hard_transmission()).abs().mean()
        assert soft_end < 0.5 * soft_start
    elif method == "dsq":
        with torch.no_grad():
            q.alpha_logit.fill_(4.0)  # α ≈ 0.49: nearly linear between levels
            soft = float((q() - q.hard_transmission()).abs().mean())
            q.alpha_logit.fill_(-12.0)  # α → 0: DSQ becomes the staircase
            hard = float((q() - q.hard_transmission()).abs().mean())
        assert hard < 0.35 * soft  # sharpness grows only like ln(2/α)
    # the soft path stays on chords between adjacent levels: amplitude within their range
    amp = q().detach().abs()
    assert float(amp.min()) >= min(MEASURED.amplitude) - 1e-5 and float(amp.max()) <= 1 + 1e-5


def test_psq_lt_regularizer_raises_the_temperature(tmp_path) -> None:
    q = QUANTIZERS["psq-lt"]((4, 4), ideal_levels(2))
    assert q.tau == pytest.approx(TAU_START)
    q.set_progress(0.0, 4)
    r0 = q.regularizer()
    q.set_progress(2.0, 4)
    assert float(q.regularizer().detach()) == pytest.approx(4 * float(r0.detach()))  # s_t = 2^⌊t/β⌋, β = 1 epoch of 4
    q.set_progress(2.0, 40)
    assert float(q.regularizer().detach()) == pytest.approx(float(r0.detach()))  # β scales with the run
    opt = torch.optim.Adam(q.parameters(), lr=0.5)
    for _ in range(30):
        opt.zero_grad()
        q.regularizer().backward()
        opt.step()
    assert q.tau > 3 * TAU_START


def test_wsq_post_processing_truncates_below_range_and_clamps_above() -> None:
    q = QUANTIZERS["wsq"]((1, 8), ideal_levels(8))
    with torch.no_grad():
        q.phase.copy_(torch.tensor([[-2.0, -1.9, 0.8, 0.75, 3.1, 3.2, 9.0, 9.1]]))
    centroids, assign = kmeans_1d(q.phase, 8)
    assert centroids.shape == (8,) and torch.all(centroids[1:] >= centroids[:-1])
    idx = q.hard_indices()[0].tolist()
    assert idx[0] == idx[1] == 0  # negative shared values → first level
    assert idx[2] == idx[3] == 1  # 0.8 rad → level π/4
    assert idx[6] == idx[7] == 7  # beyond 2π: last level, no wrap
    raw = QUANTIZERS["wsq-raw"]((1, 8), ideal_levels(8))
    raw.load_state_dict(q.state_dict())
    raw.eval()
    # without post-processing the shared values themselves are shown
    assert torch.allclose(torch.angle(raw.evaluation_transmission()[0, 6]), torch.tensor(9.05 - 2 * math.pi),
                          atol=1e-3)


def test_kmeans_finds_separated_clusters() -> None:
    values = torch.cat([torch.full((50,), 1.0), torch.full((30,), 4.0), torch.full((20,), -2.0)])
    values = values + torch.linspace(-0.05, 0.05, 100)
    centroids, assign = kmeans_1d(values, 3)
    assert torch.allclose(centroids, torch.tensor([-2.0, 1.0, 4.0], dtype=torch.float64), atol=0.05)
    assert assign.tolist().count(1) == 50


def test_staircase_methods_refuse_unsorted_levels() -> None:
    bad = DeviceLevels(gray=(0, 1, 2), phase_rad=(0.0, 2.0, 1.0), amplitude=(1.0, 1.0, 1.0))
    with pytest.raises(SimulationError, match="increasing phase"):
        QUANTIZERS["psq-ft"]((2, 2), bad)


def test_warm_start_wraps_full_precision_phases() -> None:
    q = QUANTIZERS["psq-li"]((1, 2), ideal_levels(4))
    q.init_from_phase(torch.tensor([[-0.5, 7.0]]))
    assert torch.allclose(q.phase, torch.tensor([[2 * math.pi - 0.5, 7.0 - 2 * math.pi]]), atol=1e-6)
