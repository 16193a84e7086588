//! flagraft's replicated store: the Raft log, vote and state machine on sled (openraft 0.9,
//! storage-v2).
//!
//! # On-disk layout
//!
//! `open(dir, ..)` keeps one sled database in `<dir>/sled`. Four trees:
//!
//! ```text
//! default tree      identity              -> bincode Identity {node_id, cluster}
//! "raft_log"        e <index:u64 BE>      -> bincode openraft Entry
//!                   m:vote                -> bincode Vote
//!                   m:committed           -> bincode Option<LogId>
//!                   m:purged              -> bincode Option<LogId>
//! "state_machine"   a                     -> bincode Option<LogId>  (last applied)
//!                   b                     -> bincode StoredMembership
//!                   n <project name>      -> bincode ProjectMeta {incarnation, version, digest,
//!                                            commit_time_ms, oldest_retained}
//!                   x <inc> <kind:u8> <entity name>  -> 32-byte entity hash ++ body JSON
//!                                            (as of its last compacted upsert; see below)
//!                   v <inc> <version:u64 BE>         -> 0xFF ++ bincode Vec<RecordStub>: the
//!                                            stubs {version, commit time, digest, log index,
//!                                            position} of versions version.. applied in one
//!                                            call; or bincode VersionRecord (from a snapshot
//!                                            or an earlier release; see `state::records`)
//!                   r <inc> <request id>             -> bincode {version, digest, commit time}
//!                                            (only for ids whose record is compacted)
//!                   k <key id>            -> bincode ApiKey {id, project, kind, sha256, ...}
//!                   c <key> <i:u32 BE>    -> chunk i of a large x or v value
//! "state_machine_redo"  r                 -> the last small apply call's writes (`state::redo`)
//! ```
//!
//! x and v values are "heads": `0x00 ++ bytes` when at most 4 KiB, else `0x01 ++ count:u32`
//! with the bytes in `c` chunks (see `state::values`). sled rewrites a whole leaf every 10
//! updates and sends leaves over 128 KiB to blob files; bounded values keep every leaf small, so
//! one huge record or ID list never makes later commits slow.
//!
//! `<inc>` is the project's incarnation (u64 BE): 0 for `default`, log index + 1 of the
//! `CreateProject` entry otherwise, so a deleted and re-created project never sees old keys.
//! Entity bodies travel and rest as canonical JSON text ([`Body`]): the leader canonicalises a
//! commit's bodies once; every node hashes, stores, records and streams those same bytes.
//!
//! A commit's bodies are written once, in its log entry. Its version's record is a stub that
//! names the entry (index, and the commit's place in a `CommitBatch`) and holds what apply
//! computed (commit time, digest); readers take the rest from the entry (`state::records`). The
//! stubs of one project applied in one call share one value (up to 32), because every sled
//! insert or removal costs a leaf update whatever its size; a group is written once, when it
//! closes or at the end of the call, and compacted whole. A
//! purge keeps the entries that retained records name (`log_store::Purges`), so with a history
//! bound longer than the log's retention the log holds the history's bodies, as the records did
//! before. An entity's `x` key gets its body only when the record holding its latest upsert is
//! compacted (same batch); a delete removes the key at once. So the `x` keys hold the ruleset as
//! of the oldest retained version, except for entities the retained records touch, and `open`
//! replays the retained records on top, newest first (O(retained history) at open).
//!
//! Measured with 64 committers (`bench_commit --only throughput --entities 0`, alternating
//! pairs on one machine):
//! - full records → one stub per version: 4,587-4,646 → 5,032-5,196 commits/s, node CPU per
//!   commit 329-340 → 298-308 µs;
//! - → grouped stubs: 4,803-5,580 → 6,064-6,810 commits/s, 277-322 → 223-251 µs;
//! - → a group written once per call, and the log flushed by its own thread with one-entry
//!   appends as plain inserts (nine pairs, either order): the new binary ahead in eight, by
//!   2-24% (median ~6%); `write_volume`: state machine 35-40 → 28-31 µs and log 24-25 →
//!   20-21 µs of CPU per commit.
//! - → a small apply call as a redo record and plain writes instead of a sled batch: `cargo
//!   bench -p flagraft-store --bench apply` (mimalloc, two runs each) 82-90 → 58-61 µs per
//!   apply on a 100-entity project and 108-130 → 80-99 µs on a 10,000-entity one (63-67 → 72-81
//!   µs on a 1,000-entity one, the one case that got slower); sled's IO threads switch context
//!   half as often with one committer (~12,000-13,000 → ~6,700 per second per node).
//!
//! `examples/write_volume.rs` (32 commits of ~2.3 KB per entry): the state machine's sled writes
//! per commit went from 15.3-15.9 KB (full records) to 0.2-2.9 KB; the log's are 9.7-9.9 KB.
//! Open replays a full history of 10,000 versions in 182 ms (135 ms with full records): each
//! group-commit entry is decoded once.

