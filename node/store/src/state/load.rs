//! Rebuilding the in-memory view from the state machine tree at open.

use super::apply::parse_entity_value;
use super::model::{ProjectMeta, ProjectState, RequestEntry, RequestId, SmView};
use super::records::{self, GroupSpan, Resolver, StoredRecord, Unresolved};
use super::redo;
use super::values;
use crate::body::Body;
use crate::codec;
use crate::error::StoreError;
use crate::keys;
use crate::types::{LogId, NodeAddr, NodeId, VersionRecord};
use crate::REQUEST_ID_WINDOW;
use flagraft_client::digest::RulesetDigest;
use flagraft_client::entity::EntityKey;
use openraft::StoredMembership;
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

/// Loads the view; a never-initialised tree gets the `default` project (written and flushed).
pub async fn load_or_init(
    db: &sled::Db,
    tree: &sled::Tree,
    redo: &sled::Tree,
    log: &sled::Tree,
    dir: &Path,
) -> Result<SmView, StoreError> {
    if tree.is_empty() {
        let view = SmView::fresh();
        let mut batch = sled::Batch::default();
        write_view_heads(&view, &mut batch)?;
        tree.apply_batch(batch)?;
        db.flush_async().await?;
        return Ok(view);
    }
    // Before any read: a crash may have cut the last apply call short.
    redo::replay(tree, redo).map_err(|e| match e {
        codec::CodecError::Storage(e) => StoreError::Sled(e),
        e => corrupt(dir, format!("the last apply call's redo record: {e}")),
    })?;
    let view = load(tree, log, dir)?;
    remove_legacy_request_index(tree)?;
    Ok(view)
}

/// Drops the version -> request id index earlier releases wrote (see
/// [`keys::LEGACY_REQUEST_BY_VERSION`]). Not flushed: if a crash loses it, the next open
/// removes what is left.
fn remove_legacy_request_index(tree: &sled::Tree) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    let mut any = false;
    for item in tree.scan_prefix([keys::LEGACY_REQUEST_BY_VERSION]) {
        let (key, _) = item?;
        batch.remove(key);
        any = true;
    }
    if any {
        tree.apply_batch(batch)?;
    }
    Ok(())
}

/// The head keys of a view without entities: the `default` project of a fresh state machine.
fn write_view_heads(view: &SmView, batch: &mut sled::Batch) -> Result<(), StoreError> {
    batch.insert(keys::APPLIED, codec::encode(&view.last_applied)?);
    batch.insert(keys::MEMBERSHIP, codec::encode(&view.membership)?);
    for (name, p) in view.projects.iter() {
        batch.insert(keys::project(name), codec::encode(&p.meta)?);
    }
    Ok(())
}

fn corrupt(dir: &Path, what: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        dir: dir.to_path_buf(),
        what: what.into(),
    }
}

pub fn load(tree: &sled::Tree, log: &sled::Tree, dir: &Path) -> Result<SmView, StoreError> {
    let last_applied: Option<LogId> = match tree.get(keys::APPLIED)? {
        Some(raw) => codec::decode(&raw)?,
        None => None,
    };
    let membership: StoredMembership<NodeId, NodeAddr> = match tree.get(keys::MEMBERSHIP)? {
        Some(raw) => codec::decode(&raw)?,
        None => StoredMembership::default(),
    };
    let mut view = SmView {
        last_applied,
        membership,
        projects: imbl::OrdMap::new(),
        keys: super::api_keys::load(tree)?,
    };
    for item in tree.scan_prefix([keys::PROJECT]) {
        let (key, raw) = item?;
        let name = std::str::from_utf8(&key[1..])
            .map_err(|_| corrupt(dir, "a project name is not UTF-8"))?
            .to_string();
        let meta: ProjectMeta = codec::decode(&raw)?;
        let project = load_project(tree, log, meta, dir, &name)?;
        view.projects.insert(name, Arc::new(project));
    }
    Ok(view)
}

/// Entries of remembered request ids whose record is gone (see `apply::remember_request`).
/// Entries an earlier release stored for ids whose record is retained are dropped (not flushed:
/// if a crash loses that, the next open drops them again); the replay reads those ids.
fn load_stored_requests(
    tree: &sled::Tree,
    p: &mut ProjectState,
    dir: &Path,
    name: &str,
) -> Result<(), StoreError> {
    let prefix = keys::scoped(keys::REQUEST, p.meta.incarnation);
    let mut legacy = sled::Batch::default();
    let mut any_legacy = false;
    for item in tree.scan_prefix(prefix) {
        let (key, raw) = item?;
        let id = String::from_utf8(key[prefix.len()..].to_vec())
            .map_err(|_| corrupt(dir, format!("bad request id in project '{name}'")))?;
        let entry: RequestEntry = codec::decode(&raw)?;
        if entry.version >= p.meta.oldest_retained {
            legacy.remove(key);
            any_legacy = true;
            continue;
        }
        let id = RequestId::from(id);
        p.request_versions.insert(entry.version, id.clone());
        p.requests.insert(id, entry);
    }
    if any_legacy {
        tree.apply_batch(legacy)?;
    }
    Ok(())
}

