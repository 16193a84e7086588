//! The recorded history of a chaos run (written as JSON, read back by the checker).
//!
//! Times are nanoseconds since the rig started (one monotonic clock, the rig's).
//! An operation is one *logical* client operation: a commit and all its retries
//! with the same request id, from the first attempt's invocation to the last
//! attempt's completion (the node applies a request id at most once, so the
//! retries together have the effect of one operation inside that interval).

use serde::{Deserialize, Serialize};

/// The digest of the empty ruleset (version 0 of a fresh project).
pub const EMPTY_DIGEST: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub seed: u64,
    pub nodes: Vec<u64>,
    pub operations: Vec<Operation>,
    /// Every version every subscriber applied, in the order each applied them.
    pub observations: Vec<Observation>,
    /// Windows in which some nodes were on the minority side of a partition.
    pub partitions: Vec<PartitionWindow>,
    /// What each killed node reported right before the kill and right after its restart.
    pub restarts: Vec<RestartFact>,
    /// Every fault injected (for the report and the unavailability figures).
    pub faults: Vec<FaultRecord>,
    /// The cluster's state after the faults stopped; None if the run never got there.
    pub final_state: Option<FinalState>,
    /// Things the rig noticed that are not checks of their own (e.g. the
    /// cluster took longer than its bound to become healthy after a fault).
    #[serde(default)]
    pub incidents: Vec<String>,
    /// Set when the rig itself could not do its job (a fault could not be
    /// injected or undone): the history may still be checked, but the run
    /// does not count as a pass.
    #[serde(default)]
    pub rig_failure: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    pub id: u64,
    /// "w1", "r2", ...
    pub client: String,
    pub op: OpKind,
    pub invoke_ns: u64,
    /// None when the operation never completed definitely (its result is `Unknown`).
    pub complete_ns: Option<u64>,
    pub result: OpResult,
    /// Every attempt, in order (a logical operation is retried on timeouts).
    #[serde(default)]
    pub attempts: Vec<Attempt>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OpKind {
    Commit {
        request_id: String,
        expected_version: Option<u64>,
    },
    /// A linearizable read (GetRuleset with READ_CONSISTENCY_LINEARIZABLE).
    Read,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum OpResult {
    /// A commit was acknowledged at this version, or a read returned it.
    Ok { version: u64, digest: String },
    /// The commit's expected_version did not match (nothing was applied).
    Conflict { current_version: Option<u64> },
    /// Definitely not applied (refused before reaching Raft).
    Fail { reason: String },
    /// Timed out or failed in a way that leaves the effect open.
    Unknown { reason: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// The node the request was sent to.
    pub node: u64,
    pub invoke_ns: u64,
    pub complete_ns: u64,
    pub outcome: AttemptOutcome,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AttemptOutcome {
    Ok {
        version: u64,
        digest: String,
        #[serde(default)]
        duplicate: bool,
    },
    Conflict {
        current_version: Option<u64>,
    },
    Fail {
        reason: String,
    },
    Unknown {
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub subscriber: String,
    pub t_ns: u64,
    pub version: u64,
    /// The digest the SDK's update carried for that version (None only in
    /// histories recorded before updates carried digests: left unchecked).
    pub digest: Option<String>,
    /// Whether the version came as a whole ruleset (snapshot) rather than a delta.
    #[serde(default)]
    pub snapshot: bool,
    /// Updates the recorder missed right before this one (its queue overflowed):
    /// the stretch before this observation cannot be checked.
    #[serde(default)]
    pub missed_before: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartitionWindow {
    pub scenario: String,
    /// Nodes cut off from the majority.
    pub minority: Vec<u64>,
    /// When the cut was fully in place.
    pub cut_ns: u64,
    /// When healing started.
    pub healed_ns: u64,
}

/// A node's own view, from GetClusterStatus.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub term: u64,
    pub last_log_index: u64,
    pub last_applied_index: u64,
    pub voters: Vec<u64>,
    pub role: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RestartFact {
    pub node: u64,
    pub killed_ns: u64,
    pub restarted_ns: u64,
    /// Last status seen before the kill (None if the node did not answer).
    pub before: Option<NodeStatus>,
    /// First status after the restart, read while the node was still cut off
    /// from its peers (so it comes from its own disk). None: it never answered.
    pub after: Option<NodeStatus>,
    /// Whether the node was isolated while `after` was read.
    pub isolated_while_read: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// "kill", "pause" or "partition".
    pub kind: String,
    /// For partitions: "leader_isolated", "follower_isolated", "split_1_2", "leader_deaf".
    pub scenario: String,
    pub nodes: Vec<u64>,
    /// The leader when the fault started (as the rig saw it).
    pub leader: Option<u64>,
    pub start_ns: u64,
    /// When the fault was undone (restart, SIGCONT, heal).
    pub end_ns: u64,
}

/// One version record of the final history (ListHistory).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordSummary {
    pub version: u64,
    pub request_id: Option<String>,
    pub digest: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinalState {
    /// Every record from `oldest_retained` to the head, ascending.
    pub records: Vec<RecordSummary>,
    pub oldest_retained: u64,
    /// A linearizable read after the workload stopped.
    pub head_version: u64,
    pub head_digest: String,
    pub convergence: Convergence,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Convergence {
    /// When the faults stopped (the workload was told to stop then, and its
    /// operations in flight finish inside the limit).
    pub started_ns: u64,
    pub deadline_ns: u64,
    /// Every node and subscriber: where it was last seen and when it first matched the head.
    pub participants: Vec<Participant>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Participant {
    /// "node 2", "subscriber s1".
    pub name: String,
    pub version: u64,
    pub digest: String,
    /// First time it held the head version and digest; None if it never did.
    pub reached_ns: Option<u64>,
}

impl History {
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    pub fn from_json(text: &str) -> Result<History, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_round_trips_through_json() {
        let h = History {
            seed: 7,
            nodes: vec![1, 2, 3],
            operations: vec![Operation {
                id: 0,
                client: "w1".into(),
                op: OpKind::Commit {
                    request_id: "r1".into(),
                    expected_version: Some(0),
                },
                invoke_ns: 1,
                complete_ns: None,
                result: OpResult::Unknown {
                    reason: "timeout".into(),
                },
                attempts: vec![Attempt {
                    node: 2,
                    invoke_ns: 1,
                    complete_ns: 5,
                    outcome: AttemptOutcome::Unknown {
                        reason: "timeout".into(),
                    },
                }],
            }],
            observations: vec![Observation {
                subscriber: "s1".into(),
                t_ns: 3,
                version: 1,
                digest: None,
                snapshot: true,
                missed_before: 0,
            }],
            ..History::default()
        };
        let text = h.to_json().unwrap();
        assert!(text.contains("\"type\": \"commit\""), "{text}");
        assert!(text.contains("\"status\": \"unknown\""), "{text}");
        assert_eq!(History::from_json(&text).unwrap(), h);
    }
}
