//! `zergling._native`: the PyO3 binding of the zergling library.
//!
//! Two functions: [`serve`] attaches to a pool and serves a WSGI application
//! until the zergling drains; [`serve_asgi`] starts the same for an ASGI
//! application whose requests run on the caller's asyncio event loop, and
//! returns at once. Everything but the application runs in Rust without the
//! GIL: the attach session, HTTP/1, HTTP/2, uwsgi, static-map, drain and
//! hand-back (the zergling crate), the WSGI bridge of [`wsgi`], which calls the
//! application on at most `threads` threads at once, and the ASGI bridge of
//! [`asgi`].

mod asgi;
mod asgi_ws;
mod wsgi;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// Serves `app` (a WSGI callable) as a zergling of the pool listening on `attach`,
/// until SIGTERM, SIGINT or SIGHUP (or the pool's DRAIN) has drained it.
///
/// `mounts` are `(prefix, app)` pairs tried longest prefix first (uWSGI's `mount`);
/// `app` serves every other path. `threads` requests run at once (Python threads);
/// `processes` is how many processes serve the application (for
/// `wsgi.multiprocess`); `capacity` is the most connections the pool hands this
/// process at once; `mercy_secs` how long requests in flight get when draining;
/// `io_threads` how many threads run the connections (HTTP, uwsgi, TLS metadata,
/// the pool protocol), beside the application threads; `batch_scheduling`
/// puts this thread and every thread it starts under `SCHED_BATCH` (see
/// [`batch`]).
#[pyfunction]
#[pyo3(signature = (app, attach, threads=1, processes=1, capacity=1024, mercy_secs=60.0, mounts=Vec::new(), tags=Vec::new(), io_threads=1, batch_scheduling=true))]
#[allow(clippy::too_many_arguments, reason = "a Python function with keyword arguments")]
fn serve(
    py: Python<'_>,
    app: Py<PyAny>,
    attach: PathBuf,
    threads: usize,
    processes: usize,
    capacity: u32,
    mercy_secs: f64,
    mounts: Vec<(String, Py<PyAny>)>,
    tags: Vec<String>,
    io_threads: usize,
    batch_scheduling: bool,
) -> PyResult<()> {
    init_tracing();
    batch(batch_scheduling);
    let apps = wsgi::Apps::new(py, app, mounts, threads.max(1), processes.max(1))?;
    let mut config = zergling::ZerglingConfig::new(attach);
    config.capacity = capacity.max(1);
    config.mercy = Duration::from_secs_f64(mercy_secs.max(0.0));
    config.tags = tags;
    config.io_threads = Some(io_threads.max(1));
    config.saturation = Some(apps.saturation.clone());
    config.tags.push("lang=python".into());
    config.tags.push("interface=wsgi".into());
    let (service, workers) = wsgi::WsgiService::start(apps)
        .map_err(|e| PyRuntimeError::new_err(format!("zergling: cannot start the application threads: {e}")))?;
    // The GIL is released for the zergling's whole life: Python runs only on the
    // application threads. Once the zergling has drained, the service is gone and
    // so are they.
    py.detach(move || {
        let served = zergling::serve_blocking(config, service);
        workers.join();
        served
    })
    .map_err(|e| PyRuntimeError::new_err(format!("zergling: {e}")))
}

/// Starts serving `app` (an ASGI 3.0 callable) as a zergling of the pool
/// listening on `attach`, its requests run as tasks of `event_loop`
/// (`runner(app, scope, proto)` is the coroutine of one request), and returns
/// the bridge at once: the caller registers `bridge.fileno()` with the loop
/// (`add_reader(fd, bridge.run_pending)`) and runs the loop. When the zergling
/// has drained, `done(error)` is called on the loop's thread (`error`: `None`,
/// or what went wrong). `state` is the lifespan's state, copied into every scope.
/// `batch_scheduling`: as for [`serve`] (the event loop's thread included).
#[pyfunction]
#[pyo3(signature = (app, event_loop, runner, done, attach, state=None, capacity=1024, mercy_secs=60.0, mounts=Vec::new(), tags=Vec::new(), io_threads=1, batch_scheduling=true))]
#[allow(clippy::too_many_arguments, reason = "a Python function with keyword arguments")]
fn serve_asgi(
    py: Python<'_>,
    app: Py<PyAny>,
    event_loop: Bound<'_, PyAny>,
    runner: Py<PyAny>,
    done: Py<PyAny>,
    attach: PathBuf,
    state: Option<Py<pyo3::types::PyDict>>,
    capacity: u32,
    mercy_secs: f64,
    mounts: Vec<(String, Py<PyAny>)>,
    tags: Vec<String>,
    io_threads: usize,
    batch_scheduling: bool,
) -> PyResult<Py<asgi::Bridge>> {
    init_tracing();
    batch(batch_scheduling);
    let bridge = asgi::bridge(py, app, mounts, &event_loop, runner, state)?;
    let mut config = zergling::ZerglingConfig::new(attach);
    config.capacity = capacity.max(1);
    config.mercy = Duration::from_secs_f64(mercy_secs.max(0.0));
    config.tags = tags;
    config.io_threads = Some(io_threads.max(1));
    config.tags.push("lang=python".into());
    config.tags.push("interface=asgi".into());
    // http.disconnect while the application works without writing.
    config.watch_clients = true;
    let service = asgi::AsgiService { bridge: Arc::new(bridge.clone_ref(py)) };
    let call_soon = event_loop.getattr("call_soon_threadsafe")?.unbind();
    std::thread::Builder::new()
        .name("zergling".into())
        .spawn(move || {
            let error = zergling::serve_blocking(config, service).err().map(|e| format!("zergling: {e}"));
            Python::attach(|py| {
                if let Err(e) = call_soon.call1(py, (done, error)) {
                    // The loop is closed: nobody waits any more.
                    e.print(py);
                }
            });
        })
        .map_err(|e| PyRuntimeError::new_err(format!("zergling: cannot start the connection thread: {e}")))?;
    Ok(bridge)
}

/// `SCHED_BATCH` for the calling thread and those it starts (the connection
/// threads, the application threads), when `on`: every request passes from the
/// connection thread to the thread running Python and back, and under the
/// default policy each hand-off preempts the thread that made it, two context
/// switches a request; under `SCHED_BATCH` each thread works through all that
/// is ready first (`zergpool_core::sched` has the figures). Failing is not
/// fatal: the zergling serves as well, only slower.
fn batch(on: bool) {
    if on {
        if let Err(e) = zergling::batch_scheduling() {
            tracing::warn!(error = %e, "cannot switch to SCHED_BATCH; serving with the default scheduling policy");
        }
    }
}

/// Logs of the Rust side go to stderr, as the pool's own do (the pool prefixes
/// every line of a zergling it spawned). `ZERGLING_LOG` filters them.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ZERGLING_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
}

/// The native half of the `zergling` Python package.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(serve, m)?)?;
    m.add_function(wrap_pyfunction!(serve_asgi, m)?)?;
    m.add_class::<asgi::Bridge>()?;
    m.add_class::<asgi::HttpProto>()?;
    m.add_class::<asgi_ws::WsProto>()?;
    m.add_class::<wsgi::Input>()?;
    m.add_class::<wsgi::FileWrapper>()?;
    m.add_class::<wsgi::StartResponse>()?;
    Ok(())
}
