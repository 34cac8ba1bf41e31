"""The WSGI conformance application of tests/python_wsgi.rs, wrapped in
wsgiref.validate.validator: any breach of PEP 3333 by the server (environ keys
and types, wsgi.input, start_response, close) raises, which the tests see as a
500 and a traceback in the pool's log.

Routes: /hello, /env (JSON of the CGI keys), /echo (the body through read(n)), /short and /long (a body that does not
match its Content-Length), /no-content (204), /not-modified (304), /exc-info
(start_response called again with exc_info before any body),
/lines (readline + iteration), /readlines, /stream?n=N (a generator; its close()
touches $CLOSE_MARK/NAME), /write (the legacy write callable), /head-later (an
empty first chunk), /boom (an exception), /late-error (an exception after the
first chunk), /sleep?ms=N, /pid, /osenv?name=N (the process environment), /output
(print, wsgi.errors and logging).
"""
import json
import os
import time
from urllib.parse import parse_qs
from wsgiref.validate import validator


def query(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def ok(start_response, body, ctype="text/plain"):
    start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


class Stream:
    """A streamed body whose close() leaves a mark for the test."""

    def __init__(self, n, name):
        self.n, self.name = n, name

    def __iter__(self):
        for i in range(self.n):
            time.sleep(0.01)
            yield b"chunk %06d\n" % i

    def close(self):
        mark = os.environ.get("CLOSE_MARK")
        if mark and self.name:
            with open(os.path.join(mark, self.name), "w") as f:
                f.write("closed")


def raw_app(environ, start_response):
    path = environ["PATH_INFO"]
    q = query(environ)
    if path == "/hello":
        return ok(start_response, b"Hello, world!")
    if path == "/output":
        # The application's own output: print, wsgi.errors, logging.
        print("printed by the application")
        environ["wsgi.errors"].write("written to wsgi.errors\n")
        environ["wsgi.errors"].flush()
        import logging
        logging.getLogger("the.app").warning("logged by the application")
        return ok(start_response, b"ok")
    if path == "/osenv":
        return ok(start_response, os.environ.get(q.get("name", ""), "").encode())
    if path == "/pid":
        return ok(start_response, str(os.getpid()).encode())
    if path.startswith("/env"):
        keys = {k: v for k, v in environ.items() if isinstance(v, str)}
        keys["wsgi.multithread"] = environ["wsgi.multithread"]
        keys["wsgi.multiprocess"] = environ["wsgi.multiprocess"]
        keys["wsgi.input_terminated"] = environ.get("wsgi.input_terminated")
        keys["wsgi.version"] = list(environ["wsgi.version"])
        return ok(start_response, json.dumps(keys).encode(), "application/json")
    if path == "/echo":
        inp = environ["wsgi.input"]
        parts = []
        while True:
            chunk = inp.read(1000)
            if not chunk:
                break
            parts.append(chunk)
        return ok(start_response, b"".join(parts))
    if path == "/lines":
        inp = environ["wsgi.input"]
        first = inp.readline()
        rest = [line for line in inp]
        return ok(start_response, json.dumps([first.decode()] + [r.decode() for r in rest]).encode())
    if path == "/readlines":
        return ok(start_response, str(len(environ["wsgi.input"].readlines())).encode())
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Stream(int(q.get("n", "10")), q.get("name", ""))
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "12")])
        write(b"written ")
        return [b"too!"]
    if path == "/head-later":
        start_response("201 Created", [("Content-Type", "text/plain"), ("X-Later", "yes")])
        return [b"", b"body"]
    if path == "/boom":
        raise RuntimeError("boom for the test")
    if path == "/late-error":
        start_response("200 OK", [("Content-Type", "text/plain")])

        def gen():
            yield b"first part"
            raise RuntimeError("late failure for the test")

        return gen()
    if path == "/short":
        # Says 100 bytes, sends 5: must never look like a valid response.
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
        return [b"short"]
    if path == "/long":
        # Says 5 bytes, sends 11.
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"too long!!!"]
    if path == "/no-content":
        start_response("204 No Content", [])
        return [b""]
    if path == "/not-modified":
        start_response("304 Not Modified", [("ETag", '"x"')])
        return []
    if path == "/exc-info":
        # A head set, then an error before any body: the head is replaced (PEP 3333).
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("replace the head")
        except ValueError:
            import sys
            start_response("503 Service Unavailable", [("Content-Type", "text/plain"), ("Content-Length", "8")], sys.exc_info())
        return [b"replaced"]
    if path == "/sleep":
        time.sleep(int(q.get("ms", "100")) / 1000)
        return ok(start_response, b"slept")
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
    return [b"not found"]


application = validator(raw_app)
