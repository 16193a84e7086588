//! A cluster of real `flagraft-node` processes in a temp dir.

use crate::admin_key::{admin_client, Admin, ADMIN_KEY_ENV, TEST_ADMIN_KEY};
use crate::wait::{wait_for, WaitError};
use flagraft_proto::admin::v1 as pb;
use std::collections::HashMap;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Channel, Endpoint};

/// Builds (once per test process) and returns the `flagraft-node` binary.
pub fn node_binary() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("FLAGRAFT_NODE_BIN") {
            return Ok(PathBuf::from(p));
        }
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        // <target>/<profile>/deps/<test-binary>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .ok_or("cannot locate the target dir from the test binary")?
            .to_path_buf();
        let target_dir = profile_dir.parent().ok_or("cannot locate the target dir")?;
        let cargo = std::env::var("CARGO")
            .ok()
            .or_else(|| option_env!("CARGO").map(String::from))
            .unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "flagraft-node",
            "--bin",
            "flagraft-node",
        ])
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!("cargo build -p flagraft-node failed: {status}"));
        }
        let bin = profile_dir.join("flagraft-node");
        if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("{} missing after build", bin.display()))
        }
    });
    match found {
        Ok(p) => p.clone(),
        Err(e) => panic!("flagraft-node binary: {e}"),
    }
}

#[derive(Clone, Copy, Debug)]
pub struct NodePorts {
    pub raft: u16,
    pub admin: u16,
    pub http: u16,
}

#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub nodes: u64,
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub snapshot_logs_since_last: u64,
    pub snapshot_logs_kept: u64,
    pub history_limit: u64,
    /// The initial voters are nodes 1..=voters (None: all). Later nodes list
    /// them plus themselves as peers, so they start empty and wait to be
    /// added as learners.
    pub voters: Option<u64>,
}

impl Default for ClusterOptions {
    /// Release builds (the benches) get the LAN timeouts of
    /// cluster-config/local. Debug builds (the tests) get 100/150/250 ms:
    /// their nodes are many times slower, and openraft bounds each
    /// append-entries call by the heartbeat interval, so the shipped 50 ms
    /// would make slow test runs flap between leaders.
    fn default() -> Self {
        let (heartbeat_ms, election_timeout_min_ms, election_timeout_max_ms) =
            if cfg!(debug_assertions) {
                (100, 150, 250)
            } else {
                (50, 120, 170)
            };
        ClusterOptions {
            nodes: 3,
            heartbeat_ms,
            election_timeout_min_ms,
            election_timeout_max_ms,
            snapshot_logs_since_last: 5000,
            snapshot_logs_kept: 1000,
            history_limit: 10_000,
            voters: None,
        }
    }
}

/// Where nodes listen: below Linux's ephemeral range (32768+), so that no
/// outgoing connection (a node dialling a peer, a test's client) can take a
/// port between the moment it is picked here and the moment its node binds it.
/// That race made a node of a test cluster fail to start now and then.
const NODE_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// Distinct loopback ports from [`NODE_PORTS`], each free when picked (all
/// bound at once, then released). Random, so concurrent clusters rarely meet.
fn free_ports(n: usize) -> Vec<u16> {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let mut listeners: Vec<TcpListener> = Vec::with_capacity(n);
    for _ in 0..n.saturating_mul(100).max(100) {
        if listeners.len() == n {
            break;
        }
        let port = rng.gen_range(NODE_PORTS);
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            listeners.push(l);
        }
    }
    assert_eq!(listeners.len(), n, "no {n} free ports in {NODE_PORTS:?}");
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

pub struct Cluster {
    dir: tempfile::TempDir,
    pub options: ClusterOptions,
    ports: Vec<NodePorts>,
    children: Mutex<Vec<Option<Child>>>,
    channels: Mutex<HashMap<u64, Channel>>,
}

impl Cluster {
    /// Writes the configs and starts every node.
    pub fn start(options: ClusterOptions) -> Cluster {
        let cluster = Cluster::configure(options);
        for id in cluster.ids() {
            cluster.spawn(id);
        }
        cluster
    }

