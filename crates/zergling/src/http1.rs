//! HTTP/1.1 on one connection: hyper while requests come (with deadlines on every
//! read and write, `ConnIo`), nothing but a readiness wait while idle, drain and
//! hand-back at request boundaries, and upgrades (the application takes the
//! stream; the connection is the zergling's until it lets go).

use super::*;

/// How an HTTP/1.1 connection ended.
pub(super) enum Http1End<IO> {
    /// Closed (by the client, an error, a timeout, or a drain without hand-back).
    Finished,
    /// Stopped at a request boundary (a drain with hand-back, or room made for new
    /// connections): the stream and the bytes read from it and not yet answered.
    HandBack { io: IO, buffered: Bytes },
}

/// Requests in flight on one connection, so that a drain can stop it at a
/// request boundary (hyper says nothing about it), and whether hyper is waiting
/// for the next request (the connection is idle).
///
/// A boundary is: no response being produced (`in_flight == 0`) **and** the last
/// response flushed (`unflushed == false`). hyper buffers a response before it
/// writes it, and a graceful shutdown while bytes wait in that buffer drops them
/// when hyper has already decided to close (a `Connection: close` exchange, a
/// request body it could not drain, …): it counts a closing connection as done
/// whatever its write buffer holds. Waiting for the flush also means that such a
/// connection closes by itself first (in the same poll as the flush), so it is
/// never mistaken for an idle one and handed back in the middle of a message.
#[derive(Default)]
pub(super) struct Activity {
    in_flight: AtomicUsize,
    /// Set when the last response body ends, cleared when hyper next flushes the
    /// stream (hyper flushes the stream only once its own buffer is empty).
    unflushed: AtomicBool,
    /// hyper's last read found nothing to read.
    read_waiting: AtomicBool,
    changed: Notify,
    /// Requests that reached the service on this connection.
    served: AtomicUsize,
    /// The connection is being taken apart (idle, or a drain with hand-back):
    /// hyper's final shutdown of the stream must leave it open.
    keep_open: AtomicBool,
    /// The stream hyper was given has been dropped (after an upgrade: the
    /// application let go of it).
    released: AtomicBool,
    /// The files whose bytes the marker slices in hyper's writes stand for,
    /// in order (see [`FileBody`]): a pipelined request's file response can be
    /// in hyper's queue before the last one was written.
    file: std::sync::Mutex<std::collections::VecDeque<FileCursor>>,
}

impl Activity {
    fn at_boundary(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0 && !self.unflushed.load(Ordering::SeqCst)
    }

    /// Waits until `cond` holds, re-checked on every change.
    async fn wait_for(&self, cond: impl Fn(&Self) -> bool) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if cond(self) {
                return;
            }
            notified.await;
        }
    }

    /// At a request boundary.
    async fn wait_boundary(&self) {
        self.wait_for(Self::at_boundary).await;
    }

    /// At a boundary with hyper waiting for the next request's bytes.
    async fn wait_idle(&self) {
        self.wait_for(|a| a.at_boundary() && a.read_waiting.load(Ordering::SeqCst)).await;
    }
}

