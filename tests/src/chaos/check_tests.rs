//! The checker is shown able to fail: a correct history passes, and each kind
//! of broken history is reported by the check responsible for it.

use super::check::{check, CheckOptions, Report, Verdict};
use super::history::*;

const MS: u64 = 1_000_000;

fn digest(v: u64) -> String {
    if v == 0 {
        EMPTY_DIGEST.to_string()
    } else {
        format!("{v:064x}")
    }
}

fn attempt(node: u64, invoke_ns: u64, complete_ns: u64, outcome: AttemptOutcome) -> Attempt {
    Attempt {
        node,
        invoke_ns,
        complete_ns,
        outcome,
    }
}

fn commit_ok(id: u64, request: &str, at_ms: (u64, u64), version: u64) -> Operation {
    Operation {
        id,
        client: "w1".into(),
        op: OpKind::Commit {
            request_id: request.into(),
            expected_version: None,
        },
        invoke_ns: at_ms.0 * MS,
        complete_ns: Some(at_ms.1 * MS),
        result: OpResult::Ok {
            version,
            digest: digest(version),
        },
        attempts: vec![attempt(
            1,
            at_ms.0 * MS,
            at_ms.1 * MS,
            AttemptOutcome::Ok {
                version,
                digest: digest(version),
                duplicate: false,
            },
        )],
    }
}

fn read_ok(id: u64, at_ms: (u64, u64), version: u64) -> Operation {
    Operation {
        id,
        client: "r1".into(),
        op: OpKind::Read,
        invoke_ns: at_ms.0 * MS,
        complete_ns: Some(at_ms.1 * MS),
        result: OpResult::Ok {
            version,
            digest: digest(version),
        },
        attempts: vec![attempt(
            2,
            at_ms.0 * MS,
            at_ms.1 * MS,
            AttemptOutcome::Ok {
                version,
                digest: digest(version),
                duplicate: false,
            },
        )],
    }
}

fn observed(version: u64, t_ms: u64) -> Observation {
    Observation {
        subscriber: "s1".into(),
        t_ns: t_ms * MS,
        version,
        digest: Some(digest(version)),
        snapshot: version == 0,
        missed_before: 0,
    }
}

fn record(version: u64, request: &str) -> RecordSummary {
    RecordSummary {
        version,
        request_id: Some(request.into()),
        digest: digest(version),
    }
}

fn status(term: u64, log: u64, applied: u64) -> NodeStatus {
    NodeStatus {
        term,
        last_log_index: log,
        last_applied_index: applied,
        voters: vec![1, 2, 3],
        role: "follower".into(),
    }
}

/// Three commits, a read, one subscriber, a partition, a restart: all correct.
fn good() -> History {
    let mut timed_out = commit_ok(5, "r4", (400, 0), 0);
    timed_out.complete_ns = None;
    timed_out.result = OpResult::Unknown {
        reason: "deadline exceeded".into(),
    };
    timed_out.attempts = vec![attempt(
        3,
        400 * MS,
        1400 * MS,
        AttemptOutcome::Unknown {
            reason: "deadline exceeded".into(),
        },
    )];
    History {
        seed: 1,
        nodes: vec![1, 2, 3],
        operations: vec![
            commit_ok(1, "r1", (0, 10), 1),
            commit_ok(2, "r2", (20, 30), 2),
            commit_ok(3, "r3", (40, 50), 3),
            read_ok(4, (60, 70), 3),
            // Sent to node 3 while it was cut off; never acknowledged, never applied.
            timed_out,
        ],
        observations: vec![
            observed(0, 1),
            observed(1, 11),
            observed(2, 31),
            observed(3, 51),
        ],
        partitions: vec![PartitionWindow {
            scenario: "follower_isolated".into(),
            minority: vec![3],
            cut_ns: 300 * MS,
            healed_ns: 2000 * MS,
        }],
        restarts: vec![RestartFact {
            node: 2,
            killed_ns: 3000 * MS,
            restarted_ns: 4000 * MS,
            before: Some(status(2, 4, 4)),
            after: Some(status(2, 4, 3)),
            isolated_while_read: true,
        }],
        faults: vec![],
        incidents: vec![],
        rig_failure: None,
        final_state: Some(FinalState {
            records: vec![record(1, "r1"), record(2, "r2"), record(3, "r3")],
            oldest_retained: 1,
            head_version: 3,
            head_digest: digest(3),
            convergence: Convergence {
                started_ns: 5000 * MS,
                deadline_ns: 15000 * MS,
                participants: vec![
                    Participant {
                        name: "node 1".into(),
                        version: 3,
                        digest: digest(3),
                        reached_ns: Some(5000 * MS),
                    },
                    Participant {
                        name: "subscriber s1".into(),
                        version: 3,
                        digest: digest(3),
                        reached_ns: Some(5001 * MS),
                    },
                ],
            },
        }),
    }
}

