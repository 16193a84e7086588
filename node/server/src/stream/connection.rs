//! One WebSocket subscriber: hello, initial sync, then pushes, heartbeats,
//! age limit and goodbye.
//!
//! The connection reads client frames with tungstenite and writes through its
//! [`Outbox`], which it shares with the hub: new deltas of a caught-up
//! connection are written by the fan-out itself; this task handles the rest
//! (initial sync, gaps, resyncs, key checks, heartbeats, flushing a backlog).

use super::frame;
use super::hello::End;
use super::hub::{EncodedDelta, Push, Registration, StreamHub};
use super::keys::KeyKind;
use super::outbox::{Outbox, OutboxWriter};
use super::source::StreamSource;
use super::sync::{deltas_after, plan, Start, HISTORY_PAGE};
use axum::body::Bytes;
use flagraft_client::protocol::{
    decode_client, encode_server, Behind, ClientMessage, CloseCode, Goodbye, Heartbeat, Hello,
    HistoryGone, ServerMessage, SnapshotReason, Welcome,
};
use futures_util::StreamExt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

type Flow<T = ()> = Result<T, End>;

/// The socket as tungstenite sees it: reads from the socket, writes (its
/// pongs and close replies) into the outbox.
pub(crate) struct Duplex<T> {
    read: ReadHalf<T>,
    write: OutboxWriter,
}

impl<T: AsyncRead + AsyncWrite> AsyncRead for Duplex<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl<T> AsyncWrite for Duplex<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.write).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_shutdown(cx)
    }
}

type Ws<T> = WebSocketStream<Duplex<T>>;

fn ws_config(c: &super::config::StreamConfig) -> WebSocketConfig {
    // tungstenite only writes control frames (pong, close reply) here, into the
    // outbox; messages go to the outbox as frames built by `frame.rs`.
    WebSocketConfig::default()
        .read_buffer_size(c.read_buffer_bytes)
        .write_buffer_size(c.write_buffer_bytes)
        .max_write_buffer_size(c.max_write_buffer_bytes.max(1))
        .max_message_size(Some(c.max_client_message_bytes))
        .max_frame_size(Some(c.max_client_message_bytes))
}

/// Serve one upgraded connection to its end.
pub(crate) async fn run<S, T>(hub: Arc<StreamHub<S>>, io: T, protocol_ok: bool)
where
    S: StreamSource,
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let send_timeout = Duration::from_millis(hub.config.send_timeout_ms);
    let (read, write) = tokio::io::split(io);
    let outbox = Outbox::new(Box::pin(write), hub.config.backlog);
    let duplex = Duplex {
        read,
        write: OutboxWriter(Arc::clone(&outbox)),
    };
    let mut ws =
        WebSocketStream::from_raw_socket(duplex, Role::Server, Some(ws_config(&hub.config))).await;
    let opened = if !protocol_ok {
        Err(End::Close(CloseCode::UnsupportedProtocol))
    } else if hub.is_shutting_down() {
        Err(End::Close(CloseCode::ShuttingDown))
    } else {
        open(&hub, &mut ws, &outbox).await
    };
    let ended = match opened {
        Ok((hello, key, reg)) => {
            let mut conn = Conn {
                project: Arc::clone(reg.project()),
                hub,
                ws,
                outbox: Arc::clone(&outbox),
                _reg: reg,
                key,
                last_rx: Instant::now(),
                send_timeout,
            };
            conn.serve(hello).await.err().unwrap_or(End::Gone)
        }
        Err(end) => end,
    };
    let deadline = Instant::now() + send_timeout;
    match ended {
        End::Close(code) => goodbye(&outbox, code, deadline).await,
        // Only what is already queued (e.g. a close reply), without waiting.
        End::Gone => {
            let _ = outbox.flush_until(Instant::now()).await;
        }
    }
}

