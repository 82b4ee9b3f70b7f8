"""The bench server: one ROUTER socket, one loop, one device thread.

The loop thread decodes every message, answers the cheap operations itself
(``ping``, ``status``, leases, job queries) and hands device work to the device
thread, whose replies come back through an in-process wake-up socket. So the loop
answers ``ping`` while a job runs, and nothing a client sends can kill it: a bad
message becomes an error reply, a failing device call becomes an error reply or a
failed job.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any

import zmq

from labctl.options import DEFAULT_ENDPOINT
from labctl.protocol import (
    BUSY, DEADLINE_EXCEEDED, DEFAULT_LIMITS, INTERNAL, SHUTTING_DOWN, UNKNOWN_OP, Limits, WireError, decode_request,
    encode_error, encode_reply, peek_id,
)
from labctl.server.args import Args
from labctl.server.ops import OPS, BenchState, Call, busy_error, error_from_exception
from labctl.server.security import ServerKeys, apply_server_keys, start_authenticator

log = logging.getLogger("labctl.server")

_IN_FLIGHT = object()  # a mutating request whose reply is not ready yet
MAX_BATCH = 256  # messages handled per poll wake-up before looking at device replies again
MAX_PENDING = 256  # device requests queued at once; beyond this clients are told `busy`


def peer_name(identity: bytes) -> str:
    """A printable name for a client's routing id."""
    try:
        text = identity.decode("ascii")
        if text.isprintable() and text:
            return text
    except UnicodeDecodeError:
        pass
    return "peer-" + identity.hex()


