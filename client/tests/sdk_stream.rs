//! The SDK against a scripted fake node: client-side digest checks, resync,
//! and cold start from the disk cache with no node reachable.

// tungstenite's handshake callback signature fixes the error type.
#![allow(clippy::result_large_err)]

use flagraft_client::digest::{entity_key_hash, RulesetDigest};
use flagraft_client::entity::Entity;
use flagraft_client::protocol::{
    decode_client, encode_server, ClientMessage, Delta, Hello, ServerMessage, Snapshot,
    SnapshotReason, Welcome,
};
use flagraft_client::sdk::{Client, StateSource};
use flagraft_client::User;
use futures_util::{SinkExt, StreamExt};
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

fn case_entities() -> Vec<Entity> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/cases/experiments.dcs.json");
    flagraft_client::entities_from_dcs(&std::fs::read(path).unwrap()).unwrap()
}

fn digest(entities: &[Entity]) -> RulesetDigest {
    RulesetDigest::from_hashes(
        &entities
            .iter()
            .map(|e| entity_key_hash(&e.key, &e.body))
            .collect::<Vec<_>>(),
    )
}

fn welcome() -> ServerMessage {
    ServerMessage::Welcome(Welcome {
        node_id: 9,
        project: "default".into(),
        head_version: 0,
        heartbeat_ms: 60_000,
    })
}

fn snapshot(version: u64, entities: Vec<Entity>) -> ServerMessage {
    ServerMessage::Snapshot(Snapshot {
        version,
        digest: digest(&entities),
        commit_time_ms: version,
        reason: SnapshotReason::Initial,
        entities,
        more: false,
    })
}

/// A node that plays one script per connection and reports each hello.
async fn fake_node(scripts: Vec<Vec<ServerMessage>>) -> (String, mpsc::UnboundedReceiver<Hello>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (hellos, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        for script in scripts {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let echo = |req: &Request, mut resp: Response| {
                if let Some(p) = req.headers().get("Sec-WebSocket-Protocol") {
                    resp.headers_mut()
                        .insert("Sec-WebSocket-Protocol", p.clone());
                }
                Ok(resp)
            };
            let mut ws = tokio_tungstenite::accept_hdr_async(tcp, echo)
                .await
                .unwrap();
            let hello = loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => match decode_client(t.as_bytes(), 1 << 16) {
                        Ok(ClientMessage::Hello(h)) => break h,
                        _ => continue,
                    },
                    _ => return,
                }
            };
            let _ = hellos.send(hello);
            for msg in script {
                ws.send(Message::text(encode_server(&msg).unwrap()))
                    .await
                    .unwrap();
            }
            // Keep the connection until the client leaves it.
            tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
        }
    });
    (addr, rx)
}

