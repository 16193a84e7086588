//! The stream end to end over loopback: an in-process axum server on a
//! MemorySource and a raw WebSocket client speaking flagraft.v1.

use super::memory::MemorySource;
use super::*;
use flagraft_client::digest::{entity_key_hash, RulesetDigest};
use flagraft_client::entity::{Entity, EntityKey, EntityKind};
use flagraft_client::protocol::{
    decode_server, encode_client, ClientMessage, Hello, ServerMessage, SnapshotReason,
};
use futures_util::{SinkExt, StreamExt};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
const WAIT: Duration = Duration::from_secs(10);
const KEY: &str = "srv-key";

struct Node {
    addr: std::net::SocketAddr,
    hub: Arc<StreamHub<MemorySource>>,
    src: MemorySource,
    keys: Arc<StaticKeys>,
}

async fn start_with(src: MemorySource, config: StreamConfig) -> Node {
    let keys = Arc::new(StaticKeys::default());
    keys.insert(
        KEY,
        KeyGrant {
            project: "default".into(),
            kind: KeyKind::Server,
        },
    );
    keys.insert(
        "cli-key",
        KeyGrant {
            project: "default".into(),
            kind: KeyKind::Client,
        },
    );
    let hub = StreamHub::new(src.clone(), config, keys.clone());
    hub.spawn_fanout();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(Arc::clone(&hub));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Node {
        addr,
        hub,
        src,
        keys,
    }
}

async fn start(config: StreamConfig) -> Node {
    start_with(MemorySource::new(7, 1024), config).await
}

fn gate(name: &str, n: u64) -> Entity {
    Entity {
        key: EntityKey::new(EntityKind::Gate, name),
        body: serde_json::json!({ "name": name, "n": n }),
    }
}

async fn connect_with(addr: std::net::SocketAddr, protocol: &str) -> Ws {
    let mut req = format!("ws://{addr}/v1/stream")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .unwrap()
        .unwrap();
    ws
}

async fn hello(addr: std::net::SocketAddr, have: Option<(u64, RulesetDigest)>) -> Ws {
    let mut ws = connect_with(addr, "flagraft.v1").await;
    send(
        &mut ws,
        ClientMessage::Hello(Hello {
            key: KEY.into(),
            have_version: have.map(|h| h.0),
            have_digest: have.map(|h| h.1),
            sdk: Some("test".into()),
        }),
    )
    .await;
    ws
}

async fn send(ws: &mut Ws, msg: ClientMessage) {
    ws.send(Message::text(encode_client(&msg).unwrap()))
        .await
        .unwrap();
}

/// The next protocol message, or the close code if the node closed.
async fn next(ws: &mut Ws) -> Result<ServerMessage, Option<u16>> {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message within the wait");
        match frame {
            Some(Ok(Message::Text(t))) => return Ok(decode_server(t.as_bytes(), 1 << 26).unwrap()),
            Some(Ok(Message::Close(c))) => return Err(c.map(|c| u16::from(c.code))),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Err(None),
        }
    }
}

/// Skip heartbeats.
async fn next_data(ws: &mut Ws) -> Result<ServerMessage, Option<u16>> {
    for _ in 0..1000 {
        match next(ws).await? {
            ServerMessage::Heartbeat(_) => continue,
            m => return Ok(m),
        }
    }
    panic!("only heartbeats");
}

/// Read until the close frame; returns its code and the goodbye code seen before it.
async fn closed(ws: &mut Ws) -> (Option<u16>, Option<u16>) {
    let mut bye = None;
    for _ in 0..100_000 {
        match next(ws).await {
            Ok(ServerMessage::Goodbye(g)) => bye = Some(g.code),
            Ok(_) => {}
            Err(code) => return (code, bye),
        }
    }
    panic!("never closed");
}

/// A client-side replica that checks every digest.
#[derive(Default)]
struct Replica {
    version: u64,
    entities: BTreeMap<EntityKey, serde_json::Value>,
    digest: RulesetDigest,
}