/// Counts one request in flight until its response body has been sent (or dropped).
pub(super) struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(a: Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(a)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // The response is complete but may still sit in hyper's buffer: the
        // stream's next flush (ConnIo) makes the connection idle.
        self.0.unflushed.store(true, Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The connection's stream as hyper sees it: watched for the flushes that end
/// [`Activity::unflushed`] and for reads that find nothing (the connection is
/// idle), and held to `stall` (`http-timeout`): a request body that stops
/// arriving while a request is in flight, or a client that stops taking the
/// response, fails the connection with `TimedOut`. hyper runs with half-close
/// allowed, so it reads only when it needs bytes: a read waiting while a request
/// is in flight is a body that stalls, never an application that is slow.
pub(super) struct ConnIo<IO> {
    io: IO,
    activity: ActivityRef,
    stall: Duration,
    read_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    write_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> ConnIo<IO> {
    fn new(io: IO, activity: Arc<Activity>, stall: Duration) -> Self {
        ConnIo { io, activity: ActivityRef(activity), stall, read_deadline: None, write_deadline: None }
    }
}

/// The stream's hold on its [`Activity`]: says when the stream is dropped
/// (`released`), which after an upgrade is when the application lets go of it.
pub(super) struct ActivityRef(Arc<Activity>);

impl std::ops::Deref for ActivityRef {
    type Target = Activity;
    fn deref(&self) -> &Activity {
        &self.0
    }
}

impl Drop for ActivityRef {
    fn drop(&mut self) {
        self.0.released.store(true, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

/// Polls a stall deadline (armed on first use); `Ready` once it passed.
pub(super) fn stalled(
    deadline: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    stall: Duration,
    cx: &mut std::task::Context<'_>,
) -> bool {
    let d = deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
    std::future::Future::poll(d.as_mut(), cx).is_ready()
}

pub(super) fn stall_error(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{what} made no progress within http-timeout"))
}

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for ConnIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if r.is_ready() {
            this.read_deadline = None;
            this.activity.read_waiting.store(false, Ordering::SeqCst);
            return r;
        }
        if this.activity.in_flight.load(Ordering::SeqCst) > 0 {
            if stalled(&mut this.read_deadline, this.stall, cx) {
                return std::task::Poll::Ready(Err(stall_error("the request body")));
            }
        } else if !this.activity.read_waiting.swap(true, Ordering::SeqCst) {
            this.activity.changed.notify_waiters();
        }
        r
    }
}

impl<IO: tokio::io::AsyncWrite + Unpin> ConnIo<IO> {
    fn watch_write<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        r: std::task::Poll<std::io::Result<T>>,
    ) -> std::task::Poll<std::io::Result<T>> {
        if r.is_ready() {
            self.write_deadline = None;
            return r;
        }
        if stalled(&mut self.write_deadline, self.stall, cx) {
            return std::task::Poll::Ready(Err(stall_error("the response")));
        }
        r
    }
}

impl<IO: zergpool_core::stream::Readable> ConnIo<IO> {
    /// Sends up to `max` bytes of the current file (see [`FileBody`]).
    fn send_file(&mut self, cx: &mut std::task::Context<'_>, max: usize) -> std::task::Poll<std::io::Result<usize>> {
        let mut files = self.activity.file.lock().unwrap_or_else(|p| p.into_inner());
        let Some(c) = files.front_mut() else {
            return std::task::Poll::Ready(Err(std::io::Error::other("file bytes to send without a file")));
        };
        let count = (max as u64).min(c.left) as usize;
        let sent = std::task::ready!(self.io.poll_sendfile(cx, &c.file, &mut c.offset, count))?;
        if sent == 0 && count > 0 {
            files.clear();
            return std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file is shorter than the response said: the connection is aborted",
            )));
        }
        c.left -= sent as u64;
        if c.left == 0 {
            files.pop_front();
        }
        std::task::Poll::Ready(Ok(sent))
    }
}

impl<IO: tokio::io::AsyncWrite + zergpool_core::stream::Readable + Unpin> tokio::io::AsyncWrite for ConnIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = if is_marker(buf) { self.send_file(cx, buf.len()) } else { Pin::new(&mut self.io).poll_write(cx, buf) };
        self.watch_write(cx, r)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let Some(k) = bufs.iter().position(|b| is_marker(b)) else {
            let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
            return self.watch_write(cx, r);
        };
        if k == 0 {
            let r = self.send_file(cx, bufs[0].len());
            return self.watch_write(cx, r);
        }
        // The bytes before the file's (a head, a chunk size) go first.
        let before: usize = bufs[..k].iter().map(|b| b.len()).sum();
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, &bufs[..k]);
        let r = match r {
            std::task::Poll::Ready(Ok(n)) if n == before => match self.send_file(cx, bufs[k].len()) {
                std::task::Poll::Ready(Ok(m)) => std::task::Poll::Ready(Ok(n + m)),
                // What went counts; the error comes again at the next write.
                _ => std::task::Poll::Ready(Ok(n)),
            },
            other => other,
        };
        self.watch_write(cx, r)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        if matches!(r, std::task::Poll::Ready(Ok(()))) && self.activity.unflushed.swap(false, Ordering::SeqCst) {
            self.activity.changed.notify_waiters();
        }
        self.watch_write(cx, r)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.activity.keep_open.load(Ordering::SeqCst) {
            // Taken apart, not closed: flushed, and left open.
            let r = Pin::new(&mut self.io).poll_flush(cx);
            return self.watch_write(cx, r);
        }
        let r = Pin::new(&mut self.io).poll_shutdown(cx);
        self.watch_write(cx, r)
    }
}

