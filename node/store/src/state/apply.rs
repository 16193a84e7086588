//! Deterministic application of one command: updates the in-memory view and records the matching
//! sled writes in the caller's batch. No clock, no randomness, no config that changes outcomes.

use super::model::{ProjectMeta, ProjectState, RequestEntry, RequestId, SmView, DEFAULT_PROJECT};
use super::records::{self, GroupSpan, RecordStub};
use super::values::{chunk_count_of_len, SmWriter};
use crate::body::Body;
use crate::codec::{self, CodecError};
use crate::keys;
use crate::types::{AppliedChange, Command, CommandOutcome, CommitCommand, VersionRecord};
use crate::REQUEST_ID_WINDOW;
use flagraft_client::digest::RulesetDigest;
use flagraft_client::entity::EntityKey;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Longest accepted project name, in bytes.
pub const MAX_PROJECT_NAME_BYTES: usize = 128;

/// Where one apply call collects its effects.
pub struct ApplyCtx<'a, 't> {
    pub writer: &'a mut SmWriter<'t>,
    pub changes: &'a mut Vec<AppliedChange>,
    /// Node-local: only decides which old records are dropped, never an outcome.
    pub history_limit: u64,
    /// The record stubs this apply call has grouped so far, by project incarnation: a commit
    /// joins its project's group while it has room. A group is written to the batch once, when
    /// it closes (full, or its next version does not follow) or by [`close_groups`] at the end
    /// of the call: writing it again for every commit made a 32-commit entry encode 528 stubs.
    pub open_groups: &'a mut HashMap<u64, OpenGroup>,
}

/// A group of record stubs this apply call is still adding to.
pub struct OpenGroup {
    project: String,
    stubs: Vec<RecordStub>,
}

/// Writes every group the apply call left open; call once, after its last command.
pub fn close_groups(
    view: &mut SmView,
    open_groups: &mut HashMap<u64, OpenGroup>,
    writer: &mut SmWriter<'_>,
) -> Result<(), CodecError> {
    for (inc, group) in open_groups.drain() {
        // A project deleted later in the call (and perhaps created again, as a new incarnation)
        // took its records with it: its group is not written.
        let Some(p) = view.projects.get_mut(&group.project) else {
            continue;
        };
        let p = Arc::make_mut(p);
        if p.meta.incarnation == inc {
            write_group(p, &group.stubs, writer)?;
        }
    }
    Ok(())
}

/// Stores a closed group of stubs under its first version (a new key: nothing to replace).
fn write_group(
    p: &mut ProjectState,
    stubs: &[RecordStub],
    writer: &mut SmWriter<'_>,
) -> Result<(), CodecError> {
    let Some(first) = stubs.first().map(|s| s.version) else {
        return Ok(());
    };
    let value = records::encode_group(stubs)?;
    writer.put_value_known(&keys::version(p.meta.incarnation, first), &value, 0)?;
    let chunks = chunk_count_of_len(value.len());
    if chunks > 0 {
        p.chunked_records.insert(first, chunks);
    }
    Ok(())
}

pub fn apply_command(
    view: &mut SmView,
    command: Command,
    log_index: u64,
    ctx: &mut ApplyCtx<'_, '_>,
) -> Result<CommandOutcome, CodecError> {
    match command {
        Command::Commit(commit) => apply_commit(view, commit, (log_index, 0), ctx),
        Command::CommitBatch(commits) => commits
            .into_iter()
            .zip(0u32..)
            .map(|(commit, position)| apply_commit(view, commit, (log_index, position), ctx))
            .collect::<Result<Vec<_>, _>>()
            .map(CommandOutcome::Batch),
        Command::CreateProject { name, time_ms } => {
            create_project(view, name, time_ms, log_index, ctx)
        }
        Command::DeleteProject { name, time_ms } => delete_project(view, name, time_ms, ctx),
        Command::CreateKey(cmd) => super::api_keys::create_key(view, cmd, ctx),
        Command::RevokeKey { id, time_ms } => super::api_keys::revoke_key(view, id, time_ms, ctx),
    }
}