impl Replica {
    fn apply(&mut self, msg: &ServerMessage) {
        match msg {
            ServerMessage::Snapshot(s) => {
                self.entities = s
                    .entities
                    .iter()
                    .map(|e| (e.key.clone(), e.body.clone()))
                    .collect();
                self.digest = RulesetDigest::from_hashes(
                    &self
                        .entities
                        .iter()
                        .map(|(k, v)| entity_key_hash(k, v))
                        .collect::<Vec<_>>(),
                );
                assert_eq!(self.digest, s.digest);
                self.version = s.version;
            }
            ServerMessage::Delta(d) => {
                assert_eq!(
                    d.from_version, self.version,
                    "delta must start at our version"
                );
                for k in &d.deletes {
                    let old = self.entities.remove(k).unwrap();
                    self.digest.remove(&entity_key_hash(k, &old));
                }
                for e in &d.upserts {
                    if let Some(old) = self.entities.insert(e.key.clone(), e.body.clone()) {
                        self.digest.remove(&entity_key_hash(&e.key, &old));
                    }
                    self.digest.add(&entity_key_hash(&e.key, &e.body));
                }
                assert_eq!(self.digest, d.digest, "digest after {}", d.to_version);
                self.version = d.to_version;
            }
            other => panic!("not a state message: {other:?}"),
        }
    }
}

fn fast() -> StreamConfig {
    StreamConfig {
        heartbeat_ms: 60_000,
        ..StreamConfig::default()
    }
}

#[tokio::test]
async fn snapshot_then_every_version_in_order() {
    let node = start(fast()).await;
    for i in 1..=3 {
        node.src
            .commit("default", vec![gate(&format!("g{i}"), i)], vec![]);
    }
    let mut ws = hello(node.addr, None).await;
    let Ok(ServerMessage::Welcome(w)) = next_data(&mut ws).await else {
        panic!("welcome first")
    };
    assert_eq!(
        (w.node_id, w.project.as_str(), w.head_version),
        (7, "default", 3)
    );
    let mut replica = Replica::default();
    let snap = next_data(&mut ws).await.unwrap();
    assert!(
        matches!(&snap, ServerMessage::Snapshot(s) if s.reason == SnapshotReason::Initial && s.version == 3)
    );
    replica.apply(&snap);
    for i in 4..=20u64 {
        let deletes = if i % 5 == 0 {
            vec![EntityKey::new(EntityKind::Gate, format!("g{}", i - 1))]
        } else {
            vec![]
        };
        node.src.commit(
            "default",
            vec![gate(&format!("g{i}"), i), gate("g1", i)],
            deletes,
        );
    }
    while replica.version < 20 {
        replica.apply(&next_data(&mut ws).await.unwrap());
    }
    assert_eq!(replica.digest, node.src.head("default").unwrap().digest);
}

#[tokio::test]
async fn resume_from_version_sends_only_the_missing_deltas() {
    let node = start(fast()).await;
    for i in 1..=5 {
        node.src.commit("default", vec![gate("g", i)], vec![]);
    }
    let d2 = node.src.digest_at("default", 2).unwrap().unwrap();
    let mut ws = hello(node.addr, Some((2, d2))).await;
    assert!(matches!(
        next_data(&mut ws).await,
        Ok(ServerMessage::Welcome(_))
    ));
    for v in 3..=5 {
        match next_data(&mut ws).await.unwrap() {
            ServerMessage::Delta(d) => assert_eq!((d.from_version, d.to_version), (v - 1, v)),
            m => panic!("expected delta, got {m:?}"),
        }
    }
    // Up to date: the next message is the next commit.
    node.src.commit("default", vec![gate("h", 1)], vec![]);
    assert!(matches!(next_data(&mut ws).await, Ok(ServerMessage::Delta(d)) if d.from_version == 5));
}

