//! Reading a connection's first text frame (its hello), shared by the rules
//! stream (`/v1/stream`) and the client-values stream (`/v1/stream/client`).

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use flagraft_client::protocol::CloseCode;
use tokio::time::Instant;

/// How a connection ends.
pub(crate) enum End {
    /// Say goodbye with this code, then close.
    Close(CloseCode),
    /// The peer is gone or the socket failed: nothing more to say.
    Gone,
}

/// The first text frame, skipping a handful of control frames; a binary
/// frame is a bad message, silence until `deadline` a timeout.
pub(crate) async fn first_text_frame(
    socket: &mut WebSocket,
    deadline: Instant,
) -> Result<Utf8Bytes, End> {
    for _ in 0..16 {
        let msg = match tokio::time::timeout_at(deadline, socket.recv()).await {
            Err(_) => return Err(End::Close(CloseCode::Timeout)),
            Ok(None | Some(Err(_))) => return Err(End::Gone),
            Ok(Some(Ok(m))) => m,
        };
        match msg {
            Message::Text(t) => return Ok(t),
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => return Err(End::Gone),
            Message::Binary(_) => return Err(End::Close(CloseCode::BadMessage)),
        }
    }
    // A peer that sends only control frames never says hello.
    Err(End::Close(CloseCode::BadMessage))
}
