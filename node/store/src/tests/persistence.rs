//! Reopening, identity and unreadable dirs.

use super::harness::*;
use crate::{open, Command, Identity, StoreConfig, StoreError};
use flagraft_client::entity::{EntityKey, EntityKind};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::blank_ent;
use openraft::{RaftLogReader, Vote};
use serde_json::json;

#[tokio::test]
async fn reopen_after_drop_keeps_state_history_log_and_vote() {
    let mut h = Harness::new().await;
    h.run(Command::CreateProject {
        name: "p".into(),
        time_ms: 7,
    })
    .await;
    for i in 0..5 {
        let mut c = commit("p", vec![gate(&format!("g{i}"), json!({"i": i}))], vec![]);
        c.request_id = Some(format!("r{i}"));
        h.run(Command::Commit(c)).await;
    }
    let vote = Vote::new(3, 2);
    h.log.save_vote(&vote).await.unwrap();
    // After the applied ones: an applied entry never changes (records name their entries).
    let first = h.next_index;
    let entries: Vec<_> = (first..first + 3)
        .map(|i| blank_ent::<crate::TypeConfig>(1, 1, i))
        .collect();
    crate::tests::log::append_and_wait(&mut h.log, entries).await;
    h.sm.flush().await.unwrap();

    // What an earlier release also wrote: a version -> request id index, dropped at open.
    let legacy = [
        crate::keys::LEGACY_REQUEST_BY_VERSION,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        2,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        1,
    ];
    h.sm.tree_for_tests().insert(legacy, "r0").unwrap();
    let keys_before = h.sm.stored_key_count() - 1;
    h.sm.flush().await.unwrap();

    let heads = h.sm.projects();
    let ruleset = h.sm.ruleset("p").unwrap();
    let history = h.sm.history("p", 0, 100).unwrap();
    let applied = h.sm.last_applied();

    let mut h = h.reopen(StoreConfig::default()).await;
    assert_eq!(
        h.sm.stored_key_count(),
        keys_before,
        "the legacy index is gone"
    );
    assert_eq!(h.sm.projects(), heads);
    assert_eq!(h.sm.ruleset("p").unwrap().entities, ruleset.entities);
    assert_eq!(h.sm.history("p", 0, 100).unwrap(), history);
    assert_eq!(h.sm.last_applied(), applied);
    assert_eq!(h.log.read_vote().await.unwrap(), Some(vote));
    let logs = h.log.try_get_log_entries(first..first + 3).await.unwrap();
    assert_eq!(logs.len(), 3);
    let (applied_state, _) = h.sm.applied_state().await.unwrap();
    assert_eq!(applied_state, applied);
    // Idempotency survives the restart.
    let mut c = commit("p", vec![], vec![]);
    c.request_id = Some("r2".into());
    let out = h.run(Command::Commit(c)).await;
    assert!(matches!(
        out,
        crate::CommandOutcome::Committed {
            version: 3,
            duplicate: true,
            ..
        }
    ));
}

#[tokio::test]
async fn a_dir_of_another_node_or_cluster_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let stores = open(dir.path(), &identity(1), StoreConfig::default())
            .await
            .unwrap();
        drop(stores);
    }
    for other in [
        identity(2),
        Identity {
            node_id: 1,
            cluster: "another".into(),
        },
    ] {
        let err = reopen_until_unlocked(dir.path(), &other).await;
        match &err {
            StoreError::IdentityMismatch {
                dir: d,
                stored,
                expected,
            } => {
                assert_eq!(d, dir.path());
                assert_eq!(stored, &identity(1));
                assert_eq!(expected, &other);
            }
            e => panic!("expected IdentityMismatch, got {e}"),
        }
        assert!(err.to_string().contains(&dir.path().display().to_string()));
    }
    // The rightful owner still opens it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match open(dir.path(), &identity(1), StoreConfig::default()).await {
            Ok(_) => break,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "{e}");
                tokio::task::yield_now().await;
            }
        }
    }
}

/// Opens with `who`, retrying while the previous handle's lock is still held.
async fn reopen_until_unlocked(dir: &std::path::Path, who: &Identity) -> StoreError {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match open(dir, who, StoreConfig::default()).await {
            Ok(_) => panic!("opened a dir that belongs to someone else"),
            Err(StoreError::Open { .. }) if std::time::Instant::now() < deadline => {
                tokio::task::yield_now().await
            }
            Err(e) => return e,
        }
    }
}

