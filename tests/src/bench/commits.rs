//! Commit workloads: a sized entity, one committer in a loop, many committers
//! for a fixed time, and bulk loading.

use super::stats::Samples;
use crate::Admin;
use anyhow::{anyhow, Context};
use flagraft_proto::admin::v1 as pb;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest one bench commit may take before the run is declared broken.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A feature gate of about `target_bytes` of JSON: one rule passing a list of
/// user IDs, so the node's spec check compiles something realistic. Built
/// once per size and then only salted, so the load generator spends its CPU
/// (shared with the nodes on this machine) on sending, not on building JSON.
pub fn sized_gate_json(salt: &str, target_bytes: usize) -> String {
    static TEMPLATES: Mutex<Vec<(usize, Arc<str>)>> = Mutex::new(Vec::new());
    let template = {
        let mut cache = TEMPLATES.lock().unwrap_or_else(|e| e.into_inner());
        match cache.iter().find(|(size, _)| *size == target_bytes) {
            Some((_, t)) => t.clone(),
            None => {
                let t: Arc<str> = build_sized_gate_json(SALT_PLACEHOLDER, target_bytes).into();
                cache.push((target_bytes, t.clone()));
                t
            }
        }
    };
    template.replacen(SALT_PLACEHOLDER, salt, 1)
}

/// Stands for the salt in a cached body; appears nowhere else in it.
const SALT_PLACEHOLDER: &str = "@salt@";

fn build_sized_gate_json(salt: &str, target_bytes: usize) -> String {
    let gate = |ids: &[String]| {
        crate::fixtures::gate_body(
            salt,
            serde_json::json!([{
                "name": "allow-list",
                "id": "allow-list",
                "salt": "allow-list",
                "passPercentage": 100,
                "returnValue": true,
                "idType": "userID",
                "conditions": [{
                    "type": "user_field",
                    "field": "userID",
                    "operator": "any",
                    "targetValue": ids,
                    "additionalValues": {},
                    "idType": "userID",
                }],
            }]),
        )
        .to_string()
    };
    let base = gate(&[]).len();
    // Each id adds its length plus quotes and a comma.
    let id = |i: usize| format!("user-{i:06}");
    let per_id = id(0).len() + 3;
    let n = target_bytes.saturating_sub(base) / per_id;
    let ids: Vec<String> = (0..n).map(id).collect();
    gate(&ids)
}

/// One upsert of gate `name` in project `default`.
pub fn gate_upsert(name: &str, json: String, request_id: String) -> pb::CommitRequest {
    pb::CommitRequest {
        project: "default".into(),
        upserts: vec![pb::Entity {
            kind: "gate".into(),
            name: name.into(),
            json,
        }],
        deletes: vec![],
        author: "bench".into(),
        message: String::new(),
        request_id: Some(request_id),
        ..Default::default()
    }
}

/// Sends one commit with a deadline; its round-trip time.
pub async fn commit_once(
    client: &mut Admin,
    req: pb::CommitRequest,
) -> Result<(pb::CommitResponse, Duration), tonic::Status> {
    let mut r = tonic::Request::new(req);
    r.set_timeout(COMMIT_TIMEOUT);
    let started = Instant::now();
    let resp = client.commit(r).await?;
    Ok((resp.into_inner(), started.elapsed()))
}

