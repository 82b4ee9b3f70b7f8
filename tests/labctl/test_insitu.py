"""Physics-aware (in-situ) training: the straight-through loss, steps on the simulated bench,
checkpoints, resume, and a bench server killed and restarted mid-training."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from labctl.cli import main
from labctl.config import load_bench
from tests.labctl.hil_support import MISALIGNED, ServeProcess, ThreadServer, make_calibrations, make_random_model


def test_physics_aware_loss_takes_the_bench_value_and_the_twin_gradient():
    from labctl.hil.insitu import physics_aware_loss

    twin = torch.tensor([[1.0, 2.0, 3.0], [2.0, 1.0, 1.0]], requires_grad=True)
    bench = torch.tensor([[300.0, 100.0, 100.0], [10.0, 70.0, 20.0]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    loss = physics_aware_loss(twin, bench, y, 10.0)
    p_bench = (bench / bench.sum(-1, keepdim=True)).float()
    assert torch.isclose(loss, torch.nn.functional.cross_entropy(10 * p_bench, y))
    loss.backward()
    # d loss / d twin equals the chain rule through the twin's normalization at the bench's probabilities.
    t2 = twin.detach().clone().requires_grad_(True)
    p_t = t2 / t2.sum(-1, keepdim=True)
    surrogate = (torch.softmax(10 * p_bench, -1) - torch.nn.functional.one_hot(y, 3)).mul(10 * p_t).sum() / 2
    surrogate.backward()
    assert torch.allclose(twin.grad, t2.grad, atol=1e-6)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("insitu")
    cal = make_calibrations(MISALIGNED, root / "cal")
    model = make_random_model(MISALIGNED, cal, root / "start", seed=1)
    return root, cal, model


def _trainer(setup, server, out: Path, **opts):
    from calibration.registration import load_registration
    from labctl.client import BenchClient
    from labctl.deploy.encode import InputEncoder, inverse_amplitude_lut
    from labctl.deploy.regions import camera_regions
    from labctl.hil.insitu import InSituOptions, InSituTrainer, build_model
    from labctl.hil.session import HilSession
    from sims.artifact import load_model
    from sims.device import load_response

    root, cal, model_dir = setup
    cfg = load_bench(MISALIGNED)
    loaded = load_model(model_dir)
    g = loaded.geometry
    o = InSituOptions(**opts)
    client = BenchClient(server.endpoint, timeout_s=30)
    session = HilSession(client, cfg.input_slm.name, tuple(s.name for s in cfg.layer_slms), echo=lambda s: None)
    enc = InputEncoder(g.size, g.input_size, 2, inverse_amplitude_lut(load_response(cal / "slm0.cal.json")))
    reg = load_registration(cal / "registration.json")
    cam = load_bench(MISALIGNED).camera.resolution
    regions = [list(r) for r in camera_regions(reg, g.regions, [0, 0, cam[0], cam[1]])]
    out.mkdir(parents=True, exist_ok=True)
    return InSituTrainer(build_model(loaded, None, o.margin), session, enc.encode, regions,
                         {s.name: 2 for s in cfg.layer_slms}, [s.name for s in cfg.layer_slms], o, out,
                         echo=lambda s: None), client


@pytest.mark.slow
def test_in_situ_steps_lower_the_captured_loss_and_resume_from_the_checkpoint(setup, tmp_path):
    from labctl.hil.insitu import physics_aware_loss
    from sims.data import load_dataset

    torch.manual_seed(0)
    data = load_dataset("mnist-5k")
    idx = np.arange(0, 4000, 250)  # 16 images, every class
    images, labels = data.train_images[idx], data.train_labels[idx]
    server = ThreadServer(load_bench(MISALIGNED))
    try:
        trainer, client = _trainer(setup, server, tmp_path / "a", lr=0.3, margin=0.3, images=16, batch_size=16,
                                   epochs=8)

        def captured_loss() -> float:
            trainer.session.show_layers(trainer.maps())
            trainer._shown = None
            bench = torch.from_numpy(trainer.session.scores(trainer.encode(images), trainer.regions_camera))
            y = torch.from_numpy(labels.astype(np.int64))
            return float(physics_aware_loss(bench.float(), bench, y, 10.0))

        with trainer.session:
            before = captured_loss()
            for _ in range(6):
                trainer.train_step(images, labels)
            after = captured_loss()
            assert after < before - 0.02, (before, after)
            frames = trainer.session.frames
            assert frames >= 6 * 16 + 2 * 16

            # resumable: a run stopped after its checkpoint continues at the next step, same state
            trainer.options = trainer.options.__class__(**{**trainer.options.__dict__, "epochs": 1})
            trainer.run(data.train_images, data.train_labels)
            saved = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        client.close()
        again, client2 = _trainer(setup, server, tmp_path / "a", lr=0.3, margin=0.3, images=16, batch_size=16,
                                  epochs=1)
        assert again.load()
        assert (again.epoch, again.step) == (1, 0) and len(again.history) == 1
        for k, v in again.model.state_dict().items():
            assert torch.equal(v, saved[k])
        assert again.session.frames == trainer.session.frames
        client2.close()
    finally:
        server.close()


@pytest.mark.slow
def test_cli_in_situ_survives_a_killed_and_restarted_server(setup, tmp_path, capsys):
    root, cal, model_dir = setup
    serve = ServeProcess(MISALIGNED)
    out = tmp_path / "models"
    args = ["train", "--bench", str(MISALIGNED), *[x for s in ("slm1", "slm2", "slm3")
                                                   for x in ("--calibration", str(cal / f"{s}.cal.json"))],
            "--in-situ", serve.endpoint, "--init", str(model_dir), "--images", "80", "--batch-size", "8",
            "--epochs", "1", "--out", str(out), "--name", "hil", "--threads", "1"]
    import threading

    result: dict = {}
    t = threading.Thread(target=lambda: result.setdefault("code", main(args)))
    t.start()
    ckpt = out / "hil" / "insitu.pt"
    try:
        deadline = time.monotonic() + 300
        while not ckpt.is_file():
            assert time.monotonic() < deadline and t.is_alive(), "no checkpoint written"
            time.sleep(0.2)
        first = serve.server_id
        serve.kill()
        serve = ServeProcess(MISALIGNED, serve.endpoint)
        assert serve.server_id != first
        t.join(timeout=600)
        assert result.get("code") == 0, capsys.readouterr().err
    finally:
        serve.kill()
    import json

    meta = json.loads((out / "hil" / "model.json").read_text())
    assert meta["training"]["method"] == "in-situ"
    assert meta["training"]["server_restarts"] >= 1
    assert len(meta["training"]["history"]) == 10
    assert "restarted" in capsys.readouterr().err


@pytest.mark.slow
def test_in_situ_bad_inputs_are_one_line_errors(setup, tmp_path, capsys):
    root, cal, model_dir = setup
    base = ["train", "--bench", str(MISALIGNED), "--calibration", str(cal / "slm1.cal.json"), "--out", str(tmp_path)]
    assert main([*base, "--in-situ", "tcp://127.0.0.1:1"]) == 2
    assert "--init" in capsys.readouterr().err
    assert main(["train", "--in-situ", "tcp://127.0.0.1:1", "--init", str(model_dir)]) == 2
    assert "--bench" in capsys.readouterr().err
    assert main([*base, "--in-situ", "tcp://127.0.0.1:1", "--init", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err
    assert main([*base, "--images", "5"]) == 2
    assert "--in-situ" in capsys.readouterr().err
