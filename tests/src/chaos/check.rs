//! The checks run on a recorded [`History`], each with its own verdict:
//!
//! a. every acknowledged commit is in the final history exactly once, at the
//!    version and with the digest it was acknowledged with;
//! b. the commit/read history is linearizable (see [`super::linear`]), and
//!    every read's digest is the one the cluster recorded for its version;
//! c. every subscriber's versions rise by exactly one, each with the recorded digest;
//! d. after the faults stopped, every node and subscriber reached the final
//!    version and digest within the deadline;
//! e. every restarted node came back with its database (membership, term and
//!    log at least what it had before the kill);
//! f. no node on the minority side of a partition acknowledged a commit (or a
//!    linearizable read) while it was cut off.

use super::history::*;
use super::linear::{self, Budget, CommitResult, LinOp, ModelOp, Outcome};
use super::stats::{unavailability, UnavailabilitySummary};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// At most this many violations are listed per check (all are counted).
const MAX_LISTED: usize = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// The check could not decide (budget exhausted, missing data).
    Unknown,
    /// Nothing in the history exercised it (e.g. no node was restarted).
    NotExercised,
}

#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    pub check: String,
    pub verdict: Verdict,
    pub summary: String,
    pub violation_count: usize,
    pub violations: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    pub operations: usize,
    pub commits_ok: usize,
    pub commits_conflict: usize,
    pub commits_failed: usize,
    pub commits_unknown: usize,
    pub unknown_found_applied: usize,
    pub unknown_found_not_applied: usize,
    pub reads_ok: usize,
    pub reads_unknown: usize,
    pub attempts: usize,
    pub observations: usize,
    pub subscribers: usize,
    pub faults: BTreeMap<String, usize>,
    pub final_version: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub seed: u64,
    pub verdict: Verdict,
    pub checks: Vec<CheckResult>,
    pub counts: Counts,
    pub linearizability_search: Option<SearchStats>,
    pub unavailability: UnavailabilitySummary,
}

#[derive(Clone, Debug, Serialize)]
pub struct SearchStats {
    pub operations: usize,
    pub steps: u64,
    pub visited: usize,
}

#[derive(Clone, Copy, Debug)]
pub struct CheckOptions {
    pub budget: Budget,
    /// Commits whose outcome was unknown are resolved from the final history
    /// (present at version v: took effect at v; absent: did not). Sound when
    /// the final history is complete; it shrinks the search.
    pub resolve_unknown_from_final: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            budget: Budget::default(),
            resolve_unknown_from_final: true,
        }
    }
}

/// Collects violations for one check.
struct Findings {
    check: &'static str,
    count: usize,
    listed: Vec<String>,
    unknown: Vec<String>,
}

impl Findings {
    fn new(check: &'static str) -> Self {
        Findings {
            check,
            count: 0,
            listed: Vec::new(),
            unknown: Vec::new(),
        }
    }

    fn violation(&mut self, what: String) {
        self.count += 1;
        if self.listed.len() < MAX_LISTED {
            self.listed.push(what);
        }
    }

    /// Something that keeps the check from passing without being a violation.
    fn undecided(&mut self, why: String) {
        self.unknown.push(why);
    }

    fn finish(self, summary: String) -> CheckResult {
        let verdict = if self.count > 0 {
            Verdict::Fail
        } else if !self.unknown.is_empty() {
            Verdict::Unknown
        } else {
            Verdict::Pass
        };
        let summary = if self.unknown.is_empty() {
            summary
        } else {
            format!("{summary}; undecided: {}", self.unknown.join("; "))
        };
        CheckResult {
            check: self.check.to_string(),
            verdict,
            summary,
            violation_count: self.count,
            violations: self.listed,
        }
    }
}

/// The final history, indexed.
struct Records<'a> {
    by_version: BTreeMap<u64, &'a RecordSummary>,
    by_request: HashMap<&'a str, Vec<u64>>,
    oldest: u64,
    head: u64,
    /// Every version from `oldest` to `head` is present.
    contiguous: bool,
}

