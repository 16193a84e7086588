//! Rulesets of past versions, rebuilt from the retained history.
//!
//! The store keeps the current ruleset and the records (deltas) of the last
//! `history_limit` versions. The ruleset at version V is the current one with
//! every entity changed after V put back to its state at V: its body in the
//! latest record at or before V that touched it, or absent if that record
//! deleted it or (when the whole history since version 1 is retained) no
//! record touched it.
//!
//! Which versions can be rebuilt:
//! * the current one, always;
//! * V >= oldest retained record, as long as every entity changed after V
//!   either was touched by a retained record at or before V or did not exist
//!   at V (checked with V's digest: an entity that existed would be in it);
//! * V = 0 (the empty ruleset) while version 1's record is retained.
//!
//! Anything else is NOT_FOUND with a message naming the retained range. The
//! rebuilt ruleset's digest is computed incrementally (only changed entities
//! are hashed) and must equal the digest recorded for V; a mismatch is an
//! internal error, never a silently wrong answer.

use flagraft_client::digest::RulesetDigest;
use flagraft_client::entity::EntityKey;
use flagraft_store::{Body, EntityMap, StateMachineStore, VersionRecord};
use std::collections::{BTreeMap, BTreeSet};
use tonic::Status;

/// A project's ruleset as of one version.
#[derive(Clone, Debug)]
pub struct VersionView {
    pub version: u64,
    pub digest: RulesetDigest,
    /// 0 for version 0.
    pub commit_time_ms: u64,
    pub entities: EntityMap,
}