/// Globally unique request ids within one bench process.
pub fn request_id(tag: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{tag}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// One committer, one commit at a time: `warmup` unmeasured commits, then
/// `count` measured ones, each upserting one gate of `body_bytes` (names
/// rotate over 16 gates so the project does not grow).
pub async fn latency_run(
    client: &mut Admin,
    tag: &str,
    warmup: usize,
    count: usize,
    body_bytes: usize,
) -> anyhow::Result<Samples> {
    let mut samples = Samples::with_capacity(count);
    for i in 0..warmup + count {
        let rid = request_id(tag);
        let req = gate_upsert(
            &format!("{tag}-{}", i % 16),
            sized_gate_json(&rid, body_bytes),
            rid,
        );
        let (_, rtt) = commit_once(client, req)
            .await
            .map_err(|s| anyhow!("commit {i} of the latency run failed: {s}"))?;
        if i >= warmup {
            samples.push(rtt);
        }
    }
    Ok(samples)
}

/// What many committers achieved together.
pub struct Throughput {
    pub commits: u64,
    pub elapsed: Duration,
    pub latencies: Samples,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Throughput {
    pub fn per_second(&self) -> f64 {
        self.commits as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `committers` tasks commit back to back over `clients` (round robin) for
/// `duration`; commits in flight at the end are waited for and counted, and
/// the elapsed time runs until the last one returns. Each committer upserts
/// its own gate, so the project grows by at most `committers` entities.
pub async fn throughput_run(
    clients: &[Admin],
    committers: usize,
    duration: Duration,
    tag: &str,
    body_bytes: usize,
) -> anyhow::Result<Throughput> {
    if clients.is_empty() {
        return Err(anyhow!("no admin connections"));
    }
    let started = Instant::now();
    let deadline = started + duration;
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(committers);
    for c in 0..committers {
        let mut client = clients[c % clients.len()].clone();
        let name = format!("{tag}-{c}");
        let tag = tag.to_string();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Samples::new();
            let mut first_error = None;
            while Instant::now() < deadline {
                let rid = request_id(&tag);
                let req = gate_upsert(&name, sized_gate_json(&rid, body_bytes), rid);
                match commit_once(&mut client, req).await {
                    Ok((_, rtt)) => lat.push(rtt),
                    Err(s) => {
                        // Nothing is faulted here, so an error is a finding:
                        // count it and stop this committer after a few.
                        first_error.get_or_insert_with(|| s.to_string());
                        if errors.fetch_add(1, Ordering::Relaxed) >= 100 {
                            break;
                        }
                    }
                }
            }
            (lat, first_error)
        }));
    }
    let mut out = Throughput {
        commits: 0,
        elapsed: Duration::ZERO,
        latencies: Samples::new(),
        errors: 0,
        first_error: None,
    };
    for t in tasks {
        let (lat, err) = t.await.context("a committer task failed")?;
        out.commits += lat.len() as u64;
        out.latencies.extend(lat);
        if out.first_error.is_none() {
            out.first_error = err;
        }
    }
    out.elapsed = started.elapsed();
    out.errors = errors.load(Ordering::Relaxed);
    Ok(out)
}

/// Upserts `count` gates of `body_bytes` named `load-NNNNN`, `batch` per
/// commit. Returns the version after the last batch.
pub async fn load_entities(
    client: &mut Admin,
    count: usize,
    batch: usize,
    body_bytes: usize,
) -> anyhow::Result<u64> {
    let mut version = 0;
    let batch = batch.max(1);
    for start in (0..count).step_by(batch) {
        let upserts = (start..(start + batch).min(count))
            .map(|i| pb::Entity {
                kind: "gate".into(),
                name: format!("load-{i:05}"),
                json: sized_gate_json(&format!("load-{i}"), body_bytes),
            })
            .collect();
        let req = pb::CommitRequest {
            project: "default".into(),
            upserts,
            deletes: vec![],
            author: "bench".into(),
            message: format!("load from {start}"),
            request_id: Some(request_id("load")),
            ..Default::default()
        };
        let mut r = tonic::Request::new(req);
        r.set_timeout(Duration::from_secs(60));
        version = client
            .commit(r)
            .await
            .map_err(|s| anyhow!("loading entities from {start}: {s}"))?
            .into_inner()
            .version;
    }
    Ok(version)
}

/// Waits (bounded by `timeout`) until every node in `clients` has applied `version` of project
/// `default`. A commit is acknowledged once a majority has it, so a node may still be applying
/// a bulk load (megabytes to hash and store) when the next measurement starts; this rules that
/// out. Returns how long it took.
pub async fn wait_all_applied(
    clients: &mut [Admin],
    version: u64,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let started = std::time::Instant::now();
    for client in clients.iter_mut() {
        let left = timeout.saturating_sub(started.elapsed());
        let mut r = tonic::Request::new(pb::ListHistoryRequest {
            project: "default".into(),
            from_version: version,
            limit: 1,
            min_version: Some(version),
        });
        r.set_timeout(left.max(Duration::from_millis(1)));
        client
            .list_history(r)
            .await
            .map_err(|s| anyhow!("waiting for version {version} on every node: {s}"))?;
    }
    Ok(started.elapsed())
}

/// The number of entities in project `default` as node `client` sees it.
pub async fn entity_count(client: &mut Admin) -> anyhow::Result<u64> {
    let mut r = tonic::Request::new(pb::GetRulesetRequest {
        dialect: pb::Dialect::V1 as i32,
        ..crate::linearizable_read("default")
    });
    r.set_timeout(Duration::from_secs(30));
    Ok(client
        .get_ruleset(r)
        .await
        .map_err(|s| anyhow!("reading the ruleset: {s}"))?
        .into_inner()
        .entity_count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sized_gates_are_close_to_the_target_and_valid_json() {
        for target in [512, 2048, 8192] {
            let json = sized_gate_json("s", target);
            assert!(
                json.len() <= target && json.len() + 20 > target,
                "{} for {target}",
                json.len()
            );
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(v["type"], "feature_gate");
        }
    }

    #[test]
    fn a_tiny_target_still_gives_a_gate() {
        let v: serde_json::Value = serde_json::from_str(&sized_gate_json("s", 10)).unwrap();
        assert_eq!(
            v["rules"][0]["conditions"][0]["targetValue"],
            serde_json::json!([])
        );
    }

    #[test]
    fn request_ids_are_unique() {
        assert_ne!(request_id("t"), request_id("t"));
    }
}
