//! Helpers for cluster tests: start, stop and wait for real `flagraft-node`
//! processes on 127.0.0.1.
//!
//! Finding the binary: `CARGO_BIN_EXE_*` only exists inside the package that
//! owns the binary, so the harness builds it the way escargot does: once per
//! test process it runs `$CARGO build -p flagraft-node --bin flagraft-node`
//! (a no-op when up to date, so a stale binary is never tested) and takes
//! `flagraft-node` from the same target dir and profile as the running test
//! (`current_exe()` is `<target>/<profile>/deps/<test>`). `FLAGRAFT_NODE_BIN`
//! overrides both.
//!
//! Every node gets its own config, data dir and log file in a temp dir; all
//! processes are killed (by PID) when the [`Cluster`] is dropped. Nodes log
//! at `info,openraft=warn`; `FLAGRAFT_NODE_LOG` sets another filter (e.g.
//! `info,openraft=info` to follow elections).

mod admin_key;
pub mod bench;
pub mod chaos;
mod cluster;
pub mod fixtures;
mod wait;

pub use admin_key::{
    admin_client, admin_client_with_key, Admin, BearerKey, ADMIN_KEY_ENV, TEST_ADMIN_KEY,
};
pub use cluster::{node_binary, run_node_once, Cluster, ClusterOptions, NodePorts};
pub use wait::{wait_for, WaitError};

use flagraft_proto::admin::v1 as pb;

/// A small gate entity body that the node's spec checks accept.
pub fn gate_json(salt: &str) -> String {
    fixtures::gate_body(salt, serde_json::json!([])).to_string()
}

/// A linearizable read of `project`'s ruleset: answered by a confirmed leader, with every commit
/// acknowledged before it.
pub fn linearizable_read(project: &str) -> pb::GetRulesetRequest {
    pb::GetRulesetRequest {
        project: project.into(),
        consistency: pb::ReadConsistency::Linearizable as i32,
        ..Default::default()
    }
}

/// A commit of one gate named `name`, tagged with `request_id`.
pub fn gate_commit(project: &str, name: &str, request_id: &str) -> pb::CommitRequest {
    pb::CommitRequest {
        project: project.into(),
        upserts: vec![pb::Entity {
            kind: "gate".into(),
            name: name.into(),
            json: gate_json(request_id),
        }],
        author: "cluster-test".into(),
        message: format!("commit {request_id}"),
        request_id: Some(request_id.into()),
        ..Default::default()
    }
}
