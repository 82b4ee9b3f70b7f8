"""Message codec: what goes in comes out, and every malformed message is named by its code."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from labctl.errors import EXIT_DEVICE, EXIT_USAGE, ProtocolError
from labctl.protocol import (
    BAD_ARGS, BAD_BUFFER, BAD_MESSAGE, BAD_VERSION, DEVICE_ERROR, TOO_LARGE, Limits, WireError, decode_reply,
    decode_request, encode_error, encode_reply, encode_request, jsonable, peek_id,
)


def _bytes(frames):
    return [bytes(f) for f in frames]


def test_request_round_trip_keeps_values_dtypes_and_shapes():
    gray = np.arange(200 * 200, dtype=np.uint32).astype(np.uint8).reshape(200, 200)
    field = (np.arange(12) * (1 + 2j)).astype(np.complex64).reshape(3, 4)
    rid, frames = encode_request("slm.show", {"slm": "slm1"}, [gray, field], deadline_ms=1500)
    req = decode_request(_bytes(frames))
    assert (req.id, req.op, req.args, req.deadline_ms) == (rid, "slm.show", {"slm": "slm1"}, 1500)
    assert req.buffers[0].dtype == np.uint8 and req.buffers[0].shape == (200, 200)
    np.testing.assert_array_equal(req.buffers[0], gray)
    np.testing.assert_array_equal(req.buffers[1], field)
    header = json.loads(frames[0])
    assert header["buffers"][0] == {"dtype": "uint8", "shape": [200, 200], "crc32": zlib.crc32(gray.tobytes())}


def test_non_contiguous_and_big_endian_arrays_arrive_as_values():
    a = np.arange(30, dtype=">f4").reshape(5, 6)[:, ::2]
    _, frames = encode_request("x", {}, [a])
    got = decode_request(_bytes(frames)).buffers[0]
    np.testing.assert_array_equal(got, a)
    assert got.dtype == np.dtype("<f4")


def test_reply_round_trip_and_error_reply():
    frame = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    rep = decode_reply(_bytes(encode_reply("abc", "srv", {"n": 1}, [frame])))
    assert rep.ok and rep.id == "abc" and rep.server == "srv" and rep.result == {"n": 1}
    np.testing.assert_array_equal(rep.buffers[0], frame)
    err = decode_reply(_bytes(encode_error("abc", "srv", WireError(DEVICE_ERROR, "camera gone"))))
    assert not err.ok and err.error.code == DEVICE_ERROR and err.error.message == "camera gone"
    assert err.error.retryable is False
    assert isinstance(err.error, ProtocolError) and err.error.exit_code == EXIT_DEVICE
    assert WireError(BAD_ARGS, "x").exit_code == EXIT_USAGE


def _header(**over):
    h = {"v": 1, "id": "r1", "op": "ping", "args": {}, "buffers": []}
    h.update(over)
    return json.dumps({k: v for k, v in h.items() if v is not ...}).encode()


def _code(frames, limits=Limits()):
    with pytest.raises(WireError) as e:
        decode_request(frames, limits)
    return e.value.code


@pytest.mark.parametrize(
    "frames, code",
    [
        ([], BAD_MESSAGE),
        ([b"\xff\xfe not utf-8"], BAD_MESSAGE),
        ([b"{not json"], BAD_MESSAGE),
        ([b"[1, 2]"], BAD_MESSAGE),
        ([b'"just a string"'], BAD_MESSAGE),
        ([_header(v=2)], BAD_VERSION),
        ([_header(v=True)], BAD_VERSION),
        ([_header(v=...)], BAD_MESSAGE),
        ([_header(id=...)], BAD_MESSAGE),
        ([_header(id="")], BAD_MESSAGE),
        ([_header(id=7)], BAD_MESSAGE),
        ([_header(id="x" * 65)], BAD_MESSAGE),
        ([_header(op=3)], BAD_MESSAGE),
        ([_header(args=[1])], BAD_ARGS),
        ([_header(extra=1)], BAD_MESSAGE),
        ([_header(deadline_ms=-5)], BAD_MESSAGE),
        ([_header(deadline_ms=1.5)], BAD_MESSAGE),
        ([_header(buffers={"a": 1})], BAD_MESSAGE),
    ],
)
def test_malformed_headers_are_named(frames, code):
    assert _code(frames) == code


def _with_buffer(desc_over=None, payload=None):
    data = np.arange(6, dtype=np.uint8).reshape(2, 3)
    desc = {"dtype": "uint8", "shape": [2, 3], "crc32": zlib.crc32(data.tobytes())}
    desc.update(desc_over or {})
    return [_header(buffers=[desc]), data.tobytes() if payload is None else payload]


@pytest.mark.parametrize(
    "frames",
    [
        _with_buffer({"crc32": 12345}),
        _with_buffer(payload=b"\x00\x01\x02\x03\x04\x06"),  # one byte flipped: crc catches it
        _with_buffer(payload=b"\x00\x01\x02"),  # short
        _with_buffer({"shape": [3, 3]}),  # shape says more bytes than sent
        _with_buffer({"dtype": "object"}),
        _with_buffer({"dtype": "float16"}),
        _with_buffer({"shape": [-1, 6]}),
        _with_buffer({"shape": [1, 1, 1, 1, 6]}),
        _with_buffer({"crc32": -1}),
        [_header(buffers=[{"dtype": "uint8", "shape": [1]}]), b"\x00"],  # descriptor lacks crc32
        _with_buffer()[:1],  # described but not sent
        _with_buffer() + [b"extra"],  # sent but not described
    ],
)
def test_buffer_mismatches_are_refused(frames):
    assert _code(frames) == BAD_BUFFER


def test_size_limits():
    small = Limits(max_header_bytes=300, max_buffers=2, max_buffer_bytes=100, max_message_bytes=350)
    assert _code([_header(args={"pad": "x" * 400})], small) == TOO_LARGE
    big = np.zeros(101, np.uint8)
    _, frames = encode_request("x", {}, [big])
    assert _code(_bytes(frames), small) == TOO_LARGE
    _, frames = encode_request("x", {}, [np.zeros(90, np.uint8)] * 3)
    assert _code(_bytes(frames), small) == TOO_LARGE  # three buffers, two allowed
    _, frames = encode_request("x", {}, [np.zeros(99, np.uint8)] * 2)
    assert _code(_bytes(frames), small) == TOO_LARGE  # 198 bytes of buffers + a 178-byte header > 350
    _, frames = encode_request("x", {}, [np.zeros(50, np.uint8)] * 2)
    assert decode_request(_bytes(frames), small).buffers[1].shape == (50,)


def test_encoding_refuses_what_the_wire_cannot_carry():
    with pytest.raises(WireError) as e:
        encode_request("x", {}, [np.array(["a"], dtype=object)])
    assert e.value.code == BAD_BUFFER
    with pytest.raises(WireError) as e:
        encode_request("x", {"nan": float("nan")})
    assert e.value.code == BAD_ARGS


def test_peek_id_recovers_the_id_of_a_bad_request_when_possible():
    assert peek_id([_header(v=9, id="abc")]) == "abc"
    assert peek_id([b"garbage"]) is None
    assert peek_id([]) is None


def test_jsonable_turns_numpy_and_tuples_into_json():
    out = jsonable({"a": np.float32(1.5), "b": (1, np.int64(2)), "c": np.zeros(3), "d": float("inf"), 4: None})
    assert out == {"a": 1.5, "b": [1, 2], "c": [0.0, 0.0, 0.0], "d": None, "4": None}
    json.dumps(out)
