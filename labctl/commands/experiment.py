"""``labctl experiment GRID.toml``: run a comparison grid and write its tables and plots.

The grid file holds one ``[experiment]`` table (keys in docs/methods.md). Cells run in
worker processes (``--engine local``) or as jobs of submitit (``--engine submitit``:
SLURM when the cluster has it, local processes otherwise). Finished cells are never
rerun, so the same command resumes a killed grid. Output in ``--out`` (default
``experiments/results/<name>``): ``cells/*.json``, ``results.csv``, ``results.md`` and
``*.png``.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import tomllib
from pathlib import Path
from typing import Callable

import click

from labctl.errors import ConfigError, LabctlError, UsageError
from labctl.progress import progress

ENGINES = ("local", "submitit")


def load_grid(path: Path):
    from sims.errors import SimulationError
    from sims.experiment import grid_from_dict

    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: grid file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read grid file ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    if set(data) != {"experiment"} or not isinstance(data["experiment"], dict):
        raise ConfigError(f"{path}: a grid file holds exactly one [experiment] table")
    try:
        return grid_from_dict(data["experiment"], base_dir=path.parent)
    except SimulationError as e:
        raise ConfigError(f"{path}: {e}") from None


def _run(args: tuple) -> dict:
    from sims.experiment import run_cell

    grid, cell, out, threads = args
    return run_cell(grid, cell, out, threads=threads)


def run_local(grid, cells: list[dict], out: Path, workers: int, threads: int,
              on_done: Callable[[dict], None]) -> None:
    """One process per worker; a cell failing stops the grid with its error."""
    if workers == 1:
        for cell in cells:
            on_done(_run((grid, cell, out, threads)))
        return
    ctx = multiprocessing.get_context("spawn")  # no forked torch thread pools
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [pool.submit(_run, (grid, cell, out, threads)) for cell in cells]
        try:
            for fut in cf.as_completed(futures):
                on_done(fut.result())
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


def submitit_executor(folder: Path, cluster: str | None, workers: int, timeout_min: int):
    try:
        import submitit
    except ImportError:
        raise UsageError("--engine submitit needs the 'submitit' package: pip install 'labctl[cluster]'") from None
    if cluster == "debug":
        executor = submitit.DebugExecutor(folder=str(folder))
    elif cluster == "local":
        executor = submitit.LocalExecutor(folder=str(folder))
        executor.update_parameters(timeout_min=timeout_min)
    else:
        executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        executor.update_parameters(timeout_min=timeout_min, cpus_per_task=1, tasks_per_node=1,
                                   slurm_array_parallelism=workers)
    return executor


def run_submitit(grid, cells: list[dict], out: Path, workers: int, threads: int, on_done: Callable[[dict], None],
                 *, cluster: str | None = None, timeout_min: int = 120) -> None:
    """Submit one job per cell and wait for all; each job writes its own cell file, so a
    grid resumed after a failure reruns only the missing cells."""
    executor = submitit_executor(out / "submitit", cluster, workers, timeout_min)
    args = [(grid, cell, out, threads) for cell in cells]
    if getattr(executor, "cluster", cluster) == "local":
        jobs = []
        # the local executor runs every job at once: submit in waves of `workers`
        for i in range(0, len(args), workers):
            wave = [executor.submit(_run, a) for a in args[i:i + workers]]
            for job in wave:
                on_done(_result(job))
            jobs += wave
        return
    jobs = [executor.submit(_run, a) for a in args]
    for job in jobs:
        on_done(_result(job))


def _result(job) -> dict:
    """A job's row; a failed job is one error line naming the cell."""
    try:
        return job.result()
    except LabctlError:
        raise
    except Exception as e:  # noqa: BLE001 - submitit wraps the cell's own error
        from sims.errors import SimulationError

        if isinstance(e, SimulationError):
            raise
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        raise LabctlError(f"submitit job {job.job_id} failed: {lines[-1] if lines else type(e).__name__}") from None


