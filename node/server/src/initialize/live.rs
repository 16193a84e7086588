//! `GET /v1/stream/client` (WebSocket, subprotocol `flagraft-client.v1`):
//! a client key follows one user's values. The node sends the full client
//! initialize response after the hello, and again whenever a newly applied
//! version (or, for rules that read the clock, a heartbeat) changes that
//! user's values — never rules, never deltas of rules.
//!
//! ```text
//! client                                         node
//!   |--- hello {key, user, hash?, have_etag?} ---->|
//!   |<-- welcome {node_id, project, heartbeat_ms}
//!   |<-- values {version, etag, response}           (unless have_etag is current)
//!   |<-- values ...                                 (each version that changes the values)
//!   |--- user {user} ---->  <-- values              (switch user)
//!   |--- ping {id} ---->    <-- pong {id}
//!   |<-- heartbeat {head_version, time_ms}          (every heartbeat_ms)
//!   |<-- goodbye {code, reason}, close
//! ```
//!
//! Close codes are the update stream's (docs/protocol.md §4): 4000 bad
//! message or malformed user, 4001 unknown key or not a client key, 4002 key
//! revoked, 4003 unsupported protocol, 4005 node stopping, 4006 max age, 4008
//! timeout, 4009 project deleted, 4011 too many connections or rate limited.

use super::handler::{authorize, etag_matches_value};
use super::{InitializeService, RulesetSource, CLIENT_SUBPROTOCOL};
use crate::stream::hello::{first_text_frame, End};
use crate::stream::KeyKind;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use flagraft_client::eval::EvalOptions;
use flagraft_client::gcir::{
    client_initialize_response, content_etag, request_etag, ClientUser, GcirOptions,
};
use flagraft_client::protocol::CloseCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    Hello {
        key: String,
        user: Value,
        #[serde(default)]
        hash: Option<String>,
        /// The `etag` of the values the client already holds.
        #[serde(default)]
        have_etag: Option<String>,
    },
    /// Follow another user from now on.
    User {
        user: Value,
    },
    Ping {
        id: u64,
    },
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum NodeMessage<'a> {
    Welcome {
        node_id: u64,
        project: &'a str,
        heartbeat_ms: u64,
    },
    Heartbeat {
        head_version: u64,
        time_ms: u64,
    },
    Pong {
        id: u64,
    },
    Goodbye {
        code: u16,
        reason: &'a str,
    },
}

type Flow<T = ()> = Result<T, End>;

pub(crate) async fn upgrade<S: RulesetSource>(
    State(svc): State<Arc<InitializeService<S>>>,
    ws: WebSocketUpgrade,
) -> Response {
    let limit = svc.config.max_body_bytes + 1024;
    let mut ws = ws
        .protocols([CLIENT_SUBPROTOCOL])
        .max_message_size(limit)
        .max_frame_size(limit);
    // As on the update stream: accept, then close with 4003, so the client
    // gets a clear reason (echoing its first offer, which it requires).
    let protocol_ok = ws.selected_protocol().is_some();
    if !protocol_ok {
        let offered = ws.requested_protocols().next().cloned();
        if let Some(offered) = offered {
            ws.set_selected_protocol(offered);
        }
    }
    ws.on_upgrade(move |socket| run(svc, socket, protocol_ok))
}