/// `at`: the log index of the entry that holds `cmd`, and `cmd`'s place in it.
fn apply_commit(
    view: &mut SmView,
    cmd: CommitCommand,
    at: (u64, u32),
    ctx: &mut ApplyCtx<'_, '_>,
) -> Result<CommandOutcome, CodecError> {
    let Some(current) = view.projects.get(&cmd.project) else {
        return Ok(CommandOutcome::UnknownProject {
            project: cmd.project,
        });
    };
    // A retry is answered before the version check: the retry of a commit that succeeded would
    // otherwise see its own version as a conflict.
    if let Some(first) = cmd
        .request_id
        .as_ref()
        .and_then(|id| current.requests.get(id.as_str()))
    {
        return Ok(CommandOutcome::Committed {
            project: cmd.project,
            version: first.version,
            digest: first.digest,
            commit_time_ms: first.commit_time_ms,
            duplicate: true,
        });
    }
    if let Some(expected) = cmd.expected_version {
        if expected != current.meta.version {
            return Ok(CommandOutcome::Conflict {
                project: cmd.project,
                current_version: current.meta.version,
            });
        }
    }
    if let Some(reason) = invalid_delta(current, &cmd) {
        return Ok(CommandOutcome::Rejected { reason });
    }

    // In place: the view is this apply call's own copy, so only the first commit of a call
    // (e.g. of a batch) copies the project and the map paths it touches; readers keep the
    // published view untouched.
    let Some(p) = view.projects.get_mut(&cmd.project).map(Arc::make_mut) else {
        return Ok(CommandOutcome::UnknownProject {
            project: cmd.project,
        });
    };
    let inc = p.meta.incarnation;
    let version = p.meta.version + 1;
    let commit_time_ms = p.meta.commit_time_ms.max(cmd.proposed_time_ms);

    // Bodies arrive canonical (the leader canonicalised them): hashed, recorded and streamed
    // as they are, shared rather than copied. A body is written to sled once, in this
    // version's record; the entity's own key gets it only when that record is compacted (see
    // `compact_history` and `load`).
    for up in &cmd.upserts {
        let hash = up.body.hash(&up.key);
        if let Some(old) = p.hashes.insert(up.key.clone(), hash) {
            p.meta.digest.remove(&old);
        }
        p.meta.digest.add(&hash);
        p.entities.insert(up.key.clone(), up.body.clone());
        p.body_in_record.insert(up.key.clone(), version);
    }
    if !cmd.upserts.is_empty() {
        let upserted: Arc<[EntityKey]> = cmd.upserts.iter().map(|u| u.key.clone()).collect();
        p.upserted_at.insert(version, upserted);
    }
    for key in &cmd.deletes {
        if let Some(old) = p.hashes.remove(key) {
            p.meta.digest.remove(&old);
        }
        p.entities.remove(key);
        p.body_in_record.remove(key);
        // Its stored value (if any) is older than this delete.
        ctx.writer.remove_value(&keys::entity(inc, key))?;
    }

    let record = VersionRecord {
        version,
        author: cmd.author,
        message: cmd.message,
        commit_time_ms,
        request_id: cmd.request_id,
        upserts: cmd.upserts,
        deletes: cmd.deletes,
        digest: p.meta.digest,
    };
    // The record's bodies stay in the log entry (see `records`): the stub names it, and joins
    // this call's group of stubs for the project.
    let stub = RecordStub {
        version,
        commit_time_ms,
        digest: p.meta.digest,
        log_index: at.0,
        position: at.1,
    };
    let group = ctx.open_groups.entry(inc).or_insert_with(|| OpenGroup {
        project: cmd.project.clone(),
        stubs: Vec::new(),
    });
    let follows = group.stubs.last().and_then(|s| s.version.checked_add(1)) == Some(version);
    if !follows || group.stubs.len() >= records::GROUP_MAX {
        write_group(p, &group.stubs, ctx.writer)?;
        group.stubs.clear();
    }
    group.stubs.push(stub);
    let first = group.stubs[0].version;
    p.stub_groups.insert(
        first,
        GroupSpan {
            last: version,
            log_index: group.stubs[0].log_index,
        },
    );

    remember_request(p, &record, ctx)?;
    compact_history(p, version, ctx.history_limit, ctx.writer)?;

    p.meta.version = version;
    p.meta.commit_time_ms = commit_time_ms;
    ctx.writer
        .insert(keys::project(&cmd.project), codec::encode(&p.meta)?);
    let digest = p.meta.digest;
    ctx.changes.push(AppliedChange::Version {
        project: cmd.project.clone(),
        record: Arc::new(record),
    });
    Ok(CommandOutcome::Committed {
        project: cmd.project,
        version,
        digest,
        commit_time_ms,
        duplicate: false,
    })
}

