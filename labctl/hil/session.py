"""A bench session for hardware-in-the-loop work: maps on the layers, frames or scores back.

Refinement and in-situ training both need the same few things from a bench server:
show a set of layer maps, push a batch of input maps, get frames or region scores.
``HilSession`` does that over :class:`~labctl.client.BenchClient` and hides one
event the caller should not have to care about: a server that restarts (its
instance id changes, its maps, exposure and dark frame are gone) or vanishes for a
while. The session waits for it, sets the bench up again — lease, laser, exposure,
dark frame, the last layer maps — and repeats the batch. Frames used are counted so
operators can compare the bench time of each approach.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from labctl.client import BenchClient
from labctl.deploy.exposure import settle_exposure
from labctl.errors import BenchUnreachable, ConfigError, LabctlError
from labctl.protocol import LEASE_HELD, WireError

LEASE_TTL_S = 60.0


def _digest(maps: dict[str, np.ndarray]) -> str:
    """sha256 over the maps shown: the server records it as the "model" on the SLMs."""
    h = hashlib.sha256()
    for name, gray in maps.items():
        h.update(name.encode())
        h.update(np.ascontiguousarray(gray).tobytes())
    return h.hexdigest()


class ServerChanged(LabctlError):
    """The answering server is a different instance from the one set up."""


@dataclass
class HilSession:
    """``client`` talks to the server; ``input_slm`` and ``layer_slms`` name the SLMs.

    ``exposure_s`` None chooses one on the first batch of inputs (see
    :meth:`auto_expose`). ``reconnect_s`` is how long a vanished server is waited for.
    """

    client: BenchClient
    input_slm: str
    layer_slms: tuple[str, ...]
    bench_name: str | None = None
    exposure_s: float | None = None
    reconnect_s: float = 60.0
    job_timeout_s: float = 600.0
    echo: Callable[[str], None] = print
    frames: int = 0  # camera frames taken for results (auto-exposure probes included)
    restarts: int = 0
    server_id: str | None = None
    _maps: dict[str, np.ndarray] | None = None
    _maps_name: str = ""
    _has_shutter: bool = True
    _max_dn: float = 255.0
    _clients: list[str] = field(default_factory=list)

    # -- set-up ----------------------------------------------------------------------

    def open(self) -> None:
        """Set the bench up on whichever instance answers (lease, laser, exposure, dark)."""
        c = self.client
        hello = c.hello()
        self.server_id = c.server_id
        if self.bench_name is not None and hello.get("bench") != self.bench_name:
            raise ConfigError(f"the server at {c.endpoint} serves bench {hello.get('bench')!r}, expected "
                              f"{self.bench_name!r}")
        dev = hello.get("devices", {})
        slms = dev.get("slms", {})
        for name in (self.input_slm, *self.layer_slms):
            if name not in slms:
                raise ConfigError(f"the server has no SLM {name!r} (it has {', '.join(slms) or 'none'})")
        self._has_shutter = bool(dev.get("shutter"))
        self._max_dn = float((1 << int(dev.get("camera", {}).get("bit_depth") or 8)) - 1)
        self._lease()
        c.set_laser(True)
        if self._has_shutter:
            c.set_shutter(True)
        if self.exposure_s is not None:
            self._set_exposure(self.exposure_s)
        if self._maps is not None:
            c.deploy(self._maps_name, _digest(self._maps), self._maps)

    def _lease(self) -> None:
        if self.client.name not in self._clients:
            self._clients.append(self.client.name)
        try:
            self.client.acquire_lease(LEASE_TTL_S)
        except WireError as e:
            if e.code != LEASE_HELD:
                raise
            holder = (self.client.status().get("lease") or {}).get("holder")
            if holder not in self._clients:
                raise
            self.client.acquire_lease(LEASE_TTL_S, True)

    def _block(self, blocked: bool) -> None:
        if self._has_shutter:
            self.client.set_shutter(not blocked)
        else:
            self.client.set_laser(not blocked)

    def _set_exposure(self, exposure_s: float) -> None:
        self._block(True)
        self.client.configure_camera(exposure_s=exposure_s, dark="grab", dark_frames=8)
        self._block(False)

    def close(self) -> None:
        """Leave the bench safe: shutter closed, laser off, SLMs blank, lease released."""
        c = self.client
        for step in (lambda: c.set_shutter(False) if self._has_shutter else None, lambda: c.set_laser(False),
                     lambda: c.blank(), lambda: c.release_lease()):
            try:
                step()
            except LabctlError:
                pass

    def __enter__(self) -> "HilSession":
        # No waiting here: a server that is not there at the start is a wrong address.
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- restart tolerance -------------------------------------------------------------

    def _guard(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn``; on a restarted or vanished server, set up again and run it again."""
        while True:
            try:
                out = fn()
                if self.server_id is not None and self.client.server_id != self.server_id:
                    raise ServerChanged(self.client.server_id or "?")
                return out
            except (BenchUnreachable, ServerChanged) as e:
                self._recover(e)
            except WireError as e:
                # A job lost with its server: the status call fails as not_found on the new one.
                if e.code != "not_found" or self.client.server_id == self.server_id:
                    raise
                self._recover(ServerChanged(self.client.server_id or "?"))
            except LabctlError as e:
                if "restarted" not in str(e):
                    raise
                self._recover(ServerChanged(self.client.server_id or "?"))

    def _recover(self, why: BaseException) -> None:
        if not isinstance(why, ServerChanged):
            self.echo(f"lost the bench server ({why}); waiting up to {self.reconnect_s:g} s for it")
            end = time.monotonic() + self.reconnect_s
            while True:
                try:
                    self.client.call("ping", timeout_s=1.0)
                    break
                except BenchUnreachable:
                    if time.monotonic() > end:
                        raise BenchUnreachable(f"the bench server at {self.client.endpoint} did not come back "
                                               f"within {self.reconnect_s:g} s; resume later") from None
                    time.sleep(0.5)
            if self.client.server_id == self.server_id:
                return
        self.restarts += 1
        self.echo(f"the bench server restarted (now {str(self.client.server_id)[:8]}); setting it up again")
        self.server_id = None
        self.open()

    # -- measuring ---------------------------------------------------------------------

    def show_layers(self, maps: dict[str, np.ndarray], name: str = "hil") -> None:
        """Show one uint8 map per layer SLM (SLM-pixel resolution, the ROI's shape)."""
        self._maps, self._maps_name = dict(maps), name
        self._guard(lambda: self.client.deploy(name, _digest(self._maps), self._maps))

    def _run(self, inputs: np.ndarray, regions: list[list[int]] | None, frames: bool) -> tuple[list[dict], list]:
        c = self.client
        job = c.run(inputs, regions=regions, return_frames=frames, slm=self.input_slm)
        c.wait_job(job, timeout_s=self.job_timeout_s)
        records, bufs = c.job_records(job)
        if len(records) != len(inputs):
            raise LabctlError(f"bench job {job} returned {len(records)} records for {len(inputs)} inputs")
        return records, bufs

    def capture(self, inputs: np.ndarray) -> np.ndarray:
        """float32 (M, rows, cols): dark-subtracted frames, one per input map (M, rows, cols) uint8."""
        self._ensure_exposure(inputs)
        records, bufs = self._guard(lambda: self._run(inputs, None, True))
        self.frames += len(records)
        return np.stack([np.asarray(bufs[r["buffers"][0]], dtype=np.float32) for r in records])

    def scores(self, inputs: np.ndarray, regions: list[list[int]]) -> np.ndarray:
        """float64 (M, C): summed DN in each camera-pixel region ``[row, col, h, w]``, per input."""
        self._ensure_exposure(inputs)
        records, _ = self._guard(lambda: self._run(inputs, regions, False))
        self.frames += len(records)
        return np.asarray([r["scores"] for r in records], dtype=np.float64)

    def _ensure_exposure(self, inputs: np.ndarray) -> None:
        if self.exposure_s is None:
            self.exposure_s = self._guard(lambda: self.auto_expose(inputs[: min(len(inputs), 8)]))

    def auto_expose(self, inputs: np.ndarray) -> float:
        """An exposure that puts the brightest pixel of ``inputs`` near half the range."""
        def probe(exposure_s: float) -> tuple[float, int]:
            self._set_exposure(exposure_s)
            records, bufs = self._run(inputs, None, True)
            self.frames += len(records)
            peak = max(float(np.max(bufs[r["buffers"][0]])) for r in records)
            return peak, sum(int(r.get("saturated") or 0) for r in records)

        start = float(self.client.devices()["camera"].get("exposure_s") or 1e-3)
        return settle_exposure(start, probe, self._max_dn, self.echo)
