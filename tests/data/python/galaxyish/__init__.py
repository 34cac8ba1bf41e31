"""A Galaxy-shaped application for the tests: what Galaxy is since 22.05, in
miniature. A FastAPI factory (``galaxyish:factory()``, as Galaxy's
``galaxy.webapps.galaxy.fast_factory:factory()``) with a lifespan, a JSON API,
a legacy WSGI application (Flask) mounted with a2wsgi, server-sent events that
never end by themselves, uploads streamed to disk, a background task, and a
WebSocket endpoint.

``GALAXYISH_RECORD`` names a file where lifecycle events are appended as JSON
lines (``startup``, ``shutdown``, ``disconnected``, ``wait_disconnected``,
``wait_timeout``, ``background``), with the
process id: the tests read what happened inside the application from it.
``GALAXYISH_FAIL_STARTUP`` makes the startup fail.
"""

import asyncio
import hashlib
import json
import os
import tempfile
import time
from contextlib import asynccontextmanager

from a2wsgi import WSGIMiddleware
from fastapi import BackgroundTasks, FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from flask import Flask


def record(event, **fields):
    path = os.environ.get("GALAXYISH_RECORD")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"event": event, "pid": os.getpid(), "time": time.time(), **fields}) + "\n")


def legacy_app():
    """The legacy controllers: a WSGI application."""
    legacy = Flask("legacy")

    @legacy.route("/hello")
    def hello():
        return "hello from the legacy WSGI controllers"

    return legacy


def factory():
    @asynccontextmanager
    async def lifespan(app):
        record("startup")
        if os.environ.get("GALAXYISH_FAIL_STARTUP"):
            raise RuntimeError("cannot reach the database")
        yield {"started_at": time.time()}
        record("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.get("/api/version")
    async def version(request: Request):
        return {"version_major": "24.1", "pid": os.getpid(), "started": "started_at" in request.state._state}

    @app.post("/api/upload")
    async def upload(request: Request):
        digest, size = hashlib.sha256(), 0
        with tempfile.NamedTemporaryFile(delete=True) as f:
            async for chunk in request.stream():
                f.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            f.flush()
            on_disk = os.path.getsize(f.name)
        return {"size": size, "on_disk": on_disk, "sha256": digest.hexdigest()}

    @app.get("/api/stream")
    async def stream(n: int = 5):
        async def chunks():
            for i in range(n):
                yield f"line {i}\n"
                await asyncio.sleep(0)

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/api/events")
    async def events(request: Request):
        async def ticks():
            i = 0
            try:
                while True:
                    i += 1
                    yield f"data: tick {i}\n\n"
                    await asyncio.sleep(0.1)
            finally:
                record("disconnected", ticks=i)

        return StreamingResponse(ticks(), media_type="text/event-stream")

    @app.get("/api/wait")
    async def wait(request: Request, limit: float = 30.0):
        # A long poll: works without writing, asking whether the client is
        # still there (Starlette's is_disconnected() cancels a receive() each time).
        started = time.time()
        while time.time() - started < limit:
            if await request.is_disconnected():
                record("wait_disconnected", after=time.time() - started)
                return {"gone": True}
            await asyncio.sleep(0.05)
        record("wait_timeout")
        return {"gone": False}

    @app.post("/api/jobs")
    async def jobs(background: BackgroundTasks):
        background.add_task(record, "background")
        return {"queued": True}

    @app.websocket("/api/ws")
    async def ws(websocket: WebSocket):
        await websocket.accept(subprotocol=(websocket.scope.get("subprotocols") or [None])[0])
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text") is not None:
                    await websocket.send_text(message["text"])
                else:
                    await websocket.send_bytes(message["bytes"])
        except WebSocketDisconnect:
            return

    app.mount("/legacy", WSGIMiddleware(legacy_app()))
    return app