/// A response body (the application's, or a static file's) that releases its
/// [`InFlight`] once its last frame was taken, and that ends cleanly (the last
/// chunk, so the client sees a complete response) when the zergling goes away,
/// if its length is not fixed: an endless stream then never holds a drain past
/// the mercy.
pub(super) struct Tracked<B> {
    inner: AnyBody<B>,
    in_flight: Option<InFlight>,
    going_away: GoingAwayEnd,
    /// The request, counted for STATS when the body is over.
    clock: Option<stats::Clock>,
}

/// How a [`Tracked`] body watches for [`GoingAway`]: not at all (a fixed
/// length), armed, or registered for a wake-up (made only once the body
/// waited, so a body that never waits allocates nothing).
pub(super) enum GoingAwayEnd {
    Never,
    Armed(GoingAway),
    Waiting(Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>),
}

pub(super) enum AnyBody<B> {
    App(Pin<Box<B>>),
    Static(statics::StaticBody),
    File(FileBody),
}

/// What a file response's body carries through hyper: slices of [`MARKER`],
/// as many bytes as the file's range, that [`ConnIo`] recognises by their
/// address and replaces with `sendfile(2)` of the file's next bytes (see
/// [`FileCursor`]). hyper sees an ordinary body of the right length (its
/// framing, `Content-Length` or chunks, and its keep-alive stay right); the
/// marker's own bytes never reach the socket. Only on a connection whose stream
/// can sendfile and whose writes hyper queues as separate slices (vectored
/// writes: it never copies them into its head buffer), that is plain HTTP/1
/// through [`ConnIo`].
pub(super) struct FileBody {
    /// Installed in the connection's [`Activity`] at the first poll.
    cursor: Option<FileCursor>,
    activity: Arc<Activity>,
    left: u64,
}

/// The file a connection is sending, and how far.
pub(super) struct FileCursor {
    file: Arc<std::fs::File>,
    offset: i64,
    left: u64,
}

/// Zeros whose address marks file bytes in hyper's writes (see [`FileBody`]).
static MARKER: [u8; MARKER_LEN] = [0; MARKER_LEN];
const MARKER_LEN: usize = 64 * 1024;

fn is_marker(s: &[u8]) -> bool {
    let (base, p) = (MARKER.as_ptr() as usize, s.as_ptr() as usize);
    !s.is_empty() && p >= base && p + s.len() <= base + MARKER_LEN
}

impl FileBody {
    fn new(sf: crate::SendFile, activity: Arc<Activity>) -> Self {
        let cursor = FileCursor { file: sf.file, offset: sf.start.min(i64::MAX as u64) as i64, left: sf.len };
        FileBody { cursor: Some(cursor), activity, left: sf.len }
    }

    fn poll_frame(&mut self) -> Option<hyper::body::Frame<Bytes>> {
        if let Some(c) = self.cursor.take() {
            self.activity.file.lock().unwrap_or_else(|p| p.into_inner()).push_back(c);
        }
        if self.left == 0 {
            return None;
        }
        let n = self.left.min(MARKER_LEN as u64) as usize;
        self.left -= n as u64;
        Some(hyper::body::Frame::data(Bytes::from_static(&MARKER[..n])))
    }
}

impl<B> Tracked<B> {
    pub(super) fn app(b: B, in_flight: Option<InFlight>, going_away: &GoingAway, clock: stats::Clock) -> Self
    where
        B: Body,
    {
        let going_away = match b.size_hint().exact() {
            Some(_) => GoingAwayEnd::Never,
            None => GoingAwayEnd::Armed(going_away.clone()),
        };
        Tracked { inner: AnyBody::App(Box::pin(b)), in_flight, going_away, clock: Some(clock) }
    }

    pub(super) fn fixed(b: statics::StaticBody, in_flight: Option<InFlight>, clock: stats::Clock) -> Self {
        Tracked { inner: AnyBody::Static(b), in_flight, going_away: GoingAwayEnd::Never, clock: Some(clock) }
    }

