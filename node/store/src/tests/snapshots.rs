//! Snapshot build and install.

use super::harness::*;
use crate::{AppliedChange, Command, CommandOutcome, StoreConfig};
use flagraft_client::entity::{EntityKey, EntityKind};
use openraft::storage::RaftStateMachine;
use openraft::{RaftSnapshotBuilder, Snapshot};
use serde_json::json;

async fn build(h: &mut Harness) -> Snapshot<crate::TypeConfig> {
    let mut builder = h.sm.get_snapshot_builder().await;
    builder.build_snapshot().await.unwrap()
}

async fn install(target: &mut Harness, snap: Snapshot<crate::TypeConfig>) {
    let mut buf = target.sm.begin_receiving_snapshot().await.unwrap();
    *buf = *snap.snapshot;
    target.sm.install_snapshot(&snap.meta, buf).await.unwrap();
}

fn assert_same_state(a: &Harness, b: &Harness) {
    assert_eq!(a.sm.projects(), b.sm.projects());
    assert_eq!(a.sm.last_applied(), b.sm.last_applied());
    for head in a.sm.projects() {
        let ra = a.sm.ruleset(&head.name).unwrap();
        let rb = b.sm.ruleset(&head.name).unwrap();
        assert_eq!(ra.entities, rb.entities);
        assert_eq!(full_digest(&b.sm, &head.name), head.digest);
        assert_eq!(
            a.sm.oldest_retained(&head.name),
            b.sm.oldest_retained(&head.name)
        );
        assert_eq!(
            a.sm.history(&head.name, 0, usize::MAX).unwrap(),
            b.sm.history(&head.name, 0, usize::MAX).unwrap()
        );
    }
}

#[tokio::test]
async fn build_then_install_reproduces_the_state_exactly() {
    // History retention is node-local: both nodes use the same bound here.
    let config = StoreConfig {
        history_limit: 4,
        ..StoreConfig::default()
    };
    let mut a = Harness::with_config(config.clone()).await;
    a.run(Command::CreateProject {
        name: "p".into(),
        time_ms: 1,
    })
    .await;
    // Four commits per apply call: each project's stubs of a call share a group.
    let commands: Vec<Command> = (0..8)
        .map(|i| {
            let mut c = commit(
                if i % 2 == 0 { "p" } else { "default" },
                vec![gate(&format!("g{}", i % 3), json!({"i": i, "n": [1, 2]}))],
                vec![],
            );
            c.request_id = Some(format!("req{i}"));
            Command::Commit(c)
        })
        .collect();
    for chunk in commands.chunks(4) {
        a.apply(chunk.to_vec()).await;
    }
    a.run(Command::Commit(commit(
        "p",
        vec![],
        vec![EntityKey::new(EntityKind::Gate, "g0")],
    )))
    .await;
    let snap = build(&mut a).await;
    assert_eq!(snap.meta.last_log_id, a.sm.last_applied());

    let mut b = Harness::with_config(config.clone()).await;
    b.run(Command::Commit(commit(
        "default",
        vec![gate("stale", json!(0))],
        vec![],
    )))
    .await;
    let mut changes = b.sm.subscribe();
    install(&mut b, snap).await;
    assert_same_state(&a, &b);
    assert!(matches!(
        &*changes.try_recv().unwrap(),
        AppliedChange::SnapshotInstalled { .. }
    ));
    assert_eq!(
        b.sm.get_current_snapshot()
            .await
            .unwrap()
            .unwrap()
            .meta
            .last_log_id,
        a.sm.last_applied()
    );
    // Durable at once, and what b applied before it (its last redo record) is not replayed
    // over it at open.
    let mut b = b.reopen(config.clone()).await;
    assert_same_state(&a, &b);

    // Both go on identically, including idempotency from the carried window.
    b.next_index = a.next_index;
    for h in [&mut a, &mut b] {
        let mut c = commit("p", vec![], vec![]);
        c.request_id = Some("req6".into());
        let out = h.run(Command::Commit(c)).await;
        assert!(
            matches!(
                out,
                CommandOutcome::Committed {
                    duplicate: true,
                    ..
                }
            ),
            "{out:?}"
        );
        h.run(Command::Commit(commit(
            "p",
            vec![gate("new", json!(1))],
            vec![],
        )))
        .await;
    }
    assert_same_state(&a, &b);

    // The installed state is durable.
    let b = b.reopen(config).await;
    assert_same_state(&a, &b);
}