/// A stored [`VersionRecord`](crate::types::VersionRecord) with its strings borrowed: bodies are validated (and hashed)
/// only for each entity's latest upsert. Same fields, same order, same encoding.
#[derive(Deserialize)]
struct RecordView<'a> {
    version: u64,
    #[serde(borrow)]
    _author: &'a str,
    #[serde(borrow)]
    _message: &'a str,
    commit_time_ms: u64,
    #[serde(borrow)]
    request_id: Option<&'a str>,
    #[serde(borrow)]
    upserts: Vec<UpsertView<'a>>,
    deletes: Vec<EntityKey>,
    digest: RulesetDigest,
}

#[derive(Deserialize)]
struct UpsertView<'a> {
    key: EntityKey,
    #[serde(borrow)]
    body: &'a str,
}

/// What the replay needs of a record, stored in full or as a stub.
struct Replay<'a> {
    version: u64,
    commit_time_ms: u64,
    request_id: Option<Cow<'a, str>>,
    upserts: Vec<(EntityKey, ReplayBody<'a>)>,
    deletes: Vec<EntityKey>,
    digest: RulesetDigest,
}

enum ReplayBody<'a> {
    /// Validated only if the replay takes it.
    Text(&'a str),
    Parsed(Body),
}

impl ReplayBody<'_> {
    fn parse(self) -> Result<Body, codec::CodecError> {
        match self {
            ReplayBody::Text(text) => Body::from_canonical_bytes(text.as_bytes()),
            ReplayBody::Parsed(body) => Ok(body),
        }
    }
}

impl<'a> From<RecordView<'a>> for Replay<'a> {
    fn from(r: RecordView<'a>) -> Self {
        Replay {
            version: r.version,
            commit_time_ms: r.commit_time_ms,
            request_id: r.request_id.map(Cow::Borrowed),
            upserts: r
                .upserts
                .into_iter()
                .map(|u| (u.key, ReplayBody::Text(u.body)))
                .collect(),
            deletes: r.deletes,
            digest: r.digest,
        }
    }
}

impl From<VersionRecord> for Replay<'static> {
    fn from(r: VersionRecord) -> Self {
        Replay {
            version: r.version,
            commit_time_ms: r.commit_time_ms,
            request_id: r.request_id.map(Cow::Owned),
            upserts: r
                .upserts
                .into_iter()
                .map(|u| (u.key, ReplayBody::Parsed(u.body)))
                .collect(),
            deletes: r.deletes,
            digest: r.digest,
        }
    }
}

/// Replays the retained records over the entities loaded from their keys, newest first: an
/// entity's newest touch decides it (older ones are skipped), and the newest use of a request
/// id inside the window wins over older ones and over stored entries.
fn replay_records(
    tree: &sled::Tree,
    log: &sled::Tree,
    p: &mut ProjectState,
    dir: &Path,
    name: &str,
) -> Result<(), StoreError> {
    let inc = p.meta.incarnation;
    if p.meta.oldest_retained > p.meta.version {
        return Ok(());
    }
    let window_start = p.meta.version.saturating_sub(REQUEST_ID_WINDOW) + 1;
    let mut decided: HashSet<EntityKey> = HashSet::new();
    let mut expected = p.meta.version;
    let range = keys::version(inc, p.meta.oldest_retained)..=keys::version(inc, p.meta.version);
    let mut newer_requests: Vec<(String, RequestEntry)> = Vec::new();
    let mut resolver = Resolver::new(log);
    for item in tree.range(range).rev() {
        let (key, head) = item?;
        let raw = values::resolve(tree, &key, &head)?
            .ok_or_else(|| corrupt(dir, format!("project '{name}': a record chunk is missing")))?;
        let replays: Vec<Replay<'_>> = match records::decode(&raw)? {
            // A full record (from a snapshot or an earlier release): strings borrowed.
            StoredRecord::Full(_) => vec![Replay::from(codec::decode_borrowed::<RecordView<'_>>(
                &raw,
            )?)],
            StoredRecord::Group(stubs) => {
                if let (Some(first), Some(last)) = (stubs.first(), stubs.last()) {
                    let span = GroupSpan {
                        last: last.version,
                        log_index: first.log_index,
                    };
                    p.stub_groups.insert(first.version, span);
                }
                let mut replays = Vec::with_capacity(stubs.len());
                for stub in stubs.iter().rev() {
                    match resolver.resolve(name, stub) {
                        Ok(r) => replays.push(Replay::from(r)),
                        Err(Unresolved::EntryGone) => {
                            let what = format!(
                                "project '{name}': version {} is in log entry {}, which is gone",
                                stub.version, stub.log_index
                            );
                            return Err(corrupt(dir, what));
                        }
                        Err(Unresolved::Corrupt(e)) => return Err(e.into()),
                    }
                }
                replays
            }
        };
        for record in replays {
            let version = record.version;
            if version != expected {
                return Err(corrupt(
                    dir,
                    format!("project '{name}': the record of version {expected} is missing"),
                ));
            }
            expected = expected.saturating_sub(1);
            let mut latest = Vec::new();
            for (key, body) in record.upserts {
                if !decided.insert(key.clone()) {
                    continue;
                }
                let body = body.parse()?;
                p.hashes.insert(key.clone(), body.hash(&key));
                p.entities.insert(key.clone(), body);
                p.body_in_record.insert(key.clone(), version);
                latest.push(key);
            }
            if !latest.is_empty() {
                p.upserted_at.insert(version, latest.into());
            }
            for key in record.deletes {
                if decided.insert(key.clone()) {
                    p.hashes.remove(&key);
                    p.entities.remove(&key);
                }
            }
            if let Some(id) = record.request_id.filter(|_| version >= window_start) {
                let entry = RequestEntry {
                    version,
                    digest: record.digest,
                    commit_time_ms: record.commit_time_ms,
                };
                newer_requests.push((id.to_string(), entry));
            }
        }
    }
    if expected + 1 != p.meta.oldest_retained {
        return Err(corrupt(
            dir,
            format!("project '{name}': the record of version {expected} is missing"),
        ));
    }
    // Oldest first, so that a newer use of an id replaces an older one, as apply left them.
    for (id, entry) in newer_requests.into_iter().rev() {
        let id = RequestId::from(id);
        p.request_versions.insert(entry.version, id.clone());
        p.requests.insert(id, entry);
    }
    Ok(())
}

