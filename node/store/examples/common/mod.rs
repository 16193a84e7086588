//! What the store's measuring examples read about their own process.

use std::time::Duration;

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

/// Gate `gate-<i>` with a ~2.4 KiB body (16 rules) marked with `rev`.
#[allow(dead_code)] // not every example commits gates
pub fn gate(i: u64, rev: u64) -> flagraft_client::entity::Entity {
    let rules: Vec<serde_json::Value> = (0..16)
        .map(|r| {
            serde_json::json!({
                "name": format!("rule-{r}"), "passPercentage": 50, "id": format!("{rev}-{r}"),
                "conditions": [{"type": "user_field", "field": "country", "operator": "any",
                                "targetValue": ["US", "CA", "GB", "DE"]}],
            })
        })
        .collect();
    flagraft_client::entity::Entity {
        key: flagraft_client::entity::EntityKey::new(
            flagraft_client::entity::EntityKind::Gate,
            format!("gate-{i}"),
        ),
        body: serde_json::json!({"name": format!("gate-{rev}"), "enabled": true, "rules": rules, "rev": rev}),
    }
}

/// The example's arguments, as numbers.
pub fn numeric_args() -> Vec<u64> {
    std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numeric arguments"))
        .collect()
}