/// Why a delta cannot be applied, if it cannot.
fn invalid_delta(p: &ProjectState, cmd: &CommitCommand) -> Option<String> {
    let mut seen: BTreeSet<&EntityKey> = BTreeSet::new();
    for key in cmd.upserts.iter().map(|u| &u.key).chain(&cmd.deletes) {
        if key.name.is_empty() {
            return Some(format!("a {} with an empty name", key.kind));
        }
        if !seen.insert(key) {
            return Some(format!("{key} appears more than once in the commit"));
        }
    }
    cmd.deletes
        .iter()
        .find(|key| !p.entities.contains_key(*key))
        .map(|key| format!("delete of {key}, which does not exist"))
}

/// Remembers the commit's request id in memory and forgets the one that left the window.
///
/// The `r` key of a remembered id is written only when its version's record is compacted while
/// the id is still remembered (`compact_history`): until then the record itself holds the id,
/// digest and commit time, and `load` reads them from there. With the default history limit
/// (the window's size) records outlive their ids, and a commit writes no `r` key at all.
fn remember_request(
    p: &mut ProjectState,
    record: &VersionRecord,
    ctx: &mut ApplyCtx<'_, '_>,
) -> Result<(), CodecError> {
    let inc = p.meta.incarnation;
    if let Some(id) = &record.request_id {
        let id = RequestId::from(id.as_str());
        let entry = RequestEntry {
            version: record.version,
            digest: record.digest,
            commit_time_ms: record.commit_time_ms,
        };
        p.requests.insert(id.clone(), entry);
        p.request_versions.insert(record.version, id);
    }
    if let Some(expired) = record.version.checked_sub(REQUEST_ID_WINDOW) {
        if let Some(id) = p.request_versions.remove(&expired) {
            if p.requests.get(&id).map(|e| e.version) == Some(expired) {
                p.requests.remove(&id);
                // Its record is gone, so compaction stored the entry.
                if expired < p.meta.oldest_retained {
                    ctx.writer.remove(keys::request(inc, &id));
                }
            }
        }
    }
    Ok(())
}

/// Drops records so that at least `limit` (and at least 1) versions ending at `version` remain:
/// a group of stubs goes whole, once its last version is out.
fn compact_history(
    p: &mut ProjectState,
    version: u64,
    limit: u64,
    writer: &mut SmWriter<'_>,
) -> Result<(), CodecError> {
    let keep_from = version.saturating_sub(limit.max(1)) + 1;
    let inc = p.meta.incarnation;
    while p.meta.oldest_retained < keep_from {
        let first = p.meta.oldest_retained;
        let last = p.stub_groups.get(&first).map_or(first, |g| g.last);
        if last >= keep_from {
            break;
        }
        for old in first..=last {
            // Entities whose latest body is in this record get it on their own key before the
            // record goes (same atomic batch). Rare: only entities unchanged for `limit`
            // versions.
            for key in p
                .upserted_at
                .remove(&old)
                .iter()
                .flat_map(|keys| keys.iter())
            {
                if p.body_in_record.get(key) != Some(&old) {
                    continue; // upserted again or deleted since
                }
                p.body_in_record.remove(key);
                let (Some(hash), Some(body)) = (p.hashes.get(key), p.entities.get(key)) else {
                    continue; // unreachable: the entity exists
                };
                writer.put_value(&keys::entity(inc, key), &entity_value(hash, body))?;
            }
            // A remembered request id outlives its record: its entry is stored on its own now.
            if let Some(id) = p.request_versions.get(&old) {
                if let Some(entry) = p.requests.get(id).filter(|e| e.version == old) {
                    writer.insert(keys::request(inc, id), codec::encode(entry)?);
                }
            }
        }
        let chunks = p.chunked_records.remove(&first).unwrap_or(0);
        writer.remove_value_known(&keys::version(inc, first), chunks);
        p.stub_groups.remove(&first);
        p.meta.oldest_retained = last + 1;
    }
    Ok(())
}

