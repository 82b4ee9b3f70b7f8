"""Options shared by subcommands, spelled the same everywhere (DESIGN §7)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import click

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"


def bench_option(required: bool = False) -> Callable:
    return click.option(
        "--bench",
        "bench",
        metavar="FILE|sim",
        default=None if required else "sim",
        required=required,
        show_default=not required,
        help="Bench file (TOML) naming the devices, or `sim` for the shipped simulated bench.",
    )


def out_option(default: str, help_: str = "Where artifacts go.") -> Callable:
    return click.option(
        "--out", "out", type=click.Path(file_okay=False, path_type=Path), default=default, show_default=True, help=help_
    )


def endpoint_option() -> Callable:
    return click.option(
        "--endpoint",
        "endpoint",
        metavar="ADDR",
        default=DEFAULT_ENDPOINT,
        show_default=True,
        help="Address of a bench server (`labctl serve`).",
    )


def seed_option(default: int = 0) -> Callable:
    return click.option("--seed", "seed", type=int, default=default, show_default=True, help="Random seed.")
