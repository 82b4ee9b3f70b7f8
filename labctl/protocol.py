"""Bench protocol messages (DESIGN §6): encoding, decoding and validation.

A message is a ZMQ multipart message. Frame 0 is a UTF-8 JSON header; frames
1..n are raw little-endian array buffers, each described in the header by
``{"dtype", "shape", "crc32"}``. Decoding checks everything a peer could get
wrong and raises :class:`WireError` with a machine-readable ``code``; the server
turns that into an error reply, the client into an exception. Nothing here
touches a socket.
"""

from __future__ import annotations

import json
import math
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from labctl.errors import EXIT_DEVICE, EXIT_FAILURE, EXIT_TIMEOUT, EXIT_USAGE, ProtocolError

PROTOCOL_VERSION = 1

# Dtypes a buffer may carry. Byte order is always little-endian on the wire, so
# a big-endian host still reads the same numbers.
DTYPES: dict[str, np.dtype] = {
    name: np.dtype(name).newbyteorder("<")
    for name in ("uint8", "uint16", "int32", "int64", "float32", "float64", "complex64")
}
MAX_NDIM = 4
MAX_ID_CHARS = 64
MAX_OP_CHARS = 64


# Error codes. `retryable` errors may succeed if the same request is sent again
# later; the client retries only those, with the same request id.
BAD_MESSAGE = "bad_message"          # header missing, not UTF-8, not JSON, not an object, bad keys
BAD_VERSION = "bad_version"          # "v" is not PROTOCOL_VERSION
UNKNOWN_OP = "unknown_op"            # no such operation
BAD_ARGS = "bad_args"                # arguments missing, of the wrong type or out of range
BAD_BUFFER = "bad_buffer"            # buffer count, dtype, shape, size or crc32 mismatch
TOO_LARGE = "too_large"              # header, a buffer or the whole message over the limits
LEASE_REQUIRED = "lease_required"    # the op changes devices and the caller holds no lease
LEASE_HELD = "lease_held"            # another client holds the lease
NOT_FOUND = "not_found"              # no such job
BUSY = "busy"                        # a job is using the devices; retry later
DEADLINE_EXCEEDED = "deadline_exceeded"  # the request waited past its deadline_ms
DEVICE_ERROR = "device_error"        # a device refused or failed
DEVICE_TIMEOUT = "device_timeout"    # a device did not answer in time
SHUTTING_DOWN = "shutting_down"      # the server is stopping
INTERNAL = "internal"                # a server bug; the server stays up

ERROR_CODES: dict[str, bool] = {  # code → retryable
    BAD_MESSAGE: False,
    BAD_VERSION: False,
    UNKNOWN_OP: False,
    BAD_ARGS: False,
    BAD_BUFFER: False,
    TOO_LARGE: False,
    LEASE_REQUIRED: False,
    LEASE_HELD: False,
    NOT_FOUND: False,
    BUSY: True,
    DEADLINE_EXCEEDED: True,
    DEVICE_ERROR: False,
    DEVICE_TIMEOUT: True,
    SHUTTING_DOWN: True,
    INTERNAL: False,
}

_EXIT_FOR_CODE = {
    BAD_ARGS: EXIT_USAGE,
    DEVICE_ERROR: EXIT_DEVICE,
    DEVICE_TIMEOUT: EXIT_TIMEOUT,
    DEADLINE_EXCEEDED: EXIT_TIMEOUT,
}


class WireError(ProtocolError):
    """A protocol error with a code: a malformed message, or an error reply from the server."""

    def __init__(self, code: str, message: str, retryable: bool | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = ERROR_CODES.get(code, False) if retryable is None else retryable

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        return _EXIT_FOR_CODE.get(self.code, EXIT_FAILURE)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "retryable": self.retryable}


