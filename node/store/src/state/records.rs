//! Version records as stored: in full, or as a stub whose bodies stay in the Raft log.
//!
//! A commit's bodies reach every node in a log entry, which the node writes to sled anyway.
//! Writing them again in the version record doubled what a commit costs sled: sled rewrites a
//! leaf (up to 17 items) on every split and every 10 updates, so each stored byte is written
//! several times. So apply stores a stub: the entry that holds the commit (its index, and the
//! commit's place in a group-commit batch) and what apply computed (commit time, digest).
//! Readers take author, message, request id, upserts and deletes from the entry.
//!
//! The stubs of consecutive versions of a project applied in one `apply` call share one sled
//! value (a group, at most [`GROUP_MAX`] stubs, keyed by its first version): every sled insert
//! or removal costs a leaf update whatever its size, and a group-commit entry holds dozens of
//! commits. A group is compacted whole, once its last version leaves the history window.
//!
//! The entries that retained stubs name are kept in the log tree after openraft purges them
//! (`Purges::set_pin`), until their records are compacted. Snapshots carry full records, so a
//! node that installs one needs no log behind its records; records written by earlier releases
//! are full too.
//!
//! ```text
//! v <inc> <version>  -> bincode(VersionRecord)                 (starts with a varint: never 0xFF)
//!                     | 0xFF ++ bincode(Vec<RecordStub>)       (versions version, version+1, ...)
//! ```

use crate::codec::{self, CodecError};
use crate::keys;
use crate::types::{Command, CommitCommand, TypeConfig, VersionRecord};
use flagraft_client::digest::RulesetDigest;
use openraft::{Entry, EntryPayload};
use serde::{Deserialize, Serialize};

/// First byte of a stored stub group; no bincode varint starts with it.
const GROUP_TAG: u8 = 0xFF;

/// Most stubs in one group: its value (~60 bytes a stub) stays inline, under `values::CHUNK`.
pub const GROUP_MAX: usize = 32;

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

/// One stored value of the version range.
pub enum StoredRecord {
    Full(VersionRecord),
    /// Consecutive versions, ascending; never empty.
    Group(Vec<RecordStub>),
}

/// What a project keeps in memory of each group it stores: its key is `first`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupSpan {
    pub last: u64,
    /// The first stub's entry: the oldest the group names.
    pub log_index: u64,
}

pub fn encode_group(stubs: &[RecordStub]) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![GROUP_TAG];
    out.extend_from_slice(&codec::encode(&stubs)?);
    Ok(out)
}

pub fn decode(raw: &[u8]) -> Result<StoredRecord, CodecError> {
    match raw.split_first() {
        Some((&GROUP_TAG, group)) => {
            let stubs: Vec<RecordStub> = codec::decode(group)?;
            let consecutive = stubs
                .windows(2)
                .all(|w| w[0].version.checked_add(1) == Some(w[1].version));
            if stubs.is_empty() || !consecutive {
                return Err(CodecError::Corrupt(
                    "a record group is empty or not consecutive".into(),
                ));
            }
            Ok(StoredRecord::Group(stubs))
        }
        _ => Ok(StoredRecord::Full(codec::decode(raw)?)),
    }
}

impl StoredRecord {
    pub fn last_version(&self) -> u64 {
        match self {
            StoredRecord::Full(r) => r.version,
            StoredRecord::Group(stubs) => stubs.last().map_or(0, |s| s.version),
        }
    }

    /// Digest and commit time of `version` if this value holds it: no log entry is read.
    pub fn digest_and_time(&self, version: u64) -> Option<(RulesetDigest, u64)> {
        match self {
            StoredRecord::Full(r) => (r.version == version).then_some((r.digest, r.commit_time_ms)),
            StoredRecord::Group(stubs) => stubs
                .iter()
                .find(|s| s.version == version)
                .map(|s| (s.digest, s.commit_time_ms)),
        }
    }
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