/// A project: entity keys hold the ruleset as of the version before the oldest retained record
/// (for the entities the retained records touch, possibly older; see `apply`), then the
/// retained records are replayed (`replay_records`): they give the latest bodies, which
/// entities' latest bodies are still only in a record, and the request ids inside the window.
///
/// O(retained history): open decodes every retained record, and validates and hashes each
/// entity's latest body.
fn load_project(
    tree: &sled::Tree,
    log: &sled::Tree,
    meta: ProjectMeta,
    dir: &Path,
    name: &str,
) -> Result<ProjectState, StoreError> {
    let inc = meta.incarnation;
    let mut p = ProjectState::new(meta);
    for item in tree.scan_prefix(keys::scoped(keys::ENTITY, inc)) {
        let (key, head) = item?;
        let entity_key = keys::parse_entity_suffix(&key[9..])
            .ok_or_else(|| corrupt(dir, format!("bad entity key in project '{name}'")))?;
        let raw = values::resolve(tree, &key, &head)?
            .ok_or_else(|| corrupt(dir, format!("missing chunk of {entity_key} in '{name}'")))?;
        let (hash, body) = parse_entity_value(&raw)?;
        p.hashes.insert(entity_key.clone(), hash);
        p.entities.insert(entity_key, body);
    }
    let version_prefix = keys::scoped(keys::VERSION, inc);
    for (suffix, chunks) in values::chunked_under(tree, &version_prefix)? {
        let version: [u8; 8] = suffix
            .try_into()
            .map_err(|_| corrupt(dir, format!("bad record chunk key in project '{name}'")))?;
        p.chunked_records
            .insert(u64::from_be_bytes(version), chunks);
    }
    load_stored_requests(tree, &mut p, dir, name)?;

    replay_records(tree, log, &mut p, dir, name)?;
    // Torn or tampered state shows up here: the stored digest is the running sum of the hashes.
    if p.digest_from_hashes() != p.meta.digest {
        return Err(corrupt(
            dir,
            format!("project '{name}': entity hashes do not add up to the stored digest"),
        ));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::Upsert;
    use crate::types::VersionRecord;
    use flagraft_client::entity::EntityKind;

    #[test]
    fn a_record_view_reads_every_field_of_a_stored_record() {
        let key = |n: &str| EntityKey::new(EntityKind::Gate, n);
        let record = VersionRecord {
            version: 7,
            author: "ann".into(),
            message: "why".into(),
            commit_time_ms: 42,
            request_id: Some("req".into()),
            upserts: vec![Upsert::new(key("a"), &serde_json::json!({"x": [1, "y"]}))],
            deletes: vec![key("b")],
            digest: RulesetDigest::from_hashes([[3u8; 32]].iter()),
        };
        let raw = codec::encode(&record).unwrap();
        let view: RecordView<'_> = codec::decode_borrowed(&raw).unwrap();
        assert_eq!(view.version, 7);
        assert_eq!((view._author, view._message), ("ann", "why"));
        assert_eq!(view.commit_time_ms, 42);
        assert_eq!(view.request_id, Some("req"));
        assert_eq!(view.upserts.len(), 1);
        assert_eq!(view.upserts[0].key, key("a"));
        assert_eq!(view.upserts[0].body, record.upserts[0].body.as_str());
        assert_eq!(view.deletes, record.deletes);
        assert_eq!(view.digest, record.digest);
    }
}
