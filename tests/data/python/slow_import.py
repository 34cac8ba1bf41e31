"""An application that takes $IMPORT_SECONDS (default 5) to import, as Galaxy
takes tens of seconds: a chain reload must not make any request wait for it."""
import os
import time

time.sleep(float(os.environ.get("IMPORT_SECONDS", "5")))


def application(environ, start_response):
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
