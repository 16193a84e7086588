//! Size and time bounds on everything the node accepts from the network.

use std::time::Duration;

/// Largest gRPC message on the Raft port (one append-entries batch or one
/// snapshot chunk, encoded).
pub const RAFT_MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Snapshot chunk size sent by the leader (well under the message bound).
pub const SNAPSHOT_CHUNK_BYTES: u64 = 4 << 20;
/// Entries per append-entries message.
pub const MAX_APPEND_ENTRIES: u64 = 512;

/// Largest gRPC message on the Admin port (requests and responses).
pub const ADMIN_MAX_MESSAGE_BYTES: usize = 32 << 20;
/// Sum of entity JSON sizes in one commit.
pub const MAX_COMMIT_BYTES: usize = 16 << 20;
/// One entity body's JSON text.
pub const MAX_ENTITY_JSON_BYTES: usize = 4 << 20;
/// Upserts plus deletes in one commit.
pub const MAX_CHANGES_PER_COMMIT: usize = 20_000;
/// Entity names, project names, request ids.
pub const MAX_NAME_BYTES: usize = 256;
/// Author and message of a commit.
pub const MAX_TEXT_BYTES: usize = 4096;
/// Records returned by one ListHistory call.
pub const MAX_HISTORY_PAGE: usize = 1000;

/// Longest a read waits for "at least version V".
pub const MAX_READ_WAIT: Duration = Duration::from_secs(30);
/// Longest a write waits for a leader to be known before giving up.
pub const MAX_LEADER_WAIT: Duration = Duration::from_secs(5);
/// Connect timeout towards another node.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// /readyz: applied index may trail the commit index by at most this much.
pub const READY_MAX_APPLY_LAG: u64 = 1000;
/// Graceful shutdown: longest wait for in-flight requests to finish.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

/// Streams a peer may reset before the node accepted them, per HTTP/2
/// connection, before the connection is closed (h2's defence against
/// rapid-reset floods; its default of 20 is far below what Raft's short RPC
/// timeouts produce after a pause or a healed partition). Raft peers are
/// cluster members; admin callers are authenticated per call.
pub const RAFT_MAX_PENDING_RESETS: usize = 4096;
pub const ADMIN_MAX_PENDING_RESETS: usize = 1024;