//! # Semantics (see also the types)
//!
//! - `default` exists from the first open (version 0, empty) and cannot be deleted.
//! - Every applied `Commit` advances its project's version by one. Order of checks: unknown
//!   project, duplicate request id (answers the first commit's version/digest/time with
//!   `duplicate: true`, commits nothing), expected version (`Conflict`), delta validity
//!   (`Rejected`: a key twice, an empty name, delete of a missing entity).
//! - Commit time = max(previous commit time, proposed time); a project's creation time counts as
//!   its first "previous".
//! - Digest: `flagraft_client::digest` (sum of per-entity SHA-256 mod 2^256), updated by
//!   subtracting the old hash and adding the new one; per-entity hashes are stored next to the
//!   bodies, so a commit hashes only the entities it upserts.
//! - Idempotency window: request ids of the last [`REQUEST_ID_WINDOW`] versions of a project.
//!   It is a constant (not config) because it decides outcomes: every node must agree.
//!   A retained record holds its request id, digest and commit time, so an `r` entry is written
//!   only when a record is compacted while its id is still remembered (a history limit below the
//!   window), and removed when the id leaves the window; `open` reads the rest from the records.
//!   With the default limit a commit writes no `r` key at all.
//! - API keys (`CreateKey`, `RevokeKey`): the leader draws the id and the secret before
//!   proposing; the log, the state and snapshots hold only the secret's SHA-256. Revoked keys
//!   stay listed with their revocation time; `DeleteProject` revokes the project's keys. Each
//!   change publishes `AppliedChange::KeysChanged`.
//! - History: records of at least the last `StoreConfig::history_limit` versions (node-local,
//!   at least 1); older ones are removed as new versions are applied, a group of stubs once all
//!   of its versions are older (so up to 31 more may stay). The current ruleset is never
//!   compacted. A snapshot carries the retained history; if records are compacted while a
//!   snapshot is being built, it carries the shorter contiguous run ending at the head.
//!
//! # Cost of a commit
//!
//! O(changed entities · log n): the in-memory ruleset is a persistent map (`imbl::OrdMap`)
//! shared with readers, so apply clones nothing big; sled receives one record, the removal of
//! each deleted entity's key, the project head and at most a few compaction removals. The chunk
//! counts of the records it adds and removes come from memory, so a commit of upserts reads
//! nothing from sled. No node parses or re-serialises a body on the commit path: the leader's
//! canonical text is the hash input, the record text and the streamed text, shared (one
//! allocation) between the log cache, the view, the record and subscribers. The state an apply
//! replaces is freed on a separate thread.
//! Measured (callgrind, `examples/apply_cost.rs`, one ~2.4 KiB gate per commit, before records
//! took over the entity and request writes): about 440k instructions per apply on a 100-entity
//! project and 490k on a 10,000-entity one.
//!
//! # Crash safety
//!
//! - Log: `append` writes entries to sled, then a flusher thread runs sled's `flush` and only
//!   after it returns calls openraft's callback (one flush serves every append written before
//!   it). An append of one entry is a plain insert, of several one atomic batch.
//!   `save_vote` and `truncate` flush before returning. `purge` writes its marker and removals in
//!   one atomic batch; it removes no entry at or after the state machine's pin (the oldest entry
//!   a retained record stub names), which is set after the apply call that moved it, so a
//!   crash recovers either both the compaction and the removal or neither (sled recovers a
//!   prefix). Reads start after the purge marker, so kept entries are not part of the log. The newest entries are also kept decoded in memory (`log_cache.rs`) for
//!   replication and apply; the cache is filled only after sled has an entry and cut before a
//!   truncation, so it never holds what sled does not.
//! - State machine: each `apply` call makes all its effects (entities, records, request ids,
//!   project heads, last applied, membership) atomically, then swaps the in-memory view. A
//!   call whose writes encode to at most 64 KiB (one commit's, typically) first stores them all
//!   as one redo record, then makes them one by one as plain inserts and removals; `open`
//!   replays the record before it reads anything, which completes a call a crash cut short
//!   (`state::redo`). A larger call is one sled batch that also drops the record. A sled batch
//!   costs one or two jobs of sled's IO pool (each waking every idle pool thread) and a global
//!   write lock; the redo record costs neither. It is not flushed per apply: after a crash sled
//!   recovers a prefix of its writes, so the state machine is at some earlier last-applied with
//!   matching state, and openraft re-applies the rest from the durable log (committed index is
//!   saved too). Log entries above that point can only be purged after a snapshot, and
//!   `build_snapshot` flushes sled before it reports the snapshot, `install_snapshot` flushes
//!   before it returns: the state machine is always durable past any purged log index.
//! - Snapshots are kept in memory only; after a restart openraft rebuilds one from the state
//!   machine if logs were purged.
//! - `open` never deletes anything: an unreadable dir or a dir of another node/cluster is an
//!   error naming the dir.
//!
//! # API changes (relative to the store contract)
//!
//! - `RulesetSnapshot::entities` is an [`EntityMap`] (`imbl::OrdMap<EntityKey, Arc<Value>>`,
//!   re-exported as [`imbl`]); `RulesetSnapshot::to_entities()` gives owned entities.
//! - `AppliedChange::SnapshotInstalled { last_applied }`: the state was replaced by a leader's
//!   snapshot; subscribers must resync every project from `ruleset()`.
//! - `StoreConfig` has more fields (all with defaults); `StateMachineStore::flush()` and `dir()`.
//! - Bodies are [`Body`] (canonical JSON text, O(1) clone) in commands, records and the
//!   ruleset map; `Body::to_value()` parses one where a reader needs the tree. Their bincode
//!   bytes are those of the JSON strings used before, so stored logs and records still decode.
//! - `Command::CommitBatch(Vec<CommitCommand>)` → `CommandOutcome::Batch(Vec<CommandOutcome>)`:
//!   the leader's group commit; applied exactly as the same commits one entry each.
//! - Snapshot format 3 carries history records as encoded [`VersionRecord`]s, in full (a stub
//!   is resolved from the sender's log; in memory only, so no on-disk migration; nodes of one
//!   cluster must run the same format).

