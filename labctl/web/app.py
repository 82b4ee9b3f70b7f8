"""The live view's web app (Starlette): one page, a JSON state, the newest frame, three safe buttons.

Frames are long-polled: the page asks for "a frame newer than N", gets the newest
one when it exists (waiting up to ``FRAME_WAIT_S``), draws it, and only then asks
again. A browser that draws slowly therefore skips frames; the server never keeps
a queue per viewer.

The buttons POST to ``/api/action/<name>`` and must carry the ``X-Labctl-Action``
header: a page from another site cannot add it without a CORS preflight, which
this app never grants, so a malicious page cannot press abort in the operator's
browser. ``allowed_hosts`` defeats DNS rebinding on a loopback bind.
"""

from __future__ import annotations

import asyncio
from importlib.resources import files
from typing import Sequence

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from labctl.errors import LabctlError
from labctl.web.feed import ACTIONS, LiveFeed
from labctl.web.render import SCALES

FRAME_WAIT_S = 2.0
ACTION_HEADER = "x-labctl-action"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
NO_STORE = {"Cache-Control": "no-store"}


class _FrameWake:
    """Wakes every waiting request when the feed has a new frame: one event per frame, no polling loop."""

    def __init__(self, feed: LiveFeed):
        self.feed = feed
        self.loop: asyncio.AbstractEventLoop | None = None
        self.event: asyncio.Event | None = None

    def _notify(self) -> None:  # in the event loop
        if self.event is not None:
            self.event.set()
            self.event = asyncio.Event()

    async def until_newer(self, after: int, timeout_s: float) -> None:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
            self.event = asyncio.Event()
            loop = self.loop
            self.feed.add_listener(lambda: loop.call_soon_threadsafe(self._notify))
        deadline = self.loop.time() + timeout_s
        while True:
            event = self.event  # taken before the check, so a frame arriving in between still wakes us
            if self.feed.frame_seq() > after:
                return
            left = deadline - self.loop.time()
            if left <= 0 or event is None:
                return
            try:
                await asyncio.wait_for(event.wait(), left)
            except TimeoutError:
                return


def create_app(feed: LiveFeed, allowed_hosts: Sequence[str] = LOOPBACK_HOSTS) -> Starlette:
    static = files("labctl.web") / "static"
    index_html = (static / "index.html").read_text(encoding="utf-8")

    async def index(request: Request) -> Response:
        feed.touch()
        return HTMLResponse(index_html, headers=NO_STORE)

    async def state(request: Request) -> Response:
        feed.touch()
        return Response(feed.state_json(), media_type="application/json", headers=NO_STORE)

    wake = _FrameWake(feed)

    async def frame(request: Request) -> Response:
        feed.touch()
        scale = request.query_params.get("scale", "full")
        if scale not in SCALES:
            return JSONResponse({"error": f"scale must be one of {', '.join(SCALES)}, got {scale[:20]!r}"}, 400)
        try:
            after = int(request.query_params.get("after", "0"))
        except ValueError:
            return JSONResponse({"error": "after must be an integer frame sequence number"}, 400)
        await wake.until_newer(after, FRAME_WAIT_S)
        feed.touch()
        seq, jpeg = feed.frame_jpeg(scale, render_missing=False)
        if jpeg is None and seq > after:
            seq, jpeg = await run_in_threadpool(feed.frame_jpeg, scale)  # first ask for this scale: render it once
        if jpeg is None or seq <= after:
            return Response(status_code=204, headers={**NO_STORE, "X-Frame-Seq": str(seq)})
        return Response(jpeg, media_type="image/jpeg", headers={**NO_STORE, "X-Frame-Seq": str(seq)})

    async def slm_map(request: Request) -> Response:
        png = feed.map_png(request.path_params["name"])
        if png is None:
            return JSONResponse({"error": "no such SLM map (yet)"}, 404)
        return Response(png, media_type="image/png", headers=NO_STORE)

    async def artifact(request: Request) -> Response:
        path = feed.artifact_file(request.path_params["kind"], request.path_params["name"])
        if path is None or not path.is_file():
            return JSONResponse({"error": "not a listed artifact"}, 404)
        return FileResponse(path, headers=NO_STORE)

    async def action(request: Request) -> Response:
        name = request.path_params["name"]
        if request.headers.get(ACTION_HEADER) != "1":
            return JSONResponse({"ok": False, "error": f"missing header {ACTION_HEADER}: 1"}, 403)
        if name not in ACTIONS:
            return JSONResponse({"ok": False, "error": f"unknown action {name[:30]!r} (expected {', '.join(ACTIONS)})"}, 404)
        try:
            result = await run_in_threadpool(feed.act, name)
        except LabctlError as e:
            return JSONResponse({"ok": False, "error": str(e)}, 409)
        return JSONResponse({"ok": True, "action": name, "result": result})

    routes = [
        Route("/", index),
        Route("/api/state", state),
        Route("/api/frame.jpg", frame),
        Route("/api/slm/{name}.png", slm_map),
        Route("/api/files/{kind}/{name}", artifact),
        Route("/api/action/{name}", action, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(static)), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))])
