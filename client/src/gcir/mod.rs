//! Client initialize responses ("GCIR", format doc §5.2): the values of
//! every gate, dynamic config, experiment and layer already evaluated for one
//! user, for client-side SDKs (browsers, mobile apps) that must never see
//! rules. Served by nodes at `POST /v1/initialize` and built by the SDK
//! from its local state for bootstrapping a page
//! ([`crate::sdk::Client::client_initialize_response`]).
//!
//! What a response holds, exactly as Statsig's server core builds it:
//! * `feature_gates`, `dynamic_configs`, `layer_configs` keyed by the
//!   **hashed** name (djb2 by default, `sha256` or `none` on request); each
//!   entry's `name`, every secondary exposure's `gate` and a layer's
//!   `allocated_experiment_name` are hashed the same way. Exposures are
//!   deduplicated by `gate|gateValue|ruleID`.
//! * Segments and holdouts are never included. With a client key whose app
//!   resolves to a string (`app_id`, `sdk_keys_to_app_ids`,
//!   `hashed_sdk_keys_to_app_ids` settings), only specs whose
//!   `targetAppIDs` list that app are included.
//! * `param_stores` with referenced names hashed; `time` = the commit time of
//!   the ruleset version; `has_updates: true`; `hash_used`; `user` without
//!   `privateAttributes`; `evaluated_keys` `{userID, customIDs}`; `pa_hash`;
//!   `sdkInfo`, `sdkParams`.
//! * Never a rule, a condition or a salt: only evaluation results (values,
//!   rule ids, group names) leave the evaluator.
//!
//! Responses are deterministic: the same version, user and options give the
//! same bytes on any node and in any SDK (unless a rule reads the clock,
//! see [`ClientMeta::is_time_dependent`]).
//!
//! Not done: session-replay fields, `init_v2`/exposure-table formats,
//! `hashed_sdk_keys_to_entities` filtering, filter options, and `target_app`
//! conditions evaluate against the ruleset's `app_id` rather than the
//! client key's app.

mod build;
pub mod hashing;
mod meta;
mod response;
mod user;

pub use hashing::{HashAlgorithm, UnknownHashAlgorithm};
pub use meta::ClientMeta;
pub use response::{
    ConfigValue, DynamicConfigValue, ExperimentValue, Exposure, GateValue, InitializeResponse,
    LayerValue,
};
pub use user::{ClientUser, ClientUserError};

use crate::compile::CompiledRuleset;
use crate::digest::RulesetDigest;
use crate::entity::Entity;
use crate::eval::EvalOptions;
use sha2::{Digest, Sha256};

/// `sdkInfo.sdkType` of every response.
pub const SDK_TYPE: &str = "flagraft";

/// How to build a response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcirOptions {
    /// How names are hashed (`djb2` by default).
    pub hash: HashAlgorithm,
    /// The client key the response is for: selects its app for
    /// `targetAppIDs` filtering. None: no filtering.
    pub client_key: Option<String>,
}

impl GcirOptions {
    pub fn with_hash(mut self, hash: HashAlgorithm) -> Self {
        self.hash = hash;
        self
    }

    pub fn with_client_key(mut self, key: impl Into<String>) -> Self {
        self.client_key = Some(key.into());
        self
    }
}

/// What a response is evaluated against: one ruleset version.
#[derive(Clone, Copy, Debug)]
pub struct ClientView<'a> {
    pub ruleset: &'a CompiledRuleset,
    pub meta: &'a ClientMeta,
    /// Commit time of the version, reported as `time`.
    pub time_ms: u64,
    /// Evaluation options (environment tier, IP table). Nodes use none.
    pub eval: &'a EvalOptions,
}

/// The client initialize response for `user`.
pub fn client_initialize_response(
    view: &ClientView<'_>,
    user: &ClientUser,
    options: &GcirOptions,
) -> InitializeResponse {
    build::build(view, user, options)
}

/// A compiled ruleset version with its client metadata, owned (nodes cache
/// one per project version).
#[derive(Debug)]
pub struct ClientRuleset {
    pub version: u64,
    pub digest: RulesetDigest,
    pub time_ms: u64,
    pub compiled: CompiledRuleset,
    pub meta: ClientMeta,
}

impl ClientRuleset {
    /// Compiles leniently (as SDKs do: a spec that cannot be read is left
    /// out) and reads the metadata.
    pub fn new<'a>(
        version: u64,
        digest: RulesetDigest,
        time_ms: u64,
        entities: impl IntoIterator<Item = &'a Entity> + Clone,
    ) -> ClientRuleset {
        let (compiled, _problems) = CompiledRuleset::compile_lenient(entities.clone());
        let meta = ClientMeta::new(&compiled, entities);
        ClientRuleset {
            version,
            digest,
            time_ms,
            compiled,
            meta,
        }
    }

    pub fn view<'a>(&'a self, eval: &'a EvalOptions) -> ClientView<'a> {
        ClientView {
            ruleset: &self.compiled,
            meta: &self.meta,
            time_ms: self.time_ms,
            eval,
        }
    }
}

/// The ETag of a response, computable before evaluating: version, digest
/// and a hash of (user, hash algorithm, client key). Valid only when the
/// ruleset is not time dependent (use [`content_etag`] then).
pub fn request_etag(
    version: u64,
    digest: &RulesetDigest,
    user: &ClientUser,
    options: &GcirOptions,
) -> String {
    let mut h = Sha256::new();
    h.update(user.fingerprint());
    h.update(options.hash.as_str().as_bytes());
    h.update([0]);
    if let Some(k) = &options.client_key {
        h.update(k.as_bytes());
    }
    let tail = h.finalize();
    format!(
        "\"i{version}-{}-{}\"",
        &digest.to_hex()[..16],
        hex::encode(&tail[..8])
    )
}

/// The ETag of a response's bytes (for time-dependent rulesets).
pub fn content_etag(version: u64, body: &[u8]) -> String {
    let h = Sha256::digest(body);
    format!("\"i{version}-c{}\"", hex::encode(&h[..12]))
}