#[tokio::test]
async fn an_unreadable_dir_is_an_error_naming_it_and_is_not_wiped() {
    let dir = tempfile::tempdir().unwrap();
    // Where sled wants its directory there is a file it cannot use.
    let blocker = dir.path().join("sled");
    std::fs::write(&blocker, b"not a database").unwrap();
    let err = open(dir.path(), &identity(1), StoreConfig::default())
        .await
        .err()
        .expect("must not open");
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
    assert_eq!(std::fs::read(&blocker).unwrap(), b"not a database");
}

#[tokio::test]
async fn corrupt_sled_files_give_an_error_and_stay_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut h = Harness::new().await;
        h.run(Command::Commit(commit(
            "default",
            vec![gate("a", json!(1))],
            vec![],
        )))
        .await;
        h.sm.flush().await.unwrap();
        // Move the db files into our dir once the handles are gone.
        let src = h.dir.path().join("sled");
        drop(h.log);
        drop(h.sm);
        copy_dir_when_unlocked(&src, &dir.path().join("sled")).await;
    }
    let conf = dir.path().join("sled").join("conf");
    let garbage = vec![0xA5u8; 64];
    std::fs::write(&conf, &garbage).unwrap();
    let err = open(dir.path(), &identity(1), StoreConfig::default())
        .await
        .err()
        .expect("a garbage sled conf must not open");
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
    assert_eq!(std::fs::read(&conf).unwrap(), garbage, "never wiped");
    assert!(dir.path().join("sled").join("db").exists());
}

async fn copy_dir_when_unlocked(src: &std::path::Path, dst: &std::path::Path) {
    drop(open_raw_when_unlocked(src).await);
    copy_recursively(src, dst);
}

/// The sled db at `src`, opened directly once the store's handles have released it (its lock
/// goes with the last handle).
async fn open_raw_when_unlocked(src: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let probe = sled::Config::new()
            .segment_size(crate::sled_segment_size(src))
            .path(src);
        match probe.open() {
            Ok(db) => return db,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "{e}");
                tokio::task::yield_now().await;
            }
        }
    }
}

/// Records are stubs whose bodies are in the log entries they name (`state::records`). If such
/// an entry is gone, open refuses the dir with an error naming it and the version, and deletes
/// nothing, rather than loading a ruleset without that version's bodies.
#[tokio::test]
async fn a_missing_log_entry_that_a_record_names_stops_open_and_wipes_nothing() {
    let mut h = Harness::new().await;
    for i in 0..3 {
        h.run(Command::Commit(commit(
            "default",
            vec![gate(&format!("g{i}"), json!(i))],
            vec![],
        )))
        .await;
    }
    h.sm.flush().await.unwrap();
    let Harness { dir, log, sm, .. } = h;
    drop(log);
    drop(sm);
    let sled_dir = dir.path().join("sled");
    {
        // Version 2 is entry 2 (the harness numbers entries from 1).
        let db = open_raw_when_unlocked(&sled_dir).await;
        let log_tree = db.open_tree(crate::keys::LOG_TREE).unwrap();
        assert!(log_tree
            .remove(crate::keys::log_entry(2))
            .unwrap()
            .is_some());
        db.flush().unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let err = loop {
        match open(dir.path(), &identity(1), StoreConfig::default()).await {
            // Still locked by the raw handle above, for a moment.
            Err(StoreError::Open { .. }) if std::time::Instant::now() < deadline => {
                tokio::task::yield_now().await
            }
            Err(e) => break e,
            Ok(_) => panic!("a store missing a record's log entry must not open"),
        }
    };
    let text = err.to_string();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{text}");
    assert!(text.contains(&dir.path().display().to_string()), "{text}");
    assert!(text.contains("version 2 is in log entry 2"), "{text}");
    let db = open_raw_when_unlocked(&sled_dir).await;
    let log_tree = db.open_tree(crate::keys::LOG_TREE).unwrap();
    assert!(log_tree.contains_key(crate::keys::log_entry(1)).unwrap());
    assert!(log_tree.contains_key(crate::keys::log_entry(3)).unwrap());
    let sm_tree = db.open_tree(crate::keys::SM_TREE).unwrap();
    assert!(!sm_tree.is_empty(), "never wiped");
}

fn copy_recursively(src: &std::path::Path, dst: &std::path::Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_recursively(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), to).unwrap();
        }
    }
}