    /// Writes the configs without starting anything.
    pub fn configure(options: ClusterOptions) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("flagraft-cluster-")
            .tempdir()
            .expect("temp dir");
        let n = options.nodes as usize;
        let p = free_ports(3 * n);
        let ports: Vec<NodePorts> = (0..n)
            .map(|i| NodePorts {
                raft: p[3 * i],
                admin: p[3 * i + 1],
                http: p[3 * i + 2],
            })
            .collect();
        let cluster = Cluster {
            dir,
            options,
            ports,
            children: Mutex::new((0..n).map(|_| None).collect()),
            channels: Mutex::new(HashMap::new()),
        };
        for id in cluster.ids() {
            std::fs::write(cluster.config_path(id), cluster.config_text(id, "test"))
                .expect("write config");
        }
        cluster
    }

    pub fn ids(&self) -> Vec<u64> {
        (1..=self.options.nodes).collect()
    }

    pub fn ports(&self, id: u64) -> NodePorts {
        self.ports[(id - 1) as usize]
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node{id}.toml"))
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("data{id}"))
    }

    pub fn log_path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node{id}.log"))
    }

    /// The TOML config of node `id` in cluster `cluster`.
    pub fn config_text(&self, id: u64, cluster: &str) -> String {
        let o = &self.options;
        let me = self.ports(id);
        let mut text = format!(
            "node_id = {id}\ncluster = \"{cluster}\"\ndata_dir = \"data{id}\"\n\
             raft_addr = \"127.0.0.1:{}\"\nadmin_addr = \"127.0.0.1:{}\"\nhttp_addr = \"127.0.0.1:{}\"\n\
             history_limit = {}\n\n[raft]\nheartbeat_ms = {}\nelection_timeout_min_ms = {}\n\
             election_timeout_max_ms = {}\n\n[snapshot]\nlogs_since_last = {}\nlogs_kept = {}\n",
            me.raft,
            me.admin,
            me.http,
            o.history_limit,
            o.heartbeat_ms,
            o.election_timeout_min_ms,
            o.election_timeout_max_ms,
            o.snapshot_logs_since_last,
            o.snapshot_logs_kept,
        );
        let voters = self.options.voters.unwrap_or(self.options.nodes);
        let peers = (1..=voters).chain((id > voters).then_some(id));
        for peer in peers {
            let p = self.ports(peer);
            text.push_str(&format!(
                "\n[[peers]]\nnode_id = {peer}\nraft_addr = \"127.0.0.1:{}\"\n\
                 admin_addr = \"127.0.0.1:{}\"\nhttp_addr = \"127.0.0.1:{}\"\n",
                p.raft, p.admin, p.http
            ));
        }
        text
    }

    /// Starts node `id` (again), appending to its log file.
    fn children(&self) -> std::sync::MutexGuard<'_, Vec<Option<Child>>> {
        self.children.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn spawn(&self, id: u64) {
        assert!(!self.is_running(id), "node {id} is already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .expect("open node log");
        let log_err = log.try_clone().expect("clone log handle");
        let child = Command::new(node_binary())
            .arg("--config")
            .arg(self.config_path(id))
            .env(
                "RUST_LOG",
                std::env::var("FLAGRAFT_NODE_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
            )
            .env(ADMIN_KEY_ENV, TEST_ADMIN_KEY)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .expect("spawn flagraft-node");
        self.children()[(id - 1) as usize] = Some(child);
    }

    pub fn pid(&self, id: u64) -> Option<u32> {
        self.children()[(id - 1) as usize].as_ref().map(Child::id)
    }

    pub fn is_running(&self, id: u64) -> bool {
        match &mut self.children()[(id - 1) as usize] {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// `kill -9` by PID, then reaps the process.
    pub fn kill9(&self, id: u64) {
        let child = self.children()[(id - 1) as usize].take();
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP (`stop`) or SIGCONT by PID: the node freezes as if its machine paused. Dropping
    /// the cluster kills it either way (SIGKILL ends a stopped process too).
    pub fn freeze(&self, id: u64, stop: bool) {
        if let Some(pid) = self.pid(id).and_then(|p| i32::try_from(p).ok()) {
            let sig = if stop { libc::SIGSTOP } else { libc::SIGCONT };
            // SAFETY: kill(2) with a PID this harness spawned and still holds (not yet reaped).
            unsafe { libc::kill(pid, sig) };
        }
    }

    /// SIGTERM by PID and wait (bounded) for the exit status.
    pub fn sigterm(&self, id: u64, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.children()[(id - 1) as usize].take()?;
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) on a child we spawned and have not reaped.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let status = wait_exit(&mut child, timeout);
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        status
    }

    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }

    /// The (cached, lazily-connected) channel to node `id`'s admin port.
    pub fn admin_channel(&self, id: u64) -> Channel {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let channel = channels
            .entry(id)
            .or_insert_with(|| {
                Endpoint::from_shared(format!("http://127.0.0.1:{}", self.ports(id).admin))
                    .expect("endpoint")
                    .connect_timeout(Duration::from_millis(500))
                    .timeout(Duration::from_secs(10))
                    .connect_lazy()
            })
            .clone();
        channel
    }

    /// An Admin client to node `id`, authenticated with the test admin key.
    pub fn admin(&self, id: u64) -> Admin {
        admin_client(self.admin_channel(id))
    }

    pub async fn status(&self, id: u64) -> Result<pb::ClusterStatus, String> {
        let mut req = tonic::Request::new(pb::GetClusterStatusRequest {});
        req.set_timeout(Duration::from_secs(1));
        // Bounded here too: a node still starting accepts connections (its
        // listeners are bound first) but answers only once it is up.
        let mut admin = self.admin(id);
        match tokio::time::timeout(Duration::from_secs(1), admin.get_cluster_status(req)).await {
            Ok(r) => r
                .map(tonic::Response::into_inner)
                .map_err(|s| format!("node {id}: {}: {}", s.code(), s.message())),
            Err(_) => Err(format!("node {id}: no answer within 1s")),
        }
    }

    /// Waits until every node of `among` names the same leader, which is in
    /// `among` and itself reports the leader role.
    pub async fn wait_for_leader(
        &self,
        among: &[u64],
        timeout: Duration,
    ) -> Result<u64, WaitError> {
        wait_for(
            "an agreed leader",
            timeout,
            Duration::from_millis(20),
            || async {
                let mut leader = None;
                for &id in among {
                    let s = self.status(id).await?;
                    let l = s.leader_id.ok_or(format!("node {id} knows no leader"))?;
                    if *leader.get_or_insert(l) != l {
                        return Err(format!("nodes disagree on the leader ({leader:?} vs {l})"));
                    }
                }
                let l = leader.ok_or("no nodes given")?;
                if !among.contains(&l) {
                    return Err(format!("leader {l} is not among {among:?}"));
                }
                match self.status(l).await?.role.as_str() {
                    "leader" => Ok(l),
                    role => Err(format!("node {l} is {role}")),
                }
            },
        )
        .await
    }

    /// A plain HTTP/1.1 GET on node `id`'s HTTP port: (status, body).
    pub async fn http_get(&self, id: u64, path: &str) -> Result<(u16, String), String> {
        let addr = format!("127.0.0.1:{}", self.ports(id).http);
        let mut s = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        s.take(4 << 20)
            .read_to_end(&mut raw)
            .await
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP header end")?;
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or("bad status line")?;
        Ok((code, body.to_string()))
    }

    pub async fn wait_ready(&self, id: u64, timeout: Duration) -> Result<String, WaitError> {
        wait_for(
            &format!("node {id} /readyz"),
            timeout,
            Duration::from_millis(20),
            || async {
                match self.http_get(id, "/readyz").await? {
                    (200, body) => Ok(body),
                    (code, body) => Err(format!("{code} {body}")),
                }
            },
        )
        .await
    }

    /// Commits `req` through any running node (starting with `first`),
    /// retrying with the same request while the cluster is unavailable, until
    /// `timeout`. Other errors are returned at once.
    pub async fn commit_retry(
        &self,
        live: &[u64],
        first: usize,
        req: pb::CommitRequest,
        timeout: Duration,
    ) -> Result<pb::CommitResponse, tonic::Status> {
        let start = Instant::now();
        let mut attempt = first;
        let mut last = tonic::Status::unavailable("no attempt made");
        while start.elapsed() < timeout {
            let id = live[attempt % live.len()];
            attempt += 1;
            let mut r = tonic::Request::new(req.clone());
            r.set_timeout(Duration::from_secs(5));
            match self.admin(id).commit(r).await {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(s) if is_retryable(&s) => last = s,
                Err(s) => return Err(s),
            }
            // Back off a little between attempts (bounded by `timeout`).
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(last)
    }
}

/// Failures a client retries (with the same request id).
pub fn is_retryable(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::Internal
    )
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => return None,
        }
    }
    None
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children().iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `flagraft-node --config <config>` expecting it to exit by itself
/// within `timeout`: (exit status, stderr). Kills it and returns None if it
/// is still running.
pub fn run_node_once(config: &Path, timeout: Duration) -> Option<(ExitStatus, String)> {
    let mut child = Command::new(node_binary())
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flagraft-node");
    let status = wait_exit(&mut child, timeout);
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    Some((status, stderr))
}
