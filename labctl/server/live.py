"""What the live viewers see: the latest camera frame and SLM maps, in one-slot caches.

Viewers (``labctl serve --http``, ``labctl view``) must never slow the bench, so they
never cause device work of their own while the bench is busy:

- every frame the bench grabs anyway (a ``camera.grab``, a ``run`` job step) is put
  in a single slot by reference; a newer frame replaces it. A viewer that is slow
  simply misses frames: nothing is ever queued for it.
- only when the device thread is idle, and only while somebody watched in the last
  ``watch_s``, does housekeeping grab a frame itself, at most every ``idle_grab_s``.
  Many viewers cost the same as one.
- SLM maps are copied by housekeeping at most every ``maps_every_s`` while watched.

Reads (``view.frame``, ``view.maps``) are answered by the server loop from the slots.
"""

from __future__ import annotations

import threading
import time
import zlib
from typing import Any

import numpy as np


class LiveView:
    def __init__(self, idle_grab_s: float = 0.1, maps_every_s: float = 0.5, watch_s: float = 2.0,
                 quiet_s: float = 0.25):
        """``quiet_s``: the device thread must have been idle that long before an idle grab.

        So a client driving the bench op by op (show, grab, show, ...) is not slowed
        by viewer grabs slipped between its operations.
        """
        self.idle_grab_s = idle_grab_s
        self.maps_every_s = maps_every_s
        self.watch_s = watch_s
        self.quiet_s = quiet_s
        self._lock = threading.Lock()
        self._frame: tuple[int, np.ndarray, dict[str, Any]] | None = None
        self._frame_seq = 0
        self._maps: dict[str, np.ndarray] = {}
        self._maps_crc: dict[str, int] = {}
        self._maps_seq = 0
        self._maps_time = 0.0
        self._watched_until = 0.0
        self._frame_mono = -1e9  # monotonic time the slot was last filled
        self.idle_grabs = 0  # frames grabbed for viewers only (for status and the benchmark)

    # -- device thread ------------------------------------------------------

    def put_frame(self, frame: Any, source: str) -> None:
        """Offer a frame the bench grabbed anyway (device thread). Keeps a reference, copies nothing."""
        data = np.asarray(frame.data)
        meta = {
            "timestamp": getattr(frame, "timestamp", None),
            "exposure_s": getattr(frame, "exposure_s", None),
            "gain_db": getattr(frame, "gain_db", None),
            "saturated": getattr(frame, "saturated", None),
            "source": source,
        }
        with self._lock:
            self._frame_seq += 1
            self._frame = (self._frame_seq, data, meta)
            self._frame_mono = time.monotonic()

    def housekeeping(self, bench: Any, busy: bool, idle_for_s: float) -> None:
        """Device thread, between tasks and steps: a map copy and an idle grab, only when due.

        ``busy``: bench work is waiting or running; ``idle_for_s``: time since the
        device thread last did bench work.
        """
        now = time.monotonic()
        if now >= self._watched_until:
            return
        if now - self._maps_time >= self.maps_every_s:
            self._copy_maps(bench)
            self._maps_time = now
        if busy or idle_for_s < self.quiet_s or now - self._frame_mono < self.idle_grab_s:
            return  # frames of the running work come through put_frame, or one is fresh enough
        self.put_frame(bench.camera.grab(1), "idle")
        self.idle_grabs += 1

    def _copy_maps(self, bench: Any) -> None:
        maps, crcs = {}, {}
        for name, slm in bench.slms.items():
            try:
                m = np.ascontiguousarray(slm.current(), dtype=np.uint8)
            except Exception:  # noqa: BLE001 - a broken SLM shows as missing, the others still update
                continue
            maps[name] = m
            crcs[name] = zlib.crc32(m)
        with self._lock:
            if crcs != self._maps_crc:
                self._maps, self._maps_crc = maps, crcs
                self._maps_seq += 1

    # -- server loop --------------------------------------------------------

    def watched(self) -> None:
        self._watched_until = time.monotonic() + self.watch_s

    def frame(self, since: int) -> tuple[dict[str, Any], list[np.ndarray]]:
        """The latest frame if newer than ``since`` (else metadata only)."""
        self.watched()
        with self._lock:
            slot = self._frame
        if slot is None:
            return {"seq": 0, "new": False}, []
        seq, data, meta = slot
        result = dict(meta)
        result.update(seq=seq, new=seq > since, shape=list(data.shape), age_s=None)
        if result["timestamp"] is not None:
            result["age_s"] = round(max(0.0, time.time() - float(result["timestamp"])), 3)
        if seq <= since:
            return result, []
        return result, [np.ascontiguousarray(data, dtype=np.float32)]

    def maps(self, since: int) -> tuple[dict[str, Any], list[np.ndarray]]:
        """The maps each SLM shows (uint8), if they changed since ``since``."""
        self.watched()
        with self._lock:
            seq, maps, crcs = self._maps_seq, dict(self._maps), dict(self._maps_crc)
        new = seq > since
        result = {"seq": seq, "new": new, "slms": list(maps) if new else [], "crc32": crcs}
        return result, list(maps.values()) if new else []
