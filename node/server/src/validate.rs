//! Turning Admin requests into store commands, refusing malformed or oversized ones.

use crate::limits::{
    MAX_CHANGES_PER_COMMIT, MAX_COMMIT_BYTES, MAX_ENTITY_JSON_BYTES, MAX_NAME_BYTES, MAX_TEXT_BYTES,
};
use flagraft_client::entity::{Entity, EntityKey, EntityKind};
use flagraft_proto::admin::v1 as pb;
use flagraft_store::{Body, CommitCommand, Upsert, VersionRecord};
use std::collections::HashSet;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid(msg: impl Into<String>) -> Invalid {
    Invalid(msg.into())
}

/// A project name: 1..=MAX_NAME_BYTES of `[A-Za-z0-9_.-]`.
pub fn project_name(name: &str) -> Result<(), Invalid> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(invalid(format!(
            "project name must be 1 to {MAX_NAME_BYTES} bytes"
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(invalid(format!(
            "project name '{name}' may only hold letters, digits, '_', '-', '.'"
        )));
    }
    Ok(())
}

fn entity_key(kind: &str, name: &str) -> Result<EntityKey, Invalid> {
    let kind = EntityKind::parse(kind).ok_or_else(|| {
        invalid(format!(
            "unknown entity kind '{}' (gate, config, layer, id_list, setting)",
            truncate(kind)
        ))
    })?;
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(invalid(format!(
            "{kind} name must be 1 to {MAX_NAME_BYTES} bytes"
        )));
    }
    Ok(EntityKey::new(kind, name))
}