async fn next_hello(rx: &mut mpsc::UnboundedReceiver<Hello>) -> Hello {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn a_delta_with_a_wrong_digest_is_refused_and_resynced_by_snapshot() {
    let v1 = case_entities();
    let mut v2 = v1.clone();
    v2[0].body["salt"] = serde_json::json!("changed");
    let bad = ServerMessage::Delta(Delta {
        from_version: 1,
        to_version: 2,
        commit_time_ms: 2,
        upserts: vec![v2[0].clone()],
        deletes: vec![],
        digest: RulesetDigest([7; 32]),
    });
    let (addr, mut hellos) = fake_node(vec![
        vec![welcome(), snapshot(1, v1.clone()), bad],
        vec![welcome(), snapshot(2, v2.clone())],
    ])
    .await;
    let client = Client::builder()
        .endpoints([addr])
        .sdk_key("k")
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .init_timeout(WAIT)
        .build()
        .await
        .unwrap();
    let first = next_hello(&mut hellos).await;
    assert_eq!(first.have_version, None);
    // After the bad delta, the client asks for a snapshot instead of resuming.
    let second = next_hello(&mut hellos).await;
    assert_eq!((second.have_version, second.have_digest), (None, None));
    assert_eq!(client.wait_for_version(2, WAIT).await, Ok(2));
    assert_eq!(client.digest(), digest(&v2));
    let h = client.health();
    assert_eq!(h.reconnects, 1);
    assert!(h.last_error.unwrap_or_default().contains("digest mismatch"));
    client.shutdown().await;
}

#[tokio::test]
async fn cold_start_from_the_disk_cache_with_no_node_then_resume_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("flagraft-cache.json");
    let entities = case_entities();
    let user = User::with_user_id("user_0");

    // 1. Online: the client receives version 3 and writes it to the cache.
    let (addr, _hellos) = fake_node(vec![vec![welcome(), snapshot(3, entities.clone())]]).await;
    let client = Client::builder()
        .endpoints([addr])
        .sdk_key("k")
        .disk_cache(&cache)
        .disk_cache_min_interval(Duration::ZERO)
        .init_timeout(WAIT)
        .build()
        .await
        .unwrap();
    assert_eq!(client.version(), 3);
    let online_answer = client.get_experiment(&user, "checkout_flow");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cache.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "cache never written"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client.shutdown().await;

    // 2. Every node down: start from the cache.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let client = Client::builder()
        .endpoints([dead])
        .sdk_key("k")
        .disk_cache(&cache)
        .init_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let h = client.health();
    assert_eq!(
        (h.source, h.version, h.connected),
        (StateSource::DiskCache, 3, false)
    );
    assert_eq!(client.get_experiment(&user, "checkout_flow"), online_answer);
    client.shutdown().await;

    // A cache written for another key is not used.
    let client = Client::builder()
        .endpoints(["127.0.0.1:1"])
        .sdk_key("other-key")
        .disk_cache(&cache)
        .init_timeout(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    assert_eq!(client.health().source, StateSource::Empty);
    client.shutdown().await;

    // 3. A node is back: the client resumes from the cached version.
    let mut v4 = entities.clone();
    v4[0].body["salt"] = serde_json::json!("v4");
    let delta = ServerMessage::Delta(Delta {
        from_version: 3,
        to_version: 4,
        commit_time_ms: 4,
        upserts: vec![v4[0].clone()],
        deletes: vec![],
        digest: digest(&v4),
    });
    let (addr, mut hellos) = fake_node(vec![vec![welcome(), delta]]).await;
    let client = Client::builder()
        .endpoints([addr])
        .sdk_key("k")
        .disk_cache(&cache)
        .init_timeout(WAIT)
        .build()
        .await
        .unwrap();
    let hello = next_hello(&mut hellos).await;
    assert_eq!(
        (hello.have_version, hello.have_digest),
        (Some(3), Some(digest(&entities)))
    );
    assert_eq!(client.wait_for_version(4, WAIT).await, Ok(4));
    assert_eq!(client.health().source, StateSource::Network);
    client.shutdown().await;

    // 4. The node is at the cached version: nothing to send but the first heartbeat,
    //    which confirms the cached rules.
    std::fs::remove_file(&cache).unwrap();
    let cached = flagraft_client::sdk::cache::key_id("k");
    let state = flagraft_client::sdk::RulesetState::from_entities(
        3,
        3,
        StateSource::Network,
        entities.clone(),
        None,
    )
    .unwrap();
    flagraft_client::sdk::cache::store(&cache, &cached, &state).unwrap();
    let beat = ServerMessage::Heartbeat(flagraft_client::protocol::Heartbeat {
        head_version: 3,
        time_ms: 0,
    });
    let (addr, mut hellos) = fake_node(vec![vec![welcome(), beat]]).await;
    let client = Client::builder()
        .endpoints([addr])
        .sdk_key("k")
        .disk_cache(&cache)
        .init_timeout(WAIT)
        .build()
        .await
        .unwrap();
    assert_eq!(next_hello(&mut hellos).await.have_version, Some(3));
    let h = client.health();
    assert_eq!(
        (h.source, h.version, h.connected),
        (StateSource::Network, 3, true)
    );
    client.shutdown().await;
}
