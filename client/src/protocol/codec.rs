//! JSON text-frame codec with size bounds. Decoding never panics: oversized
//! input is refused before parsing and serde_json limits nesting depth.

use super::messages::{digest_hex, ClientMessage, ServerMessage, SnapshotReason};
use crate::digest::RulesetDigest;
use crate::entity::EntityKey;
use serde::ser::{Serialize, SerializeStruct, Serializer};
use std::cell::Cell;

/// Largest client → node message a node reads.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 64 * 1024;
/// Default largest node → client message a client reads (a snapshot is one message).
pub const DEFAULT_MAX_SERVER_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Longest key in a hello.
pub const MAX_KEY_BYTES: usize = 256;
/// Longest `sdk` string in a hello.
pub const MAX_SDK_BYTES: usize = 128;
const MAX_GOODBYE_REASON_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("invalid message: {0}")]
    Invalid(&'static str),
    #[error("cannot encode message: {0}")]
    Encode(String),
}

pub fn encode_client(msg: &ClientMessage) -> Result<String, ProtocolError> {
    serde_json::to_string(msg).map_err(|e| ProtocolError::Encode(e.to_string()))
}

pub fn encode_server(msg: &ServerMessage) -> Result<String, ProtocolError> {
    serde_json::to_string(msg).map_err(|e| ProtocolError::Encode(e.to_string()))
}

/// Decode a client message (node side), refusing anything over `limit` bytes.
pub fn decode_client(bytes: &[u8], limit: usize) -> Result<ClientMessage, ProtocolError> {
    check_size(bytes, limit)?;
    let msg: ClientMessage =
        serde_json::from_slice(bytes).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    if let ClientMessage::Hello(h) = &msg {
        if h.key.is_empty() || h.key.len() > MAX_KEY_BYTES {
            return Err(ProtocolError::Invalid("hello: key empty or too long"));
        }
        if h.sdk.as_ref().is_some_and(|s| s.len() > MAX_SDK_BYTES) {
            return Err(ProtocolError::Invalid("hello: sdk too long"));
        }
        if h.have_digest.is_some() && h.have_version.is_none() {
            return Err(ProtocolError::Invalid(
                "hello: have_digest without have_version",
            ));
        }
    }
    Ok(msg)
}

/// Decode a node message (client side), refusing anything over `limit` bytes.
pub fn decode_server(bytes: &[u8], limit: usize) -> Result<ServerMessage, ProtocolError> {
    check_size(bytes, limit)?;
    let msg: ServerMessage =
        serde_json::from_slice(bytes).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    match &msg {
        ServerMessage::Delta(d) if d.to_version <= d.from_version => {
            Err(ProtocolError::Invalid("delta: to_version <= from_version"))
        }
        ServerMessage::Goodbye(g) if g.reason.len() > MAX_GOODBYE_REASON_BYTES => {
            Err(ProtocolError::Invalid("goodbye: reason too long"))
        }
        _ => Ok(msg),
    }
}

fn check_size(bytes: &[u8], limit: usize) -> Result<(), ProtocolError> {
    if bytes.len() > limit {
        return Err(ProtocolError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    Ok(())
}

/// Encode a `snapshot` straight from borrowed entities (a node's ruleset map),
/// without cloning the bodies. Same JSON as `encode_server(&ServerMessage::Snapshot(..))`.
pub fn encode_snapshot_from<'a, I>(
    version: u64,
    digest: &RulesetDigest,
    commit_time_ms: u64,
    reason: SnapshotReason,
    entities: I,
) -> Result<String, ProtocolError>
where
    I: Iterator<Item = (&'a EntityKey, &'a serde_json::Value)>,
{
    let snap = SnapshotRef {
        version,
        digest,
        commit_time_ms,
        reason,
        entities: EntitySeq(Cell::new(Some(entities))),
    };
    serde_json::to_string(&snap).map_err(|e| ProtocolError::Encode(e.to_string()))
}

struct SnapshotRef<'d, I> {
    version: u64,
    digest: &'d RulesetDigest,
    commit_time_ms: u64,
    reason: SnapshotReason,
    entities: EntitySeq<I>,
}

impl<'a, I> Serialize for SnapshotRef<'_, I>
where
    I: Iterator<Item = (&'a EntityKey, &'a serde_json::Value)>,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Digest<'d>(&'d RulesetDigest);
        impl Serialize for Digest<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                digest_hex::serialize(self.0, s)
            }
        }
        let mut st = s.serialize_struct("Snapshot", 6)?;
        st.serialize_field("type", "snapshot")?;
        st.serialize_field("version", &self.version)?;
        st.serialize_field("digest", &Digest(self.digest))?;
        st.serialize_field("commit_time_ms", &self.commit_time_ms)?;
        st.serialize_field("reason", &self.reason)?;
        st.serialize_field("entities", &self.entities)?;
        st.end()
    }
}

