//! Starting a node: listeners, store, Raft, services; and stopping it cleanly.

use crate::admin::AdminService;
use crate::campaign::PromptCampaign;
use crate::config::NodeConfig;
use crate::forward::Forwarder;
use crate::limits::{
    ADMIN_MAX_MESSAGE_BYTES, ADMIN_MAX_PENDING_RESETS, RAFT_MAX_MESSAGE_BYTES,
    RAFT_MAX_PENDING_RESETS, SHUTDOWN_DRAIN,
};
use crate::metrics::NodeMetrics;
use crate::raft_network::Network;
use crate::raft_service::RaftService;
use crate::state::{NodeState, Shared};
use crate::{auth, bootstrap, http};
use anyhow::{anyhow, Context};
use axum::serve::ListenerExt;
use flagraft_proto::admin::v1::admin_server::AdminServer;
use flagraft_proto::raft::v1::raft_server::RaftServer;
use flagraft_store::{Identity, Raft, StoreConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

/// Accept queue length asked of the kernel (which caps it at
/// net.core.somaxconn). std's `TcpListener::bind` asks for 128, which
/// overflows when thousands of stream clients reconnect at once after a node
/// is lost: the dropped SYNs are retried only after a 1 s timeout.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds now, so a port in use stops the node before anything else happens.
fn listen(what: &str, addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(|e| anyhow!("{what} {addr}: {e}"))?;
    // As std's bind does: a restarted node can rebind while old connections linger.
    socket
        .set_reuseaddr(true)
        .map_err(|e| anyhow!("{what} {addr}: {e}"))?;
    socket
        .bind(addr)
        .and_then(|()| socket.listen(LISTEN_BACKLOG))
        .map_err(|e| anyhow!("cannot listen on {what} {addr}: {e}"))
}

/// A running node; `stop` shuts it down gracefully.
pub struct RunningNode {
    pub state: Shared,
    stream: Arc<crate::stream::StreamHub<crate::stream::StoreSource>>,
    stop_admin: watch::Sender<bool>,
    stop_raft: watch::Sender<bool>,
    admin_task: JoinHandle<Result<(), tonic::transport::Error>>,
    http_task: JoinHandle<std::io::Result<()>>,
    raft_task: JoinHandle<Result<(), tonic::transport::Error>>,
}

async fn signalled(mut rx: watch::Receiver<bool>) {
    // A dropped sender also means stop.
    let _ = rx.wait_for(|stop| *stop).await;
}

pub async fn start(config: NodeConfig) -> anyhow::Result<RunningNode> {
    let admin_hashes = auth::node_bootstrap_hashes(&config.admin).map_err(|e| anyhow!("{e}"))?;
    let raft_listener = listen("raft_addr", config.raft_addr)?;
    let admin_listener = listen("admin_addr", config.admin_addr)?;
    let http_listener = listen("http_addr", config.http_addr)?;

    let identity = Identity {
        node_id: config.node_id,
        cluster: config.cluster.clone(),
    };
    let store_config = StoreConfig {
        history_limit: config.history_limit,
        cache_capacity_bytes: config.cache_mb << 20,
        ..Default::default()
    };
    let (log_store, sm) = flagraft_store::open(&config.data_dir, &identity, store_config)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let raft_config = config
        .openraft_config()
        .validate()
        .map_err(|e| anyhow!("raft settings: {e}"))?;
    let raft = Raft::new(
        config.node_id,
        Arc::new(raft_config),
        Network::default(),
        log_store,
        sm.clone(),
    )
    .await
    .map_err(|e| anyhow!("cannot start raft: {e}"))?;
    // Raft::new returns before its core has published the state it loaded
    // (until then the metrics say term 0, no membership): a status answered in
    // that window would claim an empty database. A request to the core is
    // served only after that first publication.
    raft.with_raft_state(|_| ())
        .await
        .map_err(|e| anyhow!("raft did not start: {e}"))?;

    let started_at = {
        let m = raft.metrics().borrow().clone();
        crate::state::LogEnd {
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
        }
    };
    let state: Shared = Arc::new(NodeState {
        id: config.node_id,
        cluster: config.cluster.clone(),
        raft: raft.clone(),
        started_at,
        sm,
        forwarder: Forwarder::new(Duration::from_millis(config.raft.rpc_timeout_ms)),
        metrics: NodeMetrics::default(),
    });

    let (stop_raft, stop_raft_rx) = watch::channel(false);
    let (stop_admin, stop_admin_rx) = watch::channel(false);

    let campaign = PromptCampaign::start(
        raft.clone(),
        Duration::from_millis(config.raft.election_timeout_max_ms),
        Duration::from_millis(config.raft.election_timeout_min_ms / 2),
    );
    let raft_svc = RaftServer::new(RaftService::new(raft, campaign))
        .max_decoding_message_size(RAFT_MAX_MESSAGE_BYTES)
        .max_encoding_message_size(RAFT_MAX_MESSAGE_BYTES);
    let raft_task = tokio::spawn(
        Server::builder()
            .tcp_nodelay(true)
            // Raft RPCs time out in tens of milliseconds, and every timeout resets a stream.
            // After a pause or a partition heals, a peer resets many before they are
            // accepted; h2's default (20) then tears the connection down with GOAWAY again
            // and again, and commits stalled for seconds in chaos runs.
            .http2_max_pending_accept_reset_streams(Some(RAFT_MAX_PENDING_RESETS))
            .add_service(raft_svc)
            .serve_with_incoming_shutdown(
                TcpIncoming::from(raft_listener).with_nodelay(Some(true)),
                signalled(stop_raft_rx),
            ),
    );

    let admin_auth = Arc::new(auth::AdminAuth::new(admin_hashes, state.sm.clone()));
    if !admin_auth.has_bootstrap_key() && state.sm.api_keys().is_empty() {
        eprintln!(
            "flagraft-node: warning: no admin key: set [admin] key_sha256 or key_file, or {}",
            auth::ADMIN_KEY_ENV
        );
    }
    let admin_svc = InterceptedService::new(
        AdminServer::new(AdminService::new(state.clone()))
            .max_decoding_message_size(ADMIN_MAX_MESSAGE_BYTES)
            .max_encoding_message_size(ADMIN_MAX_MESSAGE_BYTES),
        auth::AdminInterceptor(admin_auth),
    );
    let admin_task = tokio::spawn(
        Server::builder()
            .tcp_nodelay(true)
            // Clients give up on calls too (deadlines); see RAFT_MAX_PENDING_RESETS.
            .http2_max_pending_accept_reset_streams(Some(ADMIN_MAX_PENDING_RESETS))
            .add_service(admin_svc)
            .serve_with_incoming_shutdown(
                TcpIncoming::from(admin_listener).with_nodelay(Some(true)),
                signalled(stop_admin_rx.clone()),
            ),
    );

    // Replicated server/client keys, then the optional static ones of the config.
    let keys: Arc<dyn crate::stream::KeyResolver> = Arc::new(auth::ReplicatedKeys::new(
        state.sm.clone(),
        crate::stream::StaticKeys::new(config.stream.keys.clone()),
    ));
    let stream =
        crate::stream::start_for_store(&config.stream, state.sm.clone(), config.node_id, keys)
            .map_err(|e| anyhow!("{e}"))?;
    tokio::spawn(auth::recheck_on_key_changes(
        state.sm.subscribe(),
        stream.clone(),
    ));
    // Client-side values share the stream's keys and stop with it (goodbye 4005).
    let initialize = crate::initialize::InitializeService::new(
        crate::initialize::StoreRulesets::new(state.sm.clone(), config.node_id),
        stream.keys.clone(),
        config.initialize.clone(),
        stream.shutdown_signal(),
    )
    .map_err(|e| anyhow!("{e}"))?;
    let http_router = http::router(state.clone())
        .merge(crate::stream::router(stream.clone()))
        .merge(crate::initialize::router(initialize));
    let http_stop = signalled(stop_admin_rx.clone());
    let http_task = tokio::spawn(async move {
        // Nagle off: a pushed delta must leave at once, not wait for the
        // previous segment's ACK.
        let http_listener = http_listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(http_listener, http_router)
            .with_graceful_shutdown(http_stop)
            .await
    });

    tokio::spawn(bootstrap::run(
        state.clone(),
        config.peers.clone(),
        stop_admin_rx,
    ));

    Ok(RunningNode {
        state,
        stream,
        stop_admin,
        stop_raft,
        admin_task,
        http_task,
        raft_task,
    })
}

impl RunningNode {
    /// Resolves when a server task ends on its own (an error: the node must stop).
    pub async fn failed(&mut self) -> anyhow::Error {
        tokio::select! {
            r = &mut self.admin_task => anyhow!("admin server stopped: {r:?}"),
            r = &mut self.http_task => anyhow!("http server stopped: {r:?}"),
            r = &mut self.raft_task => anyhow!("raft server stopped: {r:?}"),
        }
    }

    /// Graceful stop: refuse new admin/HTTP requests and let in-flight ones
    /// finish (bounded by SHUTDOWN_DRAIN), then stop the Raft port and Raft
    /// itself, then flush the store.
    pub async fn stop(self) -> anyhow::Result<()> {
        let RunningNode {
            state,
            stream,
            stop_admin,
            stop_raft,
            admin_task,
            http_task,
            raft_task,
        } = self;
        // Stream subscribers get a goodbye (4005) and move to another node.
        stream.shutdown();
        let _ = stream.drained(SHUTDOWN_DRAIN).await;
        let _ = stop_admin.send(true);
        let drained = tokio::time::timeout(SHUTDOWN_DRAIN, async {
            let _ = admin_task.await;
            let _ = http_task.await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!("in-flight requests did not finish within {SHUTDOWN_DRAIN:?}");
        }
        let _ = stop_raft.send(true);
        let _ = tokio::time::timeout(SHUTDOWN_DRAIN, raft_task).await;
        state
            .raft
            .shutdown()
            .await
            .context("raft did not shut down cleanly")?;
        // Acknowledged writes were flushed before they were acknowledged; this
        // also makes the last applies durable so a restart re-applies nothing.
        state
            .sm
            .flush()
            .await
            .map_err(|e| anyhow!("flushing the store: {e}"))?;
        tracing::info!("node stopped");
        Ok(())
    }
}
