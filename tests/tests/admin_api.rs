//! The Admin API on a real 3-node cluster: commits through a follower,
//! reads at past versions, history pages, diffs, rollback (digest equal to
//! the old version's), projects, cluster members, and every error path
//! (invalid ruleset, conflict, oversized, unknown project/version/entity).

use flagraft_client::dcs::entities_from_dcs;
use flagraft_client::digest::RulesetDigest;
use flagraft_cluster_tests::fixtures::{
    commit, config_body, entity, gate_body, key, pass_gate_rule,
};
use flagraft_cluster_tests::{wait_for, Cluster, ClusterOptions};
use flagraft_proto::admin::v1 as pb;
use serde_json::json;
use std::time::Duration;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(30);

async fn started(options: ClusterOptions) -> (Cluster, u64, u64) {
    let c = Cluster::start(options);
    for id in c.ids() {
        c.wait_ready(id, WAIT).await.unwrap();
    }
    let leader = c.wait_for_leader(&c.ids(), WAIT).await.unwrap();
    let follower = c.ids().into_iter().find(|&id| id != leader).unwrap();
    (c, leader, follower)
}

fn code_and_message<T: std::fmt::Debug>(
    r: Result<tonic::Response<T>, tonic::Status>,
) -> (Code, String) {
    let s = r.expect_err("the call must fail");
    (s.code(), s.message().to_string())
}

fn ruleset_req(version: Option<u64>, dialect: pb::Dialect) -> pb::GetRulesetRequest {
    pb::GetRulesetRequest {
        project: "default".into(),
        version,
        dialect: dialect as i32,
        ..Default::default()
    }
}

/// Waits until node `id` has applied `version` of `default` (reads there are local).
async fn caught_up(c: &Cluster, id: u64, version: u64) {
    wait_for(
        "the node to catch up",
        WAIT,
        Duration::from_millis(20),
        || async {
            match head_on(c, id).await {
                v if v >= version => Ok(()),
                v => Err(format!("node {id} at {v}")),
            }
        },
    )
    .await
    .unwrap();
}