#[tokio::test]
async fn a_node_that_missed_50_000_commits_catches_up_from_a_snapshot() {
    let mut leader = Harness::new().await;
    let mut follower = Harness::new().await;
    let mut n = 0u64;
    while n < 50_000 {
        let cmds = (0..1000)
            .map(|i| {
                let k = (n + i) % 500;
                Command::Commit(commit(
                    "default",
                    vec![gate(&format!("g{k}"), json!({"v": n + i}))],
                    vec![],
                ))
            })
            .collect();
        leader.apply(cmds).await;
        n += 1000;
    }
    assert_eq!(leader.sm.head("default").unwrap().version, 50_000);
    let snap = build(&mut leader).await;
    install(&mut follower, snap).await;
    assert_same_state(&leader, &follower);
    assert_eq!(follower.sm.head("default").unwrap().entity_count, 500);
    // Default history bound: the last 10,000 versions travel with the snapshot.
    assert_eq!(follower.sm.oldest_retained("default"), Some(40_001));
}

#[tokio::test]
async fn a_snapshot_with_a_wrong_digest_is_refused() {
    let mut a = Harness::new().await;
    a.run(Command::Commit(commit(
        "default",
        vec![gate("a", json!("MARKER-AAAA"))],
        vec![],
    )))
    .await;
    let mut snap = build(&mut a).await;
    let mut bytes = snap.snapshot.into_inner();
    // Change the entity body (its first occurrence, in the entities section) to another
    // valid JSON string of the same length: it decodes, but no longer matches the digest.
    let marker = b"MARKER-AAAA";
    let pos = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .unwrap();
    bytes[pos + 7..pos + 11].copy_from_slice(b"BBBB");
    *snap.snapshot = std::io::Cursor::new(bytes);
    let mut b = Harness::new().await;
    let before = b.sm.projects();
    let mut buf = b.sm.begin_receiving_snapshot().await.unwrap();
    *buf = *snap.snapshot;
    assert!(b.sm.install_snapshot(&snap.meta, buf).await.is_err());
    assert_eq!(
        b.sm.projects(),
        before,
        "a refused snapshot changes nothing"
    );
}

/// openraft 0.9 purges the log up to an installed snapshot without waiting for the install:
/// that purge must not reach the disk before the installed state does, or a crash in between
/// leaves a node openraft refuses to restart (purged beyond its state machine).
#[tokio::test]
async fn a_purge_for_a_snapshot_being_installed_waits_for_the_install() {
    use openraft::storage::{RaftLogReader, RaftLogStorage};
    use openraft::testing::blank_ent;
    let mut a = Harness::new().await;
    for i in 0..5 {
        a.run(Command::Commit(commit(
            "default",
            vec![gate("g", json!(i))],
            vec![],
        )))
        .await;
    }
    let snap = build(&mut a).await;
    let upto = snap.meta.last_log_id.unwrap();

    let mut b = Harness::new().await;
    let entries: Vec<_> = (1..=3)
        .map(|i| blank_ent::<crate::TypeConfig>(1, 1, i))
        .collect();
    super::log::append_and_wait(&mut b.log, entries).await;
    let mut buf = b.sm.begin_receiving_snapshot().await.unwrap();
    *buf = *snap.snapshot;
    // openraft's order: the purge runs before (or while) the state machine installs.
    b.log.purge(upto).await.unwrap();
    assert_eq!(b.log.try_get_log_entries(..).await.unwrap().len(), 3);
    assert_eq!(
        b.log.get_log_state().await.unwrap().last_purged_log_id,
        None
    );
    b.sm.install_snapshot(&snap.meta, buf).await.unwrap();
    let state = b.log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(upto));
    assert!(b.log.try_get_log_entries(..).await.unwrap().is_empty());

    // Without a snapshot in flight a purge is written at once (openraft's own suite).
    let mut c = Harness::new().await;
    let entries: Vec<_> = (1..=3)
        .map(|i| blank_ent::<crate::TypeConfig>(1, 1, i))
        .collect();
    super::log::append_and_wait(&mut c.log, entries).await;
    c.log
        .purge(openraft::testing::log_id(1, 1, 2))
        .await
        .unwrap();
    assert_eq!(c.log.try_get_log_entries(..).await.unwrap().len(), 1);
}

