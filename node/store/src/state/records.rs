//! Version records as stored: in full, or as a stub whose bodies stay in the Raft log.
//!
//! A commit's bodies reach every node in a log entry, which the node writes to sled anyway.
//! Writing them again in the version record doubled what a commit costs sled: sled rewrites a
//! leaf (up to 17 items) on every split and every 10 updates, so each stored byte is written
//! several times. So apply stores a stub: the entry that holds the commit (its index, and the
//! commit's place in a group-commit batch) and what apply computed (commit time, digest).
//! Readers take author, message, request id, upserts and deletes from the entry.
//!
//! The entries that retained stubs name are kept in the log tree after openraft purges them
//! (`Purges::set_pin`), until their records are compacted. Snapshots carry full records, so a
//! node that installs one needs no log behind its records; records written by earlier releases
//! are full too.
//!
//! ```text
//! stored record = bincode(VersionRecord)            (starts with a varint: never 0xFF)
//!               | 0xFF ++ bincode(RecordStub)
//! ```

use crate::codec::{self, CodecError};
use crate::keys;
use crate::types::{Command, CommitCommand, TypeConfig, VersionRecord};
use flagraft_client::digest::RulesetDigest;
use openraft::{Entry, EntryPayload};
use serde::{Deserialize, Serialize};

/// First byte of a stored stub; no bincode varint starts with it.
const STUB_TAG: u8 = 0xFF;

/// A record whose commit is the `position`-th of log entry `log_index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordStub {
    pub version: u64,
    pub commit_time_ms: u64,
    pub digest: RulesetDigest,
    pub log_index: u64,
    /// 0 for a `Command::Commit`; the index into a `Command::CommitBatch`.
    pub position: u32,
}

pub enum StoredRecord {
    Full(VersionRecord),
    Stub(RecordStub),
}

pub fn encode_stub(stub: &RecordStub) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![STUB_TAG];
    out.extend_from_slice(&codec::encode(stub)?);
    Ok(out)
}

pub fn decode(raw: &[u8]) -> Result<StoredRecord, CodecError> {
    match raw.split_first() {
        Some((&STUB_TAG, stub)) => Ok(StoredRecord::Stub(codec::decode(stub)?)),
        _ => Ok(StoredRecord::Full(codec::decode(raw)?)),
    }
}

/// The version of a stored record, without decoding the rest.
pub fn stored_version(raw: &[u8]) -> Result<u64, CodecError> {
    match raw.split_first() {
        Some((&STUB_TAG, stub)) => codec::decode_prefix::<u64>(stub),
        _ => codec::decode_prefix::<u64>(raw),
    }
}

/// Digest and commit time of a stored record: a stub holds both, so no log entry is read.
pub fn digest_and_time(raw: &[u8]) -> Result<(RulesetDigest, u64), CodecError> {
    Ok(match decode(raw)? {
        StoredRecord::Full(r) => (r.digest, r.commit_time_ms),
        StoredRecord::Stub(s) => (s.digest, s.commit_time_ms),
    })
}

/// Why a stub could not be read back.
#[derive(Debug)]
pub enum Unresolved {
    /// Its log entry is gone: the record was compacted (and the entry purged) since the stub was
    /// read. The caller checks that the record is gone too.
    EntryGone,
    Corrupt(CodecError),
}

impl From<CodecError> for Unresolved {
    fn from(e: CodecError) -> Self {
        Unresolved::Corrupt(e)
    }
}

/// Reads stubs' commits from the log, decoding each entry once for consecutive stubs of the
/// same entry (a group-commit entry holds up to a few dozen versions).
pub struct Resolver<'a> {
    log: &'a sled::Tree,
    last: Option<(u64, Vec<Option<CommitCommand>>)>,
}

impl<'a> Resolver<'a> {
    pub fn new(log: &'a sled::Tree) -> Self {
        Resolver { log, last: None }
    }

    /// The full record of `project` that `raw` (as stored) holds.
    pub fn read(&mut self, project: &str, raw: &[u8]) -> Result<VersionRecord, Unresolved> {
        match decode(raw)? {
            StoredRecord::Full(record) => Ok(record),
            StoredRecord::Stub(stub) => self.resolve(project, &stub),
        }
    }

