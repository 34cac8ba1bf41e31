"""The ``zergling`` command: load a WSGI or ASGI application as uWSGI would,
then serve it as a zergling of the pool at ``--attach`` (default
``$ZERGPOOL_SOCKET``).

Options (uWSGI's names): ``--module pkg.mod[:callable|:factory()]``,
``--wsgi-file PATH``, ``--callable NAME`` (default ``application``),
``--mount /prefix=pkg.mod:app`` (repeatable), ``--manage-script-name``,
``--pythonpath DIR`` (repeatable), ``--chdir DIR``, ``--env KEY=VALUE``
(repeatable), ``--threads N``, ``--processes N`` (how many processes the pool
runs: only for ``wsgi.multiprocess``), ``--capacity N``, ``--mercy SECONDS``,
``--interface wsgi|asgi|auto`` (auto: see ``zergling.asgi.is_asgi``),
``--lifespan auto|on|off`` and ``--loop auto|asyncio|uvloop`` (ASGI only),
and ``--yaml FILE[:SECTION]`` / ``--ini FILE[:SECTION]``: the application
options of a uWSGI file (its ``uwsgi:`` section by default), read by the pool's
own parser (``zergpool --print-options``, placeholders included), in place of
the flag; options given after it win.

The application is imported (and its factory called) before the zergling
attaches, so no connection ever waits for an application that is still loading.
An application that cannot be loaded ends the process with status 1 after one
log line naming it and the exception; so does an ASGI application whose
lifespan startup fails, which runs before the zergling attaches (no request
reaches an application that has not started).
"""

import argparse
import importlib
import json
import logging
import os
import runpy
import shutil
import subprocess
import sys

log = logging.getLogger("zergling")

EXIT_LOAD = 1
EXIT_USAGE = 64


class LoadError(Exception):
    """The application named cannot be loaded."""


# uWSGI options of a file that configure the application, and the flag each becomes.
FILE_OPTIONS = {
    "module": "--module",
    "wsgi": "--module",
    "wsgi-file": "--wsgi-file",
    "file": "--wsgi-file",
    "callable": "--callable",
    "mount": "--mount",
    "manage-script-name": "--manage-script-name",
    "pythonpath": "--pythonpath",
    "python-path": "--pythonpath",
    "pp": "--pythonpath",
    "chdir": "--chdir",
    "env": "--env",
    "threads": "--threads",
    "processes": "--processes",
    "workers": "--processes",
    "interface": "--interface",
    "lifespan": "--lifespan",
    "asgi-loop": "--loop",
}


def zergpool_command():
    """The pool's binary: next to this interpreter (the same virtualenv), else on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "zergpool")
    return beside if os.access(beside, os.X_OK) else shutil.which("zergpool")


def options_from_file(flag, value):
    """The application flags a uWSGI file holds, read by ``zergpool --print-options``."""
    zergpool = zergpool_command()
    if zergpool is None:
        raise LoadError(f"{flag} {value}: reading uWSGI files needs the zergpool command (pip install zergpool)")
    out = subprocess.run([zergpool, "--print-options", flag, value], capture_output=True, text=True)
    if out.returncode != 0:
        raise LoadError(out.stderr.strip() or f"{flag} {value}: zergpool exited with {out.returncode}")
    args = []
    for line in out.stdout.splitlines():
        option = json.loads(line)
        name = FILE_OPTIONS.get(option["key"])
        if name == "--manage-script-name":
            args.append(name)
        elif name is not None:
            args.extend([name, option["value"]])
        # Anything else configures the pool (http, static-map, ...), not the application.
    return args


def expand_files(argv):
    """``argv`` with each ``--yaml``/``--ini`` replaced by the flags its file holds."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        for flag in ("--yaml", "--ini"):
            if arg == flag and i + 1 < len(argv):
                out.extend(options_from_file(flag, argv[i + 1]))
                i += 2
                break
            if arg.startswith(flag + "="):
                out.extend(options_from_file(flag, arg[len(flag) + 1 :]))
                i += 1
                break
        else:
            out.append(arg)
            i += 1
    return out