impl<'a> Records<'a> {
    fn new(f: &'a FinalState) -> Self {
        let mut by_version = BTreeMap::new();
        let mut by_request: HashMap<&str, Vec<u64>> = HashMap::new();
        for r in &f.records {
            by_version.insert(r.version, r);
            if let Some(id) = &r.request_id {
                by_request.entry(id.as_str()).or_default().push(r.version);
            }
        }
        let oldest = f.oldest_retained.max(1);
        let contiguous = f.head_version < oldest
            || (oldest..=f.head_version).all(|v| by_version.contains_key(&v));
        Records {
            by_version,
            by_request,
            oldest,
            head: f.head_version,
            contiguous,
        }
    }

    /// The digest the cluster recorded for `v` (version 0 is the empty ruleset).
    fn digest(&self, v: u64) -> Option<&str> {
        if v == 0 {
            return Some(EMPTY_DIGEST);
        }
        self.by_version.get(&v).map(|r| r.digest.as_str())
    }

    /// Whether the final history is complete enough to say a request id is absent.
    fn complete(&self) -> bool {
        self.oldest <= 1 && self.contiguous
    }
}

fn request_id(op: &Operation) -> Option<&str> {
    match &op.op {
        OpKind::Commit { request_id, .. } => Some(request_id),
        OpKind::Read => None,
    }
}

fn check_commits(h: &History, counts: &mut Counts) -> CheckResult {
    let mut f = Findings::new("a_acknowledged_commits_exactly_once");
    let Some(fin) = &h.final_state else {
        f.undecided("the run never read the final history".into());
        return f.finish("no final history".into());
    };
    let rec = Records::new(fin);
    if !rec.contiguous {
        let missing: Vec<u64> = (rec.oldest..=rec.head)
            .filter(|v| !rec.by_version.contains_key(v))
            .take(10)
            .collect();
        f.violation(format!(
            "the final history has gaps between {} and {} (missing e.g. {missing:?})",
            rec.oldest, rec.head
        ));
    }
    for (id, versions) in &rec.by_request {
        if versions.len() > 1 {
            f.violation(format!(
                "duplicated write: request id {id} is recorded at versions {versions:?}"
            ));
        }
    }
    let mut issued: HashMap<&str, &Operation> = HashMap::new();
    let mut acked = 0usize;
    for op in &h.operations {
        let Some(id) = request_id(op) else { continue };
        issued.insert(id, op);
        let found = rec.by_request.get(id);
        match &op.result {
            OpResult::Ok { version, digest } => {
                acked += 1;
                if *version < rec.oldest {
                    f.undecided(format!(
                        "commit {id} acknowledged at {version}, below the oldest retained record"
                    ));
                    continue;
                }
                match rec.by_version.get(version) {
                    Some(r) if r.request_id.as_deref() == Some(id) => {
                        if &r.digest != digest {
                            f.violation(format!(
                                "digest mismatch: commit {id} was acknowledged at version {version} with digest {digest}, the cluster recorded {}",
                                r.digest
                            ));
                        }
                    }
                    _ => match found {
                        Some(vs) => f.violation(format!(
                            "commit {id} was acknowledged at version {version} but is recorded at {vs:?}"
                        )),
                        None => f.violation(format!(
                            "lost write: commit {id} was acknowledged at version {version} (by {}) and is not in the final history",
                            op.client
                        )),
                    },
                }
            }
            OpResult::Conflict { .. } | OpResult::Fail { .. } => {
                if let Some(vs) = found {
                    f.violation(format!(
                        "commit {id} was refused ({:?}) but is recorded at {vs:?}",
                        op.result
                    ));
                }
            }
            OpResult::Unknown { .. } => match found {
                Some(_) => counts.unknown_found_applied += 1,
                None if rec.complete() => counts.unknown_found_not_applied += 1,
                None => {}
            },
        }
    }
    for r in fin.records.iter() {
        match &r.request_id {
            Some(id) if issued.contains_key(id.as_str()) => {}
            Some(id) => f.violation(format!(
                "unexpected write: version {} carries request id {id}, which no client issued",
                r.version
            )),
            None => f.violation(format!(
                "unexpected write: version {} has no request id (every workload commit has one)",
                r.version
            )),
        }
    }
    f.finish(format!(
        "{acked} acknowledged commits checked against {} records (versions {}..={})",
        fin.records.len(),
        rec.oldest,
        rec.head
    ))
}