@dataclass(frozen=True)
class Limits:
    """Size limits a server enforces (bytes). Messages over them get ``too_large``."""

    max_header_bytes: int = 64 * 1024
    max_buffers: int = 1024
    max_buffer_bytes: int = 64 * 1024 * 1024
    max_message_bytes: int = 256 * 1024 * 1024

    @property
    def hard_frame_bytes(self) -> int:
        """ZMQ's own per-frame cap: far above the soft limits, so only absurd frames are dropped unanswered."""
        return 2 * max(self.max_buffer_bytes, self.max_header_bytes) + 1024


DEFAULT_LIMITS = Limits()


@dataclass
class Request:
    id: str
    op: str
    args: dict[str, Any]
    buffers: list[np.ndarray] = field(default_factory=list)
    deadline_ms: int | None = None


@dataclass
class Reply:
    id: str | None
    server: str
    ok: bool
    result: dict[str, Any] = field(default_factory=dict)
    error: WireError | None = None
    buffers: list[np.ndarray] = field(default_factory=list)


def new_id() -> str:
    return uuid.uuid4().hex


# ---------------------------------------------------------------------------
# Buffers


def _as_wire_array(array: np.ndarray) -> np.ndarray:
    a = np.asarray(array)
    name = a.dtype.name
    if name not in DTYPES:
        raise WireError(BAD_BUFFER, f"buffer dtype {name} is not allowed (allowed: {', '.join(DTYPES)})")
    if a.ndim > MAX_NDIM:
        raise WireError(BAD_BUFFER, f"buffer has {a.ndim} dimensions, at most {MAX_NDIM} allowed")
    return np.ascontiguousarray(a, dtype=DTYPES[name])


def describe_buffers(arrays: Sequence[np.ndarray]) -> tuple[list[dict[str, Any]], list[memoryview]]:
    """Header descriptors and the raw frames for ``arrays`` (no copy for contiguous little-endian arrays)."""
    descs, frames = [], []
    for a in arrays:
        w = _as_wire_array(a)
        mv = memoryview(w).cast("B") if w.size else memoryview(b"")
        descs.append({"dtype": w.dtype.name, "shape": list(w.shape), "crc32": zlib.crc32(mv)})
        frames.append(mv)
    return descs, frames


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > MAX_NDIM:
        raise WireError(BAD_BUFFER, f"{where}: shape must be a list of at most {MAX_NDIM} integers, got {value!r:.60}")
    for n in value:
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise WireError(BAD_BUFFER, f"{where}: shape entries must be integers >= 0, got {value!r:.60}")
    return tuple(value)


def decode_buffers(descs: Any, frames: Sequence[Any], limits: Limits = DEFAULT_LIMITS) -> list[np.ndarray]:
    """Arrays from raw frames, checked against their descriptors (read-only views, no copy)."""
    if not isinstance(descs, list):
        raise WireError(BAD_MESSAGE, f"header.buffers must be a list of buffer descriptors, got {descs!r:.60}")
    if len(descs) > limits.max_buffers:
        raise WireError(TOO_LARGE, f"{len(descs)} buffers, at most {limits.max_buffers} allowed per message")
    if len(descs) != len(frames):
        raise WireError(
            BAD_BUFFER, f"header describes {len(descs)} buffer(s) but the message carries {len(frames)} buffer frame(s)"
        )
    out = []
    for i, (d, frame) in enumerate(zip(descs, frames)):
        where = f"buffer {i}"
        if not isinstance(d, dict) or set(d) != {"dtype", "shape", "crc32"}:
            raise WireError(BAD_BUFFER, f"{where}: descriptor must be an object with keys dtype, shape, crc32")
        dtype = DTYPES.get(d["dtype"]) if isinstance(d["dtype"], str) else None
        if dtype is None:
            raise WireError(BAD_BUFFER, f"{where}: dtype {d['dtype']!r:.40} not allowed (allowed: {', '.join(DTYPES)})")
        shape = _shape(d["shape"], where)
        crc = d["crc32"]
        if not isinstance(crc, int) or isinstance(crc, bool) or not 0 <= crc < 2**32:
            raise WireError(BAD_BUFFER, f"{where}: crc32 must be an unsigned 32-bit integer, got {crc!r:.40}")
        data = memoryview(frame)
        expected = math.prod(shape) * dtype.itemsize
        if data.nbytes != expected:
            raise WireError(
                BAD_BUFFER,
                f"{where}: {data.nbytes} bytes received, {expected} expected for {d['dtype']} {list(shape)}",
            )
        if zlib.crc32(data) != crc:
            raise WireError(BAD_BUFFER, f"{where}: crc32 mismatch (buffer corrupted in transit)")
        out.append(np.frombuffer(data, dtype=dtype).reshape(shape))
    return out


