"""``labctl compare RUN``: (re)write the bench-vs-twin report of a deploy run from its records."""

from __future__ import annotations

import json
from pathlib import Path

import click

from labctl.errors import UsageError


@click.command(help="Write RUN/report.md (+ report.json and PNG plots) from RUN/records.jsonl: accuracy captured "
                    "vs twin, agreement, confusion matrices, score correlation, example frames.")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def compare(run: Path, as_json: bool) -> None:
    from labctl.deploy.records import RunDir
    from labctl.deploy.report import write_report

    if not run.is_dir():
        raise UsageError(f"{run}: no such run folder (expected runs/<id> from `labctl deploy`)")
    summary = write_report(RunDir(run))
    m = summary["metrics"]
    if as_json:
        click.echo(json.dumps({k: v for k, v in m.items() if not k.startswith("confusion")}, indent=2))
        return
    r = "n/a" if m["pearson_r"] is None else f"{m['pearson_r']:.4f}"
    click.echo(f"{run}: {m['images']} images; accuracy captured {m['accuracy_captured']:.4f}, twin "
               f"{m['accuracy_twin']:.4f}; agreement {m['agreement']:.4f}; Pearson r {r}")
    click.echo(f"report: {summary['report']}")
