//! API keys: their format, generation, and who they authenticate.
//!
//! A key is `fr<k>_<id>_<secret>`: `k` is `s` (server), `c` (client) or `a`
//! (admin), `id` 16 hex digits, `secret` 43 base64url characters (32 random
//! bytes). The leader draws both before proposing `CreateKey`; the replicated
//! state keeps only the SHA-256 of the whole key string. A presented key is
//! looked up by its id and accepted when the SHA-256 of what was presented
//! equals the stored hash, compared in constant time (`subtle`).
//!
//! Admin API ([`AdminAuth`], a tonic interceptor on every Admin call): the
//! metadata `authorization: Bearer <key>` must hold a live replicated admin
//! key or a bootstrap admin key of this node (config `[admin]` `key_sha256` /
//! `key_file`, or the environment variable `FLAGRAFT_ADMIN_KEY`, set the same
//! on every node). Bootstrap keys cannot be revoked through the API: change
//! the config (or the variable) and restart the nodes. Missing, malformed,
//! unknown, revoked, server and client keys all get the same UNAUTHENTICATED
//! reply.
//!
//! Update stream and client endpoints ([`ReplicatedKeys`]): live replicated
//! server and client keys of a project, then the optional static keys of the
//! `[stream.keys]` config table.

use crate::stream::{KeyGrant, KeyKind, KeyResolver, StaticKeys};
use base64::Engine;
use flagraft_store::{ApiKey, ApiKeyKind, StateMachineStore};
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

/// The environment variable holding a bootstrap admin key (plain text).
pub const ADMIN_KEY_ENV: &str = "FLAGRAFT_ADMIN_KEY";
/// Longest key accepted anywhere (longer ones are refused before hashing).
pub const MAX_KEY_BYTES: usize = 256;
const ID_HEX_DIGITS: usize = 16;

/// `[admin]` in the node config: where the bootstrap admin key comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// SHA-256 (64 hex digits) of a bootstrap admin key.
    pub key_sha256: Option<String>,
    /// A file holding a bootstrap admin key (surrounding whitespace ignored);
    /// relative to the config file's directory.
    pub key_file: Option<PathBuf>,
}

impl AdminConfig {
    /// Every bootstrap key hash: from the config and from `env_key` (the
    /// value of [`ADMIN_KEY_ENV`], if set). `base` resolves a relative key file.
    pub fn bootstrap_hashes(
        &self,
        base: &Path,
        env_key: Option<&str>,
    ) -> Result<Vec<[u8; 32]>, String> {
        let mut out = Vec::new();
        if let Some(hex_hash) = &self.key_sha256 {
            let bytes = hex::decode(hex_hash.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or("admin.key_sha256 must be 64 hex digits")?;
            out.push(bytes);
        }
        if let Some(file) = &self.key_file {
            let path = if file.is_relative() {
                base.join(file)
            } else {
                file.clone()
            };
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("admin.key_file {}: {e}", path.display()))?;
            out.push(usable_key(text.trim()).map_err(|e| format!("admin.key_file: {e}"))?);
        }
        if let Some(key) = env_key {
            out.push(usable_key(key.trim()).map_err(|e| format!("{ADMIN_KEY_ENV}: {e}"))?);
        }
        Ok(out)
    }
}

fn usable_key(key: &str) -> Result<[u8; 32], String> {
    if key.len() < 16 || key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "an admin key must have 16 to {MAX_KEY_BYTES} characters"
        ));
    }
    Ok(sha256(key))
}

