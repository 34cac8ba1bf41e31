"""WebSocket client of the tests, on the `websockets` library from PyPI.

    ws_client.py check URL [CAFILE]      conformance: subprotocol, text, binary,
                                         1 MiB messages, ping/pong, close codes;
                                         prints one JSON line of what it saw
    ws_client.py hold URL [CAFILE]       connects, prints "open", then waits for
                                         the server to close; prints the close
                                         code and how long the socket stayed open
    ws_client.py load URL N SECONDS [CAFILE]
                                         N clients echoing a message every 50 ms,
                                         reconnecting whenever the server closes;
                                         prints counts of connects, messages, and
                                         closes by code (1006: abnormal)

For wss:// URLs the name in the URL is checked against CAFILE's certificates
and the connection goes to 127.0.0.1 (the tests' pools listen there).
"""

import asyncio
import collections
import json
import os
import ssl
import sys
import time
from urllib.parse import urlsplit

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus


def options(url, cafile):
    kw = {"max_size": 4 << 20, "open_timeout": 10, "close_timeout": 5, "ping_interval": None}
    if url.startswith("wss://"):
        kw["ssl"] = ssl.create_default_context(cafile=cafile)
        parts = urlsplit(url)
        kw["host"], kw["port"], kw["server_hostname"] = "127.0.0.1", parts.port, parts.hostname
    return kw


async def check(url, cafile):
    out = {}
    async with connect(url, subprotocols=["chat", "superchat"], **options(url, cafile)) as ws:
        out["subprotocol"] = ws.subprotocol
        await ws.send("hello")
        out["text"] = await ws.recv()
        await ws.send(b"\x00\x01\xff")
        out["binary"] = (await ws.recv()).hex()
        big = os.urandom(1 << 20)
        await ws.send(big)
        out["big_binary"] = (await ws.recv()) == big
        big_text = "é" * (1 << 19)
        await ws.send(big_text)
        out["big_text"] = (await ws.recv()) == big_text
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, 5)
        out["pong"] = True
        await ws.close(4000, "bye")
        out["close_code"] = ws.close_code
        out["close_reason"] = ws.close_reason
    print(json.dumps(out), flush=True)


async def hold(url, cafile):
    async with connect(url, **options(url, cafile)) as ws:
        await ws.send("still here?")
        assert await ws.recv() == "still here?"
        print("open", flush=True)
        opened = time.monotonic()
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd is not None else 1006
            reason = e.rcvd.reason if e.rcvd is not None else ""
        print(json.dumps({"code": code, "reason": reason, "seconds": time.monotonic() - opened}), flush=True)


async def load(url, clients, seconds, cafile):
    deadline = time.monotonic() + seconds
    stats = {"connects": 0, "failed_connects": 0, "messages": 0, "mismatches": 0}
    closes = collections.Counter()
    errors = []
    kw = options(url, cafile)

    async def client(i):
        n = 0
        while time.monotonic() < deadline:
            try:
                async with connect(url, **kw) as ws:
                    stats["connects"] += 1
                    while time.monotonic() < deadline:
                        msg = f"{i}-{n}"
                        n += 1
                        await ws.send(msg)
                        if await ws.recv() != msg:
                            stats["mismatches"] += 1
                        stats["messages"] += 1
                        await asyncio.sleep(0.05)
                closes["by the client"] += 1
            except ConnectionClosed as e:
                closes[str(e.rcvd.code) if e.rcvd is not None else "1006"] += 1
            except (OSError, asyncio.TimeoutError, InvalidHandshake, InvalidStatus) as e:
                stats["failed_connects"] += 1
                if len(errors) < 10:
                    errors.append(repr(e)[:300])
                await asyncio.sleep(0.05)

    await asyncio.gather(*(client(i) for i in range(clients)))
    print(json.dumps({**stats, "closes": closes, "errors": errors}), flush=True)


def main(argv):
    mode, url = argv[1], argv[2]
    if mode == "check":
        asyncio.run(check(url, argv[3] if len(argv) > 3 else None))
    elif mode == "hold":
        asyncio.run(hold(url, argv[3] if len(argv) > 3 else None))
    elif mode == "load":
        asyncio.run(load(url, int(argv[3]), float(argv[4]), argv[5] if len(argv) > 5 else None))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv)
