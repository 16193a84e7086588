//! The rig's three-node cluster: configs, processes (one namespace each),
//! admin clients and a few status queries.

use super::netns::Netns;
use super::procs::{NodeLaunch, ProcError, Supervisor};
use crate::{admin_client, Admin};
use flagraft_proto::admin::v1 as pb;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::transport::Endpoint;

/// Each node listens on its own address (its namespace's), on these ports.
const RAFT_PORT: u16 = 7100;
const ADMIN_PORT: u16 = 7200;
const HTTP_PORT: u16 = 7300;
pub const PROJECT: &str = "default";
pub const SDK_KEY: &str = "chaos-server-key";
/// Election timeouts of the nodes (pauses are longer than the maximum).
pub const ELECTION_TIMEOUT_MAX_MS: u64 = 500;

pub struct ChaosCluster {
    pub ids: Vec<u64>,
    pub net: Netns,
    sup: Supervisor,
    dir: PathBuf,
    binary: PathBuf,
    admins: HashMap<u64, Admin>,
}

impl ChaosCluster {
    /// Writes every node's config under `dir`; starts nothing yet.
    pub fn create(dir: &Path, binary: &Path, net: Netns) -> std::io::Result<ChaosCluster> {
        let ids: Vec<u64> = (1..=3).collect();
        std::fs::create_dir_all(dir.join("logs"))?;
        let mut admins = HashMap::new();
        for &id in &ids {
            std::fs::create_dir_all(dir.join("data").join(format!("node{id}")))?;
            std::fs::write(
                dir.join(format!("node{id}.toml")),
                config(&net, &ids, id, dir),
            )?;
            let endpoint =
                Endpoint::from_shared(format!("http://{}:{ADMIN_PORT}", net.node_ip(id)))
                    .map_err(std::io::Error::other)?
                    .connect_timeout(Duration::from_millis(500))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(1))
                    .keep_alive_timeout(Duration::from_secs(1))
                    .keep_alive_while_idle(true);
            admins.insert(
                id,
                admin_client(endpoint.connect_lazy()).max_decoding_message_size(16 << 20),
            );
        }
        Ok(ChaosCluster {
            ids,
            sup: Supervisor::start(&dir.join("pids")),
            net,
            dir: dir.to_path_buf(),
            binary: binary.to_path_buf(),
            admins,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log_path(&self, id: u64) -> PathBuf {
        self.dir.join("logs").join(format!("node{id}.log"))
    }

    pub fn start(&self, id: u64) -> Result<u32, ProcError> {
        self.sup.spawn(NodeLaunch {
            id,
            binary: self.binary.clone(),
            config: self.dir.join(format!("node{id}.toml")),
            log: self.log_path(id),
            netns: Some(self.net.ns_path(id)),
        })
    }

    pub fn kill9(&self, id: u64) -> Result<(), ProcError> {
        self.sup.kill9(id)
    }

    pub fn pause(&self, id: u64) -> Result<(), ProcError> {
        self.sup.pause(id)
    }

    pub fn resume(&self, id: u64) -> Result<(), ProcError> {
        self.sup.resume(id)
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.sup.is_running(id)
    }

    pub fn stop_all(&self) {
        self.sup.stop_all();
    }

    pub fn admin(&self, id: u64) -> Option<Admin> {
        self.admins.get(&id).cloned()
    }

    /// The node's update stream endpoint, for SDK clients.
    pub fn http_endpoint(&self, id: u64) -> String {
        format!("{}:{HTTP_PORT}", self.net.node_ip(id))
    }

    pub async fn status(&self, id: u64, timeout: Duration) -> Result<pb::ClusterStatus, String> {
        let mut admin = self.admin(id).ok_or("no such node")?;
        let mut req = tonic::Request::new(pb::GetClusterStatusRequest {});
        req.set_timeout(timeout);
        match tokio::time::timeout(timeout, admin.get_cluster_status(req)).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(format!("{}: {}", s.code(), s.message())),
            Err(_) => Err("timed out".into()),
        }
    }

    /// Every node's status, asked concurrently.
    pub async fn statuses(&self, timeout: Duration) -> HashMap<u64, pb::ClusterStatus> {
        let asks = self
            .ids
            .iter()
            .map(|&id| async move { (id, self.status(id, timeout).await) });
        futures_util::future::join_all(asks)
            .await
            .into_iter()
            .filter_map(|(id, s)| s.ok().map(|s| (id, s)))
            .collect()
    }

    /// The node that says it leads, with the highest term among those that do.
    pub async fn leader(&self) -> Option<u64> {
        self.statuses(Duration::from_millis(500))
            .await
            .values()
            .filter(|s| s.role == "leader")
            .max_by_key(|s| s.term)
            .map(|s| s.node_id)
    }

    /// Waits (bounded) until every node answers and all agree on one leader
    /// in one term; returns it.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<u64, String> {
        let start = Instant::now();
        let mut last = String::from("not checked");
        while start.elapsed() < timeout {
            let all = self.statuses(Duration::from_millis(500)).await;
            match agreed_leader(&self.ids, &all) {
                Ok(leader) => return Ok(leader),
                Err(why) => last = why,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "cluster not healthy after {:?}: {last}",
            start.elapsed()
        ))
    }
}