/// The model operations of the history (digests are checked separately).
fn model_ops(h: &History, rec: Option<&Records<'_>>, opts: &CheckOptions) -> Vec<LinOp> {
    let mut out = Vec::new();
    for op in &h.operations {
        let model = match (&op.op, &op.result) {
            (OpKind::Read, OpResult::Ok { version, .. }) => ModelOp::Read { version: *version },
            (OpKind::Read, _) => continue,
            (
                OpKind::Commit {
                    expected_version, ..
                },
                OpResult::Ok { version, .. },
            ) => ModelOp::Commit {
                expected: *expected_version,
                result: CommitResult::Ok(*version),
            },
            (
                OpKind::Commit {
                    expected_version, ..
                },
                OpResult::Conflict { current_version },
            ) => ModelOp::Commit {
                expected: *expected_version,
                result: CommitResult::Conflict(*current_version),
            },
            (OpKind::Commit { .. }, OpResult::Fail { .. }) => continue,
            (
                OpKind::Commit {
                    request_id,
                    expected_version,
                },
                OpResult::Unknown { .. },
            ) => {
                let resolved = rec.filter(|r| opts.resolve_unknown_from_final && r.complete());
                let result = match resolved {
                    Some(r) => match r.by_request.get(request_id.as_str()) {
                        // Exactly-once is check a's business; take the first.
                        Some(vs) => CommitResult::Ok(vs[0]),
                        None => continue,
                    },
                    None => CommitResult::Unknown,
                };
                ModelOp::Commit {
                    expected: *expected_version,
                    result,
                }
            }
        };
        out.push(LinOp {
            id: op.id,
            invoke_ns: op.invoke_ns,
            complete_ns: match op.result {
                OpResult::Unknown { .. } => None,
                _ => op.complete_ns,
            },
            op: model,
        });
    }
    out
}

fn check_linearizable(h: &History, opts: &CheckOptions) -> (CheckResult, Option<SearchStats>) {
    let mut f = Findings::new("b_linearizable");
    let rec = h.final_state.as_ref().map(Records::new);
    if let Some(rec) = &rec {
        for op in &h.operations {
            if let (OpKind::Read, OpResult::Ok { version, digest }) = (&op.op, &op.result) {
                match rec.digest(*version) {
                    Some(d) if d == digest => {}
                    Some(d) => f.violation(format!(
                        "digest mismatch: read {} by {} returned version {version} with digest {digest}, the cluster recorded {d}",
                        op.id, op.client
                    )),
                    None if *version > rec.head => f.violation(format!(
                        "read {} by {} returned version {version}, beyond the final head {}",
                        op.id, op.client, rec.head
                    )),
                    None => f.undecided(format!(
                        "read {} returned version {version}, whose record was compacted",
                        op.id
                    )),
                }
            }
        }
    } else {
        f.undecided("no final history to compare read digests with".into());
    }
    let ops = model_ops(h, rec.as_ref(), opts);
    let res = linear::check(&ops, &[0], opts.budget);
    let stats = SearchStats {
        operations: ops.len(),
        steps: res.steps,
        visited: res.visited,
    };
    let summary = match &res.outcome {
        Outcome::Linearizable => format!(
            "{} operations linearizable ({} search steps, {} configurations)",
            ops.len(),
            res.steps,
            res.visited
        ),
        Outcome::NotLinearizable {
            stuck_op,
            possible_versions,
            linearized,
        } => {
            let what = h
                .operations
                .iter()
                .find(|o| o.id == *stuck_op)
                .map(|o| {
                    format!(
                        "{} {:?} invoked at {} ns, completed at {:?} ns, result {:?}",
                        o.client, o.op, o.invoke_ns, o.complete_ns, o.result
                    )
                })
                .unwrap_or_default();
            f.violation(format!(
                "not linearizable: after placing {linearized} operations, operation {stuck_op} ({what}) cannot be placed; the project could only be at {possible_versions:?}"
            ));
            format!("{} operations: NOT linearizable", ops.len())
        }
        Outcome::Unknown { reason } => {
            f.undecided(reason.clone());
            format!("{} operations: undecided", ops.len())
        }
    };
    (f.finish(summary), Some(stats))
}

