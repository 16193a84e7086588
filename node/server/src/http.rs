//! The HTTP port: `GET /healthz`, `GET /readyz`, `GET /metrics`.
//!
//! One port serves all HTTP (the client WebSocket will be routed at
//! `/v1/stream` on this same port).

use crate::limits::READY_MAX_APPLY_LAG;
use crate::metrics::{self, Scrape};
use crate::state::{role_name, Shared};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use openraft::ServerState;

pub fn router(node: Shared) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(node)
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// The highest log index this node knows is committed.
async fn commit_index(node: &Shared) -> Option<u64> {
    node.raft
        .with_raft_state(|st| st.committed.map(|c| c.index))
        .await
        .ok()
        .flatten()
}

/// Ready: a leader is known, this node is a leader/follower/learner, and it
/// has applied to within `READY_MAX_APPLY_LAG` entries of the commit index the
/// leader last told it.
async fn readyz(State(node): State<Shared>) -> impl IntoResponse {
    let m = node.raft.metrics().borrow().clone();
    let unready = |why: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
    };
    let Some(leader) = m.current_leader else {
        return unready("no known leader".into());
    };
    if matches!(m.state, ServerState::Candidate | ServerState::Shutdown) {
        return unready(format!("node is {}", role_name(m.state)));
    }
    let applied = m.last_applied.map_or(0, |l| l.index);
    let committed = commit_index(&node).await.unwrap_or(0);
    let lag = committed.saturating_sub(applied);
    if lag > READY_MAX_APPLY_LAG {
        return unready(format!(
            "applied index {applied} trails commit index {committed}"
        ));
    }
    (
        StatusCode::OK,
        format!(
            "ready: {} node {}, leader {leader}, applied {applied}\n",
            role_name(m.state),
            node.id
        ),
    )
}

async fn metrics_text(State(node): State<Shared>) -> impl IntoResponse {
    let m = node.raft.metrics().borrow().clone();
    let mut projects: Vec<(String, u64, usize)> = node
        .sm
        .projects()
        .into_iter()
        .map(|h| (h.name, h.version, h.entity_count))
        .collect();
    projects.sort();
    let scrape = Scrape {
        node_id: node.id,
        role: role_name(m.state),
        term: m.current_term,
        leader_id: m.current_leader,
        last_log_index: m.last_log_index.unwrap_or(0),
        commit_index: commit_index(&node).await.unwrap_or(0),
        applied_index: m.last_applied.map_or(0, |l| l.index),
        snapshot_index: m.snapshot.map_or(0, |l| l.index),
        purged_index: m.purged.map_or(0, |l| l.index),
        projects,
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(&scrape, &node.metrics),
    )
}
