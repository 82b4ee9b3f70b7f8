"""``labctl train``: train a DONN on measured SLM levels and write its model artifact.

Settings come from defaults, then an optional TOML file (``--config``, a ``[train]``
table whose keys are the long option names with ``_`` for ``-``), then the flags.
See docs/twin.md.
"""

from __future__ import annotations

import dataclasses
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import click

from labctl.errors import ConfigError, UsageError

DEFAULTS: dict[str, Any] = {
    "preset": None,
    "bench": None,
    "calibration": (),
    "ideal": False,
    "levels": 8,
    "method": "gs",
    "epochs": 22,
    "lr": None,  # per method: LR_DEFAULTS
    "lr_schedule": "cosine",
    "batch_size": 16,
    "loss": "ce",
    "schedule": "linear",
    "tau_start": 5.0,
    "tau_end": 0.5,
    "tau_rate": None,
    "init_std": 1.0,
    "softmax_scale": 50.0,
    "augment_shift": 1.5,
    "label_smoothing": 0.1,
    "average": 0.5,
    "input_size": None,
    "dataset": "mnist-5k",
    "data_dir": None,
    "download": False,
    "name": None,
    "out": "models",
    "seed": 0,
    "threads": 0,
}

_TYPES: dict[str, tuple[type, ...]] = {
    "preset": (str,), "bench": (str,), "calibration": (str, list), "ideal": (bool,), "levels": (int,),
    "method": (str,), "epochs": (int,), "lr": (int, float), "lr_schedule": (str,), "batch_size": (int,),
    "loss": (str,),
    "schedule": (str,), "tau_start": (int, float), "tau_end": (int, float), "tau_rate": (int, float),
    "init_std": (int, float), "softmax_scale": (int, float), "augment_shift": (int, float),
    "label_smoothing": (int, float), "average": (int, float), "input_size": (int,),
    "dataset": (str,), "data_dir": (str,), "download": (bool,), "name": (str,), "out": (str,), "seed": (int,),
    "threads": (int,),
}


# Tuned on the bench preset within a 10-minute CPU budget (docs/results.md): logits
# need bigger steps than phases.
LR_DEFAULTS = {"gs": 0.3, "full": 0.1}


def shipped_response() -> Path:
    """The default device: the shipped measured-like response of the simulated bench's layer SLM."""
    return Path(str(resources.files("labctl") / "benches" / "layer_a.response.json"))