fn check_subscribers(h: &History) -> CheckResult {
    let mut f = Findings::new("c_subscribers_step_by_one");
    let rec = h.final_state.as_ref().map(Records::new);
    let mut by_sub: BTreeMap<&str, Vec<&Observation>> = BTreeMap::new();
    for o in &h.observations {
        by_sub.entry(o.subscriber.as_str()).or_default().push(o);
    }
    if by_sub.is_empty() {
        f.undecided("no subscriber observations".into());
    }
    let (mut no_digest, mut missed, mut compacted) = (0usize, 0u64, 0usize);
    for (sub, obs) in &mut by_sub {
        obs.sort_by_key(|o| o.t_ns);
        let mut prev: Option<u64> = None;
        for o in obs.iter() {
            if o.missed_before > 0 {
                missed += o.missed_before;
            } else if let Some(p) = prev {
                if o.version != p + 1 {
                    f.violation(format!(
                        "subscriber {sub} went from version {p} to {} at {} ns{}",
                        o.version,
                        o.t_ns,
                        if o.snapshot { " (snapshot)" } else { "" }
                    ));
                }
            }
            prev = Some(o.version);
            let Some(rec) = &rec else { continue };
            match (&o.digest, rec.digest(o.version)) {
                (None, _) => no_digest += 1,
                (Some(d), Some(r)) if d == r => {}
                (Some(d), Some(r)) => f.violation(format!(
                    "digest mismatch: subscriber {sub} applied version {} with digest {d}, the cluster recorded {r}",
                    o.version
                )),
                (Some(_), None) if o.version > rec.head => f.violation(format!(
                    "subscriber {sub} applied version {}, beyond the final head {}",
                    o.version, rec.head
                )),
                (Some(_), None) => compacted += 1,
            }
        }
    }
    if rec.is_none() {
        f.undecided("no final history to compare digests with".into());
    }
    if missed > 0 {
        f.undecided(format!(
            "the recorders missed {missed} updates (queue overflow), those steps are unchecked"
        ));
    }
    if compacted > 0 {
        f.undecided(format!(
            "{compacted} observations are of versions whose records were compacted"
        ));
    }
    if no_digest > 0 {
        // The SDK's updates carry their digest: a missing one is an unchecked step.
        f.undecided(format!(
            "{no_digest} observations carry no digest, their digests are unchecked"
        ));
    }
    f.finish(format!(
        "{} subscribers, {} observations ({no_digest} without a digest)",
        by_sub.len(),
        h.observations.len()
    ))
}