    /// The full records of `project` with versions in `versions` that `stored` holds, ascending.
    pub fn expand(
        &mut self,
        project: &str,
        stored: StoredRecord,
        versions: std::ops::RangeInclusive<u64>,
    ) -> Result<Vec<VersionRecord>, Unresolved> {
        match stored {
            StoredRecord::Full(record) if versions.contains(&record.version) => Ok(vec![record]),
            StoredRecord::Full(_) => Ok(Vec::new()),
            StoredRecord::Group(stubs) => stubs
                .iter()
                .filter(|s| versions.contains(&s.version))
                .map(|s| self.resolve(project, s))
                .collect(),
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

    fn log_with(entries: Vec<(u64, Command)>) -> (sled::Db, sled::Tree) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let log = db.open_tree(keys::LOG_TREE).unwrap();
        for (index, command) in entries {
            let entry = Entry::<TypeConfig> {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
                payload: EntryPayload::Normal(command),
            };
            log.insert(keys::log_entry(index), codec::encode(&entry).unwrap())
                .unwrap();
        }
        (db, log)
    }

    fn stub(version: u64, log_index: u64, position: u32) -> RecordStub {
        RecordStub {
            version,
            commit_time_ms: 90 + version,
            digest: RulesetDigest::EMPTY,
            log_index,
            position,
        }
    }

    fn record_of(c: CommitCommand, version: u64) -> VersionRecord {
        VersionRecord {
            version,
            author: c.author,
            message: c.message,
            commit_time_ms: 90 + version,
            request_id: c.request_id,
            upserts: c.upserts,
            deletes: c.deletes,
            digest: RulesetDigest::EMPTY,
        }
    }

    #[test]
    fn a_group_reads_back_as_the_records_apply_made_from_its_commits() {
        let (_db, log) = log_with(vec![
            (
                5,
                Command::CommitBatch(vec![commit("p", 1), commit("q", 2), commit("p", 3)]),
            ),
            (6, Command::Commit(commit("p", 4))),
        ]);
        // Versions 10..=12 of p: entry 5's commits 0 and 2, then entry 6.
        let raw = encode_group(&[stub(10, 5, 0), stub(11, 5, 2), stub(12, 6, 0)]).unwrap();
        assert!(raw.len() < super::super::values::CHUNK / GROUP_MAX * 3);
        let stored = decode(&raw).unwrap();
        assert_eq!(stored.last_version(), 12);
        assert_eq!(
            stored.digest_and_time(11),
            Some((RulesetDigest::EMPTY, 101))
        );
        assert_eq!(stored.digest_and_time(13), None);
        let mut r = Resolver::new(&log);
        assert_eq!(
            r.expand("p", stored, 11..=u64::MAX).unwrap(),
            vec![record_of(commit("p", 3), 11), record_of(commit("p", 4), 12)]
        );
        // The other project's commit of the same entry.
        assert_eq!(r.resolve("q", &stub(4, 5, 1)).unwrap().author, "author 2");
    }

    #[test]
    fn a_full_record_is_read_as_it_is() {
        let (_db, log) = log_with(vec![]);
        let record = record_of(commit("p", 1), 300);
        let stored = decode(&codec::encode(&record).unwrap()).unwrap();
        assert_eq!(stored.last_version(), 300);
        let mut r = Resolver::new(&log);
        assert!(r
            .expand(
                "p",
                decode(&codec::encode(&record).unwrap()).unwrap(),
                301..=400
            )
            .unwrap()
            .is_empty());
        assert_eq!(r.expand("p", stored, 0..=300).unwrap(), vec![record]);
    }

    #[test]
    fn a_stub_naming_the_wrong_commit_or_a_gone_entry_is_not_read() {
        let (_db, log) = log_with(vec![(5, Command::Commit(commit("p", 1)))]);
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

    #[test]
    fn an_empty_or_broken_group_is_corrupt_not_a_panic() {
        assert!(decode(&encode_group(&[]).unwrap()).is_err());
        assert!(decode(&encode_group(&[stub(1, 1, 0), stub(3, 1, 1)]).unwrap()).is_err());
        assert!(decode(&[GROUP_TAG, 200, 1]).is_err());
    }
}
