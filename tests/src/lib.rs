//! Helpers for cluster tests: start, stop and wait for real node processes.
