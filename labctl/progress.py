"""The one progress-bar helper every long command uses.

Bars go to stderr and are off when stdout is not a terminal, so logs and pipes get
clean output (DESIGN §7).
"""

from __future__ import annotations

import sys
from typing import Iterable, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def interactive() -> bool:
    return sys.stdout.isatty()


def progress(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             leave: bool = True, enabled: bool | None = None) -> tqdm:
    """A tqdm bar (disabled when stdout is not a TTY unless ``enabled`` says otherwise)."""
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        leave=leave,
        file=sys.stderr,
        disable=not (interactive() if enabled is None else enabled),
        dynamic_ncols=True,
    )
