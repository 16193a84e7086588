//! Collects the history while the run goes on (shared by every task).

use super::history::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

pub struct Recorder {
    start: Instant,
    next_id: AtomicU64,
    history: Mutex<History>,
}

impl Recorder {
    pub fn new(seed: u64, nodes: Vec<u64>) -> Recorder {
        Recorder {
            start: Instant::now(),
            next_id: AtomicU64::new(0),
            history: Mutex::new(History {
                seed,
                nodes,
                ..History::default()
            }),
        }
    }

    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        // Plain data: a panic elsewhere leaves nothing half-updated here.
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Nanoseconds since the rig started.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn next_op_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn operation(&self, op: Operation) {
        self.history().operations.push(op);
    }

    pub fn observation(&self, o: Observation) {
        self.history().observations.push(o);
    }

    pub fn fault(&self, f: FaultRecord) {
        self.history().faults.push(f);
    }

    pub fn partition(&self, p: PartitionWindow) {
        self.history().partitions.push(p);
    }

    pub fn restart(&self, r: RestartFact) {
        self.history().restarts.push(r);
    }

    pub fn incident(&self, what: String) {
        eprintln!("chaos: {what}");
        self.history().incidents.push(what);
    }

    pub fn rig_failure(&self, what: String) {
        eprintln!("chaos: rig failure: {what}");
        self.history().rig_failure.get_or_insert(what);
    }

    pub fn set_final(&self, f: FinalState) {
        self.history().final_state = Some(f);
    }

    /// A copy of everything recorded so far, operations in id order.
    pub fn snapshot(&self) -> History {
        let mut h = self.history().clone();
        h.operations.sort_by_key(|o| o.id);
        h
    }
}
