//! The attach session: the handshake with the pool, the orders it sends (CONN,
//! LISTEN, DRAIN), and what becomes of each connection received.

use super::*;

pub(super) enum AttachFailure {
    Refused(String),
    Other(Box<dyn StdError + Send + Sync>),
}

impl From<ChannelError> for AttachFailure {
    fn from(e: ChannelError) -> Self {
        AttachFailure::Other(Box::new(e))
    }
}

/// Connects and does the handshake.
pub(super) async fn attach(
    config: &ZerglingConfig,
) -> Result<(Channel, ZerglingId, proto::StaticSettings, proto::Timeouts, u32), AttachFailure> {
    let chan = Channel::connect(&config.socket).await.map_err(|e| AttachFailure::Other(Box::new(e)))?;
    let hello = Message::Hello {
        version: proto::VERSION,
        pid: std::process::id(),
        capacity: config.capacity,
        tags: config.tags.clone(),
        // The library can always accept on the pool's uwsgi listeners itself.
        accept_direct: true,
    };
    chan.send(&hello, None).await?;
    match chan.recv_timeout(HANDSHAKE_TIMEOUT).await? {
        (Message::Welcome { id, statics, timeouts, buffer_size, log, .. }, _) => {
            stats::set_policy(log);
            Ok((chan, id, statics, timeouts, buffer_size))
        }
        (Message::Refuse { reason }, _) => Err(AttachFailure::Refused(reason)),
        (other, _) => Err(AttachFailure::Other(format!("unexpected {} during the handshake", other.name()).into())),
    }
}

