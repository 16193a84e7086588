//! The update stream (node side): `GET /v1/stream` (WebSocket, protocol
//! `flagraft.v1`, see docs/protocol.md) and the polling fallback
//! `GET /v1/download_config_specs`.
//!
//! Wiring: build a [`StreamHub`] over the node's state, start its fan-out, and
//! merge [`router`] into the node's HTTP router. Call [`StreamHub::shutdown`]
//! (then [`StreamHub::drained`]) when the node stops.

mod config;
mod connection;
pub(crate) mod hello;
mod hub;
mod keys;
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

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::response::Response;
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

async fn upgrade<S: StreamSource>(
    State(hub): State<Arc<StreamHub<S>>>,
    ws: WebSocketUpgrade,
) -> Response {
    let c = &hub.config;
    let ws = ws
        .protocols([SUBPROTOCOL])
        .read_buffer_size(c.read_buffer_bytes)
        .write_buffer_size(c.write_buffer_bytes)
        .max_write_buffer_size(c.max_write_buffer_bytes)
        .max_message_size(c.max_client_message_bytes)
        .max_frame_size(c.max_client_message_bytes);
    // Without our protocol the upgrade still succeeds, so that the client gets a
    // clear close code (4003) instead of a bare HTTP error. A compliant client
    // aborts a handshake that does not echo one of its offers, so echo its first.
    let protocol_ok = ws.selected_protocol().is_some();
    let mut ws = ws;
    if !protocol_ok {
        let offered = ws.requested_protocols().next().cloned();
        if let Some(offered) = offered {
            ws.set_selected_protocol(offered);
        }
    }
    ws.on_upgrade(move |socket| connection::run(hub, socket, protocol_ok))
}
