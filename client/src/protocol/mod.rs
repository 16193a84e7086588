//! The `flagraft.v1` update-stream protocol (see `docs/protocol.md`): the
//! messages nodes and clients exchange, their JSON codec, and the close codes.

mod close;
mod codec;
mod messages;

pub use close::{CloseCode, Reaction};
pub use codec::{
    decode_client, decode_server, encode_client, encode_delta, encode_server, encode_snapshot_from,
    encode_snapshot_parts, JsonBody, ProtocolError, DEFAULT_MAX_SERVER_MESSAGE_BYTES,
    MAX_CLIENT_MESSAGE_BYTES, MAX_KEY_BYTES, MAX_SDK_BYTES,
};
pub(crate) use messages::digest_hex;
pub use messages::{
    Behind, ClientMessage, Delta, Goodbye, Heartbeat, Hello, HistoryGone, PollResponse,
    ServerMessage, Snapshot, SnapshotPart, SnapshotReason, Welcome,
};

/// The `Sec-WebSocket-Protocol` value of this protocol version.
pub const SUBPROTOCOL: &str = "flagraft.v1";
/// Path of the WebSocket endpoint on a node.
pub const STREAM_PATH: &str = "/v1/stream";
/// Path of the polling fallback on a node.
pub const POLL_PATH: &str = "/v1/download_config_specs";
