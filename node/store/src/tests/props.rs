//! Property: after any sequence of commits, the incrementally kept digest equals a recompute,
//! and a reopened store agrees; also while history records are compacted (entity bodies live in
//! their record until then, see `apply::StoredEntity`) and after the history limit changes.

use super::harness::*;
use crate::{Command, CommandOutcome, StoreConfig, Upsert};
use flagraft_client::entity::{EntityKey, EntityKind};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Upsert(EntityKind, u8, i64),
    Delete(EntityKind, u8),
}

fn op() -> impl Strategy<Value = Op> {
    let kind = prop::sample::select(EntityKind::ALL.to_vec());
    prop_oneof![
        (kind.clone(), 0u8..8, any::<i64>()).prop_map(|(k, n, v)| Op::Upsert(k, n, v)),
        (kind, 0u8..8).prop_map(|(k, n)| Op::Delete(k, n)),
    ]
}

fn to_command(ops: &[Op]) -> Command {
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    for op in ops {
        match op {
            Op::Upsert(kind, n, v) => upserts.push(Upsert::new(
                EntityKey::new(*kind, format!("e{n}")),
                &serde_json::json!({"v": v, "tags": [n]}),
            )),
            Op::Delete(kind, n) => deletes.push(EntityKey::new(*kind, format!("e{n}"))),
        }
    }
    Command::Commit(commit("default", upserts, deletes))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn incremental_digest_equals_full_recompute(
        commits in prop::collection::vec(prop::collection::vec(op(), 0..5), 1..80),
        history_limit in prop_oneof![1u64..5, Just(10_000)],
        reopened_limit in 1u64..5,
        // Commits per apply call, as entries of their own or as one CommitBatch: the stubs of
        // one call share stored groups (`state::records`), which close at GROUP_MAX (32).
        per_apply in prop_oneof![1usize..6, 30usize..40],
        as_batch in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let limit = |history_limit| StoreConfig { history_limit, ..StoreConfig::default() };
            let mut h = Harness::with_config(limit(history_limit)).await;
            let mut version = 0;
            for chunk in commits.chunks(per_apply) {
                let commands: Vec<Command> = chunk.iter().map(|ops| to_command(ops)).collect();
                let outcomes = if as_batch {
                    let batch = commands
                        .into_iter()
                        .map(|c| match c {
                            Command::Commit(c) => c,
                            other => panic!("{other:?}"),
                        })
                        .collect();
                    match h.run(Command::CommitBatch(batch)).await {
                        CommandOutcome::Batch(outcomes) => outcomes,
                        other => panic!("{other:?}"),
                    }
                } else {
                    h.apply(commands).await
                };
                let mut last_digest = None;
                for out in outcomes {
                    match out {
                        CommandOutcome::Committed { version: v, digest, .. } => {
                            version += 1;
                            assert_eq!(v, version);
                            // Older ones of this call may be compacted already.
                            if let Some(record) = h.sm.version_record("default", v).unwrap() {
                                assert_eq!(record.digest, digest);
                                assert_eq!(record.version, v);
                            }
                            last_digest = Some(digest);
                        }
                        CommandOutcome::Rejected { .. } => {}
                        other => panic!("{other:?}"),
                    }
                }
                if let Some(digest) = last_digest {
                    assert_eq!(digest, full_digest(&h.sm, "default"));
                }
            }
            let history = h.sm.history("default", 0, usize::MAX).unwrap();
            let versions: Vec<u64> = history.iter().map(|r| r.version).collect();
            let oldest = h.sm.oldest_retained("default").unwrap();
            assert_eq!(versions, (oldest..=version).collect::<Vec<_>>());
            if version > 0 {
                assert!(version + 1 - oldest >= history_limit.min(version));
            }
            let head = h.sm.head("default").unwrap();
            let entities = h.sm.ruleset("default").unwrap().entities;
            assert_eq!(head.version, version);
            h.sm.flush().await.unwrap();
            let h = h.reopen(limit(history_limit)).await;
            assert_eq!(h.sm.head("default").unwrap(), head);
            assert_eq!(h.sm.history("default", 0, usize::MAX).unwrap(), history);
            assert_eq!(h.sm.ruleset("default").unwrap().entities, entities);
            assert_eq!(full_digest(&h.sm, "default"), head.digest);

            // A lower limit compacts at the next commit; the bodies must survive it.
            h.sm.flush().await.unwrap();
            let mut h = h.reopen(limit(reopened_limit)).await;
            let out = h.run(Command::Commit(commit("default", vec![], vec![]))).await;
            assert!(matches!(out, CommandOutcome::Committed { .. }), "{out:?}");
            h.sm.flush().await.unwrap();
            let h = h.reopen(limit(reopened_limit)).await;
            assert_eq!(h.sm.ruleset("default").unwrap().entities, entities);
            assert_eq!(full_digest(&h.sm, "default"), head.digest);
        });
    }
}
