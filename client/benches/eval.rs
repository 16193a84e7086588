//! Evaluation throughput on the shared cases, single-threaded.
//!
//! `cargo bench -p flagraft-client --bench eval`
//!
//! * `gates/check_gate`: every gate of the `gates` case for each of its users.
//! * `layers/get_layer`: every layer of the `layers` case for each of its users.
//! * `layers/all_entities`: every gate, experiment and layer of that case.
//!
//! Users are prepared once (as an SDK prepares a user per request) and the
//! evaluation of each (user, entity) is what is timed.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use flagraft_client::report::{targets, Kind};
use flagraft_client::{CompiledRuleset, EvalOptions, User};
use std::path::Path;

fn load(name: &str) -> (CompiledRuleset, Vec<User>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/cases");
    let dcs = std::fs::read(dir.join(format!("{name}.dcs.json"))).expect("case dcs");
    let ids = std::fs::read(dir.join(format!("{name}.id_lists.json"))).ok();
    let rs = CompiledRuleset::from_dcs(&dcs, ids.as_deref()).expect("valid case");
    let users: Vec<serde_json::Value> = serde_json::from_slice(
        &std::fs::read(dir.join(format!("{name}.users.json"))).expect("users"),
    )
    .expect("users json");
    let users = users
        .iter()
        .map(|u| User::from_json(u).expect("user"))
        .collect();
    (rs, users)
}

fn bench(c: &mut Criterion) {
    let opts = EvalOptions::default();

    let (rs, users) = load("gates");
    let gates: Vec<String> = rs.gate_names().map(str::to_owned).collect();
    let mut g = c.benchmark_group("gates");
    g.throughput(Throughput::Elements((gates.len() * users.len()) as u64));
    g.bench_function("check_gate", |b| {
        b.iter(|| {
            for u in &users {
                for name in &gates {
                    black_box(rs.check_gate(u, name, &opts));
                }
            }
        })
    });
    g.finish();

    let (rs, users) = load("layers");
    let layers: Vec<String> = rs.layer_names().map(str::to_owned).collect();
    let all = targets(&rs);
    let mut g = c.benchmark_group("layers");
    g.throughput(Throughput::Elements((layers.len() * users.len()) as u64));
    g.bench_function("get_layer", |b| {
        b.iter(|| {
            for u in &users {
                for name in &layers {
                    black_box(rs.get_layer(u, name, &opts));
                }
            }
        })
    });
    g.throughput(Throughput::Elements((all.len() * users.len()) as u64));
    g.bench_function("all_entities", |b| {
        b.iter(|| {
            for u in &users {
                for t in &all {
                    match t.kind {
                        Kind::Gate => {
                            black_box(rs.check_gate(u, &t.name, &opts));
                        }
                        Kind::Layer => {
                            black_box(rs.get_layer(u, &t.name, &opts));
                        }
                        _ => {
                            black_box(rs.get_config(u, &t.name, &opts));
                        }
                    }
                }
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