    /// A [`crate::SendFile`] body: with `sendfile(2)` through `activity`'s
    /// stream when there is one that can, else read in chunks.
    pub(super) fn file(
        sf: crate::SendFile,
        activity: Option<Arc<Activity>>,
        in_flight: Option<InFlight>,
        clock: stats::Clock,
    ) -> Self {
        let inner = match activity {
            Some(a) => AnyBody::File(FileBody::new(sf, a)),
            None => AnyBody::Static(statics::StaticBody::file_range(sf.file, sf.start, sf.len)),
        };
        Tracked { inner, in_flight, going_away: GoingAwayEnd::Never, clock: Some(clock) }
    }

    /// Whether the zergling is going away; registers for the wake-up if not.
    fn gone(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        if let GoingAwayEnd::Armed(t) = &self.going_away {
            self.going_away = GoingAwayEnd::Waiting(Box::pin(t.token().cancelled_owned()));
        }
        match &mut self.going_away {
            GoingAwayEnd::Waiting(w) => std::future::Future::poll(w.as_mut(), cx).is_ready(),
            _ => false,
        }
    }
}

impl<B> Body for Tracked<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn StdError + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let mut r = match &mut self.inner {
            AnyBody::App(b) => b.as_mut().poll_frame(cx).map_err(Into::into),
            AnyBody::Static(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            AnyBody::File(b) => std::task::Poll::Ready(b.poll_frame().map(Ok)),
        };
        if r.is_pending() && !matches!(self.going_away, GoingAwayEnd::Never) && self.gone(cx) {
            debug!("going away: a streamed response ends here");
            self.going_away = GoingAwayEnd::Never;
            r = std::task::Poll::Ready(None);
        }
        match &r {
            std::task::Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    stats::sent(d.len());
                    if let Some(c) = self.clock.as_mut() {
                        c.size += d.len() as u64;
                    }
                }
            }
            std::task::Poll::Ready(None) => {
                self.in_flight = None;
                self.clock = None;
            }
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            AnyBody::App(b) => b.is_end_stream(),
            AnyBody::Static(b) => b.is_end_stream(),
            AnyBody::File(b) => b.left == 0,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match &self.inner {
            AnyBody::App(b) => b.size_hint(),
            AnyBody::Static(b) => b.size_hint(),
            AnyBody::File(b) => hyper::body::SizeHint::with_exact(b.left),
        }
    }
}

/// What a connection's HTTP/1 loop needs besides the stream and the service.
pub(super) struct Http1Ctx<S> {
    pub(super) info: Arc<ConnInfo>,
    pub(super) service: S,
    pub(super) statics: Arc<StaticOptions>,
    pub(super) drain: CancellationToken,
    /// Fires when the mercy is over (see [`GoingAway`]).
    pub(super) going_away: CancellationToken,
    pub(super) timeouts: proto::Timeouts,
    /// The largest request head (the pool's `buffer-size`; 0: hyper's default).
    pub(super) head_limit: usize,
    /// Where the connection registers while idle; `None` outside a pool.
    pub(super) idle: Option<Arc<IdleConns>>,
    /// Put a [`ClientWatch`] in every request ([`ZerglingConfig::watch_clients`]).
    pub(super) watch_clients: bool,
}

