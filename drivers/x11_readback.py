"""Read pixels back from an X server with libX11 through ctypes (no extra dependency).

The HDMI SLM uses this to verify that what the X server holds in the ROI is
exactly the map it was given: the window system's view of the screen, after Qt,
before the cable.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from typing import Any

import numpy as np

from drivers.errors import DeviceError

_ZPIXMAP = 2
_ALL_PLANES = 0xFFFFFFFFFFFFFFFF


class _Funcs(ctypes.Structure):
    _fields_ = [(n, ctypes.c_void_p) for n in
                ("create_image", "destroy_image", "get_pixel", "put_pixel", "sub_image", "add_pixel")]


class _XImage(ctypes.Structure):
    _fields_ = [
        ("width", ctypes.c_int), ("height", ctypes.c_int), ("xoffset", ctypes.c_int), ("format", ctypes.c_int),
        ("data", ctypes.POINTER(ctypes.c_ubyte)), ("byte_order", ctypes.c_int), ("bitmap_unit", ctypes.c_int),
        ("bitmap_bit_order", ctypes.c_int), ("bitmap_pad", ctypes.c_int), ("depth", ctypes.c_int),
        ("bytes_per_line", ctypes.c_int), ("bits_per_pixel", ctypes.c_int), ("red_mask", ctypes.c_ulong),
        ("green_mask", ctypes.c_ulong), ("blue_mask", ctypes.c_ulong), ("obdata", ctypes.c_void_p),
        ("f", _Funcs),
    ]


_ERROR_HANDLER = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
_lib: Any = None
_lib_lock = threading.Lock()
_errors: list[int] = []


@_ERROR_HANDLER
def _on_x_error(display: int, event: int) -> int:
    # Xlib's default handler exits the process; record the error instead.
    _errors.append(1)
    return 0


def _xlib() -> Any:
    global _lib
    with _lib_lock:
        if _lib is None:
            name = ctypes.util.find_library("X11")
            if name is None:
                raise DeviceError("libX11 not found; cannot read the screen back")
            lib = ctypes.CDLL(name)
            lib.XOpenDisplay.restype = ctypes.c_void_p
            lib.XOpenDisplay.argtypes = [ctypes.c_char_p]
            lib.XDefaultRootWindow.restype = ctypes.c_ulong
            lib.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
            lib.XGetImage.restype = ctypes.POINTER(_XImage)
            lib.XGetImage.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_int, ctypes.c_uint,
                                      ctypes.c_uint, ctypes.c_ulong, ctypes.c_int]
            lib.XCloseDisplay.argtypes = [ctypes.c_void_p]
            lib.XSync.argtypes = [ctypes.c_void_p, ctypes.c_int]
            lib.XSetErrorHandler(_on_x_error)
            _lib = lib
        return _lib


class ScreenReader:
    """A connection to the X server named by ``$DISPLAY`` that returns gray pixels of the root window."""

    def __init__(self) -> None:
        self._x = _xlib()
        self._dpy = self._x.XOpenDisplay(None)
        if not self._dpy:
            raise DeviceError("cannot open the X display to read the screen back")
        self._root = self._x.XDefaultRootWindow(self._dpy)

    def read(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        """(h, w, 3) uint8 RGB of the screen rectangle at (x, y); DeviceError if the server refuses."""
        _errors.clear()
        img = self._x.XGetImage(self._dpy, self._root, x, y, w, h, _ALL_PLANES, _ZPIXMAP)
        self._x.XSync(self._dpy, 0)
        if not img or _errors:
            raise DeviceError(f"X server refused to read back the screen rectangle {[x, y, w, h]}")
        try:
            im = img.contents
            if im.bits_per_pixel != 32 or im.depth < 24:
                raise DeviceError(f"screen read-back supports 24/32-bit visuals, got depth {im.depth}")
            raw = np.ctypeslib.as_array(im.data, shape=(im.height * im.bytes_per_line,))
            px = raw.reshape(im.height, im.bytes_per_line)[:, : im.width * 4].reshape(im.height, im.width, 4)
            px = px.view("<u4")[..., 0] if im.byte_order == 0 else px.view(">u4")[..., 0]
            out = np.empty((im.height, im.width, 3), np.uint8)
            for c, mask in enumerate((im.red_mask, im.green_mask, im.blue_mask)):
                shift = (mask & -mask).bit_length() - 1
                out[..., c] = (px & mask) >> shift
            return out
        finally:
            ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(_XImage))(img.contents.f.destroy_image)(img)

    def close(self) -> None:
        if self._dpy:
            self._x.XCloseDisplay(self._dpy)
            self._dpy = None
