#!/usr/bin/env python3
"""Captures the uwsgi packets a real nginx sends with `uwsgi_pass`, for the parser tests.

Starts its own nginx (config/nginx/test-nginx.conf.template filled in a temporary
prefix, loopback ports only) in front of a tiny uwsgi "server" written here, sends a
few requests with curl, and saves what nginx sent for each one as
crates/core/tests/data/uwsgi/NAME.bin: the 4-byte header, the vars block and then the request
body (CONTENT_LENGTH bytes), exactly as they arrived on the socket. Then nginx is
stopped by its pid. See README.md next to this file.

Usage: python3 crates/core/tests/data/uwsgi/capture.py [OUTDIR]   (run from the repository root)
"""

import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..", ".."))
TEMPLATE = os.path.join(ROOT, "config", "nginx", "test-nginx.conf.template")

# name, curl arguments (the URL base is appended to the first argument starting with '/').
CAPTURES = [
    ("get-root", ["/"]),
    ("head-root", ["-I", "/"]),
    (
        "get-query-headers",
        [
            "/search/caf%C3%A9/a%20b?q=zerg+pool&lang=en&empty=&x=%2F",
            "-H", "X-Foo: first",
            "-H", "X-Foo: second",
            "-H", "Accept: text/html,application/xhtml+xml;q=0.9,*/*;q=0.8",
            "-H", "Accept-Language: en-GB,en;q=0.5",
            "-H", "Accept-Encoding: gzip, deflate",
            "-H", "Cookie: session=abc123; theme=dark",
            "-H", "Referer: http://example.test/start",
            "-H", "X-Request-Id: 0f3c9a3e-5b1d-4a57-9f0e-6f1f2d7d8c11",
            "-H", "X-Forwarded-For: 203.0.113.7",
            "-H", "Cache-Control: no-cache",
            "-H", "Dnt: 1",
            "-H", "X-Empty;",
            "-H", "User-Agent: zergpool-capture/1.0 (curl)",
        ],
    ),
    (
        "post-small",
        [
            "/echo",
            "-X", "POST",
            "-H", "Content-Type: application/x-www-form-urlencoded",
            "--data-binary", "hello=world&zerg=pool",
        ],
    ),
    (
        "post-chunked",
        [
            "/echo",
            "-X", "POST",
            "-H", "Transfer-Encoding: chunked",
            "-H", "Content-Type: application/octet-stream",
            "--data-binary", "@-",
        ],
    ),
]
CHUNKED_BODY = b"chunked upload: nginx de-chunks this body\n" * 3 + bytes(range(0x80, 0x90))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def content_length(block):
    """CONTENT_LENGTH from a vars block (leading digits, empty = 0), as uWSGI reads it."""
    pos, value = 0, b""
    while pos < len(block):
        (klen,) = struct.unpack_from("<H", block, pos)
        key = block[pos + 2 : pos + 2 + klen]
        pos += 2 + klen
        (vlen,) = struct.unpack_from("<H", block, pos)
        if key == b"CONTENT_LENGTH":
            value = block[pos + 2 : pos + 2 + vlen]
        pos += 2 + vlen
    digits = b""
    for c in value:
        if 0x30 <= c <= 0x39:
            digits += bytes([c])
        else:
            break
    return int(digits) if digits else 0


def serve(listener, names, outdir, captured):
    for name in names:
        conn, _ = listener.accept()
        with conn:
            head = read_exact(conn, 4)
            (datasize,) = struct.unpack_from("<H", head, 1)
            block = read_exact(conn, datasize)
            body = read_exact(conn, content_length(block))
            with open(os.path.join(outdir, name + ".bin"), "wb") as f:
                f.write(head + block + body)
            captured.append((name, 4 + datasize, len(body)))
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\ncaptured " + name.encode() + b"\n")


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    upstream = "127.0.0.1:%d" % listener.getsockname()[1]
    listen = "127.0.0.1:%d" % free_port()
    captured = []
    server = threading.Thread(target=serve, args=(listener, [n for n, _ in CAPTURES], outdir, captured), daemon=True)
    server.start()

    with tempfile.TemporaryDirectory(prefix="zergpool-capture-") as prefix:
        with open(TEMPLATE) as f:
            conf = f.read().replace("@PREFIX@", prefix).replace("@LISTEN@", listen).replace("@UPSTREAM@", upstream)
        conf_path = os.path.join(prefix, "nginx.conf")
        with open(conf_path, "w") as f:
            f.write(conf)
        nginx = subprocess.Popen(["nginx", "-p", prefix, "-c", conf_path, "-e", os.path.join(prefix, "error.log")])
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", int(listen.rsplit(":", 1)[1])), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or nginx.poll() is not None:
                        raise SystemExit("nginx did not start; see " + os.path.join(prefix, "error.log"))
                    time.sleep(0.05)
            base = "http://" + listen
            for name, args in CAPTURES:
                args = [base + a if a.startswith("/") else a for a in args]
                stdin = CHUNKED_BODY if name == "post-chunked" else None
                out = subprocess.run(["curl", "-sS", "--max-time", "10"] + args, input=stdin, capture_output=True, check=True)
                print(f"{name}: curl got {out.stdout[:60]!r}")
        finally:
            nginx.terminate()  # by its own pid
            nginx.wait(timeout=10)
    server.join(timeout=5)
    for name, head_len, body_len in captured:
        print(f"{name}.bin: packet {head_len} bytes, body {body_len} bytes")


if __name__ == "__main__":
    main()
