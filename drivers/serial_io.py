"""Line-protocol serial instruments over pyserial: transport and declarative properties.

A driver is a thin class over a ``SerialTransport``; its protocol is declared in the
class body with ``measurement`` (a query) and ``control`` (a query plus a set
command), so reading the class shows the instrument's whole protocol. The
transport handles terminators, timeouts, retries and ``ERR <code> <text>``
replies; every failure is a DeviceError naming the port (DeviceTimeout for a
silent device). docs/drivers.md documents the laser and shutter protocols.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable

from drivers.errors import DeviceError, DeviceTimeout


@dataclass(frozen=True)
class PortInfo:
    device: str
    description: str
    hwid: str


def list_serial_ports() -> list[PortInfo]:
    """Serial ports pyserial can see."""
    from serial.tools import list_ports

    return [PortInfo(p.device, p.description or "", p.hwid or "") for p in list_ports.comports()]


class SerialTransport:
    """Sends one command line and reads one reply line, over pyserial.

    ``port`` is a device path or pyserial URL, or an already-open pyserial-like
    object (anything with ``write``, ``read_until``, ``reset_input_buffer`` and
    ``close``) so tests can swap the wire. A query that times out is re-sent
    ``retries`` more times, so the worst case is ``(retries + 1) * timeout_s``.
    Replies longer than ``max_reply`` bytes without a terminator are garbage.
    """

    def __init__(
        self,
        port: Any,
        *,
        baudrate: int = 9600,
        timeout_s: float = 1.0,
        write_termination: str = "\n",
        read_termination: str = "\r\n",
        retries: int = 1,
        max_reply: int = 256,
        encoding: str = "ascii",
    ):
        if not timeout_s > 0:
            raise DeviceError(f"serial port {port!r}: timeout_s must be > 0 seconds, got {timeout_s!r}")
        if retries < 0:
            raise DeviceError(f"serial port {port!r}: retries must be >= 0, got {retries!r}")
        self._port_spec = port
        self.port = port if isinstance(port, str) else str(getattr(port, "port", None) or type(port).__name__)
        self.baudrate = int(baudrate)
        self.timeout_s = float(timeout_s)
        self.write_termination = write_termination.encode(encoding)
        self.read_termination = read_termination.encode(encoding)
        self.retries = int(retries)
        self.max_reply = int(max_reply)
        self.encoding = encoding
        self._ser: Any = None
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------

    def connect(self) -> None:
        if self._ser is not None:
            return
        if not isinstance(self._port_spec, str):
            self._ser = self._port_spec
            return
        import serial

        try:
            self._ser = serial.serial_for_url(
                self._port_spec,
                baudrate=self.baudrate,
                timeout=self.timeout_s,
                write_timeout=self.timeout_s,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as e:
            raise DeviceError(f"serial port {self.port}: cannot open it ({e}); is the instrument plugged in?") from None

    def disconnect(self) -> None:
        ser, self._ser = self._ser, None
        if ser is not None:
            try:
                ser.close()
            except Exception:  # noqa: BLE001 - closing a dead port must not mask the real error
                pass

    @property
    def connected(self) -> bool:
        return self._ser is not None

    # -- I/O ---------------------------------------------------------------

    def _wire(self) -> Any:
        if self._ser is None:
            raise DeviceError(f"serial port {self.port}: not connected")
        return self._ser

    def _send(self, command: str) -> None:
        ser = self._wire()
        try:
            ser.reset_input_buffer()  # a late reply to an earlier, timed-out query must not be read as ours
            ser.write(command.encode(self.encoding) + self.write_termination)
            ser.flush()
        except Exception as e:  # noqa: BLE001 - pyserial raises SerialException, OSError or its timeout
            raise DeviceError(f"serial port {self.port}: write of {command!r} failed ({e})") from None

    def _receive(self, command: str) -> str:
        ser = self._wire()
        try:
            raw = ser.read_until(self.read_termination, self.max_reply)
        except Exception as e:  # noqa: BLE001
            raise DeviceError(f"serial port {self.port}: read after {command!r} failed ({e})") from None
        if not raw.endswith(self.read_termination):
            if len(raw) >= self.max_reply:
                raise DeviceError(
                    f"serial port {self.port}: garbled reply to {command!r} "
                    f"({len(raw)} bytes without a line end, starts {raw[:16]!r}); wrong device or baud rate?"
                )
            if raw:
                raise DeviceTimeout(
                    f"serial port {self.port}: incomplete reply to {command!r} within {self.timeout_s:g} s: {raw[:32]!r}"
                )
            raise DeviceTimeout(f"serial port {self.port}: no reply to {command!r} within {self.timeout_s:g} s")
        body = raw[: -len(self.read_termination)]
        try:
            text = body.decode(self.encoding)
        except UnicodeDecodeError:
            raise DeviceError(f"serial port {self.port}: garbled reply to {command!r}: {body[:32]!r}") from None
        if not text.isprintable():
            raise DeviceError(f"serial port {self.port}: garbled reply to {command!r}: {body[:32]!r}")
        if text.startswith("ERR"):
            parts = text.split(maxsplit=2)
            code = parts[1] if len(parts) > 1 else "?"
            message = parts[2] if len(parts) > 2 else "(no message)"
            raise DeviceError(f"serial port {self.port}: device refused {command!r}: error {code}: {message}")
        return text

    def query(self, command: str) -> str:
        """Send ``command`` and return the reply line (terminator stripped)."""
        with self._lock:
            for attempt in range(self.retries + 1):
                self._send(command)
                try:
                    return self._receive(command)
                except DeviceTimeout:
                    if attempt == self.retries:
                        raise
        raise AssertionError("unreachable")


# ---------------------------------------------------------------------------
# Declarative protocol (PyMeasure-style)


def measurement(query: str, parse: Callable[[str], Any], doc: str) -> property:
    """A read-only property: send ``query``, parse the reply line."""

    def fget(self: "LineInstrument") -> Any:
        return self._parse(query, self.ask(query), parse)

    return property(fget, doc=f"{doc}\n\nProtocol: ``{query}``.")


def control(
    query: str,
    set_command: str,
    parse: Callable[[str], Any],
    validate: Callable[["LineInstrument", Any], Any],
    doc: str,
) -> property:
    """A read/write property: ``query`` reads it, ``set_command.format(value)`` sets it."""

    def fget(self: "LineInstrument") -> Any:
        return self._parse(query, self.ask(query), parse)

    def fset(self: "LineInstrument", value: Any) -> None:
        self.write(set_command.format(validate(self, value)))

    return property(fget, fset, doc=f"{doc}\n\nProtocol: ``{query}`` / ``{set_command}``.")


def one_of(mapping: dict[str, Any]) -> Callable[[str], Any]:
    """Parser for an enumerated reply (e.g. ``{"1": True, "0": False}``)."""

    def parse(text: str) -> Any:
        if text not in mapping:
            raise ValueError(f"expected one of {', '.join(mapping)}")
        return mapping[text]

    return parse


class LineInstrument:
    """Base of serial line-protocol drivers.

    Subclasses set ``IDN_PREFIX``: ``connect`` checks that ``*IDN?`` answers with it,
    so a different device on the port is refused instead of being commanded.
    """

    IDN_PREFIX = ""
    kind = "instrument"

    def __init__(self, transport: SerialTransport, name: str):
        self.transport = transport
        self.name = name
        self.identity = ""

    @property
    def port(self) -> str:
        return self.transport.port

    idn = measurement("*IDN?", str, "Identity line: maker, kind, model, serial, firmware.")

    def connect_transport(self) -> None:
        self.transport.connect()
        try:
            ident = self.idn
            if not ident.startswith(self.IDN_PREFIX):
                raise DeviceError(
                    f"{self.kind} {self.name!r} on {self.port}: answered {ident!r} to *IDN?, "
                    f"expected a device starting {self.IDN_PREFIX!r}"
                )
            self.identity = ident
        except BaseException:
            self.transport.disconnect()
            raise

    def ask(self, command: str) -> str:
        return self.transport.query(command)

    def write(self, command: str) -> None:
        """Send a set command; the device must acknowledge with ``OK``."""
        reply = self.transport.query(command)
        if reply != "OK":
            raise DeviceError(f"{self.kind} {self.name!r} on {self.port}: expected OK to {command!r}, got {reply!r}")

    def _parse(self, command: str, reply: str, parse: Callable[[str], Any]) -> Any:
        try:
            return parse(reply)
        except (TypeError, ValueError) as e:
            raise DeviceError(
                f"{self.kind} {self.name!r} on {self.port}: unexpected reply {reply!r} to {command!r} ({e})"
            ) from None
