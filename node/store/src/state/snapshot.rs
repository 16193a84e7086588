//! Snapshot format, building (from an in-memory view, never blocking apply) and installing.
//!
//! A snapshot carries, per project: the head, every entity (body as JSON text), the idempotency
//! window (exact, since it decides outcomes) and the retained history records. History is read
//! from sled while applies go on; a record compacted meanwhile shortens the carried history to
//! the contiguous run that ends at the captured version, which is always present because the
//! newest record is never compacted.
//!
//! History records travel as the exact bytes stored in sled: building a snapshot copies them
//! (only each record's leading version number is decoded, to check contiguity) instead of
//! decoding and re-encoding every body, which made snapshots the largest CPU cost of a busy node.
//! Install decodes every record once, so a corrupt one is refused before anything is written.

use super::apply::entity_value;
use super::model::{ProjectMeta, ProjectState, RequestEntry, RequestId, SmView};
use super::records::{self, Resolver, StoredRecord, Unresolved};
use super::values::{self, SmWriter};
use crate::body::Body;
use crate::codec::{self, CodecError};
use crate::keys;
use crate::types::{ApiKey, LogId, NodeAddr, NodeId, VersionRecord};
use flagraft_client::entity::EntityKey;
use openraft::StoredMembership;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// 2: API keys added. 3: history records as their stored bytes.
const FORMAT: u32 = 3;

#[derive(Serialize, Deserialize)]
pub struct SnapshotPayload {
    pub format: u32,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership<NodeId, NodeAddr>,
    pub projects: Vec<ProjectSnapshot>,
    pub keys: Vec<ApiKey>,
}

#[derive(Serialize, Deserialize)]
pub struct ProjectSnapshot {
    pub name: String,
    pub meta: ProjectMeta,
    /// Key and body (canonical JSON text), in key order.
    pub entities: Vec<(EntityKey, Body)>,
    pub requests: Vec<(u64, String, RequestEntry)>,
    /// Each record in full (`codec::encode` of a [`VersionRecord`]): stubs are resolved from
    /// the sender's log, which the receiver does not have.
    pub history: Vec<serde_bytes::ByteBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Sled(#[from] sled::Error),
    #[error("invalid snapshot: {0}")]
    Invalid(String),
}

/// Serialises `view`, reading retained history from `tree`.
/// Records stored as stubs are carried in full: the receiver's log need not hold their entries.
pub fn build(view: &SmView, tree: &sled::Tree, log: &sled::Tree) -> Result<Vec<u8>, SnapshotError> {
    let mut projects = Vec::with_capacity(view.projects.len());
    for (name, p) in view.projects.iter() {
        let entities = p
            .entities
            .iter()
            .map(|(key, body)| (key.clone(), body.clone()))
            .collect();
        let requests = p
            .request_versions
            .iter()
            .filter_map(|(v, id)| p.requests.get(id).map(|e| (*v, id.to_string(), *e)))
            .collect();
        let (oldest, history) = read_history(tree, log, name, &p.meta)?;
        let mut meta = p.meta;
        meta.oldest_retained = oldest;
        projects.push(ProjectSnapshot {
            name: name.clone(),
            meta,
            entities,
            requests,
            history,
        });
    }
    let payload = SnapshotPayload {
        format: FORMAT,
        last_applied: view.last_applied,
        membership: view.membership.clone(),
        projects,
        keys: view.keys.values().map(|k| ApiKey::clone(k)).collect(),
    };
    Ok(codec::encode(&payload)?)
}

/// The longest contiguous run of records ending at `meta.version` (as stored), and where it
/// starts.
fn read_history(
    tree: &sled::Tree,
    log: &sled::Tree,
    project: &str,
    meta: &ProjectMeta,
) -> Result<(u64, Vec<serde_bytes::ByteBuf>), SnapshotError> {
    if meta.oldest_retained > meta.version {
        return Ok((meta.version + 1, Vec::new()));
    }
    let range = keys::version(meta.incarnation, meta.oldest_retained)
        ..=keys::version(meta.incarnation, meta.version);
    let mut records = Vec::new();
    let mut resolver = Resolver::new(log);
    'values: for item in tree.range(range).rev() {
        let (key, head) = item?;
        let Some(raw) = values::resolve(tree, &key, &head)? else {
            break;
        };
        let expected = meta.version - records.len() as u64;
        let stored = records::decode(&raw)?;
        if stored.last_version() != expected {
            break;
        }
        match stored {
            StoredRecord::Full(_) => records.push(serde_bytes::ByteBuf::from(raw)),
            StoredRecord::Group(stubs) => {
                for stub in stubs.iter().rev() {
                    match resolver.resolve(project, stub) {
                        Ok(record) => {
                            records.push(serde_bytes::ByteBuf::from(codec::encode(&record)?))
                        }
                        // Compacted and purged since its head was read: the run ends here.
                        Err(Unresolved::EntryGone) if !tree.contains_key(&key)? => break 'values,
                        Err(Unresolved::EntryGone) => {
                            return Err(CodecError::Corrupt(format!(
                                "project '{project}': the log entry of retained version {} is gone",
                                stub.version
                            ))
                            .into())
                        }
                        Err(Unresolved::Corrupt(e)) => return Err(e.into()),
                    }
                }
            }
        }
    }
    records.reverse();
    let oldest = meta.version + 1 - records.len() as u64;
    Ok((oldest, records))
}