#[tokio::test]
async fn a_wrong_digest_or_compacted_history_gets_a_snapshot() {
    let node = start(fast()).await;
    for i in 1..=6 {
        node.src.commit("default", vec![gate("g", i)], vec![]);
    }
    let mut ws = hello(node.addr, Some((3, RulesetDigest([9; 32])))).await;
    next_data(&mut ws).await.unwrap();
    assert!(
        matches!(next_data(&mut ws).await, Ok(ServerMessage::Snapshot(s))
        if s.reason == SnapshotReason::DigestMismatch && s.version == 6)
    );

    let mut ws = hello(node.addr, Some((6, RulesetDigest([9; 32])))).await;
    next_data(&mut ws).await.unwrap();
    assert!(
        matches!(next_data(&mut ws).await, Ok(ServerMessage::Snapshot(s))
        if s.reason == SnapshotReason::DigestMismatch)
    );

    node.src.compact("default", 5);
    let d2 = RulesetDigest::EMPTY; // not checked: history is gone first
    let mut ws = hello(node.addr, Some((2, d2))).await;
    next_data(&mut ws).await.unwrap();
    assert!(
        matches!(next_data(&mut ws).await, Ok(ServerMessage::HistoryGone(h))
        if h.have_version == 2 && h.oldest_retained == 5)
    );
    assert!(
        matches!(next_data(&mut ws).await, Ok(ServerMessage::Snapshot(s))
        if s.reason == SnapshotReason::HistoryGone && s.version == 6)
    );
}

#[tokio::test]
async fn a_client_ahead_is_held_until_the_node_catches_up() {
    let lagging = MemorySource::new(1, 64);
    let ahead = MemorySource::new(2, 64);
    for i in 1..=3 {
        lagging.commit("default", vec![gate("g", i)], vec![]);
        ahead.commit("default", vec![gate("g", i)], vec![]);
    }
    for i in 4..=5 {
        ahead.commit("default", vec![gate("g", i)], vec![]);
    }
    let node = start_with(lagging, fast()).await;
    let mut ws = hello(node.addr, Some((5, ahead.head("default").unwrap().digest))).await;
    next_data(&mut ws).await.unwrap();
    assert!(
        matches!(next_data(&mut ws).await, Ok(ServerMessage::Behind(b))
        if b.have_version == 5 && b.node_version == 3)
    );
    for i in 4..=6 {
        node.src.commit("default", vec![gate("g", i)], vec![]);
    }
    // Held until 5, then served from there: the first thing it gets is 5 -> 6.
    assert!(
        matches!(next_data(&mut ws).await, Ok(ServerMessage::Delta(d))
        if d.from_version == 5 && d.to_version == 6)
    );
}

#[tokio::test]
async fn a_client_ahead_of_a_stuck_node_is_told_to_go_elsewhere() {
    let node = start(StreamConfig {
        behind_wait_ms: 200,
        ..fast()
    })
    .await;
    let mut ws = hello(node.addr, Some((9, RulesetDigest::EMPTY))).await;
    next_data(&mut ws).await.unwrap();
    assert!(matches!(
        next_data(&mut ws).await,
        Ok(ServerMessage::Behind(_))
    ));
    assert_eq!(closed(&mut ws).await, (Some(4007), Some(4007)));
}

#[tokio::test]
async fn refusals_have_their_close_codes() {
    let node = start(fast()).await;
    // Unknown key, client key.
    for key in ["nope", "cli-key"] {
        let mut ws = connect_with(node.addr, "flagraft.v1").await;
        send(
            &mut ws,
            ClientMessage::Hello(Hello {
                key: key.into(),
                have_version: None,
                have_digest: None,
                sdk: None,
            }),
        )
        .await;
        assert_eq!(closed(&mut ws).await, (Some(4001), Some(4001)));
    }
    // Unsupported protocol version.
    let mut ws = connect_with(node.addr, "flagraft.v0").await;
    assert_eq!(closed(&mut ws).await.0, Some(4003));
    // Garbage and binary frames.
    let mut ws = connect_with(node.addr, "flagraft.v1").await;
    ws.send(Message::text("{not json")).await.unwrap();
    assert_eq!(closed(&mut ws).await.0, Some(4000));
    let mut ws = hello(node.addr, None).await;
    next_data(&mut ws).await.unwrap();
    next_data(&mut ws).await.unwrap();
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(closed(&mut ws).await.0, Some(4000));
    // Oversized message.
    let mut ws = connect_with(node.addr, "flagraft.v1").await;
    let _ = ws.send(Message::text("x".repeat(200 * 1024))).await;
    let (code, _) = closed(&mut ws).await;
    assert!(
        code.is_none() || code == Some(u16::from(WsCloseCode::Size)),
        "{code:?}"
    );
}

