//! Pre-evaluated values for client-side SDKs (browsers, mobile apps), which
//! must never see rules:
//!
//! * `POST /v1/initialize` — the body is a Statsig user (or Statsig's client
//!   SDK envelope `{"user": {...}, "hash": "djb2"}`); the answer is the
//!   client initialize response for that user (`flagraft_client::gcir`).
//!   Authenticated with a **client key**, sent as `Authorization: Bearer
//!   <key>` or `statsig-api-key: <key>` (what Statsig's client SDKs send).
//!   See [`handler`] for every status code.
//! * `GET /v1/stream/client` — a WebSocket (subprotocol
//!   `flagraft-client.v1`) on which a client key follows one user: the node
//!   pushes the full re-evaluated response whenever a new version changes
//!   that user's values. See [`live`] and docs/protocol.md §10.
//!
//! Wiring: [`InitializeService::new`] over a [`RulesetSource`] (the node's
//! state machine: [`StoreRulesets`]) and the stream's key resolver; merge
//! [`router`] into the node's HTTP router.

mod config;
mod error;
pub mod handler;
pub mod live;
mod rate;
mod rulesets;

#[cfg(test)]
mod tests;

pub use config::{InitializeConfig, InitializeConfigError};
pub use error::ApiError;
pub use rate::RateLimiter;
pub use rulesets::{RulesetCache, RulesetHead, RulesetSource, StoreRulesets};

use crate::stream::KeyResolver;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use tokio::sync::watch;

/// Path of the client initialize endpoint.
pub const INITIALIZE_PATH: &str = "/v1/initialize";
/// Path of the client-side value stream.
pub const CLIENT_STREAM_PATH: &str = "/v1/stream/client";
/// `Sec-WebSocket-Protocol` of the client-side value stream.
pub const CLIENT_SUBPROTOCOL: &str = "flagraft-client.v1";

/// Shared state of both endpoints.
pub struct InitializeService<S> {
    pub(crate) source: Arc<S>,
    pub(crate) keys: Arc<dyn KeyResolver>,
    pub(crate) config: InitializeConfig,
    pub(crate) cache: RulesetCache,
    pub(crate) limiter: RateLimiter,
    /// Open client-side stream connections.
    pub(crate) live_connections: watch::Sender<usize>,
    /// True when the node stops: live connections say goodbye (4005).
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl<S: RulesetSource> InitializeService<S> {
    pub fn new(
        source: S,
        keys: Arc<dyn KeyResolver>,
        config: InitializeConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<Self>, InitializeConfigError> {
        config.validate()?;
        Ok(Arc::new(InitializeService {
            source: Arc::new(source),
            keys,
            limiter: RateLimiter::new(config.rate_per_key_per_sec, config.rate_burst),
            config,
            cache: RulesetCache::default(),
            live_connections: watch::channel(0).0,
            shutdown,
        }))
    }

    /// Open client-side stream connections.
    pub fn live_connection_count(&self) -> usize {
        *self.live_connections.borrow()
    }
}

/// Both endpoints, ready to be merged into the node's HTTP router.
pub fn router<S: RulesetSource>(svc: Arc<InitializeService<S>>) -> Router {
    Router::new()
        .route(
            INITIALIZE_PATH,
            post(handler::initialize::<S>).options(handler::preflight),
        )
        .route(CLIENT_STREAM_PATH, get(live::upgrade::<S>))
        .with_state(svc)
}
