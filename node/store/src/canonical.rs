//! A fast path for `flagraft_client::digest`'s entity hash and canonical JSON.
//!
//! The construction is the client's (see `flagraft_client::digest`); this writer only avoids the
//! per-key allocations of the reference implementation, because apply runs it for every upserted
//! entity. `tests::matches_the_reference_implementation` keeps the two identical.
//! The canonical text is also what the store keeps on disk and in history records, so each upsert
//! is serialised exactly once.

use flagraft_client::entity::EntityKey;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

const DOMAIN: &[u8] = b"flagraft.entity.v1";

/// Canonical JSON text of `value` (keys sorted by their UTF-8 bytes, compact).
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    write(value, &mut out);
    out
}

/// `entity_hash` over an already computed canonical text.
pub fn entity_hash_of_canonical(key: &EntityKey, canonical: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update([0]);
    h.update(key.kind.as_str().as_bytes());
    h.update([0]);
    h.update(key.name.as_bytes());
    h.update([0]);
    h.update(canonical);
    h.finalize().into()
}

fn write(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            out.push(b'{');
            let sorted = map
                .keys()
                .zip(map.keys().skip(1))
                .all(|(a, b)| a.as_bytes() < b.as_bytes());
            if sorted {
                for (i, (k, v)) in map.iter().enumerate() {
                    member(i, k, v, out);
                }
            } else {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    member(i, k, v, out);
                }
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(v, out);
            }
            out.push(b']');
        }
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        scalar => {
            // Strings and numbers exactly as serde_json prints them; writing into a Vec cannot
            // fail.
            if serde_json::to_writer(&mut *out, scalar).is_err() {
                out.extend_from_slice(b"null");
            }
        }
    }
}

fn member(i: usize, key: &str, value: &Value, out: &mut Vec<u8>) {
    if i > 0 {
        out.push(b',');
    }
    if serde_json::to_writer(&mut *out, key).is_err() {
        out.extend_from_slice(b"\"\"");
    }
    out.push(b':');
    write(value, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use flagraft_client::digest::{self, entity_key_hash};
    use flagraft_client::entity::EntityKind;
    use proptest::prelude::*;

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((".{0,8}", inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn matches_the_reference_implementation(
            body in json(),
            name in ".{0,10}",
            kind in prop::sample::select(EntityKind::ALL.to_vec()),
        ) {
            let key = EntityKey::new(kind, name);
            let canonical = canonical_json(&body);
            prop_assert_eq!(&canonical, &digest::canonical_json(&body));
            prop_assert_eq!(entity_hash_of_canonical(&key, &canonical), entity_key_hash(&key, &body));
            // The canonical text is the same JSON value.
            let back: Value = serde_json::from_slice(&canonical).unwrap();
            prop_assert_eq!(back, body);
        }
    }
}
