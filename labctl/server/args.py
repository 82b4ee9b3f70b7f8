"""Checking an operation's arguments: one clear ``bad_args`` error per mistake.

Works like the bench-config reader: every key is read through a check that says
what was expected, and keys nobody read are refused, so a typo such as
``exposure_ms`` is an error instead of a silently ignored option.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from labctl.protocol import BAD_ARGS, BAD_BUFFER, WireError

_MISSING = object()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Args:
    def __init__(self, op: str, args: dict[str, Any], buffers: Sequence[np.ndarray]):
        self.op = op
        self.data = args
        self.buffers = list(buffers)
        self.seen: set[str] = set()

    def fail(self, message: str, code: str = BAD_ARGS) -> WireError:
        return WireError(code, f"{self.op}: {message}")

    def get(self, key: str, check: Callable[[Any], Any], expected: str, default: Any = _MISSING) -> Any:
        self.seen.add(key)
        if key not in self.data or self.data[key] is None and default is not _MISSING:
            if default is _MISSING:
                raise self.fail(f"missing argument {key!r} (expected {expected})")
            return default
        value = self.data[key]
        try:
            return check(value)
        except (TypeError, ValueError):
            raise self.fail(f"argument {key!r}: expected {expected}, got {_short(value)}") from None

    def finish(self, n_buffers: int | None = 0) -> None:
        """Refuse unknown keys and, when ``n_buffers`` is given, a different number of buffers."""
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            known = ", ".join(sorted(self.seen)) or "none"
            raise self.fail(f"unknown argument {unknown[0]!r} (known: {known})")
        if n_buffers is not None and len(self.buffers) != n_buffers:
            raise self.fail(f"expected {n_buffers} buffer(s), got {len(self.buffers)}", BAD_BUFFER)


def number(lo: float | None = None, hi: float | None = None, *, open_lo: bool = False) -> Callable[[Any], float]:
    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError
        if lo is not None and (v < lo or (open_lo and v == lo)):
            raise ValueError
        if hi is not None and v > hi:
            raise ValueError
        return float(v)

    return check


def integer(lo: int | None = None, hi: int | None = None) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise ValueError
        return v

    return check


def boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError
    return v


def string(v: Any) -> str:
    if not isinstance(v, str) or not v or len(v) > 256:
        raise ValueError
    return v


def choice(*options: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if v not in options:
            raise ValueError
        return v

    return check


def string_list(v: Any) -> list[str]:
    if not isinstance(v, list) or not v:
        raise ValueError
    return [string(x) for x in v]


def rects(v: Any) -> list[tuple[int, int, int, int]]:
    """A list of [row, col, h, w] rectangles with non-negative integers and h, w >= 1."""
    if not isinstance(v, list) or not v or len(v) > 1024:
        raise ValueError
    out = []
    for r in v:
        if not isinstance(r, list) or len(r) != 4:
            raise ValueError
        row, col, h, w = (integer(0)(x) for x in r)
        if h < 1 or w < 1:
            raise ValueError
        out.append((row, col, h, w))
    return out