fn check_convergence(h: &History) -> CheckResult {
    let mut f = Findings::new("d_convergence");
    let Some(fin) = &h.final_state else {
        f.undecided("the run never reached the final state".into());
        return f.finish("no final state".into());
    };
    let c = &fin.convergence;
    let rec = Records::new(fin);
    match rec.digest(fin.head_version) {
        Some(d) if d == fin.head_digest => {}
        other => f.violation(format!(
            "the final read returned version {} with digest {}, the history records {other:?}",
            fin.head_version, fin.head_digest
        )),
    }
    if c.participants.is_empty() {
        f.undecided("no participants were observed".into());
    }
    let mut slowest: u64 = 0;
    for p in &c.participants {
        match p.reached_ns {
            Some(t) if t <= c.deadline_ns => {
                slowest = slowest.max(t.saturating_sub(c.started_ns));
            }
            Some(t) => f.violation(format!(
                "{} reached the final version only {:.1} s after the faults stopped (limit {:.1} s)",
                p.name,
                t.saturating_sub(c.started_ns) as f64 / 1e9,
                c.deadline_ns.saturating_sub(c.started_ns) as f64 / 1e9
            )),
            None => f.violation(format!(
                "{} never reached version {} / {}: last seen at version {} with digest {}",
                p.name, fin.head_version, fin.head_digest, p.version, p.digest
            )),
        }
    }
    f.finish(format!(
        "{} participants; final version {}; slowest reached it {:.3} s after the faults stopped",
        c.participants.len(),
        fin.head_version,
        slowest as f64 / 1e9
    ))
}

fn check_restarts(h: &History) -> CheckResult {
    let mut f = Findings::new("e_restarted_nodes_reopened_their_database");
    for r in &h.restarts {
        let Some(after) = &r.after else {
            f.violation(format!(
                "node {} did not answer after its restart at {} ns",
                r.node, r.restarted_ns
            ));
            continue;
        };
        if !r.isolated_while_read {
            f.undecided(format!(
                "node {}'s status after restart was read while connected to its peers",
                r.node
            ));
        }
        if after.voters.is_empty() {
            f.violation(format!(
                "node {} came back without a membership (empty database?) after its restart at {} ns",
                r.node, r.restarted_ns
            ));
        }
        if let Some(before) = &r.before {
            if after.term < before.term {
                f.violation(format!(
                    "node {} came back at term {}, below the term {} it had before the kill",
                    r.node, after.term, before.term
                ));
            }
            if after.last_log_index < before.last_applied_index {
                f.violation(format!(
                    "node {} came back with log index {}, below the index {} it had applied before the kill",
                    r.node, after.last_log_index, before.last_applied_index
                ));
            }
        } else if after.last_log_index == 0 {
            f.violation(format!("node {} came back with an empty log", r.node));
        }
    }
    let mut res = f.finish(format!("{} restarts checked", h.restarts.len()));
    if h.restarts.is_empty() && res.verdict == Verdict::Pass {
        res.verdict = Verdict::NotExercised;
    }
    res
}

/// A retry answered `duplicate` from the node's applied state is not a new
/// acknowledgment: the node applied that request id, so it was committed.
/// It is benign only if the operation was first sent before the cut (else the
/// node could not have learned of it without talking to the majority).
fn check_minority(h: &History) -> CheckResult {
    let mut f = Findings::new("f_minority_never_acknowledges");
    let (mut checked, mut retries_answered, mut refusals) = (0usize, 0usize, 0usize);
    for w in &h.partitions {
        for op in &h.operations {
            for a in &op.attempts {
                let inside = a.invoke_ns >= w.cut_ns && a.complete_ns <= w.healed_ns;
                if !inside || !w.minority.contains(&a.node) {
                    continue;
                }
                checked += 1;
                let (version, duplicate) = match &a.outcome {
                    AttemptOutcome::Ok {
                        version, duplicate, ..
                    } => (*version, *duplicate),
                    AttemptOutcome::Conflict { .. } => {
                        refusals += 1;
                        continue;
                    }
                    _ => continue,
                };
                let what = match &op.op {
                    OpKind::Commit { request_id, .. } => format!("commit {request_id}"),
                    OpKind::Read => format!("linearizable read {}", op.id),
                };
                let is_commit = matches!(op.op, OpKind::Commit { .. });
                if is_commit && duplicate && op.invoke_ns < w.cut_ns {
                    retries_answered += 1;
                    continue;
                }
                f.violation(format!(
                    "node {} on the minority side of {} acknowledged {what} (version {version}{}) at {} ns, inside the partition {}..{} ns",
                    a.node,
                    w.scenario,
                    if duplicate { ", as a duplicate of a commit first sent after the cut" } else { "" },
                    a.complete_ns,
                    w.cut_ns,
                    w.healed_ns
                ));
            }
        }
    }
    let mut res = f.finish(format!(
        "{} partitions; {checked} requests sent to a minority node while it was cut off \
         ({retries_answered} retries of commits sent before the cut answered as duplicates from its \
         applied state; {refusals} expected-version conflicts answered, see b)",
        h.partitions.len()
    ));
    if checked == 0 && res.verdict == Verdict::Pass {
        res.verdict = Verdict::NotExercised;
    }
    res
}

