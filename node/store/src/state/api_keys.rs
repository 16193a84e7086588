//! Deterministic application of the key commands, and keys at load.
//!
//! A key is stored under `k <id>` as a bincode [`ApiKey`]: metadata and the SHA-256 of its
//! secret. Revoking keeps the record (with its revocation time) so listings show it; a revoked
//! key never authenticates again.

use super::apply::ApplyCtx;
use super::model::SmView;
use crate::codec::{self, CodecError};
use crate::keys;
use crate::types::{
    ApiKey, ApiKeyKind, AppliedChange, CommandOutcome, CreateKeyCommand, MAX_KEY_DESCRIPTION_BYTES,
    MAX_KEY_ID_BYTES,
};
use std::sync::Arc;

pub fn create_key(
    view: &mut SmView,
    cmd: CreateKeyCommand,
    ctx: &mut ApplyCtx<'_, '_>,
) -> Result<CommandOutcome, CodecError> {
    if cmd.id.is_empty() || cmd.id.len() > MAX_KEY_ID_BYTES {
        return Ok(rejected(format!(
            "a key id must have 1 to {MAX_KEY_ID_BYTES} bytes"
        )));
    }
    if cmd.description.len() > MAX_KEY_DESCRIPTION_BYTES {
        return Ok(rejected(format!(
            "a key description must have at most {MAX_KEY_DESCRIPTION_BYTES} bytes"
        )));
    }
    if view.keys.contains_key(&cmd.id) {
        return Ok(rejected(format!("key id '{}' is already taken", cmd.id)));
    }
    match cmd.kind {
        ApiKeyKind::Admin if !cmd.project.is_empty() => {
            return Ok(rejected(
                "admin keys are cluster-wide: give no project".to_string(),
            ));
        }
        ApiKeyKind::Server | ApiKeyKind::Client if !view.projects.contains_key(&cmd.project) => {
            return Ok(CommandOutcome::UnknownProject {
                project: cmd.project,
            });
        }
        _ => {}
    }
    let key = ApiKey {
        id: cmd.id,
        project: cmd.project,
        kind: cmd.kind,
        sha256: cmd.sha256,
        description: cmd.description,
        created_ms: cmd.time_ms,
        revoked_ms: None,
    };
    ctx.writer
        .insert(keys::api_key(&key.id), codec::encode(&key)?);
    let id = key.id.clone();
    view.keys.insert(id.clone(), Arc::new(key));
    ctx.changes.push(AppliedChange::KeysChanged);
    Ok(CommandOutcome::KeyCreated { id })
}

pub fn revoke_key(
    view: &mut SmView,
    id: String,
    time_ms: u64,
    ctx: &mut ApplyCtx<'_, '_>,
) -> Result<CommandOutcome, CodecError> {
    let Some(key) = view.keys.get(&id) else {
        return Ok(CommandOutcome::UnknownKey { id });
    };
    if let Some(revoked_ms) = key.revoked_ms {
        return Ok(CommandOutcome::KeyRevoked { id, revoked_ms });
    }
    let revoked = revoke(view, &id, time_ms, ctx)?;
    ctx.changes.push(AppliedChange::KeysChanged);
    Ok(CommandOutcome::KeyRevoked {
        id,
        revoked_ms: revoked,
    })
}

/// Revokes every live key of `project` (when the project is deleted).
pub fn revoke_project_keys(
    view: &mut SmView,
    project: &str,
    time_ms: u64,
    ctx: &mut ApplyCtx<'_, '_>,
) -> Result<(), CodecError> {
    let ids: Vec<String> = view
        .keys
        .values()
        .filter(|k| k.project == project && k.revoked_ms.is_none())
        .map(|k| k.id.clone())
        .collect();
    for id in &ids {
        revoke(view, id, time_ms, ctx)?;
    }
    if !ids.is_empty() {
        ctx.changes.push(AppliedChange::KeysChanged);
    }
    Ok(())
}

fn revoke(
    view: &mut SmView,
    id: &str,
    time_ms: u64,
    ctx: &mut ApplyCtx<'_, '_>,
) -> Result<u64, CodecError> {
    let Some(old) = view.keys.get(id) else {
        return Ok(time_ms);
    };
    let mut key = ApiKey::clone(old);
    key.revoked_ms = Some(time_ms);
    ctx.writer.insert(keys::api_key(id), codec::encode(&key)?);
    view.keys.insert(id.to_string(), Arc::new(key));
    Ok(time_ms)
}

fn rejected(reason: String) -> CommandOutcome {
    CommandOutcome::Rejected { reason }
}

/// Every stored key, by id.
pub fn load(tree: &sled::Tree) -> Result<imbl::OrdMap<String, Arc<ApiKey>>, CodecError> {
    let mut out = imbl::OrdMap::new();
    for item in tree.scan_prefix([keys::API_KEY]) {
        let (_, raw) = item?;
        let key: ApiKey = codec::decode(&raw)?;
        out.insert(key.id.clone(), Arc::new(key));
    }
    Ok(out)
}
