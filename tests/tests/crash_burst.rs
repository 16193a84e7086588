//! kill -9 of the leader in the middle of a burst of concurrent commits loses
//! nothing acknowledged and duplicates nothing: every commit carries a request
//! id and is retried with it until acknowledged; afterwards the history holds
//! each request id exactly once, at the version its acknowledgement named.

use flagraft_cluster_tests::{gate_commit, Cluster, ClusterOptions};
use flagraft_proto::admin::v1 as pb;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);
const WRITERS: usize = 8;
const PER_WRITER: usize = 40;
const KILL_AFTER_ACKS: usize = 60;

#[derive(Clone, Debug)]
struct Ack {
    version: u64,
    digest: String,
    duplicate: bool,
}

async fn full_history(cluster: &Cluster, id: u64, min_version: u64) -> Vec<pb::VersionRecord> {
    cluster
        .admin(id)
        .get_ruleset(pb::GetRulesetRequest {
            project: "default".into(),
            min_version: Some(min_version),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut records = Vec::new();
    let mut from = 1;
    for _ in 0..1000 {
        let page = cluster
            .admin(id)
            .list_history(pb::ListHistoryRequest {
                project: "default".into(),
                from_version: from,
                limit: 200,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let Some(last) = page.records.last() else {
            break;
        };
        from = last.version + 1;
        records.extend(page.records);
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_crash_during_burst_loses_and_duplicates_nothing_acked() {
    let cluster = Arc::new(Cluster::start(ClusterOptions::default()));
    let ids = cluster.ids();
    let leader = cluster.wait_for_leader(&ids, T).await.unwrap();

    let acks: Arc<Mutex<HashMap<String, Ack>>> = Arc::default();
    let (count_tx, mut count_rx) = tokio::sync::watch::channel(0usize);
    let count_tx = Arc::new(count_tx);
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (cluster, acks, count_tx, ids) =
            (cluster.clone(), acks.clone(), count_tx.clone(), ids.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..PER_WRITER {
                let rid = format!("w{w}-{i}");
                let resp = cluster
                    .commit_retry(
                        &ids,
                        w + i,
                        gate_commit("default", &format!("gate{w}"), &rid),
                        T,
                    )
                    .await
                    .unwrap_or_else(|s| panic!("{rid} never acknowledged: {s:?}"));
                let ack = Ack {
                    version: resp.version,
                    digest: resp.digest,
                    duplicate: resp.duplicate,
                };
                acks.lock().unwrap().insert(rid, ack);
                count_tx.send_modify(|c| *c += 1);
            }
        }));
    }

    count_rx.wait_for(|c| *c >= KILL_AFTER_ACKS).await.unwrap();
    cluster.kill9(leader);
    let acked_before_kill = *count_rx.borrow();
    for w in writers {
        w.await.unwrap();
    }
    cluster.spawn(leader);

    let acks = acks.lock().unwrap().clone();
    assert_eq!(acks.len(), WRITERS * PER_WRITER);
    let retried_dups = acks.values().filter(|a| a.duplicate).count();
    let final_version = acks.values().map(|a| a.version).max().unwrap();
    eprintln!(
        "{} commits acked ({acked_before_kill} before the kill, {retried_dups} answered as duplicates of an earlier attempt); final version {final_version}",
        acks.len()
    );

    let new_leader = cluster.wait_for_leader(&ids, T).await.unwrap();
    let history = full_history(&cluster, new_leader, final_version).await;

    // Versions are contiguous from 1: one per committed request.
    let versions: Vec<u64> = history.iter().map(|r| r.version).collect();
    assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>());

    // Every request id exactly once (nothing duplicated) ...
    let mut by_rid: BTreeMap<String, &pb::VersionRecord> = BTreeMap::new();
    for r in &history {
        let rid = r.request_id.clone().expect("every commit has a request id");
        assert!(
            by_rid.insert(rid.clone(), r).is_none(),
            "{rid} committed twice"
        );
    }
    // ... and every acknowledged one at the version and digest it was acked with (nothing lost).
    for (rid, ack) in &acks {
        let r = by_rid
            .get(rid)
            .unwrap_or_else(|| panic!("acked {rid} missing from history"));
        assert_eq!(r.version, ack.version, "{rid}");
        assert_eq!(r.digest, ack.digest, "{rid}");
    }
    assert_eq!(history.len(), acks.len(), "a commit nobody acknowledged");
    assert_eq!(final_version, history.len() as u64);

    // All three nodes, the restarted one included, end with the same state.
    let last = history.last().unwrap();
    for &id in &ids {
        let req = pb::GetRulesetRequest {
            project: "default".into(),
            min_version: Some(final_version),
            ..Default::default()
        };
        let mut got = None;
        for _ in 0..400 {
            match cluster.admin(id).get_ruleset(req.clone()).await {
                Ok(r) => {
                    got = Some(r.into_inner());
                    break;
                }
                Err(s) if s.code() == tonic::Code::Unavailable => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(s) => panic!("node {id}: {s:?}"),
            }
        }
        let got = got.unwrap_or_else(|| panic!("node {id} unreachable"));
        assert_eq!(
            (got.version, got.digest.as_str()),
            (final_version, last.digest.as_str()),
            "node {id}"
        );
    }
}
