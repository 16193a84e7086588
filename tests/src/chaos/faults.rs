//! The fault schedule (a pure function of the seed) and its execution.
//!
//! Faults never overlap: each one is injected, undone, and the cluster is
//! given time to become healthy again before a quiet gap and the next one.
//! Targets are roles ("the leader", "a follower"), resolved when the fault
//! starts, so a seed replays the same schedule even though which node leads
//! depends on timing.

use super::cluster::{ChaosCluster, ELECTION_TIMEOUT_MAX_MS};
use super::history::*;
use super::recorder::Recorder;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Leader,
    Follower,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// The leader cut off from both followers, both ways.
    LeaderIsolated,
    /// One follower cut off, both ways.
    FollowerIsolated,
    /// A clean 1–2 split with the lone node chosen without regard to its role.
    Split12,
    /// One-way: nothing reaches the leader, its own packets still go out.
    LeaderDeaf,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::LeaderIsolated => "leader_isolated",
            Scenario::FollowerIsolated => "follower_isolated",
            Scenario::Split12 => "split_1_2",
            Scenario::LeaderDeaf => "leader_deaf",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// kill -9, restart after `down_ms`.
    Kill {
        target: Target,
        down_ms: u64,
    },
    /// SIGSTOP, SIGCONT after `ms` (always longer than the election timeout).
    Pause {
        target: Target,
        ms: u64,
    },
    Partition {
        scenario: Scenario,
        ms: u64,
    },
}

/// One scheduled fault: what, a number that picks among candidate nodes, and
/// the quiet gap after the cluster is healthy again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planned {
    pub fault: Fault,
    pub pick: u64,
    pub gap_ms: u64,
}

pub struct Schedule {
    rng: StdRng,
}

/// Probability that a kill or pause targets the leader.
const LEADER_BIAS: f64 = 0.7;

