//! Every member's state for `GetClusterMembers`, read from each member's
//! `/metrics` over plain HTTP (the same numbers an operator would scrape),
//! concurrently, each bounded by [`SCRAPE_TIMEOUT`].

use flagraft_proto::admin::v1 as pb;
use std::collections::HashMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SCRAPE_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest /metrics answer read (a node with many projects stays well under).
const MAX_SCRAPE_BYTES: u64 = 4 << 20;

/// What one member's /metrics says.
#[derive(Debug, Default, PartialEq)]
pub struct Scraped {
    pub role: String,
    pub term: u64,
    pub applied_index: u64,
    pub project_versions: HashMap<String, u64>,
}

/// Members of `status` (its membership), each with its scraped state and lag.
pub async fn collect(status: &pb::ClusterStatus) -> Vec<pb::MemberStatus> {
    let scrapes = scrape_all(status.nodes.iter().map(|n| n.http_addr.clone()).collect()).await;
    let max_applied = scrapes
        .iter()
        .filter_map(|s| s.as_ref().ok().map(|s| s.applied_index))
        .max()
        .unwrap_or(0);
    status
        .nodes
        .iter()
        .zip(scrapes)
        .map(|(n, scraped)| {
            let mut m = pb::MemberStatus {
                node_id: n.node_id,
                address: Some(n.clone()),
                voter: status.voters.contains(&n.node_id),
                ..Default::default()
            };
            match scraped {
                Ok(s) => {
                    m.reachable = true;
                    m.role = s.role;
                    m.term = s.term;
                    m.applied_index = s.applied_index;
                    m.lag = max_applied.saturating_sub(s.applied_index);
                    m.project_versions = s.project_versions;
                }
                Err(e) => m.error = e,
            }
            m
        })
        .collect()
}

/// Scrapes every address concurrently, keeping their order.
async fn scrape_all(addrs: Vec<String>) -> Vec<Result<Scraped, String>> {
    let handles: Vec<_> = addrs.into_iter().map(|a| tokio::spawn(scrape(a))).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(
            h.await
                .unwrap_or_else(|e| Err(format!("scrape task failed: {e}"))),
        );
    }
    out
}

async fn scrape(addr: String) -> Result<Scraped, String> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let mut raw = Vec::new();
        s.take(MAX_SCRAPE_BYTES)
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        Ok::<_, String>(raw)
    };
    let raw = tokio::time::timeout(SCRAPE_TIMEOUT, fetch)
        .await
        .map_err(|_| format!("{addr}: no answer within {SCRAPE_TIMEOUT:?}"))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr}: not an HTTP answer"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "{addr}: {}",
            head.lines().next().unwrap_or("bad answer")
        ));
    }
    Ok(parse_metrics(body))
}

/// Reads the gauges it needs from Prometheus text; ignores everything else.
pub fn parse_metrics(text: &str) -> Scraped {
    let mut s = Scraped::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<u64>() else {
            continue;
        };
        match name {
            "flagraft_raft_term" => s.term = value,
            "flagraft_raft_applied_index" => s.applied_index = value,
            _ => {
                if let Some(role) = label(name, "flagraft_raft_role", "role") {
                    if value == 1 {
                        s.role = role;
                    }
                } else if let Some(p) = label(name, "flagraft_project_version", "project") {
                    s.project_versions.insert(p, value);
                }
            }
        }
    }
    s
}

/// The value of label `label` of metric `metric` in `name{label="value"}`.
fn label(name: &str, metric: &str, label: &str) -> Option<String> {
    let inner = name
        .strip_prefix(metric)?
        .strip_prefix('{')?
        .strip_suffix('}')?;
    let quoted = inner.strip_prefix(label)?.strip_prefix("=\"")?;
    let quoted = quoted.strip_suffix('"')?;
    let mut out = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// What /metrics renders is what the scrape reads back, for any
        /// project names (escaped quotes, backslashes, newlines included).
        #[test]
        fn rendered_metrics_round_trip(
            term in 0u64..1_000_000,
            applied in 0u64..1_000_000,
            role in 0usize..5,
            projects in proptest::collection::btree_map("[a-z\\\\\"\n]{1,8}", 0u64..1000, 0..5),
        ) {
            let roles = ["leader", "follower", "candidate", "learner", "shutdown"];
            let text = crate::metrics::render(
                &crate::metrics::Scrape {
                    node_id: 1,
                    role: roles[role],
                    term,
                    leader_id: Some(1),
                    last_log_index: applied,
                    commit_index: applied,
                    applied_index: applied,
                    snapshot_index: 0,
                    purged_index: 0,
                    projects: projects.iter().map(|(n, v)| (n.clone(), *v, 0)).collect(),
                },
                &crate::metrics::NodeMetrics::default(),
            );
            let s = parse_metrics(&text);
            proptest::prop_assert_eq!(s.role.as_str(), roles[role]);
            proptest::prop_assert_eq!((s.term, s.applied_index), (term, applied));
            let want: HashMap<String, u64> = projects.into_iter().collect();
            proptest::prop_assert_eq!(s.project_versions, want);
        }
    }

    #[test]
    fn metrics_text_is_parsed_for_role_term_index_and_versions() {
        let text = "# HELP x\nflagraft_raft_role{role=\"leader\"} 0\nflagraft_raft_role{role=\"follower\"} 1\n\
                    flagraft_raft_term 7\nflagraft_raft_applied_index 42\n\
                    flagraft_project_version{project=\"default\"} 3\n\
                    flagraft_project_version{project=\"we\\\"ird\"} 5\nflagraft_commits_total{outcome=\"x\"} 9\n\
                    garbage line\n";
        let s = parse_metrics(text);
        assert_eq!(s.role, "follower");
        assert_eq!(s.term, 7);
        assert_eq!(s.applied_index, 42);
        assert_eq!(s.project_versions["default"], 3);
        assert_eq!(s.project_versions["we\"ird"], 5);
        assert_eq!(s.project_versions.len(), 2);
    }
}
