//! Operators add a learner, promote it to voter and remove it again, through
//! any node's Admin API.

use flagraft_cluster_tests::{gate_commit, wait_for, Cluster, ClusterOptions};
use flagraft_proto::admin::v1 as pb;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_learner_promote_and_remove_a_node() {
    let cluster = Cluster::configure(ClusterOptions {
        nodes: 4,
        voters: Some(3),
        ..ClusterOptions::default()
    });
    for id in cluster.ids() {
        cluster.spawn(id);
    }
    let voters = [1, 2, 3];
    let leader = cluster.wait_for_leader(&voters, T).await.unwrap();
    let follower = *voters.iter().find(|&&id| id != leader).unwrap();
    let committed = cluster
        .commit_retry(&voters, 0, gate_commit("default", "g", "m1"), T)
        .await
        .unwrap();

    // Node 4 is up but not a member: it never initialises a cluster itself.
    let s4 = cluster.status(4).await.unwrap();
    assert!(s4.voters.is_empty() && s4.leader_id.is_none(), "{s4:?}");

    // Add it as a learner through a follower (forwarded to the leader).
    let p4 = cluster.ports(4);
    let added = cluster
        .admin(follower)
        .add_learner(pb::AddLearnerRequest {
            node: Some(pb::NodeAddress {
                node_id: 4,
                raft_addr: format!("127.0.0.1:{}", p4.raft),
                admin_addr: format!("127.0.0.1:{}", p4.admin),
                http_addr: format!("127.0.0.1:{}", p4.http),
            }),
            blocking: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(added.learners, vec![4]);
    assert_eq!(added.voters, vec![1, 2, 3]);

    // The learner receives the data.
    let r = cluster
        .admin(4)
        .get_ruleset(pb::GetRulesetRequest {
            project: "default".into(),
            min_version: Some(committed.version),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.digest, committed.digest);
    let role = cluster.status(4).await.unwrap().role;
    assert_eq!(role, "learner");

    // Promote it.
    let promoted = cluster
        .admin(leader)
        .change_membership(pb::ChangeMembershipRequest {
            voters: vec![1, 2, 3, 4],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(promoted.voters, vec![1, 2, 3, 4]);
    assert!(promoted.learners.is_empty());
    wait_for(
        "node 4 to be a follower",
        T,
        Duration::from_millis(20),
        || async {
            match cluster.status(4).await?.role.as_str() {
                "follower" | "leader" => Ok(()),
                other => Err(other.to_string()),
            }
        },
    )
    .await
    .unwrap();

    // Remove it again; the rest keeps committing.
    let removed = cluster
        .admin(follower)
        .remove_node(pb::RemoveNodeRequest { node_id: 4 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.voters, vec![1, 2, 3]);
    assert!(removed.learners.is_empty());
    let err = cluster
        .admin(leader)
        .remove_node(pb::RemoveNodeRequest { node_id: 4 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let next = cluster
        .commit_retry(&voters, 0, gate_commit("default", "g", "m2"), T)
        .await
        .unwrap();
    assert_eq!(next.version, committed.version + 1);
    let status = cluster.status(leader).await.unwrap();
    assert_eq!(status.voters, vec![1, 2, 3]);
}
