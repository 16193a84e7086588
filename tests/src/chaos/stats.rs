//! Commit unavailability per fault: from the moment a fault was injected to the
//! first acknowledgment of a commit attempt *sent after* it (so a commit that
//! was already in flight does not count), per class of fault, p50 and max.

use super::history::{AttemptOutcome, FaultRecord, History, OpKind};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FaultUnavailability {
    pub class: String,
    pub start_ns: u64,
    /// None: no commit sent after the fault was acknowledged before the next fault.
    pub unavailable_ms: Option<f64>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ClassSummary {
    pub faults: usize,
    /// Faults after which no commit was acknowledged before the next fault.
    pub never_recovered_in_window: usize,
    pub p50_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct UnavailabilitySummary {
    pub per_fault: Vec<FaultUnavailability>,
    pub per_class: BTreeMap<String, ClassSummary>,
}

/// "leader_kill", "follower_kill", "leader_pause", "follower_pause", "partition:<scenario>".
pub fn fault_class(f: &FaultRecord) -> String {
    match f.kind.as_str() {
        "partition" => format!("partition:{}", f.scenario),
        kind => {
            let role = if f.leader.is_some() && f.nodes.first() == f.leader.as_ref() {
                "leader"
            } else {
                "follower"
            };
            format!("{role}_{kind}")
        }
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

pub fn unavailability(h: &History) -> UnavailabilitySummary {
    // Acknowledged commit attempts: (invoke, complete), sorted by completion.
    let mut acks: Vec<(u64, u64)> = h
        .operations
        .iter()
        .filter(|op| matches!(op.op, OpKind::Commit { .. }))
        .flat_map(|op| op.attempts.iter())
        .filter(|a| matches!(a.outcome, AttemptOutcome::Ok { .. }))
        .map(|a| (a.invoke_ns, a.complete_ns))
        .collect();
    acks.sort_by_key(|a| a.1);
    let mut faults: Vec<&FaultRecord> = h.faults.iter().collect();
    faults.sort_by_key(|f| f.start_ns);
    let mut out = UnavailabilitySummary::default();
    for (i, f) in faults.iter().enumerate() {
        let window_end = faults.get(i + 1).map_or(u64::MAX, |n| n.start_ns);
        let first = acks
            .iter()
            .find(|(inv, done)| *inv >= f.start_ns && *done <= window_end)
            .map(|(_, done)| (done - f.start_ns) as f64 / 1e6);
        out.per_fault.push(FaultUnavailability {
            class: fault_class(f),
            start_ns: f.start_ns,
            unavailable_ms: first,
        });
    }
    let mut by_class: BTreeMap<String, Vec<Option<f64>>> = BTreeMap::new();
    for pf in &out.per_fault {
        by_class
            .entry(pf.class.clone())
            .or_default()
            .push(pf.unavailable_ms);
        if pf.class.starts_with("partition:") {
            by_class
                .entry("partition:all".into())
                .or_default()
                .push(pf.unavailable_ms);
        }
    }
    for (class, values) in by_class {
        let mut known: Vec<f64> = values.iter().flatten().copied().collect();
        known.sort_by(f64::total_cmp);
        out.per_class.insert(
            class,
            ClassSummary {
                faults: values.len(),
                never_recovered_in_window: values.iter().filter(|v| v.is_none()).count(),
                p50_ms: percentile(&known, 50.0),
                max_ms: known.last().copied(),
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::history::{Attempt, OpResult, Operation};

    fn fault(kind: &str, node: u64, leader: u64, start_ns: u64) -> FaultRecord {
        FaultRecord {
            kind: kind.into(),
            scenario: String::new(),
            nodes: vec![node],
            leader: Some(leader),
            start_ns,
            end_ns: start_ns + 1,
        }
    }

    fn acked(invoke_ns: u64, complete_ns: u64) -> Operation {
        Operation {
            id: invoke_ns,
            client: "w1".into(),
            op: OpKind::Commit {
                request_id: format!("r{invoke_ns}"),
                expected_version: None,
            },
            invoke_ns,
            complete_ns: Some(complete_ns),
            result: OpResult::Ok {
                version: 1,
                digest: String::new(),
            },
            attempts: vec![Attempt {
                node: 1,
                invoke_ns,
                complete_ns,
                outcome: AttemptOutcome::Ok {
                    version: 1,
                    digest: String::new(),
                    duplicate: false,
                },
            }],
        }
    }

    #[test]
    fn unavailability_counts_from_the_fault_to_the_first_ack_sent_after_it() {
        let h = History {
            faults: vec![
                fault("kill", 1, 1, 1_000_000_000),
                fault("kill", 2, 1, 5_000_000_000),
            ],
            operations: vec![
                // In flight across the fault: ignored.
                acked(900_000_000, 1_100_000_000),
                acked(1_200_000_000, 1_700_000_000),
                acked(5_000_000_000, 5_010_000_000),
            ],
            ..History::default()
        };
        let u = unavailability(&h);
        assert_eq!(u.per_fault[0].class, "leader_kill");
        assert_eq!(u.per_fault[0].unavailable_ms, Some(700.0));
        assert_eq!(u.per_fault[1].class, "follower_kill");
        assert_eq!(u.per_fault[1].unavailable_ms, Some(10.0));
        assert_eq!(u.per_class["leader_kill"].max_ms, Some(700.0));
    }

    #[test]
    fn percentile_is_nearest_rank() {
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[5.0], 50.0), Some(5.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
