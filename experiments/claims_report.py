"""Print the claim tables of docs/results.md from the finished grid folders.

    .venv/bin/python experiments/claims_report.py [RESULTS_DIR]

Reads the cells of experiments/results/{claims_000,claims_001,claims_001_q16,claims_003,
qpi_001,zoo,zoo_ideal} (whatever has finished) and prints markdown: mean ± sample std
over seeds, with n.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from sims.experiment import collect


def fmt(values: list[float]) -> str:
    if not values:
        return "—"
    v = np.asarray(values, float)
    s = f"{v.mean():.3f}"
    return s + (f" ± {v.std(ddof=1):.3f}" if len(v) > 1 else "") + f" (n={len(v)})"


def pick(rows: list[dict], metric: str = "test_accuracy", **match) -> list[float]:
    return [r[metric] for r in rows if all(r.get(k) == v for k, v in match.items()) and metric in r]


def table_000(rows: list[dict]) -> str:
    methods = ["full", "ptq", "qat", "wsq-raw", "wsq", "gs"]
    lines = ["| depth | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for d in (1, 3, 5):
        lines.append(f"| D={d} | " + " | ".join(fmt(pick(rows, method=m, depth=d)) for m in methods) + " |")
    return "\n".join(lines)


def confidence_000(rows: list[dict]) -> str:
    keys = ["test_accuracy", "confidence_1pct", "confidence_3pct", "confidence_5pct"]
    lines = ["| GS, 8 measured levels | 0% | 1% | 3% | 5% |", "|---|---|---|---|---|"]
    for d in (1, 3, 5):
        lines.append(f"| D={d} | " + " | ".join(fmt(pick(rows, k, method="gs", depth=d)) for k in keys) + " |")
    return "\n".join(lines)


def table_001(rows: list[dict], metric: str = "test_accuracy") -> str:
    methods = ["full", "ptq", "ste", "gs", "dsq", "psq-ft", "psq-li", "psq-lt"]
    levels = sorted({r["levels"] for r in rows if "levels" in r}) or [2, 4, 8]
    lines = ["| method | " + " | ".join(f"Q{k}" for k in levels) + " |", "|---|" + "---|" * len(levels)]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(fmt(pick(rows, metric, method=m, levels=k)) for k in levels) + " |")
    return "\n".join(lines)


def table_003(rows: list[dict]) -> str:
    lines = ["| network | α0 | test accuracy |", "|---|---|---|"]
    for act in ("linear", "relu"):
        lines.append(f"| {act} | — | {fmt(pick(rows, activation=act))} |")
    for act in ("sa", "sa-exact"):
        for a in sorted({r["alpha0"] for r in rows if r.get("activation") == act}):
            lines.append(f"| {act} | {a:g} | {fmt(pick(rows, activation=act, alpha0=a))} |")
    return "\n".join(lines)


ZOO_METHODS = ["full", "ptq", "qat", "wsq-raw", "wsq", "ste", "gs", "dsq", "psq-ft", "psq-li", "psq-lt"]


def table_zoo(rows: list[dict], depth: int) -> str:
    """Every method × levels at one depth (the zoo grid)."""
    levels = sorted({r["levels"] for r in rows if "levels" in r})
    lines = ["| method | " + " | ".join(f"{k} levels" for k in levels) + " |", "|---|" + "---|" * len(levels)]
    for m in ZOO_METHODS:
        if any(r.get("method") == m for r in rows):
            lines.append(f"| {m} | " + " | ".join(fmt(pick(rows, method=m, levels=k, depth=depth)) for k in levels)
                         + " |")
    return "\n".join(lines)


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("experiments/results")
    r000, r001, r003 = (collect(root / n) for n in ("claims_000", "claims_001", "claims_003"))
    r001 = r001 + collect(root / "claims_001_q16")  # the same grid at 16 levels, same bases
    print("### 000: methods at 8 measured levels\n\n" + table_000(r000) + "\n")
    print("### 000: confidence study (GS)\n\n" + confidence_000(r000) + "\n")
    print("### 001: Table 1 shape (ideal uniform phase, depth 3)\n\n" + table_001(r001) + "\n")
    print("### 003: fully connected network\n\n" + table_003(r003) + "\n")
    qpi = collect(root / "qpi_001")
    if qpi:
        print("### 001: QPI, SSIM (ideal uniform phase, depth 3)\n\n" + table_001(qpi, "ssim") + "\n")
    for grid, device in (("zoo", "measured"), ("zoo_ideal", "ideal")):
        zoo = collect(root / grid)
        for d in sorted({r["depth"] for r in zoo}):
            print(f"### {grid}: D={d}, {device} levels\n\n" + table_zoo(zoo, d) + "\n")


if __name__ == "__main__":
    main()