fn bounded_text(what: &str, s: &str) -> Result<(), Invalid> {
    if s.len() > MAX_TEXT_BYTES {
        return Err(invalid(format!("{what} exceeds {MAX_TEXT_BYTES} bytes")));
    }
    Ok(())
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A well-formed commit: the command to propose, its bodies in canonical
/// text, and the same bodies parsed, for the leader's ruleset check.
#[derive(Debug)]
pub struct ValidCommit {
    pub cmd: CommitCommand,
    pub parsed: Vec<Entity>,
}

/// Validates a CommitRequest; the leader stamps `proposed_time_ms` later.
pub fn commit_command(req: pb::CommitRequest) -> Result<ValidCommit, Invalid> {
    project_name(&req.project)?;
    bounded_text("author", &req.author)?;
    bounded_text("message", &req.message)?;
    if let Some(id) = &req.request_id {
        if id.is_empty() || id.len() > MAX_NAME_BYTES {
            return Err(invalid(format!(
                "request_id must be 1 to {MAX_NAME_BYTES} bytes"
            )));
        }
    }
    let changes = req.upserts.len() + req.deletes.len();
    if changes > MAX_CHANGES_PER_COMMIT {
        return Err(invalid(format!(
            "{changes} changes in one commit; at most {MAX_CHANGES_PER_COMMIT}"
        )));
    }
    let mut seen = HashSet::with_capacity(changes);
    let mut total = 0usize;
    let mut upserts = Vec::with_capacity(req.upserts.len());
    let mut parsed = Vec::with_capacity(req.upserts.len());
    for e in req.upserts {
        let key = entity_key(&e.kind, &e.name)?;
        if e.json.len() > MAX_ENTITY_JSON_BYTES {
            return Err(invalid(format!(
                "{key}: body exceeds {MAX_ENTITY_JSON_BYTES} bytes"
            )));
        }
        total += e.json.len();
        if total > MAX_COMMIT_BYTES {
            return Err(invalid(format!(
                "commit bodies exceed {MAX_COMMIT_BYTES} bytes"
            )));
        }
        // serde_json bounds nesting depth itself (128), so this cannot overflow the stack.
        let body: serde_json::Value = serde_json::from_str(&e.json)
            .map_err(|err| invalid(format!("{key}: body is not JSON: {err}")))?;
        if !seen.insert(key.clone()) {
            return Err(invalid(format!("{key} appears twice in one commit")));
        }
        upserts.push(Upsert::new(key.clone(), &body));
        parsed.push(Entity { key, body });
    }
    let mut deletes = Vec::with_capacity(req.deletes.len());
    for k in req.deletes {
        let key = entity_key(&k.kind, &k.name)?;
        if !seen.insert(key.clone()) {
            return Err(invalid(format!("{key} appears twice in one commit")));
        }
        deletes.push(key);
    }
    // Whether the bodies compile (with the rest of the ruleset) is checked by
    // the leader before proposing: see `ruleset_check`.
    let cmd = CommitCommand {
        project: req.project,
        upserts,
        deletes,
        author: req.author,
        message: req.message,
        expected_version: req.expected_version,
        request_id: req.request_id,
        proposed_time_ms: 0,
    };
    Ok(ValidCommit { cmd, parsed })
}

pub fn entity_to_pb(key: &EntityKey, body: &Body) -> pb::Entity {
    pb::Entity {
        kind: key.kind.as_str().to_string(),
        name: key.name.clone(),
        json: body.as_str().to_string(),
    }
}

pub fn key_to_pb(k: &EntityKey) -> pb::EntityKey {
    pb::EntityKey {
        kind: k.kind.as_str().to_string(),
        name: k.name.clone(),
    }
}

pub fn record_to_pb(r: &VersionRecord) -> pb::VersionRecord {
    pb::VersionRecord {
        version: r.version,
        author: r.author.clone(),
        message: r.message.clone(),
        commit_time_ms: r.commit_time_ms,
        request_id: r.request_id.clone(),
        upserts: r
            .upserts
            .iter()
            .map(|u| entity_to_pb(&u.key, &u.body))
            .collect(),
        deletes: r.deletes.iter().map(key_to_pb).collect(),
        digest: r.digest.to_hex(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATE: &str = r#"{"type":"feature_gate","entity":"feature_gate","enabled":true,"salt":"s","defaultValue":false,"idType":"userID","rules":[]}"#;

    fn upsert(kind: &str, name: &str, json: &str) -> pb::Entity {
        pb::Entity {
            kind: kind.into(),
            name: name.into(),
            json: json.into(),
        }
    }

    fn request(upserts: Vec<pb::Entity>) -> pb::CommitRequest {
        pb::CommitRequest {
            project: "default".into(),
            upserts,
            author: "a".into(),
            ..Default::default()
        }
    }

    #[test]
    fn well_formed_commit_is_accepted() {
        let mut req = request(vec![upsert("gate", "g", GATE)]);
        req.deletes.push(pb::EntityKey {
            kind: "config".into(),
            name: "c".into(),
        });
        req.request_id = Some("r1".into());
        let ValidCommit { cmd, parsed } = commit_command(req).unwrap();
        assert_eq!(cmd.upserts[0].key, EntityKey::new(EntityKind::Gate, "g"));
        assert_eq!(parsed[0].key, cmd.upserts[0].key);
        assert_eq!(parsed[0].body["enabled"], serde_json::json!(true));
        assert_eq!(parsed[0].body["salt"], serde_json::json!("s"));
        // The proposed body is the canonical text of the parsed one.
        assert_eq!(cmd.upserts[0].body, Body::from_value(&parsed[0].body));
        assert_eq!(cmd.deletes, vec![EntityKey::new(EntityKind::Config, "c")]);
        assert_eq!(cmd.request_id.as_deref(), Some("r1"));
    }

    #[test]
    fn malformed_commits_are_refused_with_a_reason() {
        let cases: Vec<(pb::CommitRequest, &str)> = vec![
            (
                request(vec![upsert("flag", "g", "{}")]),
                "unknown entity kind",
            ),
            (request(vec![upsert("gate", "", "{}")]), "name must be"),
            (request(vec![upsert("gate", "g", "{nope")]), "not JSON"),
            (
                request(vec![upsert("gate", "g", GATE), upsert("gate", "g", GATE)]),
                "twice",
            ),
            (
                request(vec![upsert("gate", "g", &"[".repeat(200))]),
                "not JSON",
            ),
            (
                pb::CommitRequest {
                    project: "a b".into(),
                    ..Default::default()
                },
                "project name",
            ),
            (
                pb::CommitRequest {
                    project: "p".into(),
                    message: "x".repeat(MAX_TEXT_BYTES + 1),
                    ..Default::default()
                },
                "message exceeds",
            ),
            (
                pb::CommitRequest {
                    project: "p".into(),
                    request_id: Some(String::new()),
                    ..Default::default()
                },
                "request_id",
            ),
        ];
        for (req, want) in cases {
            let err = commit_command(req).unwrap_err();
            assert!(err.0.contains(want), "{err} should mention {want}");
        }
    }

    #[test]
    fn oversized_body_is_refused_before_parsing() {
        let big = format!("\"{}\"", "x".repeat(MAX_ENTITY_JSON_BYTES));
        let err = commit_command(request(vec![upsert("gate", "g", &big)])).unwrap_err();
        assert!(err.0.contains("exceeds"));
    }
}