impl Schedule {
    pub fn new(seed: u64) -> Schedule {
        Schedule {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    fn target(&mut self) -> Target {
        if self.rng.gen_bool(LEADER_BIAS) {
            Target::Leader
        } else {
            Target::Follower
        }
    }

    pub fn next_fault(&mut self) -> Planned {
        let roll: f64 = self.rng.gen();
        let fault = if roll < 0.35 {
            Fault::Kill {
                target: self.target(),
                down_ms: self.rng.gen_range(300..4000),
            }
        } else if roll < 0.6 {
            Fault::Pause {
                target: self.target(),
                ms: self
                    .rng
                    .gen_range(2 * ELECTION_TIMEOUT_MAX_MS..4 * ELECTION_TIMEOUT_MAX_MS + 2000),
            }
        } else {
            let scenario = match self.rng.gen_range(0..4) {
                0 => Scenario::LeaderIsolated,
                1 => Scenario::FollowerIsolated,
                2 => Scenario::Split12,
                _ => Scenario::LeaderDeaf,
            };
            Fault::Partition {
                scenario,
                ms: self.rng.gen_range(1500..7000),
            }
        };
        Planned {
            fault,
            pick: self.rng.gen(),
            gap_ms: self.rng.gen_range(300..2500),
        }
    }
}

/// A node for `target`; the leader if unknown is replaced by any node.
fn resolve(ids: &[u64], leader: Option<u64>, target: Target, pick: u64) -> u64 {
    let candidates: Vec<u64> = match (target, leader) {
        (Target::Leader, Some(l)) => vec![l],
        (Target::Follower, Some(l)) => ids.iter().copied().filter(|&i| i != l).collect(),
        (_, None) => ids.to_vec(),
    };
    candidates[(pick % candidates.len() as u64) as usize]
}

fn node_status(s: &flagraft_proto::admin::v1::ClusterStatus) -> NodeStatus {
    NodeStatus {
        term: s.term,
        last_log_index: s.last_log_index,
        last_applied_index: s.last_applied_index,
        voters: s.voters.clone(),
        role: s.role.clone(),
    }
}

/// Longest wait for a restarted node's admin port.
const RESTART_ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

/// Injects one fault, undoes it, and records what happened.
pub async fn inject(
    cluster: &ChaosCluster,
    rec: &Recorder,
    planned: Planned,
) -> Result<(), String> {
    let leader = cluster.leader().await;
    let ids = cluster.ids.clone();
    match planned.fault {
        Fault::Kill { target, down_ms } => {
            let victim = resolve(&ids, leader, target, planned.pick);
            let before = cluster
                .status(victim, Duration::from_millis(500))
                .await
                .ok()
                .map(|s| node_status(&s));
            let killed_ns = rec.now_ns();
            cluster.kill9(victim).map_err(|e| e.to_string())?;
            tokio::time::sleep(Duration::from_millis(down_ms)).await;
            // Restart cut off from its peers: what it reports then comes from its own disk.
            cluster.net.isolate(victim).map_err(|e| e.to_string())?;
            let restarted_ns = rec.now_ns();
            let started = cluster.start(victim);
            let after = match started {
                Ok(_) => first_status(cluster, victim).await,
                Err(e) => {
                    rec.incident(format!("restart of node {victim} failed: {e}"));
                    None
                }
            };
            let healed_ns = rec.now_ns();
            cluster.net.heal_all().map_err(|e| e.to_string())?;
            rec.partition(PartitionWindow {
                scenario: "restart_isolation".into(),
                minority: vec![victim],
                cut_ns: restarted_ns,
                healed_ns,
            });
            rec.restart(RestartFact {
                node: victim,
                killed_ns,
                restarted_ns,
                before,
                after,
                isolated_while_read: true,
            });
            rec.fault(FaultRecord {
                kind: "kill".into(),
                scenario: format!("down {down_ms} ms"),
                nodes: vec![victim],
                leader,
                start_ns: killed_ns,
                end_ns: restarted_ns,
            });
        }
        Fault::Pause { target, ms } => {
            let victim = resolve(&ids, leader, target, planned.pick);
            let start_ns = rec.now_ns();
            cluster.pause(victim).map_err(|e| e.to_string())?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let end_ns = rec.now_ns();
            cluster.resume(victim).map_err(|e| e.to_string())?;
            rec.fault(FaultRecord {
                kind: "pause".into(),
                scenario: format!("{ms} ms"),
                nodes: vec![victim],
                leader,
                start_ns,
                end_ns,
            });
        }
        Fault::Partition { scenario, ms } => {
            let lone = match scenario {
                Scenario::LeaderIsolated | Scenario::LeaderDeaf => {
                    resolve(&ids, leader, Target::Leader, planned.pick)
                }
                Scenario::FollowerIsolated => resolve(&ids, leader, Target::Follower, planned.pick),
                Scenario::Split12 => ids[(planned.pick % ids.len() as u64) as usize],
            };
            let cut = match scenario {
                Scenario::LeaderDeaf => ids
                    .iter()
                    .filter(|&&o| o != lone)
                    .try_for_each(|&o| cluster.net.cut(o, lone)),
                _ => cluster.net.isolate(lone),
            };
            let cut_ns = rec.now_ns();
            if let Err(e) = cut {
                let _ = cluster.net.heal_all();
                return Err(e.to_string());
            }
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let healed_ns = rec.now_ns();
            cluster.net.heal_all().map_err(|e| e.to_string())?;
            rec.partition(PartitionWindow {
                scenario: scenario.name().into(),
                minority: vec![lone],
                cut_ns,
                healed_ns,
            });
            rec.fault(FaultRecord {
                kind: "partition".into(),
                scenario: scenario.name().into(),
                nodes: vec![lone],
                leader,
                start_ns: cut_ns,
                end_ns: healed_ns,
            });
        }
    }
    Ok(())
}

/// The first status a restarted node gives (polled; bounded).
async fn first_status(cluster: &ChaosCluster, id: u64) -> Option<NodeStatus> {
    let deadline = tokio::time::Instant::now() + RESTART_ANSWER_TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        if let Ok(s) = cluster.status(id, Duration::from_millis(300)).await {
            return Some(node_status(&s));
        }
        if !cluster.is_running(id) {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_schedule() {
        let a: Vec<Planned> = {
            let mut s = Schedule::new(42);
            (0..50).map(|_| s.next_fault()).collect()
        };
        let mut s = Schedule::new(42);
        let b: Vec<Planned> = (0..50).map(|_| s.next_fault()).collect();
        assert_eq!(a, b);
        let mut other = Schedule::new(43);
        let c: Vec<Planned> = (0..50).map(|_| other.next_fault()).collect();
        assert_ne!(a, c);
    }

    #[test]
    fn the_schedule_covers_every_fault_and_favours_the_leader() {
        let mut s = Schedule::new(7);
        let (mut kills, mut pauses, mut leader_hits, mut targeted) = (0, 0, 0, 0);
        let mut scenarios = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            match s.next_fault().fault {
                Fault::Kill { target, down_ms } => {
                    kills += 1;
                    targeted += 1;
                    leader_hits += usize::from(target == Target::Leader);
                    assert!(down_ms < 4000);
                }
                Fault::Pause { target, ms } => {
                    pauses += 1;
                    targeted += 1;
                    leader_hits += usize::from(target == Target::Leader);
                    assert!(ms > ELECTION_TIMEOUT_MAX_MS);
                }
                Fault::Partition { scenario, .. } => {
                    scenarios.insert(scenario.name());
                }
            }
        }
        assert!(kills > 0 && pauses > 0);
        assert_eq!(scenarios.len(), 4);
        assert!(leader_hits * 2 > targeted, "{leader_hits} of {targeted}");
    }

    #[test]
    fn targets_resolve_by_role() {
        let ids = [1, 2, 3];
        assert_eq!(resolve(&ids, Some(2), Target::Leader, 5), 2);
        for pick in 0..10 {
            assert_ne!(resolve(&ids, Some(2), Target::Follower, pick), 2);
            assert!(ids.contains(&resolve(&ids, None, Target::Leader, pick)));
        }
    }
}
