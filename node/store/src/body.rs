//! Entity bodies as canonical JSON text.
//!
//! A body is canonicalised once, by the leader when it accepts a commit; from then on every
//! node, the log, the state machine, history records, snapshots and the update stream carry
//! the same text. It is what the entity hash covers, what sled stores and what clients
//! receive, so nothing on the commit path parses, re-serialises or deep-copies a JSON tree:
//! a body is one shared allocation. Readers that need the structure (the initialize
//! evaluator, the leader's validation of referenced entities) parse it where they need it.

use crate::canonical;
use crate::codec::CodecError;
use flagraft_client::entity::{Entity, EntityKey};
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::fmt;
use std::sync::Arc;

/// Canonical JSON text of one entity body (see `flagraft_client::digest::canonical_json`).
/// Cloning is O(1).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Body(Arc<str>);

impl Body {
    /// The canonical text of `value`.
    pub fn from_value(value: &Value) -> Body {
        let text = canonical::canonical_json(value);
        // canonical_json writes UTF-8 (JSON text of Rust strings); the fallback is unreachable.
        Body(match String::from_utf8(text) {
            Ok(s) => s.into(),
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into(),
        })
    }

    /// Text that is already canonical (a log entry, a stored value, a record): checked to be
    /// one JSON value, without building it. Canonical form is the proposer's duty: every node
    /// hashes exactly these bytes, so nodes agree whatever they are.
    pub fn from_canonical(text: String) -> Result<Body, CodecError> {
        let mut de = serde_json::Deserializer::from_str(&text);
        IgnoredAny::deserialize(&mut de)
            .and_then(|_| de.end())
            .map_err(|e| CodecError::Json(format!("entity body: {e}")))?;
        Ok(Body(text.into()))
    }

    /// [`Body::from_canonical`] from bytes.
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<Body, CodecError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| CodecError::Json(format!("entity body: {e}")))?;
        Body::from_canonical(text.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The body as a JSON tree (a parse: for readers that need the structure).
    pub fn to_value(&self) -> Result<Value, CodecError> {
        serde_json::from_str(&self.0).map_err(|e| CodecError::Json(format!("entity body: {e}")))
    }

    /// The entity hash of this body under `key` (`flagraft_client::digest::entity_key_hash`).
    pub fn hash(&self, key: &EntityKey) -> [u8; 32] {
        canonical::entity_hash_of_canonical(key, self.0.as_bytes())
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// As a string (the JSON text), so non-self-describing codecs (bincode) carry it too. The
/// bytes are those of the `(key, JSON text)` pairs written before bodies were shared.
impl Serialize for Body {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Body, D::Error> {
        let text = String::deserialize(d)?;
        Body::from_canonical(text).map_err(serde::de::Error::custom)
    }
}

/// One upserted entity of a commit or a version record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upsert {
    pub key: EntityKey,
    pub body: Body,
}

impl Upsert {
    pub fn new(key: EntityKey, body: &Value) -> Upsert {
        Upsert {
            key,
            body: Body::from_value(body),
        }
    }

    /// The entity with its body parsed.
    pub fn to_entity(&self) -> Result<Entity, CodecError> {
        Ok(Entity {
            key: self.key.clone(),
            body: self.body.to_value()?,
        })
    }
}

impl From<&Entity> for Upsert {
    fn from(e: &Entity) -> Upsert {
        Upsert::new(e.key.clone(), &e.body)
    }
}

impl From<Entity> for Upsert {
    fn from(e: Entity) -> Upsert {
        Upsert::from(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use flagraft_client::digest::entity_key_hash;
    use flagraft_client::entity::EntityKind;
    use serde_json::json;

    #[test]
    fn a_body_is_the_canonical_text_and_hashes_like_the_client() {
        let value = json!({"z": [1, 2.5, null], "a": {"y": "x", "b": true}});
        let key = EntityKey::new(EntityKind::Gate, "g");
        let body = Body::from_value(&value);
        assert_eq!(
            body.as_str(),
            r#"{"a":{"b":true,"y":"x"},"z":[1,2.5,null]}"#
        );
        assert_eq!(body.hash(&key), entity_key_hash(&key, &value));
        assert_eq!(body.to_value().unwrap(), value);
    }

    #[test]
    fn an_upsert_encodes_like_a_key_and_json_text() {
        let up = Upsert::new(EntityKey::new(EntityKind::Config, "c"), &json!({"v": 1}));
        let pair = (up.key.clone(), up.body.as_str().to_string());
        assert_eq!(codec::encode(&up).unwrap(), codec::encode(&pair).unwrap());
        let back: Upsert = codec::decode(&codec::encode(&up).unwrap()).unwrap();
        assert_eq!(back, up);
    }

    #[test]
    fn text_that_is_not_one_json_value_is_refused() {
        for bad in ["", "{", "{} {}", "nul", "[1,]"] {
            assert!(Body::from_canonical(bad.to_string()).is_err(), "{bad:?}");
        }
        let pair = (EntityKey::new(EntityKind::Gate, "g"), "{\"a\":".to_string());
        assert!(codec::decode::<Upsert>(&codec::encode(&pair).unwrap()).is_err());
    }
}