fn agreed_leader(ids: &[u64], all: &HashMap<u64, pb::ClusterStatus>) -> Result<u64, String> {
    let missing: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|id| !all.contains_key(id))
        .collect();
    if !missing.is_empty() {
        return Err(format!("nodes {missing:?} do not answer"));
    }
    let leaders: Vec<&pb::ClusterStatus> = all.values().filter(|s| s.role == "leader").collect();
    let [leader] = leaders.as_slice() else {
        return Err(format!("{} nodes say they lead", leaders.len()));
    };
    for s in all.values() {
        if s.leader_id != Some(leader.node_id) || s.term != leader.term {
            return Err(format!(
                "node {} sees leader {:?} in term {}, node {} leads term {}",
                s.node_id, s.leader_id, s.term, leader.node_id, leader.term
            ));
        }
    }
    Ok(leader.node_id)
}

fn config(net: &Netns, ids: &[u64], id: u64, dir: &Path) -> String {
    let ip = net.node_ip(id);
    let mut text = format!(
        r#"# Written by the chaos rig.
node_id = {id}
cluster = "chaos"
data_dir = "{data}"
raft_addr = "{ip}:{RAFT_PORT}"
admin_addr = "{ip}:{ADMIN_PORT}"
http_addr = "{ip}:{HTTP_PORT}"
# The checker needs every version's record from 1.
history_limit = 10000000

[raft]
heartbeat_ms = 80
election_timeout_min_ms = 250
election_timeout_max_ms = {ELECTION_TIMEOUT_MAX_MS}
rpc_timeout_ms = 1000
snapshot_timeout_ms = 30000

# Small, so snapshots are built during every run and a node that fell behind
# by more than 50 entries catches up by installing one.
[snapshot]
logs_since_last = 200
logs_kept = 50

[stream]
# Short, so a subscriber notices a paused node within 3 s.
heartbeat_ms = 1000

[stream.keys]
"{SDK_KEY}" = {{ project = "{PROJECT}", kind = "server" }}
"#,
        data = dir.join("data").join(format!("node{id}")).display(),
    );
    for &peer in ids {
        let pip = net.node_ip(peer);
        text.push_str(&format!(
            "\n[[peers]]\nnode_id = {peer}\nraft_addr = \"{pip}:{RAFT_PORT}\"\nadmin_addr = \"{pip}:{ADMIN_PORT}\"\nhttp_addr = \"{pip}:{HTTP_PORT}\"\n"
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: u64, role: &str, leader: Option<u64>, term: u64) -> pb::ClusterStatus {
        pb::ClusterStatus {
            node_id: id,
            role: role.into(),
            leader_id: leader,
            term,
            ..Default::default()
        }
    }

    #[test]
    fn a_leader_counts_only_when_everyone_agrees() {
        let ids = [1, 2, 3];
        let mut all: HashMap<u64, pb::ClusterStatus> = [
            (1, status(1, "leader", Some(1), 4)),
            (2, status(2, "follower", Some(1), 4)),
            (3, status(3, "follower", Some(1), 4)),
        ]
        .into();
        assert_eq!(agreed_leader(&ids, &all), Ok(1));
        all.insert(3, status(3, "candidate", None, 5));
        assert!(agreed_leader(&ids, &all).is_err());
        all.remove(&3);
        assert!(agreed_leader(&ids, &all).is_err());
    }
}
