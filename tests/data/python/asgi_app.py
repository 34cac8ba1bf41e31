"""A raw ASGI 3.0 application for the tests: each path checks one part of the
bridge, without a framework in between.

    /scope              the scope as JSON (bytes as latin-1 text)
    /echo               the request body back, read with receive() until
                        more_body is False; the sizes of the messages in a header
    /stream?n=N         N chunks, each sent with more_body=True, then an empty one
    /trailers           asks for trailers: send() raises, the test sees 500
    /raise              raises before responding: 500
    /no-response        returns without responding: 500
    /slow-reader        reads the body slowly (backpressure)
    /firehose           streams 64 KiB chunks for ever, counting what send()
                        took; /firehose-sent says how much (backpressure)
"""

import asyncio
import json
import os

FIREHOSE = {"sent": 0}


def latin1(b):
    return b.decode("latin-1") if isinstance(b, bytes) else b


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["greeting"] = "hello from lifespan"
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert scope["type"] == "http"
    path = scope["path"]
    if path.startswith("/scope"):
        shown = {k: v for k, v in scope.items() if k not in ("headers", "state")}
        shown = {k: latin1(v) for k, v in shown.items()}
        shown["headers"] = [[latin1(k), latin1(v)] for k, v in scope["headers"]]
        shown["state"] = dict(scope.get("state", {}))
        shown["pid"] = os.getpid()
        await respond(send, 200, json.dumps(shown).encode(), b"application/json")
    elif path == "/echo":
        body, sizes = bytearray(), []
        while True:
            message = await receive()
            assert message["type"] == "http.request", message
            body += message["body"]
            sizes.append(len(message["body"]))
            if not message.get("more_body", False):
                break
        await respond(send, 200, bytes(body), b"application/octet-stream", [(b"x-messages", str(len(sizes)).encode())])
    elif path == "/stream":
        n = int(dict(p.split(b"=") for p in scope["query_string"].split(b"&") if b"=" in p).get(b"n", b"3"))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for i in range(n):
            await send({"type": "http.response.body", "body": f"chunk {i}\n".encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/trailers":
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
    elif path == "/raise":
        raise RuntimeError("the application failed on purpose")
    elif path == "/no-response":
        return
    elif path == "/firehose":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        chunk = b"x" * 65536
        try:
            while True:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                FIREHOSE["sent"] += len(chunk)
        except OSError:
            return
    elif path == "/firehose-sent":
        await respond(send, 200, str(FIREHOSE["sent"]).encode(), b"text/plain")
    elif path == "/slow-reader":
        total = 0
        while True:
            message = await receive()
            total += len(message["body"])
            await asyncio.sleep(0.01)
            if not message.get("more_body"):
                break
        await respond(send, 200, str(total).encode(), b"text/plain")
    else:
        await respond(send, 404, b"not found\n", b"text/plain")


async def respond(send, status, body, content_type, extra=()):
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
