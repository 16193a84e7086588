//! The update stream on a real 3-node cluster: every version in order across
//! a leader kill, and a snapshot after history compaction.

use flagraft_client::protocol::{
    decode_server, encode_client, ClientMessage, Hello, ServerMessage, SnapshotReason,
};
use flagraft_client::sdk::{Client, StateSource};
use flagraft_cluster_tests::{gate_commit, Cluster, ClusterOptions};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "srv-stream-test";
const WAIT: Duration = Duration::from_secs(30);

/// A cluster whose nodes accept KEY for project `default`.
async fn cluster(options: ClusterOptions) -> Cluster {
    let c = Cluster::configure(options);
    for id in c.ids() {
        let path = c.config_path(id);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&format!(
            "\n[stream]\nheartbeat_ms = 1000\n\n[stream.keys]\n\"{KEY}\" = {{ project = \"default\", kind = \"server\" }}\n"
        ));
        std::fs::write(&path, text).unwrap();
        c.spawn(id);
    }
    for id in c.ids() {
        c.wait_ready(id, WAIT).await.unwrap();
    }
    c
}

fn endpoints(c: &Cluster) -> Vec<String> {
    c.ids()
        .into_iter()
        .map(|id| format!("127.0.0.1:{}", c.ports(id).http))
        .collect()
}

/// Commit one version; its number and digest.
async fn commit(c: &Cluster, live: &[u64], i: u64) -> (u64, String) {
    let req = gate_commit("default", &format!("g{}", i % 5), &format!("r{i}"));
    let r = c.commit_retry(live, i as usize, req, WAIT).await.unwrap();
    (r.version, r.digest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sees_every_version_in_order_across_a_leader_kill() {
    let c = cluster(ClusterOptions::default()).await;
    let ids = c.ids();
    let (v0, _) = commit(&c, &ids, 0).await;
    // The client starts on the leader, which is then killed: it must move to a
    // follower (possibly lagging) and miss nothing.
    let leader = c.wait_for_leader(&ids, WAIT).await.unwrap();
    let mut order = endpoints(&c);
    order.rotate_left((leader - 1) as usize);
    let client = Client::builder()
        .endpoints(order)
        .random_start(false)
        .sdk_key(KEY)
        .backoff(Duration::from_millis(20), Duration::from_millis(500))
        .init_timeout(WAIT)
        .build()
        .await
        .unwrap();
    assert_eq!(client.health().source, StateSource::Network);
    assert_eq!(client.wait_for_version(v0, WAIT).await, Ok(v0));
    let mut updates = client.updates();
    let start = client.version();
    for i in 1..=15 {
        commit(&c, &ids, i).await;
    }
    assert_eq!(client.health().node_id, Some(leader));
    c.kill9(leader);
    let live: Vec<u64> = ids.iter().copied().filter(|&id| id != leader).collect();
    let mut last = (0, String::new());
    for i in 16..=30 {
        last = commit(&c, &live, i).await;
    }
    let (last, last_digest) = last;
    assert_eq!(client.wait_for_version(last, WAIT).await, Ok(last));
    let mut expected = start + 1;
    while expected <= last {
        let u = tokio::time::timeout(WAIT, updates.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(u.version, expected, "versions in order, none skipped");
        assert!(
            u.changed.is_some(),
            "a delta, not a snapshot, at {}",
            u.version
        );
        expected += 1;
    }
    assert_eq!(client.digest().to_hex(), last_digest);
    let h = client.health();
    assert!(
        h.connected && h.reconnects >= 1 && h.node_id != Some(leader),
        "{h:?}"
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_behind_compacted_history_gets_history_gone_then_a_snapshot() {
    let c = cluster(ClusterOptions {
        history_limit: 5,
        ..ClusterOptions::default()
    })
    .await;
    let ids = c.ids();
    let mut head = 0;
    for i in 1..=20 {
        head = commit(&c, &ids, i).await.0;
    }
    let follower = ids[ids.len() - 1];
    let url = format!("ws://127.0.0.1:{}/v1/stream", c.ports(follower).http);
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "flagraft.v1".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let hello = ClientMessage::Hello(Hello {
        key: KEY.into(),
        have_version: Some(1),
        have_digest: None,
        sdk: None,
    });
    ws.send(Message::text(encode_client(&hello).unwrap()))
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) => match decode_server(t.as_bytes(), 1 << 26).unwrap() {
                ServerMessage::Heartbeat(_) => {}
                m => got.push(m),
            },
            Some(Ok(_)) => {}
            other => panic!("stream ended: {other:?}"),
        }
    }
    assert!(matches!(&got[0], ServerMessage::Welcome(_)));
    assert!(
        matches!(&got[1], ServerMessage::HistoryGone(h) if h.have_version == 1 && h.oldest_retained > 2)
    );
    assert!(matches!(&got[2], ServerMessage::Snapshot(s)
        if s.reason == SnapshotReason::HistoryGone && s.version <= head && s.version >= 1));
}