/// A rebuilt version and the keys changed between it and the head it was
/// rebuilt from (every other entity is the same in both).
pub struct Rebuilt {
    pub view: VersionView,
    pub head: VersionView,
    pub changed_since: BTreeSet<EntityKey>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HistoryError {
    #[error("no project '{0}'")]
    UnknownProject(String),
    #[error("project '{project}' has no version {version} (current: {current})")]
    NoSuchVersion {
        project: String,
        version: u64,
        current: u64,
    },
    #[error("version {version} of project '{project}' is no longer retained: {why} (history holds versions {oldest}..={current})")]
    Compacted {
        project: String,
        version: u64,
        oldest: u64,
        current: u64,
        why: String,
    },
    #[error("history of project '{0}' is inconsistent: {1}")]
    Inconsistent(String, String),
    #[error("cannot read history: {0}")]
    Store(String),
}

impl From<HistoryError> for Status {
    fn from(e: HistoryError) -> Status {
        match e {
            HistoryError::UnknownProject(_)
            | HistoryError::NoSuchVersion { .. }
            | HistoryError::Compacted { .. } => Status::not_found(e.to_string()),
            HistoryError::Inconsistent(..) | HistoryError::Store(_) => {
                Status::internal(e.to_string())
            }
        }
    }
}

/// Records read per page: a page of large commits stays small in memory.
const PAGE: usize = 64;

/// Calls `visit` with records `from..=to` of `project`, ascending, one page
/// in memory at a time; an error if any is missing.
fn visit_records(
    sm: &StateMachineStore,
    project: &str,
    from: u64,
    to: u64,
    compacted: impl Fn(String) -> HistoryError,
    mut visit: impl FnMut(VersionRecord),
) -> Result<(), HistoryError> {
    let mut next = from;
    while next <= to {
        let page = sm
            .history(project, next, PAGE)
            .map_err(|e| HistoryError::Store(e.to_string()))?;
        let before = next;
        for r in page.into_iter().take_while(|r| r.version <= to) {
            if r.version != next {
                return Err(compacted(format!("record {next} is gone")));
            }
            next += 1;
            visit(r);
        }
        if next == before {
            return Err(compacted(format!("record {next} is gone")));
        }
    }
    Ok(())
}

/// Records `from..=to` (a short range), ascending.
fn records(
    sm: &StateMachineStore,
    project: &str,
    from: u64,
    to: u64,
    compacted: impl Fn(String) -> HistoryError,
) -> Result<Vec<VersionRecord>, HistoryError> {
    let mut out = Vec::new();
    visit_records(sm, project, from, to, compacted, |r| out.push(r))?;
    Ok(out)
}

fn touched(r: &VersionRecord) -> impl Iterator<Item = &EntityKey> {
    r.upserts.iter().map(|e| &e.key).chain(&r.deletes)
}

/// The current ruleset of `project`.
pub fn current(sm: &StateMachineStore, project: &str) -> Result<VersionView, HistoryError> {
    let rs = sm
        .ruleset(project)
        .ok_or_else(|| HistoryError::UnknownProject(project.to_string()))?;
    Ok(VersionView {
        version: rs.head.version,
        digest: rs.head.digest,
        commit_time_ms: rs.head.commit_time_ms,
        entities: rs.entities,
    })
}

/// The ruleset of `project` at `version` (see the module docs).
pub fn rebuild(
    sm: &StateMachineStore,
    project: &str,
    version: u64,
) -> Result<Rebuilt, HistoryError> {
    let head = current(sm, project)?;
    if version > head.version {
        return Err(HistoryError::NoSuchVersion {
            project: project.to_string(),
            version,
            current: head.version,
        });
    }
    if version == head.version {
        return Ok(Rebuilt {
            view: head.clone(),
            head,
            changed_since: BTreeSet::new(),
        });
    }
    let oldest = sm.oldest_retained(project).unwrap_or(head.version + 1);
    let compacted = |why: String| HistoryError::Compacted {
        project: project.to_string(),
        version,
        oldest,
        current: head.version,
        why,
    };
    let full_history = oldest <= 1;
    if version < oldest && !(version == 0 && full_history) {
        return Err(compacted("its record was compacted".into()));
    }

    // Everything changed after `version`, up to the head read above.
    let mut changed: BTreeSet<EntityKey> = BTreeSet::new();
    visit_records(sm, project, version + 1, head.version, compacted, |r| {
        changed.extend(touched(&r).cloned());
    })?;

    // Each changed entity's state at `version`: the latest retained record at
    // or before it that touched the entity, scanning backwards page by page.
    let mut at_version: BTreeMap<EntityKey, Option<Body>> = BTreeMap::new();
    // Version `version`'s digest and commit time, from its record.
    let mut expected = (version == 0).then_some((RulesetDigest::EMPTY, 0));
    let mut end = version;
    while end >= oldest.max(1) && at_version.len() < changed.len() {
        let start = end.saturating_sub(PAGE as u64 - 1).max(oldest.max(1));
        let page = records(sm, project, start, end, compacted)?;
        for r in page.iter().rev() {
            if r.version == version {
                expected = Some((r.digest, r.commit_time_ms));
            }
            for e in &r.upserts {
                if changed.contains(&e.key) && !at_version.contains_key(&e.key) {
                    at_version.insert(e.key.clone(), Some(e.body.clone()));
                }
            }
            for k in &r.deletes {
                if changed.contains(k) && !at_version.contains_key(k) {
                    at_version.insert(k.clone(), None);
                }
            }
        }
        if start <= 1 {
            break;
        }
        end = start - 1;
    }
    let expected = match expected {
        Some(e) => e,
        // Not read above when nothing changed after `version` (empty commits).
        None => sm
            .version_digest(project, version)
            .map_err(|e| HistoryError::Store(e.to_string()))?
            .ok_or_else(|| compacted("its record was compacted".into()))?,
    };
    // Entities changed after `version` but untouched by any retained record up
    // to it: absent at `version` if history goes back to version 1; otherwise
    // assumed absent, which the digest check below confirms or refutes (an
    // entity that existed then would have added its hash to the digest).
    let mut assumed_absent = Vec::new();
    for key in &changed {
        if !at_version.contains_key(key) {
            if !full_history {
                assumed_absent.push(key.clone());
            }
            at_version.insert(key.clone(), None);
        }
    }

    let mut entities = head.entities.clone();
    let mut digest = head.digest;
    for (key, body) in at_version {
        if let Some(now) = entities.get(&key) {
            digest.remove(&now.hash(&key));
        }
        match body {
            Some(b) => {
                digest.add(&b.hash(&key));
                entities.insert(key, b);
            }
            None => {
                entities.remove(&key);
            }
        }
    }
    if digest != expected.0 {
        if let Some(key) = assumed_absent.first() {
            return Err(compacted(format!(
                "{key} changed after it and its earlier state is older than the retained history"
            )));
        }
        return Err(HistoryError::Inconsistent(
            project.to_string(),
            format!(
                "version {version} rebuilt with digest {}, but its record says {}",
                digest.to_hex(),
                expected.0.to_hex()
            ),
        ));
    }
    Ok(Rebuilt {
        view: VersionView {
            version,
            digest,
            commit_time_ms: expected.1,
            entities,
        },
        head,
        changed_since: changed,
    })
}

/// One entity's change between two versions.
#[derive(Debug, PartialEq)]
pub struct Change {
    pub key: EntityKey,
    pub from: Option<Body>,
    pub to: Option<Body>,
}

/// The two versions and what differs between them, in key order.
pub struct VersionDiff {
    pub from: VersionView,
    pub to: VersionView,
    pub changes: Vec<Change>,
}

/// Entity-by-entity differences between `from` and `to` (either order).
pub fn diff(
    sm: &StateMachineStore,
    project: &str,
    from: u64,
    to: Option<u64>,
) -> Result<VersionDiff, HistoryError> {
    let older = rebuild(sm, project, from.min(to.unwrap_or(u64::MAX)))?;
    let to = to.unwrap_or(older.head.version);
    if to > older.head.version {
        return Err(HistoryError::NoSuchVersion {
            project: project.to_string(),
            version: to,
            current: older.head.version,
        });
    }
    let newer = rebuild(sm, project, from.max(to))?;
    // Keys outside `older.changed_since` are equal in every version from the
    // older one to the head. A head that moved between the two rebuilds only
    // adds keys to the newer side's set, so check both.
    let keys: BTreeSet<&EntityKey> = older
        .changed_since
        .iter()
        .chain(&newer.changed_since)
        .collect();
    let (a, b) = if from <= to {
        (&older.view, &newer.view)
    } else {
        (&newer.view, &older.view)
    };
    let changes = keys
        .into_iter()
        .filter_map(|k| {
            let (x, y) = (a.entities.get(k), b.entities.get(k));
            (x != y).then(|| Change {
                key: k.clone(),
                from: x.cloned(),
                to: y.cloned(),
            })
        })
        .collect();
    Ok(VersionDiff {
        from: a.clone(),
        to: b.clone(),
        changes,
    })
}
