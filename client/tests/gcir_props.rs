//! Property tests: any JSON as a user either is refused with an error or
//! gives a response that round-trips through its bytes, echoes no private
//! attributes, and is the same for the same user written in another key
//! order.

use flagraft_client::dcs::entities_from_dcs;
use flagraft_client::gcir::{
    client_initialize_response, ClientRuleset, ClientUser, GcirOptions, HashAlgorithm,
    InitializeResponse,
};
use flagraft_client::EvalOptions;
use proptest::prelude::*;
use serde_json::{Map, Value};
use std::path::Path;
use std::sync::OnceLock;

fn ruleset() -> &'static ClientRuleset {
    static RS: OnceLock<ClientRuleset> = OnceLock::new();
    RS.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/cases/layers.dcs.json");
        let entities = entities_from_dcs(&std::fs::read(path).unwrap()).unwrap();
        ClientRuleset::new(1, Default::default(), 5, &entities)
    })
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{1,10}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Users with the fields Statsig defines, of any type, plus random ones.
fn user() -> impl Strategy<Value = Value> {
    let field = prop_oneof![
        Just("userID".to_string()),
        Just("email".to_string()),
        Just("country".to_string()),
        Just("custom".to_string()),
        Just("customIDs".to_string()),
        Just("privateAttributes".to_string()),
        Just("statsigEnvironment".to_string()),
        "[a-z]{1,8}",
    ];
    prop_oneof![
        json(),
        prop::collection::btree_map(field, json(), 0..6)
            .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
    ]
}

fn reorder(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut items: Vec<_> = m.iter().collect();
            items.reverse();
            Value::Object(
                items
                    .into_iter()
                    .map(|(k, v)| (k.clone(), reorder(v)))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(reorder).collect()),
        other => other.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_user_is_refused_or_answered_consistently(u in user(), h in 0usize..3) {
        let Ok(cu) = ClientUser::from_json(&u) else {
            return Ok(());
        };
        let eval = EvalOptions::default();
        let opts = GcirOptions::default().with_hash(HashAlgorithm::ALL[h]);
        let r = client_initialize_response(&ruleset().view(&eval), &cu, &opts);
        let bytes = r.to_json_bytes();
        let back: InitializeResponse = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(&back, &r);
        prop_assert!(r.user.get("privateAttributes").is_none());
        for v in r.evaluated_keys.values() {
            match v {
                Value::String(_) => {}
                Value::Object(ids) => prop_assert!(ids.values().all(Value::is_string)),
                other => prop_assert!(false, "evaluated key {other}"),
            }
        }
        // Same user, keys in another order: same bytes.
        let cu2 = ClientUser::from_json(&reorder(&u)).unwrap();
        let r2 = client_initialize_response(&ruleset().view(&eval), &cu2, &opts);
        prop_assert_eq!(cu.fingerprint(), cu2.fingerprint());
        prop_assert_eq!(
            serde_json::to_value(&r2.feature_gates).unwrap(),
            serde_json::to_value(&r.feature_gates).unwrap()
        );
        prop_assert_eq!(&r2.layer_configs, &r.layer_configs);
    }
}