#[tokio::test]
async fn large_entities_and_records_are_chunked_and_leave_nothing_behind() {
    let mut h = Harness::with_config(StoreConfig {
        history_limit: 2,
        ..StoreConfig::default()
    })
    .await;
    let baseline = h.sm.stored_key_count();
    let big = |n: usize| json!({"ids": (0..n).map(|i| format!("user-{i:08}")).collect::<Vec<_>>()});
    // A 60 KiB entity, then a commit whose record holds 40 entities (> 4 KiB).
    h.run(Command::Commit(commit(
        "default",
        vec![gate("big", big(4000))],
        vec![],
    )))
    .await;
    let many = (0..40).map(|i| gate(&format!("g{i}"), big(10))).collect();
    h.run(Command::Commit(commit("default", many, vec![])))
        .await;
    h.sm.flush().await.unwrap();
    let ruleset = h.sm.ruleset("default").unwrap();
    let history = h.sm.history("default", 0, 10).unwrap();
    assert_eq!(history.len(), 2);

    let mut h = h
        .reopen(StoreConfig {
            history_limit: 2,
            ..StoreConfig::default()
        })
        .await;
    assert_eq!(h.sm.ruleset("default").unwrap().entities, ruleset.entities);
    assert_eq!(h.sm.history("default", 0, 10).unwrap(), history);
    assert_eq!(full_digest(&h.sm, "default"), ruleset.head.digest);

    // Shrink the big entity, delete the rest, and let both big records be compacted away.
    let keys: Vec<_> = (0..40)
        .map(|i| {
            flagraft_client::entity::EntityKey::new(
                flagraft_client::entity::EntityKind::Gate,
                format!("g{i}"),
            )
        })
        .collect();
    h.run(Command::Commit(commit(
        "default",
        vec![gate("big", json!(1))],
        keys,
    )))
    .await;
    h.run(Command::Commit(commit("default", vec![], vec![])))
        .await;
    assert_eq!(h.sm.oldest_retained("default"), Some(3));
    // Left: two small records (the remaining entity's body is still only in record 3);
    // nothing of the chunked values.
    assert_eq!(h.sm.stored_key_count(), baseline + 2);
}

#[tokio::test]
async fn a_dir_created_with_sleds_default_segment_size_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    {
        let old = sled::Config::new()
            .path(dir.path().join("sled"))
            .open()
            .unwrap();
        old.flush().unwrap();
    }
    assert_eq!(
        crate::sled_segment_size(&dir.path().join("sled")),
        512 * 1024,
        "the size recorded in the dir"
    );
    let opened = open(dir.path(), &identity(1), StoreConfig::default()).await;
    assert!(opened.is_ok(), "{:?}", opened.err());
    assert_eq!(
        crate::sled_segment_size(&tempfile::tempdir().unwrap().path().join("sled")),
        crate::SLED_SEGMENT_BYTES,
        "a new dir gets the larger size"
    );
}

/// An entity's latest body is stored only in the record of the version that upserted it; its
/// own key gets it (chunked when large) when that record is compacted, and a reopen rebuilds
/// the ruleset from those keys plus the retained records.
#[tokio::test]
async fn entity_bodies_move_to_their_key_when_their_record_is_compacted() {
    let config = || StoreConfig {
        history_limit: 1,
        ..StoreConfig::default()
    };
    let mut h = Harness::with_config(config()).await;
    let baseline = h.sm.stored_key_count();
    let big = |tag: &str| json!({"tag": tag, "ids": (0..3000).map(|i| format!("user-{i:08}")).collect::<Vec<_>>()});
    let key = |name: &str| {
        flagraft_client::entity::EntityKey::new(flagraft_client::entity::EntityKind::Gate, name)
    };
    // v1: the big gate's body is in record 1; v2 compacts record 1, so the body moves to its key.
    h.run(Command::Commit(commit(
        "default",
        vec![gate("big", big("a"))],
        vec![],
    )))
    .await;
    h.run(Command::Commit(commit(
        "default",
        vec![gate("small", json!(1))],
        vec![],
    )))
    .await;
    assert_eq!(h.sm.oldest_retained("default"), Some(2));
    h.sm.flush().await.unwrap();
    let ruleset = h.sm.ruleset("default").unwrap();
    let mut h = h.reopen(config()).await;
    assert_eq!(h.sm.ruleset("default").unwrap().entities, ruleset.entities);
    assert_eq!(full_digest(&h.sm, "default"), ruleset.head.digest);

    // Upsert it again (its key keeps the older body), then delete it; reopen in between.
    h.run(Command::Commit(commit(
        "default",
        vec![gate("big", big("b"))],
        vec![],
    )))
    .await;
    h.sm.flush().await.unwrap();
    let ruleset = h.sm.ruleset("default").unwrap();
    let mut h = h.reopen(config()).await;
    assert_eq!(h.sm.ruleset("default").unwrap().entities, ruleset.entities);
    h.run(Command::Commit(commit("default", vec![], vec![key("big")])))
        .await;
    h.run(Command::Commit(commit(
        "default",
        vec![],
        vec![key("small")],
    )))
    .await;
    h.run(Command::Commit(commit("default", vec![], vec![])))
        .await;
    // Left: one small record; no entity, no chunk.
    assert_eq!(h.sm.stored_key_count(), baseline + 1);
}

