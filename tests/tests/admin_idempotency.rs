//! Idempotent commits across a leader change: a retry with the same request
//! id answers the first commit's version and digest and commits nothing.

use flagraft_cluster_tests::fixtures::{commit, entity, gate_body};
use flagraft_cluster_tests::{Cluster, ClusterOptions};
use flagraft_proto::admin::v1 as pb;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn request(name: &str, id: &str) -> pb::CommitRequest {
    let mut r = commit(
        "default",
        vec![entity("gate", name, &gate_body(id, json!([])))],
        vec![],
        id,
    );
    r.request_id = Some(id.into());
    r
}

async fn history(c: &Cluster, id: u64, min_version: u64) -> Vec<pb::VersionRecord> {
    c.admin(id)
        .list_history(pb::ListHistoryRequest {
            project: "default".into(),
            limit: 1000,
            min_version: Some(min_version),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_the_leader_dies_returns_the_first_commit() {
    let c = Cluster::start(ClusterOptions::default());
    let ids = c.ids();
    let leader = c.wait_for_leader(&ids, WAIT).await.unwrap();
    let first = c
        .commit_retry(&[leader], 0, request("a", "req-a"), WAIT)
        .await
        .unwrap();
    assert!(!first.duplicate);
    let other = c
        .commit_retry(&[leader], 0, request("b", "req-b"), WAIT)
        .await
        .unwrap();

    c.kill9(leader);
    let live: Vec<u64> = ids.iter().copied().filter(|&id| id != leader).collect();
    let new_leader = c.wait_for_leader(&live, WAIT).await.unwrap();
    assert_ne!(new_leader, leader);

    // The same request (same id) through both survivors: the first version.
    for (i, _) in live.iter().enumerate() {
        let again = c
            .commit_retry(&live, i, request("a", "req-a"), WAIT)
            .await
            .unwrap();
        assert!(again.duplicate, "{again:?}");
        assert_eq!(
            (again.version, &again.digest, again.commit_time_ms),
            (first.version, &first.digest, first.commit_time_ms)
        );
    }
    // Nothing was committed twice: the head is still the second commit.
    let records = history(&c, live[0], other.version).await;
    assert_eq!(records.len() as u64, other.version);
    let with_a: Vec<u64> = records
        .iter()
        .filter(|r| r.request_id.as_deref() == Some("req-a"))
        .map(|r| r.version)
        .collect();
    assert_eq!(with_a, [first.version]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_during_a_leader_kill_commit_each_request_once() {
    let c = Cluster::start(ClusterOptions::default());
    let ids = c.ids();
    let leader = c.wait_for_leader(&ids, WAIT).await.unwrap();
    let live: Vec<u64> = ids.iter().copied().filter(|&id| id != leader).collect();
    // Writers send through every node and retry (same id) until acknowledged;
    // the leader is killed while they run, so some replies are lost.
    let mut acked: HashMap<String, u64> = HashMap::new();
    let mut writers = Vec::new();
    for w in 0..3u64 {
        let c = &c;
        let ids = ids.clone();
        let live = live.clone();
        writers.push(async move {
            let mut out = Vec::new();
            for i in 0..10u64 {
                let id = format!("w{w}-{i}");
                // Before the kill every node may be tried; after it, survivors.
                let nodes = if i < 3 { ids.clone() } else { live.clone() };
                let r = c
                    .commit_retry(
                        &nodes,
                        (w + i) as usize,
                        request(&format!("g{w}"), &id),
                        WAIT,
                    )
                    .await
                    .unwrap();
                out.push((id, r.version));
            }
            out
        });
    }
    let killer = async {
        // Kill once some commits went through.
        flagraft_cluster_tests::wait_for(
            "a few commits",
            WAIT,
            Duration::from_millis(10),
            || async {
                match c.status(leader).await {
                    Ok(s) if s.last_applied_index >= 5 => Ok(()),
                    Ok(s) => Err(format!("applied {}", s.last_applied_index)),
                    Err(e) => Err(e),
                }
            },
        )
        .await
        .unwrap();
        c.kill9(leader);
    };
    let (results, ()) = tokio::join!(futures_util::future::join_all(writers), killer);
    for (id, version) in results.into_iter().flatten() {
        acked.insert(id, version);
    }
    assert_eq!(acked.len(), 30);
    let head = *acked.values().max().unwrap();
    let records = history(&c, live[0], head).await;
    let mut seen: HashMap<String, u64> = HashMap::new();
    for r in &records {
        if let Some(id) = &r.request_id {
            assert!(
                seen.insert(id.clone(), r.version).is_none(),
                "request {id} committed twice"
            );
        }
    }
    // Every acknowledged request is in history exactly at the version it was told.
    for (id, version) in &acked {
        assert_eq!(seen.get(id), Some(version), "request {id}");
    }
}
