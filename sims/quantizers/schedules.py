"""Temperature schedules for Gumbel-Softmax, as functions of the fractional epoch.

The paper's (ICCAD'22 §4.1) schedules start at τ=50 and end at τ=1 over 100 epochs:
static, linear (0.5 per epoch), cosine and step. Runs with other epoch counts keep
the shape: ``linear`` without an explicit rate spans start→end over the run, and
``step`` stretches its stage lengths to the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sims.errors import SimulationError

SCHEDULES = ("static", "linear", "cosine", "step")


@dataclass(frozen=True)
class Schedule:
    kind: str
    start: float = 50.0
    end: float = 1.0
    rate: float | None = None  # linear: τ drop per epoch; None = reach `end` at the last epoch
    stages: tuple[tuple[float, float], ...] = field(default=((50, 25), (40, 20), (30, 20), (20, 15), (10, 10),
                                                             (5, 5), (1, 5)))  # step: (τ, epochs) of the paper

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise SimulationError(f"unknown temperature schedule {self.kind!r}; expected one of {', '.join(SCHEDULES)}")
        if not (self.start > 0 and self.end > 0):
            raise SimulationError("temperatures must be > 0")
        if self.rate is not None and self.rate < 0:
            raise SimulationError("linear schedule rate must be >= 0 (τ per epoch)")

    def __call__(self, epoch: float, epochs: int) -> float:
        """τ at fractional ``epoch`` of a run of ``epochs`` epochs."""
        last = max(epochs - 1, 1)
        frac = min(max(epoch / last, 0.0), 1.0)
        if self.kind == "static":
            return self.start
        if self.kind == "linear":
            if self.rate is None:
                return self.start + (self.end - self.start) * frac
            return max(self.end, self.start - self.rate * epoch)
        if self.kind == "cosine":
            return self.end + (self.start - self.end) * 0.5 * (1 + math.cos(math.pi * frac))
        total = sum(n for _, n in self.stages)
        position = frac * total
        for tau, n in self.stages:
            if position < n:
                return float(tau)
            position -= n
        return float(self.stages[-1][0])

    def describe(self) -> dict:
        d: dict = {"kind": self.kind, "start": self.start, "end": self.end}
        if self.kind == "linear":
            d["rate_per_epoch"] = self.rate
        if self.kind == "step":
            d["stages"] = [list(s) for s in self.stages]
        if self.kind == "static":
            d = {"kind": "static", "tau": self.start}
        return d


def make_schedule(kind: str, start: float = 50.0, end: float = 1.0, rate: float | None = None) -> Schedule:
    """A schedule by name; ``rate`` only for ``linear`` (the paper uses 0.5 per epoch)."""
    return Schedule(kind=kind, start=start, end=end, rate=rate)
