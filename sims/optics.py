"""Scalar free-space propagation of sampled complex fields.

Two methods, both as transfer functions applied in the frequency domain:

* ``"asm"`` — band-limited angular spectrum (Matsushima & Shimobaba, Opt. Express
  17, 19662, 2009): ``H = exp(i·2πz·sqrt(1/λ² − fx² − fy²))`` with evanescent waves
  dropped and frequencies beyond ``1/(λ·sqrt((2·Δf·z)² + 1))`` removed, because
  those would alias around the periodic window instead of leaving it.
* ``"fresnel"`` — paraxial transfer function ``exp(ikz)·exp(−iπλz(fx² + fy²))``
  (the ICCAD'22 paper's model).

Fields are complex tensors ``(..., H, W)`` (usually ``(B, N, N)`` complex64); pitch
and wavelength in metres. Each call zero-pads the field, centred, to
``pad_factor``·size, propagates, and crops the centre back (DESIGN §3). Negative
``z_m`` propagates backwards. Transfer functions are computed in float64 and cached
per (shape, pad, pitch, λ, z, method, dtype, device).
"""

from __future__ import annotations

import functools
import math

import torch

from sims.errors import SamplingError, SimulationError

METHODS = ("asm", "fresnel")

# The band-limited ASM may drop at most this share of the Nyquist band per axis before
# we call the grid too coarse: beyond it the output is blurred to a coarser grid than
# the one the caller asked for.
MIN_ASM_BAND_FRACTION = 0.5


def _check_args(shape: tuple[int, int], z_m: float, pitch_m: float, wavelength_m: float, method: str,
                pad_factor: int) -> None:
    if method not in METHODS:
        raise SimulationError(f"unknown propagation method {method!r}; expected one of {', '.join(METHODS)}")
    if not isinstance(pad_factor, int) or isinstance(pad_factor, bool) or pad_factor < 1:
        raise SimulationError(f"pad_factor must be an integer >= 1, got {pad_factor!r}")
    for name, value in (("pitch_m", pitch_m), ("wavelength_m", wavelength_m)):
        if not (math.isfinite(value) and value > 0):
            raise SimulationError(f"{name} must be a positive number of metres, got {value!r}")
    if not math.isfinite(z_m):
        raise SimulationError(f"z_m must be a finite distance in metres, got {z_m!r}")
    if min(shape) < 2:
        raise SimulationError(f"field must be at least 2x2 samples, got {shape[0]}x{shape[1]}")


def check_sampling(shape: tuple[int, int], z_m: float, pitch_m: float, wavelength_m: float, method: str = "asm",
                   pad_factor: int = 2) -> None:
    """Raise :class:`SamplingError` if the grid is too coarse for ``z_m`` with ``method``.

    * fresnel: the chirp ``exp(−iπλz f²)`` aliases unless ``|z| ≤ L·pitch/λ``, with
      ``L`` the padded window width (metres).
    * asm: the band limit must keep at least ``MIN_ASM_BAND_FRACTION`` of the
      Nyquist band, otherwise the result is silently low-passed.
    """
    _check_args(shape, z_m, pitch_m, wavelength_m, method, pad_factor)
    z = abs(z_m)
    if z == 0:
        return
    for n in shape:
        n_pad = n * pad_factor
        window_m = n_pad * pitch_m
        if method == "fresnel":
            z_max = window_m * pitch_m / wavelength_m
            if z > z_max:
                need = math.ceil(z * wavelength_m / (n * pitch_m * pitch_m))
                raise SamplingError(
                    f"Fresnel transfer function undersampled: z={z_m:g} m exceeds N·pad·pitch²/λ={z_max:.4g} m "
                    f"for {n} samples of {pitch_m:g} m at λ={wavelength_m:g} m; use pad_factor >= {need}, "
                    f"method='asm', or a shorter distance")
        else:
            df = 1.0 / window_m
            f_limit = 1.0 / (wavelength_m * math.sqrt((2.0 * df * z) ** 2 + 1.0))
            f_nyquist = 0.5 / pitch_m
            if f_limit < MIN_ASM_BAND_FRACTION * f_nyquist:
                # f_limit ≈ L/(2λz) for long distances, so the window must grow.
                need = math.ceil(MIN_ASM_BAND_FRACTION * f_nyquist * 2 * wavelength_m * z / (n * pitch_m))
                raise SamplingError(
                    f"grid too coarse for band-limited ASM over z={z_m:g} m: only "
                    f"{100 * f_limit / f_nyquist:.0f}% of the spectrum survives the band limit "
                    f"({n} samples of {pitch_m:g} m, pad_factor={pad_factor}); use pad_factor >= {need} "
                    f"or a shorter distance")


