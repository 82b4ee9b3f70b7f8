"""The operations a bench server answers (DESIGN §6).

Each operation checks its arguments in the server loop (so a bad request is
refused at once, without touching a device) and, if it needs the devices, returns
a thunk that the device thread runs. ``OPS`` lists every operation with whether it
needs the devices and whether it changes the bench (those need the lease and are
remembered for idempotent retries).
"""

from __future__ import annotations

import platform
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from drivers.errors import DeviceError, DeviceTimeout
from labctl import __version__
from labctl.protocol import (
    BAD_BUFFER, BUSY, DEVICE_ERROR, DEVICE_TIMEOUT, INTERNAL, PROTOCOL_VERSION, Limits, Request, WireError,
    jsonable,
)
from labctl.server.args import Args, boolean, choice, integer, number, rects, string, string_list
from labctl.server.jobs import Job, JobTable
from labctl.server.leases import DEFAULT_TTL_S, LeaseTable
from labctl.server.live import LiveView
from labctl.server.worker import DeviceWorker

# (result, buffers) of an operation
Result = tuple[dict[str, Any], list[np.ndarray]]

MAX_RUN_INPUTS = 100_000
MAX_JOB_FRAME_BYTES = 512 * 1024 * 1024  # frames a run job may hold for its client
MAX_PAGE = 1000


def error_from_exception(e: BaseException) -> WireError:
    """The error reply for an exception raised by a device call."""
    if isinstance(e, WireError):
        return e
    if isinstance(e, DeviceTimeout):
        return WireError(DEVICE_TIMEOUT, str(e) or "a device did not answer in time")
    if isinstance(e, DeviceError):
        return WireError(DEVICE_ERROR, str(e) or type(e).__name__)
    return WireError(INTERNAL, f"{type(e).__name__}: {e}")


@dataclass
class BenchState:
    """Everything the operations act on. Owned by the server loop; devices are touched only in the worker."""

    bench: Any
    bench_name: str
    server_id: str
    limits: Limits
    leases: LeaseTable = field(default_factory=LeaseTable)
    jobs: JobTable = field(default_factory=JobTable)
    worker: DeviceWorker = field(default_factory=DeviceWorker)
    started: float = field(default_factory=time.time)
    deployed: dict[str, Any] | None = None
    snapshot: dict[str, Any] = field(default_factory=dict)
    snapshot_time: float = 0.0
    description: dict[str, Any] = field(default_factory=dict)
    snapshot_dirty: bool = True
    snapshot_every_s: float = 0.5
    live: LiveView = field(default_factory=LiveView)

    # -- device helpers (device thread only) --------------------------------

    def slm(self, a: Args, name: str) -> Any:
        slms = self.bench.slms
        if name not in slms:
            raise a.fail(f"no SLM named {name!r} (this bench has: {', '.join(slms)})")
        return slms[name]

    def device_statuses(self) -> dict[str, Any]:
        b = self.bench
        out: dict[str, Any] = {"slms": {}}
        for name, slm in b.slms.items():
            out["slms"][name] = _status(slm)
        out["camera"] = _status(b.camera)
        out["laser"] = _status(b.laser)
        out["shutter"] = _status(b.shutter) if getattr(b, "shutter", None) is not None else None
        return out

    def refresh_snapshot(self) -> None:
        self.snapshot = self.device_statuses()
        self.snapshot_time = time.time()
        self.snapshot_dirty = False

    def housekeeping(self, pending: bool) -> None:
        """Keep the status snapshot fresh without slowing replies: at most every ``snapshot_every_s``."""
        active = bool(self.jobs.active())
        if active:
            self.snapshot_dirty = True  # stays set after the job ends, so its last changes get read too
        if self.snapshot_dirty and time.time() - self.snapshot_time >= self.snapshot_every_s:
            self.refresh_snapshot()
        busy = pending or active
        self.live.housekeeping(self.bench, busy, time.monotonic() - self.worker.last_work)

    def safe_state(self) -> dict[str, Any]:
        """Blank every SLM and close the shutter; try every device even if one fails."""
        failures, blanked = [], []
        for name, slm in self.bench.slms.items():
            try:
                slm.blank()
                blanked.append(name)
            except Exception as e:  # noqa: BLE001 - keep going: the other devices must still be made safe
                failures.append(f"SLM {name}: {e}")
        shutter = getattr(self.bench, "shutter", None)
        closed = None
        if shutter is not None:
            try:
                shutter.close()
                closed = True
            except Exception as e:  # noqa: BLE001
                failures.append(f"shutter: {e}")
                closed = False
        if failures:
            raise DeviceError("could not make the bench safe: " + "; ".join(failures))
        return {"blanked": blanked, "shutter_closed": closed}

    def describe(self) -> dict[str, Any]:
        """Static facts about the bench, read once at start (device thread not needed later)."""
        b = self.bench
        input_name = getattr(b.input_slm, "name", None)
        layer_names = [getattr(s, "name", None) for s in b.layer_slms]
        slms = {}
        for name, slm in b.slms.items():
            role = "input" if name == input_name else "layer" if name in layer_names else "other"
            slms[name] = {"role": role, "shape": list(slm.shape), "pitch_m": getattr(slm, "pitch_m", None)}
        cam = b.camera
        return jsonable({
            "slms": slms,
            "input_slm": input_name,
            "layer_slms": layer_names,
            "camera": {"shape": list(getattr(cam, "shape", ())), "bit_depth": getattr(cam, "bit_depth", None)},
            "laser": True,
            "shutter": getattr(b, "shutter", None) is not None,
        })


