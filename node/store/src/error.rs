//! Errors of opening and reading the store.

use crate::codec::CodecError;
use crate::types::Identity;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the data dir {}: {reason}", dir.display())]
    Open { dir: PathBuf, reason: String },
    #[error("the data dir {} belongs to {stored}, not to {expected}", dir.display())]
    IdentityMismatch {
        dir: PathBuf,
        stored: Identity,
        expected: Identity,
    },
    #[error("the data dir {} holds corrupt state: {what}", dir.display())]
    Corrupt { dir: PathBuf, what: String },
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt stored record: {0}")]
    Codec(#[from] CodecError),
}
