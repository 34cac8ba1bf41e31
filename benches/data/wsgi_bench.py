"""The WSGI application of benches/python.sh: `/` answers 13 bytes, `/64k` 64 KiB,
`/pid` the process id (to find the application processes)."""
import os

HELLO = b"Hello, world!"
BIG = b"x" * 65536


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/64k":
        body = BIG
    elif path == "/pid":
        body = str(os.getpid()).encode()
    else:
        body = HELLO
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