pub fn sha256(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Constant-time equality of two hashes.
pub fn same_hash(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

fn kind_letter(kind: ApiKeyKind) -> char {
    match kind {
        ApiKeyKind::Server => 's',
        ApiKeyKind::Client => 'c',
        ApiKeyKind::Admin => 'a',
    }
}

/// A freshly drawn key: the whole secret string, its id and its hash.
pub struct NewKey {
    pub id: String,
    pub secret: String,
    pub sha256: [u8; 32],
}

/// Draws a key of `kind` from the OS's random source.
pub fn generate(kind: ApiKeyKind) -> NewKey {
    let mut id = [0u8; ID_HEX_DIGITS / 2];
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut id);
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let id = hex::encode(id);
    let secret = format!(
        "fr{}_{id}_{}",
        kind_letter(kind),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    NewKey {
        sha256: sha256(&secret),
        id,
        secret,
    }
}

/// The kind and id a key string claims (None: not in our format).
pub fn parse(key: &str) -> Option<(ApiKeyKind, &str)> {
    let rest = key.strip_prefix("fr")?;
    let kind = match rest.as_bytes().first()? {
        b's' => ApiKeyKind::Server,
        b'c' => ApiKeyKind::Client,
        b'a' => ApiKeyKind::Admin,
        _ => return None,
    };
    let rest = rest.get(1..)?.strip_prefix('_')?;
    let id = rest.get(..ID_HEX_DIGITS)?;
    if !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    rest.get(ID_HEX_DIGITS..)?.strip_prefix('_')?;
    Some((kind, id))
}

/// The live replicated key `key` is, if any.
fn live_key(sm: &StateMachineStore, key: &str) -> Option<Arc<ApiKey>> {
    if key.len() > MAX_KEY_BYTES {
        return None;
    }
    let (kind, id) = parse(key)?;
    let stored = sm.api_key(id)?;
    let matches = same_hash(&sha256(key), &stored.sha256);
    (matches && stored.revoked_ms.is_none() && stored.kind == kind).then_some(stored)
}

/// Authenticates Admin API calls.
pub struct AdminAuth {
    bootstrap: Vec<[u8; 32]>,
    sm: StateMachineStore,
}

/// The one reply to every authentication failure.
pub fn unauthenticated() -> Status {
    Status::unauthenticated(
        "a valid admin key is required (metadata authorization: Bearer <admin key>)",
    )
}

impl AdminAuth {
    pub fn new(bootstrap: Vec<[u8; 32]>, sm: StateMachineStore) -> Self {
        AdminAuth { bootstrap, sm }
    }

    pub fn has_bootstrap_key(&self) -> bool {
        !self.bootstrap.is_empty()
    }

    /// Ok when `metadata` carries a valid admin key.
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let key = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_BYTES)
            .ok_or_else(unauthenticated)?;
        let hash = sha256(key);
        // Every bootstrap hash is compared, so timing does not tell which matched.
        let bootstrap = self
            .bootstrap
            .iter()
            .fold(false, |ok, h| ok | same_hash(h, &hash));
        if bootstrap {
            return Ok(());
        }
        match live_key(&self.sm, key) {
            Some(k) if k.kind == ApiKeyKind::Admin => Ok(()),
            _ => Err(unauthenticated()),
        }
    }
}

/// The tonic interceptor in front of the Admin service.
#[derive(Clone)]
pub struct AdminInterceptor(pub Arc<AdminAuth>);

impl tonic::service::Interceptor for AdminInterceptor {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.0.check(request.metadata())?;
        Ok(request)
    }
}

/// Server and client keys for the update stream and the client endpoints:
/// replicated keys first, then the static `[stream.keys]` of the config.
pub struct ReplicatedKeys {
    sm: StateMachineStore,
    fallback: StaticKeys,
}

impl ReplicatedKeys {
    pub fn new(sm: StateMachineStore, fallback: StaticKeys) -> Self {
        ReplicatedKeys { sm, fallback }
    }
}

impl KeyResolver for ReplicatedKeys {
    fn resolve(&self, key: &str) -> Option<KeyGrant> {
        if let Some(k) = live_key(&self.sm, key) {
            let kind = match k.kind {
                ApiKeyKind::Server => KeyKind::Server,
                ApiKeyKind::Client => KeyKind::Client,
                ApiKeyKind::Admin => return None,
            };
            return Some(KeyGrant {
                project: k.project.clone(),
                kind,
            });
        }
        self.fallback.resolve(key)
    }
}

/// Closes update-stream connections whose key was revoked as soon as the
/// revocation is applied here (the hub re-resolves every connection's key).
/// Client-side value streams re-check their key at their next heartbeat.
pub async fn recheck_on_key_changes(
    mut changes: tokio::sync::broadcast::Receiver<Arc<flagraft_store::AppliedChange>>,
    hub: Arc<crate::stream::StreamHub<crate::stream::StoreSource>>,
) {
    use flagraft_store::AppliedChange;
    use tokio::sync::broadcast::error::RecvError;
    let mut stop = hub.shutdown_signal();
    loop {
        let change = tokio::select! {
            c = changes.recv() => c,
            _ = stop.wait_for(|s| *s) => return,
        };
        match change {
            Ok(c) => {
                if matches!(
                    *c,
                    AppliedChange::KeysChanged | AppliedChange::SnapshotInstalled { .. }
                ) {
                    hub.recheck_keys();
                }
            }
            // Missed changes may have revoked keys.
            Err(RecvError::Lagged(_)) => hub.recheck_keys(),
            Err(RecvError::Closed) => return,
        }
    }
}

