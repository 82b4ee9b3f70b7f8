"""HDMI SLMs: an SLM is a monitor; maps are shown full-screen, pixel-exact."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class MonitorInfo:
    """A monitor as screeninfo reports it (pixels, virtual-desktop coordinates)."""

    index: int
    name: str
    x: int
    y: int
    width: int
    height: int
    is_primary: bool


def display_available() -> bool:
    """True when an X11/Wayland display is reachable (checked before any GUI call)."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def list_monitors() -> list[MonitorInfo]:
    """Monitors of the current display; empty when there is no display."""
    if not display_available():
        return []
    import screeninfo

    try:
        monitors = screeninfo.get_monitors()
    except screeninfo.common.ScreenInfoError:
        return []
    return [
        MonitorInfo(i, m.name or f"monitor{i}", m.x, m.y, m.width, m.height, bool(m.is_primary))
        for i, m in enumerate(monitors)
    ]
