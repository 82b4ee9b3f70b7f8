"""``labctl deploy MODEL``: show a trained model on the bench, run the test digits, compare with the twin.

See docs/deploy.md. The run folder (``--out``/<id>) gets run.json, records.jsonl
(one line per image, fsynced), example frames and the report of ``labctl compare``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from labctl.commands.status import client_keys_options
from labctl.errors import ConfigError, UsageError
from labctl.options import bench_option, endpoint_option, out_option


@click.command(help="Put a trained model on the bench (via `labctl serve`), run the mnist-5k test split through "
                    "it while the twin predicts the same digits, and write runs/<id>/ with the comparison report.")
@click.argument("model", required=False, type=click.Path(path_type=Path))
@endpoint_option()
@client_keys_options
@bench_option()
@click.option("--calibrations", "cal_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("calibrations"),
              show_default=True, help="The bench's calibrations: <slm>.cal.json per SLM and the camera registration.")
@out_option("runs", "Folder that receives the run folder.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Run N test images, spread evenly over the split (default: all 1,000).")
@click.option("--resume", "resume", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Continue the run in this folder where it stopped (MODEL may be omitted).")
@click.option("--force", is_flag=True, help="Deploy even if the model's calibrations or geometry differ from the bench's.")
@click.option("--exposure", "exposure_s", type=click.FloatRange(min=0, min_open=True, max=60), default=None,
              help="Camera exposure in seconds (default: chosen so no probe digit saturates).")
@click.option("--batch", type=click.IntRange(1, 1000), default=32, show_default=True, help="Images per bench job.")
@click.option("--reconnect-timeout", "reconnect_s", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds to wait for a bench server that went away before giving up (resume later).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds to wait for each server reply.")
def deploy(model: Path | None, endpoint: str, keys_dir: Path | None, key_name: str, bench: str, cal_dir: Path,
           out: Path, limit: int | None, resume: Path | None, force: bool, exposure_s: float | None, batch: int,
           reconnect_s: float, timeout_s: float) -> None:
    import torch

    from labctl.client import BenchClient
    from labctl.deploy.plan import make_plan, model_hashes
    from labctl.deploy.records import RUN_SCHEMA, RunDir, new_run_id, utc_now
    from labctl.deploy.report import write_report
    from labctl.deploy.runner import DeployOptions, Deployment
    from labctl.progress import progress
    from labctl.server.security import load_client_keys
    from sims.artifact import software_version

    # The twin shares the CPU with the bench server; one thread avoids the two fighting.
    torch.set_num_threads(1)
    if resume is not None:
        run = RunDir(resume)
        meta = run.read_meta()
        stored = meta["model"]
        model = model or Path(stored["path"])
        if not model.exists():
            raise UsageError(f"{model}: the run's model folder is gone; give MODEL")
        if model_hashes(model)[0] != stored["sha256"]:
            raise UsageError(f"{model}: its layers.npz is not the one this run deployed (sha256 {stored['sha256'][:12]}…)")
        plan = make_plan(model, meta["bench"]["spec"], Path(meta["calibrations"]["dir"]), meta["limit"])
        force = force or bool(meta.get("forced"))
        done = len(run.load_records().records)
        if meta.get("status") == "done" and done >= plan.total:
            click.echo(f"{run.path}: run already complete ({done} images)", err=True)
            _finish(run, write_report(run))
            return
        _check_problems(plan, force)
        click.echo(f"{run.path}: resuming, {done}/{plan.total} images already recorded", err=True)
    else:
        if model is None:
            raise UsageError("give MODEL (a folder from `labctl train`) or --resume RUN_DIR")
        plan = make_plan(model, bench, cal_dir, limit)
        _check_problems(plan, force)
        run = RunDir(_fresh(out, new_run_id(plan.model_name)))
        meta = _new_meta(plan, bench, cal_dir, limit, force, endpoint, RUN_SCHEMA, utc_now(), software_version())
    meta["forced"] = bool(meta.get("forced") or (force and plan.problems))
    meta["problems"] = plan.problems
    meta["endpoint"] = endpoint
    keys = load_client_keys(keys_dir, key_name) if keys_dir is not None else None
    options = DeployOptions(batch=batch, reconnect_s=reconnect_s, exposure_s=exposure_s, timeout_s=timeout_s)
    bar = progress(total=plan.total, desc=f"deploy {plan.model_name}", unit="img")
    try:
        with BenchClient(endpoint, timeout_s=timeout_s, keys=keys) as client:
            Deployment(plan, run, meta, client, options, echo=lambda s: click.echo(s, err=True),
                       progress=bar).execute()
    finally:
        bar.close()
    _finish(run, write_report(run))


def _check_problems(plan: Any, force: bool) -> None:
    if not plan.problems:
        return
    lines = "; ".join(plan.problems)
    if not force:
        raise ConfigError(f"the model does not match bench {plan.bench.name!r}: {lines} "
                          "(recalibrated SLMs make it a different network; retrain, or --force)")
    click.echo(f"labctl deploy: warning: deploying anyway (--force): {lines}", err=True)


def _fresh(out: Path, run_id: str) -> Path:
    path, k = out / run_id, 1
    while path.exists():
        k += 1
        path = out / f"{run_id}-{k}"
    path.mkdir(parents=True)
    return path


def _new_meta(plan: Any, bench: str, cal_dir: Path, limit: int | None, force: bool, endpoint: str, schema: str,
              now: str, version: str) -> dict[str, Any]:
    bench_spec = bench if not Path(bench).exists() else str(Path(bench).resolve())
    return {
        "schema": schema,
        "model": {"name": plan.model_name, "path": str(plan.model.path.resolve()), "sha256": plan.model_sha256,
                  "model_json_sha256": plan.model_json_sha256,
                  "twin_test_accuracy": (plan.model.meta.get("metrics") or {}).get("test_accuracy")},
        "bench": {"spec": bench_spec, "name": plan.bench.name, "file": str(plan.bench.path),
                  "sha256": plan.bench.sha256},
        "calibrations": {
            "dir": str(cal_dir.resolve()),
            "layers": {lp.slm: {"file": lp.calibration, "sha256": lp.calibration_sha256,
                                "model_sha256": lp.model_sha256} for lp in plan.layers},
            "input": plan.input_calibration,
            "registration": plan.registration_file,
        },
        "dataset": {"name": "mnist-5k", "split": "test (index % 5 == 4)", "images": plan.total},
        "limit": limit,
        "layers": [lp.slm for lp in plan.layers],
        "input_slm": plan.bench.input_slm.name,
        "endpoint": endpoint,
        "forced": bool(force and plan.problems),
        "started": now,
        "ended": None,
        "status": "created",
        "software": {"name": "labctl", "version": version},
    }


def _finish(run: Any, summary: dict[str, Any]) -> None:
    m = summary["metrics"]
    r = "n/a" if m["pearson_r"] is None else f"{m['pearson_r']:.4f}"
    click.echo(f"{run.path}: {m['images']} images; accuracy captured {m['accuracy_captured']:.4f}, "
               f"twin {m['accuracy_twin']:.4f}; agreement {m['agreement']:.4f}; Pearson r {r}")
    click.echo(f"report: {summary['report']}")
