//! Tests of the store through its public API (plus openraft's conformance suite).

mod api_keys;
mod conformance;
mod harness;
mod log;
mod persistence;
mod props;
mod semantics;
mod snapshots;
