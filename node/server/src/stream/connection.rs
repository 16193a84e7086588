//! One WebSocket subscriber: hello, initial sync, then pushes, heartbeats,
//! age limit and goodbye.

use super::hello::{first_text_frame, End};
use super::hub::{EncodedDelta, Push, Registration, StreamHub};
use super::keys::KeyKind;
use super::source::StreamSource;
use super::sync::{deltas_after, plan, Start, HISTORY_PAGE};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use flagraft_client::protocol::{
    decode_client, encode_server, Behind, ClientMessage, CloseCode, Goodbye, Heartbeat, Hello,
    HistoryGone, ServerMessage, SnapshotReason, Welcome,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};

type Flow<T = ()> = Result<T, End>;

/// Serve one upgraded connection to its end.
pub(crate) async fn run<S: StreamSource>(
    hub: Arc<StreamHub<S>>,
    mut socket: WebSocket,
    protocol_ok: bool,
) {
    let send_timeout = Duration::from_millis(hub.config.send_timeout_ms);
    let opened = if !protocol_ok {
        Err(End::Close(CloseCode::UnsupportedProtocol))
    } else if hub.is_shutting_down() {
        Err(End::Close(CloseCode::ShuttingDown))
    } else {
        open(&hub, &mut socket).await
    };
    let ended = match opened {
        Ok((hello, key, reg)) => {
            let mut conn = Conn {
                project: Arc::clone(reg.project()),
                hub,
                socket,
                reg,
                key,
                version: 0,
                last_rx: Instant::now(),
            };
            let end = conn.serve(hello).await.err().unwrap_or(End::Gone);
            socket = conn.socket;
            end
        }
        Err(end) => end,
    };
    if let End::Close(code) = ended {
        goodbye(&mut socket, code, send_timeout).await;
    }
}

/// Read and check the hello, and register for the key's project.
async fn open<S: StreamSource>(
    hub: &Arc<StreamHub<S>>,
    socket: &mut WebSocket,
) -> Result<(Hello, String, Registration<S>), End> {
    let wait = Duration::from_millis(hub.config.hello_timeout_ms);
    let text = first_text_frame(socket, Instant::now() + wait).await?;
    let hello = match decode_client(text.as_bytes(), hub.config.max_client_message_bytes) {
        Ok(ClientMessage::Hello(h)) => h,
        _ => return Err(End::Close(CloseCode::BadMessage)),
    };
    let grant = match hub.keys.resolve(&hello.key) {
        Some(g) if g.kind == KeyKind::Server => g,
        _ => return Err(End::Close(CloseCode::Unauthorized)),
    };
    let reg = hub
        .register(&grant.project)
        .ok_or(End::Close(CloseCode::Overloaded))?;
    let key = hello.key.clone();
    Ok((hello, key, reg))
}

async fn goodbye(socket: &mut WebSocket, code: CloseCode, send_timeout: Duration) {
    let bye = ServerMessage::Goodbye(Goodbye {
        code: code.code(),
        reason: code.name().to_string(),
    });
    let _ = tokio::time::timeout(send_timeout, async {
        if let Ok(text) = encode_server(&bye) {
            socket.send(Message::Text(text.into())).await?;
        }
        socket
            .send(Message::Close(Some(CloseFrame {
                code: code.code(),
                reason: Utf8Bytes::from_static(code.name()),
            })))
            .await
    })
    .await;
}

struct Conn<S: StreamSource> {
    hub: Arc<StreamHub<S>>,
    socket: WebSocket,
    reg: Registration<S>,
    project: Arc<str>,
    key: String,
    /// The version the client holds (what it was last sent).
    version: u64,
    last_rx: Instant,
}

impl<S: StreamSource> Conn<S> {
    async fn serve(&mut self, hello: Hello) -> Flow {
        self.initial_sync(&hello).await?;
        self.live().await
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
                    self.version = have_version;
                    return self.catch_up(head.version).await;
                }
                Start::UpToDate => {
                    self.version = head.version;
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
        let mut heartbeat = tokio::time::interval(hb);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let max_age = tokio::time::sleep(self.hub.config.jittered_max_age());
        tokio::pin!(max_age);
        let mut shutdown = self.hub.shutdown_signal();
        self.last_rx = Instant::now();
        loop {
            tokio::select! {
                _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => return Err(End::Close(CloseCode::ShuttingDown)),
                _ = &mut max_age => return Err(End::Close(CloseCode::MaxAge)),
                push = self.reg.rx.recv() => match push {
                    Some(Push::Delta(d)) => self.on_delta(&d).await?,
                    Some(Push::Resync) => self.resync().await?,
                    Some(Push::Recheck) => self.check_key()?,
                    None => {
                        let code = self.reg.close.get().unwrap_or(CloseCode::ShuttingDown);
                        return Err(End::Close(code));
                    }
                },
                msg = self.socket.recv() => self.on_client_frame(msg).await?,
                _ = heartbeat.tick() => self.on_heartbeat(hb).await?,
            }
        }
    }

    async fn on_delta(&mut self, d: &EncodedDelta) -> Flow {
        if d.to_version <= self.version {
            return Ok(()); // already covered by the initial sync or a catch-up
        }
        if d.from_version > self.version {
            self.catch_up(d.from_version).await?;
        }
        if d.from_version == self.version {
            self.send_text(d.text.clone()).await?;
            self.version = d.to_version;
        }
        Ok(())
    }

    async fn resync(&mut self) -> Flow {
        let head = self
            .hub
            .source
            .head(&self.project)
            .ok_or(End::Close(CloseCode::ProjectDeleted))?;
        if head.version > self.version {
            self.catch_up(head.version).await?;
        }
        Ok(())
    }

    /// Send every delta after the client's version up to at least `target`;
    /// a snapshot instead when that history is gone.
    async fn catch_up(&mut self, target: u64) -> Flow {
        // Each round advances by a page or ends.
        let rounds = (target.saturating_sub(self.version) as usize) / HISTORY_PAGE + 2;
        for _ in 0..rounds {
            if self.version >= target {
                return Ok(());
            }
            let page_target = target.min(self.version + HISTORY_PAGE as u64);
            let page = deltas_after(
                &self.hub.source,
                &self.project,
                self.version,
                page_target,
                HISTORY_PAGE,
            )
            .map_err(internal)?;
            let Some(records) = page else {
                return self.send_snapshot(SnapshotReason::Resync).await;
            };
            for r in records {
                let text = encode_server(&ServerMessage::Delta(r.to_delta()))
                    .map_err(|_| End::Close(CloseCode::Internal))?;
                self.send_text(text.into()).await?;
                self.version = r.version;
            }
        }
        if self.version >= target {
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
            self.send_text(part.clone()).await?;
        }
        self.version = version;
        Ok(())
    }

    async fn on_client_frame(&mut self, msg: Option<Result<Message, axum::Error>>) -> Flow {
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
            Message::Ping(_) | Message::Pong(_) => Ok(()),
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
            .map_or(self.version, |h| h.version);
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
        self.send_text(text.into()).await
    }

    async fn send_text(&mut self, text: Utf8Bytes) -> Flow {
        let limit = Duration::from_millis(self.hub.config.send_timeout_ms);
        match tokio::time::timeout(limit, self.socket.send(Message::Text(text))).await {
            Ok(Ok(())) => Ok(()),
            // A client that does not read for that long is cut off; it resumes by version.
            Ok(Err(_)) | Err(_) => Err(End::Gone),
        }
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
