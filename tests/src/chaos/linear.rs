//! A linearizability checker for one project's version: Wing & Gong's search
//! with Lowe's memoisation (as in porcupine), over a nondeterministic model.
//!
//! Model: the state is the project's version. A commit expecting version `e`
//! succeeds iff the state is `e` and makes it `e + 1`; a commit without an
//! expectation makes it `state + 1` and returns that; a conflict leaves it
//! unchanged and reports the current one; a linearizable read returns it. An
//! operation whose outcome is unknown may or may not have taken effect.
//! Nondeterminism is handled by tracking the *set* of possible versions (the
//! power-set construction), so every step is a function.
//!
//! The search walks a list of call and return events ordered by time. At a
//! call it tries to linearize that operation now; reaching the return of an
//! operation that was not linearized means the choices so far were wrong, so
//! it backtracks. Visited (linearized set, state set) pairs are remembered so
//! no configuration is explored twice. The search is bounded by a step and
//! time budget; when the budget runs out the answer is `Unknown`, never a pass.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

/// What a commit returned, as the model sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitResult {
    /// Acknowledged at this version.
    Ok(u64),
    /// Refused: the project was at this version (None: not reported).
    Conflict(Option<u64>),
    /// Timed out: may or may not have taken effect.
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelOp {
    Commit {
        expected: Option<u64>,
        result: CommitResult,
    },
    /// A linearizable read that returned this version.
    Read { version: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinOp {
    /// The caller's id for this operation (reported back on failure).
    pub id: u64,
    pub invoke_ns: u64,
    /// None: never returned (its effect may happen any time after the call).
    pub complete_ns: Option<u64>,
    pub op: ModelOp,
}

#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub max_steps: u64,
    pub max_time: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_steps: 200_000_000,
            max_time: Duration::from_secs(120),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Linearizable,
    /// No linearization exists. `stuck_op` is the operation that could not be
    /// placed at the deepest point the search reached; `possible_versions` the
    /// versions the model allowed there; `linearized` how many operations had
    /// been placed.
    NotLinearizable {
        stuck_op: u64,
        possible_versions: Vec<u64>,
        linearized: usize,
    },
    /// The budget ran out before an answer.
    Unknown {
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchResult {
    pub outcome: Outcome,
    pub steps: u64,
    pub visited: usize,
}

/// The model's transition on a set of possible versions; None if the
/// operation cannot be linearized from any of them.
pub fn step(states: &[u64], op: &ModelOp) -> Option<Vec<u64>> {
    match op {
        ModelOp::Read { version } => states.contains(version).then(|| vec![*version]),
        ModelOp::Commit { expected, result } => match result {
            CommitResult::Ok(v) => {
                let prev = v.checked_sub(1)?;
                if expected.is_some_and(|e| e != prev) {
                    return None;
                }
                states.contains(&prev).then(|| vec![*v])
            }
            CommitResult::Conflict(current) => {
                let e = (*expected)?;
                match current {
                    Some(c) => (*c != e && states.contains(c)).then(|| vec![*c]),
                    None => {
                        let rest: Vec<u64> = states.iter().copied().filter(|s| *s != e).collect();
                        (!rest.is_empty()).then_some(rest)
                    }
                }
            }
            CommitResult::Unknown => {
                let mut next: BTreeSet<u64> = states.iter().copied().collect();
                match expected {
                    Some(e) => {
                        if states.contains(e) {
                            next.insert(e + 1);
                        }
                    }
                    None => next.extend(states.iter().map(|s| s + 1)),
                }
                Some(next.into_iter().collect())
            }
        },
    }
}

/// The set of linearized operations, kept as "all below `floor`" plus the
/// few above it, so a memo key stays small however long the history is.
struct Linearized {
    bits: Vec<bool>,
    floor: usize,
    above: BTreeSet<u32>,
}

type MemoKey = (u32, Vec<u32>, Vec<u64>);

impl Linearized {
    fn new(n: usize) -> Self {
        Linearized {
            bits: vec![false; n],
            floor: 0,
            above: BTreeSet::new(),
        }
    }

    fn insert(&mut self, i: usize) {
        self.bits[i] = true;
        if i == self.floor {
            self.floor += 1;
            while self.floor < self.bits.len() && self.bits[self.floor] {
                self.above.remove(&(self.floor as u32));
                self.floor += 1;
            }
        } else if i > self.floor {
            self.above.insert(i as u32);
        }
    }

    fn remove(&mut self, i: usize) {
        self.bits[i] = false;
        if i < self.floor {
            // Everything from i+1 to the old floor stays linearized.
            for j in i + 1..self.floor {
                self.above.insert(j as u32);
            }
            self.floor = i;
        } else {
            self.above.remove(&(i as u32));
        }
    }

    fn count(&self) -> usize {
        self.floor + self.above.len()
    }

    fn key(&self, states: &[u64]) -> MemoKey {
        (
            self.floor as u32,
            self.above.iter().copied().collect(),
            states.to_vec(),
        )
    }
}

/// Events as a doubly linked list over indices; `NIL` ends it.
const NIL: usize = usize::MAX;

struct EventList {
    /// (operation index, is_call)
    events: Vec<(usize, bool)>,
    next: Vec<usize>,
    prev: Vec<usize>,
    head: usize,
    /// For each operation: (call event, return event).
    of_op: Vec<(usize, usize)>,
}

impl EventList {
    fn new(ops: &[LinOp]) -> Self {
        // (time, calls before returns at equal times: equal times count as concurrent)
        let mut order: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            order.push((op.invoke_ns, 0, i));
            order.push((op.complete_ns.unwrap_or(u64::MAX), 1, i));
        }
        order.sort_unstable();
        let n = order.len();
        let mut events = Vec::with_capacity(n);
        let mut of_op = vec![(NIL, NIL); ops.len()];
        for (pos, &(_, kind, i)) in order.iter().enumerate() {
            events.push((i, kind == 0));
            if kind == 0 {
                of_op[i].0 = pos;
            } else {
                of_op[i].1 = pos;
            }
        }
        let next = (0..n)
            .map(|p| if p + 1 < n { p + 1 } else { NIL })
            .collect();
        let prev = (0..n).map(|p| if p == 0 { NIL } else { p - 1 }).collect();
        EventList {
            events,
            next,
            prev,
            head: if n == 0 { NIL } else { 0 },
            of_op,
        }
    }

    fn unlink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        if p == NIL {
            self.head = n;
        } else {
            self.next[p] = n;
        }
        if n != NIL {
            self.prev[n] = p;
        }
    }

    /// Re-inserts `e` where it was (its neighbours' links still point around it).
    fn relink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        if p == NIL {
            self.head = e;
        } else {
            self.next[p] = e;
        }
        if n != NIL {
            self.prev[n] = e;
        }
    }

    fn lift(&mut self, op: usize) {
        let (c, r) = self.of_op[op];
        self.unlink(c);
        self.unlink(r);
    }

    fn unlift(&mut self, op: usize) {
        let (c, r) = self.of_op[op];
        self.relink(r);
        self.relink(c);
    }
}

