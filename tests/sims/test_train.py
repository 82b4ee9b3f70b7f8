"""Training: a tiny run must learn; seeds reproduce; resume continues exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sims.artifact import load_model
from sims.data import Dataset, load_mnist_5k
from sims.device import ideal_levels, load_response, select_levels
from sims.donn import Geometry, layout_regions
from sims.errors import DataError, SimulationError
from sims.quantizers.schedules import Schedule
from sims.train import (TrainConfig, confidence_study, loss_fn, model_from_layers, predict_scores, shift_images,
                        train, accuracy, write_artifact)

SHIPPED = Path(__file__).resolve().parents[2] / "labctl" / "benches" / "layer_a.response.json"


@pytest.fixture(scope="module")
def small_data() -> Dataset:
    d = load_mnist_5k()
    # every 4th training image, every 2nd test image: balanced, 1000 / 500
    return Dataset("mnist-5k", "test subset", d.train_images[::4], d.train_labels[::4], d.test_images[::2],
                   d.test_labels[::2])


def _config(**kw) -> TrainConfig:
    geo = Geometry(size=32, pitch_m=36e-6, wavelength_m=532e-9, distances_m=(0.03, 0.03, 0.03),
                   regions=layout_regions(32, 3), input_size=24, method="asm", pad_factor=2)
    base = dict(geometry=geo, levels=(select_levels(load_response(SHIPPED), 8),) * 2, method="gs", epochs=3,
                lr=0.3, batch_size=50, loss="ce", schedule=Schedule("linear", start=5, end=0.5), seed=3, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def test_tiny_gs_run_learns_and_exports(small_data: Dataset, tmp_path: Path) -> None:
    config = _config()
    result = train(config, small_data, tmp_path / "m")
    assert result.test_accuracy > 0.55  # chance is 0.10
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    write_artifact(result, config, tmp_path / "m", small_data)
    loaded = load_model(tmp_path / "m")
    assert loaded.meta["metrics"]["test_accuracy"] == result.test_accuracy
    # the artifact alone reproduces the accuracy, with exactly the displayed levels
    donn = model_from_layers(loaded.geometry, loaded.gray, loaded.transmission, loaded.levels)
    assert accuracy(predict_scores(donn, small_data.test_images), small_data.test_labels) == result.test_accuracy
    lv = config.levels[0]
    lut = dict(zip(lv.gray, lv.transmissions().numpy()))
    for gray, t in zip(loaded.gray, loaded.transmission):
        assert set(np.unique(gray).tolist()) <= set(lv.gray)
        np.testing.assert_allclose(t, np.vectorize(lut.get)(gray), atol=1e-6)


def test_same_seed_same_model_and_resume_is_exact(small_data: Dataset, tmp_path: Path) -> None:
    sub = Dataset("s", "s", small_data.train_images[:200], small_data.train_labels[:200],
                  small_data.test_images[:50], small_data.test_labels[:50])
    full = train(_config(epochs=2), sub, tmp_path / "a")
    again = train(_config(epochs=2), sub, tmp_path / "b")
    for p, q in zip(full.model.parameters(), again.model.parameters()):
        assert torch.equal(p, q)
    # interrupted after epoch 1 (its checkpoint is on disk), then resumed
    class Stop(Exception):
        pass

    def stop(record: dict) -> None:
        raise Stop

    with pytest.raises(Stop):
        train(_config(epochs=2, lr_schedule="cosine"), sub, tmp_path / "c", on_epoch=stop)
    straight = train(_config(epochs=2, lr_schedule="cosine"), sub, tmp_path / "d")
    resumed = train(_config(epochs=2, lr_schedule="cosine"), sub, tmp_path / "c", resume=True)
    assert len(resumed.history) == 2
    for p, q in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)
    assert not torch.equal(next(full.model.parameters()), next(straight.model.parameters()))
    with pytest.raises(DataError, match="different configuration"):
        train(_config(epochs=2, lr=0.2), sub, tmp_path / "c", resume=True)


def test_averaging_returns_the_mean_of_the_last_steps_and_resumes_exactly(small_data: Dataset,
                                                                          tmp_path: Path) -> None:
    sub = Dataset("s", "s", small_data.train_images[:200], small_data.train_labels[:200],
                  small_data.test_images[:50], small_data.test_labels[:50])
    seen: list[list[torch.Tensor]] = []
    box = []

    def on_step(info: dict) -> None:
        if info["epoch"] == 2:  # the last third of a 3-epoch run (4 steps of 50 each)
            seen.append([p.detach().clone() for p in box[0].parameters()])

    averaged = train(_config(epochs=3, batch_size=50, average=1 / 3), sub, tmp_path / "a", on_step=on_step,
                     init=box.append)
    assert len(seen) == 4
    for i, p in enumerate(averaged.model.parameters()):
        torch.testing.assert_close(p.detach(), torch.stack([s[i] for s in seen]).mean(0), rtol=1e-5, atol=1e-6)
        assert not torch.equal(p.detach(), seen[-1][i])  # not the last step's parameters
    assert "test_accuracy_averaged" in averaged.history[-1] and "test_accuracy_averaged" not in averaged.history[0]
    assert averaged.history[-1]["test_accuracy_averaged"] == averaged.test_accuracy

    class Stop(Exception):
        pass

    def stop(record: dict) -> None:
        if record["epoch"] == 3:  # the average has begun: its state must survive the restart
            raise Stop

    config = _config(epochs=4, batch_size=50, average=0.5)
    with pytest.raises(Stop):
        train(config, sub, tmp_path / "b", on_epoch=stop)
    resumed = train(config, sub, tmp_path / "b", resume=True)
    straight = train(config, sub, tmp_path / "c")
    for p, q in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)


def test_full_precision_reference_learns(small_data: Dataset, tmp_path: Path) -> None:
    result = train(_config(method="full", levels=(ideal_levels(4),) * 2, epochs=2, lr=0.05), small_data,
                   tmp_path / "f")
    assert result.test_accuracy > 0.55


def test_confidence_study_removes_margin() -> None:
    scores = torch.tensor([[10.0, 1, 1], [5.0, 4.98, 1], [1.0, 9, 1]])
    labels = np.array([0, 0, 0])
    out = confidence_study(scores, labels, drops=(0.0, 0.01, 0.8), softmax_scale=10.0)
    assert out["0%"] == pytest.approx(2 / 3)
    assert out["1%"] == pytest.approx(1 / 3)  # the narrow win flips
    assert out["80%"] == 0.0


def test_shift_augmentation_moves_digits_by_sub_pixel_amounts_within_the_bound() -> None:
    images = torch.from_numpy(load_mnist_5k().train_images[:256])
    moved = shift_images(images, 1.5, torch.Generator().manual_seed(1))
    assert moved.dtype == torch.float32 and moved.shape == images.shape
    assert float(moved.min()) >= 0 and float(moved.max()) <= 1
    x = images.float() / 255
    rows = torch.arange(28.0)

    def centroid(im: torch.Tensor) -> torch.Tensor:
        m = im.sum((-2, -1))
        return torch.stack([(im.sum(-1) * rows).sum(-1) / m, (im.sum(-2) * rows).sum(-1) / m], -1)

    # bilinear translation of a digit clear of the border keeps its light and moves its
    # centroid by exactly the shift
    torch.testing.assert_close(moved.sum((-2, -1)), x.sum((-2, -1)), rtol=1e-4, atol=0)
    shift = centroid(moved) - centroid(x)
    assert float(shift.abs().max()) <= 1.5 + 1e-3
    assert float(shift.abs().max()) > 1.3 and float(shift.min()) < -1.3  # the whole range, both ways
    fractional = (shift - shift.round()).abs()
    assert float((fractional > 0.05).float().mean()) > 0.7  # mostly between whole pixels
    assert torch.equal(shift_images(images, 0, torch.Generator()), images)


def test_label_smoothing_targets_and_fingerprint() -> None:
    scores = torch.tensor([[3.0, 1.0, 0.5, 0.5], [0.2, 0.2, 2.0, 1.6]])
    labels = torch.tensor([0, 3])
    p = scores / scores.sum(-1, keepdim=True)
    target = torch.full((2, 4), 0.2 / 4)
    target[0, 0] = target[1, 3] = 0.8 + 0.2 / 4
    # cross-entropy against the smoothed distribution, written out
    expected = -(target * torch.log_softmax(50 * p, -1)).sum(-1).mean()
    assert float(loss_fn(scores, labels, "ce", 50.0, 0.2)) == pytest.approx(float(expected), rel=1e-6)
    assert float(loss_fn(scores, labels, "mse", 50.0, 0.2)) == pytest.approx(float(((p - target) ** 2).mean()))
    assert float(loss_fn(scores, labels, "ce", 50.0, 0.2)) != pytest.approx(float(loss_fn(scores, labels, "ce", 50.0)))
    # the option changes what is computed, except at 0 (older checkpoints keep resuming)
    assert _config(label_smoothing=0.1).fingerprint() != _config().fingerprint()
    assert _config(augment_shift=0).fingerprint() == _config(augment_shift=0.0).fingerprint()


def test_bad_config() -> None:
    with pytest.raises(SimulationError, match="label_smoothing"):
        _config(label_smoothing=1.0)
    with pytest.raises(SimulationError, match="average"):
        _config(average=1.5)
    with pytest.raises(SimulationError, match="augment_shift"):
        _config(augment_shift=9)
    with pytest.raises(SimulationError, match="unknown method"):
        _config(method="magic")
    with pytest.raises(SimulationError, match="level sets"):
        _config(levels=(ideal_levels(2),))
