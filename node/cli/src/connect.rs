//! Talking to a cluster: endpoints, the admin key, retries, error messages.
//!
//! Finding the leader: before its calls, the CLI asks the first endpoint
//! that answers for the cluster status and puts the leader's advertised
//! admin address first. Reads then see every acknowledged write (a commit is
//! acknowledged once the leader applied it), and writes skip the forwarding
//! hop. Any node would do otherwise: followers forward writes to the leader.
//! A call that fails with UNAVAILABLE (node down, no leader yet, leadership
//! moving) is tried on the next endpoint, for a few rounds with a short
//! backoff. Writes carry a request id (random unless given), so a retried
//! commit or rollback is never applied twice.

use anyhow::{anyhow, Result};
use flagraft_proto::admin::v1 as pb;
use flagraft_proto::admin::v1::admin_client::AdminClient;
use std::future::Future;
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

/// The local cluster's admin addresses (cluster-config/local).
pub const DEFAULT_ENDPOINTS: &str = "127.0.0.1:7201,127.0.0.1:7202,127.0.0.1:7203";
/// Rounds over all endpoints before giving up on UNAVAILABLE.
const ROUNDS: u32 = 4;
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Connection options shared by every cluster command.
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Admin gRPC addresses of the nodes, comma-separated (any node works;
    /// writes are forwarded to the leader).
    #[arg(long, global = true, env = "FLAGRAFT_ENDPOINTS", default_value = DEFAULT_ENDPOINTS, value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Admin key (sent as `authorization: Bearer <key>`).
    #[arg(
        long,
        global = true,
        env = "FLAGRAFT_ADMIN_KEY",
        hide_env_values = true
    )]
    pub admin_key: Option<String>,
    /// Project to work on.
    #[arg(
        long,
        short,
        global = true,
        env = "FLAGRAFT_PROJECT",
        default_value = "default"
    )]
    pub project: String,
    /// Print JSON (one document) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Bound on each call, in seconds.
    #[arg(long, global = true, default_value_t = 10)]
    pub timeout: u64,
}

#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

pub type Admin = AdminClient<InterceptedService<Channel, Bearer>>;

/// Clients for every endpoint, tried in order.
pub struct Cluster {
    nodes: Vec<(String, Admin)>,
    timeout: Duration,
    key: Option<MetadataValue<Ascii>>,
}

