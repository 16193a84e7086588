//! The background subscriber: one WebSocket at a time to one of the
//! endpoints, applying snapshots and deltas in order, with reconnects,
//! failover and resume by version.

use super::backoff::{jitter, Backoff};
use super::shared::Shared;
use super::state::{ApplyError, RulesetState};
use crate::entity::EntityKey;
use crate::protocol::{
    decode_server, encode_client, ClientMessage, CloseCode, Hello, Reaction, ServerMessage,
    SUBPROTOCOL,
};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

#[derive(Clone, Debug)]
pub(crate) struct StreamSettings {
    pub endpoints: Vec<String>,
    pub sdk_key: String,
    pub connect_timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub max_message_bytes: usize,
    pub random_start: bool,
}

/// Upper bound on a snapshot received in parts.
const MAX_SNAPSHOT_BYTES: usize = 512 * 1024 * 1024;

/// How one session ended.
enum End {
    Shutdown,
    /// The node closed with a code (or without one).
    Closed(Option<CloseCode>),
    /// Network or protocol failure.
    Failed(String),
    /// Our state disagrees with the node's digest: start over from a snapshot.
    Resync(String),
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    settings: StreamSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let n = settings.endpoints.len();
    if n == 0 {
        return;
    }
    let mut idx = if settings.random_start {
        rand::random::<usize>() % n
    } else {
        0
    };
    let mut backoff = Backoff::new(settings.backoff_base, settings.backoff_max);
    let mut force_snapshot = false;
    let mut sessions = 0u64;
    // Bounded by shutdown: every round either ends the task or waits a delay.
    loop {
        if *shutdown.borrow() {
            return;
        }
        if sessions > 0 {
            shared.health_mut().reconnects += 1;
        }
        sessions += 1;
        let endpoint = &settings.endpoints[idx];
        let mut session = Session {
            shared: &shared,
            settings: &settings,
            progressed: false,
            pending: None,
        };
        let end = session.run(endpoint, force_snapshot, &mut shutdown).await;
        let progressed = session.progressed;
        {
            let mut h = shared.health_mut();
            h.connected = false;
            match &end {
                End::Closed(code) => {
                    h.last_close = *code;
                    if let Some(c) = code {
                        h.last_error = Some(format!("closed by {endpoint}: {c}"));
                    }
                }
                End::Failed(e) | End::Resync(e) => h.last_error = Some(format!("{endpoint}: {e}")),
                End::Shutdown => {}
            }
        }
        if progressed {
            backoff.reset();
        }
        force_snapshot = matches!(end, End::Resync(_));
        let delay = match end {
            End::Shutdown => return,
            End::Closed(Some(code)) => match code.reaction() {
                Reaction::ReconnectNow | Reaction::ReconnectElsewhere => {
                    jitter(Duration::ZERO, Duration::from_millis(250))
                }
                Reaction::Backoff => backoff.next_delay(),
                Reaction::MaxBackoff => backoff.max_delay(),
                Reaction::Stop => {
                    tracing::error!(%code, "flagraft stream stopped");
                    return;
                }
            },
            End::Resync(_) => jitter(Duration::ZERO, Duration::from_millis(100)),
            End::Closed(None) | End::Failed(_) => backoff.next_delay(),
        };
        // Fail over: the next attempt goes to the next endpoint.
        idx = (idx + 1) % n;
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => return,
        }
    }
}

struct Session<'a> {
    shared: &'a Shared,
    settings: &'a StreamSettings,
    /// A welcome arrived: the node accepted us (resets the backoff).
    progressed: bool,
    /// A snapshot being received in parts, with its size so far.
    pending: Option<(crate::protocol::Snapshot, usize)>,
}

