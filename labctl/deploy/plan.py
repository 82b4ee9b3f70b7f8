"""Everything a deploy decides before it talks to a bench server.

``make_plan`` reads the model, the bench file, the calibrations and the test split,
checks that they fit together (``checks``) and builds the input encoder and the twin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calibration.errors import CalibrationError
from calibration.registration import Registration, load_registration
from labctl.config import BenchConfig, load_bench
from labctl.deploy.checks import LayerPlan, calibration_file, plan_layers, registration_file, sha256_file
from labctl.deploy.encode import InputEncoder, inverse_amplitude_lut
from labctl.errors import ConfigError, UsageError
from sims.artifact import LAYERS_FILE, MODEL_FILE, LoadedModel, load_model
from sims.device import load_response
from sims.errors import DataError

DATASET = "mnist-5k"


@dataclass
class Plan:
    model: LoadedModel
    model_name: str
    model_sha256: str  # of layers.npz: what the SLMs show
    model_json_sha256: str
    bench: BenchConfig
    cal_dir: Path
    layers: list[LayerPlan]
    problems: list[str]
    encoder: InputEncoder
    input_calibration: dict[str, str]
    registration: Registration
    registration_file: dict[str, str]
    images: np.ndarray  # uint8 (n, 28, 28): the images to run, in order
    labels: np.ndarray  # int64 (n,)
    dataset_indices: np.ndarray  # index of each image in the dataset
    twin: Any = field(default=None, repr=False)  # sims DONN built from the artifact

    @property
    def total(self) -> int:
        return int(len(self.labels))

    @property
    def maps(self) -> dict[str, np.ndarray]:
        return {lp.slm: lp.gray_map for lp in self.layers}


def model_hashes(folder: Path) -> tuple[str, str]:
    """(sha256 of layers.npz, sha256 of model.json)."""
    return sha256_file(folder / LAYERS_FILE), sha256_file(folder / MODEL_FILE)


def test_split(limit: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The embedded mnist-5k test split (index % 5 == 4), or ``limit`` images of it
    spread evenly over the split (it is sorted by class, so the first ``limit`` would
    hold one or two digits only). Returns images, labels and dataset indices."""
    from sims.data import load_dataset

    data = load_dataset(DATASET)
    n = len(data.test_labels)
    count = n if limit is None else min(limit, n)
    positions = np.arange(count) * n // count
    indices = positions * 5 + 4  # the split is fixed by DESIGN §5
    return data.test_images[positions], data.test_labels[positions], indices


def make_plan(model_dir: str | Path, bench_spec: str | Path, cal_dir: str | Path, limit: int | None) -> Plan:
    model_dir = Path(model_dir)
    if model_dir.name == MODEL_FILE:
        model_dir = model_dir.parent
    if not model_dir.exists():
        raise UsageError(f"{model_dir}: no such model folder (expected model.json + layers.npz from `labctl train`)")
    try:
        model = load_model(model_dir)
    except DataError as e:
        raise UsageError(str(e)) from None
    bench = load_bench(bench_spec)
    cal_dir = Path(cal_dir)
    if not cal_dir.is_dir():
        raise ConfigError(f"{cal_dir}: no calibrations folder; run `labctl calibrate` for bench {bench.name!r} "
                          "or give --calibrations DIR")
    layers, problems = plan_layers(model, bench, cal_dir)

    input_slm = bench.input_slm
    input_cal = calibration_file(cal_dir, input_slm.name)
    if not input_cal.is_file():
        raise ConfigError(f"{input_cal}: no calibration of the input SLM {input_slm.name!r}; it is needed to encode "
                          "digits in amplitude (run `labctl calibrate` on it)")
    try:
        response = load_response(input_cal)
    except DataError as e:
        raise ConfigError(str(e)) from None
    geo = model.geometry
    encoder = InputEncoder(geo.size, geo.input_size, input_slm.upsample, inverse_amplitude_lut(response))
    if encoder.map_shape != (input_slm.roi[3], input_slm.roi[2]):
        raise ConfigError(f"input maps would be {encoder.map_shape} but SLM {input_slm.name}'s ROI is "
                          f"{(input_slm.roi[3], input_slm.roi[2])}")

    reg_path = registration_file(cal_dir, bench.name)
    try:
        registration = load_registration(reg_path)
    except CalibrationError as e:
        raise ConfigError(str(e)) from None
    if tuple(registration.neurons) != (geo.size, geo.size):
        raise ConfigError(f"{reg_path}: registered for {registration.neurons[0]}x{registration.neurons[1]} neurons, "
                          f"the model has {geo.size}x{geo.size}")

    images, labels, indices = test_split(limit)
    layers_sha, json_sha = model_hashes(model_dir)
    return Plan(
        model=model, model_name=model_dir.resolve().name, model_sha256=layers_sha, model_json_sha256=json_sha,
        bench=bench, cal_dir=cal_dir, layers=layers, problems=problems, encoder=encoder,
        input_calibration={"file": str(input_cal), "sha256": sha256_file(input_cal)},
        registration=registration, registration_file={"file": str(reg_path), "sha256": sha256_file(reg_path)},
        images=images, labels=labels, dataset_indices=indices,
    )


def build_twin(plan: Plan) -> Any:
    """The model as the twin re-simulates it from its two artifact files alone."""
    from sims.train import model_from_layers

    m = plan.model
    model = model_from_layers(m.geometry, m.gray, m.transmission, m.levels)
    # A model trained on a refined twin (`labctl train --twin`) is predicted with it.
    from labctl.hil.twin import model_twin

    corrections = model_twin(m.meta)
    if corrections is not None:
        from sims.refine import apply_twin

        apply_twin(model, corrections)
    return model


def twin_scores(twin: Any, images: np.ndarray) -> np.ndarray:
    """float64 ``(n, C)``: detector scores the twin predicts (|E|² summed per region)."""
    from sims.train import predict_scores

    return predict_scores(twin, np.ascontiguousarray(images)).numpy().astype(np.float64)
