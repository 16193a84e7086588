//! Counters the node keeps itself and the Prometheus text rendering of /metrics.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the commit latency histogram buckets.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048,
    4.096,
];

/// A fixed-bucket histogram safe to update from many tasks.
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// What the node measures itself (Raft state comes from openraft's metrics).
#[derive(Default)]
pub struct NodeMetrics {
    /// Time from proposing a commit to its apply, on the leader.
    pub commit_latency: Histogram,
    pub commits_ok: AtomicU64,
    pub commits_refused: AtomicU64,
    pub commits_forwarded: AtomicU64,
    /// Raft entries proposed by the group commit, and the commits they carried.
    pub commit_proposals: AtomicU64,
    pub commits_proposed: AtomicU64,
}

/// A snapshot of the values rendered by /metrics.
pub struct Scrape<'a> {
    pub node_id: u64,
    pub role: &'a str,
    pub term: u64,
    pub leader_id: Option<u64>,
    pub last_log_index: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub purged_index: u64,
    pub projects: Vec<(String, u64, usize)>,
}

const ROLES: [&str; 5] = ["leader", "follower", "candidate", "learner", "shutdown"];

pub fn render(scrape: &Scrape<'_>, node: &NodeMetrics) -> String {
    let mut out = String::with_capacity(4096);
    let gauge = |out: &mut String, name: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    };
    let _ = writeln!(
        out,
        "# HELP flagraft_raft_role 1 for this node's current Raft role.\n# TYPE flagraft_raft_role gauge"
    );
    for role in ROLES {
        let v = u8::from(role == scrape.role);
        let _ = writeln!(out, "flagraft_raft_role{{role=\"{role}\"}} {v}");
    }
    gauge(
        &mut out,
        "flagraft_node_id",
        "This node's id.",
        scrape.node_id,
    );
    gauge(
        &mut out,
        "flagraft_raft_term",
        "Current Raft term.",
        scrape.term,
    );
    gauge(
        &mut out,
        "flagraft_raft_leader_id",
        "Id of the known leader (0: none).",
        scrape.leader_id.unwrap_or(0),
    );
    gauge(
        &mut out,
        "flagraft_raft_last_log_index",
        "Index of the last log entry.",
        scrape.last_log_index,
    );
    gauge(
        &mut out,
        "flagraft_raft_commit_index",
        "Highest log index known committed.",
        scrape.commit_index,
    );
    gauge(
        &mut out,
        "flagraft_raft_applied_index",
        "Highest log index applied to the state machine.",
        scrape.applied_index,
    );
    gauge(
        &mut out,
        "flagraft_raft_snapshot_index",
        "Last log index covered by the current snapshot (0: none).",
        scrape.snapshot_index,
    );
    gauge(
        &mut out,
        "flagraft_raft_purged_index",
        "Highest log index removed from the log (0: none).",
        scrape.purged_index,
    );
    let _ = writeln!(
        out,
        "# HELP flagraft_project_version Current version of each project.\n# TYPE flagraft_project_version gauge"
    );
    for (name, version, _) in &scrape.projects {
        let _ = writeln!(
            out,
            "flagraft_project_version{{project=\"{}\"}} {version}",
            escape(name)
        );
    }
    let _ = writeln!(
        out,
        "# HELP flagraft_project_entities Entities in each project's ruleset.\n# TYPE flagraft_project_entities gauge"
    );
    for (name, _, count) in &scrape.projects {
        let _ = writeln!(
            out,
            "flagraft_project_entities{{project=\"{}\"}} {count}",
            escape(name)
        );
    }
    let _ = writeln!(
        out,
        "# HELP flagraft_commits_total Commits handled by this node as leader, by outcome.\n# TYPE flagraft_commits_total counter"
    );
    for (outcome, c) in [
        ("committed", &node.commits_ok),
        ("refused", &node.commits_refused),
        ("forwarded", &node.commits_forwarded),
    ] {
        let v = c.load(Ordering::Relaxed);
        let _ = writeln!(out, "flagraft_commits_total{{outcome=\"{outcome}\"}} {v}");
    }
    let _ = writeln!(
        out,
        "# HELP flagraft_commit_proposals_total Raft entries proposed for commits (a group commit carries several).\n# TYPE flagraft_commit_proposals_total counter\nflagraft_commit_proposals_total {}",
        node.commit_proposals.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP flagraft_commits_proposed_total Commits carried by those entries.\n# TYPE flagraft_commits_proposed_total counter\nflagraft_commits_proposed_total {}",
        node.commits_proposed.load(Ordering::Relaxed)
    );
    node.commit_latency.render(
        "flagraft_commit_latency_seconds",
        "Leader-side time from proposing a commit to its apply.",
        &mut out,
    );
    out
}

/// Escapes a label value (backslash, quote, newline).
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = NodeMetrics::default();
        m.commit_latency.observe(Duration::from_micros(300));
        m.commit_latency.observe(Duration::from_millis(3));
        m.commit_latency.observe(Duration::from_secs(10));
        let text = render(
            &Scrape {
                node_id: 1,
                role: "leader",
                term: 4,
                leader_id: Some(1),
                last_log_index: 9,
                commit_index: 9,
                applied_index: 8,
                snapshot_index: 5,
                purged_index: 2,
                projects: vec![("de\"fault".into(), 3, 2)],
            },
            &m,
        );
        assert!(text.contains("flagraft_commit_latency_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("flagraft_commit_latency_seconds_bucket{le=\"0.004\"} 2\n"));
        assert!(text.contains("flagraft_commit_latency_seconds_bucket{le=\"4.096\"} 2\n"));
        assert!(text.contains("flagraft_commit_latency_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("flagraft_commit_latency_seconds_count 3\n"));
        assert!(text.contains("flagraft_raft_role{role=\"leader\"} 1\n"));
        assert!(text.contains("flagraft_raft_role{role=\"follower\"} 0\n"));
        assert!(text.contains("flagraft_project_version{project=\"de\\\"fault\"} 3\n"));
        assert!(text.contains("flagraft_raft_applied_index 8\n"));
        assert!(text.contains("flagraft_raft_snapshot_index 5\n"));
    }
}