#[tokio::test]
async fn heartbeats_pings_and_silence_timeout() {
    let node = start(StreamConfig {
        heartbeat_ms: 100,
        ..StreamConfig::default()
    })
    .await;
    node.src.commit("default", vec![gate("g", 1)], vec![]);
    let mut ws = hello(node.addr, None).await;
    next_data(&mut ws).await.unwrap();
    next_data(&mut ws).await.unwrap();
    assert!(matches!(next(&mut ws).await, Ok(ServerMessage::Heartbeat(h)) if h.head_version == 1));
    send(&mut ws, ClientMessage::Ping { id: 42 }).await;
    assert!(matches!(
        next_data(&mut ws).await,
        Ok(ServerMessage::Pong { id: 42 })
    ));
    // Now silent: the node gives up after 3 intervals.
    assert_eq!(closed(&mut ws).await, (Some(4008), Some(4008)));
}

#[tokio::test]
async fn max_age_shutdown_revocation_and_deletion_say_goodbye() {
    let node = start(StreamConfig {
        max_age_ms: 1_000,
        max_age_jitter: 0.0,
        ..fast()
    })
    .await;
    let mut ws = hello(node.addr, None).await;
    assert_eq!(closed(&mut ws).await, (Some(4006), Some(4006)));

    let node = start(fast()).await;
    let mut ws = hello(node.addr, None).await;
    next_data(&mut ws).await.unwrap();
    next_data(&mut ws).await.unwrap();
    node.keys.revoke(KEY);
    node.hub.recheck_keys();
    assert_eq!(closed(&mut ws).await, (Some(4002), Some(4002)));

    let node = start(fast()).await;
    let mut ws = hello(node.addr, None).await;
    next_data(&mut ws).await.unwrap();
    next_data(&mut ws).await.unwrap();
    node.src.delete("default");
    assert_eq!(closed(&mut ws).await, (Some(4009), Some(4009)));

    let node = start(fast()).await;
    let mut ws = hello(node.addr, None).await;
    next_data(&mut ws).await.unwrap();
    next_data(&mut ws).await.unwrap();
    assert_eq!(node.hub.connection_count(), 1);
    node.hub.shutdown();
    assert_eq!(closed(&mut ws).await, (Some(4005), Some(4005)));
    assert!(node.hub.drained(WAIT).await);
}

#[tokio::test]
async fn lost_changes_are_filled_from_history() {
    let node = start(fast()).await;
    let mut ws = hello(node.addr, None).await;
    next_data(&mut ws).await.unwrap();
    let mut replica = Replica::default();
    replica.apply(&next_data(&mut ws).await.unwrap());
    // A gap: 1 never reaches the feed, 2 does.
    node.src.commit_unpublished("default", vec![gate("a", 1)]);
    node.src.commit("default", vec![gate("b", 2)], vec![]);
    while replica.version < 2 {
        replica.apply(&next_data(&mut ws).await.unwrap());
    }
    // A tail loss announced by a resync (what a Lagged feed or a snapshot install causes).
    node.src.commit_unpublished("default", vec![gate("c", 3)]);
    node.src.publish(SourceChange::Resync);
    replica.apply(&next_data(&mut ws).await.unwrap());
    assert_eq!(replica.version, 3);
}

#[tokio::test]
async fn a_slow_subscriber_is_cut_off_and_resumes_by_version() {
    let node = start(StreamConfig {
        backlog: 4,
        ..fast()
    })
    .await;
    let mut ws = hello(node.addr, None).await;
    next_data(&mut ws).await.unwrap();
    let mut replica = Replica::default();
    replica.apply(&next_data(&mut ws).await.unwrap());
    // The client reads nothing while ~16 MiB of deltas are committed.
    let big = "x".repeat(64 * 1024);
    for i in 1..=256u64 {
        let e = Entity {
            key: EntityKey::new(EntityKind::Config, "big"),
            body: serde_json::json!({ "i": i, "pad": big }),
        };
        node.src.commit("default", vec![e], vec![]);
    }
    let mut code = None;
    for _ in 0..1000 {
        match next_data(&mut ws).await {
            Ok(ServerMessage::Goodbye(g)) => code = Some(g.code),
            Ok(m) => replica.apply(&m),
            Err(_) => break,
        }
    }
    assert_eq!(code, Some(4004), "cut off as too slow");
    assert!(replica.version < 256);
    // Resume by version: only the missing deltas follow, in order.
    let mut ws = hello(node.addr, Some((replica.version, replica.digest))).await;
    next_data(&mut ws).await.unwrap();
    while replica.version < 256 {
        replica.apply(&next_data(&mut ws).await.unwrap());
    }
}