async fn head_on(c: &Cluster, id: u64) -> u64 {
    c.admin(id)
        .list_projects(pb::ListProjectsRequest {})
        .await
        .unwrap()
        .into_inner()
        .projects
        .into_iter()
        .find(|p| p.name == "default")
        .map(|p| p.version)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_through_a_follower_and_reads_of_past_versions() {
    let (c, _leader, f) = started(ClusterOptions::default()).await;
    let a = gate_body("a", json!([]));
    let b = gate_body("b", json!([pass_gate_rule("r1", "a")]));
    let cfg = config_body(json!({"color": "blue"}));

    let r1 = c
        .admin(f)
        .commit(commit(
            "default",
            vec![entity("gate", "a", &a)],
            vec![],
            "one",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r1.version, r1.duplicate), (1, false));
    let r2 = c
        .admin(f)
        .commit(commit(
            "default",
            vec![entity("config", "c", &cfg), entity("gate", "b", &b)],
            vec![],
            "two",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r2.version, 2);
    let r3 = c
        .admin(f)
        .commit(commit(
            "default",
            vec![entity("gate", "b", &gate_body("b", json!([])))],
            vec![key("gate", "a")],
            "three",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r3.version, 3);

    // Single entities, now and then (reads on the follower after min_version).
    let got = c
        .admin(f)
        .get_entity(pb::GetEntityRequest {
            project: "default".into(),
            kind: "gate".into(),
            name: "a".into(),
            version: Some(1),
            min_version: Some(3),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.version, 1);
    let body: serde_json::Value = serde_json::from_str(&got.entity.unwrap().json).unwrap();
    assert_eq!(body, a);
    let (code, msg) = code_and_message(
        c.admin(f)
            .get_entity(pb::GetEntityRequest {
                project: "default".into(),
                kind: "gate".into(),
                name: "a".into(),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(code, Code::NotFound);
    assert_eq!(
        msg,
        "gate 'a' does not exist in project 'default' at version 3"
    );
    let (code, msg) = code_and_message(
        c.admin(f)
            .get_entity(pb::GetEntityRequest {
                project: "default".into(),
                kind: "flag".into(),
                name: "a".into(),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(msg.contains("unknown entity kind 'flag'"), "{msg}");

    // Whole rulesets at every version, in both dialects, with the digests
    // the commits returned.
    for (version, digest) in [
        (0, RulesetDigest::EMPTY.to_hex()),
        (1, r1.digest.clone()),
        (2, r2.digest.clone()),
        (3, r3.digest.clone()),
    ] {
        let v1 = c
            .admin(f)
            .get_ruleset(ruleset_req(Some(version), pb::Dialect::V1))
            .await
            .unwrap()
            .into_inner();
        let v2 = c
            .admin(f)
            .get_ruleset(ruleset_req(Some(version), pb::Dialect::V2))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((v1.version, &v1.digest), (version, &digest));
        assert_eq!((v2.version, &v2.digest), (version, &digest));
        let e1 = entities_from_dcs(v1.dcs_json.as_bytes()).unwrap();
        let e2 = entities_from_dcs(v2.dcs_json.as_bytes()).unwrap();
        // v2 adds derived condition keys; the entity set is the same.
        let keys = |es: &[flagraft_client::entity::Entity]| {
            es.iter().map(|e| e.key.clone()).collect::<Vec<_>>()
        };
        assert_eq!(keys(&e1), keys(&e2));
        let recomputed = RulesetDigest::from_hashes(
            e1.iter()
                .map(|e| flagraft_client::digest::entity_key_hash(&e.key, &e.body))
                .collect::<Vec<_>>()
                .iter(),
        );
        assert_eq!(recomputed.to_hex(), digest, "version {version}");
    }
    let (code, msg) = code_and_message(
        c.admin(f)
            .get_ruleset(ruleset_req(Some(99), pb::Dialect::V1))
            .await,
    );
    assert_eq!(code, Code::NotFound);
    assert_eq!(msg, "project 'default' has no version 99 (current: 3)");
    let (code, msg) = code_and_message(
        c.admin(f)
            .get_ruleset(pb::GetRulesetRequest {
                project: "nope".into(),
                ..Default::default()
            })
            .await,
    );
    assert_eq!((code, msg.as_str()), (Code::NotFound, "no project 'nope'"));

    // History pages.
    let page = c
        .admin(f)
        .list_history(pb::ListHistoryRequest {
            project: "default".into(),
            from_version: 1,
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let versions: Vec<u64> = page.records.iter().map(|r| r.version).collect();
    assert_eq!(versions, [1, 2]);
    assert_eq!(page.records[1].message, "two");
    assert_eq!(page.records[1].digest, r2.digest);
    assert_eq!((page.next_from_version, page.current_version), (Some(3), 3));
    let page = c
        .admin(f)
        .list_history(pb::ListHistoryRequest {
            project: "default".into(),
            from_version: 3,
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.next_from_version, None);

    // Diffs, both ways and to the head.
    let d = c
        .admin(f)
        .diff(pb::DiffRequest {
            project: "default".into(),
            from_version: 1,
            to_version: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((d.from_version, d.to_version), (1, 3));
    assert_eq!(
        (d.from_digest.as_str(), d.to_digest.as_str()),
        (r1.digest.as_str(), r3.digest.as_str())
    );
    let summary: Vec<(String, String, i32)> = d
        .changes
        .iter()
        .map(|ch| (ch.kind.clone(), ch.name.clone(), ch.change))
        .collect();
    // In key order: kind (gate before config), then name.
    let expected = [
        ("gate", "a", pb::ChangeKind::Removed),
        ("gate", "b", pb::ChangeKind::Added),
        ("config", "c", pb::ChangeKind::Added),
    ]
    .map(|(k, n, ch)| (k.to_string(), n.to_string(), ch as i32));
    assert_eq!(summary, expected);
    let back = c
        .admin(f)
        .diff(pb::DiffRequest {
            project: "default".into(),
            from_version: 3,
            to_version: Some(2),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.changes.len(), 2, "{:?}", back.changes);
    let b_change = back.changes.iter().find(|ch| ch.name == "b").unwrap();
    assert_eq!(b_change.change, pb::ChangeKind::Modified as i32);
    let from_body: serde_json::Value = serde_json::from_str(&b_change.from_json).unwrap();
    assert_eq!(from_body, gate_body("b", json!([])));
    let (code, _) = code_and_message(
        c.admin(f)
            .diff(pb::DiffRequest {
                project: "default".into(),
                from_version: 1,
                to_version: Some(7),
            })
            .await,
    );
    assert_eq!(code, Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_commits_write_nothing_and_say_why() {
    let (c, leader, f) = started(ClusterOptions::default()).await;
    let base = c
        .admin(f)
        .commit(commit(
            "default",
            vec![
                entity(
                    "gate",
                    "a",
                    &gate_body("a", json!([pass_gate_rule("r1", "b")])),
                ),
                entity("gate", "b", &gate_body("b", json!([]))),
            ],
            vec![],
            "base",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(base.version, 1);

    // A body that does not compile: entity, rule and field are named.
    let mut bad = gate_body("x", json!([pass_gate_rule("r9", "a")]));
    bad["rules"][0]["passPercentage"] = json!("lots");
    let (code, msg) = code_and_message(
        c.admin(f)
            .commit(commit(
                "default",
                vec![entity("gate", "x", &bad)],
                vec![],
                "bad",
            ))
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert_eq!(
        msg,
        "invalid ruleset: gate 'x': rule 'r9': field rules[0].passPercentage: expected a number, found a string"
    );

    // A dependency cycle through an unchanged entity (a -> b, now b -> a).
    let (code, msg) = code_and_message(
        c.admin(leader)
            .commit(commit(
                "default",
                vec![entity(
                    "gate",
                    "b",
                    &gate_body("b", json!([pass_gate_rule("r2", "a")])),
                )],
                vec![],
                "cycle",
            ))
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(msg.starts_with("invalid ruleset: "), "{msg}");
    assert!(msg.contains("dependency cycle"), "{msg}");
    assert!(
        msg.contains("gate 'a'") && msg.contains("gate 'b'"),
        "{msg}"
    );

    // A stale expected version: a conflict naming the current version.
    let mut stale = commit(
        "default",
        vec![entity("gate", "c", &gate_body("c", json!([])))],
        vec![],
        "stale",
    );
    stale.expected_version = Some(0);
    let status = c.admin(f).commit(stale).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        "conflict: project 'default' is at version 1, expected 0"
    );
    assert_eq!(
        status
            .metadata()
            .get("flagraft-current-version")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );

    // Deleting what does not exist is refused when applied.
    let (code, msg) = code_and_message(
        c.admin(f)
            .commit(commit("default", vec![], vec![key("gate", "zzz")], "del"))
            .await,
    );
    assert_eq!(code, Code::FailedPrecondition);
    assert_eq!(msg, "delete of gate 'zzz', which does not exist");

    // Oversized: one body over 4 MiB; too many changes; unknown project.
    let huge = json!({"type": "feature_gate", "salt": "x".repeat(4 << 20)});
    let (code, msg) = code_and_message(
        c.admin(f)
            .commit(commit(
                "default",
                vec![entity("gate", "h", &huge)],
                vec![],
                "huge",
            ))
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert_eq!(msg, "gate 'h': body exceeds 4194304 bytes");
    // Five bodies of 3.5 MiB: each within bounds, together over 16 MiB.
    let big = json!({"type": "feature_gate", "salt": "y".repeat(3_500_000)});
    let five: Vec<pb::Entity> = (0..5)
        .map(|i| entity("gate", &format!("b{i}"), &big))
        .collect();
    let (code, msg) = code_and_message(
        c.admin(f)
            .commit(commit("default", five, vec![], "big"))
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert_eq!(msg, "commit bodies exceed 16777216 bytes");
    // A request over the 32 MiB message bound never reaches the service.
    let ten: Vec<pb::Entity> = (0..10)
        .map(|i| entity("gate", &format!("b{i}"), &big))
        .collect();
    let (code, _) = code_and_message(
        c.admin(f)
            .commit(commit("default", ten, vec![], "bigger"))
            .await,
    );
    assert!(
        matches!(code, Code::OutOfRange | Code::ResourceExhausted),
        "{code:?}"
    );
    let many: Vec<pb::EntityKey> = (0..20_001).map(|i| key("gate", &format!("g{i}"))).collect();
    let (code, msg) = code_and_message(
        c.admin(f)
            .commit(commit("default", vec![], many, "many"))
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert_eq!(msg, "20001 changes in one commit; at most 20000");
    let (code, msg) = code_and_message(
        c.admin(f)
            .commit(commit(
                "nope",
                vec![entity("gate", "a", &gate_body("a", json!([])))],
                vec![],
                "x",
            ))
            .await,
    );
    assert_eq!((code, msg.as_str()), (Code::NotFound, "no project 'nope'"));
    let (code, _) = code_and_message(
        c.admin(f)
            .commit(commit("bad name", vec![], vec![], "x"))
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);

    // Nothing of that was written, on any node.
    let probe = commit("default", vec![], vec![], "probe");
    let v = c.admin(f).commit(probe).await.unwrap().into_inner().version;
    assert_eq!(v, 2, "only the base commit came before");
    for id in c.ids() {
        wait_for(
            "every node at version 2",
            WAIT,
            Duration::from_millis(20),
            || async {
                match head_on(&c, id).await {
                    2 => Ok(()),
                    v => Err(format!("node {id} at {v}")),
                }
            },
        )
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_commits_a_new_version_with_the_old_digest() {
    let (c, _leader, f) = started(ClusterOptions::default()).await;
    let mut digests = vec![RulesetDigest::EMPTY.to_hex()];
    let steps: Vec<(Vec<pb::Entity>, Vec<pb::EntityKey>)> = vec![
        (
            vec![entity("gate", "a", &gate_body("a1", json!([])))],
            vec![],
        ),
        (
            vec![
                entity(
                    "gate",
                    "b",
                    &gate_body("b1", json!([pass_gate_rule("r", "a")])),
                ),
                entity("config", "c", &config_body(json!({"n": 1}))),
            ],
            vec![],
        ),
        (
            vec![entity("gate", "a", &gate_body("a2", json!([])))],
            vec![key("config", "c")],
        ),
        (
            vec![entity(
                "layer",
                "l",
                &json!({"type": "dynamic_config", "entity": "layer", "enabled": true, "salt": "l", "defaultValue": {}, "idType": "userID", "rules": []}),
            )],
            vec![key("gate", "b")],
        ),
    ];
    for (i, (ups, dels)) in steps.into_iter().enumerate() {
        let r = c
            .admin(f)
            .commit(commit("default", ups, dels, &format!("step {}", i + 1)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.version, i as u64 + 1);
        digests.push(r.digest);
    }
    let rollback = |to: u64, id: &str| pb::RollbackRequest {
        project: "default".into(),
        to_version: to,
        author: "ops".into(),
        request_id: Some(id.into()),
        ..Default::default()
    };
    let r = c
        .admin(f)
        .rollback(rollback(2, "rb-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.version, r.duplicate), (5, false));
    assert_eq!(r.digest, digests[2], "version 5 has version 2's digest");
    let then = c
        .admin(f)
        .get_ruleset(ruleset_req(Some(2), pb::Dialect::V1))
        .await
        .unwrap()
        .into_inner();
    let now = c
        .admin(f)
        .get_ruleset(pb::GetRulesetRequest {
            project: "default".into(),
            min_version: Some(5),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        entities_from_dcs(then.dcs_json.as_bytes()).unwrap(),
        entities_from_dcs(now.dcs_json.as_bytes()).unwrap()
    );
    // A retry of the same rollback commits nothing.
    let again = c
        .admin(f)
        .rollback(rollback(2, "rb-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (again.version, again.duplicate, &again.digest),
        (5, true, &r.digest)
    );
    // History is never rewritten: 5 records, the last one names the rollback.
    let h = c
        .admin(f)
        .list_history(pb::ListHistoryRequest {
            project: "default".into(),
            limit: 100,
            min_version: Some(5),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.records.len(), 5);
    assert_eq!(h.records[4].message, "rollback to version 2");
    assert_eq!(h.records[4].author, "ops");
    assert_eq!(h.records[3].digest, digests[4]);
    // Back to the empty ruleset, and to a version that does not exist.
    let r0 = c
        .admin(f)
        .rollback(rollback(0, "rb-0"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r0.version, r0.digest.as_str()), (6, digests[0].as_str()));
    let (code, msg) = code_and_message(c.admin(f).rollback(rollback(42, "rb-42")).await);
    assert_eq!(code, Code::NotFound);
    assert_eq!(msg, "project 'default' has no version 42 (current: 6)");
    // With a stale expected version: a conflict, nothing written.
    let mut pinned = rollback(1, "rb-pinned");
    pinned.expected_version = Some(3);
    let (code, msg) = code_and_message(c.admin(f).rollback(pinned).await);
    assert_eq!(code, Code::FailedPrecondition);
    assert_eq!(
        msg,
        "conflict: project 'default' is at version 6, expected 3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_members_compaction_and_leader_transfer() {
    let (c, leader, f) = started(ClusterOptions {
        history_limit: 3,
        ..ClusterOptions::default()
    })
    .await;
    let info = c
        .admin(f)
        .create_project(pb::CreateProjectRequest { name: "web".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (info.name.as_str(), info.version, info.entity_count),
        ("web", 0, 0)
    );
    let (code, msg) = code_and_message(
        c.admin(f)
            .create_project(pb::CreateProjectRequest { name: "web".into() })
            .await,
    );
    assert_eq!(
        (code, msg.as_str()),
        (Code::AlreadyExists, "project 'web' already exists")
    );
    let (code, _) = code_and_message(
        c.admin(f)
            .create_project(pb::CreateProjectRequest {
                name: "no spaces".into(),
            })
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    let r = c
        .admin(f)
        .commit(commit(
            "web",
            vec![entity("gate", "g", &gate_body("g", json!([])))],
            vec![],
            "w",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.version, 1);
    let names: Vec<String> = c
        .admin(leader)
        .list_projects(pb::ListProjectsRequest {})
        .await
        .unwrap()
        .into_inner()
        .projects
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["default", "web"]);
    c.admin(f)
        .delete_project(pb::DeleteProjectRequest { name: "web".into() })
        .await
        .unwrap();
    let (code, _) = code_and_message(
        c.admin(leader)
            .get_ruleset(pb::GetRulesetRequest {
                project: "web".into(),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(code, Code::NotFound);
    let (code, msg) = code_and_message(
        c.admin(f)
            .delete_project(pb::DeleteProjectRequest { name: "web".into() })
            .await,
    );
    assert_eq!((code, msg.as_str()), (Code::NotFound, "no project 'web'"));
    let (code, msg) = code_and_message(
        c.admin(f)
            .delete_project(pb::DeleteProjectRequest {
                name: "default".into(),
            })
            .await,
    );
    assert_eq!(
        (code, msg.as_str()),
        (
            Code::FailedPrecondition,
            "the default project cannot be deleted"
        )
    );

    // Compacted history: with 3 versions kept, version 2 of 6 is gone.
    for i in 1..=6 {
        c.admin(f)
            .commit(commit(
                "default",
                vec![entity("gate", &format!("g{i}"), &gate_body("g", json!([])))],
                vec![],
                "x",
            ))
            .await
            .unwrap();
    }
    caught_up(&c, f, 6).await;
    let (code, msg) = code_and_message(
        c.admin(f)
            .get_ruleset(ruleset_req(Some(2), pb::Dialect::V1))
            .await,
    );
    assert_eq!(code, Code::NotFound);
    assert_eq!(
        msg,
        "version 2 of project 'default' is no longer retained: its record was compacted (history holds versions 4..=6)"
    );
    // Version 4 is retained; g5 and g6 came later and did not exist at 4
    // (version 4's digest confirms it), so it can be rebuilt.
    let r4 = c
        .admin(f)
        .get_ruleset(ruleset_req(Some(4), pb::Dialect::V1))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<String> = entities_from_dcs(r4.dcs_json.as_bytes())
        .unwrap()
        .into_iter()
        .map(|e| e.key.name)
        .collect();
    assert_eq!(names, ["g1", "g2", "g3", "g4"]);
    // Two rewrites of g1 (versions 7, 8) compact records 4 and 5 away; g1's
    // body at version 6 was set by record 1, long gone: 6 cannot be rebuilt.
    for salt in ["x", "y"] {
        c.admin(f)
            .commit(commit(
                "default",
                vec![entity("gate", "g1", &gate_body(salt, json!([])))],
                vec![],
                "rewrite g1",
            ))
            .await
            .unwrap();
    }
    caught_up(&c, f, 8).await;
    let (code, msg) = code_and_message(
        c.admin(f)
            .get_ruleset(ruleset_req(Some(6), pb::Dialect::V1))
            .await,
    );
    assert_eq!(code, Code::NotFound);
    assert_eq!(
        msg,
        "version 6 of project 'default' is no longer retained: gate 'g1' changed after it and its earlier state is older than the retained history (history holds versions 6..=8)"
    );
    let r8 = c
        .admin(f)
        .get_ruleset(ruleset_req(Some(8), pb::Dialect::V1))
        .await
        .unwrap();
    assert_eq!(r8.into_inner().version, 8);

    // Every member, its applied index and lag, read from its /metrics.
    let s = c
        .admin(f)
        .get_cluster_members(pb::GetClusterMembersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.members.len(), 3);
    for m in &s.members {
        assert!(m.reachable && m.voter, "{m:?}");
        assert!(m.applied_index > 0, "{m:?}");
        assert_eq!(
            m.project_versions.get("default").copied().map(|v| v <= 8),
            Some(true)
        );
    }
    let leader_member = s.members.iter().find(|m| m.node_id == leader).unwrap();
    assert_eq!(leader_member.role, "leader");
    c.kill9(f);
    let s = c
        .admin(leader)
        .get_cluster_members(pb::GetClusterMembersRequest {})
        .await
        .unwrap()
        .into_inner();
    let gone = s.members.iter().find(|m| m.node_id == f).unwrap();
    assert!(!gone.reachable && !gone.error.is_empty(), "{gone:?}");

    let (code, msg) = code_and_message(
        c.admin(leader)
            .transfer_leader(pb::TransferLeaderRequest { node_id: 1 })
            .await,
    );
    assert_eq!(code, Code::Unimplemented);
    assert!(msg.contains("openraft 0.9.25 has no transfer API"), "{msg}");
}