/// The first text frame, skipping a handful of control frames; a binary
/// frame is a bad message, silence until `deadline` a timeout.
async fn first_text_frame<T: AsyncRead + AsyncWrite>(
    ws: &mut Ws<T>,
    deadline: Instant,
) -> Result<Utf8Bytes, End> {
    for _ in 0..16 {
        let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Err(End::Close(CloseCode::Timeout)),
            Ok(None | Some(Err(_))) => return Err(End::Gone),
            Ok(Some(Ok(m))) => m,
        };
        match msg {
            Message::Text(t) => return Ok(t),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            Message::Close(_) => return Err(End::Gone),
            Message::Binary(_) => return Err(End::Close(CloseCode::BadMessage)),
        }
    }
    // A peer that sends only control frames never says hello.
    Err(End::Close(CloseCode::BadMessage))
}

/// Read and check the hello, and register for the key's project.
async fn open<S: StreamSource, T: AsyncRead + AsyncWrite>(
    hub: &Arc<StreamHub<S>>,
    ws: &mut Ws<T>,
    outbox: &Arc<Outbox>,
) -> Result<(Hello, String, Registration<S>), End> {
    let wait = Duration::from_millis(hub.config.hello_timeout_ms);
    let text = first_text_frame(ws, Instant::now() + wait).await?;
    let hello = match decode_client(text.as_bytes(), hub.config.max_client_message_bytes) {
        Ok(ClientMessage::Hello(h)) => h,
        _ => return Err(End::Close(CloseCode::BadMessage)),
    };
    let grant = match hub.keys.resolve(&hello.key) {
        Some(g) if g.kind == KeyKind::Server => g,
        _ => return Err(End::Close(CloseCode::Unauthorized)),
    };
    let reg = hub
        .register(&grant.project, outbox)
        .ok_or(End::Close(CloseCode::Overloaded))?;
    let key = hello.key.clone();
    Ok((hello, key, reg))
}

async fn goodbye(outbox: &Outbox, code: CloseCode, deadline: Instant) {
    let bye = ServerMessage::Goodbye(Goodbye {
        code: code.code(),
        reason: code.name().to_string(),
    });
    if let Ok(text) = encode_server(&bye) {
        if outbox.send(frame::text(&text), deadline).await.is_err() {
            return;
        }
    }
    if outbox
        .send(frame::close(code.code(), code.name()), deadline)
        .await
        .is_ok()
    {
        let _ = outbox.flush_until(deadline).await;
    }
}

struct Conn<S: StreamSource, T> {
    hub: Arc<StreamHub<S>>,
    ws: Ws<T>,
    outbox: Arc<Outbox>,
    /// Unregisters from the hub when the connection ends.
    _reg: Registration<S>,
    project: Arc<str>,
    key: String,
    last_rx: Instant,
    send_timeout: Duration,
}

impl<S: StreamSource, T: AsyncRead + AsyncWrite> Conn<S, T> {
    async fn serve(&mut self, hello: Hello) -> Flow {
        self.initial_sync(&hello).await?;
        self.live().await
    }

    /// The version the client holds once everything sent so far is written.
    fn version(&self) -> u64 {
        self.outbox.version()
    }

    async fn initial_sync(&mut self, hello: &Hello) -> Flow {
        let source = &self.hub.source;
        let head = source
            .head(&self.project)
            .ok_or(End::Close(CloseCode::ProjectDeleted))?;
        self.send_msg(&ServerMessage::Welcome(Welcome {
            node_id: source.node_id(),
            project: self.project.to_string(),
            head_version: head.version,
            heartbeat_ms: self.hub.config.heartbeat_ms,
        }))
        .await?;
        let mut head = head;
        // At most one wait for this node to catch up, then a fresh plan.
        for attempt in 0..2 {
            let start = plan(
                &self.hub.source,
                &self.project,
                &head,
                hello.have_version,
                hello.have_digest,
            )
            .map_err(internal)?;
            match start {
                Start::Snapshot(reason) => return self.send_snapshot(reason).await,
                Start::HistoryGone { oldest_retained } => {
                    self.send_msg(&ServerMessage::HistoryGone(HistoryGone {
                        have_version: hello.have_version.unwrap_or(0),
                        oldest_retained,
                    }))
                    .await?;
                    return self.send_snapshot(SnapshotReason::HistoryGone).await;
                }
                Start::Deltas { have_version } => {
                    self.outbox.set_version(have_version);
                    return self.catch_up(head.version).await;
                }
                Start::UpToDate => {
                    self.outbox.set_version(head.version);
                    return Ok(());
                }
                Start::Ahead { have_version } if attempt == 0 => {
                    head = self.wait_until_applied(have_version, head.version).await?;
                }
                Start::Ahead { .. } => return Err(End::Close(CloseCode::NodeBehind)),
            }
        }
        Err(End::Close(CloseCode::NodeBehind))
    }

