//! Apply cost of one-entity commits on a project of a given size (a measuring aid, not a test).
//!
//! `cargo run --release -p flagraft-store --example apply_cost -- <entities> <entities per fill commit>`
//! Env: `ROUNDS` (default 5), `PER_ROUND` (default 5000). Prints wall and process CPU time per
//! commit and the number of sled blob files (should stay 0: see `state::values`).
//! For machine-independent figures run it under `valgrind --tool=callgrind` and compare the
//! inclusive instruction count of `RaftStateMachine::apply` between sizes.

use flagraft_client::entity::Entity;
use flagraft_store::{open, Command, CommitCommand, Identity, StoreConfig, TypeConfig};
use openraft::storage::RaftStateMachine;
use openraft::{Entry, EntryPayload};
use std::time::Instant;

mod common;

fn commit(upserts: Vec<Entity>) -> Command {
    Command::Commit(CommitCommand {
        project: "default".into(),
        upserts: upserts.iter().map(flagraft_store::Upsert::from).collect(),
        deletes: vec![],
        author: "b".into(),
        message: "b".into(),
        expected_version: None,
        request_id: None,
        proposed_time_ms: 0,
    })
}
fn blobs(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("sled/blobs"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = common::numeric_args();
    let (size, per_commit) = (args[0], args[1]);
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = open(
        dir.path(),
        &Identity {
            node_id: 1,
            cluster: "c".into(),
        },
        StoreConfig::default(),
    )
    .await
    .unwrap();
    let mut index = 0;
    let mut entry = |c: Command| {
        index += 1;
        Entry::<TypeConfig> {
            log_id: openraft::testing::log_id(1, 1, index),
            payload: EntryPayload::Normal(c),
        }
    };
    for start in (0..size).step_by(per_commit as usize) {
        let ups = (start..(start + per_commit).min(size))
            .map(|i| common::gate(i, 0))
            .collect();
        sm.apply([entry(commit(ups))]).await.unwrap();
    }
    println!(
        "filled {size} ({per_commit}/commit), blobs {}",
        blobs(dir.path())
    );
    let rounds: u32 = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let per_round: u64 = std::env::var("PER_ROUND")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5000);
    for round in 0..rounds {
        let es: Vec<_> = (0..per_round)
            .map(|r| entry(commit(vec![common::gate((r * 7919) % size, r + 1)])))
            .collect();
        let t = Instant::now();
        let c = common::process_cpu();
        timed_round(&mut sm, es).await;
        let wall = t.elapsed() / per_round as u32;
        println!(
            "round {round}: wall {wall:?}/commit, process cpu {:?}/commit, blobs {}",
            (common::process_cpu() - c) / per_round as u32,
            blobs(dir.path())
        );
    }
}

#[inline(never)]
async fn timed_round(sm: &mut flagraft_store::StateMachineStore, es: Vec<Entry<TypeConfig>>) {
    for e in es {
        sm.apply([e]).await.unwrap();
    }
}
