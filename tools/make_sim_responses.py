"""Write the simulated bench's hidden SLM responses (labctl/benches/*.response.json).

Each curve imitates a measured liquid-crystal response (cf. Fig. 1c of the ICCAD'22
paper): phase grows non-linearly with gray level and saturates below 2π, and the
amplitude is not constant. The curves differ per SLM so that a calibration that
copied one SLM's curve to another would be caught by the tests. A small ripple
(driver LUT steps) keeps them from being analytic functions.

    python tools/make_sim_responses.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "labctl" / "benches"
g = np.arange(256, dtype=np.float64)
x = g / 255.0


def ripple(seed: int, scale: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k = rng.normal(size=256)
    # smooth white noise over ~6 gray levels: LUT-like ripple, not pixel noise
    kernel = np.exp(-0.5 * (np.arange(-12, 13) / 4.0) ** 2)
    return scale * np.convolve(k, kernel / kernel.sum(), mode="same")


def curves() -> dict[str, dict[str, np.ndarray]]:
    out = {}
    # Input SLM between crossed polarisers: amplitude modulator, small residual phase.
    out["input"] = {
        "amplitude": 0.03 + 0.97 * np.sin(0.5 * np.pi * x**1.15) ** 2,
        "phase_rad": 0.35 * x**2 + ripple(1, 0.005),
    }
    # Layer SLM A: saturating phase, 1.8π range; amplitude dips mid-range (non-monotonic).
    phase = 1.8 * np.pi * (1 - np.exp(-2.2 * x)) / (1 - np.exp(-2.2))
    out["layer_a"] = {
        "phase_rad": phase + ripple(2, 0.02),
        "amplitude": 1.0 - 0.22 * np.sin(np.pi * x) ** 2 + ripple(3, 0.004),
    }
    # Layer SLM B: S-shaped phase, 1.55π range; amplitude falls monotonically.
    phase = 1.55 * np.pi / (1 + np.exp(-(x - 0.45) * 9.0))
    phase -= phase[0]
    out["layer_b"] = {
        "phase_rad": phase + ripple(4, 0.02),
        "amplitude": 1.0 - 0.3 * x**1.5 + ripple(5, 0.004),
    }
    # Layer SLM C: nearly linear phase, 1.92π range; two amplitude dips.
    phase = 1.92 * np.pi * (0.75 * x + 0.25 * x**2)
    out["layer_c"] = {
        "phase_rad": phase + ripple(6, 0.02),
        "amplitude": 0.9 + 0.1 * np.cos(3 * np.pi * x) - 0.08 * x + ripple(7, 0.004),
    }
    for c in out.values():
        c["phase_rad"] = c["phase_rad"] - c["phase_rad"][0]
        c["amplitude"] = np.clip(c["amplitude"], 0.0, None)
        c["amplitude"] = c["amplitude"] / c["amplitude"].max()
    return out


def main() -> None:
    for name, c in curves().items():
        doc = {
            "description": f"simulated bench hidden SLM response '{name}' (tools/make_sim_responses.py)",
            "gray": g.astype(int).tolist(),
            "phase_rad": [round(float(v), 6) for v in c["phase_rad"]],
            "amplitude": [round(float(v), 6) for v in c["amplitude"]],
        }
        path = OUT / f"{name}.response.json"
        path.write_text(json.dumps(doc, indent=1) + "\n")
        rng = c["phase_rad"].max() - c["phase_rad"].min()
        print(f"{path.name}: phase range {rng / np.pi:.3f} pi, amplitude {c['amplitude'].min():.3f}..1")


if __name__ == "__main__":
    main()
