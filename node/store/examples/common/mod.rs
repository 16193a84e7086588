//! What the store's measuring examples read about their own process.

use std::time::Duration;

// Shared with `benches/apply.rs`, which includes the file by path.
mod gate;
#[allow(unused_imports)] // not every example commits gates
pub use gate::gate;

/// User + system CPU time of this process so far (`/proc/self/stat`, 10 ms ticks).
pub fn process_cpu() -> Duration {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// Bytes this process handed to `write`-like calls so far (`wchar` of `/proc/self/io`).
#[allow(dead_code)] // not every example reads it
pub fn written_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The example's arguments, as numbers.
pub fn numeric_args() -> Vec<u64> {
    std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numeric arguments"))
        .collect()
}