class BenchServer:
    """Serves one bench on one address. Use :meth:`start` (background thread) or :meth:`serve_forever`."""

    def __init__(
        self,
        bench: Any,
        *,
        bind: str = DEFAULT_ENDPOINT,
        bench_name: str = "bench",
        keys: ServerKeys | None = None,
        limits: Limits = DEFAULT_LIMITS,
        reply_cache: int = 1024,
        context: zmq.Context | None = None,
    ):
        self.bind = bind
        self.keys = keys
        self.limits = limits
        self.server_id = uuid.uuid4().hex
        self.state = BenchState(bench=bench, bench_name=bench_name, server_id=self.server_id, limits=limits)
        self.state.worker.housekeeping = self.state.housekeeping
        # idle housekeeping at the viewers' frame period, so an idle bench still shows live frames
        self.state.worker.idle_s = min(self.state.worker.idle_s, self.state.live.idle_grab_s)
        self._cache: OrderedDict[tuple[bytes, str], Any] = OrderedDict()
        self._cache_size = reply_cache
        self._own_context = context is None
        self._ctx = context or zmq.Context()
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._wake_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._auth = None
        self._router: zmq.Socket | None = None
        self.endpoint: str | None = None
        self.inproc_endpoint: str | None = None
        self.handled = 0  # messages answered (for status and tests)

    # -- lifecycle -----------------------------------------------------------

    def open(self) -> str:
        """Make the bench safe, bind, start the device thread. Returns the bound endpoint."""
        self.state.description = self.state.describe()
        self.state.safe_state()  # a bench starts with SLMs blank and the shutter closed (DESIGN §8)
        self.state.refresh_snapshot()
        if self.keys is not None:
            self._auth = start_authenticator(self._ctx, self.keys)
        router = self._ctx.socket(zmq.ROUTER)
        router.linger = 0
        router.maxmsgsize = self.limits.hard_frame_bytes
        router.router_mandatory = False  # a reply to a vanished client is dropped, not an error
        if self.keys is not None:
            apply_server_keys(router, self.keys)
        try:
            router.bind(self.bind)
        except zmq.ZMQError as e:
            router.close()
            self._stop_auth()
            from labctl.errors import UsageError

            raise UsageError(f"cannot bind {self.bind}: {e.strerror}") from None
        self._router = router
        self.endpoint = router.last_endpoint.decode()
        # in-process clients (the live view's web app) reach the same op handlers without a network hop or keys
        self.inproc_endpoint = f"inproc://labctl-bench-{self.server_id}"
        router.bind(self.inproc_endpoint)
        wake_addr = f"inproc://labctl-wake-{self.server_id}"
        self._wake_pull = self._ctx.socket(zmq.PULL)
        self._wake_pull.bind(wake_addr)
        self._wake_push = self._ctx.socket(zmq.PUSH)
        self._wake_push.linger = 0
        self._wake_push.sndhwm = 16
        self._wake_push.connect(wake_addr)
        self.state.worker.start()
        log.info("serving bench %s on %s (server %s)", self.state.bench_name, self.endpoint, self.server_id)
        return self.endpoint

    @property
    def context(self) -> zmq.Context:
        """The ZMQ context; an in-process client must share it to reach :attr:`inproc_endpoint`."""
        return self._ctx

    def start(self) -> str:
        """Open and serve in a background thread (tests, benchmarks). Returns the bound endpoint."""
        endpoint = self.open()
        self._thread = threading.Thread(target=self._loop, name="labctl-server", daemon=True)
        self._thread.start()
        return endpoint

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` (e.g. from a signal handler)."""
        if self._router is None:
            self.open()
        self._loop()

    def stop(self) -> None:
        self._stop.set()

    def close(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Stop serving, cancel jobs, leave the bench safe. Returns what the safe state did (or its error)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        for job in self.state.jobs.active():
            job.cancel()
        stopped = self.state.worker.stop(timeout_s)
        outcome: dict[str, Any]
        if stopped:
            try:
                outcome = self.state.safe_state()
            except Exception as e:  # noqa: BLE001 - report, do not mask the shutdown
                outcome = {"error": str(e)}
        else:
            outcome = {"error": "the device thread is stuck in a device call; SLMs and shutter not reset"}
        for sock in (self._router, getattr(self, "_wake_pull", None), getattr(self, "_wake_push", None)):
            if sock is not None:
                sock.close(linger=0)
        self._router = None
        self._stop_auth()
        if self._own_context:
            self._ctx.term()
        return outcome

    def __enter__(self) -> "BenchServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _stop_auth(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    # -- the loop ------------------------------------------------------------

    def _loop(self) -> None:
        router = self._router
        assert router is not None
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(self._wake_pull, zmq.POLLIN)
        while not self._stop.is_set():
            events = dict(poller.poll(100))
            if self._wake_pull in events:
                self._drain_wake()
            self._flush_outbox()
            if router in events:
                for _ in range(MAX_BATCH):
                    try:
                        msg = router.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    try:
                        self._handle(msg)
                    except Exception:  # noqa: BLE001 - the last line of defence: log, keep serving
                        log.exception("unexpected error while handling a message")
                    self._flush_outbox()
        self._answer_shutdown()

    def _drain_wake(self) -> None:
        while True:
            try:
                self._wake_pull.recv(zmq.NOBLOCK)
            except zmq.Again:
                return

    def _flush_outbox(self) -> None:
        while True:
            try:
                envelope, frames, action = self._outbox.get_nowait()
            except queue.Empty:
                return
            if action is not None:
                verb, key = action
                if verb == "store":
                    self._remember(key, frames)
                else:
                    self._cache.pop(key, None)
            self._send(envelope, frames)

    def _answer_shutdown(self) -> None:
        """Requests that arrived during shutdown get a retryable error instead of silence."""
        self._flush_outbox()
        assert self._router is not None
        for _ in range(MAX_BATCH):
            try:
                msg = self._router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            envelope, rest = self._split(msg)
            err = WireError(SHUTTING_DOWN, "the bench server is shutting down")
            self._send(envelope, encode_error(peek_id(rest), self.server_id, err))

    def _send(self, envelope: list[bytes], frames: list[Any]) -> None:
        try:
            self._router.send_multipart(envelope + frames, zmq.NOBLOCK, copy=len(frames) < 2)  # type: ignore[union-attr]
        except zmq.Again:
            log.warning("client %s is not reading its replies; reply dropped", peer_name(envelope[0]))
        self.handled += 1

    def _remember(self, key: tuple[bytes, str], frames: list[Any] | object) -> None:
        self._cache[key] = frames
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    @staticmethod
    def _split(msg: list[Any]) -> tuple[list[bytes], list[Any]]:
        """(routing envelope, message frames). Clients are DEALER sockets: no empty delimiter frame."""
        return [msg[0].bytes], msg[1:]

    def _wake(self) -> None:
        with self._wake_lock:
            try:
                self._wake_push.send(b"", zmq.NOBLOCK)
            except zmq.Again:
                pass  # wake-ups already queued: the loop will look at the outbox anyway

    def _handle(self, msg: list[Any]) -> None:
        envelope, rest = self._split(msg)
        identity = envelope[0]
        try:
            req = decode_request(rest, self.limits)
        except WireError as e:
            self._send(envelope, encode_error(peek_id(rest), self.server_id, e))
            return
        spec = OPS.get(req.op)
        if spec is None:
            err = WireError(UNKNOWN_OP, f"unknown operation {req.op!r:.40} (known: {', '.join(OPS)})")
            self._send(envelope, encode_error(req.id, self.server_id, err))
            return
        key = (identity, req.id) if spec.mutates else None
        if key is not None and key in self._cache:
            cached = self._cache[key]
            if cached is not _IN_FLIGHT:  # else the first answer is on its way; one request, one answer
                self._send(envelope, cached)
            return
        who = peer_name(identity)
        state = self.state
        state.leases.touch(who)
        if spec.mutates:
            state.snapshot_dirty = True
        try:
            if spec.mutates and spec.lease:
                state.leases.require(who)
            busy = busy_error(req.op, state)
            if busy is not None:
                raise busy
            if spec.device and state.worker.pending >= MAX_PENDING and req.op != "abort":
                raise WireError(BUSY, f"{req.op}: {MAX_PENDING} device requests already queued; retry later")
            out = spec.handler(Call(state, who, req, Args(req.op, req.args, req.buffers)))
        except Exception as e:  # noqa: BLE001 - every failure becomes a reply
            self._reply_error(envelope, req.id, key, error_from_exception(e))
            return
        if not spec.device:
            result, buffers = out
            self._reply_ok(envelope, req.id, key, result, buffers)
            return
        if key is not None:
            self._remember(key, _IN_FLIGHT)
        deadline = time.monotonic() + req.deadline_ms / 1000 if req.deadline_ms else None
        op = req.op

        def task() -> Any:
            if deadline is not None and time.monotonic() > deadline:
                raise WireError(DEADLINE_EXCEEDED, f"{op}: waited past its deadline of {req.deadline_ms} ms for the devices")
            try:
                return out()
            finally:
                if spec.mutates:  # marked again once done: a refresh may have run between the request and now
                    state.snapshot_dirty = True

        def done(result: Any, error: BaseException | None) -> None:
            wire = None if error is None else error_from_exception(error)
            if wire is None:
                try:
                    frames = encode_reply(req.id, self.server_id, *result)
                except Exception as e:  # noqa: BLE001
                    wire = WireError(INTERNAL, f"{op}: reply could not be encoded ({e})")
            if wire is not None:
                frames = encode_error(req.id, self.server_id, wire)
            action = None
            if key is not None:
                # a retryable failure is not replayed: a retry of the same id runs the op again
                action = ("forget" if wire is not None and wire.retryable else "store", key)
            self._outbox.put((envelope, frames, action))
            self._wake()

        state.worker.submit(task, done, urgent=op == "abort", label=op)

    def _reply_ok(self, envelope: list[bytes], rid: str, key: Any, result: dict, buffers: list) -> None:
        try:
            frames = encode_reply(rid, self.server_id, result, buffers)
        except Exception as e:  # noqa: BLE001
            self._reply_error(envelope, rid, key, WireError(INTERNAL, f"reply could not be encoded ({e})"))
            return
        if key is not None:
            self._remember(key, frames)
        self._send(envelope, frames)

    def _reply_error(self, envelope: list[bytes], rid: str, key: Any, err: WireError) -> None:
        frames = encode_error(rid, self.server_id, err)
        if key is not None and not err.retryable:
            self._remember(key, frames)
        self._send(envelope, frames)
