"""BenchClient: the one way labctl commands talk to a bench server (DESIGN §6).

A DEALER socket with a stable routing id (the server knows a client, and its
lease, by that id). Every call waits at most ``timeout_s``; silence raises
:class:`~labctl.errors.BenchUnreachable`. An error reply raises
:class:`~labctl.protocol.WireError` (a ``ProtocolError`` with ``code``). Errors the
server marks retryable (``busy``, ``device_timeout``, ...) are retried a few times
with the *same* request id, so an operation the server already did is answered
from its memory instead of being done twice.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import zmq

from labctl.errors import BenchUnreachable, ProtocolError
from labctl.options import DEFAULT_ENDPOINT
from labctl.protocol import Reply, WireError, decode_reply, encode_request
from labctl.server.security import ClientKeys, apply_client_keys

DEFAULT_TIMEOUT_S = 5.0


@dataclass
class Frame:
    """A camera frame received from a server (float32 DN) and its metadata."""

    data: np.ndarray
    timestamp: float | None
    exposure_s: float | None
    saturated: int | None


class BenchClient:
    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = 3,
        retry_delay_s: float = 0.2,
        keys: ClientKeys | None = None,
        name: str | None = None,
        context: zmq.Context | None = None,
    ):
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.retries = retries
        self.retry_delay_s = retry_delay_s
        self.name = name or f"labctl-{uuid.uuid4().hex[:12]}"
        self.server_id: str | None = None  # instance uuid of the server that last answered
        self._own_context = context is None
        self._ctx = context or zmq.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.linger = 0
        self._sock.routing_id = self.name.encode("ascii")
        if keys is not None:
            apply_client_keys(self._sock, keys)
        try:
            self._sock.connect(endpoint)
        except zmq.ZMQError as e:
            self.close()
            raise BenchUnreachable(f"cannot connect to {endpoint}: {e.strerror}") from None
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)

    # -- plumbing ------------------------------------------------------------

    def close(self) -> None:
        self._sock.close(linger=0)
        if self._own_context:
            self._ctx.term()

    def __enter__(self) -> "BenchClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(
        self,
        op: str,
        args: dict[str, Any] | None = None,
        buffers: Sequence[np.ndarray] = (),
        *,
        timeout_s: float | None = None,
        request_id: str | None = None,
    ) -> Reply:
        """Send one request and wait for its reply; retries retryable errors with the same id."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        rid, frames = encode_request(op, args, buffers, request_id=request_id, deadline_ms=max(1, int(timeout * 1000)))
        attempt = 0
        while True:
            reply = self._exchange(op, rid, frames, timeout)
            if reply.ok:
                return reply
            err = reply.error
            assert err is not None
            if not err.retryable or attempt >= self.retries:
                raise err
            attempt += 1
            time.sleep(self.retry_delay_s * attempt)

    def _exchange(self, op: str, rid: str, frames: list[Any], timeout_s: float) -> Reply:
        try:
            self._sock.send_multipart(frames, zmq.NOBLOCK, copy=len(frames) < 2)
        except zmq.Again:
            raise BenchUnreachable(f"no bench server at {self.endpoint} (could not send {op})") from None
        end = time.monotonic() + timeout_s
        while True:
            left = end - time.monotonic()
            if left <= 0 or not self._poller.poll(max(1, int(left * 1000))):
                raise BenchUnreachable(f"no answer from the bench server at {self.endpoint} within {timeout_s:g} s ({op})")
            msg = self._sock.recv_multipart(copy=False)
            try:
                reply = decode_reply(msg)
            except WireError as e:
                raise ProtocolError(f"bad reply from {self.endpoint} to {op}: {e}") from None
            if reply.id != rid:
                continue  # a late answer to an earlier request that timed out
            self.server_id = reply.server
            return reply

    # -- server and lease ----------------------------------------------------

    def hello(self) -> dict[str, Any]:
        return self.call("hello").result

    def ping(self) -> float:
        """Round-trip time in seconds."""
        t0 = time.perf_counter()
        self.call("ping")
        return time.perf_counter() - t0

    def status(self) -> dict[str, Any]:
        return self.call("status").result

    def devices(self) -> dict[str, Any]:
        return self.call("devices").result["devices"]

    def acquire_lease(self, ttl_s: float = 30.0, force: bool = False) -> dict[str, Any]:
        return self.call("lease.acquire", {"ttl_s": ttl_s, "force": force}).result["lease"]

    def renew_lease(self, ttl_s: float | None = None) -> dict[str, Any]:
        return self.call("lease.renew", {} if ttl_s is None else {"ttl_s": ttl_s}).result["lease"]

    def release_lease(self) -> bool:
        return self.call("lease.release").result["released"]

    # -- devices -------------------------------------------------------------

    def show(self, slm: str, gray: np.ndarray) -> dict[str, Any]:
        """Show a uint8 map (exactly the SLM's ROI shape) on SLM ``slm``."""
        return self.call("slm.show", {"slm": slm}, [gray]).result

    def blank(self, slm: str | None = None) -> list[str]:
        return self.call("slm.blank", {} if slm is None else {"slm": slm}).result["blanked"]

    def configure_camera(self, exposure_s: float | None = None, gain_db: float | None = None,
                         dark: str | None = None, dark_frames: int = 16) -> dict[str, Any]:
        args: dict[str, Any] = {"exposure_s": exposure_s, "gain_db": gain_db, "dark": dark}
        if dark is not None:
            args["dark_frames"] = dark_frames
        return self.call("camera.configure", {k: v for k, v in args.items() if v is not None}).result

    def grab(self, n_average: int = 1) -> Frame:
        reply = self.call("camera.grab", {"n_average": n_average})
        r = reply.result
        return Frame(reply.buffers[0], r.get("timestamp"), r.get("exposure_s"), r.get("saturated"))

    def set_laser(self, on: bool) -> bool:
        return self.call("laser.set", {"on": on}).result["on"]

    def set_shutter(self, open_: bool) -> bool:
        return self.call("shutter.set", {"open": open_}).result["open"]

    def deploy(self, name: str, model_sha256: str, maps: dict[str, np.ndarray]) -> dict[str, Any]:
        """Show one map per layer SLM (``maps``: SLM name → uint8 map, in beam order)."""
        return self.call("deploy", {"name": name, "model_sha256": model_sha256, "layers": list(maps)},
                         list(maps.values())).result["deployed"]

    def abort(self) -> dict[str, Any]:
        return self.call("abort").result

    # -- jobs ----------------------------------------------------------------

    def run(self, inputs: np.ndarray | Sequence[np.ndarray], *, regions: Sequence[Sequence[int]] | None = None,
            n_average: int = 1, return_frames: bool = False, slm: str | None = None,
            blank_after: bool = False) -> str:
        """Start a job over input maps (a (n, rows, cols) uint8 stack or a list of maps); returns the job id."""
        bufs = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
        args: dict[str, Any] = {"n_average": n_average, "return_frames": return_frames, "blank_after": blank_after}
        if regions is not None:
            args["regions"] = [list(map(int, r)) for r in regions]
        if slm is not None:
            args["slm"] = slm
        return self.call("run", args, bufs).result["job"]

    def job_status(self, job: str) -> dict[str, Any]:
        return self.call("job.status", {"job": job}).result

    def job_result(self, job: str, offset: int = 0, limit: int = 100) -> tuple[dict[str, Any], list[np.ndarray]]:
        reply = self.call("job.result", {"job": job, "offset": offset, "limit": limit})
        return reply.result, reply.buffers

    def cancel_job(self, job: str) -> dict[str, Any]:
        return self.call("job.cancel", {"job": job}).result

    def wait_job(self, job: str, *, timeout_s: float | None = None, poll_s: float = 0.05,
                 progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll until the job finishes; returns its final status. Raises if the job failed or the server restarted."""
        first_server = self.server_id
        end = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            st = self.job_status(job)
            if first_server is not None and self.server_id != first_server:
                raise ProtocolError(f"the bench server restarted while job {job} ran; its results are lost")
            if progress is not None:
                progress(st)
            if st["state"] in ("done", "failed", "cancelled"):
                if st["state"] == "failed":
                    err = st.get("error") or {}
                    raise WireError(err.get("code", "device_error"),
                                    f"job {job} failed at step {err.get('step')}: {err.get('message', '')}")
                return st
            if end is not None and time.monotonic() > end:
                raise BenchUnreachable(f"job {job} did not finish within {timeout_s:g} s")
            time.sleep(poll_s)

    def job_records(self, job: str, page: int = 100) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
        """Every record of a job (and its buffers, re-indexed), fetched page by page."""
        records: list[dict[str, Any]] = []
        arrays: list[np.ndarray] = []
        offset = 0
        while True:
            result, bufs = self.job_result(job, offset, page)
            start = len(arrays)  # page-local buffer indices become indices into `arrays`
            arrays.extend(bufs)
            for rec in result["records"]:
                rec["buffers"] = [start + i for i in rec["buffers"]]
            records.extend(result["records"])
            offset = result["next_offset"]
            if not result["records"] or offset >= result["total"]:
                return records, arrays