impl Session<'_> {
    async fn run(
        &mut self,
        endpoint: &str,
        force_snapshot: bool,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End {
        let mut request = match endpoint.into_client_request() {
            Ok(r) => r,
            Err(e) => return End::Failed(format!("bad endpoint: {e}")),
        };
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", http_value(SUBPROTOCOL));
        let config = WebSocketConfig::default()
            .read_buffer_size(16 * 1024)
            .write_buffer_size(0)
            .max_write_buffer_size(1024 * 1024)
            .max_message_size(Some(self.settings.max_message_bytes))
            .max_frame_size(Some(self.settings.max_message_bytes));
        let connect = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
        let mut ws = match tokio::time::timeout(self.settings.connect_timeout, connect).await {
            Err(_) => return End::Failed("connect timed out".into()),
            Ok(Err(e)) => return End::Failed(format!("connect: {e}")),
            Ok(Ok((ws, _))) => ws,
        };
        self.shared.health_mut().endpoint = Some(endpoint.to_string());
        let held = self.shared.state.load();
        let resume = !force_snapshot && held.source != super::state::StateSource::Empty;
        let hello = ClientMessage::Hello(Hello {
            key: self.settings.sdk_key.clone(),
            have_version: resume.then_some(held.version),
            have_digest: resume.then_some(held.digest),
            sdk: Some(concat!("flagraft-rust/", env!("CARGO_PKG_VERSION")).to_string()),
        });
        drop(held);
        let Ok(text) = encode_client(&hello) else {
            return End::Failed("cannot encode hello".into());
        };
        if let Err(e) = ws.send(Message::text(text)).await {
            return End::Failed(format!("send hello: {e}"));
        }

        // Until the welcome tells the heartbeat interval, allow 10 s of silence.
        let mut silence = Duration::from_secs(10);
        let mut ping_every = Duration::from_secs(15);
        let mut next_ping = Instant::now() + ping_every;
        let mut last_rx = Instant::now();
        let mut ping_id = 0u64;
        let mut goodbye: Option<CloseCode> = None;
        loop {
            let silent_at = last_rx + silence;
            tokio::select! {
                _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => {
                    let _ = ws.close(None).await;
                    return End::Shutdown;
                }
                _ = tokio::time::sleep_until(silent_at) => {
                    return End::Failed("node silent for 3 heartbeats".into());
                }
                _ = tokio::time::sleep_until(next_ping) => {
                    ping_id += 1;
                    next_ping = Instant::now() + ping_every;
                    if let Ok(t) = encode_client(&ClientMessage::Ping { id: ping_id }) {
                        if let Err(e) = ws.send(Message::text(t)).await {
                            return End::Failed(format!("send ping: {e}"));
                        }
                    }
                }
                frame = ws.next() => {
                    last_rx = Instant::now();
                    self.shared.health_mut().last_message = Some(std::time::Instant::now());
                    let text = match frame {
                        None => return End::Closed(goodbye),
                        Some(Err(e)) => return match goodbye {
                            Some(code) => End::Closed(Some(code)),
                            None => End::Failed(format!("read: {e}")),
                        },
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(frame))) => {
                            let code = frame
                                .and_then(|f| CloseCode::from_code(u16::from(f.code)))
                                .or(goodbye);
                            return End::Closed(code);
                        }
                        Some(Ok(Message::Binary(_))) => return End::Failed("binary frame".into()),
                        Some(Ok(_)) => continue,
                    };
                    let msg = match decode_server(text.as_bytes(), self.settings.max_message_bytes) {
                        Ok(m) => m,
                        Err(e) => return End::Failed(e.to_string()),
                    };
                    match msg {
                        ServerMessage::Welcome(w) => {
                            self.progressed = true;
                            let hb = Duration::from_millis(w.heartbeat_ms.clamp(100, 300_000));
                            ping_every = hb;
                            silence = hb * 3;
                            // A random phase: clients that connected together (a node's
                            // restart) do not ping it all in the same instant ever after.
                            next_ping = Instant::now() + super::backoff::jitter(hb / 2, hb);
                            let mut h = self.shared.health_mut();
                            h.connected = true;
                            h.node_id = Some(w.node_id);
                            h.node_head_version = Some(w.head_version);
                        }
                        ServerMessage::Goodbye(g) => goodbye = CloseCode::from_code(g.code),
                        other => {
                            let len = text.len();
                            if let Err(end) = self.on_state_message(other, len, force_snapshot) {
                                let _ = ws.close(None).await;
                                return end;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Apply a snapshot or delta, or note what the node said.
    fn on_state_message(
        &mut self,
        msg: ServerMessage,
        len: usize,
        force_snapshot: bool,
    ) -> Result<(), End> {
        let shared = self.shared;
        if self.pending.is_some()
            && !matches!(
                msg,
                ServerMessage::SnapshotPart(_)
                    | ServerMessage::Heartbeat(_)
                    | ServerMessage::Pong { .. }
            )
        {
            return Err(End::Failed(
                "snapshot interrupted by another message".into(),
            ));
        }
        match msg {
            ServerMessage::SnapshotPart(p) => {
                let Some((mut s, bytes)) = self.pending.take() else {
                    return Err(End::Failed("snapshot_part without a snapshot".into()));
                };
                let bytes = bytes.saturating_add(len);
                if bytes > MAX_SNAPSHOT_BYTES
                    || s.entities.len().saturating_add(p.entities.len())
                        > crate::limits::MAX_ENTITIES
                {
                    return Err(End::Failed("snapshot too large".into()));
                }
                s.entities.extend(p.entities);
                if p.more {
                    self.pending = Some((s, bytes));
                } else {
                    self.install_snapshot(s)?;
                }
            }
            ServerMessage::Snapshot(s) => {
                let held = shared.state.load();
                // Versions never go back, unless our own state is known to be bad.
                if s.version < held.version
                    && !force_snapshot
                    && held.source == super::state::StateSource::Network
                {
                    return Err(End::Failed(format!(
                        "snapshot of version {} is older than held version {}",
                        s.version, held.version
                    )));
                }
                drop(held);
                if s.more {
                    self.pending = Some((s, len));
                } else {
                    self.install_snapshot(s)?;
                }
            }
            ServerMessage::Delta(d) => {
                let changed: Arc<[EntityKey]> = d
                    .upserts
                    .iter()
                    .map(|e| e.key.clone())
                    .chain(d.deletes.iter().cloned())
                    .collect();
                let next = shared.state.load().apply_delta(d);
                match next {
                    Ok(state) => shared.install(state, Some(changed)),
                    Err(e @ ApplyError::DigestMismatch { .. }) => {
                        return Err(End::Resync(e.to_string()))
                    }
                    Err(e) => return Err(End::Failed(e.to_string())),
                }
            }
            ServerMessage::Heartbeat(h) => {
                shared.health_mut().node_head_version = Some(h.head_version);
                // The initial sync is over: rules resumed from the disk cache are now
                // confirmed by the node (it checked their version and digest).
                shared.confirm_cached();
            }
            ServerMessage::Behind(b) => {
                shared.health_mut().last_error = Some(format!(
                    "node at version {} is behind ours ({}); waiting up to {} ms",
                    b.node_version, b.have_version, b.wait_ms
                ));
            }
            ServerMessage::HistoryGone(_) | ServerMessage::Pong { .. } => {}
            ServerMessage::Welcome(_) | ServerMessage::Goodbye(_) => {}
        }
        Ok(())
    }
}

impl Session<'_> {
    fn install_snapshot(&self, s: crate::protocol::Snapshot) -> Result<(), End> {
        let state = RulesetState::from_snapshot(s)
            .map_err(|e| End::Failed(format!("snapshot rejected: {e}")))?;
        self.shared.install(state, None);
        Ok(())
    }
}

fn http_value(s: &'static str) -> tokio_tungstenite::tungstenite::http::HeaderValue {
    tokio_tungstenite::tungstenite::http::HeaderValue::from_static(s)
}