fn run(h: &History) -> Report {
    check(h, &CheckOptions::default())
}

fn verdict_of(r: &Report, check_name: &str) -> Verdict {
    r.checks
        .iter()
        .find(|c| c.check.starts_with(check_name))
        .map(|c| c.verdict)
        .unwrap_or_else(|| panic!("no check {check_name}"))
}

/// Asserts the overall verdict fails and `check_name` reports a violation containing `needle`.
fn assert_reported(r: &Report, check_name: &str, needle: &str) {
    assert_eq!(r.verdict, Verdict::Fail, "{}", r.render());
    let c = r
        .checks
        .iter()
        .find(|c| c.check.starts_with(check_name))
        .unwrap_or_else(|| panic!("no check {check_name}"));
    assert_eq!(c.verdict, Verdict::Fail, "{}", r.render());
    assert!(
        c.violations.iter().any(|v| v.contains(needle)),
        "{check_name} did not mention {needle:?}:\n{}",
        r.render()
    );
}

#[test]
fn a_correct_history_passes_every_check() {
    let r = run(&good());
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.render());
    for c in &r.checks {
        assert_eq!(c.verdict, Verdict::Pass, "{}", r.render());
    }
    assert_eq!(r.counts.commits_ok, 3);
    assert_eq!(r.counts.unknown_found_not_applied, 1);
}

#[test]
fn a_lost_write_is_reported() {
    let mut h = good();
    // r4 was acknowledged at version 4, but the cluster's history ends at 3.
    h.operations.push(commit_ok(6, "r5", (80, 90), 4));
    let r = run(&h);
    assert_reported(&r, "a_", "lost write: commit r5");
}

#[test]
fn a_duplicated_write_is_reported() {
    let mut h = good();
    let fin = h.final_state.as_mut().unwrap();
    fin.records.push(record(4, "r2"));
    fin.head_version = 4;
    fin.head_digest = digest(4);
    let r = run(&h);
    assert_reported(&r, "a_", "duplicated write: request id r2");
}

#[test]
fn a_write_nobody_issued_is_reported() {
    let mut h = good();
    let fin = h.final_state.as_mut().unwrap();
    fin.records.push(record(4, "ghost"));
    fin.head_version = 4;
    fin.head_digest = digest(4);
    let r = run(&h);
    assert_reported(&r, "a_", "unexpected write");
}

#[test]
fn a_skipped_subscriber_version_is_reported() {
    let mut h = good();
    h.observations.retain(|o| o.version != 2);
    let r = run(&h);
    assert_reported(&r, "c_", "went from version 1 to 3");
}

#[test]
fn a_repeated_or_backwards_subscriber_version_is_reported() {
    let mut h = good();
    h.observations.push(observed(2, 60));
    let r = run(&h);
    assert_reported(&r, "c_", "went from version 3 to 2");
}

#[test]
fn a_stale_read_is_reported_as_not_linearizable() {
    let mut h = good();
    // Invoked after version 3 was acknowledged, yet it returns version 2.
    h.operations[3] = read_ok(4, (60, 70), 2);
    let r = run(&h);
    assert_reported(&r, "b_", "not linearizable");
    let b = r.checks.iter().find(|c| c.check.starts_with("b_")).unwrap();
    assert!(b.violations[0].contains("operation 4"), "{}", r.render());
}

#[test]
fn a_subscriber_digest_mismatch_is_reported() {
    let mut h = good();
    h.observations[2].digest = Some(digest(99));
    let r = run(&h);
    assert_reported(&r, "c_", "digest mismatch: subscriber s1 applied version 2");
}

#[test]
fn a_subscriber_observation_without_a_digest_is_never_a_pass() {
    let mut h = good();
    h.observations[2].digest = None;
    let r = run(&h);
    assert_eq!(verdict_of(&r, "c_"), Verdict::Unknown, "{}", r.render());
    assert_ne!(r.verdict, Verdict::Pass);
}

#[test]
fn an_acknowledged_digest_mismatch_is_reported() {
    let mut h = good();
    if let OpResult::Ok { digest: d, .. } = &mut h.operations[1].result {
        *d = digest(77);
    }
    let r = run(&h);
    assert_reported(&r, "a_", "digest mismatch: commit r2");
}

