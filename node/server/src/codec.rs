//! Encoding of openraft's messages inside `flagraft.raft.v1` envelopes:
//! bincode 2 in serde mode with the standard config. (Entity bodies inside
//! log entries are JSON text in the store's serde representation, so the
//! non-self-describing bincode can carry them.) Snapshot chunk bytes travel
//! outside the encoded value, in the envelope's own `data` field.

use crate::limits::RAFT_MAX_MESSAGE_BYTES;
use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("payload of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("{0} trailing bytes after the payload")]
    Trailing(usize),
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(bincode::serde::encode_to_vec(
        value,
        bincode::config::standard(),
    )?)
}

/// Decodes a payload of at most `limit` bytes; bincode's own limit bounds
/// what length prefixes may claim, so garbage cannot force a huge allocation.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, CodecError> {
    if bytes.len() > limit {
        return Err(CodecError::TooLarge(bytes.len()));
    }
    let config = bincode::config::standard().with_limit::<RAFT_MAX_MESSAGE_BYTES>();
    let (value, used) = bincode::serde::decode_from_slice(bytes, config)?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flagraft_client::entity::{Entity, EntityKey, EntityKind};
    use flagraft_store::{Command, CommitCommand, TypeConfig};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

    #[test]
    fn append_entries_with_json_bodies_round_trip() {
        let cmd = Command::Commit(CommitCommand {
            project: "default".into(),
            upserts: vec![Entity {
                key: EntityKey::new(EntityKind::Gate, "g"),
                body: serde_json::json!({"a": [1, -2, 2.5, "x", null, {"b": true}], "big": u64::MAX}),
            }
            .into()],
            deletes: vec![EntityKey::new(EntityKind::Config, "c")],
            author: "me".into(),
            message: "m".into(),
            expected_version: Some(3),
            request_id: None,
            proposed_time_ms: 7,
        });
        let entry: Entry<TypeConfig> = Entry {
            log_id: LogId::new(CommittedLeaderId::new(2, 1), 9),
            payload: EntryPayload::Normal(cmd),
        };
        let req = openraft::raft::AppendEntriesRequest::<TypeConfig> {
            vote: openraft::Vote::new_committed(2, 1),
            prev_log_id: None,
            entries: vec![entry],
            leader_commit: None,
        };
        let bytes = encode(&req).unwrap();
        let back: openraft::raft::AppendEntriesRequest<TypeConfig> =
            decode(&bytes, bytes.len()).unwrap();
        assert_eq!(format!("{back:?}"), format!("{req:?}"));
        assert!(matches!(
            decode::<openraft::raft::AppendEntriesRequest<TypeConfig>>(&bytes, 3),
            Err(CodecError::TooLarge(_))
        ));
    }

    #[test]
    fn raft_errors_round_trip() {
        use openraft::error::{ForwardToLeader, RaftError};
        let e: RaftError<u64, openraft::error::ClientWriteError<u64, flagraft_store::NodeAddr>> =
            RaftError::APIError(openraft::error::ClientWriteError::ForwardToLeader(
                ForwardToLeader::new(2, flagraft_store::NodeAddr::default()),
            ));
        let bytes = encode(&e).unwrap();
        let back: RaftError<u64, openraft::error::ClientWriteError<u64, flagraft_store::NodeAddr>> =
            decode(&bytes, 1 << 20).unwrap();
        assert_eq!(back.to_string(), e.to_string());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let huge_vec_claim = [0x80u8, 0xfc, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        for bytes in [&b""[..], b"\xff\xff\xff", &huge_vec_claim] {
            assert!(
                decode::<openraft::raft::AppendEntriesRequest<TypeConfig>>(bytes, 1024).is_err()
            );
        }
    }
}
