//! The DCS JSON document GetRuleset returns, built by the SDK's own
//! `flagraft_client::dcs::dcs_from_entities` so nodes and clients agree on it.

use flagraft_client::dcs::{dcs_from_entities, Dialect};
use flagraft_store::RulesetSnapshot;

/// The project's ruleset as a DCS document of `dialect` (`time`: the head's
/// commit time).
pub fn ruleset_json(ruleset: &RulesetSnapshot, dialect: Dialect) -> Result<String, DcsError> {
    let entities = ruleset.to_entities()?;
    let time = i64::try_from(ruleset.head.commit_time_ms).unwrap_or(i64::MAX);
    Ok(serde_json::to_string(&dcs_from_entities(
        &entities, dialect, time,
    ))?)
}

/// Why a ruleset could not be written as a DCS document.
#[derive(Debug, thiserror::Error)]
pub enum DcsError {
    #[error("a stored body is unreadable: {0}")]
    Body(#[from] flagraft_store::CodecError),
    #[error("writing the document: {0}")]
    Json(#[from] serde_json::Error),
}
