"""HDMI SLMs: an SLM is a monitor; maps are shown full-screen, pixel-exact.

The window is an OpenCV window sized by its image (``WINDOW_AUTOSIZE``: one image
pixel is one screen pixel; ``WINDOW_NORMAL`` would let Qt scale the image) with
no toolbar (``WINDOW_GUI_NORMAL``), moved to the monitor's origin and asked to go
full-screen so a window manager drops its decorations. Its geometry is checked
against the monitor's before the first map and after every map: a window that
is not exactly the monitor is refused, never papered over. 8-bit gray is
replicated to the three colour channels.

OpenCV's Qt GUI aborts the whole process when it cannot reach a display, so
``display_available`` is checked before any GUI call. HighGUI windows belong to
the thread that created them: use one HdmiSlm from one thread.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

import numpy as np

from drivers.errors import DeviceError
from drivers.slm import Slm
from drivers.x11_readback import ScreenReader

# How long the window system may take to map and place the window.
_PLACE_TIMEOUT_S = 3.0
# Time given to the window system to map and expose a new window.
_EXPOSE_S = 0.15
# How long a shown map may take to appear in the X server's screen.
_VERIFY_TIMEOUT_S = 1.0


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


def _x_display_reachable(display: str) -> bool:
    """True when the X server named by ``display`` (e.g. ``:0``, ``host:1.0``) accepts a connection."""
    host, _, rest = display.rpartition(":")
    number = rest.split(".")[0]
    if not number.isdigit():
        return False
    if host in ("", "unix"):
        path = f"/tmp/.X11-unix/X{number}"
        for address in ("\0" + path, path):  # abstract socket first, like libxcb
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(1.0)
            try:
                s.connect(address)
                return True
            except OSError:
                continue
            finally:
                s.close()
        return False
    try:
        with socket.create_connection((host, 6000 + int(number)), timeout=1.0):
            return True
    except OSError:
        return False


def display_available() -> bool:
    """True when an X display is reachable (checked before any GUI call).

    OpenCV's Qt build talks X11 (xcb); on a Wayland session XWayland provides the
    X display through ``$DISPLAY``.
    """
    display = os.environ.get("DISPLAY", "")
    return bool(display) and _x_display_reachable(display)


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


def find_monitor(monitor: int | str) -> MonitorInfo:
    """The monitor with this screeninfo index or name; DeviceError listing the others if absent."""
    monitors = list_monitors()
    if not monitors:
        raise DeviceError(f"monitor {monitor!r}: no monitors found on display {os.environ.get('DISPLAY')!r}")
    for m in monitors:
        if (isinstance(monitor, int) and m.index == monitor) or (isinstance(monitor, str) and m.name == monitor):
            return m
    found = "; ".join(f"[{m.index}] {m.name} {m.width}x{m.height} at ({m.x}, {m.y})" for m in monitors)
    raise DeviceError(f"monitor {monitor!r} not found; monitors here: {found}")


class HdmiSlm(Slm):
    """An SLM driven as a monitor (``monitor``: screeninfo index or name).

    ``screen_shape`` (rows, cols) must equal the monitor's resolution: the bench file
    states what the SLM is, and a different monitor on that output is refused.
    With ``verify`` (default) every map is read back from the X server and must
    match exactly before ``show`` returns; a window Qt failed to paint is rebuilt
    once, then the map is refused with a DeviceError.
    """

    driver_name = "hdmi"

    def __init__(self, name: str, monitor: int | str, roi: tuple[int, int, int, int], screen_shape: tuple[int, int],
                 pitch_m: float, settle_s: float = 0.1, verify: bool = True):
        super().__init__(name, roi, screen_shape, pitch_m, settle_s)
        self.monitor = monitor
        self.verify = verify
        self._window = f"labctl-slm-{name}"
        self._screen: np.ndarray | None = None
        self._placed: MonitorInfo | None = None
        self._reader: ScreenReader | None = None
        self._rebuilds = 0

    def _where(self) -> str:
        return f"SLM {self.name!r} (monitor {self.monitor!r})"

    def _open_hw(self) -> None:
        if not display_available():
            raise DeviceError(
                f"{self._where()}: no X display reachable (DISPLAY={os.environ.get('DISPLAY', '')!r}); "
                "HDMI SLMs need a graphical session"
            )
        m = find_monitor(self.monitor)
        rows, cols = self.screen_shape
        if (m.height, m.width) != (rows, cols):
            raise DeviceError(
                f"{self._where()}: monitor {m.name!r} is {m.width}x{m.height} but the bench says the SLM is "
                f"{cols}x{rows}; wrong monitor or wrong resolution setting"
            )
        self._screen = np.zeros((rows, cols, 3), dtype=np.uint8)
        try:
            self._place(m)
            if self.verify:
                self._reader = ScreenReader()
        except BaseException:
            self._close_hw()
            raise
        self._placed = m

    def _place(self, m: MonitorInfo) -> None:
        """Create the window on monitor ``m`` and check its geometry."""
        import cv2

        assert self._screen is not None
        cv2.namedWindow(self._window, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
        cv2.moveWindow(self._window, m.x, m.y)
        cv2.setWindowProperty(self._window, cv2.WND_PROP_FULLSCREEN, cv2.WINDOW_FULLSCREEN)
        cv2.imshow(self._window, self._screen)
        deadline = time.monotonic() + _PLACE_TIMEOUT_S
        want = (m.x, m.y, m.width, m.height)
        rect = None
        while time.monotonic() < deadline:
            cv2.waitKey(10)
            rect = tuple(cv2.getWindowImageRect(self._window))
            if rect == want:
                break
            cv2.moveWindow(self._window, m.x, m.y)
        if rect != want:
            raise DeviceError(
                f"{self._where()}: window geometry {list(rect or ())} (x, y, w, h) is not the monitor's "
                f"{list(want)}; refusing to show maps that would be offset or scaled"
            )
        # Qt maps and exposes the window asynchronously; give it time, then paint again.
        settle = time.monotonic() + _EXPOSE_S
        while time.monotonic() < settle:
            cv2.waitKey(10)
        cv2.imshow(self._window, self._screen)
        cv2.waitKey(1)

    def _close_hw(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._screen is None:
            return
        import cv2

        try:
            cv2.destroyWindow(self._window)
            cv2.waitKey(1)
        except cv2.error:
            pass
        self._screen = None
        self._placed = None

    def _on_screen(self, gray: np.ndarray) -> int:
        """How many ROI pixels the X server holds differently from ``gray`` (0 = exact)."""
        assert self._reader is not None and self._placed is not None
        x, y, w, h = self.roi
        rgb = self._reader.read(self._placed.x + x, self._placed.y + y, w, h)
        return int(np.count_nonzero((rgb != gray[:, :, None]).any(axis=2)))

    def _wait_visible(self, gray: np.ndarray) -> int:
        import cv2

        deadline = time.monotonic() + _VERIFY_TIMEOUT_S
        while (wrong := self._on_screen(gray)) and time.monotonic() < deadline:
            cv2.waitKey(1)
        return wrong

    def _write_hw(self, gray: np.ndarray) -> None:
        import cv2

        assert self._screen is not None and self._placed is not None
        x, y, w, h = self.roi
        self._screen[y : y + h, x : x + w, :] = gray[:, :, None]
        cv2.imshow(self._window, self._screen)
        cv2.waitKey(1)  # lets Qt paint now, not at some later event-loop turn
        m = self._placed
        rect = tuple(cv2.getWindowImageRect(self._window))
        if rect != (m.x, m.y, m.width, m.height):
            raise DeviceError(
                f"{self._where()}: window moved or resized to {list(rect)} (x, y, w, h), expected "
                f"{[m.x, m.y, m.width, m.height]}; the map on screen cannot be trusted"
            )
        if self._reader is None or not self.verify:
            return
        wrong = self._wait_visible(gray)
        if wrong:
            # Seen under Xvfb: now and then Qt never paints a new window. Rebuild it once.
            self._rebuilds += 1
            cv2.destroyWindow(self._window)
            cv2.waitKey(1)
            self._place(m)
            wrong = self._wait_visible(gray)
        if wrong:
            raise DeviceError(
                f"{self._where()}: {wrong} of {w * h} ROI pixels on the X screen differ from the map "
                f"{_VERIFY_TIMEOUT_S:g} s after showing it; the display path scales, dithers or is stuck"
            )

    def _idle(self, seconds: float) -> None:
        import cv2

        if self._screen is None:
            time.sleep(seconds)
            return
        cv2.waitKey(max(1, int(seconds * 1000)))  # runs Qt's event loop: repaints on expose

    def status(self) -> dict:
        s = super().status()
        s["monitor"] = self.monitor
        if self._placed is not None:
            m = self._placed
            s["monitor_geometry"] = [m.x, m.y, m.width, m.height]
        s["verified"] = self._reader is not None and self.verify
        s["window_rebuilds"] = self._rebuilds
        return s
