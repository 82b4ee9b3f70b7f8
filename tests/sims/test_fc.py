"""003's fully connected network: shapes, activations, and that nonlinearity matters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sims.data import Dataset
from sims.errors import SimulationError
from sims.fc import make_network, train_fc
from sims.nonlinear import SaturableAbsorber


def test_architecture_is_784_128_128_10() -> None:
    net = make_network("sa", 10.0)
    shapes = [tuple(m.weight.shape) for m in net if isinstance(m, torch.nn.Linear)]
    assert shapes == [(128, 784), (128, 128), (10, 128)]
    assert sum(isinstance(m, SaturableAbsorber) for m in net) == 2
    assert not any(isinstance(m, (SaturableAbsorber, torch.nn.ReLU)) for m in make_network("linear"))
    assert make_network("sa-exact", 3.0)[1].gradient == "exact"
    with pytest.raises(SimulationError, match="activation"):
        make_network("tanh")


def _xor_data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    # the four XOR corners equally often: no linear map gets more than 3 of them right
    a, b = np.tile([0, 0, 1, 1], n // 4), np.tile([0, 1, 0, 1], n // 4)
    x = np.zeros((n, 784), np.float32)
    x[:, 0], x[:, 1] = a, b
    return torch.from_numpy(x), torch.from_numpy((a ^ b).astype(np.int64))


@pytest.mark.parametrize("activation,solves", [("linear", False), ("relu", True), ("sa", True)])
def test_only_nonlinear_networks_learn_xor(activation: str, solves: bool) -> None:
    torch.manual_seed(0)
    x, y = _xor_data(256)
    net = make_network(activation, 3.0, generator=torch.Generator().manual_seed(0), hidden=(32,))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(300):
        out = net(x)
        loss = F.cross_entropy(out, y) if activation == "relu" else F.mse_loss(out, F.one_hot(y, 10).float())
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = float((net(x).argmax(-1) == y).float().mean())
    if solves:
        assert acc > 0.95
    else:
        assert acc <= 0.75 + 1e-6  # a linear map cannot separate XOR


def test_train_fc_records_each_epoch() -> None:
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (64, 28, 28), dtype=np.uint8)
    labels = np.arange(64) % 10
    data = Dataset("tiny", "t", images, labels, images[:20], labels[:20])
    r = train_fc("sa", data, alpha0=1.0, epochs=2, batch_size=16)
    assert len(r["history"]) == 2 and 0 <= r["test_accuracy"] <= 1
