//! The update stream (node side): `GET /v1/stream` (WebSocket, protocol
//! `flagraft.v1`, see docs/protocol.md) and the polling fallback
//! `GET /v1/download_config_specs`.
//!
//! Wiring: build a [`StreamHub`] over the node's state, start its fan-out, and
//! merge [`router`] into the node's HTTP router. Call [`StreamHub::shutdown`]
//! (then [`StreamHub::drained`]) when the node stops.

mod config;
mod connection;
mod frame;
pub(crate) mod hello;
mod hub;
mod keys;
mod outbox;
mod poll;
mod source;
mod store_source;
mod sync;

#[cfg(test)]
mod memory;
#[cfg(test)]
mod tests;

pub use config::{StreamConfig, StreamConfigError};
pub use hub::StreamHub;
pub use keys::{KeyGrant, KeyKind, KeyResolver, StaticKeys};
pub use poll::etag;
pub use source::{
    ChangeError, ChangeReceiver, DeltaRecord, Head, SourceChange, SourceError, StreamSource,
};
pub use store_source::StoreSource;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use flagraft_client::protocol::{POLL_PATH, STREAM_PATH, SUBPROTOCOL};
use std::sync::Arc;

/// The stream of a node: a hub over its state machine, authenticating with
/// `keys` (the node passes its replicated keys, see `crate::auth`), fan-out
/// started.
pub fn start_for_store(
    config: &StreamConfig,
    sm: flagraft_store::StateMachineStore,
    node_id: flagraft_store::NodeId,
    keys: Arc<dyn KeyResolver>,
) -> Result<Arc<StreamHub<StoreSource>>, StreamConfigError> {
    config.validate()?;
    let hub = StreamHub::new(StoreSource::new(sm, node_id), config.clone(), keys);
    hub.spawn_fanout();
    Ok(hub)
}

/// The stream's routes, ready to be merged into the node's HTTP router.
pub fn router<S: StreamSource>(hub: Arc<StreamHub<S>>) -> Router {
    Router::new()
        .route(STREAM_PATH, get(upgrade::<S>))
        .route(POLL_PATH, get(poll::download_config_specs::<S>))
        .with_state(hub)
}

/// The WebSocket handshake (RFC 6455 §4.2), done here rather than by axum's
/// `WebSocketUpgrade` so that the connection's raw byte stream is ours: the
/// fan-out writes pre-built frames straight into it (see `outbox.rs`).
async fn upgrade<S: StreamSource>(
    State(hub): State<Arc<StreamHub<S>>>,
    mut req: Request,
) -> Response {
    let Some(accept) = websocket_accept(req.headers()) else {
        return (StatusCode::BAD_REQUEST, "expected a WebSocket upgrade").into_response();
    };
    // Without our protocol the upgrade still succeeds, so that the client gets a
    // clear close code (4003) instead of a bare HTTP error. A compliant client
    // aborts a handshake that does not echo one of its offers, so echo its first.
    let offered = offered_protocols(req.headers());
    let protocol_ok = offered.iter().any(|p| p == SUBPROTOCOL);
    let selected = if protocol_ok {
        Some(HeaderValue::from_static(SUBPROTOCOL))
    } else {
        offered.first().and_then(|p| HeaderValue::from_str(p).ok())
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return (
            StatusCode::UPGRADE_REQUIRED,
            "connection cannot be upgraded",
        )
            .into_response();
    };
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            connection::run(hub, hyper_util::rt::TokioIo::new(upgraded), protocol_ok).await;
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    if let Some(p) = selected {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    response
}

/// The `Sec-WebSocket-Accept` answering a valid version-13 upgrade request.
fn websocket_accept(headers: &HeaderMap) -> Option<HeaderValue> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return None;
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION)?.as_bytes() != b"13" {
        return None;
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    HeaderValue::from_str(&accept).ok()
}

/// The offered subprotocols, in order (bounded by the HTTP server's header limits).
fn offered_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}