/// Writes the request log lines waiting, every [`stats::LOG_EVERY`] or as soon
/// as they fill a buffer, until `stop` fires, then once more: to the pool's log
/// file when it gave one (LOGFILE), else in LOG frames on the current channel.
/// It outlives the sessions, so that the lines of requests that finish during
/// a drain (after the pool's DRAIN ended the session) are written too.
pub(super) async fn flush_logs<S>(worker: Arc<Worker<S>>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(stats::LOG_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The buffer the next lines go into (see `stats::take_lines`).
    let mut spare = String::new();
    loop {
        let stopped = tokio::select! {
            _ = tick.tick() => false,
            _ = stats::lines_full() => false,
            _ = stop.cancelled() => true,
        };
        let lines = stats::take_lines(std::mem::take(&mut spare));
        match stats::write_to_log_file(lines) {
            Ok(written) => spare = written,
            Err(lines) => match worker.log_chan.load_full() {
                Some(chan) => {
                    if let Err(e) = send_log(&chan, lines).await {
                        debug!(error = %e, "request log lines not delivered (the pool is gone)");
                    }
                }
                None => debug!(bytes = lines.len(), "request log lines dropped: no pool to send them to"),
            },
        }
        if stopped {
            return;
        }
    }
}

/// Sends request log lines, in frames that fit.
async fn send_log(chan: &Channel, lines: String) -> Result<(), zergpool_core::proto::ChannelError> {
    // Frames share the buffer (no copy), each well under MAX_FRAME, cut at line ends.
    let mut rest = Bytes::from(lines);
    const CHUNK: usize = 64 * 1024;
    while !rest.is_empty() {
        let cut = if rest.len() <= CHUNK {
            rest.len()
        } else {
            rest[..CHUNK].iter().rposition(|&b| b == b'\n').map_or(CHUNK, |i| i + 1)
        };
        chan.send(&Message::Log { lines: rest.split_to(cut) }, None).await?;
    }
    Ok(())
}

/// Serves one attachment until the pool goes away or confirms our drain.
pub(super) async fn session<S, B>(chan: Arc<Channel>, id: ZerglingId, worker: &Arc<Worker<S>>)
where
    S: ZerglingService<B>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let mut buf = RecvBuf::new();
    let mut draining_sent = false;
    // Direct accept loops (LISTEN) stop when this session ends: a pool that went away
    // must be able to bind its ports again when it comes back.
    let session_over = CancellationToken::new();
    let _stop_accepting = session_over.clone().drop_guard();
    // Armed when DRAINING is sent; until then it never fires.
    let confirm_deadline = tokio::time::sleep(Duration::from_secs(86_400 * 365));
    tokio::pin!(confirm_deadline);
    // LOAD: the application's lasting saturation, sent as it changes (see
    // `Saturation`); the reporting task ends with this session.
    let mut load = worker.config.saturation.as_ref().map(|s| s.reports());
    // STATS: the request counters, every REPORT_EVERY when they changed.
    let mut report = tokio::time::interval(stats::REPORT_EVERY);
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported = zergpool_core::proto::ZerglingStats::default();
    loop {
        let load_changed = async {
            match &mut load {
                Some(rx) => match rx.changed().await {
                    Ok(()) => Some(*rx.borrow_and_update()),
                    Err(_) => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = report.tick() => {
                let now = stats::snapshot();
                if now != reported {
                    reported = now;
                    if chan.send(&Message::Stats(now), None).await.is_err() {
                        return;
                    }
                }
            }
            Some(saturated) = load_changed => {
                if chan.send(&Message::Load { saturated }, None).await.is_err() {
                    return;
                }
            }
            _ = worker.drain_requested.cancelled(), if !draining_sent => {
                draining_sent = true;
                confirm_deadline.as_mut().reset(tokio::time::Instant::now() + HANDSHAKE_TIMEOUT);
                if chan.send(&Message::Draining, None).await.is_err() {
                    return;
                }
            }
            _ = &mut confirm_deadline, if draining_sent => {
                warn!("the pool did not confirm the drain in time; draining anyway");
                return;
            }
            msg = chan.recv_with(&mut buf) => match msg {
                Ok((Message::Conn(meta), Some(fd))) => accept_conn(&chan, id, worker, meta, fd).await,
                Ok((Message::Listen { listener, kind, local, buffer_size, head_timeout_ms }, Some(fd))) => {
                    let settings = uwsgi::UwsgiSettings {
                        buffer_size: buffer_size as usize,
                        packet_timeout: Duration::from_millis(u64::from(head_timeout_ms)),
                        statics: None, // taken from `worker.statics` for each connection
                        watch: None,   // made for each connection
                    };
                    match direct::Acceptor::new(fd, listener, kind, local, settings) {
                        Ok(acceptor) => {
                            info!(listener = %acceptor.name, addr = %acceptor.local.addr, "accepting on the pool's listener directly");
                            tokio::spawn(direct::accept_loop(acceptor, id, worker.clone(), chan.clone(), session_over.clone()));
                        }
                        Err(e) => {
                            // The pool thinks we accept there: leave, so that it takes over.
                            warn!(error = %e, "cannot accept on the pool's listener; detaching");
                            return;
                        }
                    }
                }
                Ok((Message::LogFile, Some(fd))) => {
                    debug!("request log lines go to the pool's log file directly");
                    stats::set_log_file(fd);
                }
                Ok((Message::Drain { handback }, _)) => {
                    info!(handback, "draining: the pool sends nothing more");
                    // Order matters: connections read `handback` once `drain` fires.
                    worker.handback.store(handback, Ordering::SeqCst);
                    worker.drain_requested.cancel();
                    worker.drain.cancel();
                    return;
                }
                Ok((other, _)) => {
                    warn!(message = other.name(), "unexpected message from the pool; detaching");
                    return;
                }
                Err(ChannelError::Closed) => return,
                Err(e) => {
                    warn!(error = %e, "attach channel failed; detaching");
                    return;
                }
            },
        }
    }
}

/// Takes ownership of a received connection: ACK, then serve it in its own task,
/// which ends with CLOSED, or with HANDBACK when a restart drains this zergling.
pub(super) async fn accept_conn<S, B>(
    chan: &Arc<Channel>,
    id: ZerglingId,
    worker: &Arc<Worker<S>>,
    meta: ConnMeta,
    fd: OwnedFd,
) where
    S: ZerglingService<B>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let conn = meta.conn;
    worker.tally.received.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = chan.send(&Message::Ack { conn }, None).await {
        // The pool is gone; we hold the only copy now, so serve it anyway.
        debug!(%conn, error = %e, "ACK not delivered");
    }
    let stream = match ConnStream::from_fd(fd) {
        Ok(s) => s,
        Err(e) => {
            warn!(%conn, error = %e, "cannot use the received connection");
            let _ = chan.send(&Message::Closed { conn }, None).await;
            return;
        }
    };
    let (chan, worker) = (chan.clone(), worker.clone());
    let info = Arc::new(ConnInfo::new(id, &meta, &worker.strings));
    // Counted as owned until just before CLOSED or HANDBACK goes out, so that the
    // pool's count of this zergling's connections is never below ours.
    let owned = Owned::new(&worker.idle);
    if meta.kind == ListenerKind::Uwsgi {
        // One request per connection, closed after the response (what nginx expects).
        worker.conns.clone().spawn(async move {
            let mut settings = uwsgi::UwsgiSettings::handed_over();
            // Released (the duplicate closed) when the connection is over.
            let _release = watch_of(&worker.config, &stream).map(|(w, r)| {
                settings.watch = Some(w);
                r
            });
            let io = Prefixed::new(meta.prefix.clone(), stream);
            Box::pin(uwsgi::serve_uwsgi(io, info, worker.service.clone(), settings)).await;
            drop(owned);
            let _ = chan.send(&Message::Closed { conn }, None).await;
        });
        return;
    }
    if meta.alpn == Some(AlpnProtocol::H2) {
        worker.conns.clone().spawn(async move {
            let io = Prefixed::new(meta.prefix.clone(), stream);
            Box::pin(serve_h2(
                io,
                info,
                worker.service.clone(),
                worker.statics.load_full(),
                worker.drain.clone(),
                worker.going_away.clone(),
            ))
            .await;
            drop(owned);
            let _ = chan.send(&Message::Closed { conn }, None).await;
        });
        return;
    }
    // What the task keeps for the connection's whole life is small: handles and
    // boxes; run_http1 (about 700 bytes while idle) boxes its active phase, and the
    // final report is boxed too, each allocated only while it runs (an idle
    // connection's cost is the point of this layout).
    let mut meta = meta;
    let prefix = std::mem::take(&mut meta.prefix);
    drop(meta); // `info` has its fields; a hand-back is described from there
    worker.conns.clone().spawn(async move {
        let io = Prefixed::new(prefix, stream);
        let handback = || worker.handback.load(Ordering::SeqCst);
        let ctx = Http1Ctx {
            info: info.clone(),
            service: worker.service.clone(),
            statics: worker.statics.load_full(),
            drain: worker.drain.clone(),
            going_away: worker.going_away.clone(),
            timeouts: **worker.timeouts.load(),
            head_limit: worker.head_limit.load(Ordering::Relaxed),
            idle: Some(worker.idle.clone()),
            watch_clients: worker.config.watch_clients,
        };
        let end = Box::pin(run_http1(io, ctx, handback)).await;
        drop(owned);
        Box::pin(report_http1_end(&chan, &worker.tally, &info, end)).await;
    });
}

/// Tells the pool how an HTTP/1.1 connection ended: CLOSED, or HANDBACK with the
/// descriptor and the bytes read and not answered.
pub(super) async fn report_http1_end(chan: &Channel, tally: &ConnTally, info: &ConnInfo, end: Http1End<ConnStream>) {
    let conn = info.conn;
    match end {
        Http1End::HandBack { io, buffered } => {
            tally.handed_back.fetch_add(1, Ordering::Relaxed);
            match io.into_fd() {
                Ok(fd) => {
                    if let Err(e) = chan.send(&Message::HandBack(info.meta(buffered)), Some(fd.as_fd())).await {
                        warn!(%conn, error = %e, "hand-back failed; closing the connection");
                        let _ = chan.send(&Message::Closed { conn }, None).await;
                    }
                }
                Err(e) => {
                    debug!(%conn, error = %e, "cannot detach the connection for hand-back");
                    let _ = chan.send(&Message::Closed { conn }, None).await;
                }
            }
        }
        Http1End::Finished => {
            tally.finished.fetch_add(1, Ordering::Relaxed);
            let _ = chan.send(&Message::Closed { conn }, None).await;
        }
    }
}
