"""ASGI on the Python side: which interface an application speaks, the event
loop, the lifespan protocol, and the coroutine each request runs as.

The HTTP side (connections, scopes, ``receive``/``send``, backpressure,
``http.disconnect``) is the Rust bridge's (``zergling._native.serve_asgi``);
this module only runs what must run in Python.

The interface rule (``--interface auto``, the default): an application is ASGI
when it is a coroutine function (``async def app(scope, receive, send)``) or an
object whose ``__call__`` is one (Starlette, FastAPI, Django's ASGIHandler,
a2wsgi's WSGIMiddleware); anything else callable is WSGI.
"""

import asyncio
import inspect
import logging

log = logging.getLogger("zergling")


def is_asgi(app):
    """Whether ``app`` is an ASGI application, by the rule above."""
    if inspect.iscoroutinefunction(app):
        return True
    call = getattr(app, "__call__", None)
    return call is not None and inspect.iscoroutinefunction(call)


def new_loop(kind):
    """A new event loop: ``uvloop``, ``asyncio``, or ``auto`` (uvloop when installed)."""
    if kind in ("uvloop", "auto"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def resolve(future, value):
    """Sets ``future``'s result unless it is done."""
    if not future.done():
        future.set_result(value)


async def run(app, scope, proto):
    """One request: the application's call, its end reported to the bridge."""
    try:
        await app(scope, proto.receive, proto.send)
    except BaseException as e:
        if proto.client_gone():
            log.debug("the ASGI application ended with %r after its client left", e)
        elif not isinstance(e, asyncio.CancelledError):
            log.exception("Exception in ASGI application")
        proto.finished(True)
        if not isinstance(e, Exception):
            raise
    else:
        proto.finished(False)


class StartupFailed(Exception):
    """The application's lifespan startup failed."""


class Lifespan:
    """The lifespan protocol (ASGI 3.0): startup before the zergling attaches,
    shutdown once it has drained.

    ``mode``: ``on`` (an application that does not speak it is an error),
    ``off``, or ``auto``: an application that raises before it sends any
    lifespan message is taken not to speak it, as uvicorn does.
    """

    def __init__(self, app, mode="auto"):
        self.app = app
        self.mode = mode
        self.state = {}
        self.supported = mode != "off"
        self.spoke = False
        self.failure = None
        self.task = None

    async def startup(self):
        if not self.supported:
            return
        self.queue = asyncio.Queue()
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self.main())
        await self.queue.put({"type": "lifespan.startup"})
        await self.started.wait()
        if self.failure is not None:
            raise StartupFailed(self.failure)

    async def shutdown(self):
        if not self.supported or self.task is None or self.task.done():
            return
        await self.queue.put({"type": "lifespan.shutdown"})
        await self.stopped.wait()

    async def main(self):
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        try:
            await self.app(scope, self.queue.get, self.send)
        except BaseException as e:
            if self.spoke or self.mode == "on":
                if self.failure is None and not self.started.is_set():
                    self.failure = f"{type(e).__name__}: {e}"
                log.exception("Exception in the ASGI lifespan")
            else:
                log.info("the application does not speak the ASGI lifespan protocol (it raised %s); going on without", type(e).__name__)
            self.supported = False
        finally:
            self.started.set()
            self.stopped.set()

    async def send(self, message):
        self.spoke = True
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self.started.set()
        elif kind == "lifespan.startup.failed":
            self.failure = message.get("message") or "lifespan.startup.failed"
            self.started.set()
        elif kind == "lifespan.shutdown.complete":
            self.stopped.set()
        elif kind == "lifespan.shutdown.failed":
            log.error("the application's shutdown failed: %s", message.get("message", ""))
            self.stopped.set()
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} in a lifespan scope")
