"""Quantization strategies and temperature schedules."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sims.device import ideal_levels, load_response, select_levels
from sims.errors import SimulationError
from sims.quantizers import QUANTIZERS, FullPrecision, GumbelSoftmax, Quantizer, make_schedule, register

SHIPPED = Path(__file__).resolve().parents[2] / "labctl" / "benches" / "layer_a.response.json"


@pytest.fixture(scope="module")
def levels():
    return select_levels(load_response(SHIPPED), 8)


def test_gs_evaluation_shows_exactly_the_measured_levels(levels) -> None:
    q = GumbelSoftmax((16, 16), levels, generator=torch.Generator().manual_seed(0)).eval()
    t = q().detach()
    allowed = levels.transmissions(torch.complex64)
    dist = (t[..., None] - allowed).abs().min(dim=-1).values
    assert float(dist.max()) < 1e-6
    gray, t_export = q.export()
    assert gray.dtype == np.uint8 and t_export.dtype == np.complex64
    lut = dict(zip(levels.gray, allowed.numpy()))
    expected = np.vectorize(lambda g: lut[g])(gray)
    np.testing.assert_allclose(t_export, expected, atol=1e-6)
    # the argmax of the logits decides
    np.testing.assert_array_equal(gray, np.asarray(levels.gray)[q.logits.argmax(-1).numpy()])


def test_gs_training_mixes_amplitude_and_phase_of_the_same_weights(levels) -> None:
    q = GumbelSoftmax((4, 4), levels, generator=torch.Generator().manual_seed(1))
    q.noise_generator = torch.Generator().manual_seed(2)
    q.train()
    t = q()
    g = torch.Generator().manual_seed(2)
    u = torch.rand((levels.k, 4, 4), generator=g).permute(1, 2, 0)  # the layer draws its noise levels-first
    w = torch.softmax((q.logits - torch.log(-torch.log(u))) / q.tau, dim=-1)
    a = torch.tensor(levels.amplitude, dtype=torch.float32)
    p = torch.tensor(levels.phase_rad, dtype=torch.float32)
    np.testing.assert_allclose(t.detach().numpy(), torch.polar(w @ a, w @ p).detach().numpy(), atol=1e-5)
    t.abs().sum().backward()
    assert q.logits.grad is not None and float(q.logits.grad.abs().sum()) > 0


def test_gs_low_temperature_sharp_logits_match_hard(levels) -> None:
    q = GumbelSoftmax((8, 8), levels, schedule=make_schedule("static", start=0.01),
                      generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        q.logits.copy_(20 * torch.nn.functional.one_hot(q.logits.argmax(-1), levels.k))
    q.train()
    soft = q().detach()
    hard = q.hard_transmission()
    assert float((soft - hard).abs().max()) < 1e-3


def test_full_precision_is_phase_only_and_rounds_to_nearest_level() -> None:
    lv = ideal_levels(4)
    q = FullPrecision((8, 8), lv, generator=torch.Generator().manual_seed(0))
    t = q().detach()
    np.testing.assert_allclose(t.abs().numpy(), 1.0, atol=1e-6)
    idx = q.hard_indices()
    expected = torch.round(torch.remainder(q.phase.detach(), 2 * math.pi) / (math.pi / 2)).long() % 4
    assert torch.equal(idx, expected)
    gray, t_export = q.export()
    np.testing.assert_allclose(t_export, t.numpy(), atol=1e-6)  # the assumed, unquantized transmission
    assert set(np.unique(gray).tolist()) <= set(lv.gray)


def test_schedules() -> None:
    lin = make_schedule("linear", rate=0.5)  # the paper's default
    assert lin(0, 100) == 50 and lin(10, 100) == 45 and lin(98, 100) == 1 and lin(120, 100) == 1
    span = make_schedule("linear")
    assert span(0, 11) == 50 and span(10, 11) == 1 and span(5, 11) == pytest.approx(25.5)
    cos = make_schedule("cosine")
    assert cos(0, 11) == pytest.approx(50) and cos(10, 11) == pytest.approx(1) and cos(5, 11) == pytest.approx(25.5)
    assert cos(2, 11) > span(2, 11)  # cosine stays hot longer at first
    step = make_schedule("step")
    assert step(0, 101) == 50 and step(24, 101) == 50 and step(26, 101) == 40 and step(100, 101) == 1
    assert make_schedule("static", start=5)(7, 10) == 5
    with pytest.raises(SimulationError, match="unknown temperature schedule"):
        make_schedule("exponential")


def test_new_method_is_one_new_class() -> None:
    @register
    class Rounded(Quantizer):
        name = "test-rounded"

        def __init__(self, shape, levels, **_):
            super().__init__(shape, levels)
            self.phase = torch.nn.Parameter(torch.zeros(shape))

        def forward(self):
            return torch.polar(torch.ones_like(self.phase), self.phase)

        def hard_indices(self):
            return torch.zeros(self.shape, dtype=torch.int64)

    try:
        assert QUANTIZERS["test-rounded"] is Rounded
        gray, t = Rounded((3, 3), ideal_levels(2)).export()
        assert gray.tolist() == [[0] * 3] * 3 and np.allclose(t, 1)
        with pytest.raises(SimulationError, match="twice"):
            register(Rounded)
    finally:
        del QUANTIZERS["test-rounded"]
