"""Physics-aware (in-situ) training: the bench computes the forward pass, the twin the gradient.

Each mini-batch: the layer maps of the current hard levels are shown on the bench,
the digits go through the input SLM, and the server sums the camera signal in the
registered detector regions. The twin computes the same batch (soft level weights,
so it has a gradient); its normalized scores are then *replaced* by the measured
ones in the forward value while its gradient is kept::

    p = p_twin + (p_bench − p_twin).detach()

so the loss is the bench's loss and the update follows the twin's Jacobian at the
bench's operating point (Wright et al., Nature 601, 549, 2022). Every step is
checkpointed (``insitu.pt``); ``--resume`` continues at the next step, and a bench
server that restarts is set up again by :class:`~labctl.hil.session.HilSession`.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from labctl.errors import ConfigError, UsageError
from labctl.hil.session import HilSession
from sims.device import DeviceLevels
from sims.quantizers.base import Quantizer

CHECKPOINT = "insitu.pt"


class SoftLevels(Quantizer):
    """Per-pixel logits over the K levels: the argmax is shown (bench and twin value),
    the softmax weights carry the gradient. Started from a trained model's levels with
    a ``margin`` lead."""

    name = "insitu"
    quantized = True

    def __init__(self, shape: tuple[int, int], levels: DeviceLevels, indices: np.ndarray, margin: float = 2.0):
        super().__init__(shape, levels)
        logits = torch.zeros(*self.shape, levels.k)
        logits.scatter_(-1, torch.from_numpy(np.asarray(indices, dtype=np.int64))[..., None], float(margin))
        self.logits = torch.nn.Parameter(logits)

    def polar(self) -> tuple[torch.Tensor, torch.Tensor]:
        # Straight through: the value is the hard map the bench shows, so the twin's
        # Jacobian is taken at the bench's operating point; the gradient flows through
        # the soft weights. (Soft values alone put the twin at a different network and
        # the bench accuracy drifted down once it was high.)
        w = torch.softmax(self.logits, dim=-1)
        amp, phase = w @ self.level_amplitude, w @ self.level_phase
        hard_amp, hard_phase = self.hard_polar()
        return hard_amp + (amp - amp.detach()), hard_phase + (phase - phase.detach())

    def hard_indices(self) -> torch.Tensor:
        return self.logits.detach().argmax(dim=-1)


@dataclass(frozen=True)
class InSituOptions:
    epochs: int = 4
    images: int = 256  # training images per epoch
    batch_size: int = 32
    lr: float = 0.1
    # Lead of the start level's logit: small enough that a steady gradient flips a pixel
    # within a few dozen steps, large enough that the soft twin stays near the hard maps.
    margin: float = 1.0
    softmax_scale: float = 10.0
    seed: int = 0


def level_indices(gray: np.ndarray, levels: DeviceLevels, where: str) -> np.ndarray:
    lut = np.full(256, -1, dtype=np.int64)
    lut[np.asarray(levels.gray, dtype=np.int64)] = np.arange(levels.k)
    idx = lut[np.asarray(gray, dtype=np.int64)]
    if (idx < 0).any():
        raise ConfigError(f"{where}: the layer map shows grays that are not among its levels")
    return idx


def physics_aware_loss(twin_scores: torch.Tensor, bench_scores: torch.Tensor, labels: torch.Tensor,
                       softmax_scale: float) -> torch.Tensor:
    """Cross-entropy of the bench's normalized scores, differentiated through the twin's."""
    p_twin = twin_scores / twin_scores.sum(-1, keepdim=True).clamp_min(1e-30)
    p_bench = bench_scores / bench_scores.sum(-1, keepdim=True).clamp_min(1e-30)
    p = p_twin + (p_bench.to(p_twin.dtype) - p_twin).detach()
    return F.cross_entropy(softmax_scale * p, labels)


@dataclass
class InSituTrainer:
    """Fine-tunes ``model`` (a DONN of :class:`SoftLevels`, maybe wrapped by a refined twin) on the bench."""

    model: Any
    session: HilSession
    encode: Callable[[np.ndarray], np.ndarray]  # digits (B, 28, 28) → input SLM maps
    regions_camera: list[list[int]]
    upsample: dict[str, int]  # per layer SLM
    slm_names: list[str]
    options: InSituOptions
    out_dir: Path
    echo: Callable[[str], None] = print

    def __post_init__(self) -> None:
        self.opt = torch.optim.Adam(self.model.parameters(), lr=self.options.lr)
        self.epoch, self.step, self.history = 0, 0, []
        self._shown: bytes | None = None

    # -- checkpoints -------------------------------------------------------------------

    def save(self) -> None:
        from sims.io import write_bytes_atomic

        buf = io.BytesIO()
        torch.save({"epoch": self.epoch, "step": self.step, "model": self.model.state_dict(),
                    "optimizer": self.opt.state_dict(), "history": json.dumps(self.history),
                    "frames": self.session.frames, "restarts": self.session.restarts,
                    "exposure_s": self.session.exposure_s if self.session.exposure_s is not None else -1.0}, buf)
        write_bytes_atomic(self.out_dir / CHECKPOINT, buf.getvalue())

    def load(self) -> bool:
        path = self.out_dir / CHECKPOINT
        if not path.is_file():
            return False
        try:
            state = torch.load(path, weights_only=True)
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
        except Exception as e:  # noqa: BLE001 - an unreadable checkpoint is one clear error
            raise UsageError(f"{path}: unreadable in-situ checkpoint ({e}); delete it to start over") from None
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history = json.loads(state["history"])
        self.session.frames = int(state["frames"])
        self.session.restarts = int(state.get("restarts", 0))
        if float(state.get("exposure_s", -1.0)) > 0 and self.session.exposure_s is None:
            self.session.exposure_s = float(state["exposure_s"])
        return True

    # -- training ----------------------------------------------------------------------------

    def maps(self) -> dict[str, np.ndarray]:
        out = {}
        for name, layer in zip(self.slm_names, self.model.layers):
            gray, _ = layer.export()
            u = self.upsample[name]
            out[name] = np.ascontiguousarray(np.repeat(np.repeat(gray, u, axis=0), u, axis=1))
        return out

    def order(self, epoch: int, n_train: int) -> np.ndarray:
        """The epoch's images: a fresh random draw from the training split (seeded by epoch).

        A fixed subset was tried first: the bench accuracy on it rose while the test
        accuracy did not move, so every epoch sees new digits."""
        return np.random.default_rng((self.options.seed, epoch)).permutation(n_train)[: self.options.images]

    def train_step(self, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        maps = self.maps()
        key = b"".join(m.tobytes() for m in maps.values())
        if key != self._shown:
            self.session.show_layers(maps, name="insitu")
            self._shown = key
        bench = torch.from_numpy(self.session.scores(self.encode(images), self.regions_camera))
        self.model.train()
        twin = self.model(torch.from_numpy(images))
        y = torch.from_numpy(labels.astype(np.int64))
        loss = physics_aware_loss(twin, bench, y, self.options.softmax_scale)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": float(loss.detach()), "bench_accuracy": float((bench.argmax(-1) == y).float().mean()),
                "twin_accuracy": float((twin.detach().argmax(-1) == y).float().mean())}

    def run(self, train_images: np.ndarray, train_labels: np.ndarray,
            on_step: Callable[[dict[str, Any]], None] | None = None) -> None:
        o = self.options
        steps = -(-min(o.images, len(train_labels)) // o.batch_size)
        while self.epoch < o.epochs:
            order = self.order(self.epoch, len(train_labels))
            while self.step < steps:
                idx = np.sort(order[self.step * o.batch_size:(self.step + 1) * o.batch_size])
                t0 = time.perf_counter()
                rec = self.train_step(train_images[idx], train_labels[idx])
                rec.update(epoch=self.epoch, step=self.step, frames=self.session.frames,
                           seconds=round(time.perf_counter() - t0, 3))
                self.history.append(rec)
                self.step += 1
                self.save()
                if on_step is not None:
                    on_step(rec)
            self.epoch, self.step = self.epoch + 1, 0
            self.save()


def build_model(loaded: Any, corrections: Any, margin: float) -> Any:
    """A DONN of :class:`SoftLevels` started from a loaded model artifact."""
    from sims.donn import DONN

    layers = [SoftLevels(g.shape, lv, level_indices(g, lv, f"{loaded.path} layer {i}"), margin)
              for i, (g, lv) in enumerate(zip(loaded.gray, loaded.levels))]
    model = DONN(loaded.geometry, layers)
    if corrections is not None:
        from sims.refine import apply_twin

        apply_twin(model, corrections)
    return model


def train_in_situ_cli(endpoint: str, settings: dict[str, Any], geometry: Any, slm_names: list[str], data: Any,
                      folder: Path, twin_file: Path | None, init_model: Path | None, images: int | None,
                      resume: bool) -> None:
    """``labctl train --in-situ ENDPOINT``: see the module docstring and docs/hil.md."""
    import click

    from calibration.errors import CalibrationError
    from calibration.registration import load_registration
    from labctl.client import BenchClient
    from labctl.commands.refine import find_registration
    from labctl.config import load_bench
    from labctl.deploy.encode import InputEncoder, inverse_amplitude_lut
    from labctl.deploy.regions import camera_regions
    from labctl.hil.twin import model_twin, record_twin
    from labctl.progress import progress
    from sims.artifact import load_model, save_model
    from sims.device import load_response
    from sims.errors import DataError
    from sims.refine import check_geometry, load_twin
    from sims.train import accuracy, predict_scores

    if not settings["bench"]:
        raise UsageError("--in-situ needs --bench FILE|sim (the bench the server runs)")
    if init_model is None:
        raise UsageError("--in-situ needs --init MODEL (a model trained on the twin to start from)")
    if not settings["calibration"]:
        raise UsageError("--in-situ needs the bench's --calibration files (their folder also holds the input SLM's "
                         "calibration and the camera registration)")
    torch.set_num_threads(max(1, int(settings["threads"] or 1)))
    bench = load_bench(settings["bench"])
    cal_dir = Path(settings["calibration"][0]).parent
    try:
        loaded = load_model(init_model)
    except DataError as e:
        raise UsageError(str(e)) from None
    if loaded.geometry.size != bench.size[0] or loaded.geometry.layers != len(bench.layer_slms):
        raise ConfigError(f"{init_model}: a {loaded.geometry.size}-neuron {loaded.geometry.layers}-layer model does "
                          f"not fit bench {bench.name!r} ({bench.size[0]} neurons, {len(bench.layer_slms)} layers)")
    corrections = model_twin(loaded.meta)
    if twin_file is not None:
        try:
            corrections, stored = load_twin(twin_file)
            check_geometry(stored, loaded.geometry, str(twin_file))
        except DataError as e:
            raise ConfigError(str(e)) from None
    in_cal = cal_dir / f"{bench.input_slm.name}.cal.json"
    if not in_cal.is_file():
        raise ConfigError(f"{in_cal}: no calibration of the input SLM {bench.input_slm.name!r}")
    try:
        reg = load_registration(find_registration(cal_dir, bench.name, None))
        lut = inverse_amplitude_lut(load_response(in_cal))
    except (CalibrationError, DataError) as e:
        raise ConfigError(str(e)) from None
    g = loaded.geometry
    encoder = InputEncoder(g.size, g.input_size, bench.input_slm.upsample, lut)
    d = InSituOptions()
    # Unset training settings (None: chosen per method for twin training) take the in-situ defaults.
    o = InSituOptions(epochs=settings.get("epochs") or d.epochs, images=images or d.images,
                      batch_size=settings.get("batch_size") or d.batch_size, lr=settings.get("lr") or d.lr,
                      softmax_scale=settings.get("softmax_scale") or d.softmax_scale, seed=settings.get("seed") or 0)
    folder.mkdir(parents=True, exist_ok=True)
    names = [s.name for s in bench.layer_slms]
    model = build_model(loaded, corrections, o.margin)
    echo = lambda s: click.echo(s, err=True)  # noqa: E731
    steps_total = o.epochs * -(-min(o.images, len(data.train_labels)) // o.batch_size)
    bar = progress(total=steps_total, desc=f"in-situ {folder.name}", unit="step")
    t0 = time.perf_counter()
    try:
        with BenchClient(endpoint, timeout_s=60.0) as client:
            session = HilSession(client, bench.input_slm.name, tuple(names), bench_name=bench.name, echo=echo)
            trainer = InSituTrainer(model, session, encoder.encode, [], {s.name: s.upsample for s in bench.layer_slms},
                                    names, o, folder, echo)
            if (folder / CHECKPOINT).is_file():
                if not resume:
                    raise UsageError(f"{folder / CHECKPOINT} exists: give --resume to continue it, or another --name")
                trainer.load()
                echo(f"resuming in-situ training at epoch {trainer.epoch + 1}, step {trainer.step + 1} "
                     f"({session.frames} bench frames so far)")
                bar.update(trainer.epoch * (steps_total // o.epochs) + trainer.step)
            with session:
                cam = client.devices()["camera"]
                roi = cam.get("roi") or [0, 0, cam["shape"][1], cam["shape"][0]]
                trainer.regions_camera = [list(r) for r in camera_regions(reg, g.regions, roi)]

                def on_step(rec: dict[str, Any]) -> None:
                    bar.update(1)
                    bar.set_postfix({"loss": f"{rec['loss']:.3f}", "bench_acc": f"{rec['bench_accuracy']:.2f}"},
                                    refresh=False)
                    if bar.disable:
                        echo(f"epoch {rec['epoch'] + 1} step {rec['step'] + 1}: loss {rec['loss']:.4f}, bench "
                             f"accuracy {rec['bench_accuracy']:.3f}, twin {rec['twin_accuracy']:.3f}")

                trainer.run(data.train_images, data.train_labels, on_step)
    finally:
        bar.close()
    model.eval()
    test_acc = accuracy(predict_scores(model, data.test_images), data.test_labels)
    layers = []
    for layer in model.layers:
        gray, t = layer.export()
        layers.append((gray, t))
    training = {"method": "in-situ", "init": str(Path(init_model).resolve()), "endpoint": endpoint,
                "epochs": o.epochs, "images": o.images, "batch_size": o.batch_size, "lr": o.lr, "margin": o.margin,
                "softmax_scale": o.softmax_scale, "seed": o.seed, "optimizer": "adam", "loss": "ce (physics-aware)",
                "dataset": data.name, "split": data.split, "bench_frames": session.frames,
                "server_restarts": session.restarts, "seconds": round(time.perf_counter() - t0, 1),
                "history": trainer.history}
    save_model(folder, geometry=g, layers=layers, levels=list(loaded.levels), training=training,
               metrics={"test_accuracy": test_acc, "test_samples": int(len(data.test_labels))}, slm_names=names)
    from sims.io import write_json_atomic

    # The levels are the start model's, measured with its calibrations: keep their record
    # (file, sha256) so deploy can check them against the bench's.
    meta = json.loads((folder / "model.json").read_text())
    for mine, theirs in zip(meta.get("layers", []), loaded.meta.get("layers", [])):
        if "calibration" in theirs:
            mine["calibration"] = theirs["calibration"]
    if twin_file is None and loaded.meta.get("twin"):
        meta["twin"] = loaded.meta["twin"]
    write_json_atomic(folder / "model.json", meta)
    if twin_file is not None:
        record_twin(folder, twin_file)
    click.echo(f"{folder}: in-situ training done, {session.frames} bench frames, {session.restarts} server restarts; "
               f"twin test accuracy {test_acc:.4f}")
