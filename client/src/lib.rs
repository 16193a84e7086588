//! flagraft's SDK crate: the ruleset model shared by nodes and clients, the
//! Statsig-compatible local evaluator, and (later) the live subscriber.

pub mod digest;
pub mod entity;
pub mod protocol;
