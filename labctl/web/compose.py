"""The live view as one BGR picture, for an OpenCV window (``labctl view``) and its snapshots.

Same content as the web page: the frame with the registration grid and detector
regions, a status line (exposure, saturated pixels, laser, shutter, job), a
histogram inset and a strip of the maps the SLMs show.
"""

from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np

from labctl.web import render
from labctl.web.overlay import Overlay

BAR_PX = 44
THUMB_PX = 120
FONT = cv2.FONT_HERSHEY_SIMPLEX
SUBPIX = 4  # cv2 fixed-point bits: overlay lines keep quarter-pixel accuracy


def _poly(img: np.ndarray, pts: Sequence[Sequence[float]], closed: bool, color: tuple[int, int, int]) -> None:
    if len(pts) < 2:
        return
    arr = np.round(np.asarray(pts, dtype=np.float64) * (1 << SUBPIX)).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(img, [arr], closed, color, 1, cv2.LINE_AA, SUBPIX)


def draw_overlay(img: np.ndarray, overlay: Overlay | None) -> None:
    """Registration grid (blue), detector plane outline, numbered detector regions (yellow), in place."""
    if overlay is None:
        return
    for line in overlay.grid:
        _poly(img, line, False, (160, 110, 40))
    _poly(img, overlay.outline, True, (255, 200, 80))
    for i, region in enumerate(overlay.regions):
        _poly(img, region, True, (0, 220, 255))
        x, y = region[0]
        cv2.putText(img, str(i), (int(x) + 2, int(y) + 12), FONT, 0.4, (0, 220, 255), 1, cv2.LINE_AA)


def draw_histogram(img: np.ndarray, hist: dict[str, Any] | None, w: int = 192, h: int = 64) -> None:
    """Log pixel counts over the full DN range, bottom-right inset; the last bin red when it has pixels."""
    if not hist or img.shape[0] < h + 8 or img.shape[1] < w + 8:
        return
    counts = np.log10(1 + np.asarray(hist["counts"], dtype=np.float64))
    top = max(1.0, float(counts.max()))
    x0, y0 = img.shape[1] - w - 4, img.shape[0] - h - 4
    roi = img[y0: y0 + h, x0: x0 + w]
    roi[:] = (roi * 0.35).astype(np.uint8)
    bw = w / len(counts)
    for i, c in enumerate(counts):
        bar = int(round(c / top * (h - 4)))
        color = (60, 60, 230) if i == len(counts) - 1 and hist["counts"][i] else (214, 166, 122)
        cv2.rectangle(img, (x0 + int(i * bw), y0 + h - bar), (x0 + int((i + 1) * bw) - 1, y0 + h - 1), color, -1)


def status_lines(meta: dict[str, Any], status: dict[str, Any] | None, seq: int) -> list[str]:
    exp = meta.get("exposure_s")
    exp_text = "?" if exp is None else f"{exp * 1e3:.3f} ms"
    line1 = (f"frame {seq} ({meta.get('source', '?')})  exposure {exp_text}  saturated {meta.get('saturated', '?')} px"
             f"  peak {meta.get('max_dn', 0):.0f} DN")
    st = status or {}
    dev = st.get("devices") or {}
    laser = (dev.get("laser") or {}).get("on")
    shutter = dev.get("shutter")
    parts = [f"laser {'ON' if laser else 'off' if laser is not None else '?'}"]
    if isinstance(shutter, dict):
        parts.append(f"shutter {'OPEN' if shutter.get('open') else 'closed'}")
    jobs = st.get("jobs") or []
    job = next((j for j in jobs if j.get("state") in ("running", "queued")), jobs[-1] if jobs else None)
    if job:
        parts.append(f"job {job['kind']} {job['job']} {job['state']} {job['done']}/{job['total']}")
    deployed = st.get("deployed")
    if deployed:
        parts.append(f"deployed {deployed.get('name')}")
    return [line1, "  ".join(parts)]


def maps_strip(maps: dict[str, np.ndarray], width: int) -> np.ndarray | None:
    """Thumbnails of the SLM maps with their names (nearest-neighbour, so pixel structure stays visible)."""
    if not maps:
        return None
    per_row = max(1, width // (THUMB_PX + 8))
    rows = -(-len(maps) // per_row)
    strip = np.zeros((rows * (THUMB_PX + 22), width, 3), np.uint8)
    for k, (name, m) in enumerate(maps.items()):
        r, c = divmod(k, per_row)
        x, y = 4 + c * (THUMB_PX + 8), r * (THUMB_PX + 22) + 18
        thumb = cv2.resize(np.asarray(m, np.uint8), (THUMB_PX, THUMB_PX), interpolation=cv2.INTER_NEAREST)
        strip[y: y + THUMB_PX, x: x + THUMB_PX] = thumb[..., None]
        cv2.putText(strip, name, (x, y - 5), FONT, 0.45, (200, 200, 200), 1, cv2.LINE_AA)
    return strip


def compose(data: np.ndarray | None, meta: dict[str, Any], seq: int, overlay: Overlay | None,
            maps: dict[str, np.ndarray], status: dict[str, Any] | None, scale: str = "full",
            message: str | None = None, shape: tuple[int, int] = (480, 640)) -> np.ndarray:
    """The whole view as a BGR uint8 image. ``message`` (e.g. a connection error) is printed on top."""
    if data is not None:
        full = float(meta.get("histogram", {}).get("max_dn") or render.full_scale_dn(None))
        white = full if scale == "full" else render.auto_white(data)
        frame = render.to_bgr(data, white, full)
        draw_overlay(frame, overlay)
        draw_histogram(frame, meta.get("histogram"))
    else:
        frame = np.zeros((*shape, 3), np.uint8)
    width = max(frame.shape[1], 480)
    bar = np.full((BAR_PX, width, 3), 32, np.uint8)
    for i, text in enumerate(status_lines(meta, status, seq) if data is not None else ["waiting for frames"]):
        cv2.putText(bar, text, (6, 17 + 20 * i), FONT, 0.45, (230, 230, 230), 1, cv2.LINE_AA)
    if frame.shape[1] < width:
        frame = cv2.copyMakeBorder(frame, 0, 0, 0, width - frame.shape[1], cv2.BORDER_CONSTANT)
    parts = [bar, frame]
    strip = maps_strip(maps, width)
    if strip is not None:
        parts.append(strip)
    img = np.vstack(parts)
    if message:
        cv2.putText(img, message[:110], (8, BAR_PX + 24), FONT, 0.5, (60, 60, 255), 1, cv2.LINE_AA)
    return img
