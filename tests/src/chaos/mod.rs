//! The chaos rig: a three-node cluster of real processes under a seeded fault
//! schedule (kill -9, SIGSTOP/SIGCONT, network partitions between network
//! namespaces), a recorded history of client operations and subscriber
//! observations, and a checker for that history.
//!
//! - [`history`]: the recorded history (JSON).
//! - [`linear`]: the linearizability search (Wing–Gong with memoisation).
//! - [`check`]: every check (a–f) and the report.
//! - [`stats`]: commit unavailability per fault.

pub mod check;
pub mod history;
pub mod linear;
pub mod stats;

#[cfg(test)]
mod check_tests;
