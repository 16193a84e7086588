//! Prompt campaign by the follower with the longer log after the leader is lost.
//!
//! openraft 0.9 has no pre-vote. When the leader dies with entries still on
//! their way to the followers, their logs differ, and whichever follower's
//! timer fires first campaigns. If that is the one with the shorter log, the
//! other refuses it (its log is longer) and then waits for its own timer:
//! 300-400 ms more with the LAN timeouts, and more when openraft's sticky
//! "seen a greater log" penalty (`2 * election_timeout_max`) is set on it.
//!
//! So a node that refuses a candidate *for its log* while it has itself heard
//! nothing from a leader for longer than the leader lease campaigns at once.
//! That is what its own timer would do a little later anyway, so it cannot
//! unseat a leader the node still hears from. The first campaign usually
//! collides with the refused candidate's vote for itself in the same term, so
//! if no leader is known shortly after, it campaigns once more (next term),
//! which the refused candidate grants. Then the timers take over again.
//! (openraft's own remedy, a sticky timeout penalty on the refused node, is
//! switched off in `raft_network.rs`: it made leader loss take 0.7-1.7 s.)
//!
//! A node also starts with its election timer off, until it hears from a
//! leader or [`STARTUP_GRACE`] passes. A restarted follower otherwise times
//! out before the leader's replication (which retries a dead peer every
//! 500 ms) reaches it, campaigns with its stale log, loses, and its higher
//! term still unseats the healthy leader: without pre-vote, every restart of
//! a follower cost a leader change. A fresh cluster is not slowed: its first
//! election is started by `initialize`, not by the timer.

use flagraft_store::{NodeId, Raft};
use openraft::raft::{VoteRequest, VoteResponse};
use openraft::ServerState;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Campaigns started for one refused candidate: the collision, then the real one.
const ATTEMPTS: usize = 2;
/// Longest a starting node keeps its election timer off while it hears no leader.
pub const STARTUP_GRACE: Duration = Duration::from_secs(1);

pub struct PromptCampaign {
    raft: Raft,
    /// openraft's leader lease (`election_timeout_max_ms`).
    lease: Duration,
    /// How long one attempt may take to produce a leader before the next.
    settle: Duration,
    started: Instant,
    /// When an append-entries from a leader was last accepted, in ms since
    /// `started` (0: not yet).
    leader_contact_ms: AtomicU64,
    running: AtomicBool,
    /// The election timer is on (the node config starts it off).
    timer_on: AtomicBool,
}

impl PromptCampaign {
    /// Also turns the election timer on after [`STARTUP_GRACE`] (or at the first
    /// contact with a leader); must be called inside a tokio runtime.
    pub fn start(raft: Raft, lease: Duration, settle: Duration) -> Arc<Self> {
        let this = Arc::new(PromptCampaign {
            raft,
            lease,
            settle,
            started: Instant::now(),
            leader_contact_ms: AtomicU64::new(0),
            running: AtomicBool::new(false),
            timer_on: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&this);
        tokio::spawn(async move {
            tokio::time::sleep(STARTUP_GRACE).await;
            if let Some(this) = weak.upgrade() {
                this.timer_on();
            }
        });
        this
    }

    fn timer_on(&self) {
        // A plain load first: this runs on every append a follower receives.
        if !self.timer_on.load(Ordering::Acquire) && !self.timer_on.swap(true, Ordering::AcqRel) {
            self.raft.runtime_config().elect(true);
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// An append-entries (or heartbeat) from the current leader was accepted.
    pub fn heard_from_leader(&self) {
        self.leader_contact_ms
            .store(self.now_ms(), Ordering::Relaxed);
        self.timer_on();
    }

    /// No leader heard for longer than the lease (counting from the start when none yet).
    fn lease_expired(&self) -> bool {
        let last = self.leader_contact_ms.load(Ordering::Relaxed);
        self.now_ms().saturating_sub(last) > self.lease.as_millis() as u64
    }

    /// Called with each vote this node answered; may start a campaign.
    pub fn after_vote(self: &Arc<Self>, req: &VoteRequest<NodeId>, resp: &VoteResponse<NodeId>) {
        let refused_for_log = !resp.vote_granted && resp.last_log_id > req.last_log_id;
        if !refused_for_log || !self.lease_expired() {
            return;
        }
        let (state, term) = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            (m.state, m.current_term)
        };
        if state != ServerState::Follower {
            return;
        }
        if self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::info!(
            candidate = %req.vote,
            "refused a candidate with a shorter log and heard no leader within the lease: campaigning now"
        );
        let this = Arc::clone(self);
        tokio::spawn(async move {
            this.campaign(term).await;
            this.running.store(false, Ordering::Release);
        });
    }

    /// Campaigns until a leader of a term after `term` is known, at most [`ATTEMPTS`] times.
    async fn campaign(&self, term: u64) {
        for _ in 0..ATTEMPTS {
            // A learner or a leader ignores the trigger (openraft checks both).
            if self.raft.trigger().elect().await.is_err() {
                return;
            }
            let leader = self
                .raft
                .wait(Some(self.settle))
                .metrics(
                    |m| m.current_term > term && m.current_leader.is_some(),
                    "a leader after a prompt campaign",
                )
                .await;
            if leader.is_ok() {
                return;
            }
        }
    }
}