/// Earlier releases stored every remembered request id on its own; an open drops the entries
/// whose record is retained (the record holds them) and still remembers the ids.
#[tokio::test]
async fn request_entries_an_earlier_release_stored_are_dropped_at_open() {
    let mut h = Harness::new().await;
    let mut c = commit("default", vec![gate("a", json!(1))], vec![]);
    c.request_id = Some("r1".into());
    h.run(Command::Commit(c)).await;
    let remembered = h.sm.remembered_request("default", "r1");
    let (version, digest, commit_time_ms) = remembered.unwrap();
    let entry = crate::state::model::RequestEntry {
        version,
        digest,
        commit_time_ms,
    };
    let key = crate::keys::request(0, "r1");
    h.sm.tree_for_tests()
        .insert(&key, crate::codec::encode(&entry).unwrap())
        .unwrap();
    h.sm.flush().await.unwrap();
    let h = h.reopen(StoreConfig::default()).await;
    assert_eq!(h.sm.tree_for_tests().get(&key).unwrap(), None);
    assert_eq!(h.sm.remembered_request("default", "r1"), remembered);
}

/// The state machine tree's keys and values.
fn tree_contents(h: &Harness) -> Vec<(Vec<u8>, Vec<u8>)> {
    h.sm.tree_for_tests()
        .iter()
        .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
        .collect()
}