def _status(device: Any) -> Any:
    try:
        return jsonable(device.status())
    except Exception as e:  # noqa: BLE001 - a broken device must not break `status`
        return {"error": f"{type(e).__name__}: {e}"}


@dataclass
class Call:
    state: BenchState
    who: str
    request: Request
    args: Args


@dataclass(frozen=True)
class OpSpec:
    handler: Callable[[Call], Any]
    device: bool  # the handler returns a thunk for the device thread
    mutates: bool  # changes the bench: needs the lease, replies are remembered for retries
    lease: bool = True  # mutating ops need the lease, except the emergency abort
    while_job: bool = True  # allowed while a job uses the devices


# ---------------------------------------------------------------------------
# Server and lease


def op_hello(c: Call) -> Result:
    c.args.finish()
    s = c.state
    return {
        "server": s.server_id,
        "version": __version__,
        "protocol": PROTOCOL_VERSION,
        "bench": s.bench_name,
        "host": platform.node(),
        "devices": s.description,
        "limits": {"max_buffer_bytes": s.limits.max_buffer_bytes, "max_message_bytes": s.limits.max_message_bytes,
                   "max_buffers": s.limits.max_buffers},
        "you": c.who,
    }, []


def op_ping(c: Call) -> Result:
    c.args.finish()
    return {"time_unix": time.time()}, []


def op_status(c: Call) -> Result:
    c.args.finish()
    s = c.state
    return {
        "server": {"id": s.server_id, "version": __version__, "bench": s.bench_name, "started_unix": s.started,
                   "uptime_s": round(time.time() - s.started, 3)},
        "lease": s.leases.describe(),
        "jobs": [j.summary() for j in s.jobs.all()],
        "deployed": s.deployed,
        "devices": s.snapshot,
        "devices_read_unix": s.snapshot_time,
        "device_thread": s.worker.busy,
    }, []


def op_devices(c: Call) -> Callable[[], Result]:
    c.args.finish()

    def run() -> Result:
        c.state.refresh_snapshot()
        return {"devices": c.state.snapshot}, []

    return run


def op_lease_acquire(c: Call) -> Result:
    ttl = c.args.get("ttl_s", number(0, open_lo=True), "a lease duration in seconds > 0", DEFAULT_TTL_S)
    force = c.args.get("force", boolean, "true or false", False)
    c.args.finish()
    return {"lease": c.state.leases.acquire(c.who, ttl, force).describe(time.monotonic())}, []


def op_lease_renew(c: Call) -> Result:
    ttl = c.args.get("ttl_s", number(0, open_lo=True), "a lease duration in seconds > 0", None)
    c.args.finish()
    return {"lease": c.state.leases.renew(c.who, ttl).describe(time.monotonic())}, []


