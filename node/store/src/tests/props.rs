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
        commits in prop::collection::vec(prop::collection::vec(op(), 0..5), 1..25),
        history_limit in prop_oneof![1u64..5, Just(10_000)],
        reopened_limit in 1u64..5,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let limit = |history_limit| StoreConfig { history_limit, ..StoreConfig::default() };
            let mut h = Harness::with_config(limit(history_limit)).await;
            let mut version = 0;
            for ops in &commits {
                let out = h.run(to_command(ops)).await;
                match out {
                    CommandOutcome::Committed { version: v, digest, .. } => {
                        version += 1;
                        assert_eq!(v, version);
                        assert_eq!(digest, full_digest(&h.sm, "default"));
                        assert_eq!(
                            h.sm.version_record("default", v).unwrap().unwrap().digest,
                            digest
                        );
                    }
                    CommandOutcome::Rejected { .. } => {}
                    other => panic!("{other:?}"),
                }
            }
            let head = h.sm.head("default").unwrap();
            let entities = h.sm.ruleset("default").unwrap().entities;
            assert_eq!(head.version, version);
            h.sm.flush().await.unwrap();
            let h = h.reopen(limit(history_limit)).await;
            assert_eq!(h.sm.head("default").unwrap(), head);
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
