//! A proposal the cluster cannot decide holds the leader's group-commit slot
//! (one proposal in flight) for at most 3 s: its caller gets UNAVAILABLE
//! ("no outcome ...; retry with the same request id"), the commits after it
//! are not stuck behind it, and the retry with the same request id commits
//! it exactly once.

use flagraft_cluster_tests::{gate_commit, Cluster, ClusterOptions};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecided_proposal_gives_up_its_slot_after_the_bound() {
    let cluster = Cluster::start(ClusterOptions::default());
    let ids = cluster.ids();
    let leader = cluster.wait_for_leader(&ids, T).await.unwrap();
    cluster
        .commit_retry(&[leader], 0, gate_commit("default", "warm", "w"), T)
        .await
        .unwrap();

    // Without its followers the leader can append but never commit.
    let followers: Vec<u64> = ids.iter().copied().filter(|&id| id != leader).collect();
    for &f in &followers {
        cluster.freeze(f, true);
    }
    let started = Instant::now();
    let mut req = tonic::Request::new(gate_commit("default", "stuck", "stuck-1"));
    req.set_timeout(Duration::from_secs(20));
    let outcome = cluster.admin(leader).commit(req).await;
    let waited = started.elapsed();
    for &f in &followers {
        cluster.freeze(f, false);
    }
    let status = outcome.expect_err("a commit without a quorum must not succeed");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("no outcome"),
        "{}",
        status.message()
    );
    assert!(
        waited >= Duration::from_millis(2900) && waited < Duration::from_secs(10),
        "answered after {waited:?}"
    );

    // The slot is free again: commits go through (a leader change after the pause is fine).
    let next = cluster
        .commit_retry(&ids, 0, gate_commit("default", "next", "next-1"), T)
        .await
        .unwrap();
    // The retry of the undecided commit is answered once: the first outcome if its entry
    // survived, or a fresh commit if the entry was dropped.
    let retried = cluster
        .commit_retry(&ids, 0, gate_commit("default", "stuck", "stuck-1"), T)
        .await
        .unwrap();
    let again = cluster
        .commit_retry(&ids, 0, gate_commit("default", "stuck", "stuck-1"), T)
        .await
        .unwrap();
    assert!(again.duplicate, "a second retry is a duplicate");
    assert_eq!(again.version, retried.version);
    assert!(next.version >= 2);
}
