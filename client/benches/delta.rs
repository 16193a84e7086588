//! What one pushed delta costs the SDK on a ruleset of 10,000 gates
//! (the shape of `node/server/benches/commit_check.rs`).
//!
//! `cargo bench -p flagraft-client --bench delta`
//!
//! * `sdk_apply_delta_one_gate`: `RulesetState::apply_delta` of a one-gate
//!   delta — digest check, entity map and incremental compile: the whole
//!   per-delta cost before the atomic swap.
//! * `live_apply_one_gate`: the incremental compile alone.
//! * `live_apply_gate_referencing_a_50_gate_chain`: a new gate whose
//!   references reach 50 gates (the cycle check walks them).
//! * `live_apply_delete_gate_with_referrer`: a gate that another gate
//!   references goes away (the referrer is recompiled).
//! * `full_compile_for_comparison`: `compile_lenient` of the whole ruleset,
//!   what every delta cost before.
//! * `live_build_snapshot`: `LiveRuleset::build` of the whole ruleset, what a
//!   snapshot costs now (a full compile plus the book-keeping for deltas).
//! * `delta_one_gate_by_size/live_apply_N`: the incremental compile of a
//!   one-gate delta on N = 1,000, 10,000 and 50,000 gates.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use flagraft_client::compile::LiveRuleset;
use flagraft_client::digest::entity_key_hash;
use flagraft_client::entity::{Entity, EntityKey, EntityKind};
use flagraft_client::fixtures::{chained_gates, gate};
use flagraft_client::protocol::Delta;
use flagraft_client::sdk::{RulesetState, StateSource};
use flagraft_client::CompiledRuleset;
use std::collections::BTreeMap;

fn bench(c: &mut Criterion) {
    // g0..g9999; g1..g50 form a chain g_i -> g_{i-1}.
    let entities = chained_gates(10_000, 50, 25);
    let map: BTreeMap<EntityKey, Entity> = entities
        .iter()
        .map(|e| (e.key.clone(), e.clone()))
        .collect();
    let live = LiveRuleset::build(&map);
    assert!(!live.compiled_whole() && live.problem_count() == 0);

    // The SDK path: a one-gate delta on a state at version 1.
    let state = RulesetState::from_entities(1, 0, StateSource::Network, entities.clone(), None)
        .expect("state");
    let changed = gate("g5000", None, 50);
    let mut digest = state.digest;
    digest.remove(&entity_key_hash(
        &map[&changed.key].key,
        &map[&changed.key].body,
    ));
    digest.add(&entity_key_hash(&changed.key, &changed.body));
    let delta = Delta {
        from_version: 1,
        to_version: 2,
        commit_time_ms: 1,
        upserts: vec![changed.clone()],
        deletes: vec![],
        digest,
    };

    let after = |up: Option<&Entity>, del: Option<&EntityKey>| {
        let mut m = map.clone();
        if let Some(k) = del {
            m.remove(k);
        }
        if let Some(e) = up {
            m.insert(e.key.clone(), e.clone());
        }
        m
    };
    let one_gate = after(Some(&changed), None);
    let chained = gate("new", Some("g50"), 25);
    let with_chained = after(Some(&chained), None);
    let referenced = EntityKey::new(EntityKind::Gate, "g10"); // g11 references it
    let without_referenced = after(None, Some(&referenced));

    let mut g = c.benchmark_group("delta_10k_gates");
    g.sample_size(30);
    g.bench_function("sdk_apply_delta_one_gate", |b| {
        b.iter_batched(
            || delta.clone(),
            |d| state.apply_delta(d).expect("applies"),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("live_apply_one_gate", |b| {
        b.iter(|| live.apply(&one_gate, &[&changed.key]))
    });
    g.bench_function("live_apply_gate_referencing_a_50_gate_chain", |b| {
        b.iter(|| live.apply(&with_chained, &[&chained.key]))
    });
    g.bench_function("live_apply_delete_gate_with_referrer", |b| {
        b.iter(|| live.apply(&without_referenced, &[&referenced]))
    });
    g.sample_size(10);
    g.bench_function("full_compile_for_comparison", |b| {
        b.iter(|| CompiledRuleset::compile_lenient(&entities))
    });
    g.bench_function("live_build_snapshot", |b| {
        b.iter(|| LiveRuleset::build(&map))
    });
    g.finish();
}

/// The incremental cost against the ruleset size: a one-gate delta on
/// 1,000, 10,000 and 50,000 gates (O(log n) maps, O(n / 64) chunk lists).
fn scaling(c: &mut Criterion) {
    let mut g = c.benchmark_group("delta_one_gate_by_size");
    g.sample_size(30);
    for n in [1_000, 10_000, 50_000] {
        let map: BTreeMap<EntityKey, Entity> = (0..n)
            .map(|i| gate(&format!("g{i}"), None, 25))
            .map(|e| (e.key.clone(), e))
            .collect();
        let live = LiveRuleset::build(&map);
        let changed = gate(&format!("g{}", n / 2), None, 50);
        let mut after = map;
        after.insert(changed.key.clone(), changed.clone());
        g.bench_function(format!("live_apply_{n}"), |b| {
            b.iter(|| live.apply(&after, &[&changed.key]))
        });
    }
    g.finish();
}

criterion_group!(benches, bench, scaling);
criterion_main!(benches);