/// Serves HTTP/1.1 with keep-alive on one connection.
///
/// The connection alternates between two phases. **Active**: hyper serves
/// requests (a head within `http-timeout`, bodies and responses that never stall
/// longer). **Idle**: when hyper waits for the next request at a request
/// boundary for [`IDLE_GRACE`], it is taken apart and the connection waits for readability holding
/// no buffer (an idle connection costs its task and socket only), up to
/// `http-keepalive`; bytes arriving start the next active phase, with whatever
/// hyper had read first. While idle, the connection can be given back to the pool
/// (the zergling is at capacity, or a drain with hand-back), so the client never
/// sees a close.
///
/// When `drain` fires during a request, it waits for a request boundary, then
/// either gives the stream back (if `handback()` says so) or closes it. A
/// connection hyper will not reuse (`Connection: close`, …) closes by itself
/// before it ever reaches a boundary.
pub(super) async fn run_http1<IO, S, B>(io: Prefixed<IO>, ctx: Http1Ctx<S>, handback: impl Fn() -> bool) -> Http1End<IO>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + zergpool_core::stream::Readable + Unpin + Send + 'static,
    S: ZerglingService<B>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let conn_id = ctx.info.conn;
    // Fires when the connection must leave its idle wait: room made at capacity
    // (IdleConns), or a drain (it is the drain token's child). One token, made
    // once: one branch to wait on, and no allocation at each idle phase.
    let release = ctx.drain.child_token();
    let mut served = 0usize;
    let mut had_request = io.prefix_len() > 0;
    let (mut buffered, mut stream) = io.into_parts();
    // Released (the duplicate closed) when the connection ends, however it ends.
    let (watch, _release) = match ctx.watch_clients.then(|| ClientWatch::of(&stream)).flatten() {
        Some((w, r)) => (Some(w), Some(r)),
        None => (None, None),
    };
    // When the bytes of a head started to arrive (a head split across reads).
    let mut head_started: Option<tokio::time::Instant> = None;
    loop {
        // Idle (or a partial head): wait for bytes without hyper.
        if buffered.is_empty() || head_started.is_some() {
            let limit = match head_started {
                Some(t) => t + ctx.timeouts.io,
                None => tokio::time::Instant::now() + ctx.timeouts.keepalive,
            };
            let entry = if buffered.is_empty() { ctx.idle.as_ref().map(|i| i.enter(&release)) } else { None };
            let wait = std::future::poll_fn(|cx| stream.poll_read_ready(cx));
            tokio::select! {
                r = wait => if r.is_err() { return Http1End::Finished },
                _ = tokio::time::sleep_until(limit) => {
                    debug!(conn = %conn_id, partial = !buffered.is_empty(), "connection idle too long: closed");
                    return Http1End::Finished;
                }
                _ = release.cancelled(), if buffered.is_empty() => {
                    if !ctx.drain.is_cancelled() {
                        debug!(conn = %conn_id, "at capacity: the longest-idle connection goes back to the pool");
                        return Http1End::HandBack { io: stream, buffered };
                    }
                    return if handback() { Http1End::HandBack { io: stream, buffered } } else { Http1End::Finished };
                }
            }
            drop(entry);
            if head_started.is_none() && !buffered.is_empty() {
                head_started = Some(tokio::time::Instant::now());
            }
        }
        let before = served;
        // Boxed: an idle connection's task then holds no room for hyper's state.
        let active = Box::pin(run_hyper(
            Prefixed::new(std::mem::take(&mut buffered), stream),
            &ctx,
            watch.as_ref(),
            &mut served,
            &handback,
        ));
        match active.await {
            Active::Closed => break,
            Active::HandBack { io, buffered } => return Http1End::HandBack { io, buffered },
            Active::Idle { io, buffered: rest } => {
                stream = io;
                buffered = rest;
                had_request |= served > before;
                if served > before || buffered.is_empty() {
                    head_started = None;
                } else if head_started.is_none() {
                    head_started = Some(tokio::time::Instant::now());
                }
                // A partial head waits for more bytes (above) before hyper runs
                // again, so this loop always makes progress.
            }
        }
    }
    if served == 0 && had_request {
        warn!(conn = %conn_id, peer = %ctx.info.peer, "connection closed with a request it never served");
    }
    Http1End::Finished
}

/// How long hyper may wait for a connection's next request before the
/// connection is taken apart to wait without buffers (see [`run_http1`]).
pub(super) const IDLE_GRACE: Duration = Duration::from_millis(250);

/// Connections of this process in an active phase (holding hyper's state and
/// buffers, about 8 KB each).
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// Above this many active connections, one that goes idle is taken apart after
/// [`BUSY_GRACE`] instead of [`IDLE_GRACE`]: a burst of clients that each send one request
/// and then stay idle (10,000 at once) never holds more than this many sets of
/// hyper buffers, so the memory they used stays in a small region that new
/// connections reuse, instead of spreading through the heap between the small
/// objects idle connections keep (which glibc can then not give back). Busy
/// keep-alive clients below this count keep hyper between requests.
const WARM_MAX: usize = 64;

/// The grace above [`WARM_MAX`]: long enough for a busy keep-alive client's next
/// request (well under a millisecond on a LAN), short enough that a burst of idle
/// clients never has many hyper states alive at once.
const BUSY_GRACE: Duration = Duration::from_millis(10);

/// Counts one connection in [`ACTIVE`] while it lives.
struct ActivePhase;

impl ActivePhase {
    fn new() -> Self {
        ACTIVE.fetch_add(1, Ordering::Relaxed);
        ActivePhase
    }
}

