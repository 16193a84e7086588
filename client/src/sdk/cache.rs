//! The optional disk cache: the last applied ruleset with its version and
//! digest, written atomically (temp file, fsync, rename) and used to start
//! when no node is reachable, so the stream resumes from its version.

use super::state::{RulesetState, StateSource};
use crate::digest::RulesetDigest;
use crate::entity::Entity;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::io::Write as _;
use std::path::{Path, PathBuf};

const FORMAT: &str = "flagraft.cache.v1";
/// A cache file larger than this is not read.
pub const MAX_CACHE_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("disk cache {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("disk cache {path} is not usable: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    format: String,
    /// Which SDK key wrote it (a hash, never the key): a cache of another project is ignored.
    key_id: String,
    version: u64,
    #[serde(with = "crate::protocol::digest_hex")]
    digest: RulesetDigest,
    commit_time_ms: u64,
    entities: Vec<Entity>,
}

/// A short, non-reversible id of an SDK key.
pub fn key_id(sdk_key: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"flagraft.cache.key\0");
    h.update(sdk_key.as_bytes());
    hex::encode(&h.finalize()[..12])
}

/// The cached state, or None when there is no cache file for this key.
pub fn load(path: &Path, key_id: &str) -> Result<Option<RulesetState>, CacheError> {
    let io = |e: std::io::Error| CacheError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let invalid = |reason: String| CacheError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    if meta.len() > MAX_CACHE_BYTES {
        return Err(invalid(format!("{} bytes, over the limit", meta.len())));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let file: CacheFile = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    if file.format != FORMAT {
        return Err(invalid(format!("unknown format {:?}", file.format)));
    }
    if file.key_id != key_id {
        return Ok(None);
    }
    RulesetState::from_entities(
        file.version,
        file.commit_time_ms,
        StateSource::DiskCache,
        file.entities,
        Some(file.digest),
    )
    .map(Some)
    .map_err(|e| invalid(e.to_string()))
}

/// Write `state` to `path` atomically: readers see the old file or the new one.
pub fn store(path: &Path, key_id: &str, state: &RulesetState) -> Result<(), CacheError> {
    let io = |e: std::io::Error| CacheError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let file = CacheFile {
        format: FORMAT.to_string(),
        key_id: key_id.to_string(),
        version: state.version,
        digest: state.digest,
        commit_time_ms: state.commit_time_ms,
        entities: state.entities().cloned().collect(),
    };
    let bytes = serde_json::to_vec(&file).map_err(|e| CacheError::Invalid {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cache".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", rand::random::<u64>()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable (best effort: not every platform can open a dir).
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity::{EntityKey, EntityKind};

    #[test]
    fn round_trip_and_foreign_key_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flags.json");
        assert!(load(&path, "k").unwrap().is_none());
        let state = RulesetState::from_entities(
            7,
            99,
            StateSource::Network,
            vec![Entity {
                key: EntityKey::new(EntityKind::Gate, "g"),
                body: serde_json::json!({"x": 1.5}),
            }],
            None,
        )
        .unwrap();
        store(&path, "k", &state).unwrap();
        let back = load(&path, "k").unwrap().unwrap();
        assert_eq!(
            (back.version, back.digest, back.source),
            (7, state.digest, StateSource::DiskCache)
        );
        assert!(load(&path, "other").unwrap().is_none());
        // No temp files left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // A tampered body fails the digest check.
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("1.5", "2.5");
        std::fs::write(&path, text).unwrap();
        assert!(matches!(load(&path, "k"), Err(CacheError::Invalid { .. })));
        std::fs::write(&path, b"\xff garbage").unwrap();
        assert!(load(&path, "k").is_err());
    }
}