fn create_project(
    view: &mut SmView,
    name: String,
    time_ms: u64,
    log_index: u64,
    ctx: &mut ApplyCtx<'_, '_>,
) -> Result<CommandOutcome, CodecError> {
    if name.is_empty() || name.len() > MAX_PROJECT_NAME_BYTES {
        return Ok(CommandOutcome::Rejected {
            reason: format!("a project name must have 1 to {MAX_PROJECT_NAME_BYTES} bytes"),
        });
    }
    if view.projects.contains_key(&name) {
        return Ok(CommandOutcome::ProjectExists { project: name });
    }
    // Log indexes are unique and `default` holds incarnation 0.
    let Some(incarnation) = log_index.checked_add(1) else {
        return Ok(CommandOutcome::Rejected {
            reason: "log index out of range".to_string(),
        });
    };
    let meta = ProjectMeta {
        incarnation,
        version: 0,
        digest: RulesetDigest::EMPTY,
        commit_time_ms: time_ms,
        oldest_retained: 1,
    };
    ctx.writer
        .insert(keys::project(&name), codec::encode(&meta)?);
    view.projects
        .insert(name.clone(), Arc::new(ProjectState::new(meta)));
    ctx.changes.push(AppliedChange::ProjectCreated {
        project: name.clone(),
    });
    Ok(CommandOutcome::ProjectCreated { project: name })
}

/// O(project size): removes every key of the project, enumerated from memory (which also covers
/// keys written earlier in the same, not yet applied, batch).
fn delete_project(
    view: &mut SmView,
    name: String,
    time_ms: u64,
    ctx: &mut ApplyCtx<'_, '_>,
) -> Result<CommandOutcome, CodecError> {
    if name == DEFAULT_PROJECT {
        return Ok(CommandOutcome::Rejected {
            reason: "the default project cannot be deleted".to_string(),
        });
    }
    let Some(p) = view.projects.remove(&name) else {
        return Ok(CommandOutcome::UnknownProject { project: name });
    };
    let inc = p.meta.incarnation;
    for key in p.entities.keys() {
        ctx.writer.remove_value(&keys::entity(inc, key))?;
    }
    for v in p.meta.oldest_retained..=p.meta.version {
        ctx.writer.remove_value(&keys::version(inc, v))?;
    }
    for id in p.request_versions.values() {
        ctx.writer.remove(keys::request(inc, id));
    }
    ctx.writer.remove(keys::project(&name));
    super::api_keys::revoke_project_keys(view, &name, time_ms, ctx)?;
    ctx.changes.push(AppliedChange::ProjectDeleted {
        project: name.clone(),
    });
    Ok(CommandOutcome::ProjectDeleted { project: name })
}

/// Stored entity value: its 32-byte hash, then the body's canonical JSON text.
pub fn entity_value(hash: &[u8; 32], body: &Body) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + body.len());
    out.extend_from_slice(hash);
    out.extend_from_slice(body.as_str().as_bytes());
    out
}

/// Inverse of [`entity_value`].
pub fn parse_entity_value(raw: &[u8]) -> Result<([u8; 32], Body), CodecError> {
    let hash: [u8; 32] = raw
        .get(..32)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| CodecError::Json("entity value shorter than its hash".to_string()))?;
    Ok((hash, Body::from_canonical_bytes(&raw[32..])?))
}