/// Checks a history against the version model, starting from any of `initial`.
pub fn check(ops: &[LinOp], initial: &[u64], budget: Budget) -> SearchResult {
    let mut sorted: Vec<LinOp> = ops.to_vec();
    sorted.sort_by_key(|o| (o.invoke_ns, o.complete_ns.unwrap_or(u64::MAX), o.id));
    let mut list = EventList::new(&sorted);
    let mut linearized = Linearized::new(sorted.len());
    let mut memo: HashSet<MemoKey> = HashSet::new();
    let mut initial_states: Vec<u64> = initial.to_vec();
    initial_states.sort_unstable();
    initial_states.dedup();
    let mut state = initial_states;
    // (operation linearized, state before it)
    let mut stack: Vec<(usize, Vec<u64>)> = Vec::new();
    let started = Instant::now();
    let mut steps: u64 = 0;
    let mut deepest: Option<(usize, u64, Vec<u64>)> = None;
    let mut entry = list.head;

    loop {
        if list.head == NIL {
            return SearchResult {
                outcome: Outcome::Linearizable,
                steps,
                visited: memo.len(),
            };
        }
        steps += 1;
        if steps > budget.max_steps
            || (steps.is_multiple_of(4096) && started.elapsed() > budget.max_time)
        {
            return SearchResult {
                outcome: Outcome::Unknown {
                    reason: format!(
                        "search budget exhausted after {steps} steps, {:?}, {} of {} operations placed",
                        started.elapsed(),
                        linearized.count(),
                        sorted.len()
                    ),
                },
                steps,
                visited: memo.len(),
            };
        }
        let is_call = entry != NIL && list.events[entry].1;
        if is_call {
            let i = list.events[entry].0;
            if let Some(next_state) = step(&state, &sorted[i].op) {
                linearized.insert(i);
                if memo.insert(linearized.key(&next_state)) {
                    stack.push((i, std::mem::replace(&mut state, next_state)));
                    list.lift(i);
                    entry = list.head;
                    continue;
                }
                linearized.remove(i);
            }
            entry = list.next[entry];
        } else {
            // A return (or the end) reached with its operation not linearized.
            if entry != NIL {
                let i = list.events[entry].0;
                let depth = linearized.count();
                if deepest.as_ref().is_none_or(|d| depth > d.0) {
                    deepest = Some((depth, sorted[i].id, state.clone()));
                }
            }
            let Some((i, before)) = stack.pop() else {
                let (linearized, stuck_op, possible_versions) = deepest.unwrap_or((0, 0, state));
                return SearchResult {
                    outcome: Outcome::NotLinearizable {
                        stuck_op,
                        possible_versions,
                        linearized,
                    },
                    steps,
                    visited: memo.len(),
                };
            };
            linearized.remove(i);
            state = before;
            list.unlift(i);
            entry = list.next[list.of_op[i].0];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(
        id: u64,
        t: (u64, Option<u64>),
        expected: Option<u64>,
        result: CommitResult,
    ) -> LinOp {
        LinOp {
            id,
            invoke_ns: t.0,
            complete_ns: t.1,
            op: ModelOp::Commit { expected, result },
        }
    }

    fn read(id: u64, t: (u64, u64), version: u64) -> LinOp {
        LinOp {
            id,
            invoke_ns: t.0,
            complete_ns: Some(t.1),
            op: ModelOp::Read { version },
        }
    }

    fn run(ops: &[LinOp]) -> Outcome {
        check(ops, &[0], Budget::default()).outcome
    }

    #[test]
    fn sequential_commits_and_reads_are_linearizable() {
        let ops = vec![
            commit(1, (0, Some(10)), None, CommitResult::Ok(1)),
            read(2, (11, 12), 1),
            commit(3, (13, Some(20)), Some(1), CommitResult::Ok(2)),
            commit(4, (21, Some(22)), Some(1), CommitResult::Conflict(Some(2))),
            read(5, (23, 24), 2),
        ];
        assert_eq!(run(&ops), Outcome::Linearizable);
    }

    #[test]
    fn concurrent_commits_may_take_either_order() {
        // B was acknowledged at version 1 although A started first: fine, they overlap.
        let ops = vec![
            commit(1, (0, Some(10)), None, CommitResult::Ok(2)),
            commit(2, (1, Some(9)), None, CommitResult::Ok(1)),
            read(3, (2, 8), 1),
        ];
        assert_eq!(run(&ops), Outcome::Linearizable);
    }

    #[test]
    fn a_stale_read_is_not_linearizable() {
        let ops = vec![
            commit(1, (0, Some(10)), None, CommitResult::Ok(1)),
            commit(2, (11, Some(20)), None, CommitResult::Ok(2)),
            // Invoked after version 2 was acknowledged, yet returns 1.
            read(3, (21, 30), 1),
        ];
        match run(&ops) {
            Outcome::NotLinearizable { stuck_op, .. } => assert_eq!(stuck_op, 3),
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn a_version_acknowledged_twice_is_not_linearizable() {
        let ops = vec![
            commit(1, (0, Some(10)), None, CommitResult::Ok(1)),
            commit(2, (11, Some(20)), None, CommitResult::Ok(1)),
        ];
        assert!(matches!(run(&ops), Outcome::NotLinearizable { .. }));
    }

    #[test]
    fn a_commit_acknowledged_against_the_wrong_expected_version_is_not_linearizable() {
        let ops = vec![
            commit(1, (0, Some(10)), None, CommitResult::Ok(1)),
            // Expected 0 but the project was at 1 when it started.
            commit(2, (11, Some(20)), Some(0), CommitResult::Ok(1)),
        ];
        assert!(matches!(run(&ops), Outcome::NotLinearizable { .. }));
    }

    #[test]
    fn an_unknown_commit_may_have_taken_effect_or_not() {
        let took_effect = vec![
            commit(1, (0, None), None, CommitResult::Unknown),
            read(2, (5, 6), 1),
            commit(3, (7, Some(8)), None, CommitResult::Ok(2)),
        ];
        assert_eq!(run(&took_effect), Outcome::Linearizable);
        let did_not = vec![
            commit(1, (0, None), None, CommitResult::Unknown),
            read(2, (5, 6), 0),
            commit(3, (7, Some(8)), None, CommitResult::Ok(1)),
        ];
        assert_eq!(run(&did_not), Outcome::Linearizable);
        // ... but only once: two increments need two commits.
        let twice = vec![
            commit(1, (0, None), None, CommitResult::Unknown),
            read(2, (5, 6), 2),
        ];
        assert!(matches!(run(&twice), Outcome::NotLinearizable { .. }));
    }

    #[test]
    fn an_unknown_commit_takes_effect_only_after_its_call() {
        let ops = vec![
            read(1, (0, 1), 1),
            commit(2, (5, None), None, CommitResult::Unknown),
        ];
        assert!(matches!(run(&ops), Outcome::NotLinearizable { .. }));
    }

    #[test]
    fn a_conflict_reports_a_version_the_project_could_have_had() {
        let ok = vec![
            commit(1, (0, Some(10)), None, CommitResult::Ok(1)),
            commit(2, (11, Some(12)), Some(0), CommitResult::Conflict(Some(1))),
        ];
        assert_eq!(run(&ok), Outcome::Linearizable);
        let wrong = vec![
            commit(1, (0, Some(10)), None, CommitResult::Ok(1)),
            commit(2, (11, Some(12)), Some(0), CommitResult::Conflict(Some(3))),
        ];
        assert!(matches!(run(&wrong), Outcome::NotLinearizable { .. }));
    }

    #[test]
    fn budget_exhaustion_is_unknown_not_a_pass() {
        let ops: Vec<LinOp> = (0..50)
            .map(|i| commit(i, (0, Some(100)), None, CommitResult::Ok(i + 1)))
            .collect();
        let tiny = Budget {
            max_steps: 3,
            max_time: Duration::from_secs(1),
        };
        assert!(matches!(
            check(&ops, &[0], tiny).outcome,
            Outcome::Unknown { .. }
        ));
        assert_eq!(
            check(&ops, &[0], Budget::default()).outcome,
            Outcome::Linearizable
        );
    }

    #[test]
    fn many_concurrent_readers_stay_tractable() {
        // 4 writers and 4 readers overlapping heavily, 2000 operations.
        let mut ops = Vec::new();
        let mut id = 0;
        for v in 1..=500u64 {
            let t = v * 10;
            ops.push(commit(id, (t, Some(t + 25)), None, CommitResult::Ok(v)));
            id += 1;
            for r in 0..3 {
                ops.push(read(id, (t + r, t + 9), v - 1));
                id += 1;
            }
        }
        let res = check(&ops, &[0], Budget::default());
        assert_eq!(res.outcome, Outcome::Linearizable, "{res:?}");
    }

    /// Histories generated from a real sequential execution with intervals
    /// stretched around each operation's effect are always linearizable.
    mod generated {
        use super::*;
        use proptest::prelude::*;

        /// (kind 0..4, start offset, end offset) per operation; effect points are 10 ns apart.
        fn history(shape: &[(u8, u64, u64)]) -> Vec<LinOp> {
            let mut version = 0u64;
            let mut ops = Vec::new();
            for (i, &(kind, before, after)) in shape.iter().enumerate() {
                let point = 1_000 + i as u64 * 10;
                let invoke_ns = point - before;
                let complete_ns = Some(point + after);
                let op = match kind {
                    0 => ModelOp::Read { version },
                    1 => {
                        version += 1;
                        ModelOp::Commit {
                            expected: None,
                            result: CommitResult::Ok(version),
                        }
                    }
                    2 => {
                        version += 1;
                        ModelOp::Commit {
                            expected: Some(version - 1),
                            result: CommitResult::Ok(version),
                        }
                    }
                    _ => ModelOp::Commit {
                        expected: Some(version + 1),
                        result: CommitResult::Conflict(Some(version)),
                    },
                };
                ops.push(LinOp {
                    id: i as u64,
                    invoke_ns,
                    complete_ns,
                    op,
                });
            }
            ops
        }

        proptest! {
            #[test]
            fn real_executions_are_linearizable(
                shape in proptest::collection::vec((0u8..4, 0u64..60, 0u64..60), 1..200)
            ) {
                let ops = history(&shape);
                prop_assert_eq!(check(&ops, &[0], Budget::default()).outcome, Outcome::Linearizable);
            }

            #[test]
            fn a_read_of_a_version_never_reachable_in_its_interval_is_caught(
                shape in proptest::collection::vec((0u8..4, 0u64..60, 0u64..60), 1..100)
            ) {
                let mut ops = history(&shape);
                let max_version = ops.iter().filter_map(|o| match o.op {
                    ModelOp::Commit { result: CommitResult::Ok(v), .. } => Some(v),
                    _ => None,
                }).max().unwrap_or(0);
                // A read after everything, of a version beyond any commit.
                ops.push(LinOp {
                    id: 9_999,
                    invoke_ns: 1_000_000,
                    complete_ns: Some(1_000_001),
                    op: ModelOp::Read { version: max_version + 1 },
                });
                let res = check(&ops, &[0], Budget::default());
                prop_assert!(matches!(res.outcome, Outcome::NotLinearizable { .. }), "{:?}", res);
            }
        }
    }
}
