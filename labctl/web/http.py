"""Run the live view's web app beside ``labctl serve``: address rules, socket, uvicorn thread.

Security rule (docs/live-view.md): HTTP has no encryption and no client keys, so a
non-loopback HTTP bind is refused unless ``--insecure`` is given, whatever ``--keys``
says; CURVE keys secure the ZMQ socket only. Remote operators use an SSH tunnel to
the loopback port, or ``labctl view --endpoint`` over the (CURVE-secured) bench
protocol.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from dataclasses import dataclass

from labctl.errors import UsageError

DEFAULT_HTTP_HOST = "127.0.0.1"


@dataclass(frozen=True)
class HttpAddress:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"


def parse_http(value: str) -> HttpAddress:
    """``PORT`` (on 127.0.0.1) or ``HOST:PORT``; UsageError naming what was expected."""
    text = value.strip()
    host, _, port_text = text.rpartition(":")
    host = host or DEFAULT_HTTP_HOST
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise UsageError(f"--http {value!r}: expected PORT or HOST:PORT with a port 0..65535 (0 = any free port)")
    if host.startswith("[") or host.count(":"):
        raise UsageError(f"--http {value!r}: IPv6 addresses are not supported; use 127.0.0.1:PORT")
    return HttpAddress(host, port)


def check_http_bind(addr: HttpAddress, insecure: bool) -> str | None:
    """Refuse a network-facing HTTP bind without ``--insecure``; returns a warning to print, if any."""
    if addr.loopback:
        return None
    if not insecure:
        raise UsageError(
            f"--http {addr.host}:{addr.port} faces the network, and the live view has no encryption or login; "
            "keep it on 127.0.0.1 (use an SSH tunnel, or `labctl view --endpoint`), or add --insecure")
    return (f"WARNING: live view on http://{addr.host}:{addr.port}/ WITHOUT encryption or authentication "
            "(--insecure): anyone who can reach this port sees the bench and can press abort, blank and close shutter.")


def bind_socket(addr: HttpAddress) -> socket.socket:
    """Bind the HTTP port now (before any device opens), so a busy port fails early and clearly."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((addr.host, addr.port))
    except OSError as e:
        sock.close()
        raise UsageError(f"--http: cannot listen on {addr.host}:{addr.port}: {e.strerror or e}") from None
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


class HttpServer:
    """uvicorn serving ``app`` on an already bound socket, in a daemon thread."""

    def __init__(self, app: object, sock: socket.socket):
        import uvicorn

        self.sock = sock
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}/"
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False,
                                timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def start(self) -> "HttpServer":
        self._thread = threading.Thread(target=self._run, name="labctl-http", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self.sock])
        except Exception:  # noqa: BLE001 - the web view failing must not take the bench server down
            logging.getLogger("labctl.web").exception("the live view's HTTP server stopped")

    def request_stop(self) -> None:
        self._server.should_exit = True

    def stop(self, timeout_s: float = 5.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.sock.close()