mod body;
mod canonical;
mod codec;
mod error;
mod keys;
mod log_cache;
mod log_store;
mod state;
mod types;

#[cfg(test)]
mod tests;

pub use body::{Body, Upsert};
pub use codec::CodecError;
pub use error::StoreError;
pub use imbl;
pub use log_store::LogStore;
pub use state::{SnapshotBuilder, StateMachineStore, DEFAULT_PROJECT, MAX_PROJECT_NAME_BYTES};
pub use types::*;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// How many versions back a request id is remembered for idempotency (per project).
pub const REQUEST_ID_WINDOW: u64 = 10_000;

/// sled's log segment size for new data dirs (its default is 512 KiB). When segments at the end
/// of its file free up, sled truncates the file and runs a full `fsync`, and the next segment
/// waits for it: every writer stalls, for up to a few hundred ms on a busy machine (seen in the
/// subscriber bench as 100–280 ms commit stalls every ~70 commits of 2 KiB). Larger segments
/// make that 16 times rarer. sled refuses to reopen a dir with another segment size, so a dir
/// keeps the size it was created with (see [`sled_segment_size`]).
const SLED_SEGMENT_BYTES: usize = 8 << 20;

/// The segment size of the sled dir at `path`: the one recorded in its `conf` file if it has
/// one (a dir created by an earlier release), else [`SLED_SEGMENT_BYTES`].
fn sled_segment_size(path: &Path) -> usize {
    // Text lines, then a binary checksum.
    let Ok(conf) = std::fs::read(path.join("conf")) else {
        return SLED_SEGMENT_BYTES;
    };
    String::from_utf8_lossy(&conf)
        .lines()
        .find_map(|l| l.strip_prefix("segment_size: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(SLED_SEGMENT_BYTES)
}

/// Opens (creating if new) the store in `dir`. Refuses, with an error naming the dir, a dir that
/// belongs to another node id or cluster, or that sled cannot open. Never wipes anything.
/// Must be called inside a tokio runtime.
pub async fn open(
    dir: &Path,
    identity: &Identity,
    config: StoreConfig,
) -> Result<(LogStore, StateMachineStore), StoreError> {
    let open_err = |reason: String| StoreError::Open {
        dir: dir.to_path_buf(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
    let sled_dir = dir.join("sled");
    let sled_config = sled::Config::new()
        .segment_size(sled_segment_size(&sled_dir))
        .path(sled_dir)
        .cache_capacity(config.cache_capacity_bytes)
        .mode(sled::Mode::HighThroughput);
    // sled may panic on some corrupt files; that must become an error naming the dir.
    let db = match catch_unwind(AssertUnwindSafe(|| sled_config.open())) {
        Ok(Ok(db)) => db,
        Ok(Err(e)) => return Err(open_err(e.to_string())),
        Err(_) => return Err(open_err("sled panicked while recovering it".to_string())),
    };
    check_identity(&db, dir, identity).await?;
    let (max_read_bytes, max_read_entries) =
        (config.max_log_read_bytes, config.max_log_read_entries);
    let purges = log_store::Purges::new(&db)?;
    let sm = StateMachineStore::open(db.clone(), dir, config, purges.clone()).await?;
    let log = LogStore::new(
        db,
        max_read_bytes,
        max_read_entries,
        sm.applied_watch(),
        purges,
    )?;
    Ok((log, sm))
}

async fn check_identity(db: &sled::Db, dir: &Path, identity: &Identity) -> Result<(), StoreError> {
    match db.get(keys::IDENTITY)? {
        Some(raw) => {
            let stored: Identity = codec::decode(&raw).map_err(|e| StoreError::Corrupt {
                dir: dir.to_path_buf(),
                what: format!("identity record: {e}"),
            })?;
            if &stored != identity {
                return Err(StoreError::IdentityMismatch {
                    dir: dir.to_path_buf(),
                    stored,
                    expected: identity.clone(),
                });
            }
        }
        None => {
            db.insert(keys::IDENTITY, codec::encode(identity)?)?;
            db.flush_async().await?;
        }
    }
    Ok(())
}
