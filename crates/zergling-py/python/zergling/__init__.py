"""zergling: serve Python WSGI applications as zerglings of a zergpool.

The HTTP, TLS metadata, pool protocol and all I/O run in Rust (the zergling
library, through ``zergling._native``); Python runs only the application.

    from zergling import serve
    serve(app, attach="/run/zergpool.sock", threads=4)

The ``zergling`` command (``zergling.cli``) loads an application the way uWSGI's
``module``/``wsgi-file``/``callable``/``mount`` options do and serves it.
"""

from ._native import serve

__all__ = ["serve"]
