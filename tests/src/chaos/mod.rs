//! The chaos rig: a three-node cluster of real processes under a seeded fault
//! schedule (kill -9, SIGSTOP/SIGCONT, network partitions between network
//! namespaces), a recorded history of client operations and subscriber
//! observations, and a checker for that history.
//!
//! - [`history`]: the recorded history (JSON).
//! - [`linear`]: the linearizability search (Wing–Gong with memoisation).
//! - [`check`]: every check (a–f) and the report.
//! - [`stats`]: commit unavailability per fault.
//! - [`netns`]: the network (one namespace per node, links cut per direction).
//! - [`procs`]: node processes (spawned into their namespaces, signalled by PID).
//! - [`cluster`]: configs, admin clients, leader and health queries.
//! - [`faults`]: the seeded fault schedule and its injection.
//! - [`workload`]: writers, readers and SDK subscribers.
//! - [`recorder`]: collects the history during a run.
//! - [`rig`]: one whole run.

pub mod check;
pub mod cluster;
pub mod faults;
pub mod history;
pub mod linear;
pub mod netns;
pub mod procs;
pub mod recorder;
pub mod rig;
pub mod stats;
pub mod workload;

#[cfg(test)]
mod check_tests;
