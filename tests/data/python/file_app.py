"""wsgi.file_wrapper for tests/python_wsgi.rs (not under wsgiref's validator,
which wraps the result and so hides the file wrapper from any server).

Routes: /file?seek=N (the file named by $FILE_APP_PATH from position N, through
wsgi.file_wrapper), /bytesio (a BytesIO through it: no descriptor, so it is
iterated), /positions (JSON: each wrapped file's position when the server
closed it: a file the server sent itself was never read, so its position is
where the application left it).
"""
import io
import json
import os
from urllib.parse import parse_qs

positions = []


class Recorded:
    """A file whose close() records its position."""

    def __init__(self, f):
        self.f = f

    def fileno(self):
        return self.f.fileno()

    def tell(self):
        return self.f.tell()

    def read(self, n=-1):
        return self.f.read(n)

    def close(self):
        positions.append(self.f.tell())
        self.f.close()


def application(environ, start_response):
    path = environ["PATH_INFO"]
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if path == "/file":
        f = open(os.environ["FILE_APP_PATH"], "rb")
        f.seek(int(q.get("seek", "0")))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](Recorded(f), 32768)
    if path == "/bytesio":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"x" * 100000), 4096)
    if path == "/positions":
        body = json.dumps(positions).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    start_response("404 Not Found", [("Content-Length", "0")])
    return []