def write_plots(out: Path, grid) -> list[Path]:
    """Accuracy (or SSIM) against levels per method and depth; α0 sweep for fc grids."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sims.experiment import collect, metric_names, summarize

    rows = collect(out)
    if not rows:
        return []
    metric = "ssim" if grid.kind == "qpi" else "test_accuracy"
    summary = summarize(rows, metric_names(rows))
    paths = []
    if grid.kind == "fc":
        fig, ax = plt.subplots(figsize=(5, 3.5))
        sa = [s for s in summary if s["activation"] in ("sa", "sa-exact")]
        for act in sorted({s["activation"] for s in sa}):
            pts = sorted((s["alpha0"], s[metric], s[metric + "_std"]) for s in sa if s["activation"] == act)
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[0 if p[2] != p[2] else p[2] for p in pts],
                        marker="o", capsize=3, label=act)
        for s in summary:
            if s["activation"] not in ("sa", "sa-exact"):
                ax.axhline(s[metric], linestyle="--", color="k" if s["activation"] == "relu" else "gray",
                           label=s["activation"])
        ax.set_xscale("log")
        ax.set_xlabel("optical depth α0")
        ax.set_ylabel("test accuracy")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / "fc_alpha.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return [path]
    if len({s["levels"] for s in summary}) == 1 and len({s["depth"] for s in summary}) > 1:
        return _plot_against_depth(out, summary, metric, plt)
    for device in sorted({s["device"] for s in summary}):
        depths = sorted({s["depth"] for s in summary if s["device"] == device})
        fig, axes = plt.subplots(1, len(depths), figsize=(4 * len(depths), 3.5), squeeze=False)
        for ax, depth in zip(axes[0], depths):
            sel = [s for s in summary if s["device"] == device and s["depth"] == depth]
            for i, method in enumerate(dict.fromkeys(s["method"] for s in sel)):
                pts = sorted((s["levels"], s[metric], s[metric + "_std"]) for s in sel if s["method"] == method)
                ax.errorbar([p[0] for p in pts], [p[1] for p in pts],
                            yerr=[0 if p[2] != p[2] else p[2] for p in pts], capsize=3, label=method, **_style(i))
            ax.set_xscale("log", base=2)
            ax.set_xlabel("levels K")
            ax.set_ylabel(metric.replace("_", " "))
            ax.set_title(f"{device}, depth {depth}")
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        path = out / f"{metric}_{device}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def _claim_folder(out: Path, grid) -> None:
    """Record the grid in ``out/grid.json``; refuse a folder whose cells came from another grid,
    since a finished cell is never rerun and would silently mix settings."""
    import json

    from sims.io import write_json_atomic

    path = out / "grid.json"
    current = json.loads(json.dumps(grid.to_json()))
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            previous = None
        if previous != current:
            changed = sorted(k for k in set(current) | set(previous or {})
                             if (previous or {}).get(k) != current.get(k))
            raise UsageError(f"{out} holds cells of a different grid (changed: {', '.join(changed)}); "
                             "use another --out or delete the folder")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, current)


def _style(i: int) -> dict:
    """Line style of the i-th series: the ten tab10 colours, then again with another
    marker and dashes, so the zoo's eleven methods stay apart."""
    return {"color": f"C{i % 10}", "marker": "os^D"[i // 10 % 4], "linestyle": ("-", "--")[i // 10 % 2]}


def _plot_against_depth(out: Path, summary: list[dict], metric: str, plt) -> list[Path]:
    """One level count: the metric against depth, one line per method and device."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for i, (method, device) in enumerate(dict.fromkeys((s["method"], s["device"]) for s in summary)):
        pts = sorted((s["depth"], s[metric], s[metric + "_std"]) for s in summary
                     if s["method"] == method and s["device"] == device)
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[0 if p[2] != p[2] else p[2] for p in pts],
                    capsize=3, label=f"{method} ({device})", **_style(i))
    ax.set_xlabel("depth D (layers)")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(f"{summary[0]['levels']} levels")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / f"{metric}_by_depth.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]


@click.command(help=__doc__.split("\n\n")[0])
@click.argument("grid_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--out", "out", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Result folder (default experiments/results/<grid name>).")
@click.option("--workers", type=int, default=2, show_default=True, help="Cells run at the same time.")
@click.option("--threads", type=int, default=1, show_default=True, help="Torch threads per cell.")
@click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
              help="local: worker processes here; submitit: one job per cell.")
@click.option("--cluster", default=None,
              help="submitit cluster: slurm, local, debug (default: SLURM if available, else local).")
@click.option("--timeout-min", type=int, default=120, show_default=True, help="submitit job time limit.")
@click.option("--only", multiple=True, help="Run only the cells whose id contains this text (repeatable).")
@click.option("--dry-run", is_flag=True, help="List the cells still to run and exit.")
def experiment(grid_file: Path, out: Path | None, workers: int, threads: int, engine: str, cluster: str | None,
               timeout_min: int, only: tuple[str, ...], dry_run: bool) -> None:
    from sims.experiment import done, plan, write_reports

    if workers < 1 or threads < 0:
        raise UsageError("--workers must be >= 1 and --threads >= 0")
    grid = load_grid(grid_file)
    out = out if out is not None else Path("experiments") / "results" / grid.name
    phases = plan(grid)
    if only:
        keep = lambda c: c.get("base") or any(o in c["id"] for o in only)  # noqa: E731
        phases = [[c for c in ph if keep(c)] for ph in phases]
    todo = [[c for c in ph if not done(out, c)] for ph in phases]
    total = sum(len(ph) for ph in phases)
    remaining = sum(len(ph) for ph in todo)
    click.echo(f"{grid.name}: {total} cells, {total - remaining} already done, {remaining} to run -> {out}")
    if dry_run:
        for ph in todo:
            for c in ph:
                click.echo(c["id"])
        return
    _claim_folder(out, grid)
    bar = progress(total=remaining, desc=grid.name, unit="cell")

    def on_done(row: dict) -> None:
        bar.update(1)
        bar.set_postfix_str(row["id"])
        if not bar.disable:
            return
        click.echo(f"done {row['id']} ({row.get('seconds', 0):.0f} s)")

    try:
        for ph in todo:
            if not ph:
                continue
            if engine == "local":
                run_local(grid, ph, out, workers, threads, on_done)
            else:
                run_submitit(grid, ph, out, workers, threads, on_done, cluster=cluster, timeout_min=timeout_min)
    finally:
        bar.close()
        paths = write_reports(out, grid)
    plots = write_plots(out, grid)
    click.echo(f"wrote {paths['csv']}, {paths['markdown']}" + "".join(f", {p}" for p in plots))