/// A crash can cut a small apply call short after its redo record, with any part of its
/// writes made (sled keeps a prefix of them; which part depends on where the cut falls). The
/// next open completes the call.
#[tokio::test]
async fn an_apply_call_cut_short_after_its_redo_record_is_completed_at_open() {
    type Lost = fn(usize) -> bool;
    let patterns: [(&str, Lost); 3] = [
        ("every write lost", |_| true),
        ("every other write lost", |n| n % 2 == 0),
        ("only the first write made", |n| n > 0),
    ];
    for (what, lost) in patterns {
        // A short history: the call also compacts records (bodies move to their own keys).
        let config = StoreConfig {
            history_limit: 2,
            ..StoreConfig::default()
        };
        let mut h = Harness::with_config(config.clone()).await;
        h.run(Command::CreateProject {
            name: "p".into(),
            time_ms: 7,
        })
        .await;
        for i in 0..3 {
            let mut c = commit("p", vec![gate(&format!("g{i}"), json!({"i": i}))], vec![]);
            c.request_id = Some(format!("r{i}"));
            h.run(Command::Commit(c)).await;
        }
        let before: std::collections::BTreeMap<_, _> = tree_contents(&h).into_iter().collect();
        // One call: an update, a new entity, a delete (two commits).
        let mut c = commit(
            "p",
            vec![gate("g0", json!({"i": 10})), gate("g9", json!(9))],
            vec![],
        );
        c.request_id = Some("r9".into());
        h.apply(vec![
            Command::Commit(c),
            Command::Commit(commit(
                "p",
                vec![],
                vec![EntityKey::new(EntityKind::Gate, "g1")],
            )),
        ])
        .await;
        let after = tree_contents(&h);
        let heads = h.sm.projects();
        let ruleset = h.sm.ruleset("p").unwrap();
        let history = h.sm.history("p", 0, 100).unwrap();
        let applied = h.sm.last_applied();

        // Take back the lost writes: each changed key gets its value from before the call.
        let after_map: std::collections::BTreeMap<_, _> = after.iter().cloned().collect();
        let changed: Vec<&Vec<u8>> = before
            .keys()
            .chain(after_map.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter(|k| before.get(*k) != after_map.get(*k))
            .collect();
        assert!(changed.len() >= 6, "{what}: the call wrote {changed:?}");
        let tree = h.sm.tree_for_tests();
        for (n, k) in changed.iter().enumerate() {
            if lost(n) {
                match before.get(*k) {
                    Some(v) => tree.insert(k.as_slice(), v.as_slice()).unwrap(),
                    None => tree.remove(k.as_slice()).unwrap(),
                };
            }
        }
        assert_ne!(tree_contents(&h), after, "{what}: the state is torn");
        h.sm.flush().await.unwrap();

        let h = h.reopen(config).await;
        assert_eq!(tree_contents(&h), after, "{what}");
        assert!(
            h.sm.redo_tree_for_tests().is_empty(),
            "{what}: the record is dropped once replayed"
        );
        assert_eq!(h.sm.projects(), heads, "{what}");
        assert_eq!(h.sm.ruleset("p").unwrap().entities, ruleset.entities);
        assert_eq!(h.sm.history("p", 0, 100).unwrap(), history, "{what}");
        assert_eq!(h.sm.last_applied(), applied, "{what}");
    }
}

/// A call too large for a redo record is one sled batch; the previous call's record must not
/// be replayed over it at open.
#[tokio::test]
async fn a_large_apply_call_after_a_small_one_stays_at_open() {
    let config = StoreConfig {
        history_limit: 1,
        ..StoreConfig::default()
    };
    let mut h = Harness::with_config(config.clone()).await;
    let pad = "x".repeat(2048);
    let upserts = (0..40)
        .map(|i| gate(&format!("big{i}"), json!({"i": i, "pad": pad})))
        .collect();
    // The bodies go to the log entry; the call writes a stub and heads.
    h.run(Command::Commit(commit("default", upserts, vec![])))
        .await;
    assert!(!h.sm.redo_tree_for_tests().is_empty(), "a small call");
    // Compacting that record moves its 40 bodies (80 KiB) to their own keys.
    h.run(Command::Commit(commit(
        "default",
        vec![gate("g", json!(1))],
        vec![],
    )))
    .await;
    assert!(h.sm.redo_tree_for_tests().is_empty(), "a batch");
    let contents = tree_contents(&h);
    let heads = h.sm.projects();
    let applied = h.sm.last_applied();
    h.sm.flush().await.unwrap();

    let h = h.reopen(config).await;
    assert_eq!(tree_contents(&h), contents);
    assert_eq!(h.sm.projects(), heads);
    assert_eq!(h.sm.last_applied(), applied);
}

/// A redo record that does not decode stops the open with an error naming the dir, and
/// changes nothing: the record and the state stay for the operator to inspect.
#[tokio::test]
async fn a_corrupt_redo_record_is_an_error_naming_the_dir_and_nothing_is_wiped() {
    let mut h = Harness::new().await;
    h.run(Command::Commit(commit(
        "default",
        vec![gate("g", json!(1))],
        vec![],
    )))
    .await;
    let garbage = [1u8, 0, 0, 0, 9, b'k'];
    h.sm.redo_tree_for_tests()
        .insert(crate::keys::REDO, &garbage[..])
        .unwrap();
    let contents = tree_contents(&h);
    h.sm.flush().await.unwrap();
    let Harness { dir, log, sm, .. } = h;
    drop(log);
    drop(sm);

    let err = reopen_until_unlocked(dir.path(), &identity(1)).await;
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    assert!(msg.contains("redo record"), "{msg}");

    let sled_dir = dir.path().join("sled");
    let db = sled::Config::new()
        .segment_size(crate::sled_segment_size(&sled_dir))
        .path(sled_dir)
        .open()
        .unwrap();
    let redo = db.open_tree(crate::keys::REDO_TREE).unwrap();
    assert_eq!(
        redo.get(crate::keys::REDO).unwrap().as_deref(),
        Some(&garbage[..])
    );
    let tree = db.open_tree(crate::keys::SM_TREE).unwrap();
    let after: Vec<_> = tree
        .iter()
        .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
        .collect();
    assert_eq!(after, contents);
}