/// Records are stored as stubs naming their log entries (`state::records`): a purge keeps the
/// entries that retained records name, reads never see them, a restart and a snapshot read the
/// records through them, and the entries go once their records are compacted.
#[tokio::test]
async fn a_purge_keeps_the_entries_of_retained_records_until_they_are_compacted() {
    use openraft::storage::{RaftLogReader, RaftLogStorage};
    use openraft::testing::log_id;
    let config = StoreConfig {
        history_limit: 3,
        ..StoreConfig::default()
    };
    let mut a = Harness::with_config(config.clone()).await;
    // Entries 1..=5, versions 1..=5; versions 3..=5 retained, in entries 3..=5.
    for i in 0..5 {
        a.run(Command::Commit(commit(
            "default",
            vec![gate(&format!("g{i}"), json!({"i": i}))],
            vec![],
        )))
        .await;
    }
    let history = a.sm.history("default", 0, usize::MAX).unwrap();
    assert_eq!(
        history.iter().map(|r| r.version).collect::<Vec<_>>(),
        [3, 4, 5]
    );
    assert_eq!(history[0].upserts, vec![gate("g2", json!({"i": 2}))]);

    a.log.purge(log_id(1, 1, 5)).await.unwrap();
    assert_eq!(a.log.stored_indexes_for_tests(), [3, 4, 5]);
    let state = a.log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 5)));
    assert_eq!(state.last_log_id, Some(log_id(1, 1, 5)));
    assert!(a.log.try_get_log_entries(..).await.unwrap().is_empty());
    assert!(a.log.try_get_log_entries(2..6).await.unwrap().is_empty());
    assert_eq!(a.sm.history("default", 0, usize::MAX).unwrap(), history);
    assert_eq!(
        a.sm.version_digest("default", 4).unwrap(),
        Some((history[1].digest, history[1].commit_time_ms))
    );
    assert_eq!(a.sm.version_digest("default", 2).unwrap(), None);

    // A restart loads the ruleset and history through the kept entries.
    let ruleset = a.sm.ruleset("default").unwrap();
    a.sm.flush().await.unwrap();
    let mut a = a.reopen(config.clone()).await;
    assert_eq!(a.sm.ruleset("default").unwrap().entities, ruleset.entities);
    assert_eq!(a.sm.history("default", 0, usize::MAX).unwrap(), history);

    // A snapshot carries the records in full: the receiver has none of these entries.
    let snap = build(&mut a).await;
    let mut b = Harness::with_config(config.clone()).await;
    install(&mut b, snap).await;
    assert_same_state(&a, &b);
    assert!(b.log.stored_indexes_for_tests().is_empty());

    // Versions 6..=8 (entries 6..=8) push 3..=5 out: the next purge removes their entries.
    for i in 5..8 {
        a.run(Command::Commit(commit(
            "default",
            vec![gate(&format!("g{i}"), json!({"i": i}))],
            vec![],
        )))
        .await;
    }
    a.log.purge(log_id(1, 1, 7)).await.unwrap();
    assert_eq!(a.log.stored_indexes_for_tests(), [6, 7, 8]);
    let entries = a.log.try_get_log_entries(..).await.unwrap();
    assert_eq!(
        entries.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
        [8]
    );
    assert_eq!(
        a.sm.history("default", 0, usize::MAX)
            .unwrap()
            .iter()
            .map(|r| r.version)
            .collect::<Vec<_>>(),
        [6, 7, 8]
    );
}
