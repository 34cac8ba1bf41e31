"""The ASGI application of benches/asgi.sh: `/` answers 13 bytes, `/pid` the
process id (to find the application processes), `/ws` echoes WebSocket
messages."""
import os

HELLO = b"Hello, world!"
HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"13")]


async def app(scope, receive, send):
    kind = scope["type"]
    if kind == "http":
        if scope["path"] == "/pid":
            body = str(os.getpid()).encode()
            headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
        else:
            body, headers = HELLO, HEADERS
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif kind == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            if message.get("bytes") is not None:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
            else:
                await send({"type": "websocket.send", "text": message["text"]})
    elif kind == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
