"""003's fully connected experiment: 784-128-128-10 on MNIST with linear, ReLU or
saturable-absorber (SA) activations.

As in 003 (Appendix A): inputs in [0, 1], Adam at 5·10⁻⁴, mini-batches of 64. The
optical networks (``linear``, ``sa``, ``sa-exact``) train on the MSE against one-hot
targets and start from N(0, 0.1²) weights; the ReLU benchmark uses cross-entropy and
PyTorch's default initialisation ("standard best practice"). ``sa`` backpropagates
with the optical probe transmission, ``sa-exact`` with the true derivative.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sims.data import Dataset
from sims.errors import SimulationError
from sims.nonlinear import SaturableAbsorber

ACTIVATIONS = ("linear", "relu", "sa", "sa-exact")
HIDDEN = (128, 128)
LR = 5e-4
BATCH = 64
INIT_STD = 0.1


def make_network(activation: str, alpha0: float = 10.0, *, generator: torch.Generator | None = None,
                 hidden: tuple[int, ...] = HIDDEN) -> torch.nn.Sequential:
    """The FC network; ``alpha0`` is used by the SA activations only."""
    if activation not in ACTIVATIONS:
        raise SimulationError(f"unknown activation {activation!r}; expected one of {', '.join(ACTIVATIONS)}")
    sizes = (784, *hidden, 10)
    mods: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = torch.nn.Linear(a, b)
        if activation != "relu":
            with torch.no_grad():
                lin.weight.normal_(0, INIT_STD, generator=generator)
                lin.bias.normal_(0, INIT_STD, generator=generator)
        mods.append(lin)
        if i < len(sizes) - 2:
            if activation == "relu":
                mods.append(torch.nn.ReLU())
            elif activation.startswith("sa"):
                mods.append(SaturableAbsorber(alpha0, "exact" if activation == "sa-exact" else "optical"))
    return torch.nn.Sequential(*mods)


def train_fc(activation: str, data: Dataset, *, alpha0: float = 10.0, epochs: int = 10, seed: int = 0,
             lr: float = LR, batch_size: int = BATCH) -> dict:
    """Train and return {"test_accuracy", "history": [test accuracy per epoch]}."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = make_network(activation, alpha0, generator=g)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    x = torch.from_numpy(data.train_images.reshape(len(data.train_images), -1).astype(np.float32) / 255.0)
    y = torch.from_numpy(data.train_labels)
    xt = torch.from_numpy(data.test_images.reshape(len(data.test_images), -1).astype(np.float32) / 255.0)
    yt = data.test_labels
    history = []
    for epoch in range(epochs):
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        net.train()
        for i in range(0, len(y), batch_size):
            b = order[i:i + batch_size]
            out = net(x[b])
            if activation == "relu":
                loss = F.cross_entropy(out, y[b])
            else:
                loss = F.mse_loss(out, F.one_hot(y[b], 10).float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            history.append(float((net(xt).argmax(-1).numpy() == yt).mean()))
    return {"test_accuracy": history[-1], "best_test_accuracy": max(history), "history": history}


def plan_cells(grid) -> list[dict]:
    cells = []
    for act in grid.activations:
        for alpha in (grid.alphas if act.startswith("sa") else (0.0,)):
            for seed in grid.seeds:
                cells.append({"id": f"{act}_a{alpha:g}_s{seed}", "kind": "fc", "activation": act,
                              "alpha0": float(alpha), "seed": seed})
    return cells


def run_fc_cell(grid, cell: dict) -> dict:
    from sims.experiment import grid_data

    r = train_fc(cell["activation"], grid_data(grid), alpha0=cell["alpha0"], epochs=grid.epochs, seed=cell["seed"],
                 lr=grid.lr, batch_size=grid.batch_size)
    return {"test_accuracy": r["test_accuracy"], "best_test_accuracy": r["best_test_accuracy"],
            "epochs": grid.epochs}