    /// Hold a client that is ahead of this node until the node has applied its version.
    async fn wait_until_applied(
        &mut self,
        want: u64,
        node_version: u64,
    ) -> Flow<super::source::Head> {
        let wait = Duration::from_millis(self.hub.config.behind_wait_ms);
        self.send_msg(&ServerMessage::Behind(Behind {
            have_version: want,
            node_version,
            wait_ms: wait.as_millis() as u64,
        }))
        .await?;
        let deadline = Instant::now() + wait;
        let mut applied = self.hub.source.applied_watch();
        // Bounded by the deadline; each round waits for one apply.
        for _ in 0..1_000_000 {
            match self.hub.source.head(&self.project) {
                Some(h) if h.version >= want => return Ok(h),
                Some(_) => {}
                None => return Err(End::Close(CloseCode::ProjectDeleted)),
            }
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => break,
            }
        }
        Err(End::Close(CloseCode::NodeBehind))
    }

    async fn live(&mut self) -> Flow {
        let hb = self.hub.config.heartbeat();
        // The first heartbeat goes out at once: it tells the client the initial sync is done.
        // The next ones follow at a random phase (see `first_heartbeat_delay`).
        self.on_heartbeat(hb).await?;
        let second = tokio::time::Instant::now() + self.hub.config.first_heartbeat_delay();
        let mut heartbeat = tokio::time::interval_at(second, hb);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let max_age = tokio::time::sleep(self.hub.config.jittered_max_age());
        tokio::pin!(max_age);
        let mut shutdown = self.hub.shutdown_signal();
        self.last_rx = Instant::now();
        let outbox = Arc::clone(&self.outbox);
        loop {
            // Pushes the hub left for this task, in order; then let the hub write again.
            while let Some(push) = outbox.next_push() {
                if let Some(code) = outbox.close.get() {
                    return Err(End::Close(code));
                }
                match push {
                    Push::Delta(d) => self.on_delta(&d).await?,
                    Push::Resync => self.resync().await?,
                    Push::Recheck => self.check_key()?,
                }
            }
            if let Some(code) = outbox.close.get() {
                return Err(End::Close(code));
            }
            if outbox.failed() {
                return Err(End::Gone);
            }
            if !outbox.go_live() {
                continue; // pushes arrived meanwhile
            }
            let flushing = outbox.has_unsent();
            let stall_deadline =
                outbox.stalled_since().unwrap_or_else(Instant::now) + self.send_timeout;
            tokio::select! {
                _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => return Err(End::Close(CloseCode::ShuttingDown)),
                _ = &mut max_age => return Err(End::Close(CloseCode::MaxAge)),
                _ = outbox.wake.notified() => {}
                // A client that does not read for that long is cut off; it resumes by version.
                r = outbox.flush_until(stall_deadline), if flushing => r.map_err(|()| End::Gone)?,
                msg = self.ws.next() => self.on_client_frame(msg).await?,
                _ = heartbeat.tick() => self.on_heartbeat(hb).await?,
            }
        }
    }

    async fn on_delta(&mut self, d: &EncodedDelta) -> Flow {
        if d.to_version <= self.version() {
            return Ok(()); // already covered by the initial sync or a catch-up
        }
        if d.from_version > self.version() {
            self.catch_up(d.from_version).await?;
        }
        if d.from_version == self.version() {
            self.send_frame(d.frame.clone()).await?;
            self.outbox.set_version(d.to_version);
        }
        Ok(())
    }

    async fn resync(&mut self) -> Flow {
        let head = self
            .hub
            .source
            .head(&self.project)
            .ok_or(End::Close(CloseCode::ProjectDeleted))?;
        if head.version > self.version() {
            self.catch_up(head.version).await?;
        }
        Ok(())
    }

    /// Send every delta after the client's version up to at least `target`;
    /// a snapshot instead when that history is gone.
    async fn catch_up(&mut self, target: u64) -> Flow {
        // Each round advances by a page or ends.
        let rounds = (target.saturating_sub(self.version()) as usize) / HISTORY_PAGE + 2;
        for _ in 0..rounds {
            let version = self.version();
            if version >= target {
                return Ok(());
            }
            let page_target = target.min(version + HISTORY_PAGE as u64);
            let page = deltas_after(
                &self.hub.source,
                &self.project,
                version,
                page_target,
                HISTORY_PAGE,
            )
            .map_err(internal)?;
            let Some(records) = page else {
                return self.send_snapshot(SnapshotReason::Resync).await;
            };
            for r in records {
                let text = r.encode().map_err(|_| End::Close(CloseCode::Internal))?;
                self.send_frame(frame::text(&text)).await?;
                self.outbox.set_version(r.version);
            }
        }
        if self.version() >= target {
            Ok(())
        } else {
            Err(End::Close(CloseCode::Internal))
        }
    }

    async fn send_snapshot(&mut self, reason: SnapshotReason) -> Flow {
        let (version, parts) = self
            .hub
            .snapshot_parts(&self.project, reason, self.hub.config.snapshot_part_bytes)
            .map_err(internal)?
            .ok_or(End::Close(CloseCode::ProjectDeleted))?;
        for part in parts.iter() {
            self.send_frame(frame::text(part.as_str())).await?;
        }
        self.outbox.set_version(version);
        Ok(())
    }

    async fn on_client_frame(
        &mut self,
        msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Flow {
        let msg = match msg {
            None | Some(Err(_)) => return Err(End::Gone),
            Some(Ok(m)) => m,
        };
        self.last_rx = Instant::now();
        match msg {
            Message::Text(t) => {
                match decode_client(t.as_bytes(), self.hub.config.max_client_message_bytes) {
                    Ok(ClientMessage::Ping { id }) => {
                        self.send_msg(&ServerMessage::Pong { id }).await
                    }
                    Ok(ClientMessage::Pong { .. }) => Ok(()),
                    Ok(ClientMessage::Hello(_)) | Err(_) => Err(End::Close(CloseCode::BadMessage)),
                }
            }
            Message::Binary(_) => Err(End::Close(CloseCode::BadMessage)),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(()),
            Message::Close(_) => Err(End::Gone),
        }
    }

    async fn on_heartbeat(&mut self, interval: Duration) -> Flow {
        if self.last_rx.elapsed() > interval * 3 {
            return Err(End::Close(CloseCode::Timeout));
        }
        self.check_key()?;
        let head_version = self
            .hub
            .source
            .head(&self.project)
            .map_or(self.version(), |h| h.version);
        self.send_msg(&ServerMessage::Heartbeat(Heartbeat {
            head_version,
            time_ms: now_ms(),
        }))
        .await
    }

    fn check_key(&self) -> Flow {
        match self.hub.keys.resolve(&self.key) {
            Some(g) if g.kind == KeyKind::Server && *g.project == *self.project => Ok(()),
            _ => Err(End::Close(CloseCode::KeyRevoked)),
        }
    }

    async fn send_msg(&mut self, msg: &ServerMessage) -> Flow {
        let text = encode_server(msg).map_err(|_| End::Close(CloseCode::Internal))?;
        self.send_frame(frame::text(&text)).await
    }

    async fn send_frame(&mut self, frame: Bytes) -> Flow {
        let deadline = Instant::now() + self.send_timeout;
        // A client that does not read for that long is cut off; it resumes by version.
        self.outbox
            .send(frame, deadline)
            .await
            .map_err(|()| End::Gone)
    }
}

fn internal(e: super::source::SourceError) -> End {
    tracing::error!(error = %e, "stream cannot read the node's state");
    End::Close(CloseCode::Internal)
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
