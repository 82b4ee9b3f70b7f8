"""Cameras: the interface every camera implements, and the OpenCV driver."""

from __future__ import annotations

import glob
import os
import re

# OpenCV prints a warning for every index that fails to open; discovery expects failures.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")


def list_cameras(max_index: int = 10) -> list[int]:
    """OpenCV camera indices that open. On Linux only existing /dev/video* nodes are tried."""
    import cv2

    nodes = sorted(glob.glob("/dev/video*"))
    if nodes:
        indices = sorted({int(m.group(1)) for n in nodes if (m := re.search(r"video(\d+)$", n))})
    elif os.name == "nt" or os.uname().sysname == "Darwin":
        indices = list(range(max_index))
    else:
        indices = []
    found = []
    for i in indices:
        cap = cv2.VideoCapture(i)
        try:
            if cap.isOpened():
                found.append(i)
        finally:
            cap.release()
    return found