def read_config(path: Path) -> dict[str, Any]:
    """The ``[train]`` table of a TOML file, with types checked and unknown keys refused."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: training config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read training config ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    table = data.get("train")
    if not isinstance(table, dict) or set(data) - {"train"}:
        raise ConfigError(f"{path}: expected exactly one table [train]")
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in _TYPES:
            raise ConfigError(f"{path}: [train] unknown key {key!r}; known keys: {', '.join(sorted(_TYPES))}")
        ok = _TYPES[key]
        if not isinstance(value, ok) or (isinstance(value, bool) and bool not in ok):
            names = " or ".join(t.__name__ for t in ok)
            raise ConfigError(f"{path}: [train] {key} must be {names}, got {value!r}")
        if key == "calibration":
            value = (value,) if isinstance(value, str) else tuple(value)
            if not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{path}: [train] calibration must be a path or a list of paths")
            value = tuple(str((path.parent / v) if not Path(v).is_absolute() else v) for v in value)
        out[key] = value
    return out


def _geometry(settings: dict[str, Any]):
    """(Geometry, SLM names per layer) from --bench or --preset (bench wins when both given)."""
    from sims.donn import Geometry, default_input_size, layout_regions, preset

    if settings["bench"]:
        from labctl.config import load_bench

        bench = load_bench(settings["bench"])
        rows, cols = bench.size
        if rows != cols:
            raise ConfigError(f"{bench.path}: the twin needs a square neuron grid, this bench gives {rows}x{cols}")
        region = max(rows // 10, 1)
        try:
            geo = Geometry(size=rows, pitch_m=bench.pitch_m, wavelength_m=bench.wavelength_m,
                           distances_m=tuple(bench.distances_m), regions=layout_regions(rows, region),
                           input_size=default_input_size(rows), method=bench.propagation, pad_factor=bench.pad_factor)
        except Exception as e:  # SimulationError / SamplingError: say which file
            raise ConfigError(f"{bench.path}: {e}") from None
        names = [s.name for s in bench.layer_slms]
    else:
        geo = preset(settings["preset"] or "bench")
        names = [f"layer{i}" for i in range(1, geo.layers + 1)]
    if settings["input_size"] is not None:
        geo = dataclasses.replace(geo, input_size=settings["input_size"])
    return geo, names


def _levels(settings: dict[str, Any], layers: int):
    from sims.device import ideal_levels, load_response, select_levels

    k = settings["levels"]
    if settings["ideal"]:
        if settings["calibration"]:
            raise UsageError("--ideal and --calibration exclude each other")
        return (ideal_levels(k),) * layers
    files = [Path(p) for p in settings["calibration"]] or [shipped_response()]
    if len(files) not in (1, layers):
        raise UsageError(f"give one --calibration for all layers or one per layer ({layers}), got {len(files)}")
    chosen = [select_levels(load_response(f), k) for f in files]
    return tuple(chosen) * layers if len(chosen) == 1 else tuple(chosen)


@click.command(help="Train a DONN whose pixels take only measured SLM levels; writes OUT/NAME/model.json + "
                    "layers.npz (DESIGN §5). Runs on the embedded MNIST subset by default.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file with a [train] table (keys = option names with _); flags override it.")
@click.option("--preset", type=click.Choice(["bench", "iccad22"]), default=None,
              help="Geometry preset (default: bench, the simulated bench).")
@click.option("--bench", "bench", metavar="FILE|sim", default=None,
              help="Take the geometry from a bench file (or `sim`) instead of a preset.")
@click.option("--calibration", "calibration", multiple=True, type=click.Path(dir_okay=False),
              help="Calibration or response JSON; once for all layers or once per layer "
                   "(default: the shipped labctl/benches/layer_a.response.json).")
@click.option("--ideal", is_flag=True, help="Use an ideal K-level phase-only device instead.")
@click.option("--levels", type=click.IntRange(2, 256), default=None, help="Levels K per SLM (default 8).")
@click.option("--method", type=click.Choice(["gs", "full"]), default=None,
              help="gs: Gumbel-Softmax on the measured levels; full: unconstrained phase reference.")
@click.option("--epochs", type=click.IntRange(1), default=None, help="Training epochs (default 22).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Adam learning rate (default 0.3 for gs, 0.1 for full).")
@click.option("--lr-schedule", type=click.Choice(["constant", "cosine"]), default=None,
              help="Learning-rate schedule: cosine decay to 0 over the run (default) or constant.")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Images per step (default 16).")
@click.option("--loss", type=click.Choice(["mse", "ce"]), default=None,
              help="mse on normalized detector scores (paper) or cross-entropy (default).")
@click.option("--schedule", type=click.Choice(["static", "linear", "cosine", "step"]), default=None,
              help="Gumbel-Softmax temperature schedule (default linear, 5 → 0.5 over the run).")
@click.option("--tau-start", type=click.FloatRange(min=0, min_open=True), default=None, help="First temperature.")
@click.option("--tau-end", type=click.FloatRange(min=0, min_open=True), default=None, help="Last temperature.")
@click.option("--tau-rate", type=click.FloatRange(min=0), default=None,
              help="Linear decay per epoch (paper: 0.5); default spans start→end over the run.")
@click.option("--softmax-scale", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Logits = scale · s/Σs for cross-entropy and the confidence study (default 50).")
@click.option("--augment-shift", type=click.FloatRange(0, 8), default=None,
              help="Move each training digit by a random sub-pixel amount, up to this many of its pixels along "
                   "each axis, per step (default 1.5; 0: off).")
@click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Cross-entropy toward (1-ε)·one-hot + ε/C instead of one-hot (default 0.1; 0: off).")
@click.option("--average", type=click.FloatRange(0, 1), default=None,
              help="Average the parameters of this last fraction of the run, every step, into the trained model "
                   "(default 0.5; 0: off).")
@click.option("--input-size", type=click.IntRange(1), default=None, help="Side of the resized input, neurons.")
@click.option("--dataset", type=click.Choice(["mnist-5k", "mnist", "fashion-mnist"]), default=None,
              help="Training data (default: the embedded mnist-5k).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder with the IDX files of mnist / fashion-mnist.")
@click.option("--download", is_flag=True,
              help="Download the IDX files into --data-dir first (checksums verified).")
@click.option("--name", default=None, help="Model name (folder under --out); default <preset>-<method>.")
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="Folder that receives the model folder (default: models).")
@click.option("--seed", "seed", type=int, default=None, help="Random seed (default 0).")
@click.option("--resume", is_flag=True, help="Continue from the last epoch checkpoint in the model folder.")
@click.option("--threads", type=click.IntRange(0), default=None, help="Torch CPU threads (0: torch default).")
@click.option("--twin", "twin_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Train on a refined twin (<bench>.twin.json from `labctl refine`); recorded in model.json.")
@click.option("--in-situ", "in_situ", metavar="ENDPOINT", default=None,
              help="Physics-aware training on the bench server at ENDPOINT: captured scores forward, the twin's "
                   "gradient backward (docs/hil.md). Needs --init and --bench.")
@click.option("--init", "init_model", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="With --in-situ: the trained model to start from.")
@click.option("--images", "insitu_images", type=click.IntRange(1), default=None,
              help="With --in-situ: training images per epoch (default 256); bench frames = epochs x images.")
def train(config_file: Path | None, resume: bool, twin_file: Path | None = None, in_situ: str | None = None,
          init_model: Path | None = None, insitu_images: int | None = None, **flags: Any) -> None:
    from labctl.progress import progress
    from sims.data import download, load_dataset
    from sims.quantizers.schedules import Schedule
    from sims.train import TrainConfig, confidence_study, predict_scores, train as run_training, write_artifact

    settings = dict(DEFAULTS)
    if config_file is not None:
        settings.update(read_config(config_file))
    for key, value in flags.items():
        # None / empty / False means "not given": the config file or the default stands
        if value is not None and value != () and value is not False:
            settings[key] = tuple(value) if key == "calibration" else value
    if settings["preset"] and settings["bench"]:
        raise UsageError("give either --preset or --bench, not both")
    geometry, slm_names = _geometry(settings)
    levels = _levels(settings, geometry.layers)
    if settings["dataset"] != "mnist-5k":
        folder = settings["data_dir"] or f"data/{settings['dataset']}"
        if settings["download"]:
            download(settings["dataset"], folder)
        data = load_dataset(settings["dataset"], folder)
    else:
        data = load_dataset("mnist-5k")
    config = TrainConfig(
        geometry=geometry, levels=levels, method=settings["method"], epochs=settings["epochs"],
        lr=settings["lr"] if settings["lr"] is not None else LR_DEFAULTS.get(settings["method"], 0.1),
        lr_schedule=settings["lr_schedule"], batch_size=settings["batch_size"], loss=settings["loss"],
        schedule=Schedule(settings["schedule"], start=settings["tau_start"], end=settings["tau_end"],
                          rate=settings["tau_rate"]),
        seed=settings["seed"], init_std=settings["init_std"], softmax_scale=settings["softmax_scale"],
        dataset=data.name, split=data.split, threads=settings["threads"], augment_shift=settings["augment_shift"],
        label_smoothing=settings["label_smoothing"], average=settings["average"])
    name = settings["name"] or f"{settings['preset'] or ('bench' if not settings['bench'] else 'custom')}-" \
                               f"{settings['method']}"
    folder = Path(settings["out"]) / name
    if in_situ is not None:
        from labctl.hil.insitu import train_in_situ_cli

        train_in_situ_cli(in_situ, settings, geometry, slm_names, data, folder, twin_file, init_model,
                          insitu_images, resume)
        return
    if init_model is not None or insitu_images is not None:
        raise UsageError("--init and --images belong to --in-situ training")
    init = None
    if twin_file is not None:
        from labctl.hil.twin import twin_init

        init = twin_init(twin_file, geometry)
    steps = (len(data.train_labels) + config.batch_size - 1) // config.batch_size
    bar = progress(total=config.epochs * steps, desc=f"train {name}", unit="step")
    last: dict[str, Any] = {}

    def on_step(info: dict) -> None:
        if bar.n == 0 and info["epoch"] > 0:
            bar.update(info["epoch"] * info["steps"])  # resumed
        bar.update(1)
        postfix = {"epoch": info["epoch"] + 1, "loss": f"{info['loss']:.4f}"}
        if info["tau"] is not None:
            postfix["tau"] = f"{info['tau']:.2f}"
        if "test_accuracy" in last:
            postfix["test_acc"] = f"{last['test_accuracy']:.3f}"
        bar.set_postfix(postfix, refresh=False)

    def on_epoch(record: dict) -> None:
        last.update(record)
        if not bar.disable:
            return
        averaged = f", averaged {record['test_accuracy_averaged']:.4f}" if "test_accuracy_averaged" in record else ""
        click.echo(f"epoch {record['epoch']}/{config.epochs}: loss {record['loss']:.4f}, "
                   f"test accuracy {record.get('test_accuracy', float('nan')):.4f}{averaged} "
                   f"({record['seconds']:.1f} s)", err=True)

    try:
        result = run_training(config, data, folder, resume=resume, on_step=on_step, on_epoch=on_epoch, init=init)
    finally:
        bar.close()
    scores = predict_scores(result.model, data.test_images)
    extra = {"confidence": confidence_study(scores, data.test_labels, softmax_scale=config.softmax_scale)}
    write_artifact(result, config, folder, data, slm_names=slm_names, extra_metrics=extra)
    if twin_file is not None:
        from labctl.hil.twin import record_twin

        record_twin(folder, twin_file)
    seconds = sum(h["seconds"] for h in result.history)
    cpu = sum(h.get("cpu_seconds", 0.0) for h in result.history)
    click.echo(f"{folder}: test accuracy {result.test_accuracy:.4f} on {len(data.test_labels)} {data.name} images "
               f"({'hard device levels' if config.method != 'full' else 'unconstrained phase'}), "
               f"{len(result.history)} epochs in {seconds:.0f} s ({cpu:.0f} s CPU)")
