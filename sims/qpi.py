"""QuATON's all-optical quantitative phase imaging (QPI) task on the DONN twin.

Input: a phase object, unit amplitude over the whole field and phase
``φ = π · image/255`` (radians, in [0, π]) on the input region (the digit resized like
DESIGN §3, zero phase around it). The network must turn phase into intensity: the
target detector-plane intensity is ``φ/π`` (QuATON Eq. 11), on the same pixels.

Data: the *phase digits* are the embedded MNIST digits (``mnist-5k``, DESIGN §5 split)
read as phase maps — no new files, same split, labels kept but unused.

Loss: the reverse Huber (BerHu) of the intensity error, ``|r|`` for ``|r| ≤ c`` and
``(r² + c²)/(2c)`` above, with ``c = 0.2·max|r|`` over the batch (Laina et al. 2016).
Metric: SSIM (Wang et al. 2004; Gaussian window 11 px, σ = 1.5 px, data range 1,
K1 = 0.01, K2 = 0.03) between output intensity and target, averaged over test images.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sims.data import Dataset
from sims.donn import DONN
from sims.errors import DataError
from sims.io import write_bytes_atomic
from sims.train import TrainConfig, build_model

BERHU_FRACTION = 0.2
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5


def phase_digits(data: Dataset) -> Dataset:
    """The digits of ``data`` used as phase objects (``φ = π·image/255``)."""
    return Dataset(f"{data.name}-phase", data.split, data.train_images, data.train_labels, data.test_images,
                   data.test_labels)


def encode_phase(images: torch.Tensor, size: int, input_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 ``(B, 28, 28)`` → (input field complex64 ``(B, N, N)``, target intensity ``(B, N, N)``)."""
    if images.dim() != 3:
        raise DataError(f"images must be (B, h, w), got shape {tuple(images.shape)}")
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    x = F.interpolate(x[:, None], size=(input_size, input_size), mode="bilinear", align_corners=False,
                      antialias=False)[:, 0]
    target = torch.zeros(x.shape[0], size, size)
    off = (size - input_size) // 2
    target[:, off:off + input_size, off:off + input_size] = x
    return torch.polar(torch.ones_like(target), math.pi * target), target


class QpiModel(torch.nn.Module):
    """A DONN read out as a whole intensity image instead of detector regions."""

    def __init__(self, donn: DONN) -> None:
        super().__init__()
        self.donn = donn

    @property
    def layers(self) -> torch.nn.ModuleList:
        return self.donn.layers

    def set_progress(self, epoch: float, epochs: int) -> None:
        self.donn.set_progress(epoch, epochs)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(output intensity, target intensity), both ``(B, N, N)``."""
        d = self.donn
        g = d.geometry
        u, target = encode_phase(images, g.size, g.input_size)
        u = d.gaps[0](u)
        for layer, gap in zip(d.layers, d.gaps[1:]):
            t = layer() if self.training else layer.evaluation_transmission()
            u = gap(u * t)
        return u.real.square() + u.imag.square(), target


def berhu(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean reverse-Huber loss (see module docstring)."""
    r = (prediction - target).abs()
    c = (BERHU_FRACTION * r.max().detach()).clamp_min(1e-12)
    return torch.where(r <= c, r, (r.square() + c.square()) / (2 * c)).mean()


def _gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x.square() / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).float()[None, None]


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """SSIM per image of ``(B, H, W)`` images (valid-window mean), ``(B,)``."""
    if a.shape != b.shape or a.dim() != 3:
        raise DataError(f"ssim needs two equal (B, H, W) stacks, got {tuple(a.shape)} and {tuple(b.shape)}")
    w = _gaussian_window().to(a.dtype)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    a, b = a[:, None], b[:, None]
    mu_a, mu_b = F.conv2d(a, w), F.conv2d(b, w)
    saa = F.conv2d(a * a, w) - mu_a.square()
    sbb = F.conv2d(b * b, w) - mu_b.square()
    sab = F.conv2d(a * b, w) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a.square() + mu_b.square() + c1) * (saa + sbb + c2))
    return s.mean(dim=(1, 2, 3))


@torch.no_grad()
def evaluate_qpi(model: torch.nn.Module, data: Dataset, batch_size: int = 100) -> dict:
    """Mean SSIM and BerHu of the hard (displayed-level) model on the test split."""
    qpi = model if isinstance(model, QpiModel) else QpiModel(model)
    qpi.eval()
    scores, losses = [], []
    for i in range(0, len(data.test_images), batch_size):
        out, target = qpi(torch.from_numpy(data.test_images[i:i + batch_size]))
        scores.append(ssim(out.clamp(0, 1), target))
        losses.append(float(berhu(out, target)) * len(out))
    return {"ssim": float(torch.cat(scores).mean()), "berhu": sum(losses) / len(data.test_images)}


def train_qpi(config: TrainConfig, data: Dataset, out_dir: str | Path | None = None, *, init=None) -> QpiModel:
    """Adam on the BerHu loss, with the same seeding, schedules and regularizers as
    :func:`sims.train.train` (the classification trainer). ``out_dir`` receives a
    small JSON history."""
    if config.threads:
        torch.set_num_threads(config.threads)
    if len(data.train_images) == 0:
        raise DataError(f"dataset {data.name} has no training images")
    torch.manual_seed(config.seed)
    model = QpiModel(build_model(config))
    if init is not None:
        init(model.donn)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    images = torch.from_numpy(data.train_images)
    n = len(images)
    steps = (n + config.batch_size - 1) // config.batch_size
    history = []
    model.train()
    for epoch in range(config.epochs):
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        for layer in model.layers:
            if hasattr(layer, "noise_generator"):
                layer.noise_generator = g
        order = torch.randperm(n, generator=g)
        total = 0.0
        for step in range(steps):
            batch = order[step * config.batch_size:(step + 1) * config.batch_size]
            model.set_progress(epoch + step / steps, config.epochs)
            out, target = model(images[batch])
            loss = berhu(out, target)
            terms = [r for q in model.layers if (r := q.regularizer()) is not None]
            if terms:
                loss = loss + sum(terms)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(batch)
        history.append({"epoch": epoch + 1, "loss": total / n, "seconds": time.perf_counter() - t0})
    if out_dir is not None:
        write_bytes_atomic(Path(out_dir) / "history.json", json.dumps(history).encode())
    model.eval()
    return model


def to_images(model: QpiModel, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(output intensity, target) float32 ``(B, N, N)`` for plots."""
    with torch.no_grad():
        model.eval()
        out, target = model(torch.from_numpy(images))
    return out.numpy(), target.numpy()
