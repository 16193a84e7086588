//! Encodings: bincode 2 (serde mode) for everything stored or shipped; entity bodies inside are
//! canonical JSON text ([`crate::Body`]).

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Upper bound on what one decode may allocate, so a corrupt length prefix cannot exhaust memory.
const DECODE_LIMIT: usize = 1 << 30;

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("decode: {0} trailing bytes")]
    Trailing(usize),
    #[error("json: {0}")]
    Json(String),
    #[error("corrupt value: {0}")]
    Corrupt(String),
    #[error("storage: {0}")]
    Storage(#[from] sled::Error),
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(bincode::serde::encode_to_vec(value, config())?)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, read) =
        bincode::serde::decode_from_slice(bytes, config().with_limit::<DECODE_LIMIT>())?;
    if read != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - read));
    }
    Ok(value)
}

/// [`decode`] of a type that borrows from `bytes` (strings left unvalidated beyond UTF-8).
pub fn decode_borrowed<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, CodecError> {
    let (value, read) =
        bincode::serde::borrow_decode_from_slice(bytes, config().with_limit::<DECODE_LIMIT>())?;
    if read != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - read));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Command, CommitCommand, TypeConfig};
    use flagraft_client::entity::{EntityKey, EntityKind};
    use serde_json::json;

    fn sample() -> Command {
        Command::Commit(CommitCommand {
            project: "p".into(),
            upserts: vec![crate::Upsert::new(
                EntityKey::new(EntityKind::Gate, "g"),
                &json!({"rules": [{"id": 1, "x": null}], "on": true, "f": 1.5}),
            )],
            deletes: vec![EntityKey::new(EntityKind::Config, "c")],
            author: "a".into(),
            message: "m".into(),
            expected_version: Some(3),
            request_id: Some("r".into()),
            proposed_time_ms: 42,
        })
    }

    #[test]
    fn command_round_trips_in_bincode_and_json() {
        let cmd = sample();
        let back: Command = decode(&encode(&cmd).unwrap()).unwrap();
        assert_eq!(back, cmd);
        let text = serde_json::to_string(&cmd).unwrap();
        let back: Command = serde_json::from_str(&text).unwrap();
        assert_eq!(back, cmd);
    }

    #[test]
    fn raft_entry_round_trips() {
        let entry = openraft::Entry::<TypeConfig> {
            log_id: openraft::testing::log_id(3, 1, 7),
            payload: openraft::EntryPayload::Normal(sample()),
        };
        let back: openraft::Entry<TypeConfig> = decode(&encode(&entry).unwrap()).unwrap();
        assert_eq!(back.log_id, entry.log_id);
        match (back.payload, entry.payload) {
            (openraft::EntryPayload::Normal(a), openraft::EntryPayload::Normal(b)) => {
                assert_eq!(a, b)
            }
            other => panic!("payload kind changed: {other:?}"),
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            &b""[..],
            &[0xff; 3][..],
            &[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff][..],
        ] {
            assert!(decode::<Command>(bytes).is_err());
        }
        let mut good = encode(&sample()).unwrap();
        good.push(0);
        assert!(matches!(
            decode::<Command>(&good),
            Err(CodecError::Trailing(1))
        ));
    }
}