/// A minimal HTTP/1.1 GET over loopback: (status, headers, body).
async fn http_get(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, HashMap<String, String>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    (status, headers, body.to_string())
}

#[tokio::test]
async fn polling_fallback_serves_snapshot_deltas_and_etags() {
    let node = start(fast()).await;
    for i in 1..=3 {
        node.src.commit("default", vec![gate("g", i)], vec![]);
    }
    let auth = ("Authorization", "Bearer srv-key");
    let (status, _, _) = http_get(node.addr, "/v1/download_config_specs", &[]).await;
    assert_eq!(status, 401);
    let (status, _, _) = http_get(
        node.addr,
        "/v1/download_config_specs",
        &[("Authorization", "Bearer cli-key")],
    )
    .await;
    assert_eq!(status, 401);

    let (status, h, body) = http_get(node.addr, "/v1/download_config_specs", &[auth]).await;
    assert_eq!(status, 200);
    let resp: flagraft_client::protocol::PollResponse = serde_json::from_str(&body).unwrap();
    assert_eq!(resp.head_version, 3);
    assert_eq!(h["etag"], resp.etag);
    let mut replica = Replica::default();
    for m in &resp.messages {
        replica.apply(m);
    }
    assert_eq!(replica.version, 3);

    let (status, _, _) = http_get(
        node.addr,
        "/v1/download_config_specs?since=3",
        &[auth, ("If-None-Match", &resp.etag)],
    )
    .await;
    assert_eq!(status, 304);

    node.src.commit("default", vec![gate("g", 4)], vec![]);
    node.src.commit("default", vec![gate("h", 5)], vec![]);
    let (status, _, body) = http_get(
        node.addr,
        "/v1/download_config_specs?since=3",
        &[auth, ("If-None-Match", &resp.etag)],
    )
    .await;
    assert_eq!(status, 200);
    let resp: flagraft_client::protocol::PollResponse = serde_json::from_str(&body).unwrap();
    assert_eq!(resp.messages.len(), 2);
    for m in &resp.messages {
        replica.apply(m);
    }
    assert_eq!(replica.digest, node.src.head("default").unwrap().digest);

    let (status, h, _) = http_get(node.addr, "/v1/download_config_specs?since=99", &[auth]).await;
    assert_eq!(
        (status, h.get("retry-after").map(String::as_str)),
        (503, Some("1"))
    );
    let (status, _, _) = http_get(node.addr, "/v1/download_config_specs?since=x", &[auth]).await;
    assert_eq!(status, 400);
}

// ---- The real SDK against the real stream handler ----

use flagraft_client::sdk::{Client, StateSource};

