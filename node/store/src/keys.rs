//! sled key layout (documented in the crate docs). Big-endian integers keep numeric order.

use flagraft_client::entity::{EntityKey, EntityKind};

/// Default tree: who owns the dir.
pub const IDENTITY: &[u8] = b"identity";

pub const LOG_TREE: &[u8] = b"raft_log";
pub const SM_TREE: &[u8] = b"state_machine";
/// Holds one key, [`REDO`]: in a tree of its own, its leaf holds nothing else.
pub const REDO_TREE: &[u8] = b"state_machine_redo";

// --- log tree ---
pub const LOG_ENTRY: u8 = b'e';
pub const VOTE: &[u8] = b"m:vote";
pub const COMMITTED: &[u8] = b"m:committed";
pub const PURGED: &[u8] = b"m:purged";

pub fn log_entry(index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = LOG_ENTRY;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

// --- redo tree ---
/// The last small apply call's writes (`state::redo`).
pub const REDO: &[u8] = b"r";

// --- state machine tree ---
pub const APPLIED: &[u8] = b"a";
pub const MEMBERSHIP: &[u8] = b"b";
pub const PROJECT: u8 = b'n';
pub const ENTITY: u8 = b'x';
pub const VERSION: u8 = b'v';
pub const REQUEST: u8 = b'r';
/// Legacy: a version -> request id index written by earlier releases; each `r` value holds its
/// version, so the index was redundant (two more sled writes per commit). Removed at open.
pub const LEGACY_REQUEST_BY_VERSION: u8 = b'q';
pub const API_KEY: u8 = b'k';

pub fn api_key(id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + id.len());
    k.push(API_KEY);
    k.extend_from_slice(id.as_bytes());
    k
}

pub fn project(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(PROJECT);
    k.extend_from_slice(name.as_bytes());
    k
}

/// `tag` + incarnation: the prefix of all keys of one kind of one project incarnation.
pub fn scoped(tag: u8, incarnation: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = tag;
    k[1..].copy_from_slice(&incarnation.to_be_bytes());
    k
}

pub fn entity(incarnation: u64, key: &EntityKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(10 + key.name.len());
    k.extend_from_slice(&scoped(ENTITY, incarnation));
    k.push(kind_byte(key.kind));
    k.extend_from_slice(key.name.as_bytes());
    k
}

/// Inverse of [`entity`] for the part after the 9-byte prefix.
pub fn parse_entity_suffix(suffix: &[u8]) -> Option<EntityKey> {
    let (&kind, name) = suffix.split_first()?;
    let kind = kind_from_byte(kind)?;
    let name = std::str::from_utf8(name).ok()?;
    Some(EntityKey::new(kind, name))
}

pub fn version(incarnation: u64, version: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[..9].copy_from_slice(&scoped(VERSION, incarnation));
    k[9..].copy_from_slice(&version.to_be_bytes());
    k
}

pub fn request(incarnation: u64, request_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + request_id.len());
    k.extend_from_slice(&scoped(REQUEST, incarnation));
    k.extend_from_slice(request_id.as_bytes());
    k
}

fn kind_byte(kind: EntityKind) -> u8 {
    match kind {
        EntityKind::Gate => 0,
        EntityKind::Config => 1,
        EntityKind::Layer => 2,
        EntityKind::IdList => 3,
        EntityKind::Setting => 4,
    }
}

fn kind_from_byte(b: u8) -> Option<EntityKind> {
    EntityKind::ALL.into_iter().find(|k| kind_byte(*k) == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_keys_round_trip_for_every_kind() {
        for kind in EntityKind::ALL {
            let key = EntityKey::new(kind, "näme\0x");
            let raw = entity(7, &key);
            assert_eq!(&raw[..9], &scoped(ENTITY, 7));
            assert_eq!(parse_entity_suffix(&raw[9..]), Some(key));
        }
        assert_eq!(parse_entity_suffix(&[9, b'a']), None);
        assert_eq!(parse_entity_suffix(&[]), None);
    }

    #[test]
    fn versions_sort_numerically() {
        assert!(version(1, 255) < version(1, 256));
        assert!(version(1, u64::MAX) < version(2, 0));
        assert!(log_entry(9) < log_entry(10));
    }
}
