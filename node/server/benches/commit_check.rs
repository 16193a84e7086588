//! Cost of validating a commit before it is proposed (`ruleset_check`), on a
//! project of 10,000 gates: a one-gate commit, a one-gate commit that
//! references a chain of 50 gates, and — for comparison — compiling the
//! whole resulting ruleset, which validation avoids. Also the leader's whole
//! validation (`validate::commit_command`, then the check) of the ~2 KiB
//! allow-list gate that `bench_commit` commits.
//!
//! `cargo bench -p flagraft-node --bench commit_check`

use criterion::{criterion_group, criterion_main, Criterion};
use flagraft_client::fixtures::{chained_gates, gate};
use flagraft_client::CompiledRuleset;
use flagraft_node::ruleset_check::check_commit;
use flagraft_node::validate;
use flagraft_proto::admin::v1 as pb;
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
    // The shape bench_commit commits: one rule whose condition lists ~170 user IDs.
    let ids: Vec<String> = (0..170).map(|i| format!("user-{i:06}")).collect();
    let allow_list = serde_json::json!({
        "type": "feature_gate", "entity": "feature_gate", "enabled": true,
        "salt": "allow", "defaultValue": false, "idType": "userID",
        "rules": [{
            "name": "allow-list", "id": "allow-list", "salt": "allow-list",
            "passPercentage": 100, "returnValue": true, "idType": "userID",
            "conditions": [{"type": "user_field", "field": "userID", "operator": "any",
                            "targetValue": ids, "additionalValues": {}, "idType": "userID"}],
        }],
    })
    .to_string();
    let request = pb::CommitRequest {
        project: "default".into(),
        upserts: vec![pb::Entity {
            kind: "gate".into(),
            name: "allow".into(),
            json: allow_list,
        }],
        author: "bench".into(),
        request_id: Some("r-1".into()),
        ..Default::default()
    };
    g.bench_function("leader_validation_of_a_2kib_allow_list_gate", |b| {
        b.iter(|| {
            let valid = validate::commit_command(request.clone()).map_err(|e| e.to_string())?;
            let deletes = valid.cmd.deletes.clone();
            check_commit(&current, valid.parsed, &deletes).map_err(|e| e.to_string())
        })
    });
    g.bench_function("full_compile_for_comparison", |b| {
        b.iter(|| CompiledRuleset::compile_lenient(&entities))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
