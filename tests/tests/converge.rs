//! A commit made through any node converges on all three to the same version
//! and digest; reads at "at least version V", linearizable reads, conflicts,
//! idempotent retries and the HTTP endpoints.

use flagraft_client::digest::{entity_hash, RulesetDigest};
use flagraft_client::entity::EntityKind;
use flagraft_cluster_tests::{gate_commit, gate_json, Cluster, ClusterOptions};
use flagraft_proto::admin::v1 as pb;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn read_at_least(
    project: &str,
    version: u64,
    consistency: pb::ReadConsistency,
) -> pb::GetRulesetRequest {
    pb::GetRulesetRequest {
        project: project.into(),
        min_version: Some(version),
        consistency: consistency as i32,
        // dialect: unspecified is v1
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_converges_on_every_node() {
    let cluster = Cluster::start(ClusterOptions::default());
    let ids = cluster.ids();
    let leader = cluster.wait_for_leader(&ids, T).await.unwrap();
    for &id in &ids {
        cluster.wait_ready(id, T).await.unwrap();
    }
    let follower = *ids.iter().find(|&&id| id != leader).unwrap();

    // Through a follower: forwarded to the leader.
    let resp = cluster
        .admin(follower)
        .commit(gate_commit("default", "g1", "req-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.version, 1);
    assert!(!resp.duplicate);
    assert!(resp.commit_time_ms > 0);

    // The digest is the one a client computes from the entity.
    let body: serde_json::Value = serde_json::from_str(&gate_json("req-1")).unwrap();
    let expected = RulesetDigest::from_hashes([&entity_hash(EntityKind::Gate, "g1", &body)]);
    assert_eq!(resp.digest, expected.to_hex());

    for &id in &ids {
        let r = cluster
            .admin(id)
            .get_ruleset(read_at_least(
                "default",
                1,
                pb::ReadConsistency::Unspecified,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (r.version, r.digest.as_str()),
            (1, resp.digest.as_str()),
            "node {id}"
        );
        assert_eq!(r.entity_count, 1);
        let doc: serde_json::Value = serde_json::from_str(&r.dcs_json).unwrap();
        assert_eq!(doc["feature_gates"][0]["name"], "g1", "node {id}: {doc}");
        assert_eq!(doc["has_updates"], true);
    }

    // Linearizable reads through any node see the commit.
    for &id in &ids {
        let r = cluster
            .admin(id)
            .get_ruleset(flagraft_cluster_tests::linearizable_read("default"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.version, 1, "node {id}");
    }

    // Same request id again: the first commit's answer, nothing committed.
    let again = cluster
        .admin(leader)
        .commit(gate_commit("default", "g1", "req-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((again.version, again.duplicate), (1, true));

    // A stale expected_version is a conflict naming the current version.
    let mut stale = gate_commit("default", "g2", "req-2");
    stale.expected_version = Some(0);
    let err = cluster.admin(follower).commit(stale).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert_eq!(
        err.metadata()
            .get("flagraft-current-version")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );

    // A malformed commit is refused before it reaches the log.
    let mut bad = gate_commit("default", "g3", "req-3");
    bad.upserts[0].kind = "flag".into();
    let err = cluster.admin(follower).commit(bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // Unknown project.
    let err = cluster
        .admin(leader)
        .commit(gate_commit("nope", "g", "r"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // A version that does not come is a deadline error, not a hang.
    let mut req = tonic::Request::new(read_at_least(
        "default",
        99,
        pb::ReadConsistency::Unspecified,
    ));
    req.set_timeout(Duration::from_millis(300));
    let err = cluster.admin(follower).get_ruleset(req).await.unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{err:?}"
    );

    // History holds the record of version 1.
    let h = cluster
        .admin(follower)
        .list_history(pb::ListHistoryRequest {
            project: "default".into(),
            limit: 10,
            min_version: Some(1),
            // from_version 0: from the oldest retained
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.records.len(), 1);
    assert_eq!(h.records[0].request_id.as_deref(), Some("req-1"));
    assert_eq!(h.records[0].digest, resp.digest);

    // HTTP endpoints on every node.
    for &id in &ids {
        assert_eq!(cluster.http_get(id, "/healthz").await.unwrap().0, 200);
        let (code, metrics) = cluster.http_get(id, "/metrics").await.unwrap();
        assert_eq!(code, 200);
        assert!(
            metrics.contains("flagraft_project_version{project=\"default\"} 1"),
            "node {id}"
        );
        assert!(metrics.contains("flagraft_raft_term "));
        assert!(metrics.contains("flagraft_commit_latency_seconds_count"));
    }
    let (_, leader_metrics) = cluster.http_get(leader, "/metrics").await.unwrap();
    assert!(leader_metrics.contains("flagraft_raft_role{role=\"leader\"} 1"));
}