def _check_sizes(frames: Sequence[Any], limits: Limits) -> None:
    if not frames:
        raise WireError(BAD_MESSAGE, "empty message (expected a JSON header frame)")
    header_bytes = memoryview(frames[0]).nbytes
    if header_bytes > limits.max_header_bytes:
        raise WireError(TOO_LARGE, f"header is {header_bytes} bytes, at most {limits.max_header_bytes} allowed")
    if len(frames) - 1 > limits.max_buffers:
        raise WireError(TOO_LARGE, f"{len(frames) - 1} buffers, at most {limits.max_buffers} allowed per message")
    total = header_bytes
    for i, f in enumerate(frames[1:]):
        n = memoryview(f).nbytes
        if n > limits.max_buffer_bytes:
            raise WireError(TOO_LARGE, f"buffer {i} is {n} bytes, at most {limits.max_buffer_bytes} allowed")
        total += n
    if total > limits.max_message_bytes:
        raise WireError(TOO_LARGE, f"message is {total} bytes, at most {limits.max_message_bytes} allowed")


def _header(frame: Any) -> dict[str, Any]:
    try:
        text = bytes(frame).decode("utf-8")
    except UnicodeDecodeError:
        raise WireError(BAD_MESSAGE, "header frame is not UTF-8 text (expected a JSON object)") from None
    try:
        header = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise WireError(BAD_MESSAGE, "header frame is not valid JSON (expected a JSON object)") from None
    if not isinstance(header, dict):
        raise WireError(BAD_MESSAGE, f"header must be a JSON object, got {type(header).__name__}")
    return header


def _dumps(header: dict[str, Any]) -> bytes:
    # allow_nan=False: NaN is not JSON and other peers' parsers would choke on it.
    return json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")


# ---------------------------------------------------------------------------
# Requests

REQUEST_KEYS = {"v", "id", "op", "args", "buffers", "deadline_ms"}
REQUIRED_REQUEST_KEYS = {"v", "id", "op"}


def encode_request(
    op: str,
    args: dict[str, Any] | None = None,
    buffers: Sequence[np.ndarray] = (),
    *,
    request_id: str | None = None,
    deadline_ms: int | None = None,
) -> tuple[str, list[Any]]:
    """(request id, frames) for one request."""
    rid = request_id or new_id()
    descs, frames = describe_buffers(buffers)
    header: dict[str, Any] = {"v": PROTOCOL_VERSION, "id": rid, "op": op, "args": args or {}, "buffers": descs}
    if deadline_ms is not None:
        header["deadline_ms"] = int(deadline_ms)
    try:
        head = _dumps(header)
    except (TypeError, ValueError) as e:
        raise WireError(BAD_ARGS, f"{op}: arguments are not JSON-serializable ({e})") from None
    return rid, [head, *frames]


def peek_id(frames: Sequence[Any]) -> str | None:
    """The request id of a message that failed to decode, if one can be read (so the error reply can carry it)."""
    try:
        if frames and memoryview(frames[0]).nbytes <= DEFAULT_LIMITS.max_header_bytes:
            rid = json.loads(bytes(frames[0]).decode("utf-8")).get("id")
            if isinstance(rid, str) and 0 < len(rid) <= MAX_ID_CHARS:
                return rid
    except Exception:  # noqa: BLE001 - best effort only; the real error is reported separately
        pass
    return None