impl Cluster {
    /// Clients for `args.endpoints` (lazily connected, inside `rt`).
    pub fn connect(args: &ClusterArgs, rt: &tokio::runtime::Runtime) -> Result<Cluster> {
        let _inside = rt.enter();
        let key = match &args.admin_key {
            Some(k) if !k.trim().is_empty() => Some(
                format!("Bearer {}", k.trim())
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| {
                        anyhow!("the admin key holds characters not allowed in a header")
                    })?,
            ),
            _ => None,
        };
        let timeout = Duration::from_secs(args.timeout.max(1));
        let mut nodes = Vec::new();
        for raw in &args.endpoints {
            let addr = raw.trim();
            if addr.is_empty() {
                continue;
            }
            let url = if addr.contains("://") {
                addr.to_string()
            } else {
                format!("http://{addr}")
            };
            let channel = Endpoint::from_shared(url)
                .map_err(|e| anyhow!("bad endpoint '{addr}': {e}"))?
                .connect_timeout(Duration::from_millis(1000))
                .timeout(timeout)
                .connect_lazy();
            let client = AdminClient::with_interceptor(channel, Bearer(key.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            nodes.push((addr.to_string(), client));
        }
        if nodes.is_empty() {
            return Err(anyhow!("no endpoints given (--endpoints host:port,...)"));
        }
        Ok(Cluster {
            nodes,
            timeout,
            key,
        })
    }

    /// Puts the leader first (see the module docs); leaves the order as it
    /// is when no node tells.
    async fn leader_first(&mut self, key: Option<MetadataValue<Ascii>>) {
        let probe = Duration::from_secs(1).min(self.timeout);
        let mut leader = None;
        for (_, client) in &self.nodes {
            let mut client = client.clone();
            let ask = client.get_cluster_status(pb::GetClusterStatusRequest {});
            if let Ok(Ok(s)) = tokio::time::timeout(probe, ask).await {
                let s = s.into_inner();
                leader = s
                    .leader_id
                    .and_then(|id| s.nodes.into_iter().find(|n| n.node_id == id))
                    .map(|n| n.admin_addr);
                break;
            }
        }
        let Some(addr) = leader else {
            return;
        };
        if let Some(i) = self.nodes.iter().position(|(a, _)| *a == addr) {
            let entry = self.nodes.remove(i);
            self.nodes.insert(0, entry);
        } else if let Ok(endpoint) = Endpoint::from_shared(format!("http://{addr}")) {
            let channel = endpoint
                .connect_timeout(Duration::from_millis(1000))
                .timeout(self.timeout)
                .connect_lazy();
            let client = AdminClient::with_interceptor(channel, Bearer(key))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            self.nodes.insert(0, (addr, client));
        }
    }

    /// Runs `call` against the first endpoint that answers (see the module
    /// docs); any other error is returned at once as a one-line message.
    pub async fn call<T, F, Fut>(&self, mut call: F) -> Result<T>
    where
        F: FnMut(Admin) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut last: Option<(String, Status)> = None;
        for round in 0..ROUNDS {
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(round))).await;
            }
            for (addr, client) in &self.nodes {
                match tokio::time::timeout(self.timeout, call(client.clone())).await {
                    Ok(Ok(resp)) => return Ok(resp.into_inner()),
                    Ok(Err(s)) if s.code() == Code::Unavailable => last = Some((addr.clone(), s)),
                    Ok(Err(s)) => return Err(anyhow!(describe(&s))),
                    Err(_) => {
                        last = Some((
                            addr.clone(),
                            Status::deadline_exceeded(format!(
                                "no answer within {:?}",
                                self.timeout
                            )),
                        ))
                    }
                }
            }
        }
        let (addr, s) = last.unwrap_or_else(|| (String::new(), Status::unavailable("no endpoint")));
        Err(anyhow!(
            "cluster unavailable: {} (last tried {addr}; endpoints: {})",
            one_line(s.message()),
            self.nodes
                .iter()
                .map(|(a, _)| a.as_str())
                .collect::<Vec<_>>()
                .join(",")
        ))
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A gRPC status as one line for people.
pub fn describe(s: &Status) -> String {
    let msg = one_line(s.message());
    match s.code() {
        Code::Unauthenticated => "not authorized: the admin key is missing, unknown or revoked \
             (give it with --admin-key or FLAGRAFT_ADMIN_KEY)"
            .to_string(),
        Code::InvalidArgument => format!("invalid request: {msg}"),
        Code::NotFound => format!("not found: {msg}"),
        Code::FailedPrecondition if msg.starts_with("conflict:") => msg,
        Code::FailedPrecondition => format!("refused: {msg}"),
        Code::AlreadyExists => format!("already exists: {msg}"),
        Code::Unimplemented => format!("not supported: {msg}"),
        Code::DeadlineExceeded => format!("timed out: {msg}"),
        Code::Aborted => format!("aborted: {msg}"),
        Code::ResourceExhausted => format!("too large: {msg}"),
        Code::Unavailable => format!("cluster unavailable: {msg}"),
        code => format!("{code:?}: {msg}"),
    }
}

/// A random request id, so the CLI's own retries are idempotent.
pub fn random_request_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("cli-{}", hex::encode(b))
}

/// A runtime and the cluster's clients, for one command.
pub fn session(args: &ClusterArgs) -> Result<(tokio::runtime::Runtime, Cluster)> {
    let rt = runtime()?;
    let mut cluster = Cluster::connect(args, &rt)?;
    let key = cluster.key.clone();
    rt.block_on(cluster.leader_first(key));
    Ok((rt, cluster))
}

/// A tokio runtime for one command.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow!("cannot start the async runtime: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_become_one_clear_line() {
        let cases = [
            (Status::unauthenticated("x"), "not authorized:"),
            (
                Status::invalid_argument("invalid ruleset:\n gate"),
                "invalid request: invalid ruleset: gate",
            ),
            (
                Status::not_found("no project 'p'"),
                "not found: no project 'p'",
            ),
            (
                Status::failed_precondition("conflict: project 'p' is at version 3, expected 2"),
                "conflict: project 'p' is at version 3, expected 2",
            ),
            (
                Status::failed_precondition("delete of gate 'x'"),
                "refused: delete of gate 'x'",
            ),
            (
                Status::already_exists("project 'p' already exists"),
                "already exists:",
            ),
            (Status::unimplemented("nope"), "not supported: nope"),
        ];
        for (status, want) in cases {
            let line = describe(&status);
            assert!(line.starts_with(want), "{line}");
            assert!(!line.contains('\n'));
        }
    }

    #[test]
    fn request_ids_are_random() {
        let a = random_request_id();
        assert!(a.starts_with("cli-") && a.len() == 28);
        assert_ne!(a, random_request_id());
    }
}