#[derive(serde::Serialize)]
struct EntityRef<'a> {
    key: &'a EntityKey,
    body: &'a serde_json::Value,
}

/// An entity body the node-side encoders can write: a JSON tree, or JSON text
/// (a node keeps bodies as canonical text) written as it is.
pub trait JsonBody {
    fn write_json(&self, out: &mut String) -> Result<(), ProtocolError>;
}

impl JsonBody for serde_json::Value {
    fn write_json(&self, out: &mut String) -> Result<(), ProtocolError> {
        let text = serde_json::to_string(self).map_err(|e| ProtocolError::Encode(e.to_string()))?;
        out.push_str(&text);
        Ok(())
    }
}

/// The text must be one JSON value (the caller's guarantee: it is not parsed).
impl JsonBody for str {
    fn write_json(&self, out: &mut String) -> Result<(), ProtocolError> {
        out.push_str(self);
        Ok(())
    }
}

/// `{"key":…,"body":…}` — the JSON of an [`crate::entity::Entity`].
fn write_entity<B: JsonBody + ?Sized>(
    key: &EntityKey,
    body: &B,
    out: &mut String,
) -> Result<(), ProtocolError> {
    out.push_str("{\"key\":");
    let key = serde_json::to_string(key).map_err(|e| ProtocolError::Encode(e.to_string()))?;
    out.push_str(&key);
    out.push_str(",\"body\":");
    body.write_json(out)?;
    out.push('}');
    Ok(())
}

/// Encode a `delta` message from borrowed parts: the same JSON as
/// `encode_server(&ServerMessage::Delta(..))`, with bodies written by
/// [`JsonBody`] (so a node writes its stored text without parsing it).
pub fn encode_delta<'a, B, I>(
    from_version: u64,
    to_version: u64,
    commit_time_ms: u64,
    upserts: I,
    deletes: &[EntityKey],
    digest: &RulesetDigest,
) -> Result<String, ProtocolError>
where
    B: JsonBody + ?Sized + 'a,
    I: Iterator<Item = (&'a EntityKey, &'a B)>,
{
    let enc = |e: serde_json::Error| ProtocolError::Encode(e.to_string());
    let mut out = String::with_capacity(256);
    out.push_str(&format!(
        "{{\"type\":\"delta\",\"from_version\":{from_version},\"to_version\":{to_version},\
         \"commit_time_ms\":{commit_time_ms},\"upserts\":["
    ));
    for (i, (key, body)) in upserts.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_entity(key, body, &mut out)?;
    }
    out.push_str("],\"deletes\":");
    out.push_str(&serde_json::to_string(deletes).map_err(enc)?);
    out.push_str(",\"digest\":\"");
    out.push_str(&digest.to_hex());
    out.push_str("\"}");
    Ok(out)
}

/// Encode a snapshot as a `snapshot` message followed by as many `snapshot_part`
/// messages as needed to keep each at about `part_bytes` (a single entity larger
/// than that gets a message of its own). With one part, the same JSON as
/// [`encode_snapshot_from`].
pub fn encode_snapshot_parts<'a, B, I>(
    version: u64,
    digest: &RulesetDigest,
    commit_time_ms: u64,
    reason: SnapshotReason,
    entities: I,
    part_bytes: usize,
) -> Result<Vec<String>, ProtocolError>
where
    B: JsonBody + ?Sized + 'a,
    I: Iterator<Item = (&'a EntityKey, &'a B)>,
{
    let enc = |e: serde_json::Error| ProtocolError::Encode(e.to_string());
    let mut groups: Vec<String> = vec![String::new()];
    let mut text = String::new();
    for (key, body) in entities {
        text.clear();
        write_entity(key, body, &mut text)?;
        let current = groups.last().map_or(0, String::len);
        if current > 0 && current + text.len() > part_bytes {
            groups.push(String::new());
        }
        if let Some(g) = groups.last_mut() {
            if !g.is_empty() {
                g.push(',');
            }
            g.push_str(&text);
        }
    }
    let reason = serde_json::to_string(&reason).map_err(enc)?;
    let n = groups.len();
    Ok(groups
        .into_iter()
        .enumerate()
        .map(|(i, entities)| {
            let more = if i + 1 < n { ",\"more\":true" } else { "" };
            if i == 0 {
                format!(
                    "{{\"type\":\"snapshot\",\"version\":{version},\"digest\":\"{}\",\
                     \"commit_time_ms\":{commit_time_ms},\"reason\":{reason},\
                     \"entities\":[{entities}]{more}}}",
                    digest.to_hex()
                )
            } else {
                format!("{{\"type\":\"snapshot_part\",\"entities\":[{entities}]{more}}}")
            }
        })
        .collect())
}