def op_lease_release(c: Call) -> Result:
    c.args.finish()
    return {"released": c.state.leases.release(c.who)}, []


# ---------------------------------------------------------------------------
# Devices


def _map_for(a: Args, slm: Any, buf: np.ndarray, what: str) -> np.ndarray:
    shape = tuple(slm.shape)
    if buf.dtype != np.uint8 or buf.shape != shape:
        raise a.fail(
            f"{what}: expected a uint8 map of shape {list(shape)} (the SLM's ROI; maps are never resized), "
            f"got {buf.dtype.name} {list(buf.shape)}",
            BAD_BUFFER,
        )
    return buf


def op_slm_show(c: Call) -> Callable[[], Result]:
    name = c.args.get("slm", string, "an SLM name")
    c.args.finish(1)
    slm = c.state.slm(c.args, name)
    gray = _map_for(c.args, slm, c.args.buffers[0], f"SLM {name}")

    def run() -> Result:
        slm.show(np.array(gray))  # a private copy: the message buffer is released after the reply
        return {"slm": name, "crc32": zlib.crc32(gray)}, []

    return run


def op_slm_blank(c: Call) -> Callable[[], Result]:
    name = c.args.get("slm", string, "an SLM name (omit to blank all)", None)
    c.args.finish()
    slms = [c.state.slm(c.args, name)] if name else list(c.state.bench.slms.values())
    names = [name] if name else list(c.state.bench.slms)

    def run() -> Result:
        for slm in slms:
            slm.blank()
        return {"blanked": names}, []

    return run


def op_camera_configure(c: Call) -> Callable[[], Result]:
    a = c.args
    exposure = a.get("exposure_s", number(0, 60, open_lo=True), "an exposure in seconds, 0 < t <= 60", None)
    gain = a.get("gain_db", number(0, 100), "a gain in dB, 0..100", None)
    dark = a.get("dark", choice("grab", "clear"), '"grab" (average frames as the dark) or "clear"', None)
    n_dark = a.get("dark_frames", integer(1, 1000), "frames to average for the dark, 1..1000", 16)
    a.finish()
    cam = c.state.bench.camera

    def run() -> Result:
        if exposure is not None:
            cam.exposure_s = exposure
        if gain is not None:
            cam.gain_db = gain
        if dark == "clear":
            cam.set_dark(None)
        elif dark == "grab":
            cam.set_dark(None)  # a dark measured on top of an old dark would be wrong
            cam.set_dark(cam.grab(n_dark))
        return {"exposure_s": cam.exposure_s, "gain_db": cam.gain_db, "dark": dark}, []

    return run


def _frame_meta(frame: Any) -> dict[str, Any]:
    data = np.asarray(frame.data, dtype=np.float32)
    return jsonable({
        "timestamp": getattr(frame, "timestamp", None),
        "exposure_s": getattr(frame, "exposure_s", None),
        "saturated": getattr(frame, "saturated", None),
        "shape": list(data.shape),
        "crc32": zlib.crc32(np.ascontiguousarray(data)),
    })


def op_camera_grab(c: Call) -> Callable[[], Result]:
    n = c.args.get("n_average", integer(1, 1000), "frames to average, 1..1000", 1)
    c.args.finish()
    cam = c.state.bench.camera

    def run() -> Result:
        frame = cam.grab(n)
        c.state.live.put_frame(frame, "camera.grab")
        data = np.ascontiguousarray(frame.data, dtype=np.float32)
        return _frame_meta(frame), [data]

    return run


def op_laser_set(c: Call) -> Callable[[], Result]:
    on = c.args.get("on", boolean, "true (emit) or false")
    c.args.finish()
    laser = c.state.bench.laser

    def run() -> Result:
        if on:
            laser.on()
        else:
            laser.off()
        return {"on": bool(laser.is_on)}, []

    return run


def op_shutter_set(c: Call) -> Callable[[], Result]:
    want_open = c.args.get("open", boolean, "true (open) or false (closed)")
    c.args.finish()
    shutter = getattr(c.state.bench, "shutter", None)
    if shutter is None:
        raise c.args.fail("this bench has no shutter")

    def run() -> Result:
        if want_open:
            shutter.open()
        else:
            shutter.close()
        return {"open": bool(shutter.is_open)}, []

    return run


