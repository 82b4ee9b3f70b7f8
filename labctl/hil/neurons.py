"""Camera frames → neuron images of the detector plane, through the camera registration.

The twin predicts |E|² per neuron; the camera sees the detector plane magnified,
shifted and slightly turned. Each neuron's value is the mean of the frame over the
neuron's square, sampled on a ``supersample``² sub-grid mapped to camera pixels by
the registration (bilinear between pixel centres). A neuron whose square leaves the
frame reads 0.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from calibration.registration import Registration


def sample_grid(registration: Registration, supersample: int = 4,
                camera_roi: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(map_x, map_y) float32 (rows·s, cols·s): frame coordinates of every sub-sample."""
    rows, cols = registration.neurons
    sub = (np.arange(supersample) + 0.5) / supersample
    ys = (np.arange(rows)[:, None] + sub[None, :]).reshape(-1)
    xs = (np.arange(cols)[:, None] + sub[None, :]).reshape(-1)
    gx, gy = np.meshgrid(xs, ys)
    cam = registration.to_camera(np.stack([gx, gy], axis=-1))
    rx, ry = (camera_roi[0], camera_roi[1]) if camera_roi is not None else (0, 0)
    return (cam[..., 0] - rx).astype(np.float32), (cam[..., 1] - ry).astype(np.float32)


def neuron_images(frames: np.ndarray, registration: Registration, supersample: int = 4,
                  camera_roi: Sequence[int] | None = None) -> np.ndarray:
    """float32 (M, rows, cols) neuron images of frames (M, h, w) in camera DN."""
    map_x, map_y = sample_grid(registration, supersample, camera_roi)
    rows, cols = registration.neurons
    out = np.empty((len(frames), rows, cols), dtype=np.float32)
    for k, frame in enumerate(frames):
        fine = cv2.remap(np.asarray(frame, dtype=np.float32), map_x, map_y, cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        out[k] = fine.reshape(rows, supersample, cols, supersample).mean(axis=(1, 3))
    return out