async fn sdk(endpoints: Vec<String>) -> Client {
    Client::builder()
        .endpoints(endpoints)
        .sdk_key(KEY)
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .init_timeout(WAIT)
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn sdk_applies_every_version_in_order() {
    let node = start(fast()).await;
    node.src.commit("default", vec![gate("g", 0)], vec![]);
    let client = sdk(vec![node.addr.to_string()]).await;
    assert_eq!(client.version(), 1);
    assert_eq!(client.health().source, StateSource::Network);
    let mut updates = client.updates();
    for i in 2..=40u64 {
        node.src
            .commit("default", vec![gate(&format!("g{}", i % 7), i)], vec![]);
    }
    assert_eq!(client.wait_for_version(40, WAIT).await, Ok(40));
    for v in 2..=40 {
        let u = updates.recv().await.unwrap();
        assert_eq!(u.version, v, "in order, nothing skipped");
        assert_eq!(u.changed.as_deref().map(<[_]>::len), Some(1));
    }
    assert_eq!(client.digest(), node.src.head("default").unwrap().digest);
    let h = client.health();
    assert!(h.connected && h.node_id == Some(7) && h.reconnects == 0);
    client.shutdown().await;
}

#[tokio::test]
async fn sdk_fails_over_to_another_node_and_resumes_by_version() {
    let a = start_with(MemorySource::new(1, 1024), fast()).await;
    let b = start_with(MemorySource::new(2, 1024), fast()).await;
    let commit_both = |i: u64| {
        a.src.commit("default", vec![gate("g", i)], vec![]);
        b.src.commit("default", vec![gate("g", i)], vec![]);
    };
    for i in 1..=3 {
        commit_both(i);
    }
    // The client starts on a random endpoint: stop whichever one it is on.
    let client = sdk(vec![a.addr.to_string(), b.addr.to_string()]).await;
    let mut updates = client.updates();
    assert_eq!(client.version(), 3);
    let first = client.health().node_id.unwrap();
    let (on, other) = if first == 1 { (&a, &b) } else { (&b, &a) };
    on.hub.shutdown();
    // The other node gets two versions ahead while the client moves over.
    for i in 4..=5 {
        commit_both(i);
    }
    assert_eq!(client.wait_for_version(5, WAIT).await, Ok(5));
    let h = client.health();
    assert_eq!(h.node_id, Some(other.src.node_id()));
    assert!(h.reconnects >= 1);
    assert_eq!(
        h.last_close,
        Some(flagraft_client::protocol::CloseCode::ShuttingDown)
    );
    for v in 4..=5 {
        assert_eq!(updates.recv().await.unwrap().version, v);
    }
    client.shutdown().await;
}

#[tokio::test]
async fn sdk_takes_a_snapshot_when_the_new_node_disagrees_on_its_version() {
    let a = start_with(MemorySource::new(1, 1024), fast()).await;
    let b = start_with(MemorySource::new(2, 1024), fast()).await;
    a.src.commit("default", vec![gate("g", 1)], vec![]);
    b.src.commit("default", vec![gate("g", 999)], vec![]); // same version, other content
    let client = sdk(vec![a.addr.to_string(), b.addr.to_string()]).await;
    let (on, other) = if client.health().node_id == Some(1) {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert_eq!(client.digest(), on.src.head("default").unwrap().digest);
    let mut versions = client.version_watch();
    on.hub.shutdown();
    // The other node answers the client's (version, digest) with a digest_mismatch snapshot.
    let want = other.src.head("default").unwrap().digest;
    let deadline = tokio::time::Instant::now() + WAIT;
    while client.digest() != want {
        tokio::time::timeout_at(deadline, versions.changed())
            .await
            .expect("resynced in time")
            .unwrap();
    }
    assert_eq!(client.version(), 1);
    client.shutdown().await;
}

#[tokio::test]
async fn a_large_snapshot_is_streamed_in_small_parts() {
    let node = start(StreamConfig {
        snapshot_part_bytes: 1024,
        ..fast()
    })
    .await;
    let entities: Vec<Entity> = (0..60).map(|i| gate(&format!("gate_{i:03}"), i)).collect();
    node.src.commit("default", entities.clone(), vec![]);
    let mut ws = hello(node.addr, None).await;
    next_data(&mut ws).await.unwrap();
    let mut got = Vec::new();
    let mut texts = 0;
    let mut more = true;
    while more {
        texts += 1;
        match next_data(&mut ws).await.unwrap() {
            ServerMessage::Snapshot(s) if texts == 1 => {
                more = s.more;
                got.extend(s.entities);
            }
            ServerMessage::SnapshotPart(p) if texts > 1 => {
                more = p.more;
                got.extend(p.entities);
            }
            m => panic!("unexpected {m:?}"),
        }
    }
    assert!(texts > 3, "split into {texts} messages");
    assert_eq!(got, entities);
    // The SDK reassembles it and checks the digest.
    let client = sdk(vec![node.addr.to_string()]).await;
    assert_eq!(client.version(), 1);
    assert_eq!(client.digest(), node.src.head("default").unwrap().digest);
    assert_eq!(client.ruleset().entity_count(), 60);
    client.shutdown().await;
}
