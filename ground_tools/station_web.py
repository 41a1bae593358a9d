"""The live station's web page: Starlette routes, a server-sent event stream (sse-starlette),
served by uvicorn on localhost. Libraries rather than hand-written HTTP: the page is the
operator's console, and request parsing, keep-alive and stream disconnects are exactly the
parts a maintained server gets right.

Routes:

- ``GET /``           the page (one HTML file, no external assets: it works offline)
- ``GET /events``     the event stream: first ``snapshot`` (everything), then ``hk``, ``alarm``,
                      ``command``, ``pass``, ``model`` and ``link`` events as they happen
- ``GET /state``      the snapshot as JSON
- ``POST /commands``  ``{"kind": "ping"}`` or ``{"kind": "mode", "mode": "SAFE"}`` -> 202 and
                      the command's record; a bad request -> 400 and what was expected
"""

from __future__ import annotations

import json
import socket
import threading
from importlib import resources

import uvicorn
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from ground_tools.station import Station

#: Seconds between keep-alive comments on an idle event stream.
SSE_PING_S = 15


def build_app(station: Station) -> Starlette:
    page = resources.files("ground_tools").joinpath("station_page.html").read_text(encoding="utf-8")

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(page)

    async def state(request: Request) -> JSONResponse:
        return JSONResponse(station.snapshot())

    async def events(request: Request) -> EventSourceResponse:
        q = station.hub.subscribe()  # before the snapshot: nothing falls between the two

        async def stream():
            try:
                yield {"event": "snapshot", "data": json.dumps(station.snapshot())}
                while True:
                    kind, data = await q.get()
                    yield {"event": kind, "data": json.dumps(data)}
            finally:
                station.hub.unsubscribe(q)

        return EventSourceResponse(stream(), ping=SSE_PING_S)

    async def commands(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "expected a JSON body such as {\"kind\": \"ping\"}"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "expected a JSON object such as {\"kind\": \"ping\"}"}, status_code=400)
        try:
            rec = station.submit(str(body.get("kind")), body.get("mode"))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(rec, status_code=202)

    return Starlette(routes=[
        Route("/", index),
        Route("/state", state),
        Route("/events", events),
        Route("/commands", commands, methods=["POST"]),
    ])


class WebServer:
    """uvicorn serving the station's app, in a thread of its own (`start` / `stop`) or in the
    calling thread (`serve`, for the command line). Port 0 picks a free port (`port` says which)."""

    def __init__(self, station: Station, host: str = "127.0.0.1", port: int = 0):
        self.sock = socket.create_server((host, port))
        self.host, self.port = self.sock.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}"
        # An event stream never ends by itself: shutdown waits at most this long for open ones.
        config = uvicorn.Config(build_app(station), log_level="warning", lifespan="off",
                                timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def serve(self) -> None:
        self.server.run(sockets=[self.sock])

    def start(self) -> WebServer:
        self._thread = threading.Thread(target=self.serve, name="station-web", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.server.force_exit = True  # do not wait for the page's event streams to end
        if self._thread is not None:
            self._thread.join(10)
        self.sock.close()