@functools.lru_cache(maxsize=64)
def _transfer_function(n_rows: int, n_cols: int, pitch_m: float, wavelength_m: float, z_m: float, method: str,
                       dtype: torch.dtype, device: str) -> torch.Tensor:
    """H(fy, fx) on the unshifted FFT grid of a (n_rows, n_cols) padded window."""
    fy = torch.fft.fftfreq(n_rows, d=pitch_m, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(n_cols, d=pitch_m, dtype=torch.float64)[None, :]
    f2 = fx * fx + fy * fy
    if method == "fresnel":
        # exp(ikz) kept so both methods agree on the absolute phase.
        phase = 2 * math.pi * z_m / wavelength_m - math.pi * wavelength_m * z_m * f2
        h = torch.polar(torch.ones_like(phase), phase)
    else:
        arg = 1.0 / wavelength_m**2 - f2
        propagating = arg > 0
        phase = 2 * math.pi * z_m * torch.sqrt(arg.clamp(min=0))
        z = abs(z_m)
        limit_y = 1.0 / (wavelength_m * math.sqrt((2.0 * z / (n_rows * pitch_m)) ** 2 + 1.0))
        limit_x = 1.0 / (wavelength_m * math.sqrt((2.0 * z / (n_cols * pitch_m)) ** 2 + 1.0))
        keep = propagating & (fx.abs() < limit_x) & (fy.abs() < limit_y)
        h = torch.polar(keep.to(torch.float64), phase)
    return h.to(device=device, dtype=dtype)


def transfer_function(shape: tuple[int, int], z_m: float, pitch_m: float, wavelength_m: float, *,
                      method: str = "asm", pad_factor: int = 2, dtype: torch.dtype = torch.complex64,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """The cached transfer function of the padded window, ``(pad·H, pad·W)``, FFT order."""
    check_sampling(shape, z_m, pitch_m, wavelength_m, method, pad_factor)
    return _transfer_function(shape[0] * pad_factor, shape[1] * pad_factor, float(pitch_m), float(wavelength_m),
                              float(z_m), method, dtype, str(torch.device(device)))


def _complex_dtype(field: torch.Tensor) -> torch.dtype:
    if field.dtype in (torch.complex64, torch.complex128):
        return field.dtype
    if field.dtype == torch.float64:
        return torch.complex128
    if field.dtype in (torch.float32, torch.float16, torch.bfloat16):
        return torch.complex64
    raise SimulationError(f"field must be a complex (or real float) tensor, got dtype {field.dtype}")


def apply_transfer_function(field: torch.Tensor, h: torch.Tensor, pad_factor: int) -> torch.Tensor:
    """Zero-pad ``field`` centred by ``pad_factor``, multiply its spectrum by ``h``, crop back."""
    n_rows, n_cols = field.shape[-2:]
    if pad_factor == 1:
        return torch.fft.ifft2(torch.fft.fft2(field) * h)
    # Circular convolution commutes with shifts, so "pad centred, crop the centre"
    # equals "pad at the end, crop the start": that lets the FFT do the padding
    # without a padded copy. (Transforming one axis at a time to skip the zero rows
    # was measured slower with torch's CPU FFT: benchmarks/twin_step.py.)
    spectrum = torch.fft.fft2(field, s=(n_rows * pad_factor, n_cols * pad_factor))
    return torch.fft.ifft2(spectrum * h)[..., :n_rows, :n_cols]


def propagate(field: torch.Tensor, z_m: float, pitch_m: float, wavelength_m: float, *, method: str = "asm",
              pad_factor: int = 2) -> torch.Tensor:
    """Propagate ``field`` over ``z_m`` metres (negative: backwards).

    ``field``: complex tensor ``(B, N, N)`` or ``(N, N)`` (any ``(..., H, W)``), square
    samples of ``pitch_m`` metres; ``wavelength_m`` in metres. Returns a tensor of the
    same shape and complex dtype (complex64 for float32 input). Raises
    :class:`SamplingError` when the grid is too coarse for the distance and method.
    """
    if not isinstance(field, torch.Tensor) or field.dim() < 2:
        raise SimulationError("field must be a tensor of shape (N, N) or (B, N, N)")
    dtype = _complex_dtype(field)
    field = field.to(dtype)
    shape = (int(field.shape[-2]), int(field.shape[-1]))
    h = transfer_function(shape, z_m, pitch_m, wavelength_m, method=method, pad_factor=pad_factor, dtype=dtype,
                          device=field.device)
    return apply_transfer_function(field, h, pad_factor)


class Propagator(torch.nn.Module):
    """A fixed free-space gap, for use inside models: checks sampling once, at construction.

    ``shape`` (rows, cols) in samples; ``pitch_m``, ``wavelength_m``, ``z_m`` in metres.
    """

    def __init__(self, shape: tuple[int, int], pitch_m: float, wavelength_m: float, z_m: float, method: str = "asm",
                 pad_factor: int = 2) -> None:
        super().__init__()
        self.shape = (int(shape[0]), int(shape[1]))
        check_sampling(self.shape, z_m, pitch_m, wavelength_m, method, pad_factor)
        self.pitch_m = float(pitch_m)
        self.wavelength_m = float(wavelength_m)
        self.z_m = float(z_m)
        self.method = method
        self.pad_factor = int(pad_factor)

    def forward(self, field: torch.Tensor) -> torch.Tensor:
        if tuple(field.shape[-2:]) != self.shape:
            raise SimulationError(f"field is {tuple(field.shape[-2:])} samples, this propagator expects {self.shape}")
        dtype = _complex_dtype(field)
        h = _transfer_function(self.shape[0] * self.pad_factor, self.shape[1] * self.pad_factor, self.pitch_m,
                               self.wavelength_m, self.z_m, self.method, dtype, str(field.device))
        return apply_transfer_function(field.to(dtype), h, self.pad_factor)

    def extra_repr(self) -> str:
        return (f"shape={self.shape}, z_m={self.z_m:g}, pitch_m={self.pitch_m:g}, wavelength_m={self.wavelength_m:g}, "
                f"method={self.method!r}, pad_factor={self.pad_factor}")