/// Decodes and checks a snapshot; returns the view and the sled batch that replaces the whole
/// state machine tree with it.
pub fn prepare_install(
    bytes: &[u8],
    tree: &sled::Tree,
) -> Result<(SmView, sled::Batch), SnapshotError> {
    let payload: SnapshotPayload = codec::decode(bytes)?;
    if payload.format != FORMAT {
        return Err(SnapshotError::Invalid(format!(
            "unknown format {}",
            payload.format
        )));
    }
    let mut writer = SmWriter::new(tree);
    // Removals first: a later insert of the same key in the batch wins.
    writer.clear_all()?;
    writer.insert(keys::APPLIED, codec::encode(&payload.last_applied)?);
    writer.insert(keys::MEMBERSHIP, codec::encode(&payload.membership)?);
    let mut view = SmView {
        last_applied: payload.last_applied,
        membership: payload.membership,
        projects: imbl::OrdMap::new(),
        keys: imbl::OrdMap::new(),
    };
    for key in payload.keys {
        writer.insert(keys::api_key(&key.id), codec::encode(&key)?);
        if view.keys.insert(key.id.clone(), Arc::new(key)).is_some() {
            return Err(SnapshotError::Invalid("a key id twice".to_string()));
        }
    }
    for ps in payload.projects {
        let project = install_project(&ps, &mut writer)?;
        if view
            .projects
            .insert(ps.name.clone(), Arc::new(project))
            .is_some()
        {
            return Err(SnapshotError::Invalid(format!(
                "project '{}' twice",
                ps.name
            )));
        }
    }
    Ok((view, writer.into_batch()))
}

fn install_project(
    ps: &ProjectSnapshot,
    writer: &mut SmWriter<'_>,
) -> Result<ProjectState, SnapshotError> {
    let inc = ps.meta.incarnation;
    let mut p = ProjectState::new(ps.meta);
    for (key, body) in &ps.entities {
        // Re-hashing here (once per install, not per commit) verifies the carried digest.
        let hash = body.hash(key);
        writer.put_value(&keys::entity(inc, key), &entity_value(&hash, body))?;
        p.hashes.insert(key.clone(), hash);
        p.entities.insert(key.clone(), body.clone());
    }
    if p.digest_from_hashes() != p.meta.digest {
        return Err(SnapshotError::Invalid(format!(
            "project '{}': entities do not match the digest",
            ps.name
        )));
    }
    for (version, id, entry) in &ps.requests {
        let shared = RequestId::from(id.as_str());
        p.requests.insert(shared.clone(), *entry);
        p.request_versions.insert(*version, shared);
        // Stored on its own only once its record is gone (see `apply::remember_request`).
        if entry.version < ps.meta.oldest_retained {
            writer.insert(keys::request(inc, id), codec::encode(entry)?);
        }
    }
    let mut expected = ps.meta.oldest_retained;
    for raw in &ps.history {
        let record: VersionRecord = codec::decode(raw)?;
        if record.version != expected || record.version > ps.meta.version {
            return Err(SnapshotError::Invalid(format!(
                "project '{}': history is not contiguous at version {}",
                ps.name, record.version
            )));
        }
        writer.put_value(&keys::version(inc, record.version), raw)?;
        let chunks = super::values::chunk_count_of_len(raw.len());
        if chunks > 0 {
            p.chunked_records.insert(record.version, chunks);
        }
        expected += 1;
    }
    if expected != ps.meta.version + 1 {
        return Err(SnapshotError::Invalid(format!(
            "project '{}': history does not reach version {}",
            ps.name, ps.meta.version
        )));
    }
    writer.insert(keys::project(&ps.name), codec::encode(&ps.meta)?);
    Ok(p)
}
