"""Run a deploy on a bench server: show the layers, push the test digits, record every image.

Sequence: check the server's bench → take the lease → ``deploy`` the layer maps →
choose an exposure that does not saturate (dark frame at that exposure, beam
blocked) → ``run`` jobs of ``batch`` digits, two in flight so the device thread never
waits for the client, while the twin predicts the same digits → every record is
appended to ``records.jsonl`` (fsync) as soon as the server has it → leave the
bench safe (shutter closed, laser off, SLMs blank, lease released).

A server that vanishes is waited for (``reconnect_s``); if it comes back as a new
instance (its id changed, so its jobs and maps are gone) the lease, maps, exposure
and dark frame are set again and the run continues from the first image not yet
recorded. A device fault fails the run with the server's message; the records
taken stay, and ``--resume`` continues.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from drivers.errors import DeviceError, DeviceTimeout
from labctl.client import BenchClient
from labctl.deploy.exposure import settle_exposure
from labctl.deploy.plan import Plan, build_twin, twin_scores
from labctl.deploy.records import RunDir, utc_now
from labctl.deploy.regions import camera_regions
from labctl.errors import BenchUnreachable, ConfigError, LabctlError
from labctl.protocol import DEVICE_TIMEOUT, LEASE_HELD, WireError

LEASE_TTL_S = 30.0


class ServerRestarted(Exception):
    """The server answering is not the instance the run was set up on."""


@dataclass
class DeployOptions:
    batch: int = 32  # images per `run` job
    reconnect_s: float = 30.0  # how long to wait for a vanished server
    exposure_s: float | None = None  # None: choose one
    probe: int = 24  # images used to choose the exposure
    examples: int = 4  # frames kept for the report
    timeout_s: float = 10.0  # per request
    poll_s: float = 0.01


@dataclass
class _InFlight:
    job: str
    positions: list[int]
    twin: np.ndarray
    got: int = 0


def _fmt(x: float) -> float:
    return float(f"{x:.7g}")


@dataclass
class Deployment:
    """One deploy run against one bench server (``client``), writing into ``run``."""

    plan: Plan
    run: RunDir
    meta: dict[str, Any]
    client: BenchClient
    options: DeployOptions = field(default_factory=DeployOptions)
    echo: Callable[[str], None] = print
    on_record: Callable[[dict[str, Any]], None] | None = None
    progress: Any = None  # a tqdm-like bar with update(n)

    server_id: str | None = None
    regions_camera: list[tuple[int, int, int, int]] = field(default_factory=list)
    _twin: Any = None
    _written: set[int] = field(default_factory=set)
    _reachable: bool = True
    _has_shutter: bool = True
    _max_dn: float = 255.0
    _inflight_jobs: list[str] = field(default_factory=list)

    # -- top level -----------------------------------------------------------------

    def execute(self) -> None:
        """Run every image not yet recorded; run.json says how it ended."""
        loaded = self.run.open_for_append()
        if loaded.dropped_tail:
            self.echo(f"{self.run.records_file}: dropped a partial last line left by an interrupted run")
        self._written = {int(r["index"]) for r in loaded.records}
        self.meta["status"] = "running"
        self.meta.setdefault("clients", []).append(self.client.name)
        self.meta["resumes"] = self.meta.get("resumes", -1) + 1
        self.meta["ended"] = None
        self.meta["error"] = None
        self.run.write_meta(self.meta)
        try:
            self._twin = build_twin(self.plan)
            self._prepare()
            if self.progress is not None:
                self.progress.update(len(self._written))
            self._measure_all()
            self.meta["status"] = "done"
        except KeyboardInterrupt:
            self.meta["status"] = "interrupted"
            self.meta["error"] = "interrupted (Ctrl-C)"
            raise
        except BaseException as e:
            self.meta["status"] = "interrupted" if isinstance(e, BenchUnreachable) else "failed"
            self.meta["error"] = str(e) or type(e).__name__
            raise
        finally:
            try:
                self._make_safe()
            finally:
                self.run.close()
                self.meta["ended"] = utc_now()
                self.meta["recorded"] = len(self._written)
                self.run.write_meta(self.meta)

    def pending(self) -> list[int]:
        return [p for p in range(self.plan.total) if p not in self._written]

    # -- talking to the server -------------------------------------------------------

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A client call that notices a server restart."""
        try:
            out = fn(*args, **kwargs)
        except BenchUnreachable:
            self._reachable = False
            raise
        except WireError:
            # A new instance answers "no such job" to the old one's jobs: that is a restart, not a failure.
            self._reachable = True
            self._check_instance()
            raise
        self._reachable = True
        self._check_instance()
        return out

    def _check_instance(self) -> None:
        if self.server_id is not None and self.client.server_id != self.server_id:
            raise ServerRestarted(self.client.server_id)

    def _prepare(self) -> None:
        """Set the bench up on whichever server instance answers now."""
        c = self.client
        hello = c.hello()
        self.server_id = c.server_id
        self.meta.setdefault("servers", [])
        if self.server_id not in self.meta["servers"]:
            self.meta["servers"].append(self.server_id)
        self._check_bench(hello)
        self._acquire_lease()
        self._cancel_own_jobs()
        self.echo(f"deploying {self.plan.model_name} on {', '.join(self.plan.maps)} "
                  f"(server {self.server_id[:8]})")
        deployed = self._call(c.deploy, self.plan.model_name, self.plan.model_sha256, self.plan.maps)
        self.meta["deployed"] = deployed
        cam = self._call(c.devices)["camera"]
        roi = cam.get("roi") or [0, 0, cam["shape"][1], cam["shape"][0]]
        self.regions_camera = camera_regions(self.plan.registration, self.plan.model.geometry.regions, roi)
        self.meta["regions_camera"] = [list(r) for r in self.regions_camera]
        self.meta["camera_roi"] = list(roi)
        self._call(c.set_laser, True)
        exposure = self.meta.get("exposure_s") or self.options.exposure_s
        need_examples = not self.run.examples_file.is_file()
        if exposure is None:
            exposure = self._auto_expose()
        else:
            self._set_exposure(exposure)
            if need_examples:
                self._probe(exposure)
        self.meta["exposure_s"] = exposure
        self.run.write_meta(self.meta)

    def _check_bench(self, hello: dict[str, Any]) -> None:
        bench = self.plan.bench
        if hello.get("bench") != bench.name and not self.meta.get("forced"):
            raise ConfigError(f"the server at {self.client.endpoint} serves bench {hello.get('bench')!r}, but the "
                              f"calibrations are those of bench {bench.name!r} (--bench); use --force to deploy anyway")
        dev = hello.get("devices", {})
        if dev.get("input_slm") != bench.input_slm.name:
            raise ConfigError(f"the server's input SLM is {dev.get('input_slm')!r}, the bench file's is "
                              f"{bench.input_slm.name!r}")
        slms = dev.get("slms", {})
        for name, gray in [(bench.input_slm.name, None), *self.plan.maps.items()]:
            shape = self.plan.encoder.map_shape if gray is None else gray.shape
            if name not in slms:
                raise ConfigError(f"the server has no SLM {name!r} (it has {', '.join(slms)})")
            if tuple(slms[name]["shape"]) != tuple(shape):
                raise ConfigError(f"SLM {name}: the server's ROI is {slms[name]['shape']}, the bench file's "
                                  f"{list(shape)}")
        self._has_shutter = bool(dev.get("shutter"))
        self._max_dn = float((1 << int(dev.get("camera", {}).get("bit_depth") or 8)) - 1)

    def _acquire_lease(self) -> None:
        try:
            self._call(self.client.acquire_lease, LEASE_TTL_S)
        except WireError as e:
            if e.code != LEASE_HELD:
                raise
            holder = self.client.status().get("lease") or {}
            if holder.get("holder") not in self.meta.get("clients", []):
                raise
            # The lease is still held by this run's previous client (killed): take it back.
            self._call(self.client.acquire_lease, LEASE_TTL_S, True)

    def _cancel_own_jobs(self) -> None:
        """Stop jobs a previous client of this run left running (they hold the devices)."""
        mine = set(self.meta.get("clients", []))
        for _ in range(200):
            jobs = [j for j in self._call(self.client.status)["jobs"]
                    if j["owner"] in mine and j["state"] in ("queued", "running")]
            if not jobs:
                return
            for j in jobs:
                self._call(self.client.cancel_job, j["job"])
            time.sleep(0.05)
        raise LabctlError("jobs of this run's previous client did not stop; try again or `labctl status`")

    def _block(self, blocked: bool) -> None:
        if self._has_shutter:
            self._call(self.client.set_shutter, not blocked)
        else:
            self._call(self.client.set_laser, not blocked)

    def _set_exposure(self, exposure_s: float) -> None:
        """Exposure, and a dark frame at that exposure taken with the beam blocked."""
        self._block(True)
        self._call(self.client.configure_camera, exposure_s=exposure_s, dark="grab", dark_frames=8)
        self._block(False)

    def _probe(self, exposure_s: float) -> tuple[float, int]:
        """(peak DN, saturated pixels) over the probe digits; keeps a few frames as examples."""
        n = self.plan.total
        positions = sorted({int(round(x)) for x in np.linspace(0, n - 1, min(self.options.probe, n))})
        maps = self.plan.encoder.encode(self.plan.images[positions])
        job = self._call(self.client.run, maps, regions=self.regions_camera, return_frames=True)
        self._call(self.client.wait_job, job, timeout_s=max(60.0, 2.0 * len(positions)))
        records, frames = self._call(self.client.job_records, job)
        peak = max(float(frames[r["buffers"][0]].max()) for r in records)
        saturated = sum(int(r.get("saturated") or 0) for r in records)
        if not saturated:
            keep = records[: self.options.examples]
            self.run.write_examples([positions[r["index"]] for r in keep], [frames[r["buffers"][0]] for r in keep],
                                    [list(r) for r in self.regions_camera])
        return peak, saturated

    def _auto_expose(self) -> float:
        def probe(exposure_s: float) -> tuple[float, int]:
            self._set_exposure(exposure_s)
            return self._probe(exposure_s)

        start = float(self.client.devices()["camera"].get("exposure_s") or 1e-3)
        return settle_exposure(start, probe, self._max_dn, self.echo)

    # -- measuring -------------------------------------------------------------------

    def _measure_all(self) -> None:
        while True:
            pending = self.pending()
            if not pending:
                return
            try:
                self._measure(pending)
            except (BenchUnreachable, ServerRestarted) as e:
                self._recover(e)

    def _recover(self, why: BaseException) -> None:
        """Wait for a server to answer; set a new instance up again."""
        left = len(self.pending())
        if isinstance(why, ServerRestarted):
            self.echo(f"the bench server restarted (now {str(why)[:8]}); setting it up again, {left} images to go")
        else:
            self.echo(f"lost the bench server ({why}); waiting up to {self.options.reconnect_s:g} s for it")
            end = time.monotonic() + self.options.reconnect_s
            while True:
                try:
                    self.client.call("ping", timeout_s=1.0)
                    break
                except BenchUnreachable:
                    time.sleep(0.2)  # a send to no peer fails at once
                    if time.monotonic() > end:
                        self._reachable = False
                        raise BenchUnreachable(
                            f"the bench server at {self.client.endpoint} is gone; {len(self._written)}/"
                            f"{self.plan.total} images recorded in {self.run.path}; continue with "
                            f"`labctl deploy --resume {self.run.path}`") from None
            self._reachable = True
            if self.client.server_id == self.server_id:
                # Same instance: its jobs may still run, but their unread records are simply re-measured.
                for job in self._inflight_jobs:
                    try:
                        self.client.cancel_job(job)
                    except LabctlError:
                        pass
                self._inflight_jobs = []
                return
            self.echo(f"the bench server restarted (now {str(self.client.server_id)[:8]}); setting it up again, "
                      f"{left} images to go")
        self.server_id = None
        self._prepare()

    def _measure(self, pending: list[int]) -> None:
        c = self.client
        inflight: deque[_InFlight] = deque()
        self._inflight_jobs = []
        nxt = 0
        batch = self.options.batch
        while nxt < len(pending) or inflight:
            while len(inflight) < 2 and nxt < len(pending):
                positions = pending[nxt: nxt + batch]
                maps = self.plan.encoder.encode(self.plan.images[positions])
                job = self._call(c.run, maps, regions=self.regions_camera)
                self._inflight_jobs.append(job)
                # The twin works while the device thread measures.
                inflight.append(_InFlight(job, positions, twin_scores(self._twin, self.plan.images[positions])))
                nxt += len(positions)
            head = inflight[0]
            result, _ = self._call(c.job_result, head.job, head.got, 1000)
            for rec in result["records"]:
                self._write(head, rec)
            if result["state"] == "failed":
                self._failed(head, result.get("error") or {})
            if result["state"] == "cancelled" and head.got < len(head.positions):
                raise LabctlError(f"job {head.job} was cancelled on the server (abort?); {len(self._written)}/"
                                  f"{self.plan.total} images recorded; continue with "
                                  f"`labctl deploy --resume {self.run.path}`")
            if head.got >= len(head.positions):
                inflight.popleft()
                self._inflight_jobs.remove(head.job)
            elif not result["records"]:
                time.sleep(self.options.poll_s)

    def _write(self, head: _InFlight, rec: dict[str, Any]) -> None:
        k = int(rec["index"])
        if k != head.got:
            raise LabctlError(f"job {head.job}: expected record {head.got}, the server sent {k}")
        head.got += 1
        position = head.positions[k]
        if position in self._written:
            return
        captured = [_fmt(s) for s in rec["scores"]]
        twin = [_fmt(s) for s in head.twin[k]]
        record = {
            "index": position,
            "dataset_index": int(self.plan.dataset_indices[position]),
            "label": int(self.plan.labels[position]),
            "captured": captured,
            "twin": twin,
            "pred_captured": int(np.argmax(captured)),
            "pred_twin": int(np.argmax(twin)),
            "crc32": rec.get("crc32"),
            "saturated": rec.get("saturated"),
            "exposure_s": rec.get("exposure_s"),
            "timestamp": rec.get("timestamp"),
            "server": self.server_id,
            "job": head.job,
        }
        self.run.append(record)
        self._written.add(position)
        if self.progress is not None:
            self.progress.update(1)
        if self.on_record is not None:
            self.on_record(record)

    def _failed(self, head: _InFlight, error: dict[str, Any]) -> None:
        step = error.get("step")
        where = ""
        if isinstance(step, int) and 0 <= step < len(head.positions):
            p = head.positions[step]
            where = f" at image {p} (dataset index {int(self.plan.dataset_indices[p])})"
        msg = (f"the bench failed{where}: {error.get('message', 'unknown error')}; {len(self._written)}/"
               f"{self.plan.total} images recorded in {self.run.path}; continue with "
               f"`labctl deploy --resume {self.run.path}`")
        raise (DeviceTimeout if error.get("code") == DEVICE_TIMEOUT else DeviceError)(msg)

    # -- leaving -----------------------------------------------------------------------

    def _make_safe(self) -> None:
        """Cancel our jobs, block the beam, blank the SLMs, give the lease back; best effort."""
        inflight, self._inflight_jobs = self._inflight_jobs, []
        if not self._reachable:
            return  # nobody to talk to; the server makes the bench safe when it stops
        c = self.client
        steps: list[Callable[[], Any]] = [lambda j=j: c.cancel_job(j) for j in inflight]
        if self._has_shutter:
            steps.append(lambda: c.set_shutter(False))
        steps += [lambda: c.set_laser(False), lambda: c.blank(), lambda: c.release_lease()]
        retries, timeout = c.retries, c.timeout_s
        c.retries, c.timeout_s = 3, min(timeout, 3.0)
        try:
            for step in steps:
                try:
                    step()
                except BenchUnreachable:
                    return
                except LabctlError:
                    continue
        finally:
            c.retries, c.timeout_s = retries, timeout
