//! Wire messages of `flagraft.v1`. Each is one JSON object with a `type` tag.

use crate::digest::RulesetDigest;
use crate::entity::{Entity, EntityKey};
use serde::{Deserialize, Serialize};

/// Client → node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    Hello(Hello),
    Ping { id: u64 },
    Pong { id: u64 },
}

/// The first message of a connection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// A server key of the project to follow.
    pub key: String,
    /// The version the client already holds, to resume from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub have_version: Option<u64>,
    /// The digest of the client's ruleset at `have_version`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_digest_hex"
    )]
    pub have_digest: Option<RulesetDigest>,
    /// SDK name and version, informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdk: Option<String>,
}

/// Node → client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Welcome(Welcome),
    Snapshot(Snapshot),
    SnapshotPart(SnapshotPart),
    Delta(Delta),
    HistoryGone(HistoryGone),
    Behind(Behind),
    Heartbeat(Heartbeat),
    Pong { id: u64 },
    Goodbye(Goodbye),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub node_id: u64,
    pub project: String,
    /// The node's applied version of the project when it accepted the hello.
    pub head_version: u64,
    pub heartbeat_ms: u64,
}

/// Why a snapshot (rather than deltas) was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotReason {
    Initial,
    HistoryGone,
    DigestMismatch,
    Resync,
}

/// The whole ruleset at `version`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u64,
    #[serde(with = "digest_hex")]
    pub digest: RulesetDigest,
    pub commit_time_ms: u64,
    pub reason: SnapshotReason,
    pub entities: Vec<Entity>,
    /// More entities follow in `snapshot_part` messages (keeps every frame, and so
    /// every connection's buffers, small).
    #[serde(default, skip_serializing_if = "is_false")]
    pub more: bool,
}

/// The next entities of a snapshot whose header said `more`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotPart {
    pub entities: Vec<Entity>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub more: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The change from exactly `from_version` to `to_version`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    pub from_version: u64,
    pub to_version: u64,
    pub commit_time_ms: u64,
    #[serde(default)]
    pub upserts: Vec<Entity>,
    #[serde(default)]
    pub deletes: Vec<EntityKey>,
    /// Digest of the ruleset after applying this delta.
    #[serde(with = "digest_hex")]
    pub digest: RulesetDigest,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryGone {
    pub have_version: u64,
    pub oldest_retained: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Behind {
    pub have_version: u64,
    pub node_version: u64,
    pub wait_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub head_version: u64,
    pub time_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Goodbye {
    pub code: u16,
    pub reason: String,
}

/// Body of a `200` answer of the polling endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PollResponse {
    pub head_version: u64,
    pub etag: String,
    pub messages: Vec<ServerMessage>,
}

/// Digests travel as 64 lowercase hex characters.
pub(crate) mod digest_hex {
    use crate::digest::RulesetDigest;
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &RulesetDigest, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&d.to_hex())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<RulesetDigest, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        RulesetDigest::from_hex(&s).ok_or_else(|| D::Error::custom("digest: expected 64 hex chars"))
    }
}

mod opt_digest_hex {
    use crate::digest::RulesetDigest;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<RulesetDigest>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::digest_hex::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RulesetDigest>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::digest_hex")] RulesetDigest);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}