impl Drop for ActivePhase {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How an active phase ended.
pub(super) enum Active<IO> {
    /// The connection is over.
    Closed,
    /// Given back (drain with hand-back).
    HandBack { io: IO, buffered: Bytes },
    /// Idle at a request boundary: the stream and what hyper had read.
    Idle { io: IO, buffered: Bytes },
}

/// One active phase: hyper on the stream until the connection ends, a drain stops
/// it at a boundary, or it goes idle.
pub(super) async fn run_hyper<IO, S, B>(
    io: Prefixed<IO>,
    ctx: &Http1Ctx<S>,
    watch: Option<&ClientWatch>,
    served: &mut usize,
    handback: &impl Fn() -> bool,
) -> Active<IO>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + zergpool_core::stream::Readable + Unpin + Send + 'static,
    S: ZerglingService<B>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let _active = ActivePhase::new();
    let activity = Arc::new(Activity::default());
    let act = activity.clone();
    // File responses go with sendfile(2) on a socket whose writes hyper queues
    // as separate slices (see FileBody).
    let can_sendfile = {
        use zergpool_core::stream::Readable;
        io.can_sendfile() && tokio::io::AsyncWrite::is_write_vectored(&io)
    };
    // In an Arc: the service type need not be Unpin for hyper's connection to be.
    let (info, service, statics) = (ctx.info.clone(), Arc::new(ctx.service.clone()), ctx.statics.clone());
    let going_away = GoingAway::new(ctx.going_away.clone());
    let watch = watch.cloned();
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(info.clone());
        req.extensions_mut().insert(going_away.clone());
        if let Some(w) = &watch {
            req.extensions_mut().insert(w.clone());
        }
        let going_away = going_away.clone();
        let in_flight = InFlight::new(act.clone());
        let mut clock = stats::Clock::start(&req, Some(&info));
        act.served.fetch_add(1, Ordering::Relaxed);
        let (service, statics) = (service.clone(), statics.clone());
        Box::pin(async move {
            if let Some(why) = bad_host(&req) {
                debug!(why, "request refused: 400");
                let resp = Response::builder()
                    .status(hyper::StatusCode::BAD_REQUEST)
                    .header(hyper::header::CONTENT_TYPE, "text/plain")
                    .header(hyper::header::CONNECTION, "close")
                    .body(Tracked::fixed(
                        statics::StaticBody::text(Bytes::from_static(b"Bad Request\n")),
                        Some(in_flight),
                        clock,
                    ));
                return Ok::<_, S::Err>(resp.unwrap_or_else(|_| unreachable!("a fixed, valid response")));
            }
            if let Some(resp) = statics::answer(&statics, &req).await {
                clock.status(resp.status());
                return Ok(resp.map(|b| Tracked::fixed(b, Some(in_flight), clock)));
            }
            // A HEAD response has no body: no file bytes may wait for a write.
            let head = req.method() == hyper::Method::HEAD;
            let mut resp = service.call(req).await?;
            clock.status(resp.status());
            if let Some(sf) = crate::SendFile::take(&mut resp) {
                let file = (can_sendfile && !head).then(|| in_flight.0.clone());
                return Ok(resp.map(|_| Tracked::file(sf, file, Some(in_flight), clock)));
            }
            Ok(resp.map(|b| Tracked::app(b, Some(in_flight), &going_away, clock)))
        })
    });
    let io = ConnIo::new(io, activity.clone(), ctx.timeouts.io);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        .half_close(true)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(ctx.timeouts.io);
    if ctx.head_limit > 0 {
        // The pool's buffer-size, so that a later request's head gets the 431 the
        // first one would get from the pool (hyper's floor is 8 KiB). It also
        // bounds what a hand-back carries back.
        builder.max_buf_size(ctx.head_limit.max(8192));
    }
    // With upgrades: a 101 response gives the stream to the application
    // (hyper::upgrade::on); otherwise the same connection.
    let mut conn = builder.serve_connection(TokioIo::new(io), svc).with_upgrades();
    enum Stop {
        Drain,
        Idle,
    }
    let mut stop = None;
    // Set when hyper starts waiting for the next request: the connection is taken
    // apart only if it is still waiting IDLE_GRACE later, so that a busy
    // keep-alive client never pays for it.
    let mut idle_check: Option<tokio::time::Instant> = None;
    let res = loop {
        tokio::select! {
            r = &mut conn => break r,
            _ = async { ctx.drain.cancelled().await; activity.wait_boundary().await }, if stop.is_none() => {
                stop = Some(Stop::Drain);
                // At a request boundary (see Activity): hyper closes an idle
                // connection at once (nothing is written), so the stream can be
                // given back intact (hyper's shutdown of it leaves it open).
                activity.keep_open.store(handback(), Ordering::SeqCst);
                Pin::new(&mut conn).graceful_shutdown();
            }
            _ = activity.wait_idle(), if stop.is_none() && idle_check.is_none() => {
                let grace = if ACTIVE.load(Ordering::Relaxed) > WARM_MAX { BUSY_GRACE } else { IDLE_GRACE };
                idle_check = Some(tokio::time::Instant::now() + grace);
            }
            _ = tokio::time::sleep_until(idle_check.unwrap_or_else(tokio::time::Instant::now)), if stop.is_none() && idle_check.is_some() => {
                idle_check = None;
                if activity.at_boundary() && activity.read_waiting.load(Ordering::SeqCst) {
                    tracing::trace!("idle at a request boundary: taking hyper apart");
                    stop = Some(Stop::Idle);
                    activity.keep_open.store(true, Ordering::SeqCst);
                    Pin::new(&mut conn).graceful_shutdown();
                }
            }
        }
    };
    *served += activity.served.load(Ordering::Relaxed);
    if let Err(e) = &res {
        zergpool_core::warn_limited!(error = %zergpool_core::error_chain(e), "connection ended with an error");
    }
    let take_apart = stop.is_some() && activity.keep_open.load(Ordering::SeqCst);
    if res.is_err() {
        return Active::Closed;
    }
    let Some(parts) = conn.into_parts() else {
        // Upgraded: the application holds the stream (and this connection keeps
        // its place among the zergling's: capacity, drain) until it lets go.
        debug!(conn = %ctx.info.conn, "upgraded; the application has the stream");
        activity.wait_for(|a| a.released.load(Ordering::SeqCst)).await;
        debug!(conn = %ctx.info.conn, "upgraded connection over");
        return Active::Closed;
    };
    if take_apart {
        let (rest, stream) = parts.io.into_inner().io.into_parts();
        // Bytes hyper read and did not process come first, then those it never read.
        let buffered = if parts.read_buf.is_empty() {
            rest
        } else {
            let mut b = BytesMut::from(&parts.read_buf[..]);
            b.extend_from_slice(&rest);
            b.freeze()
        };
        return match stop {
            Some(Stop::Drain) => Active::HandBack { io: stream, buffered },
            _ => Active::Idle { io: stream, buffered },
        };
    }
    // hyper flushed what it held and shut the write side down (FIN at once,
    // whatever copy of the socket the pool may still hold).
    Active::Closed
}

