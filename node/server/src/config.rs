//! The node's TOML configuration.
//!
//! ```toml
//! node_id    = 1
//! cluster    = "local"                  # a data dir records it; a mismatch is refused
//! data_dir   = "../../.cluster/data/node1"   # relative paths: against the config file's dir
//! raft_addr  = "127.0.0.1:7101"         # listen: node-to-node Raft gRPC
//! admin_addr = "127.0.0.1:7201"         # listen: Admin gRPC
//! http_addr  = "127.0.0.1:7301"         # listen: /healthz, /readyz, /metrics (and /v1/stream)
//! history_limit = 10000                 # optional: versions of deltas kept per project (at least;
//!                                       # up to 31 more while a group of them ages out)
//! cache_mb = 512                        # optional: sled's page cache, in MiB (see below)
//!
//! # The initial voters, this node included (same list on every node). Addresses
//! # here are the advertised ones, as other members reach them.
//! [[peers]]
//! node_id = 1
//! raft_addr = "127.0.0.1:7101"
//! admin_addr = "127.0.0.1:7201"
//! http_addr = "127.0.0.1:7301"
//!
//! [raft]                                # optional, LAN defaults shown
//! heartbeat_ms = 50                    # also openraft's append-entries timeout
//! election_timeout_min_ms = 120         # also the vote request timeout
//! election_timeout_max_ms = 170         # also the leader lease
//! rpc_timeout_ms = 5000                 # admin calls relayed to the leader
//! snapshot_timeout_ms = 30000           # one snapshot chunk
//!
//! [stream]                              # optional: update stream (see docs/protocol.md)
//! heartbeat_ms = 15000
//! [stream.keys]                         # optional static keys (besides replicated ones)
//! "srv-default-dev" = { project = "default", kind = "server" }
//!
//! [admin]                               # bootstrap admin key(s); also FLAGRAFT_ADMIN_KEY
//! key_sha256 = "<64 hex digits>"         # SHA-256 of the key, or:
//! key_file = "admin.key"                 # a file holding the key (relative: to this file)
//!
//! [initialize]                          # optional: /v1/initialize, /v1/stream/client
//! rate_per_key_per_sec = 100.0          # per client key, token bucket (0: off)
//! rate_burst = 200
//! max_body_bytes = 65536
//!
//! [snapshot]                            # optional
//! logs_since_last = 5000                # build a snapshot after this many entries
//! logs_kept = 1000                      # entries kept behind a snapshot for lagging followers
//! ```
//!
//! Leader loss: a follower that stops hearing from a committed leader waits
//! the lease (`election_timeout_max_ms`) plus a random election timeout before
//! it campaigns, so a dead leader is replaced after about
//! `election_timeout_max_ms + [min, max)` = 290..340 ms with these defaults
//! (plus up to one election tick, 1.5 x heartbeat_ms). A starting node keeps
//! its election timer off until it hears a leader, at most 1 s (see
//! `campaign.rs`).
//!
//! `cache_mb` caps sled's page cache: under sustained writes a node's memory
//! grows by up to about this much besides its own state. sled splits the cache
//! into 256 LRU shards, and one log leaf of group-commit entries can outgrow a
//! shard of a small cache, evicting the history pages that compaction reads
//! next: at 128 MiB, 64 committers made each node read ~20 MB/s back from disk
//! and cost ~6% of the throughput. A cluster with few writes can do with less
//! (at least 16 MiB).
//!
//! Every table refuses unknown keys, so a typo is an error, not a silent default.

