//! Bytes written and CPU spent per commit on the node's commit path, split into the Raft log's
//! part and the state machine's part (a measuring aid, not a test).
//!
//! `cargo run --release -p flagraft-store --example write_volume -- [entities] [per entry]`
//!
//! Mimics `bench_commit`'s throughput run on one node: group-commit entries of `per entry`
//! (default 32) commits of one ~2 KiB gate each, cycling over `entities` (default 128) names,
//! each with a request id. The log part appends each entry to the store's log and waits for its
//! flush (`blocking_append`); the state machine part applies the entries and flushes after each
//! (in the node one flush serves both). Records are stubs naming their log entries, so the
//! state machine part writes little beyond the compaction of entity values. Figures: `wchar` of `/proc/self/io` (bytes handed to
//! `write`/`pwrite`) and process CPU, per commit, after a warm-up that fills the history window
//! so that compaction runs too. Then the time to reopen the store (open replays the retained
//! history records).

use flagraft_store::{open, Command, CommitCommand, Identity, StoreConfig, TypeConfig};
use openraft::storage::{RaftLogStorageExt, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{Entry, EntryPayload};
use std::time::Duration;

mod common;

fn commit(name: u64, rev: u64) -> CommitCommand {
    let e = common::gate(name, rev);
    CommitCommand {
        project: "default".into(),
        upserts: vec![flagraft_store::Upsert::from(&e)],
        deletes: vec![],
        author: "bench".into(),
        message: "bench".into(),
        expected_version: None,
        request_id: Some(format!("{rev:08x}-0000-4000-8000-000000000000")),
        proposed_time_ms: 0,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = common::numeric_args();
    let entities = args.first().copied().unwrap_or(128);
    let per_entry = args.get(1).copied().unwrap_or(32);
    let warm = 12_000 / per_entry + 1;
    let measured = 6_000 / per_entry;

    let dir = tempfile::tempdir().unwrap();
    let identity = Identity {
        node_id: 1,
        cluster: "c".into(),
    };
    let sm_dir = dir.path().join("sm");
    let (mut log, mut sm) = open(&sm_dir, &identity, StoreConfig::default())
        .await
        .unwrap();

    let mut index = 0u64;
    let mut rev = 0u64;
    let mut entry = || {
        index += 1;
        let commits = (0..per_entry)
            .map(|_| {
                rev += 1;
                commit(rev % entities, rev)
            })
            .collect();
        Entry::<TypeConfig> {
            log_id: openraft::testing::log_id(1, 1, index),
            payload: EntryPayload::Normal(Command::CommitBatch(commits)),
        }
    };

    for phase in ["warm-up", "measured"] {
        let rounds = if phase == "warm-up" { warm } else { measured };
        let entries: Vec<_> = (0..rounds).map(|_| entry()).collect();
        let commits = rounds * per_entry;

        let (w, c) = (common::written_bytes(), common::process_cpu());
        for e in &entries {
            log.blocking_append([e.clone()]).await.unwrap();
        }
        let (log_w, log_c) = (common::written_bytes() - w, common::process_cpu() - c);

        let (w, c) = (common::written_bytes(), common::process_cpu());
        for e in entries {
            sm.apply([e]).await.unwrap();
            sm.flush().await.unwrap();
        }
        let (sm_w, sm_c) = (common::written_bytes() - w, common::process_cpu() - c);
        println!(
            "{phase:>8}: {commits} commits | log {:>6} B {:>4} us | state machine {:>6} B {:>4} us (per commit)",
            log_w / commits,
            log_c.as_micros() as u64 / commits,
            sm_w / commits,
            sm_c.as_micros() as u64 / commits,
        );
    }
    sm.flush().await.unwrap();
    let head = sm.head("default").unwrap();
    drop((log, sm));
    let start = std::time::Instant::now();
    // A dropped store's flusher may hold sled's lock for a moment.
    let reopened = loop {
        match open(&sm_dir, &identity, StoreConfig::default()).await {
            Ok(store) => break store,
            Err(_) if start.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    println!(
        "reopen: {:?} for version {} with {} entities (history of 10,000 records)",
        start.elapsed(),
        head.version,
        head.entity_count
    );
    let (_log, mut sm) = reopened;
    assert_eq!(sm.head("default").unwrap(), head);

    // A follower that fell behind the log catches up from a snapshot; its build (sender) and
    // install (receiver) carry the whole retained history.
    let start = std::time::Instant::now();
    let snapshot = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let built = start.elapsed();
    let bytes = snapshot.snapshot.get_ref().len();
    let fresh_dir = dir.path().join("fresh");
    let (_flog, mut fresh) = open(&fresh_dir, &identity, StoreConfig::default())
        .await
        .unwrap();
    let start = std::time::Instant::now();
    fresh
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .unwrap();
    println!(
        "snapshot: built in {built:?}, {} MB, installed in {:?}",
        bytes / 1_000_000,
        start.elapsed()
    );
    assert_eq!(fresh.head("default").unwrap(), head);
}
