//! Cost of validating a commit before it is proposed (`ruleset_check`), on a
//! project of 10,000 gates: a one-gate commit, a one-gate commit that
//! references a chain of 50 gates, and — for comparison — compiling the
//! whole resulting ruleset, which validation avoids.
//!
//! `cargo bench -p flagraft-node --bench commit_check`

use criterion::{criterion_group, criterion_main, Criterion};
use flagraft_client::fixtures::{chained_gates, gate};
use flagraft_client::CompiledRuleset;
use flagraft_node::ruleset_check::check_commit;
use flagraft_store::EntityMap;

fn bench(c: &mut Criterion) {
    // g0..g9999; g1..g50 form a chain g_i -> g_{i-1}.
    let entities = chained_gates(10_000, 50, 25);
    let current: EntityMap = entities
        .iter()
        .map(|e| (e.key.clone(), flagraft_store::Body::from_value(&e.body)))
        .collect();
    let plain = [gate("g5000", None, 25)];
    let chained = [gate("new", Some("g50"), 25)];
    let mut g = c.benchmark_group("commit_check_10k_gates");
    g.sample_size(20);
    g.bench_function("one_gate_no_references", |b| {
        b.iter(|| check_commit(&current, plain.to_vec(), &[]))
    });
    g.bench_function("one_gate_referencing_a_50_gate_chain", |b| {
        b.iter(|| check_commit(&current, chained.to_vec(), &[]))
    });
    g.bench_function("full_compile_for_comparison", |b| {
        b.iter(|| CompiledRuleset::compile_lenient(&entities))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
