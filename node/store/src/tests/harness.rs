//! A store in a temp dir, driven the way openraft drives it.

use crate::{
    open, Command, CommandOutcome, CommitCommand, Identity, LogStore, StateMachineStore,
    StoreConfig, TypeConfig, Upsert,
};
use flagraft_client::digest::{entity_key_hash, RulesetDigest};
use flagraft_client::entity::{EntityKey, EntityKind};
use openraft::storage::{RaftLogStorageExt, RaftStateMachine};
use openraft::{Entry, EntryPayload};
use std::path::Path;

pub fn identity(node_id: u64) -> Identity {
    Identity {
        node_id,
        cluster: "test-cluster".to_string(),
    }
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub log: LogStore,
    pub sm: StateMachineStore,
    pub next_index: u64,
}

impl Harness {
    pub async fn new() -> Self {
        Self::with_config(StoreConfig::default()).await
    }

    pub async fn with_config(config: StoreConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (log, sm) = open(dir.path(), &identity(1), config).await.unwrap();
        Harness {
            dir,
            log,
            sm,
            next_index: 1,
        }
    }

    /// Re-opens the same dir (drops the old handles first).
    pub async fn reopen(self, config: StoreConfig) -> Self {
        let Harness {
            dir,
            log,
            sm,
            next_index,
        } = self;
        drop(log);
        drop(sm);
        let (log, sm) = open_retrying(dir.path(), config).await;
        Harness {
            dir,
            log,
            sm,
            next_index,
        }
    }

    pub fn entry(&mut self, command: Command) -> Entry<TypeConfig> {
        let entry = Entry {
            log_id: openraft::testing::log_id(1, 1, self.next_index),
            payload: EntryPayload::Normal(command),
        };
        self.next_index += 1;
        entry
    }

    /// As openraft does: the entries are in the log (durably) before they are applied.
    pub async fn apply(&mut self, commands: Vec<Command>) -> Vec<CommandOutcome> {
        let entries: Vec<_> = commands.into_iter().map(|c| self.entry(c)).collect();
        self.log.blocking_append(entries.clone()).await.unwrap();
        self.sm.apply(entries).await.unwrap()
    }

    pub async fn run(&mut self, command: Command) -> CommandOutcome {
        self.apply(vec![command]).await.remove(0)
    }
}

/// The flusher task of a dropped store may still hold sled's lock for a moment (longer on a
/// loaded machine).
async fn open_retrying(dir: &Path, config: StoreConfig) -> (LogStore, StateMachineStore) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match open(dir, &identity(1), config.clone()).await {
            Ok(stores) => return stores,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::task::yield_now().await;
            }
            Err(e) => panic!("reopen failed: {e}"),
        }
    }
}

pub fn gate(name: &str, body: serde_json::Value) -> Upsert {
    Upsert::new(EntityKey::new(EntityKind::Gate, name), &body)
}

pub fn commit(project: &str, upserts: Vec<Upsert>, deletes: Vec<EntityKey>) -> CommitCommand {
    CommitCommand {
        project: project.to_string(),
        upserts,
        deletes,
        author: "alice".to_string(),
        message: "change".to_string(),
        expected_version: None,
        request_id: None,
        proposed_time_ms: 1_000,
    }
}

/// The digest of a ruleset computed from scratch.
pub fn full_digest(sm: &StateMachineStore, project: &str) -> RulesetDigest {
    let rs = sm.ruleset(project).unwrap();
    let hashes: Vec<[u8; 32]> = rs
        .entities
        .iter()
        .map(|(k, body)| entity_key_hash(k, &body.to_value().unwrap()))
        .collect();
    RulesetDigest::from_hashes(&hashes)
}

pub fn committed_version(outcome: &CommandOutcome) -> u64 {
    match outcome {
        CommandOutcome::Committed { version, .. } => *version,
        other => panic!("expected Committed, got {other:?}"),
    }
}
