//! Building client initialize responses, single-threaded.
//!
//! `cargo bench -p flagraft-client --bench gcir`
//!
//! * `gcir/<case>`: the whole response (every gate, config, experiment and
//!   layer evaluated, names djb2-hashed, serialised to bytes) for each user
//!   of a shared case, in turn. Throughput is in responses.
//! * `gcir/meta/<case>`: reading the per-version metadata (what the SDK does
//!   per bootstrap call; nodes cache it per version).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use flagraft_client::dcs::{entities_from_dcs, id_list_entities};
use flagraft_client::gcir::{
    client_initialize_response, ClientMeta, ClientRuleset, ClientUser, GcirOptions,
};
use flagraft_client::EvalOptions;
use std::path::Path;

fn load(name: &str) -> (Vec<flagraft_client::entity::Entity>, Vec<ClientUser>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/cases");
    let mut entities =
        entities_from_dcs(&std::fs::read(dir.join(format!("{name}.dcs.json"))).expect("dcs"))
            .expect("valid case");
    if let Ok(lists) = std::fs::read(dir.join(format!("{name}.id_lists.json"))) {
        entities.extend(id_list_entities(&lists).expect("id lists"));
    }
    let users: Vec<serde_json::Value> = serde_json::from_slice(
        &std::fs::read(dir.join(format!("{name}.users.json"))).expect("users"),
    )
    .expect("users json");
    let users = users
        .iter()
        .map(|u| ClientUser::from_json(u).expect("user"))
        .collect();
    (entities, users)
}

fn bench(c: &mut Criterion) {
    let eval = EvalOptions::default();
    let opts = GcirOptions::default();
    let mut g = c.benchmark_group("gcir");
    for name in ["gates", "experiments", "layers"] {
        let (entities, users) = load(name);
        let rs = ClientRuleset::new(1, Default::default(), 1, &entities);
        let view = rs.view(&eval);
        g.throughput(Throughput::Elements(users.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                for u in &users {
                    black_box(client_initialize_response(&view, u, &opts).to_json_bytes());
                }
            })
        });
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("meta/{name}"), |b| {
            b.iter(|| black_box(ClientMeta::new(&rs.compiled, &entities)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