def decode_request(frames: Sequence[Any], limits: Limits = DEFAULT_LIMITS) -> Request:
    """A validated request, or :class:`WireError` saying what was wrong."""
    _check_sizes(frames, limits)
    h = _header(frames[0])
    missing = REQUIRED_REQUEST_KEYS - set(h)
    if missing:
        raise WireError(BAD_MESSAGE, f"header lacks {', '.join(sorted(missing))} (expected keys: v, id, op, args, buffers)")
    unknown = set(h) - REQUEST_KEYS
    if unknown:
        raise WireError(BAD_MESSAGE, f"unknown header key {sorted(unknown)[0]!r} (known: {', '.join(sorted(REQUEST_KEYS))})")
    if h["v"] != PROTOCOL_VERSION or isinstance(h["v"], bool):
        raise WireError(BAD_VERSION, f"protocol version {h['v']!r:.20} not supported (this server speaks v{PROTOCOL_VERSION})")
    rid = h["id"]
    if not isinstance(rid, str) or not 0 < len(rid) <= MAX_ID_CHARS:
        raise WireError(BAD_MESSAGE, f"header.id must be a non-empty string of at most {MAX_ID_CHARS} characters")
    op = h["op"]
    if not isinstance(op, str) or not 0 < len(op) <= MAX_OP_CHARS:
        raise WireError(BAD_MESSAGE, "header.op must be a non-empty operation name")
    args = h.get("args", {})
    if not isinstance(args, dict):
        raise WireError(BAD_ARGS, f"{op}: args must be a JSON object, got {type(args).__name__}")
    deadline = h.get("deadline_ms")
    if deadline is not None and (not isinstance(deadline, int) or isinstance(deadline, bool) or deadline <= 0):
        raise WireError(BAD_MESSAGE, f"header.deadline_ms must be a positive integer (milliseconds), got {deadline!r:.20}")
    buffers = decode_buffers(h.get("buffers", []), frames[1:], limits)
    return Request(rid, op, args, buffers, deadline)


# ---------------------------------------------------------------------------
# Replies


def encode_reply(
    request_id: str | None,
    server: str,
    result: dict[str, Any] | None = None,
    buffers: Sequence[np.ndarray] = (),
) -> list[Any]:
    descs, frames = describe_buffers(buffers)
    header = {"v": PROTOCOL_VERSION, "id": request_id, "server": server, "ok": True, "result": result or {},
              "buffers": descs}
    return [_dumps(header), *frames]


def encode_error(request_id: str | None, server: str, error: WireError) -> list[Any]:
    header = {"v": PROTOCOL_VERSION, "id": request_id, "server": server, "ok": False, "error": error.to_dict()}
    return [_dumps(header)]


def decode_reply(frames: Sequence[Any], limits: Limits = DEFAULT_LIMITS) -> Reply:
    """A validated reply. An error reply is returned with ``ok=False`` and ``error`` set, not raised."""
    _check_sizes(frames, limits)
    h = _header(frames[0])
    if h.get("v") != PROTOCOL_VERSION:
        raise WireError(BAD_VERSION, f"reply speaks protocol version {h.get('v')!r:.20}; this client speaks v{PROTOCOL_VERSION}")
    rid, server, ok = h.get("id"), h.get("server"), h.get("ok")
    if (rid is not None and not isinstance(rid, str)) or not isinstance(server, str) or not isinstance(ok, bool):
        raise WireError(BAD_MESSAGE, "reply header needs id (string or null), server (string) and ok (true/false)")
    if ok:
        result = h.get("result", {})
        if not isinstance(result, dict):
            raise WireError(BAD_MESSAGE, "reply result must be a JSON object")
        return Reply(rid, server, True, result, None, decode_buffers(h.get("buffers", []), frames[1:], limits))
    err = h.get("error")
    if not isinstance(err, dict) or not isinstance(err.get("code"), str):
        raise WireError(BAD_MESSAGE, "error reply lacks error.code")
    error = WireError(err["code"], str(err.get("message", "")), bool(err.get("retryable", False)))
    return Reply(rid, server, False, {}, error, [])


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, tuples and paths turned into plain JSON types (for device status)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist()) if value.size <= 64 else f"<array {value.dtype} {list(value.shape)}>"
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)
