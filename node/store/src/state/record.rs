//! Encoding a [`VersionRecord`] from the canonical texts apply already computed, so an upsert's
//! body is serialised once per commit. The bytes are exactly `codec::encode(&record)` with the
//! canonical text in place of `serde_json::to_string(body)`; they decode as a `VersionRecord`.

use crate::codec::{self, CodecError};
use crate::types::VersionRecord;
use flagraft_client::digest::RulesetDigest;
use flagraft_client::entity::EntityKey;
use serde::Serialize;

/// Field for field the serde shape of `VersionRecord` (upserts as `(key, JSON text)`).
#[derive(Serialize)]
struct RecordRef<'a> {
    version: u64,
    author: &'a str,
    message: &'a str,
    commit_time_ms: u64,
    request_id: &'a Option<String>,
    upserts: Vec<(&'a EntityKey, &'a str)>,
    deletes: &'a [EntityKey],
    digest: RulesetDigest,
}

/// `texts[i]` is the canonical JSON of `record.upserts[i].body`.
pub fn encode(record: &VersionRecord, texts: &[Vec<u8>]) -> Result<Vec<u8>, CodecError> {
    let mut upserts = Vec::with_capacity(texts.len());
    for (e, text) in record.upserts.iter().zip(texts) {
        let text = std::str::from_utf8(text).map_err(|e| CodecError::Json(e.to_string()))?;
        upserts.push((&e.key, text));
    }
    codec::encode(&RecordRef {
        version: record.version,
        author: &record.author,
        message: &record.message,
        commit_time_ms: record.commit_time_ms,
        request_id: &record.request_id,
        upserts,
        deletes: &record.deletes,
        digest: record.digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::canonical_json;
    use flagraft_client::entity::{Entity, EntityKind};
    use serde_json::json;

    #[test]
    fn decodes_as_the_record() {
        let record = VersionRecord {
            version: 7,
            author: "a".into(),
            message: "m".into(),
            commit_time_ms: 9,
            request_id: Some("r".into()),
            upserts: vec![
                Entity {
                    key: EntityKey::new(EntityKind::Gate, "g"),
                    body: json!({"z": [1, 2.5, null], "a": {"y": "x", "b": true}}),
                },
                Entity {
                    key: EntityKey::new(EntityKind::IdList, "l"),
                    body: json!(["u1", "u2"]),
                },
            ],
            deletes: vec![EntityKey::new(EntityKind::Config, "c")],
            digest: RulesetDigest([3; 32]),
        };
        let texts: Vec<Vec<u8>> = record
            .upserts
            .iter()
            .map(|e| canonical_json(&e.body))
            .collect();
        let bytes = encode(&record, &texts).unwrap();
        let back: VersionRecord = codec::decode(&bytes).unwrap();
        assert_eq!(back, record);
    }
}