/// Why a request breaks RFC 9112 §3.2's Host rules (an HTTP/1.1 request has
/// exactly one Host, and every Host is a valid `host[:port]`), checked on every
/// request of a connection (the pool checks only the first).
pub(super) fn bad_host<T>(req: &Request<T>) -> Option<&'static str> {
    let mut hosts = req.headers().get_all(hyper::header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Some("more than one Host header");
    }
    match first {
        None if req.version() == hyper::Version::HTTP_11 => Some("HTTP/1.1 request without a Host header"),
        Some(h) if !zergpool_core::classify::http::valid_host(h.as_bytes()) => {
            Some("Host header is not a valid host[:port]")
        }
        _ => None,
    }
}

/// Serves HTTP/1.1 with keep-alive on one connection, without a pool (the demo's
/// `--listen` mode): on drain, finishes the request in flight and closes.
/// The deadlines are [`proto::Timeouts::default`]'s.
pub async fn serve_http1<IO, S, B>(io: IO, info: Arc<ConnInfo>, service: S, drain: CancellationToken)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + zergpool_core::stream::Readable + Unpin + Send + 'static,
    S: ZerglingService<B>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let ctx = Http1Ctx {
        info,
        service,
        statics: Arc::new(StaticOptions::default()),
        // Without a pool there is no mercy: long-lived exchanges end at the drain.
        going_away: drain.clone(),
        drain,
        timeouts: proto::Timeouts::default(),
        head_limit: 0,
        idle: None,
        watch_clients: false,
    };
    let _ = run_http1(Prefixed::new(Bytes::new(), io), ctx, || false).await;
}