def parse_args(argv):
    p = argparse.ArgumentParser(prog="zergling", description=__doc__.split("\n\n")[0])
    p.add_argument("--module", "-w", help="pkg.mod, pkg.mod:callable or pkg.mod:factory()")
    p.add_argument("--wsgi-file", "--file", dest="wsgi_file", help="a Python file defining the callable")
    p.add_argument("--callable", default="application", help="the callable's name (default: application)")
    p.add_argument("--mount", action="append", default=[], help="/prefix=pkg.mod:app or /prefix=path/to/file.py")
    p.add_argument("--manage-script-name", action="store_true", help="split SCRIPT_NAME/PATH_INFO at the mount (always done)")
    p.add_argument("--pythonpath", "--python-path", "--pp", action="append", default=[], help="add a folder to sys.path")
    p.add_argument("--chdir", help="change to this folder first")
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE, set in os.environ")
    p.add_argument("--threads", type=int, default=1, help="requests served at once (Python threads)")
    p.add_argument("--processes", "--workers", "-p", type=int, default=1, help="processes serving the application")
    p.add_argument("--capacity", type=int, default=1024, help="most connections held at once")
    p.add_argument("--io-threads", type=int, default=1, help="threads serving the connections (Rust), besides --threads")
    p.add_argument(
        "--no-batch-scheduling",
        dest="batch_scheduling",
        action="store_false",
        help="keep Linux's default scheduling policy (default: SCHED_BATCH, fewer context switches per request)",
    )
    p.add_argument("--mercy", type=float, default=60.0, help="seconds requests in flight get when draining")
    p.add_argument("--attach", default=os.environ.get("ZERGPOOL_SOCKET"), help="the pool's attach socket")
    p.add_argument("--interface", choices=["auto", "wsgi", "asgi"], default="auto", help="WSGI or ASGI (auto: an async callable is ASGI)")
    p.add_argument("--lifespan", choices=["auto", "on", "off"], default="auto", help="ASGI lifespan protocol (auto: used when the application speaks it)")
    p.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto", help="ASGI event loop (auto: uvloop when installed)")
    a = p.parse_args(argv)
    if not (a.module or a.wsgi_file or a.mount):
        p.error("nothing to serve: give --module, --wsgi-file or --mount")
    if not a.attach:
        p.error("no pool socket: give --attach PATH or set ZERGPOOL_SOCKET")
    if min(a.threads, a.processes, a.capacity, a.io_threads) < 1:
        p.error("--threads, --processes, --capacity and --io-threads must be at least 1")
    return a


def load(spec, default_callable):
    """An application from uWSGI's notation: ``pkg.mod``, ``pkg.mod:name``,
    ``pkg.mod:factory()``, or a path ending in ``.py`` (``:name`` allowed)."""
    target, _, name = spec.partition(":")
    name = name or default_callable
    call = name.endswith("()")
    if call:
        name = name[:-2]
    try:
        if target.endswith(".py") or os.sep in target:
            namespace = runpy.run_path(target, run_name="uwsgi_file_" + os.path.basename(target)[:-3])
            obj = namespace.get(name)
            if obj is None:
                raise LoadError(f"{target} defines no `{name}`")
        else:
            module = importlib.import_module(target)
            obj = getattr(module, name, None)
            if obj is None:
                raise LoadError(f"module {target} has no `{name}`")
        if call:
            obj = obj()
    except LoadError:
        raise
    except BaseException as e:  # the application's own error, whatever it is
        raise LoadError(f"cannot load {spec}: {type(e).__name__}: {e}") from e
    if not callable(obj):
        raise LoadError(f"{spec}: `{name}` is not callable")
    return obj


