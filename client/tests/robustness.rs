//! No input makes parsing, compilation or evaluation panic (proptest over
//! arbitrary JSON in every position a ruleset or user can hold it).

use flagraft_client::dcs::{entities_from_dcs, id_list_entities};
use flagraft_client::{CompiledRuleset, EvalOptions, User};
use proptest::prelude::*;
use serde_json::{json, Value};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1e12f64..1e12).prop_map(|f| json!(f)),
        "[ -~]{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "US",
            "1.2.3",
            "2024-01-01T00:00:00Z",
            "1704067200000",
            "user_0",
            "(",
            ".*",
            "segment:x",
            "",
            "-1",
            "NaN",
            "v2",
            "tier",
        ])
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,3}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_condition() -> impl Strategy<Value = Value> {
    let types = prop::sample::select(vec![
        "public",
        "pass_gate",
        "fail_gate",
        "user_field",
        "ip_based",
        "ua_based",
        "environment_field",
        "current_time",
        "user_bucket",
        "unit_id",
        "target_app",
        "experiment_group",
        "bogus",
    ]);
    let ops = prop::sample::select(
        flagraft_client::ops::OPERATORS
            .iter()
            .copied()
            .chain(["nope"])
            .collect::<Vec<_>>(),
    );
    let fields = prop::sample::select(vec![
        "userID",
        "email",
        "country",
        "age",
        "tags",
        "os_name",
        "browser_version",
        "tier",
        "g0",
        "e0",
    ]);
    let targets = prop_oneof![
        arb_json(),
        prop::sample::select(vec!["g0", "g1", "g2", "e0", "L"]).prop_map(|s| json!(s)),
    ];
    (types, ops, fields, targets).prop_map(|(t, o, f, v)| {
        json!({"type": t, "operator": o, "field": f, "targetValue": v, "idType": "userID",
               "additionalValues": {"salt": "s"}})
    })
}

fn arb_rule() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(arb_condition(), 0..4),
        0.0f64..=100.0,
        prop::option::of("g[0-2]|e0"),
    )
        .prop_map(|(conds, pct, delegate)| {
            json!({"id": "r", "passPercentage": pct, "returnValue": {"v": 1}, "idType": "userID",
                   "conditions": conds, "configDelegate": delegate})
        })
}

fn arb_ruleset() -> impl Strategy<Value = Value> {
    let spec = |name: &'static str| {
        (prop::collection::vec(arb_rule(), 0..3), any::<bool>()).prop_map(
            move |(rules, enabled)| {
                json!({"name": name, "salt": "s", "enabled": enabled, "defaultValue": {"d": 1},
                   "idType": "userID", "entity": "experiment", "rules": rules})
            },
        )
    };
    (spec("g0"), spec("g1"), spec("g2"), spec("e0"), spec("l0")).prop_map(|(a, b, c, e, l)| {
        json!({"feature_gates": [a, b, c], "dynamic_configs": [e], "layer_configs": [l],
               "layers": {"l0": ["e0"]}, "app_id": "app"})
    })
}

fn arb_user() -> impl Strategy<Value = Value> {
    (arb_json(), arb_json(), arb_json(), arb_json()).prop_map(|(id, country, custom, env)| {
        json!({"userID": id, "country": country, "email": "a@b.c", "custom": custom,
               "customIDs": {"stableID": "s"}, "statsigEnvironment": env,
               "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 16_5 like Mac OS X)"})
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_rulesets_and_users_never_panic(doc in arb_ruleset(), u in arb_user()) {
        let ids = id_list_entities(br#"{"L": ["user_0", "s"]}"#).unwrap();
        if let Ok(mut entities) = entities_from_dcs(doc.to_string().as_bytes()) {
            entities.extend(ids);
            let (rs, _problems) = CompiledRuleset::compile_lenient(&entities);
            if let Ok(user) = User::from_json(&u) {
                let opts = EvalOptions::default().with_environment("production");
                for g in ["g0", "g1", "g2", "missing"] {
                    let _ = rs.check_gate(&user, g, &opts);
                }
                let _ = rs.get_config(&user, "e0", &opts);
                let _ = rs.get_layer(&user, "l0", &opts);
            }
        }
    }

    #[test]
    fn arbitrary_documents_never_panic(doc in arb_json()) {
        let _ = entities_from_dcs(doc.to_string().as_bytes());
        let _ = id_list_entities(doc.to_string().as_bytes());
        if let Ok(entities) = entities_from_dcs(json!({"feature_gates": [doc.clone()]}).to_string().as_bytes()) {
            let _ = CompiledRuleset::compile_lenient(&entities);
        }
        let _ = User::from_json(&doc);
    }
}
