//! flagraft's SDK crate: the ruleset model shared by nodes and clients, the
//! Statsig-compatible local evaluator, and (later) the live subscriber.
//!
//! * [`entity`], [`digest`]: the replicated unit (an entity) and ruleset digests.
//! * [`dcs`]: `download_config_specs` documents (v1 and v2) ⇄ entities.
//! * [`model`]: typed specs/rules/conditions read from entity bodies.
//! * [`compile`]: entities → [`CompiledRuleset`] (strict or lenient), with
//!   [`validate`] checking references and cycles.
//! * [`eval`]: `check_gate`, `get_config`, `get_experiment`, `get_layer`.
//! * [`ops`], [`value`], [`user`], [`hash`], [`ua`], [`ip`]: operators,
//!   value coercions, users, Statsig's hashes, user agents, IP → country.
//! * [`limits`]: size limits; [`problem`]: errors naming entity, rule, field.

pub mod compile;
pub mod dcs;
pub mod digest;
pub mod entity;
pub mod eval;
#[cfg(feature = "fixtures")]
pub mod fixtures;
pub mod gcir;
pub mod hash;
pub mod ip;
pub mod limits;
pub mod model;
pub mod ops;
pub mod problem;
pub mod protocol;
pub mod report;
pub mod sdk;
pub mod ua;
pub mod user;
pub mod validate;
pub mod value;

pub use compile::CompiledRuleset;
pub use dcs::{dcs_from_entities, entities_from_dcs, Dialect};
pub use eval::{ConfigResult, EvalOptions, GateResult, Reason, SecondaryExposure};
pub use problem::{RulesetErrors, Severity, ValidationError};
pub use user::User;

/// The name the brief's API uses for the compiled ruleset.
pub type Ruleset = CompiledRuleset;