def op_deploy(c: Call) -> Callable[[], Result]:
    a = c.args
    name = a.get("name", string, "the model name")
    sha = a.get("model_sha256", string, "the sha256 of the model's layers")
    bench = c.state.bench
    default_layers = [s.name for s in bench.layer_slms]
    layers = a.get("layers", string_list, "the layer SLM names, one per map, in beam order", default_layers)
    a.finish(len(layers))
    if len(set(layers)) != len(layers):
        raise a.fail(f"layers lists an SLM twice: {layers}")
    slms = [c.state.slm(a, n) for n in layers]
    maps = [_map_for(a, s, b, f"layer map for SLM {n}") for s, n, b in zip(slms, layers, a.buffers)]

    def run() -> Result:
        crcs = {}
        for slm, n, m in zip(slms, layers, maps):
            slm.show(np.array(m))
            crcs[n] = zlib.crc32(m)
        c.state.deployed = {"name": name, "model_sha256": sha, "layers": layers, "crc32": crcs,
                            "at_unix": time.time(), "by": c.who}
        return {"deployed": c.state.deployed}, []

    return run


def op_run(c: Call) -> Result:
    """Start a job: for each input map, show it on the input SLM, grab, record scores (and the frame if asked)."""
    a = c.args
    bench = c.state.bench
    slm_name = a.get("slm", string, "the input SLM name", bench.input_slm.name)
    n_average = a.get("n_average", integer(1, 1000), "frames to average per input, 1..1000", 1)
    regions = a.get("regions", rects, "a list of [row, col, h, w] camera-pixel rectangles", None)
    return_frames = a.get("return_frames", boolean, "true or false", False)
    blank_after = a.get("blank_after", boolean, "true or false", False)
    a.finish(None)
    slm = c.state.slm(a, slm_name)
    inputs: list[np.ndarray] = []
    for i, buf in enumerate(a.buffers):
        stack = buf if buf.ndim == 3 else buf[None] if buf.ndim == 2 else None
        if stack is None:
            raise a.fail(f"buffer {i}: expected a map (rows, cols) or a stack (n, rows, cols), got {list(buf.shape)}",
                         BAD_BUFFER)
        for k in range(stack.shape[0]):
            inputs.append(_map_for(a, slm, stack[k], f"input {len(inputs)}"))
    if not inputs:
        raise a.fail("no inputs: send at least one uint8 map as a buffer")
    if len(inputs) > MAX_RUN_INPUTS:
        raise a.fail(f"{len(inputs)} inputs, at most {MAX_RUN_INPUTS} per job")
    cam = bench.camera
    live = c.state.live
    cam_shape = tuple(getattr(cam, "shape", ()))
    if regions is not None and len(cam_shape) == 2:
        for r in regions:
            if r[0] + r[2] > cam_shape[0] or r[1] + r[3] > cam_shape[1]:
                raise a.fail(f"region {list(r)} reaches outside the {cam_shape[0]}x{cam_shape[1]} camera frame")
    if regions is None and not return_frames:
        raise a.fail("nothing to return: give regions (detector scores) and/or return_frames = true")
    if return_frames and len(cam_shape) == 2 and len(inputs) * cam_shape[0] * cam_shape[1] * 4 > MAX_JOB_FRAME_BYTES:
        raise a.fail(f"{len(inputs)} frames would exceed {MAX_JOB_FRAME_BYTES >> 20} MiB: split the batch")

    def step(i: int) -> Any:
        slm.show(np.array(inputs[i]))
        frame = cam.grab(n_average)
        live.put_frame(frame, f"run step {i + 1}/{len(inputs)}")
        data = np.asarray(frame.data, dtype=np.float32)
        record = {"index": i, **_frame_meta(frame)}
        if regions is not None:
            record["scores"] = [float(data[r: r + h, col: col + w].sum(dtype=np.float64)) for r, col, h, w in regions]
        return (record, [np.ascontiguousarray(data)]) if return_frames else record

    steps = [lambda i=i: step(i) for i in range(len(inputs))]
    job = Job("run", c.who, steps)
    if blank_after:
        job.on_finish = lambda _job: slm.blank()
    c.state.jobs.add(job)
    c.state.worker.submit_job(job)
    return {"job": job.job_id, "total": job.total}, []


