//! Ruleset digests that nodes and clients compute identically.
//!
//! Construction (stable; documented in ARCHITECTURE.md and docs/protocol.md):
//!
//! ```text
//! entity_hash(kind, name, body) = SHA-256( "flagraft.entity.v1" 0x00
//!                                          kind 0x00 name 0x00 canonical_json(body) )
//! digest(ruleset) = Σ entity_hash(e) for every entity e, as 256-bit big-endian
//!                   unsigned integers, modulo 2^256   (the empty ruleset: all zero)
//! ```
//!
//! `canonical_json` writes objects with keys sorted by their UTF-8 bytes, no
//! insignificant whitespace, strings and numbers as serde_json prints them.
//!
//! Because the sum is commutative and invertible, a commit updates the digest
//! in O(changed entities): subtract the old entity's hash, add the new one.
//! This is an integrity check against bugs and torn state, not a defence
//! against an adversary who chooses entities.

use crate::entity::{EntityKey, EntityKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fmt;

const DOMAIN: &[u8] = b"flagraft.entity.v1";

/// The SHA-256 of one entity (see the module docs).
pub fn entity_hash(kind: EntityKind, name: &str, body: &serde_json::Value) -> [u8; 32] {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(DOMAIN);
    buf.push(0);
    buf.extend_from_slice(kind.as_str().as_bytes());
    buf.push(0);
    buf.extend_from_slice(name.as_bytes());
    buf.push(0);
    write_canonical_json(body, &mut buf);
    Sha256::digest(&buf).into()
}

/// `entity_hash` for a key.
pub fn entity_key_hash(key: &EntityKey, body: &serde_json::Value) -> [u8; 32] {
    entity_hash(key.kind, &key.name, body)
}

/// The canonical JSON text of a value (sorted keys, compact).
pub fn canonical_json(value: &serde_json::Value) -> Vec<u8> {
    let mut buf = Vec::new();
    write_canonical_json(value, &mut buf);
    buf
}

fn write_canonical_json(value: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(k.clone()), out);
                out.push(b':');
                write_canonical_json(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical_json(v, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &serde_json::Value, out: &mut Vec<u8>) {
    // Writing a scalar into a Vec cannot fail: no I/O, no map keys to reject.
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.extend_from_slice(b"null");
    }
}

/// A ruleset digest: a 256-bit sum of entity hashes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct RulesetDigest(pub [u8; 32]);

impl RulesetDigest {
    pub const EMPTY: RulesetDigest = RulesetDigest([0; 32]);

    /// Digest of a whole ruleset given its entity hashes.
    pub fn from_hashes<'a>(hashes: impl IntoIterator<Item = &'a [u8; 32]>) -> Self {
        let mut d = RulesetDigest::EMPTY;
        for h in hashes {
            d.add(h);
        }
        d
    }

    /// Account for an entity that was added.
    pub fn add(&mut self, entity_hash: &[u8; 32]) {
        let mut carry = 0u16;
        for i in (0..32).rev() {
            let s = self.0[i] as u16 + entity_hash[i] as u16 + carry;
            self.0[i] = s as u8;
            carry = s >> 8;
        }
    }

    /// Account for an entity that was removed.
    pub fn remove(&mut self, entity_hash: &[u8; 32]) {
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let s = self.0[i] as i16 - entity_hash[i] as i16 - borrow;
            if s < 0 {
                self.0[i] = (s + 256) as u8;
                borrow = 1;
            } else {
                self.0[i] = s as u8;
                borrow = 0;
            }
        }
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        let bytes = hex::decode(s).ok()?;
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(RulesetDigest(arr))
    }
}

impl fmt::Debug for RulesetDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RulesetDigest({})", self.to_hex())
    }
}

impl fmt::Display for RulesetDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_recursively() {
        let v = json!({"b": 1, "a": {"d": [1, {"z": true, "y": null}], "c": "x"}});
        assert_eq!(
            String::from_utf8(canonical_json(&v)).unwrap(),
            r#"{"a":{"c":"x","d":[1,{"y":null,"z":true}]},"b":1}"#
        );
    }

    #[test]
    fn entity_hash_depends_on_kind_name_and_body() {
        let body = json!({"x": 1});
        let a = entity_hash(EntityKind::Gate, "g", &body);
        assert_ne!(a, entity_hash(EntityKind::Config, "g", &body));
        assert_ne!(a, entity_hash(EntityKind::Gate, "h", &body));
        assert_ne!(a, entity_hash(EntityKind::Gate, "g", &json!({"x": 2})));
        // Key order in the body does not matter.
        let b1: serde_json::Value = serde_json::from_str(r#"{"p":1,"q":2}"#).unwrap();
        let b2: serde_json::Value = serde_json::from_str(r#"{"q":2,"p":1}"#).unwrap();
        assert_eq!(
            entity_hash(EntityKind::Gate, "g", &b1),
            entity_hash(EntityKind::Gate, "g", &b2)
        );
    }

    proptest! {
        #[test]
        fn incremental_updates_equal_full_recompute(
            names in proptest::collection::btree_set("[a-z]{1,6}", 0..20),
            removed in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let hashes: Vec<[u8; 32]> = names
                .iter()
                .map(|n| entity_hash(EntityKind::Gate, n, &serde_json::json!({"n": n})))
                .collect();
            let mut d = RulesetDigest::from_hashes(&hashes);
            let mut kept: Vec<bool> = vec![true; hashes.len()];
            if !hashes.is_empty() {
                for idx in removed {
                    let i = idx.index(hashes.len());
                    if kept[i] {
                        d.remove(&hashes[i]);
                        kept[i] = false;
                    }
                }
            }
            let rest = hashes.iter().zip(&kept).filter(|(_, k)| **k).map(|(h, _)| h);
            prop_assert_eq!(d, RulesetDigest::from_hashes(rest));
        }

        #[test]
        fn add_then_remove_is_identity(start in any::<[u8; 32]>(), h in any::<[u8; 32]>()) {
            let mut d = RulesetDigest(start);
            d.add(&h);
            d.remove(&h);
            prop_assert_eq!(d, RulesetDigest(start));
        }
    }
}
