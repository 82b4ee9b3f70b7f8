"""The bench-vs-twin report of a run, computed from ``records.jsonl`` alone.

Numbers (``report.json``, and the tables of ``report.md``): accuracy of the
captured and of the twin scores, how often both predict the same class, confusion
matrices, and the Pearson r between captured and predicted *normalized* scores
(each image's scores divided by their sum, so laser power and exposure drop out).
Plots (matplotlib, Agg): confusion matrices, the score scatter, and the example
frames the run kept, with the detector regions drawn on them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from labctl.deploy.records import RunDir
from labctl.errors import UsageError
from sims.io import write_json_atomic, write_text_atomic

REPORT_MD = "report.md"
REPORT_JSON = "report.json"


def _normalized(scores: np.ndarray) -> np.ndarray:
    total = scores.sum(axis=1, keepdims=True)
    return scores / np.where(total > 0, total, 1.0)


def pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def confusion(labels: np.ndarray, preds: np.ndarray, classes: int) -> np.ndarray:
    m = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(m, (labels, preds), 1)
    return m


def compute_metrics(records: list[dict[str, Any]]) -> dict[str, Any]:
    if not records:
        raise UsageError("the run has no records yet: nothing to compare")
    records = sorted(records, key=lambda r: r["index"])
    labels = np.array([r["label"] for r in records], dtype=np.int64)
    captured = np.array([r["captured"] for r in records], dtype=np.float64)
    twin = np.array([r["twin"] for r in records], dtype=np.float64)
    pc, pt = captured.argmax(axis=1), twin.argmax(axis=1)
    classes = max(captured.shape[1], int(labels.max()) + 1)
    ncap, ntwin = _normalized(captured), _normalized(twin)
    stamps = [r.get("timestamp") for r in records if isinstance(r.get("timestamp"), (int, float))]
    saturated = sum(1 for r in records if (r.get("saturated") or 0) > 0)
    return {
        "images": len(records),
        "accuracy_captured": float((pc == labels).mean()),
        "accuracy_twin": float((pt == labels).mean()),
        "agreement": float((pc == pt).mean()),
        "pearson_r": pearson(ncap, ntwin),
        "normalized_score_mae": float(np.abs(ncap - ntwin).mean()),
        "saturated_images": saturated,
        "confusion_captured": confusion(labels, pc, classes).tolist(),
        "confusion_twin": confusion(labels, pt, classes).tolist(),
        "capture_span_s": (max(stamps) - min(stamps)) if len(stamps) > 1 else None,
        "disagreements": [int(r["index"]) for r, a, b in zip(records, pc, pt) if a != b][:50],
    }


def _plot_confusions(m: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for ax, key, title in ((axes[0], "confusion_captured", "captured"), (axes[1], "confusion_twin", "twin")):
        c = np.asarray(m[key])
        ax.imshow(c, cmap="Blues")
        for (i, j), v in np.ndenumerate(c):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                        color="white" if v > c.max() / 2 else "black")
        acc = m["accuracy_captured" if key == "confusion_captured" else "accuracy_twin"]
        ax.set_title(f"{title}: accuracy {acc:.3f}")
        ax.set_xlabel("predicted")
        ax.set_ylabel("label")
        ax.set_xticks(range(c.shape[1]))
        ax.set_yticks(range(c.shape[0]))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_scatter(records: list[dict[str, Any]], m: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    cap = _normalized(np.array([r["captured"] for r in records], dtype=np.float64))
    twin = _normalized(np.array([r["twin"] for r in records], dtype=np.float64))
    fig, ax = plt.subplots(figsize=(5.2, 5))
    ax.scatter(twin.ravel(), cap.ravel(), s=4, alpha=0.35, color="tab:blue", linewidths=0)
    hi = float(max(cap.max(), twin.max(), 1e-9)) * 1.05
    ax.plot([0, hi], [0, hi], color="gray", lw=1, ls="--")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    r = m["pearson_r"]
    ax.set_title(f"normalized detector scores, Pearson r = {r:.4f}" if r is not None else "normalized scores")
    ax.set_xlabel("twin (predicted)")
    ax.set_ylabel("bench (captured)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_examples(run: RunDir, by_index: dict[int, dict[str, Any]], path: Path) -> int:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    ex = run.read_examples()
    if ex is None or not ex[0]:
        return 0
    indices, frames, regions = ex
    n = len(frames)
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.6), squeeze=False)
    rows = [r for r, _, h, _ in regions] + [r + h for r, _, h, _ in regions]
    cols = [c for _, c, _, w in regions] + [c + w for _, c, _, w in regions]
    pad = 20
    r0, r1 = max(min(rows) - pad, 0), max(rows) + pad
    c0, c1 = max(min(cols) - pad, 0), max(cols) + pad
    for ax, index, frame in zip(axes[0], indices, frames):
        ax.imshow(frame[r0:r1, c0:c1], cmap="inferno", extent=(c0 - 0.5, c1 - 0.5, r1 - 0.5, r0 - 0.5))
        rec = by_index.get(index)
        for k, (r, c, h, w) in enumerate(regions):
            hit = rec is not None and k == rec["pred_captured"]
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), w, h, fill=False, lw=1.6 if hit else 0.8,
                                   edgecolor="cyan" if hit else "white"))
            ax.text(c + w / 2, r - 2, str(k), color="white", fontsize=7, ha="center", va="bottom")
        title = f"image {index}"
        if rec is not None:
            title += f": label {rec['label']}, bench {rec['pred_captured']}, twin {rec['pred_twin']}"
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return n


def _table(c: list[list[int]]) -> list[str]:
    n = len(c)
    out = ["| label \\ predicted | " + " | ".join(str(j) for j in range(n)) + " |",
           "|---|" + "---:|" * n]
    out += [f"| {i} | " + " | ".join(str(v) for v in row) + " |" for i, row in enumerate(c)]
    return out


def _fmt(v: float | None, digits: int = 4) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _exposure(value: Any) -> str:
    return f"{value * 1e3:.4g} ms" if isinstance(value, (int, float)) else "not set"


def write_report(run: RunDir) -> dict[str, Any]:
    """Write report.md, report.json and the PNGs into the run folder; returns {metrics, report}."""
    import matplotlib

    matplotlib.use("Agg")
    meta = run.read_meta()
    loaded = run.load_records()
    records = sorted(loaded.records, key=lambda r: r["index"])
    m = compute_metrics(records)
    by_index = {int(r["index"]): r for r in records}
    _plot_confusions(m, run.path / "confusion.png")
    _plot_scatter(records, m, run.path / "scores.png")
    examples = _plot_examples(run, by_index, run.path / "examples.png")
    expected = (meta.get("dataset") or {}).get("images")
    model = meta.get("model", {})
    lines = [
        f"# Deploy report: {model.get('name', '?')} on bench {meta.get('bench', {}).get('name', '?')}",
        "",
        f"- run: `{run.path}` — status **{meta.get('status')}**, {m['images']}"
        + (f" of {expected}" if expected else "") + " images"
        + (f" ({loaded.duplicates} duplicated lines ignored)" if loaded.duplicates else ""),
        f"- model: `{model.get('path')}` (layers sha256 `{str(model.get('sha256'))[:16]}…`)",
        f"- started {meta.get('started')}, ended {meta.get('ended')}; server instances: "
        f"{len(meta.get('servers') or [])}; resumed {meta.get('resumes', 0)} times",
        f"- camera exposure {_exposure(meta.get('exposure_s'))}; images with saturated pixels: {m['saturated_images']}",
    ]
    if meta.get("forced"):
        lines.append(f"- **deployed with --force** despite: {'; '.join(meta.get('problems') or [])}")
    if meta.get("error"):
        lines.append(f"- error: {meta['error']}")
    lines += [
        "",
        "| measure | value |",
        "|---|---:|",
        f"| accuracy, captured on the bench | {_fmt(m['accuracy_captured'])} |",
        f"| accuracy, twin | {_fmt(m['accuracy_twin'])} |",
        f"| accuracy difference (captured − twin), points | {100 * (m['accuracy_captured'] - m['accuracy_twin']):+.2f} |",
        f"| agreement (same predicted class) | {_fmt(m['agreement'])} |",
        f"| Pearson r, normalized scores | {_fmt(m['pearson_r'])} |",
        f"| mean absolute difference, normalized scores | {_fmt(m['normalized_score_mae'], 5)} |",
        "",
        "Normalized score = a detector region's score divided by the sum over all regions of that image "
        "(captured: dark-subtracted DN; twin: |E|²).",
        "",
        "![confusion matrices](confusion.png)",
        "",
        "![captured vs predicted scores](scores.png)",
        "",
    ]
    if examples:
        lines += ["Example frames (camera pixels; the detector regions as sent to the server, the captured "
                  "prediction highlighted):", "", "![example frames](examples.png)", ""]
    else:
        lines += ["No example frames were stored with this run.", ""]
    lines += ["## Confusion matrix, captured", "", *_table(m["confusion_captured"]), "",
              "## Confusion matrix, twin", "", *_table(m["confusion_twin"]), ""]
    if m["disagreements"]:
        lines += ["Images where bench and twin disagree (first 50): "
                  + ", ".join(str(i) for i in m["disagreements"]), ""]
    write_text_atomic(run.path / REPORT_MD, "\n".join(lines))
    write_json_atomic(run.path / REPORT_JSON, {"run": str(run.path), "status": meta.get("status"), "metrics": m})
    return {"metrics": m, "report": str(run.path / REPORT_MD)}