#[test]
fn a_read_digest_mismatch_is_reported() {
    let mut h = good();
    if let OpResult::Ok { digest: d, .. } = &mut h.operations[3].result {
        *d = digest(42);
    }
    let r = run(&h);
    assert_reported(&r, "b_", "digest mismatch: read 4");
}

#[test]
fn a_minority_acknowledgment_is_reported() {
    let mut h = good();
    h.operations.push(Operation {
        attempts: vec![attempt(
            3,
            500 * MS,
            600 * MS,
            AttemptOutcome::Ok {
                version: 4,
                digest: digest(4),
                duplicate: false,
            },
        )],
        ..commit_ok(7, "r6", (500, 600), 4)
    });
    let fin = h.final_state.as_mut().unwrap();
    fin.records.push(record(4, "r6"));
    fin.head_version = 4;
    fin.head_digest = digest(4);
    for p in &mut fin.convergence.participants {
        p.version = 4;
        p.digest = digest(4);
    }
    h.observations.push(observed(4, 601));
    let r = run(&h);
    assert_reported(&r, "f_", "node 3 on the minority side");
    // Everything else about that history is fine.
    assert_eq!(verdict_of(&r, "a_"), Verdict::Pass);
    assert_eq!(verdict_of(&r, "b_"), Verdict::Pass);
}

#[test]
fn a_minority_node_answering_a_retry_from_its_applied_state_is_not_an_acknowledgment() {
    let mut h = good();
    // r3 was first sent before the cut (to node 1, timed out), then retried on
    // node 3 while it was cut off, which answered from its applied state.
    h.operations[2].invoke_ns = 290 * MS;
    h.operations[2].complete_ns = Some(350 * MS);
    h.operations[2].attempts = vec![
        attempt(
            1,
            290 * MS,
            310 * MS,
            AttemptOutcome::Unknown {
                reason: "deadline".into(),
            },
        ),
        attempt(
            3,
            320 * MS,
            350 * MS,
            AttemptOutcome::Ok {
                version: 3,
                digest: digest(3),
                duplicate: true,
            },
        ),
    ];
    h.operations[3] = read_ok(4, (360, 370), 3);
    h.observations[3].t_ns = 351 * MS;
    let r = run(&h);
    assert_eq!(verdict_of(&r, "f_"), Verdict::Pass, "{}", r.render());
    // The same answer for a commit first sent after the cut could not come from that node's own state.
    h.operations[2].invoke_ns = 320 * MS;
    h.operations[2].attempts.remove(0);
    assert_reported(
        &run(&h),
        "f_",
        "as a duplicate of a commit first sent after the cut",
    );
}

#[test]
fn a_node_that_came_back_empty_is_reported() {
    let mut h = good();
    h.restarts[0].after = Some(NodeStatus {
        voters: vec![],
        ..status(0, 0, 0)
    });
    let r = run(&h);
    assert_reported(&r, "e_", "without a membership");
    assert_reported(&r, "e_", "below the index 4");
}

#[test]
fn a_participant_that_never_converged_is_reported() {
    let mut h = good();
    let c = &mut h.final_state.as_mut().unwrap().convergence;
    c.participants[1].reached_ns = None;
    c.participants[1].version = 2;
    let r = run(&h);
    assert_reported(&r, "d_", "subscriber s1 never reached version 3");
    let mut late = good();
    let c = &mut late.final_state.as_mut().unwrap().convergence;
    c.participants[0].reached_ns = Some(c.started_ns + 11_000 * MS);
    assert_reported(&run(&late), "d_", "only 11.0 s after");
}

#[test]
fn an_unknown_commit_that_took_effect_is_placed_within_its_interval() {
    let mut h = good();
    // r4 timed out but the cluster applied it as version 4: fine...
    let fin = h.final_state.as_mut().unwrap();
    fin.records.push(record(4, "r4"));
    fin.head_version = 4;
    fin.head_digest = digest(4);
    for p in &mut fin.convergence.participants {
        p.version = 4;
        p.digest = digest(4);
    }
    h.observations.push(observed(4, 1500));
    let r = run(&h);
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.render());
    assert_eq!(r.counts.unknown_found_applied, 1);
    // ... but not if a read that finished before r4 was sent already saw version 4.
    h.operations.push(read_ok(8, (100, 110), 4));
    assert_reported(&run(&h), "b_", "not linearizable");
}

#[test]
fn a_missing_final_state_is_never_a_pass() {
    let mut h = good();
    h.final_state = None;
    let r = run(&h);
    assert_ne!(r.verdict, Verdict::Pass, "{}", r.render());
}

#[test]
fn the_report_serialises_to_json() {
    let r = run(&good());
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.contains("\"verdict\":\"pass\""), "{json}");
}
