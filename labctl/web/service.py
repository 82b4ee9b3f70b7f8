"""The live view attached to a running bench server: feed (in-process client) + web app + HTTP thread."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Sequence

from labctl.client import BenchClient
from labctl.web.app import LOOPBACK_HOSTS, create_app
from labctl.web.artifacts import ArtifactDirs
from labctl.web.feed import LiveFeed
from labctl.web.http import HttpServer


def artifact_dirs(root: str | Path = ".") -> ArtifactDirs:
    """calibrations/, models/ and runs/ under ``root`` (where the other commands write by default)."""
    root = Path(root)
    return ArtifactDirs(root / "calibrations", root / "models", root / "runs")


class WebView:
    """Serves the live view of ``server`` (a started :class:`labctl.server.BenchServer`) on ``sock``.

    The feed talks to the server over its in-process endpoint: the same op handlers
    the CLI reaches over TCP, no network hop, no keys needed, no device opened here.
    """

    def __init__(self, server: Any, sock: socket.socket, dirs: ArtifactDirs | None = None, *, fps: float = 10.0,
                 allowed_hosts: Sequence[str] = LOOPBACK_HOSTS):
        if server.inproc_endpoint is None:
            raise RuntimeError("open the bench server before attaching the live view")
        endpoint, ctx = server.inproc_endpoint, server.context
        # polls answer from the server loop in microseconds: a short timeout lets the feed stop
        # promptly when the server shuts down first; a button may wait for a job step
        self.feed = LiveFeed(lambda: BenchClient(endpoint, context=ctx, timeout_s=1.0, retries=0), dirs, fps=fps,
                             connect_actions=lambda: BenchClient(endpoint, context=ctx, timeout_s=30.0))
        self.http = HttpServer(create_app(self.feed, allowed_hosts), sock)

    @property
    def url(self) -> str:
        return self.http.url

    def start(self) -> "WebView":
        self.feed.start()
        self.http.start()
        return self

    def request_stop(self) -> None:
        """Begin stopping without waiting (safe in a signal handler): pages and polls end
        while the server still answers."""
        self.http.request_stop()
        self.feed.request_stop()

    def stop(self) -> None:
        """Stop serving pages, then the feed (its sockets must close before the server's context ends)."""
        self.http.stop()
        self.feed.stop()