use serde::Deserialize;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub node_id: u64,
    pub cluster: String,
    pub data_dir: PathBuf,
    pub raft_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub http_addr: SocketAddr,
    #[serde(default = "default_history_limit")]
    pub history_limit: u64,
    #[serde(default = "default_cache_mb")]
    pub cache_mb: u64,
    pub peers: Vec<PeerConfig>,
    #[serde(default)]
    pub raft: RaftTimeouts,
    #[serde(default)]
    pub snapshot: SnapshotPolicy,
    /// `[stream]`: update stream tunables and (temporary) keys; see crate::stream.
    #[serde(default)]
    pub stream: crate::stream::StreamConfig,
    /// `[initialize]`: client initialize responses and the client-side stream.
    #[serde(default)]
    pub initialize: crate::initialize::InitializeConfig,
    /// `[admin]`: where the bootstrap admin key comes from (see crate::auth).
    #[serde(default)]
    pub admin: crate::auth::AdminConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub node_id: u64,
    pub raft_addr: String,
    pub admin_addr: String,
    pub http_addr: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftTimeouts {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Bound on an admin call a follower relays to the leader. (openraft
    /// bounds its own RPCs: append-entries by heartbeat_ms, votes by
    /// election_timeout_min_ms, snapshot chunks by snapshot_timeout_ms.)
    pub rpc_timeout_ms: u64,
    pub snapshot_timeout_ms: u64,
}

impl Default for RaftTimeouts {
    fn default() -> Self {
        RaftTimeouts {
            heartbeat_ms: 50,
            election_timeout_min_ms: 120,
            election_timeout_max_ms: 170,
            rpc_timeout_ms: 5000,
            snapshot_timeout_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotPolicy {
    pub logs_since_last: u64,
    pub logs_kept: u64,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        SnapshotPolicy {
            logs_since_last: 5000,
            logs_kept: 1000,
        }
    }
}

fn default_history_limit() -> u64 {
    10_000
}

fn default_cache_mb() -> u64 {
    flagraft_store::StoreConfig::default().cache_capacity_bytes >> 20
}

/// Bounds of `cache_mb`: sled needs a non-empty cache in each of its 256 shards, and the upper
/// bound keeps the byte count far from overflowing.
const CACHE_MB_RANGE: std::ops::RangeInclusive<u64> = 16..=1 << 20;

/// A configuration problem, worded to be printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}{location}: {message}")]
    Parse {
        path: PathBuf,
        location: String,
        message: String,
    },
    #[error("config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl NodeConfig {
    /// Reads, parses and validates a config file; relative `data_dir` is
    /// resolved against the file's directory.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config =
            NodeConfig::parse(&text).map_err(|(location, message)| ConfigError::Parse {
                path: path.to_path_buf(),
                location,
                message,
            })?;
        let base = path.parent().unwrap_or(Path::new("."));
        if config.data_dir.is_relative() {
            config.data_dir = base.join(&config.data_dir);
        }
        if let Some(file) = config.admin.key_file.as_mut() {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    /// Parses TOML text; the error is (" line L, column C", message) on one line.
    pub fn parse(text: &str) -> Result<NodeConfig, (String, String)> {
        toml::from_str(text).map_err(|e: toml::de::Error| {
            let location = e
                .span()
                .map(|span| {
                    let (line, col) = line_col(text, span.start);
                    format!(" line {line}, column {col}")
                })
                .unwrap_or_default();
            (location, one_line(e.message()))
        })
    }

    /// Checks what serde cannot: consistency between fields.
    pub fn validate(&self) -> Result<(), String> {
        if self.cluster.trim().is_empty() {
            return Err("cluster must not be empty".into());
        }
        if self.peers.is_empty() {
            return Err("peers must list the initial voters, this node included".into());
        }
        let mut ids = BTreeSet::new();
        for p in &self.peers {
            if !ids.insert(p.node_id) {
                return Err(format!("peers: node_id {} listed twice", p.node_id));
            }
            for (what, addr) in [
                ("raft_addr", &p.raft_addr),
                ("admin_addr", &p.admin_addr),
                ("http_addr", &p.http_addr),
            ] {
                if !looks_like_host_port(addr) {
                    return Err(format!(
                        "peers: node {} {what} '{addr}' is not host:port",
                        p.node_id
                    ));
                }
            }
        }
        if !ids.contains(&self.node_id) {
            return Err(format!(
                "peers does not list this node (node_id {})",
                self.node_id
            ));
        }
        let listen = [self.raft_addr, self.admin_addr, self.http_addr];
        if listen[0] == listen[1] || listen[0] == listen[2] || listen[1] == listen[2] {
            return Err("raft_addr, admin_addr and http_addr must differ".into());
        }
        let t = &self.raft;
        if t.heartbeat_ms == 0 || t.election_timeout_min_ms <= t.heartbeat_ms {
            return Err("raft: need 0 < heartbeat_ms < election_timeout_min_ms".into());
        }
        if t.election_timeout_max_ms <= t.election_timeout_min_ms {
            return Err("raft: need election_timeout_min_ms < election_timeout_max_ms".into());
        }
        if t.rpc_timeout_ms == 0 || t.snapshot_timeout_ms == 0 {
            return Err("raft: timeouts must be positive".into());
        }
        if self.history_limit == 0 {
            return Err("history_limit must be at least 1".into());
        }
        if self.snapshot.logs_since_last == 0 {
            return Err("snapshot: logs_since_last must be at least 1".into());
        }
        if !CACHE_MB_RANGE.contains(&self.cache_mb) {
            return Err(format!(
                "cache_mb must be within {}..={} (MiB), not {}",
                CACHE_MB_RANGE.start(),
                CACHE_MB_RANGE.end(),
                self.cache_mb
            ));
        }
        Ok(())
    }

    /// This node's advertised addresses (its entry in `peers`).
    pub fn own_peer(&self) -> Option<&PeerConfig> {
        self.peers.iter().find(|p| p.node_id == self.node_id)
    }

    /// The openraft configuration derived from the timeouts and snapshot policy.
    pub fn openraft_config(&self) -> openraft::Config {
        openraft::Config {
            cluster_name: self.cluster.clone(),
            heartbeat_interval: self.raft.heartbeat_ms,
            election_timeout_min: self.raft.election_timeout_min_ms,
            election_timeout_max: self.raft.election_timeout_max_ms,
            install_snapshot_timeout: self.raft.snapshot_timeout_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot.logs_since_last),
            max_in_snapshot_log_to_keep: self.snapshot.logs_kept,
            snapshot_max_chunk_size: crate::limits::SNAPSHOT_CHUNK_BYTES,
            max_payload_entries: crate::limits::MAX_APPEND_ENTRIES,
            // Turned on by campaign::PromptCampaign at the first leader contact or after a
            // grace period: a restarted node must not campaign before the leader reaches it.
            enable_elect: false,
            ..Default::default()
        }
    }
}

fn looks_like_host_port(addr: &str) -> bool {
    match addr.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
node_id = 2
cluster = "c"
data_dir = "d"
raft_addr = "127.0.0.1:1"
admin_addr = "127.0.0.1:2"
http_addr = "127.0.0.1:3"
[[peers]]
node_id = 2
raft_addr = "127.0.0.1:1"
admin_addr = "127.0.0.1:2"
http_addr = "127.0.0.1:3"
"#;

    #[test]
    fn good_config_parses_with_defaults() {
        let c = NodeConfig::parse(GOOD).unwrap();
        c.validate().unwrap();
        assert_eq!(c.node_id, 2);
        assert_eq!(c.history_limit, 10_000);
        assert_eq!(c.cache_mb, 512);
        assert_eq!(c.raft.election_timeout_max_ms, 170);
        assert_eq!(
            c.own_peer().map(|p| p.admin_addr.as_str()),
            Some("127.0.0.1:2")
        );
        assert!(c.openraft_config().validate().is_ok());
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = format!("{GOOD}\n[raft]\nheartbeat = 5\n");
        let (loc, msg) = NodeConfig::parse(&text).unwrap_err();
        assert!(msg.contains("unknown field `heartbeat`"), "{msg}");
        assert!(loc.contains("line 15"), "{loc}");
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn missing_field_is_named() {
        let text = GOOD.replace("cluster = \"c\"\n", "");
        let (_, msg) = NodeConfig::parse(&text).unwrap_err();
        assert!(msg.contains("missing field `cluster`"), "{msg}");
    }

    #[test]
    fn node_absent_from_peers_is_refused() {
        let text = GOOD.replace("node_id = 2\ncluster", "node_id = 3\ncluster");
        let c = NodeConfig::parse(&text).unwrap();
        assert!(c.validate().unwrap_err().contains("node_id 3"));
    }

    #[test]
    fn a_cache_out_of_range_is_refused() {
        for (mb, ok) in [
            (0, false),
            (15, false),
            (16, true),
            (1 << 20, true),
            (i64::MAX as u64, false),
        ] {
            let text = format!("cache_mb = {mb}\n{GOOD}");
            let c = NodeConfig::parse(&text).unwrap();
            assert_eq!(c.validate().is_ok(), ok, "cache_mb = {mb}");
        }
    }

    #[test]
    fn inverted_election_timeouts_are_refused() {
        let text = format!(
            "{GOOD}\n[raft]\nelection_timeout_min_ms = 900\nelection_timeout_max_ms = 800\n"
        );
        let c = NodeConfig::parse(&text).unwrap();
        assert!(c.validate().unwrap_err().contains("election_timeout"));
    }

    #[test]
    fn admin_key_file_is_resolved_against_the_file_and_typos_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.toml");
        std::fs::write(
            &path,
            format!("{GOOD}\n[admin]\nkey_file = \"admin.key\"\n"),
        )
        .unwrap();
        let c = NodeConfig::load(&path).unwrap();
        assert_eq!(c.admin.key_file, Some(dir.path().join("admin.key")));
        let (_, msg) = NodeConfig::parse(&format!("{GOOD}\n[admin]\nkey = \"x\"\n")).unwrap_err();
        assert!(msg.contains("unknown field `key`"), "{msg}");
    }

    #[test]
    fn load_resolves_data_dir_against_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.toml");
        std::fs::write(&path, GOOD).unwrap();
        let c = NodeConfig::load(&path).unwrap();
        assert_eq!(c.data_dir, dir.path().join("d"));
        let err = NodeConfig::load(&dir.path().join("missing.toml")).unwrap_err();
        assert!(err.to_string().contains("missing.toml"));
    }
}