# ---------------------------------------------------------------------------
# Jobs and abort


def op_job_status(c: Call) -> Result:
    job_id = c.args.get("job", string, "a job id")
    c.args.finish()
    return c.state.jobs.get(job_id).summary(), []


def op_job_result(c: Call) -> Result:
    job_id = c.args.get("job", string, "a job id")
    offset = c.args.get("offset", integer(0), "the first record wanted, >= 0", 0)
    limit = c.args.get("limit", integer(1, MAX_PAGE), f"records per page, 1..{MAX_PAGE}", 100)
    c.args.finish()
    return c.state.jobs.get(job_id).page(offset, limit)


def op_job_cancel(c: Call) -> Result:
    job_id = c.args.get("job", string, "a job id")
    c.args.finish()
    job = c.state.jobs.get(job_id)
    if job.owner != c.who:
        c.state.leases.require(c.who)  # someone else's job: only the lease holder may stop it
    cancelled = job.cancel()
    c.state.worker.wake()
    return {"job": job.job_id, "cancelled": cancelled, "state": job.state}, []


def op_abort(c: Call) -> Callable[[], Result]:
    c.args.finish()
    cancelled = [j.job_id for j in c.state.jobs.active() if j.cancel()]

    def run() -> Result:
        return {"cancelled_jobs": cancelled, **c.state.safe_state()}, []

    return run


# ---------------------------------------------------------------------------
# Live view (answered by the loop from LiveView's slots: viewers never queue device work)


def op_view_frame(c: Call) -> Result:
    since = c.args.get("since", integer(-1), "the last frame seq the viewer has, >= -1", -1)
    c.args.finish()
    return c.state.live.frame(since)


def op_view_maps(c: Call) -> Result:
    since = c.args.get("since", integer(-1), "the last maps seq the viewer has, >= -1", -1)
    c.args.finish()
    return c.state.live.maps(since)


OPS: dict[str, OpSpec] = {
    "hello": OpSpec(op_hello, device=False, mutates=False),
    "ping": OpSpec(op_ping, device=False, mutates=False),
    "status": OpSpec(op_status, device=False, mutates=False),
    "devices": OpSpec(op_devices, device=True, mutates=False),
    "lease.acquire": OpSpec(op_lease_acquire, device=False, mutates=True, lease=False),
    "lease.renew": OpSpec(op_lease_renew, device=False, mutates=True, lease=False),
    "lease.release": OpSpec(op_lease_release, device=False, mutates=True, lease=False),
    "slm.show": OpSpec(op_slm_show, device=True, mutates=True, while_job=False),
    "slm.blank": OpSpec(op_slm_blank, device=True, mutates=True, while_job=False),
    "camera.configure": OpSpec(op_camera_configure, device=True, mutates=True, while_job=False),
    "camera.grab": OpSpec(op_camera_grab, device=True, mutates=False),
    "laser.set": OpSpec(op_laser_set, device=True, mutates=True, while_job=False),
    "shutter.set": OpSpec(op_shutter_set, device=True, mutates=True, while_job=False),
    "deploy": OpSpec(op_deploy, device=True, mutates=True, while_job=False),
    "run": OpSpec(op_run, device=False, mutates=True),
    "job.status": OpSpec(op_job_status, device=False, mutates=False),
    "job.result": OpSpec(op_job_result, device=False, mutates=False),
    "job.cancel": OpSpec(op_job_cancel, device=False, mutates=True, lease=False),
    "abort": OpSpec(op_abort, device=True, mutates=True, lease=False),
    "view.frame": OpSpec(op_view_frame, device=False, mutates=False),
    "view.maps": OpSpec(op_view_maps, device=False, mutates=False),
}


def busy_error(op: str, state: BenchState) -> WireError | None:
    """``busy`` if ``op`` would disturb a running job."""
    if OPS[op].while_job:
        return None
    active = state.jobs.active()
    if not active:
        return None
    return WireError(BUSY, f"{op}: job {active[0].job_id} is using the devices (wait for it, or job.cancel / abort)")