def setup_output():
    # The pool prefixes every line a zergling writes: keep lines whole and timely.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)
        except (AttributeError, ValueError):
            pass
    if not logging.getLogger().handlers:
        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def main(argv=None):
    setup_output()
    try:
        argv = expand_files(sys.argv[1:] if argv is None else argv)
    except LoadError as e:
        log.error("%s", e)
        return EXIT_USAGE
    args = parse_args(argv)
    if args.chdir:
        os.chdir(args.chdir)
    for kv in args.env:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            log.error("--env %s: expected KEY=VALUE", kv)
            return EXIT_USAGE
        os.environ[key] = value
    for folder in reversed(args.pythonpath):
        sys.path.insert(0, os.path.abspath(folder))
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        app = None
        if args.module:
            app = load(args.module, args.callable)
        elif args.wsgi_file:
            app = load(args.wsgi_file, args.callable)
        mounts = []
        for m in args.mount:
            prefix, sep, spec = m.partition("=")
            if not sep or not prefix.startswith("/"):
                log.error("--mount %s: expected /PREFIX=pkg.mod:app", m)
                return EXIT_USAGE
            mounts.append((prefix, load(spec, args.callable)))
    except LoadError as e:
        log.error("%s", e)
        return EXIT_LOAD
    from . import asgi

    interface = args.interface
    if interface == "auto":
        apps = [a for a in [app] + [m[1] for m in mounts] if a is not None]
        kinds = {asgi.is_asgi(a) for a in apps}
        if len(kinds) > 1:
            log.error("WSGI and ASGI applications cannot share a process: wrap the WSGI ones with a2wsgi.WSGIMiddleware")
            return EXIT_USAGE
        interface = "asgi" if kinds == {True} else "wsgi"
    if interface == "asgi":
        return serve_asgi(app or asgi_not_found, mounts, args)
    if app is None:
        app = not_found
    from ._native import serve

    serve(
        app,
        args.attach,
        threads=args.threads,
        processes=args.processes,
        capacity=args.capacity,
        mercy_secs=args.mercy,
        mounts=mounts,
        tags=[f"pid={os.getpid()}"],
        io_threads=args.io_threads,
        batch_scheduling=args.batch_scheduling,
    )
    return 0


def serve_asgi(app, mounts, args):
    """Runs the lifespan startup, then serves on this thread's event loop until
    the zergling has drained, then runs the lifespan shutdown."""
    import asyncio
    import functools
    import signal

    from . import asgi
    from ._native import serve_asgi as native_serve

    try:
        loop = asgi.new_loop(args.loop)
    except ImportError:
        log.error("--loop uvloop: uvloop is not installed in this environment (pip install uvloop)")
        return EXIT_USAGE
    asyncio.set_event_loop(loop)
    lifespan = asgi.Lifespan(app, args.lifespan)
    try:
        loop.run_until_complete(lifespan.startup())
    except asgi.StartupFailed as e:
        log.error("the application's startup failed: %s", e)
        return EXIT_LOAD
    # SIGTERM, SIGINT and SIGHUP drain the zergling (its Rust side handles them):
    # no KeyboardInterrupt in the middle of the loop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    done = loop.create_future()
    bridge = native_serve(
        app,
        loop,
        asgi.run,
        functools.partial(asgi.resolve, done),
        args.attach,
        state=lifespan.state if lifespan.supported else None,
        capacity=args.capacity,
        mercy_secs=args.mercy,
        mounts=mounts,
        tags=[f"pid={os.getpid()}"],
        io_threads=args.io_threads,
        batch_scheduling=args.batch_scheduling,
    )
    loop.add_reader(bridge.fileno(), bridge.run_pending)
    error = loop.run_until_complete(done)
    loop.remove_reader(bridge.fileno())
    loop.run_until_complete(lifespan.shutdown())
    loop.close()
    if error:
        log.error("%s", error)
        return 1
    return 0


async def asgi_not_found(scope, receive, send):
    """Served where no mount matches and no default application was given (ASGI)."""
    if scope["type"] == "lifespan":
        raise RuntimeError("no lifespan")
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"Not Found\n"})


def not_found(environ, start_response):
    """Served where no mount matches and no default application was given."""
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
    return [b"Not Found\n"]


if __name__ == "__main__":
    raise SystemExit(main())