fn count(h: &History) -> Counts {
    let mut c = Counts {
        operations: h.operations.len(),
        observations: h.observations.len(),
        ..Counts::default()
    };
    let mut subs = std::collections::BTreeSet::new();
    for o in &h.observations {
        subs.insert(o.subscriber.as_str());
    }
    c.subscribers = subs.len();
    for op in &h.operations {
        c.attempts += op.attempts.len();
        match (&op.op, &op.result) {
            (OpKind::Commit { .. }, OpResult::Ok { .. }) => c.commits_ok += 1,
            (OpKind::Commit { .. }, OpResult::Conflict { .. }) => c.commits_conflict += 1,
            (OpKind::Commit { .. }, OpResult::Fail { .. }) => c.commits_failed += 1,
            (OpKind::Commit { .. }, OpResult::Unknown { .. }) => c.commits_unknown += 1,
            (OpKind::Read, OpResult::Ok { .. }) => c.reads_ok += 1,
            (OpKind::Read, _) => c.reads_unknown += 1,
        }
    }
    for fault in &h.faults {
        let key = if fault.kind == "partition" {
            format!("partition:{}", fault.scenario)
        } else {
            fault.kind.clone()
        };
        *c.faults.entry(key).or_default() += 1;
    }
    c.final_version = h.final_state.as_ref().map(|f| f.head_version);
    c
}

/// Runs every check.
pub fn check(h: &History, opts: &CheckOptions) -> Report {
    let mut counts = count(h);
    let a = check_commits(h, &mut counts);
    let (b, search) = check_linearizable(h, opts);
    let checks = vec![
        a,
        b,
        check_subscribers(h),
        check_convergence(h),
        check_restarts(h),
        check_minority(h),
    ];
    let verdict = if checks.iter().any(|c| c.verdict == Verdict::Fail) {
        Verdict::Fail
    } else if checks.iter().any(|c| c.verdict == Verdict::Unknown) {
        Verdict::Unknown
    } else {
        Verdict::Pass
    };
    Report {
        seed: h.seed,
        verdict,
        checks,
        counts,
        linearizability_search: search,
        unavailability: unavailability(h),
    }
}

impl Report {
    /// The verdict as a few lines for a terminal.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            out.push_str(&format!(
                "  [{}] {}: {}\n",
                verdict_word(c.verdict),
                c.check,
                c.summary
            ));
            for v in c.violations.iter().take(10) {
                out.push_str(&format!("        - {v}\n"));
            }
            if c.violation_count > 10 {
                out.push_str(&format!(
                    "        ... {} violations in all (see the JSON report)\n",
                    c.violation_count
                ));
            }
        }
        out.push_str(&format!(
            "VERDICT: {} (seed {})\n",
            verdict_word(self.verdict),
            self.seed
        ));
        out
    }
}

pub fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "PASS",
        Verdict::Fail => "FAIL",
        Verdict::Unknown => "UNKNOWN",
        Verdict::NotExercised => "NOT EXERCISED",
    }
}