/// A sequence serialized once from an iterator (serde's Serialize takes &self).
struct EntitySeq<I>(Cell<Option<I>>);

impl<'a, I> Serialize for EntitySeq<I>
where
    I: Iterator<Item = (&'a EntityKey, &'a serde_json::Value)>,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.take() {
            Some(iter) => s.collect_seq(iter.map(|(key, body)| EntityRef { key, body })),
            None => Err(serde::ser::Error::custom("entities serialized twice")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::messages::*;
    use super::*;
    use crate::entity::{Entity, EntityKind};
    use proptest::prelude::*;
    use serde_json::json;

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            (-1e9f64..1e9).prop_map(|f| json!(f)),
            ".{0,12}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::btree_map("[a-z_]{1,6}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_kind() -> impl Strategy<Value = EntityKind> {
        prop::sample::select(EntityKind::ALL.to_vec())
    }

    fn arb_key() -> impl Strategy<Value = EntityKey> {
        (arb_kind(), ".{0,10}").prop_map(|(k, n)| EntityKey::new(k, n))
    }

    fn arb_entity() -> impl Strategy<Value = Entity> {
        (arb_key(), arb_json()).prop_map(|(key, body)| Entity { key, body })
    }

    fn arb_digest() -> impl Strategy<Value = RulesetDigest> {
        any::<[u8; 32]>().prop_map(RulesetDigest)
    }

    fn arb_server() -> impl Strategy<Value = ServerMessage> {
        prop_oneof![
            (any::<u64>(), ".{0,10}", any::<u64>(), any::<u64>()).prop_map(
                |(node_id, project, head_version, heartbeat_ms)| {
                    ServerMessage::Welcome(Welcome {
                        node_id,
                        project,
                        head_version,
                        heartbeat_ms,
                    })
                }
            ),
            (
                any::<u64>(),
                arb_digest(),
                any::<u64>(),
                prop::sample::select(vec![
                    SnapshotReason::Initial,
                    SnapshotReason::HistoryGone,
                    SnapshotReason::DigestMismatch,
                    SnapshotReason::Resync
                ]),
                prop::collection::vec(arb_entity(), 0..5)
            )
                .prop_map(|(version, digest, commit_time_ms, reason, entities)| {
                    ServerMessage::Snapshot(Snapshot {
                        version,
                        digest,
                        commit_time_ms,
                        reason,
                        entities,
                        more: false,
                    })
                }),
            (
                0..u64::MAX - 10,
                1..10u64,
                any::<u64>(),
                prop::collection::vec(arb_entity(), 0..4),
                prop::collection::vec(arb_key(), 0..4),
                arb_digest()
            )
                .prop_map(|(from, step, t, upserts, deletes, digest)| {
                    ServerMessage::Delta(Delta {
                        from_version: from,
                        to_version: from + step,
                        commit_time_ms: t,
                        upserts,
                        deletes,
                        digest,
                    })
                }),
            (any::<u64>(), any::<u64>()).prop_map(|(a, b)| ServerMessage::HistoryGone(
                HistoryGone {
                    have_version: a,
                    oldest_retained: b
                }
            )),
            (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(a, b, c)| {
                ServerMessage::Behind(Behind {
                    have_version: a,
                    node_version: b,
                    wait_ms: c,
                })
            }),
            (any::<u64>(), any::<u64>()).prop_map(|(a, b)| ServerMessage::Heartbeat(Heartbeat {
                head_version: a,
                time_ms: b
            })),
            any::<u64>().prop_map(|id| ServerMessage::Pong { id }),
            (prop::collection::vec(arb_entity(), 0..4), any::<bool>()).prop_map(
                |(entities, more)| ServerMessage::SnapshotPart(SnapshotPart { entities, more })
            ),
            (any::<u16>(), ".{0,40}")
                .prop_map(|(code, reason)| ServerMessage::Goodbye(Goodbye { code, reason })),
        ]
    }

    fn arb_client() -> impl Strategy<Value = ClientMessage> {
        prop_oneof![
            (
                ".{1,40}",
                prop::option::of((any::<u64>(), prop::option::of(arb_digest()))),
                prop::option::of(".{0,20}")
            )
                .prop_filter("key within bounds", |(k, _, _)| k.len() <= MAX_KEY_BYTES)
                .prop_map(|(key, have, sdk)| {
                    let (have_version, have_digest) = match have {
                        Some((v, d)) => (Some(v), d),
                        None => (None, None),
                    };
                    ClientMessage::Hello(Hello {
                        key,
                        have_version,
                        have_digest,
                        sdk,
                    })
                }),
            any::<u64>().prop_map(|id| ClientMessage::Ping { id }),
            any::<u64>().prop_map(|id| ClientMessage::Pong { id }),
        ]
    }

    proptest! {
        #[test]
        fn server_messages_round_trip(msg in arb_server()) {
            let text = encode_server(&msg).unwrap();
            let back = decode_server(text.as_bytes(), DEFAULT_MAX_SERVER_MESSAGE_BYTES).unwrap();
            prop_assert_eq!(back, msg);
        }

        #[test]
        fn client_messages_round_trip(msg in arb_client()) {
            let text = encode_client(&msg).unwrap();
            let back = decode_client(text.as_bytes(), MAX_CLIENT_MESSAGE_BYTES).unwrap();
            prop_assert_eq!(back, msg);
        }

        #[test]
        fn borrowed_snapshot_encoding_matches_owned(
            version in any::<u64>(),
            digest in arb_digest(),
            t in any::<u64>(),
            entities in prop::collection::btree_map(arb_key(), arb_json(), 0..6),
        ) {
            let owned = ServerMessage::Snapshot(Snapshot {
                version,
                digest,
                commit_time_ms: t,
                reason: SnapshotReason::Initial,
                entities: entities
                    .iter()
                    .map(|(k, v)| Entity { key: k.clone(), body: v.clone() })
                    .collect(),
                more: false,
            });
            let borrowed =
                encode_snapshot_from(version, &digest, t, SnapshotReason::Initial, entities.iter())
                    .unwrap();
            prop_assert_eq!(&borrowed, &encode_server(&owned).unwrap());
            prop_assert_eq!(
                decode_server(borrowed.as_bytes(), DEFAULT_MAX_SERVER_MESSAGE_BYTES).unwrap(),
                owned
            );
        }

        #[test]
        fn snapshot_parts_reassemble_and_stay_small(
            version in any::<u64>(),
            digest in arb_digest(),
            entities in prop::collection::btree_map(arb_key(), arb_json(), 0..12),
            part_bytes in 1usize..400,
        ) {
            let parts = encode_snapshot_parts(
                version, &digest, 3, SnapshotReason::Resync, entities.iter(), part_bytes,
            ).unwrap();
            let mut got = Vec::new();
            for (i, text) in parts.iter().enumerate() {
                let last = i + 1 == parts.len();
                let msg = decode_server(text.as_bytes(), DEFAULT_MAX_SERVER_MESSAGE_BYTES).unwrap();
                let (ents, more) = match msg {
                    ServerMessage::Snapshot(s) if i == 0 => {
                        prop_assert_eq!((s.version, s.digest, s.reason), (version, digest, SnapshotReason::Resync));
                        (s.entities, s.more)
                    }
                    ServerMessage::SnapshotPart(p) if i > 0 => (p.entities, p.more),
                    other => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
                };
                prop_assert_eq!(more, !last);
                // Over the target only when one entity alone is larger.
                prop_assert!(ents.len() == 1 || text.len() <= part_bytes + 200);
                got.extend(ents);
            }
            let want: Vec<Entity> = entities
                .iter()
                .map(|(k, v)| Entity { key: k.clone(), body: v.clone() })
                .collect();
            prop_assert_eq!(got, want);
            let whole = encode_snapshot_parts(
                version, &digest, 3, SnapshotReason::Resync, entities.iter(), usize::MAX,
            ).unwrap();
            let single = encode_snapshot_from(version, &digest, 3, SnapshotReason::Resync, entities.iter()).unwrap();
            prop_assert_eq!(whole, vec![single]);
        }

        #[test]
        fn encoded_deltas_are_the_messages_json(
            from in 0u64..1_000_000,
            step in 1u64..4,
            t in any::<u64>(),
            digest in arb_digest(),
            upserts in prop::collection::vec(arb_entity(), 0..5),
            deletes in prop::collection::vec(arb_key(), 0..4),
        ) {
            let owned = ServerMessage::Delta(Delta {
                from_version: from,
                to_version: from + step,
                commit_time_ms: t,
                upserts: upserts.clone(),
                deletes: deletes.clone(),
                digest,
            });
            let want = encode_server(&owned).unwrap();
            let from_trees = encode_delta(
                from, from + step, t, upserts.iter().map(|e| (&e.key, &e.body)), &deletes, &digest,
            ).unwrap();
            prop_assert_eq!(&from_trees, &want);
            // Bodies as JSON text (what a node stores) give the same message.
            let texts: Vec<(EntityKey, String)> = upserts
                .iter()
                .map(|e| (e.key.clone(), serde_json::to_string(&e.body).unwrap()))
                .collect();
            let from_text = encode_delta(
                from, from + step, t, texts.iter().map(|(k, b)| (k, b.as_str())), &deletes, &digest,
            ).unwrap();
            prop_assert_eq!(&from_text, &want);
            prop_assert_eq!(decode_server(from_text.as_bytes(), DEFAULT_MAX_SERVER_MESSAGE_BYTES).unwrap(), owned);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_server(&bytes, 256);
            let _ = decode_client(&bytes, 256);
        }

        #[test]
        fn mutated_messages_never_panic(msg in arb_server(), cut in any::<prop::sample::Index>(), flip in any::<u8>()) {
            let mut bytes = encode_server(&msg).unwrap().into_bytes();
            let i = cut.index(bytes.len());
            bytes[i] ^= flip;
            let _ = decode_server(&bytes, DEFAULT_MAX_SERVER_MESSAGE_BYTES);
            let _ = decode_server(&bytes[..i], DEFAULT_MAX_SERVER_MESSAGE_BYTES);
            let _ = decode_client(&bytes, MAX_CLIENT_MESSAGE_BYTES);
        }
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let msg = encode_client(&ClientMessage::Ping { id: 1 }).unwrap();
        assert_eq!(
            decode_client(msg.as_bytes(), 4),
            Err(ProtocolError::TooLarge {
                size: msg.len(),
                limit: 4
            })
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!(
            "{{\"type\":\"ping\",\"id\":{}1{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(decode_client(deep.as_bytes(), usize::MAX).is_err());
        assert!(decode_server(deep.as_bytes(), usize::MAX).is_err());
    }

    #[test]
    fn wire_format_is_as_documented() {
        let hello = encode_client(&ClientMessage::Hello(Hello {
            key: "k".into(),
            have_version: Some(3),
            have_digest: Some(RulesetDigest::EMPTY),
            sdk: None,
        }))
        .unwrap();
        assert_eq!(
            hello,
            format!(
                r#"{{"type":"hello","key":"k","have_version":3,"have_digest":"{}"}}"#,
                "0".repeat(64)
            )
        );
        let d = encode_server(&ServerMessage::Delta(Delta {
            from_version: 1,
            to_version: 2,
            commit_time_ms: 5,
            upserts: vec![Entity {
                key: EntityKey::new(EntityKind::Gate, "g"),
                body: json!({"on": true}),
            }],
            deletes: vec![EntityKey::new(EntityKind::Config, "c")],
            digest: RulesetDigest::EMPTY,
        }))
        .unwrap();
        assert_eq!(
            d,
            format!(
                concat!(
                    r#"{{"type":"delta","from_version":1,"to_version":2,"commit_time_ms":5,"#,
                    r#""upserts":[{{"key":{{"kind":"gate","name":"g"}},"body":{{"on":true}}}}],"#,
                    r#""deletes":[{{"kind":"config","name":"c"}}],"digest":"{}"}}"#
                ),
                "0".repeat(64)
            )
        );
    }

    #[test]
    fn invalid_messages_are_refused() {
        let bad_delta = format!(
            r#"{{"type":"delta","from_version":2,"to_version":2,"commit_time_ms":0,"digest":"{}"}}"#,
            "0".repeat(64)
        );
        assert!(matches!(
            decode_server(bad_delta.as_bytes(), 1 << 20),
            Err(ProtocolError::Invalid(_))
        ));
        let bad_digest = r#"{"type":"hello","key":"k","have_version":1,"have_digest":"xyz"}"#;
        assert!(decode_client(bad_digest.as_bytes(), 1 << 20).is_err());
        let digest_alone = format!(
            r#"{{"type":"hello","key":"k","have_digest":"{}"}}"#,
            "0".repeat(64)
        );
        assert!(decode_client(digest_alone.as_bytes(), 1 << 20).is_err());
        assert!(decode_client(br#"{"type":"hello","key":""}"#, 1 << 20).is_err());
        assert!(decode_client(br#"{"type":"nope"}"#, 1 << 20).is_err());
    }
}
