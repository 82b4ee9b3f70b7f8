"""One poller between a bench server and any number of viewers.

A single thread asks the server for the newest frame (``view.frame``), the SLM maps
(``view.maps``) and ``status``, renders what viewers need once (JPEG, histogram,
overlay) and keeps only the newest result. Viewers read that slot: a slow browser
misses frames, nobody queues them, and five viewers cost the bench what one does.
While nobody has looked for ``watch_s`` the thread asks the server for nothing, so
an unwatched live view costs the bench nothing at all.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from labctl.client import BenchClient
from labctl.errors import LabctlError
from labctl.web import render
from labctl.web.artifacts import (
    ArtifactDirs, mtime, calibration_plots, latest_registration, latest_run, model_regions,
)
from labctl.web.overlay import Overlay, build_overlay

log = logging.getLogger("labctl.web")

ACTIONS = ("abort", "blank", "close-shutter")


@dataclass
class FrameSlot:
    """The newest rendered frame. ``jpeg`` maps a display scale to its encoded picture."""

    seq: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    jpeg: dict[str, bytes] = field(default_factory=dict)
    data: np.ndarray | None = None


class LiveFeed:
    def __init__(self, connect: Callable[[], BenchClient], dirs: ArtifactDirs | None = None, *,
                 fps: float = 10.0, job_fps: float = 2.0, watch_s: float = 3.0, status_every_s: float = 0.5,
                 maps_every_s: float = 1.0, artifacts_every_s: float = 2.0, encode: bool = True,
                 connect_actions: Callable[[], BenchClient] | None = None):
        """``connect()`` returns a new client of the bench server (called from the feed's own threads);
        ``connect_actions()`` the client for the buttons (default ``connect``), which may
        need a longer timeout: an abort waits for the job step in progress.

        ``encode``: render JPEG/PNG pictures for a browser (an OpenCV window needs only the arrays).

        ``fps`` is the frame rate while the bench is idle (aligning needs fluid frames);
        ``job_fps`` the rate while a job runs, when every frame the viewers take is CPU
        the bench's own process does not get (docs/live-view.md).
        """
        if fps <= 0 or job_fps <= 0:
            raise ValueError("fps and job_fps must be > 0")
        self._connect = connect
        self._connect_actions = connect_actions or connect
        self.dirs = dirs or ArtifactDirs()
        self.period_s = 1.0 / fps
        self.job_period_s = 1.0 / job_fps
        self.watch_s = watch_s
        self.status_every_s = status_every_s
        self.maps_every_s = maps_every_s
        self.artifacts_every_s = artifacts_every_s
        self.encode = encode
        self._maps_raw: dict[str, np.ndarray] = {}
        self._scale_until = {"full": float("inf"), "auto": 0.0}  # "full" is the page's default: always ready
        self._listeners: list[Callable[[], None]] = []
        self._state_cache: tuple[Any, bytes] | None = None
        self._server_frame_seq = -1  # the server's seq of the frame in the slot
        self._lock = threading.Lock()
        self._frame = FrameSlot()
        self._maps: dict[str, bytes] = {}
        self._maps_meta: dict[str, Any] = {"seq": 0, "slms": [], "crc32": {}}
        self._maps_seq = -1
        self._hello: dict[str, Any] | None = None
        self._status: dict[str, Any] | None = None
        self._artifacts: dict[str, Any] = {}
        self._overlay: Overlay | None = None
        self._overlay_key: Any = None
        self._error: str | None = None
        self._watched_until = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._action_lock = threading.Lock()
        self._action_client: BenchClient | None = None
        self.frames_fetched = 0

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> "LiveFeed":
        self._thread = threading.Thread(target=self._run, name="labctl-live-feed", daemon=True)
        self._thread.start()
        return self

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        with self._action_lock:
            if self._action_client is not None:
                self._action_client.close()
                self._action_client = None

    def touch(self) -> None:
        """A viewer is looking: keep polling the server for ``watch_s`` more."""
        self._watched_until = time.monotonic() + self.watch_s

    def job_running(self) -> bool:
        """Whether the last status polled shows a job running or queued."""
        jobs = (self._status or {}).get("jobs") or []
        return any(j.get("state") in ("running", "queued") for j in jobs)

    @property
    def watched(self) -> bool:
        return time.monotonic() < self._watched_until

    # -- what viewers read ---------------------------------------------------

    def frame_seq(self) -> int:
        return self._frame.seq

    def add_listener(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` (from the feed thread) after each new frame; it must return at once."""
        self._listeners.append(fn)

    def frame_jpeg(self, scale: str, render_missing: bool = True) -> tuple[int, bytes | None]:
        """(seq, JPEG) of the newest frame at display scale ``scale`` ("full" or "auto").

        A scale nobody asked for lately is not rendered with each frame; the first
        request renders it (``render_missing``) and keeps it rendered while asked for.
        """
        self._scale_until[scale] = max(self._scale_until.get(scale, 0.0), time.monotonic() + self.watch_s)
        slot = self._frame
        jpeg = slot.jpeg.get(scale)
        if jpeg is None and render_missing and slot.data is not None and self.encode:
            jpeg = slot.jpeg[scale] = self._render(slot.data, slot.meta, scale)
        return slot.seq, jpeg

    @staticmethod
    def _render(data: np.ndarray, meta: dict[str, Any], scale: str, gray_full: np.ndarray | None = None) -> bytes:
        full = meta["white_dn"]["full"]
        if scale == "full":
            return render.encode_jpeg(render.to_picture(data, full, full, gray_full))
        # not stored in meta: the state JSON may be being encoded from another thread
        return render.encode_jpeg(render.to_picture(data, render.auto_white(data), full))

    def frame_data(self) -> tuple[int, np.ndarray | None, dict[str, Any]]:
        slot = self._frame
        return slot.seq, slot.data, slot.meta

    def map_png(self, name: str) -> bytes | None:
        with self._lock:
            return self._maps.get(name)

    def maps(self) -> dict[str, np.ndarray]:
        """The uint8 map each SLM shows, by SLM name."""
        with self._lock:
            return dict(self._maps_raw)

    def maps_seq(self) -> int:
        return self._maps_seq

    def error(self) -> str | None:
        """Why the feed is not getting data right now (None when it is)."""
        return self._error

    def overlay(self) -> Overlay | None:
        return self._overlay

    def status(self) -> dict[str, Any] | None:
        """The server's last ``status`` reply."""
        return self._status

    def snapshot(self) -> dict[str, Any]:
        """Everything the page shows besides pictures, as JSON-ready data."""
        slot = self._frame
        with self._lock:
            return {
                "bench": self._hello,
                "status": self._status,
                "frame": {"seq": slot.seq, **slot.meta},
                "maps": self._maps_meta,
                "overlay": self._overlay.to_dict() if self._overlay is not None else None,
                "artifacts": self._artifacts_public(),
                "error": self._error,
                "time_unix": time.time(),
            }

    def state_json(self) -> bytes:
        """:meth:`snapshot` as JSON bytes, encoded once per change however many viewers ask."""
        key = (id(self._status), self._frame.seq, self._maps_meta.get("seq"), id(self._artifacts),
               id(self._overlay), self._error, id(self._hello))
        cached = self._state_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        body = json.dumps(self.snapshot(), separators=(",", ":"), allow_nan=False).encode()
        self._state_cache = (key, body)
        return body

    def artifact_file(self, kind: str, name: str) -> Any:
        """The path of a listed calibration plot or run plot; None for anything not listed (no path tricks)."""
        with self._lock:
            listed = self._artifacts.get("calibration_plots", []) if kind == "calibration" else \
                (self._artifacts.get("run") or {}).get("plots", []) if kind == "run" else []
        for p in listed:
            if p.name == name:
                return p
        return None

    def _artifacts_public(self) -> dict[str, Any]:
        a = self._artifacts
        run = a.get("run")
        return {
            "calibration_plots": [p.name for p in a.get("calibration_plots", [])],
            "registration": a.get("registration"),
            "run": None if run is None else {"id": run["id"], "report": run["report"],
                                             "plots": [p.name for p in run["plots"]]},
        }

    # -- safe actions ----------------------------------------------------------

    def act(self, action: str) -> dict[str, Any]:
        """Run a safe action (abort, blank, close-shutter) through the server. Raises LabctlError on refusal."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r} (expected one of {', '.join(ACTIONS)})")
        with self._action_lock:
            if self._action_client is None:
                self._action_client = self._connect_actions()
            c = self._action_client
            if action == "abort":
                return c.abort()  # open to everyone: an emergency stop never waits for a lease
            # blank / close need the lease: borrow it only if nobody holds it, never take it from a running deploy
            c.acquire_lease(ttl_s=10.0)
            try:
                if action == "blank":
                    return {"blanked": c.blank()}
                return {"shutter_open": c.set_shutter(False)}
            finally:
                try:
                    c.release_lease()
                except LabctlError:
                    pass

    # -- the poller ----------------------------------------------------------

    def _run(self) -> None:
        client: BenchClient | None = None
        next_status = next_maps = next_artifacts = 0.0
        while not self._stop.is_set():
            if not self.watched:
                self._stop.wait(0.05)
                continue
            t0 = time.monotonic()
            try:
                if client is None:
                    client = self._connect()
                    hello = client.hello()
                    with self._lock:
                        self._hello = hello
                self._poll_frame(client)
                if t0 >= next_status:
                    status = client.status()
                    with self._lock:
                        self._status = status
                    next_status = t0 + self.status_every_s
                if t0 >= next_maps:
                    self._poll_maps(client)
                    next_maps = t0 + self.maps_every_s
                self._error = None
            except LabctlError as e:
                self._error = str(e)
                if client is not None:
                    client.close()  # a fresh socket after silence: stale replies must not pile up
                    client = None
                self._stop.wait(1.0)
                continue
            if t0 >= next_artifacts:
                self._refresh_artifacts()
                next_artifacts = t0 + self.artifacts_every_s
            period = self.job_period_s if self.job_running() else self.period_s
            self._stop.wait(max(0.0, period - (time.monotonic() - t0)))
        if client is not None:
            client.close()

    def _poll_frame(self, client: BenchClient) -> None:
        reply = client.call("view.frame", {"since": self._server_frame_seq})
        r = reply.result
        if r.get("seq", 0) < self._server_frame_seq:  # the server restarted: its count starts again
            self._server_frame_seq = -1
            reply = client.call("view.frame", {"since": -1})
            r = reply.result
        if not r.get("new") or not reply.buffers:
            if self._frame.seq and "age_s" in r:
                self._frame.meta["age_s"] = r["age_s"]
            return
        data = reply.buffers[0]
        bit_depth = ((self._hello or {}).get("devices") or {}).get("camera", {}).get("bit_depth")
        full = render.full_scale_dn(bit_depth)
        meta = {k: r.get(k) for k in ("timestamp", "exposure_s", "gain_db", "saturated", "source", "age_s", "shape")}
        meta.update(server_seq=r["seq"], white_dn={"full": full}, max_dn=float(data.max()) if data.size else 0.0)
        gray_full = render.to_gray(data, full)
        meta["histogram"] = render.histogram(data, full, gray=gray_full)
        now = time.monotonic()
        jpeg = {} if not self.encode else \
            {s: self._render(data, meta, s, gray_full) for s, until in self._scale_until.items() if until > now}
        # one reference swap: readers see the old slot or the new one, never a mix. The slot's seq is
        # the feed's own count, so viewers' "newer than" survives a server restart.
        self._server_frame_seq = r["seq"]
        self._frame = FrameSlot(seq=self._frame.seq + 1, meta=meta, jpeg=jpeg, data=data)
        self.frames_fetched += 1
        for fn in self._listeners:
            try:
                fn()
            except Exception:  # noqa: BLE001 - a viewer's wake-up must not stop the feed
                log.debug("frame listener failed", exc_info=True)

    def _poll_maps(self, client: BenchClient) -> None:
        reply = client.call("view.maps", {"since": self._maps_seq})
        r = reply.result
        if r.get("seq", 0) < self._maps_seq:  # the server restarted
            reply = client.call("view.maps", {"since": -1})
            r = reply.result
        if not r.get("new"):
            return
        raw = dict(zip(r["slms"], reply.buffers))
        pngs = {name: render.encode_png(m) for name, m in raw.items()} if self.encode else {}
        with self._lock:
            self._maps, self._maps_raw = pngs, raw
            self._maps_meta = {"seq": r["seq"], "slms": list(raw), "crc32": r.get("crc32", {})}
        self._maps_seq = r["seq"]

    def _refresh_artifacts(self) -> None:
        try:
            reg = latest_registration(self.dirs, (self._hello or {}).get("bench"))
            plots = calibration_plots(self.dirs)
            run = latest_run(self.dirs)
            deployed = (self._status or {}).get("deployed") or {}
            regions = model_regions(self.dirs, deployed.get("name"))
        except OSError as e:  # a directory vanished mid-scan: try again next time
            log.debug("artifact scan failed: %s", e)
            return
        cam = ((self._status or {}).get("devices") or {}).get("camera") or {}
        roi = cam.get("roi") if isinstance(cam, dict) else None
        origin = tuple(roi[:2]) if isinstance(roi, list) and len(roi) == 4 else (0, 0)
        key = (None if reg is None else (str(reg[0]), mtime(reg[0])),
               tuple(map(tuple, regions or [])), origin)
        if key != self._overlay_key:
            overlay = None
            if reg is not None:
                try:
                    overlay = build_overlay(reg[1], regions, origin,
                                            {"registration": reg[0].name, "model": deployed.get("name") if regions else None})
                except ValueError as e:
                    log.warning("registration %s not drawn: %s", reg[0], e)
            self._overlay, self._overlay_key = overlay, key
        with self._lock:
            self._artifacts = {
                "calibration_plots": plots,
                "registration": None if reg is None else reg[0].name,
                "run": run,
            }
