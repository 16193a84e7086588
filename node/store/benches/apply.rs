//! Cost of applying one commit (one ~2 KiB gate upsert) as a function of the project's size.
//! If apply were O(ruleset) the 10,000- and 50,000-entity rows would be 100x / 500x the
//! 100-entity row; they should stay close (O(changed entities · log n) plus cache effects).
//!
//! `cargo bench -p flagraft-store --bench apply`

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use flagraft_client::entity::Entity;
use flagraft_store::{
    open, Command, CommitCommand, Identity, LogStore, StateMachineStore, StoreConfig, TypeConfig,
};
use openraft::storage::RaftStateMachine;
use openraft::{Entry, EntryPayload};

// The node's allocator: with glibc's, malloc bookkeeping was ~45% of this bench's profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../examples/common/gate.rs"]
mod gate;
use gate::gate;

fn commit(upserts: Vec<Entity>) -> Command {
    Command::Commit(CommitCommand {
        project: "default".into(),
        upserts: upserts.iter().map(flagraft_store::Upsert::from).collect(),
        deletes: vec![],
        author: "bench".into(),
        message: "bench".into(),
        expected_version: None,
        request_id: None,
        proposed_time_ms: 0,
    })
}

struct Setup {
    _dir: tempfile::TempDir,
    _log: LogStore,
    sm: StateMachineStore,
    index: u64,
    rev: u64,
}

impl Setup {
    fn entry(&mut self, command: Command) -> Entry<TypeConfig> {
        self.index += 1;
        Entry {
            log_id: openraft::testing::log_id(1, 1, self.index),
            payload: EntryPayload::Normal(command),
        }
    }
}

/// A store whose `default` project holds `size` entities, filled 100 per commit.
fn setup(rt: &tokio::runtime::Runtime, size: u64) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let identity = Identity {
        node_id: 1,
        cluster: "bench".into(),
    };
    let (log, sm) = rt
        .block_on(open(dir.path(), &identity, StoreConfig::default()))
        .expect("open");
    let mut s = Setup {
        _dir: dir,
        _log: log,
        sm,
        index: 0,
        rev: 1,
    };
    for start in (0..size).step_by(100) {
        let upserts = (start..(start + 100).min(size))
            .map(|i| gate(i, 0))
            .collect();
        let e = s.entry(commit(upserts));
        rt.block_on(s.sm.apply([e])).expect("fill");
    }
    s
}

fn apply_one_commit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("apply_commit_one_2KiB_entity");
    for size in [100u64, 1_000, 10_000, 50_000] {
        // Filled lazily so that a filtered run does not pay for the other sizes.
        let mut state: Option<Setup> = None;
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
            let s = state.get_or_insert_with(|| setup(&rt, size));
            let mut sm = s.sm.clone();
            let (mut index, mut rev) = (s.index, s.rev);
            // Building the entry is setup; only apply is timed.
            b.iter_batched(
                || {
                    index += 1;
                    rev += 1;
                    Entry::<TypeConfig> {
                        log_id: openraft::testing::log_id(1, 1, index),
                        payload: EntryPayload::Normal(commit(vec![gate(rev % size, rev)])),
                    }
                },
                |e| rt.block_on(sm.apply([e])).expect("apply"),
                BatchSize::SmallInput,
            );
            (s.index, s.rev) = (index, rev);
        });
    }
    group.finish();
}

criterion_group!(benches, apply_one_commit);
criterion_main!(benches);