    pub fn resolve(
        &mut self,
        project: &str,
        stub: &RecordStub,
    ) -> Result<VersionRecord, Unresolved> {
        if self.last.as_ref().map(|(i, _)| *i) != Some(stub.log_index) {
            let raw = self
                .log
                .get(keys::log_entry(stub.log_index))
                .map_err(CodecError::from)?
                .ok_or(Unresolved::EntryGone)?;
            let entry: Entry<TypeConfig> = codec::decode(&raw)?;
            let commits = match entry.payload {
                EntryPayload::Normal(Command::Commit(c)) => vec![Some(c)],
                EntryPayload::Normal(Command::CommitBatch(cs)) => {
                    cs.into_iter().map(Some).collect()
                }
                _ => Vec::new(),
            };
            self.last = Some((stub.log_index, commits));
        }
        let corrupt = || {
            Unresolved::Corrupt(CodecError::Corrupt(format!(
                "project '{project}': version {} names commit {} of log entry {}, which holds no \
                 such commit of this project",
                stub.version, stub.position, stub.log_index
            )))
        };
        let commits = self.last.as_mut().map(|(_, c)| c).ok_or_else(corrupt)?;
        // Each commit is taken once: one version per commit.
        let commit = commits
            .get_mut(stub.position as usize)
            .and_then(Option::take)
            .filter(|c| c.project == project)
            .ok_or_else(corrupt)?;
        Ok(VersionRecord {
            version: stub.version,
            author: commit.author,
            message: commit.message,
            commit_time_ms: stub.commit_time_ms,
            request_id: commit.request_id,
            upserts: commit.upserts,
            deletes: commit.deletes,
            digest: stub.digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::Upsert;
    use flagraft_client::entity::{EntityKey, EntityKind};
    use openraft::{CommittedLeaderId, LogId};
    use serde_json::json;

    fn commit(project: &str, n: u64) -> CommitCommand {
        CommitCommand {
            project: project.into(),
            upserts: vec![Upsert::new(
                EntityKey::new(EntityKind::Gate, format!("g{n}")),
                &json!({"on": n}),
            )],
            deletes: vec![EntityKey::new(EntityKind::Config, "c")],
            author: format!("author {n}"),
            message: format!("message {n}"),
            expected_version: None,
            request_id: Some(format!("r{n}")),
            proposed_time_ms: 7,
        }
    }

    fn log_with(index: u64, command: Command) -> (sled::Db, sled::Tree) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let log = db.open_tree(keys::LOG_TREE).unwrap();
        let entry = Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(command),
        };
        log.insert(keys::log_entry(index), codec::encode(&entry).unwrap())
            .unwrap();
        (db, log)
    }

    fn stub(version: u64, log_index: u64, position: u32) -> RecordStub {
        RecordStub {
            version,
            commit_time_ms: 99,
            digest: RulesetDigest::EMPTY,
            log_index,
            position,
        }
    }

    #[test]
    fn a_stub_reads_back_as_the_record_apply_made_from_its_commit() {
        let (_db, log) = log_with(
            5,
            Command::CommitBatch(vec![commit("p", 1), commit("q", 2), commit("p", 3)]),
        );
        let mut r = Resolver::new(&log);
        let raw = encode_stub(&stub(11, 5, 2)).unwrap();
        assert_eq!(stored_version(&raw).unwrap(), 11);
        let record = r.read("p", &raw).unwrap();
        let c = commit("p", 3);
        assert_eq!(
            record,
            VersionRecord {
                version: 11,
                author: c.author,
                message: c.message,
                commit_time_ms: 99,
                request_id: c.request_id,
                upserts: c.upserts,
                deletes: c.deletes,
                digest: RulesetDigest::EMPTY,
            }
        );
        // The other project's commit of the same entry, from the decoded entry.
        assert_eq!(r.resolve("q", &stub(4, 5, 1)).unwrap().author, "author 2");
    }

    #[test]
    fn a_full_record_is_read_as_it_is() {
        let (_db, log) = log_with(1, Command::Commit(commit("p", 1)));
        let record = VersionRecord {
            version: 300,
            author: "a".into(),
            message: "m".into(),
            commit_time_ms: 1,
            request_id: None,
            upserts: Vec::new(),
            deletes: Vec::new(),
            digest: RulesetDigest::EMPTY,
        };
        let raw = codec::encode(&record).unwrap();
        assert_eq!(stored_version(&raw).unwrap(), 300);
        assert_eq!(Resolver::new(&log).read("p", &raw).unwrap(), record);
    }

    #[test]
    fn a_stub_naming_the_wrong_commit_or_a_gone_entry_is_not_read() {
        let (_db, log) = log_with(5, Command::Commit(commit("p", 1)));
        let mut r = Resolver::new(&log);
        assert!(matches!(
            r.resolve("other", &stub(1, 5, 0)),
            Err(Unresolved::Corrupt(_))
        ));
        let mut r = Resolver::new(&log);
        assert!(matches!(
            r.resolve("p", &stub(1, 5, 1)),
            Err(Unresolved::Corrupt(_))
        ));
        assert!(matches!(
            Resolver::new(&log).resolve("p", &stub(1, 6, 0)),
            Err(Unresolved::EntryGone)
        ));
    }
}
