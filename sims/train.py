"""Training and evaluation of DONNs on device levels (Adam, MSE or cross-entropy).

Reproducible under a seed: parameter init, the shuffle of epoch e and the Gumbel
noise of epoch e all come from generators seeded by (seed, e), so a run resumed from
the checkpoint of epoch e continues exactly as the uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

from sims.artifact import save_model
from sims.data import Dataset
from sims.device import DeviceLevels
from sims.donn import DONN, Geometry
from sims.errors import DataError, SimulationError
from sims.io import write_bytes_atomic
from sims.quantizers import QUANTIZERS, Fixed
from sims.quantizers.schedules import Schedule

LOSSES = ("mse", "ce")
LR_SCHEDULES = ("constant", "cosine")
CHECKPOINT_FILE = "checkpoint.pt"


@dataclass(frozen=True)
class TrainConfig:
    """One training run. ``levels`` has one entry per layer."""

    geometry: Geometry
    levels: tuple[DeviceLevels, ...]
    method: str = "gs"
    epochs: int = 10
    lr: float = 0.5
    lr_schedule: str = "constant"  # "cosine": lr·(1 + cos(π·progress))/2 over the run
    batch_size: int = 32
    loss: str = "mse"
    schedule: Schedule = field(default_factory=lambda: Schedule("linear"))
    seed: int = 0
    init_std: float = 1.0
    # Logits for cross-entropy and the confidence study: scale · (scores / Σ scores).
    softmax_scale: float = 10.0
    dataset: str = "mnist-5k"
    split: str = ""
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    # Each training digit moved by up to this many of its pixels per step, sub-pixel (0: off).
    augment_shift: float = 0.0
    # Cross-entropy toward (1 - ε)·one-hot + ε/C instead of one-hot (MSE: the same target).
    label_smoothing: float = 0.0
    # The last fraction of the run whose parameters are averaged, every step, into the
    # trained model (stochastic weight averaging; 0: off, the last step's parameters).
    average: float = 0.0

    def __post_init__(self) -> None:
        if self.method not in QUANTIZERS:
            raise SimulationError(f"unknown method {self.method!r}; expected one of {', '.join(QUANTIZERS)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise SimulationError(f"unknown lr schedule {self.lr_schedule!r}; "
                                  f"expected one of {', '.join(LR_SCHEDULES)}")
        if self.loss not in LOSSES:
            raise SimulationError(f"unknown loss {self.loss!r}; expected one of {', '.join(LOSSES)}")
        if len(self.levels) != self.geometry.layers:
            raise SimulationError(f"{self.geometry.layers} layers need {self.geometry.layers} level sets, "
                                  f"got {len(self.levels)}")
        if not 0 <= self.augment_shift <= 8:
            raise SimulationError(f"augment_shift must be 0..8 image pixels, got {self.augment_shift}")
        if not 0 <= self.label_smoothing < 1:
            raise SimulationError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.average <= 1:
            raise SimulationError(f"average must be a fraction of the run in [0, 1], got {self.average}")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise SimulationError("epochs and batch_size must be >= 1 and lr > 0")

    def fingerprint(self) -> str:
        """Identifies what the run computes; a checkpoint resumes only under the same one."""
        d = asdict(self)
        d.pop("threads")
        d.pop("epochs")  # a resumed run may be extended
        for key in ("label_smoothing", "average"):
            if not d[key]:
                d.pop(key)  # checkpoints written before these options existed still resume
        # Shifts were whole pixels before they were sub-pixel: a checkpoint of a run that
        # shifted must not resume under the new augmentation; one that did not still may.
        d["augment_shift"] = {"subpixel": float(self.augment_shift)} if self.augment_shift else 0
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def shift_images(images: torch.Tensor, max_shift: float, generator: torch.Generator) -> torch.Tensor:
    """Each image ``(B, h, w)`` moved by a random amount, uniform in ±``max_shift`` of its
    pixels along each axis, resampled bilinearly with 0 (the digits' background) outside;
    floats in [0, 1] (uint8 input is divided by 255). The embedded split has 4,000
    training digits: without any move the twin learns them (soft training accuracy
    0.997 against 0.95 on the test digits); docs/results.md has what whole-pixel and
    sub-pixel moves gave."""
    if max_shift <= 0:
        return images
    b, h, w = images.shape
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    move = (torch.rand(b, 2, generator=generator) * 2 - 1) * max_shift
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    # affine_grid's coordinates run over 2 units per image side (align_corners=False)
    theta[:, 0, 2] = move[:, 1] * (2.0 / w)
    theta[:, 1, 2] = move[:, 0] * (2.0 / h)
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
    return F.grid_sample(x[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]


def build_model(config: TrainConfig) -> DONN:
    g = torch.Generator().manual_seed(config.seed)
    cls = QUANTIZERS[config.method]
    n = config.geometry.size
    layers = [cls((n, n), lv, schedule=config.schedule, generator=g, init_std=config.init_std)
              for lv in config.levels]
    return DONN(config.geometry, layers)


def model_from_layers(geometry: Geometry, gray: tuple[np.ndarray, ...], transmission: tuple[np.ndarray, ...],
                      levels: tuple[DeviceLevels, ...]) -> DONN:
    """A fixed DONN from stored maps (re-simulation of an artifact)."""
    return DONN(geometry, [Fixed(t, g, lv) for g, t, lv in zip(gray, transmission, levels)]).eval()


def normalized(scores: torch.Tensor) -> torch.Tensor:
    """Detector scores as fractions of the light reaching all regions, ``(B, C)``."""
    return scores / scores.sum(dim=-1, keepdim=True).clamp_min(1e-30)


def loss_fn(scores: torch.Tensor, labels: torch.Tensor, loss: str, softmax_scale: float,
            label_smoothing: float = 0.0) -> torch.Tensor:
    p = normalized(scores)
    if loss == "mse":
        c = p.shape[-1]
        target = F.one_hot(labels, c).to(p.dtype) * (1 - label_smoothing) + label_smoothing / c
        return F.mse_loss(p, target)
    return F.cross_entropy(softmax_scale * p, labels, label_smoothing=label_smoothing)


@torch.no_grad()
def predict_scores(model: DONN, images: np.ndarray, batch_size: int = 250) -> torch.Tensor:
    """Detector scores ``(n, C)`` of the model as the bench shows it (hard levels)."""
    was = model.training
    model.eval()
    out = [model(torch.from_numpy(images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
    model.train(was)
    return torch.cat(out) if out else torch.zeros(0, model.geometry.classes)


def accuracy(scores: torch.Tensor, labels: np.ndarray) -> float:
    return float((scores.argmax(dim=-1).numpy() == labels).mean()) if len(labels) else float("nan")


def confidence_study(scores: torch.Tensor, labels: np.ndarray, drops: tuple[float, ...] = (0.01, 0.03, 0.05),
                     softmax_scale: float = 10.0) -> dict[str, float]:
    """The ICCAD'22 Table-1 study: for each correctly classified sample, move ``drop`` of
    probability from the top class to the others (evenly) and count how many stay
    correct. Probabilities = softmax(softmax_scale · normalized scores). Returns
    accuracy per drop, keyed like ``"1%"``."""
    probs = torch.softmax(softmax_scale * normalized(scores), dim=-1)
    labels_t = torch.from_numpy(labels)
    correct = probs.argmax(-1) == labels_t
    c = probs.shape[-1]
    out = {}
    for drop in drops:
        p = probs.clone()
        idx = torch.arange(len(p))[correct]
        top = labels_t[correct]
        p[idx] += drop / (c - 1)
        p[idx, top] -= drop + drop / (c - 1)
        out[f"{drop * 100:g}%"] = float((p.argmax(-1) == labels_t).float().mean())
    return out


@dataclass
class TrainResult:
    model: DONN
    history: list[dict]
    test_accuracy: float
    seconds: float


def _checkpoint(model: DONN, opt: torch.optim.Optimizer, epoch: int, history: list[dict], fingerprint: str,
                average: AveragedModel | None) -> bytes:
    buf = io.BytesIO()
    state = {"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
             "history": json.dumps(history), "fingerprint": fingerprint}
    if average is not None:
        state["average"] = average.state_dict()
    torch.save(state, buf)
    return buf.getvalue()


def train(config: TrainConfig, data: Dataset, out_dir: str | Path, *, resume: bool = False,
          on_step: Callable[[dict], None] | None = None, on_epoch: Callable[[dict], None] | None = None,
          eval_every_epoch: bool = True, init: Callable[[DONN], None] | None = None) -> TrainResult:
    """Train, checkpointing into ``out_dir`` after every epoch; returns the trained model.

    ``on_step`` gets {"epoch", "step", "steps", "loss", "tau"} after every batch and
    ``on_epoch`` the epoch's record (loss, train/test accuracy, seconds; with
    ``config.average``, also the averaged parameters' test accuracy). With averaging,
    the returned model holds the averaged parameters; checkpoints keep both. ``init`` may
    overwrite the freshly built model's parameters (a warm start from another model)
    before training or resuming.
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    out_dir = Path(out_dir)
    if data.train_images.shape[0] == 0:
        raise DataError(f"dataset {data.name} has no training images")
    if data.num_classes > config.geometry.classes:
        raise SimulationError(f"dataset has {data.num_classes} classes but the detector has "
                              f"{config.geometry.classes} regions")
    torch.manual_seed(config.seed)
    model = build_model(config)
    if init is not None:
        init(model)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    average = AveragedModel(model) if config.average else None
    average_from = (1 - config.average) * config.epochs  # fractional epoch
    history: list[dict] = []
    start_epoch = 0
    ckpt = out_dir / CHECKPOINT_FILE
    fingerprint = config.fingerprint()
    if resume and ckpt.is_file():
        try:
            state = torch.load(ckpt, weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is one clear error
            raise DataError(f"{ckpt}: unreadable checkpoint ({e}); delete it to start over") from None
        if state.get("fingerprint") != fingerprint:
            raise DataError(f"{ckpt}: checkpoint was written by a different configuration; use the same options "
                            "or another --out")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if average is not None:
            average.load_state_dict(state["average"])
        history = json.loads(state["history"])
        start_epoch = int(state["epoch"]) + 1
    images = torch.from_numpy(data.train_images)
    labels = torch.from_numpy(data.train_labels)
    n = len(labels)
    steps = (n + config.batch_size - 1) // config.batch_size
    t0 = time.perf_counter()
    model.train()
    for epoch in range(start_epoch, config.epochs):
        epoch_t0, epoch_cpu0 = time.perf_counter(), time.process_time()
        g = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        for layer in model.layers:
            if hasattr(layer, "noise_generator"):
                layer.noise_generator = g
        order = torch.randperm(n, generator=g)
        total_loss, correct = 0.0, 0
        for step in range(steps):
            batch = order[step * config.batch_size:(step + 1) * config.batch_size]
            model.set_progress(epoch + step / steps, config.epochs)
            if config.lr_schedule == "cosine":
                progress = (epoch + step / steps) / config.epochs
                for group in opt.param_groups:
                    group["lr"] = config.lr * 0.5 * (1 + math.cos(math.pi * progress))
            scores = model(shift_images(images[batch], config.augment_shift, g))
            loss = loss_fn(scores, labels[batch], config.loss, config.softmax_scale, config.label_smoothing)
            terms = [r for q in model.layers if (r := q.regularizer()) is not None]
            if terms:
                loss = loss + sum(terms)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if average is not None and epoch + (step + 1) / steps > average_from:
                average.update_parameters(model)
            total_loss += float(loss.detach()) * len(batch)
            correct += int((scores.detach().argmax(-1) == labels[batch]).sum())
            if on_step is not None:
                on_step({"epoch": epoch, "step": step, "steps": steps, "loss": float(loss.detach()),
                         "tau": getattr(model.layers[0], "tau", None)})
        record = {"epoch": epoch + 1, "loss": total_loss / n, "train_accuracy_soft": correct / n,
                  "tau": getattr(model.layers[0], "tau", None)}
        if eval_every_epoch or epoch == config.epochs - 1:
            record["test_accuracy"] = accuracy(predict_scores(model, data.test_images), data.test_labels)
            if average is not None and int(average.n_averaged):
                record["test_accuracy_averaged"] = accuracy(predict_scores(average.module, data.test_images),
                                                            data.test_labels)
        record["seconds"] = time.perf_counter() - epoch_t0
        # CPU time of this process: on a shared machine it says what the run cost
        # when wall time is inflated by other work.
        record["cpu_seconds"] = time.process_time() - epoch_cpu0
        history.append(record)
        write_bytes_atomic(ckpt, _checkpoint(model, opt, epoch, history, fingerprint, average))
        if on_epoch is not None:
            on_epoch(record)
    if average is not None and int(average.n_averaged):
        with torch.no_grad():
            for p, q in zip(model.parameters(), average.module.parameters()):
                p.copy_(q)
    test_acc = accuracy(predict_scores(model, data.test_images), data.test_labels)
    return TrainResult(model, history, test_acc, time.perf_counter() - t0)


def write_artifact(result: TrainResult, config: TrainConfig, out_dir: str | Path, data: Dataset,
                   slm_names: list[str] | None = None, extra_metrics: dict | None = None) -> Path:
    """Write the DESIGN §5 artifact of a trained model into ``out_dir``."""
    layers = [q.export() for q in result.model.layers]
    training = {
        "method": config.method,
        "schedule": config.schedule.describe() if config.method == "gs" else None,
        "epochs": config.epochs,
        "dataset": data.name,
        "split": data.split,
        "seed": config.seed,
        "lr": config.lr,
        "lr_schedule": config.lr_schedule,
        "batch_size": config.batch_size,
        "loss": config.loss,
        "optimizer": "adam",
        "softmax_scale": config.softmax_scale,
        "augment_shift": config.augment_shift,
        "label_smoothing": config.label_smoothing,
        "average": config.average,
        "seconds": round(sum(h["seconds"] for h in result.history), 2),
        "cpu_seconds": round(sum(h.get("cpu_seconds", 0.0) for h in result.history), 2),
        "history": result.history,
    }
    metrics = {"test_accuracy": result.test_accuracy, "test_samples": int(len(data.test_labels)),
               **(extra_metrics or {})}
    return save_model(out_dir, geometry=config.geometry, layers=layers, levels=list(config.levels),
                      training=training, metrics=metrics, slm_names=slm_names)