async fn run<S: RulesetSource>(svc: Arc<InitializeService<S>>, mut socket: WebSocket, ok: bool) {
    let send_timeout = Duration::from_millis(svc.config.send_timeout_ms);
    let end = if !ok {
        End::Close(CloseCode::UnsupportedProtocol)
    } else if *svc.shutdown.borrow() {
        End::Close(CloseCode::ShuttingDown)
    } else {
        match open(&svc, &mut socket).await {
            Err(end) => end,
            Ok(mut live) => live.serve(&mut socket).await.err().unwrap_or(End::Gone),
        }
    };
    if let End::Close(code) = end {
        let bye = NodeMessage::Goodbye {
            code: code.code(),
            reason: code.name(),
        };
        let _ = tokio::time::timeout(send_timeout, async {
            if let Ok(text) = serde_json::to_string(&bye) {
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
}

/// Counts a connection while it lives.
struct Slot<S: RulesetSource>(Arc<InitializeService<S>>);

impl<S: RulesetSource> Drop for Slot<S> {
    fn drop(&mut self) {
        self.0
            .live_connections
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}

fn take_slot<S: RulesetSource>(svc: &Arc<InitializeService<S>>) -> Option<Slot<S>> {
    let mut admitted = false;
    svc.live_connections.send_if_modified(|n| {
        admitted = *n < svc.config.live_max_connections;
        if admitted {
            *n += 1;
        }
        admitted
    });
    admitted.then(|| Slot(Arc::clone(svc)))
}

fn parse_user(user: &Value) -> Flow<ClientUser> {
    ClientUser::from_json(user).map_err(|_| End::Close(CloseCode::BadMessage))
}

/// Read and check the hello.
async fn open<S: RulesetSource>(
    svc: &Arc<InitializeService<S>>,
    socket: &mut WebSocket,
) -> Flow<Live<S>> {
    let deadline = Instant::now() + Duration::from_millis(svc.config.hello_timeout_ms);
    let text = first_text_frame(socket, deadline).await?;
    let Ok(ClientMessage::Hello {
        key,
        user,
        hash,
        have_etag,
    }) = serde_json::from_str::<ClientMessage>(&text)
    else {
        return Err(End::Close(CloseCode::BadMessage));
    };
    if key.is_empty() || key.len() > flagraft_client::protocol::MAX_KEY_BYTES {
        return Err(End::Close(CloseCode::Unauthorized));
    }
    let project = match authorize(svc, &key) {
        Ok(p) => p,
        Err(e) if e.code == "rate_limited" => return Err(End::Close(CloseCode::Overloaded)),
        Err(_) => return Err(End::Close(CloseCode::Unauthorized)),
    };
    let hash = match hash.as_deref().map(str::parse) {
        None => Default::default(),
        Some(Ok(h)) => h,
        Some(Err(_)) => return Err(End::Close(CloseCode::BadMessage)),
    };
    let user = parse_user(&user)?;
    let slot = take_slot(svc).ok_or(End::Close(CloseCode::Overloaded))?;
    let options = GcirOptions::default().with_hash(hash).with_client_key(&key);
    Ok(Live {
        svc: Arc::clone(svc),
        _slot: slot,
        key,
        project,
        options,
        user,
        have_etag,
        sent_version: None,
        sent_fingerprint: None,
        last_rx: Instant::now(),
    })
}

/// One client-side connection after its hello.
struct Live<S: RulesetSource> {
    svc: Arc<InitializeService<S>>,
    _slot: Slot<S>,
    key: String,
    project: String,
    options: GcirOptions,
    user: ClientUser,
    /// The etag the client said it holds (only for the first values).
    have_etag: Option<String>,
    /// The version the client's values were last computed at.
    sent_version: Option<u64>,
    /// SHA-256 of the last values sent, `time` excluded.
    sent_fingerprint: Option<[u8; 32]>,
    last_rx: Instant,
}

impl<S: RulesetSource> Live<S> {
    async fn serve(&mut self, socket: &mut WebSocket) -> Flow {
        let c = &self.svc.config;
        let (hb, max_age) = (c.heartbeat(), Duration::from_millis(c.live_max_age_ms));
        self.send(
            socket,
            &NodeMessage::Welcome {
                node_id: self.svc.source.node_id(),
                project: &self.project,
                heartbeat_ms: c.live_heartbeat_ms,
            },
        )
        .await?;
        // Watch for applies before computing, so no version falls in between.
        let mut applied = self.svc.source.applied_watch();
        let _ = applied.borrow_and_update();
        self.push(socket, true).await?;
        let mut heartbeat = tokio::time::interval_at(Instant::now() + hb, hb);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let max_age = tokio::time::sleep(max_age);
        tokio::pin!(max_age);
        let mut shutdown = self.svc.shutdown.clone();
        self.last_rx = Instant::now();
        loop {
            tokio::select! {
                _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => return Err(End::Close(CloseCode::ShuttingDown)),
                _ = &mut max_age => return Err(End::Close(CloseCode::MaxAge)),
                changed = applied.changed() => match changed {
                    Ok(()) => self.push(socket, false).await?,
                    Err(_) => return Err(End::Close(CloseCode::ShuttingDown)),
                },
                msg = socket.recv() => self.on_frame(socket, msg).await?,
                _ = heartbeat.tick() => self.on_heartbeat(socket, hb).await?,
            }
        }
    }

    /// Evaluate for the user at the current head and send the values if they
    /// changed (`force`: send unless the client holds exactly them).
    async fn push(&mut self, socket: &mut WebSocket, force: bool) -> Flow {
        let rs = self
            .svc
            .cache
            .current(&self.svc.source, &self.project)
            .await
            .ok_or(End::Close(CloseCode::ProjectDeleted))?;
        let time_dependent = rs.meta.is_time_dependent();
        if !force && !time_dependent && self.sent_version == Some(rs.version) {
            return Ok(());
        }
        let eval = EvalOptions::default();
        let mut resp = client_initialize_response(&rs.view(&eval), &self.user, &self.options);
        let body = resp.to_json_bytes();
        resp.time = 0;
        let fingerprint: [u8; 32] = Sha256::digest(resp.to_json_bytes()).into();
        self.sent_version = Some(rs.version);
        if !force && self.sent_fingerprint == Some(fingerprint) {
            return Ok(()); // nothing changed for this user
        }
        self.sent_fingerprint = Some(fingerprint);
        let etag = if time_dependent {
            content_etag(rs.version, &body)
        } else {
            request_etag(rs.version, &rs.digest, &self.user, &self.options)
        };
        if let Some(have) = self.have_etag.take() {
            if force && etag_matches_value(&have, &etag) {
                return Ok(()); // the client already holds these values
            }
        }
        // The response is JSON already: embed it rather than re-encode it.
        let text = format!(
            "{{\"type\":\"values\",\"version\":{},\"etag\":{},\"response\":{}}}",
            rs.version,
            Value::String(etag),
            String::from_utf8_lossy(&body)
        );
        self.send_text(socket, text).await
    }

    async fn on_frame(
        &mut self,
        socket: &mut WebSocket,
        msg: Option<Result<Message, axum::Error>>,
    ) -> Flow {
        let msg = match msg {
            None | Some(Err(_)) => return Err(End::Gone),
            Some(Ok(m)) => m,
        };
        self.last_rx = Instant::now();
        let text = match msg {
            Message::Text(t) => t,
            Message::Ping(_) | Message::Pong(_) => return Ok(()),
            Message::Close(_) => return Err(End::Gone),
            Message::Binary(_) => return Err(End::Close(CloseCode::BadMessage)),
        };
        match serde_json::from_str::<ClientMessage>(&text) {
            Ok(ClientMessage::Ping { id }) => self.send(socket, &NodeMessage::Pong { id }).await,
            Ok(ClientMessage::User { user }) => {
                // Each switch is one evaluation: it spends a token like a request.
                if self.svc.limiter.check(&self.key).is_err() {
                    return Err(End::Close(CloseCode::Overloaded));
                }
                self.user = parse_user(&user)?;
                self.push(socket, true).await
            }
            Ok(ClientMessage::Hello { .. }) | Err(_) => Err(End::Close(CloseCode::BadMessage)),
        }
    }

    async fn on_heartbeat(&mut self, socket: &mut WebSocket, interval: Duration) -> Flow {
        if self.last_rx.elapsed() > interval * 3 {
            return Err(End::Close(CloseCode::Timeout));
        }
        match self.svc.keys.resolve(&self.key) {
            Some(g) if g.kind == KeyKind::Client && g.project == self.project => {}
            _ => return Err(End::Close(CloseCode::KeyRevoked)),
        }
        // Rules that read the clock may change a user's values without a new version.
        self.push(socket, false).await?;
        let head_version = self.svc.source.head(&self.project).map_or(0, |h| h.version);
        self.send(
            socket,
            &NodeMessage::Heartbeat {
                head_version,
                time_ms: now_ms(),
            },
        )
        .await
    }

    async fn send(&self, socket: &mut WebSocket, msg: &NodeMessage<'_>) -> Flow {
        let text = serde_json::to_string(msg).map_err(|_| End::Close(CloseCode::Internal))?;
        self.send_text(socket, text).await
    }

    async fn send_text(&self, socket: &mut WebSocket, text: String) -> Flow {
        let limit = Duration::from_millis(self.svc.config.send_timeout_ms);
        match tokio::time::timeout(limit, socket.send(Message::Text(text.into()))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(End::Gone),
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