/// The bootstrap admin key hashes of a node: its `[admin]` config and the
/// environment variable [`ADMIN_KEY_ENV`] (ignored when empty).
pub fn node_bootstrap_hashes(config: &AdminConfig) -> Result<Vec<[u8; 32]>, String> {
    let env = std::env::var(ADMIN_KEY_ENV).ok().filter(|v| !v.is_empty());
    config.bootstrap_hashes(Path::new("."), env.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_back_and_are_distinct() {
        for kind in [ApiKeyKind::Server, ApiKeyKind::Client, ApiKeyKind::Admin] {
            let a = generate(kind);
            let b = generate(kind);
            assert_ne!(a.secret, b.secret);
            assert_ne!(a.id, b.id);
            assert_eq!(parse(&a.secret), Some((kind, a.id.as_str())));
            assert_eq!(a.sha256, sha256(&a.secret));
            assert!(a.secret.len() <= MAX_KEY_BYTES);
            assert!(a
                .secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics_and_only_accepts_our_shape(s in ".{0,80}") {
            if let Some((_, id)) = parse(&s) {
                proptest::prop_assert!(s.starts_with("fr"));
                proptest::prop_assert_eq!(id.len(), ID_HEX_DIGITS);
                proptest::prop_assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
            }
        }

        #[test]
        fn any_suffix_changes_the_hash(extra in "[a-zA-Z0-9_-]{1,8}") {
            let k = generate(ApiKeyKind::Admin);
            let altered = format!("{}{extra}", k.secret);
            proptest::prop_assert!(!same_hash(&sha256(&altered), &k.sha256));
        }
    }

    #[test]
    fn foreign_strings_do_not_parse() {
        for s in [
            "",
            "fr",
            "frx_0123456789abcdef_s",
            "frs_0123456789abcdeg_s",
            "frs_0123456789abcdef",
            "frs_0123456789abcdefs",
            "frs-0123456789abcdef_s",
            "srv-default-dev",
            "frs_é123456789abcdef_s",
        ] {
            assert_eq!(parse(s), None, "{s}");
        }
        assert_eq!(
            parse("frs_0123456789abcdef_"),
            Some((ApiKeyKind::Server, "0123456789abcdef"))
        );
    }

    #[test]
    fn hashes_compare_in_constant_time_and_exactly() {
        let a = sha256("one");
        let mut b = a;
        assert!(same_hash(&a, &b));
        b[31] ^= 1;
        assert!(!same_hash(&a, &b));
    }

    use flagraft_store::{Command, CreateKeyCommand, Identity, StoreConfig, TypeConfig};
    use openraft::storage::RaftStateMachine;
    use openraft::{Entry, EntryPayload};
    use std::collections::HashMap;

    fn metadata(value: Option<&str>) -> MetadataMap {
        let mut m = MetadataMap::new();
        if let Some(v) = value {
            m.insert("authorization", v.parse().unwrap());
        }
        m
    }

    async fn apply(sm: &mut StateMachineStore, index: u64, cmd: Command) {
        let entry: Entry<TypeConfig> = Entry {
            log_id: openraft::testing::log_id(1, 1, index),
            payload: EntryPayload::Normal(cmd),
        };
        sm.apply([entry]).await.unwrap();
    }

    fn create(key: &NewKey, kind: ApiKeyKind, project: &str) -> Command {
        Command::CreateKey(CreateKeyCommand {
            id: key.id.clone(),
            project: project.into(),
            kind,
            sha256: key.sha256,
            description: String::new(),
            time_ms: 1,
        })
    }

    #[tokio::test]
    async fn only_bootstrap_and_live_admin_keys_pass_and_others_resolve_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity {
            node_id: 1,
            cluster: "t".into(),
        };
        let (_log, mut sm) = flagraft_store::open(dir.path(), &identity, StoreConfig::default())
            .await
            .unwrap();
        let admin = generate(ApiKeyKind::Admin);
        let server = generate(ApiKeyKind::Server);
        let client = generate(ApiKeyKind::Client);
        apply(&mut sm, 1, create(&admin, ApiKeyKind::Admin, "")).await;
        apply(&mut sm, 2, create(&server, ApiKeyKind::Server, "default")).await;
        apply(&mut sm, 3, create(&client, ApiKeyKind::Client, "default")).await;
        let auth = AdminAuth::new(vec![sha256("bootstrap-key-0123456")], sm.clone());
        let bearer = |k: &str| format!("Bearer {k}");
        assert!(auth
            .check(&metadata(Some("Bearer bootstrap-key-0123456")))
            .is_ok());
        assert!(auth.check(&metadata(Some(&bearer(&admin.secret)))).is_ok());
        let forged = format!("fra_{}_not-the-secret", admin.id);
        let long = "x".repeat(MAX_KEY_BYTES + 1);
        let refused = [
            None,
            Some("bootstrap-key-0123456".to_string()),
            Some("Basic Ym9vdHN0cmFw".to_string()),
            Some(bearer("")),
            Some(bearer(&forged)),
            Some(bearer(&server.secret)),
            Some(bearer(&client.secret)),
            Some(bearer(&long)),
        ];
        for value in refused {
            let err = auth.check(&metadata(value.as_deref())).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated);
            assert_eq!(err.message(), unauthenticated().message(), "{value:?}");
        }
        apply(
            &mut sm,
            4,
            Command::RevokeKey {
                id: admin.id.clone(),
                time_ms: 2,
            },
        )
        .await;
        assert!(auth.check(&metadata(Some(&bearer(&admin.secret)))).is_err());

        let fallback = StaticKeys::new(HashMap::from([(
            "static-key".to_string(),
            KeyGrant {
                project: "p".into(),
                kind: KeyKind::Client,
            },
        )]));
        let keys = ReplicatedKeys::new(sm.clone(), fallback);
        let grant = |project: &str, kind| {
            Some(KeyGrant {
                project: project.into(),
                kind,
            })
        };
        assert_eq!(
            keys.resolve(&server.secret),
            grant("default", KeyKind::Server)
        );
        assert_eq!(
            keys.resolve(&client.secret),
            grant("default", KeyKind::Client)
        );
        assert_eq!(keys.resolve("static-key"), grant("p", KeyKind::Client));
        assert_eq!(
            keys.resolve(&admin.secret),
            None,
            "admin keys read no rules"
        );
        assert_eq!(keys.resolve(&format!("frs_{}_x", server.id)), None);
        apply(
            &mut sm,
            5,
            Command::RevokeKey {
                id: server.id.clone(),
                time_ms: 3,
            },
        )
        .await;
        assert_eq!(keys.resolve(&server.secret), None);
    }

    #[test]
    fn bootstrap_keys_come_from_hash_file_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("admin.key"), "file-key-0123456789\n").unwrap();
        let config = AdminConfig {
            key_sha256: Some(hex::encode(sha256("hash-key-0123456789"))),
            key_file: Some("admin.key".into()),
        };
        let hashes = config
            .bootstrap_hashes(dir.path(), Some("env-key-0123456789"))
            .unwrap();
        assert_eq!(
            hashes,
            vec![
                sha256("hash-key-0123456789"),
                sha256("file-key-0123456789"),
                sha256("env-key-0123456789"),
            ]
        );
        assert!(AdminConfig::default()
            .bootstrap_hashes(dir.path(), None)
            .unwrap()
            .is_empty());
        let bad = AdminConfig {
            key_sha256: Some("abc".into()),
            key_file: None,
        };
        assert!(bad.bootstrap_hashes(dir.path(), None).is_err());
        let missing = AdminConfig {
            key_sha256: None,
            key_file: Some("nope".into()),
        };
        assert!(missing
            .bootstrap_hashes(dir.path(), None)
            .unwrap_err()
            .contains("nope"));
        assert!(AdminConfig::default()
            .bootstrap_hashes(dir.path(), Some("short"))
            .is_err());
    }
}
