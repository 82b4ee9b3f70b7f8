"""Camera frames as pictures: 8-bit display scaling, saturated pixels in red, a histogram."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

HIST_BINS = 64
SCALES = ("full", "auto")


def full_scale_dn(bit_depth: int | None) -> float:
    """The largest DN the camera reports (the display's white for ``full`` scaling)."""
    return float((1 << int(bit_depth)) - 1) if bit_depth else 255.0


def to_bgr(data: np.ndarray, white_dn: float, saturated_dn: float | None) -> np.ndarray:
    """A float DN frame as an 8-bit BGR image: 0 → black, ``white_dn`` → white.

    Pixels at or above ``saturated_dn`` are painted red so an operator sees clipping
    at a glance (the reported saturated count is over raw frames; this is the
    averaged frame, close enough to point at where it happens).
    """
    if data.ndim != 2:
        raise ValueError(f"expected a 2-D frame, got shape {list(data.shape)}")
    white = max(float(white_dn), 1e-6)
    gray = np.clip(data * (255.0 / white), 0, 255).astype(np.uint8)
    bgr = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    if saturated_dn is not None:
        bgr[data >= saturated_dn] = (0, 0, 255)
    return bgr


def auto_white(data: np.ndarray) -> float:
    """White level for ``auto`` scaling: the 99.9th percentile, so a hot pixel does not darken the picture."""
    sample = data[::2, ::2] if data.size > 250_000 else data
    return max(float(np.percentile(sample, 99.9)), 1.0)


def encode_jpeg(bgr: np.ndarray, quality: int = 85) -> bytes:
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def encode_png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def histogram(data: np.ndarray, full_dn: float, bins: int = HIST_BINS) -> dict[str, Any]:
    """Pixel counts in ``bins`` equal bins over [0, full scale] DN (values outside are clipped into the end bins)."""
    counts, _ = np.histogram(np.clip(data, 0, full_dn), bins=bins, range=(0.0, full_dn))
    return {"bins": bins, "max_dn": full_dn, "counts": counts.astype(int).tolist()}
