//! Log store behaviour beyond the conformance suite.

use super::harness::*;
use crate::{LogStore, StoreConfig, TypeConfig};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::testing::{blank_ent, log_id};
use openraft::{Entry, RaftLogReader};

/// Appends and waits for the durability callback, as openraft does.
pub async fn append_and_wait(log: &mut LogStore, entries: Vec<Entry<TypeConfig>>) {
    log.blocking_append(entries).await.unwrap();
}

#[tokio::test]
async fn replication_reads_are_bounded_but_never_empty() {
    let config = StoreConfig {
        max_log_read_entries: 3,
        ..StoreConfig::default()
    };
    let mut h = Harness::with_config(config).await;
    let entries: Vec<_> = (1..=10).map(|i| blank_ent::<TypeConfig>(1, 1, i)).collect();
    append_and_wait(&mut h.log, entries).await;
    let got = h.log.limited_get_log_entries(2, 11).await.unwrap();
    assert_eq!(
        got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
        [2, 3, 4]
    );
    assert!(h
        .log
        .limited_get_log_entries(5, 5)
        .await
        .unwrap()
        .is_empty());

    let tiny = StoreConfig {
        max_log_read_bytes: 1,
        ..StoreConfig::default()
    };
    let mut h = Harness::with_config(tiny).await;
    let entries: Vec<_> = (1..=4).map(|i| blank_ent::<TypeConfig>(1, 1, i)).collect();
    append_and_wait(&mut h.log, entries).await;
    let got = h.log.limited_get_log_entries(1, 5).await.unwrap();
    assert_eq!(
        got.len(),
        1,
        "one entry even when it alone exceeds the byte bound"
    );
}

#[tokio::test]
async fn purge_and_truncate_leave_no_hole() {
    let mut h = Harness::new().await;
    let entries: Vec<_> = (0..=9).map(|i| blank_ent::<TypeConfig>(1, 1, i)).collect();
    append_and_wait(&mut h.log, entries).await;
    h.log.purge(log_id(1, 1, 3)).await.unwrap();
    h.log.truncate(log_id(1, 1, 8)).await.unwrap();
    let state = h.log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 3)));
    assert_eq!(state.last_log_id, Some(log_id(1, 1, 7)));
    let all = h.log.try_get_log_entries(..).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
        [4, 5, 6, 7]
    );
    // Purging past the end (after a snapshot install) empties the log.
    h.log.purge(log_id(2, 1, 20)).await.unwrap();
    let state = h.log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(2, 1, 20)));
    assert!(h.log.try_get_log_entries(..).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_committed_hint_is_written_when_it_moved_far_enough() {
    let mut h = Harness::new().await;
    h.log.save_committed(Some(log_id(1, 1, 5))).await.unwrap();
    assert_eq!(h.log.read_committed().await.unwrap(), Some(log_id(1, 1, 5)));
    // Small steps are not written: the stored hint lags, never leads.
    h.log.save_committed(Some(log_id(1, 1, 6))).await.unwrap();
    h.log.save_committed(Some(log_id(1, 1, 68))).await.unwrap();
    assert_eq!(h.log.read_committed().await.unwrap(), Some(log_id(1, 1, 5)));
    h.log.save_committed(Some(log_id(1, 1, 69))).await.unwrap();
    assert_eq!(
        h.log.read_committed().await.unwrap(),
        Some(log_id(1, 1, 69))
    );
}
