"""Twin refinement on a bench: show probe maps, capture frames, fit the twin (``sims.refine``).

Probes are chosen to excite the unknowns. Each probe set shows, on every layer SLM,
a random map of ``block``×``block``-neuron patches of calibrated levels: patch edges
diffract strongly, so their images move with every plane's shift and rotation, and
the random levels make the pattern depend on each SLM's phase response. Under each
set the input SLM shows random patch patterns and training digits (inputs the
network will see). Every frame becomes a neuron image through the camera
registration; the twin is fitted to all of them at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from calibration.registration import Registration
from labctl.config import BenchConfig
from labctl.deploy.encode import InputEncoder, inverse_amplitude_lut
from labctl.hil.neurons import neuron_images
from labctl.hil.session import HilSession
from sims.device import DeviceResponse, select_levels
from sims.donn import Geometry, default_input_size, layout_regions
from sims.refine import FitOptions, Probe, TwinCorrections, fit_twin

TWIN_SUFFIX = ".twin.json"


@dataclass(frozen=True)
class ProbeOptions:
    sets: int = 4  # layer-map sets
    inputs: int = 8  # input maps per set (half random patches, half digits)
    levels: int = 8  # calibrated levels the probe maps use
    block: int = 5  # patch side, neurons
    seed: int = 0


def bench_geometry(bench: BenchConfig, input_size: int | None = None) -> Geometry:
    """The nominal twin geometry of a bench file (what the plain twin assumes)."""
    n = bench.size[0]
    return Geometry(size=n, pitch_m=bench.pitch_m, wavelength_m=bench.wavelength_m,
                    distances_m=tuple(bench.distances_m), regions=layout_regions(n, max(n // 10, 1)),
                    input_size=input_size or default_input_size(n), method=bench.propagation,
                    pad_factor=bench.pad_factor)


def twin_file(cal_dir: Path, bench_name: str) -> Path:
    return cal_dir / f"{bench_name}{TWIN_SUFFIX}"


def _upsample(gray: np.ndarray, u: int) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(np.repeat(gray, u, axis=-2), u, axis=-1))


def _relative_amplitude(resp: DeviceResponse) -> np.ndarray:
    amp = np.asarray(resp.amplitude, dtype=np.float64)
    return amp / max(float(amp.max()), 1e-12)


def run_refinement(session: HilSession, bench: BenchConfig, responses: dict[str, DeviceResponse],
                   registration: Registration, *, probe: ProbeOptions = ProbeOptions(),
                   fit: FitOptions = FitOptions(), camera_roi: list[int] | None = None,
                   echo: Callable[[str], None] = print,
                   on_step: Callable[[dict[str, float]], None] | None = None) -> tuple[TwinCorrections, Geometry]:
    """Capture the probes through ``session`` and fit the twin; returns (corrections, nominal geometry).

    ``responses`` holds the calibration of every SLM (input and layers) by name.
    """
    from sims.data import load_dataset

    geo = bench_geometry(bench)
    n = geo.size
    rng = np.random.default_rng(probe.seed)
    inp = bench.input_slm
    in_resp = responses[inp.name]
    encoder = InputEncoder(n, geo.input_size, inp.upsample, inverse_amplitude_lut(in_resp))
    in_amp = _relative_amplitude(in_resp)
    digits = load_dataset("mnist-5k").train_images
    probes: list[Probe] = []
    for k in range(probe.sets):
        maps, phases, amps = {}, [], []
        for s in bench.layer_slms:
            lv = select_levels(responses[s.name], probe.levels)
            cells = -(-n // probe.block)
            pick = rng.integers(0, lv.k, (cells, cells)).repeat(probe.block, 0).repeat(probe.block, 1)[:n, :n]
            gray = np.asarray(lv.gray, dtype=np.uint8)[pick]
            maps[s.name] = _upsample(gray, s.upsample)
            resp = responses[s.name]
            phases.append(torch.tensor(np.asarray(resp.phase_rad, dtype=np.float32)[gray]))
            amps.append(torch.tensor(_relative_amplitude(resp).astype(np.float32)[gray]))
        n_rand = probe.inputs - probe.inputs // 2
        cells = -(-n // probe.block)
        rand_amp = rng.random((n_rand, cells, cells)).repeat(probe.block, 1).repeat(probe.block, 2)[:, :n, :n]
        steps = len(encoder.lut)
        rand_gray = encoder.lut[np.clip(np.rint(rand_amp * (steps - 1)), 0, steps - 1).astype(np.intp)]
        idx = rng.choice(len(digits), probe.inputs // 2, replace=False)
        in_gray = np.concatenate([rand_gray, encoder.neuron_gray(digits[idx])])
        session.show_layers(maps, name=f"refine-probe-{k}")
        frames = session.capture(_upsample(in_gray, inp.upsample))
        measured = neuron_images(frames, registration, camera_roi=camera_roi)
        probes.append(Probe(torch.tensor(in_amp[in_gray], dtype=torch.float32), tuple(phases), tuple(amps),
                            torch.from_numpy(measured)))
        echo(f"probe set {k + 1}/{probe.sets}: {len(frames)} frames")
    corrections = fit_twin(geo, probes, options=fit, slm_names=[s.name for s in bench.layer_slms], on_step=on_step)
    return corrections, geo


def describe(c: TwinCorrections) -> str:
    """One line per parameter group, for the terminal."""
    lines = []
    for name, p in zip(c.slm_names, c.layers):
        lines.append(f"{name}: shift ({p.shift_px[0]:+.3f}, {p.shift_px[1]:+.3f}) neurons, rotation "
                     f"{p.rotation_deg:+.3f} deg, phase scale {p.phase_scale:.4f}")
    lines.append(f"twin sampling: {c.oversample} SLM pixels per neuron, fringing sigma {c.fringing_px:.3f} pixels")
    lines.append("distance errors: " + ", ".join(f"{e * 1e3:+.2f} mm" for e in c.distance_error_m))
    d = c.detector
    lines.append(f"detector: shift ({d.shift_px[0]:+.3f}, {d.shift_px[1]:+.3f}) neurons, rotation "
                 f"{d.rotation_deg:+.3f} deg, magnification {d.magnification:.4f}, gain {d.gain:.4g} DN, "
                 f"offset {d.offset:.4g} DN")
    f = c.fit
    if f:
        lines.append(f"fit: {f.get('frames')} frames, relative error plain twin {f.get('loss_plain', 0):.4g} → "
                     f"refined {f.get('loss_final', 0):.4g}")
    return "\n".join(lines)


def source_info(bench: BenchConfig, cal_files: dict[str, Any], probe: ProbeOptions, session: HilSession) -> dict:
    return {"bench": {"name": bench.name, "file": str(bench.path), "sha256": bench.sha256},
            "calibrations": cal_files, "probes": {"sets": probe.sets, "inputs": probe.inputs,
                                                  "levels": probe.levels, "block": probe.block, "seed": probe.seed},
            "exposure_s": session.exposure_s, "bench_frames": session.frames}
