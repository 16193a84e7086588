//! Client initialize responses for the users of the shared cases
//! (`../../shared/cases`): every gate value, config value, rule id, group
//! name and allocated experiment equals what the evaluator gives (and what
//! Statsig's SDK gave, per the expected lines); names and exposures are
//! hashed as the format doc says; no rule, condition or salt is in the bytes.

use flagraft_client::dcs::{entities_from_dcs, id_list_entities};
use flagraft_client::entity::{Entity, EntityKind};
use flagraft_client::gcir::{
    client_initialize_response, ClientRuleset, ClientUser, ConfigValue, Exposure, GcirOptions,
    HashAlgorithm, InitializeResponse,
};
use flagraft_client::{EvalOptions, SecondaryExposure, User};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/cases")
}

const CASES: [&str; 3] = ["gates", "experiments", "layers"];

struct Case {
    name: &'static str,
    entities: Vec<Entity>,
    ruleset: ClientRuleset,
    users: Vec<Value>,
    expected: Vec<Value>,
}

fn load(name: &'static str) -> Case {
    let dir = cases_dir();
    let read = |suffix: &str| std::fs::read(dir.join(format!("{name}{suffix}")));
    let mut entities = entities_from_dcs(&read(".dcs.json").unwrap()).unwrap();
    if let Ok(lists) = read(".id_lists.json") {
        entities.extend(id_list_entities(&lists).unwrap());
    }
    let ruleset = ClientRuleset::new(7, Default::default(), 1_700_000_000_000, &entities);
    let users: Vec<Value> = serde_json::from_slice(&read(".users.json").unwrap()).unwrap();
    let expected = std::str::from_utf8(&read(".expected.jsonl").unwrap())
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    Case {
        name,
        entities,
        ruleset,
        users,
        expected,
    }
}

/// `entity` of every gate/config/layer by (kind, name).
fn entity_types(c: &Case) -> HashMap<(EntityKind, String), String> {
    c.entities
        .iter()
        .filter_map(|e| {
            let t = e.body.get("entity")?.as_str()?.to_string();
            Some(((e.key.kind, e.key.name.clone()), t))
        })
        .collect()
}

fn hashed_exposures(h: HashAlgorithm, list: &[SecondaryExposure<'_>]) -> Vec<Exposure> {
    let mut seen = HashSet::new();
    list.iter()
        .filter(|e| seen.insert((e.gate, e.gate_value, e.rule_id)))
        .map(|e| Exposure {
            gate: h.hash(e.gate),
            gate_value: e.gate_value.to_string(),
            rule_id: e.rule_id.to_string(),
        })
        .collect()
}

fn response(c: &Case, user: &Value, h: HashAlgorithm) -> InitializeResponse {
    let eval = EvalOptions::default();
    let user = ClientUser::from_json(user).unwrap();
    client_initialize_response(
        &c.ruleset.view(&eval),
        &user,
        &GcirOptions::default().with_hash(h),
    )
}

/// Checks one case; returns the number of expected lines compared.
fn check_case(c: &Case, h: HashAlgorithm) -> usize {
    let eval = EvalOptions::default();
    let types = entity_types(c);
    let rs = &c.ruleset.compiled;
    let responses: Vec<InitializeResponse> = c.users.iter().map(|u| response(c, u, h)).collect();
    let mut compared = 0;
    for e in &c.expected {
        let ui = e["user"].as_u64().unwrap() as usize;
        let r = &responses[ui];
        let user = User::from_json(&c.users[ui]).unwrap();
        let name = e["name"].as_str().unwrap();
        let key = h.hash(name);
        let ctx = format!("case {} user {ui} {} {name} ({h})", c.name, e["kind"]);
        match e["kind"].as_str().unwrap() {
            "gate" => {
                let t = &types[&(EntityKind::Gate, name.to_string())];
                let got = r.feature_gates.get(&key);
                if t == "segment" || t == "holdout" {
                    assert!(got.is_none(), "{ctx}: a {t} must not be sent");
                    continue;
                }
                let got = got.unwrap_or_else(|| panic!("{ctx}: missing"));
                let ev = rs.check_gate(&user, name, &eval);
                assert_eq!(got.name, key, "{ctx}");
                assert_eq!(Value::Bool(got.value), e["value"], "{ctx}");
                assert_eq!(got.value, ev.value, "{ctx}");
                assert_eq!(got.rule_id, ev.rule_id, "{ctx}");
                assert_eq!(got.rule_id, e["rule_id"].as_str().unwrap(), "{ctx}");
                assert_eq!(got.id_type, ev.id_type, "{ctx}");
                let want = hashed_exposures(h, &ev.secondary_exposures);
                assert_eq!(got.secondary_exposures, want, "{ctx}");
            }
            "config" | "experiment" => {
                let got = r
                    .dynamic_configs
                    .get(&key)
                    .unwrap_or_else(|| panic!("{ctx}: missing"));
                let ev = rs.get_config(&user, name, &eval);
                assert_eq!(&Value::Object(got.value().clone()), ev.value, "{ctx}");
                assert_eq!(Value::Object(got.value().clone()), e["value"], "{ctx}");
                assert_eq!(got.rule_id(), ev.rule_id, "{ctx}");
                assert_eq!(got.rule_id(), e["rule_id"].as_str().unwrap(), "{ctx}");
                assert_eq!(got.group_name(), ev.group_name, "{ctx}");
                assert_eq!(got.group_name(), e["group_name"].as_str(), "{ctx}");
                let want = hashed_exposures(h, &ev.secondary_exposures);
                match got {
                    ConfigValue::DynamicConfig(d) => {
                        assert_eq!(e["kind"], "config", "{ctx}");
                        assert_eq!(d.group, d.rule_id);
                        assert_eq!(d.passed, ev.passed, "{ctx}");
                        assert_eq!(d.secondary_exposures, want, "{ctx}");
                    }
                    ConfigValue::Experiment(x) => {
                        assert_eq!(e["kind"], "experiment", "{ctx}");
                        assert_eq!(x.is_in_layer, ev.is_in_layer, "{ctx}");
                        let t = &types[&(EntityKind::Config, name.to_string())];
                        if t == "experiment" {
                            assert_eq!(x.is_user_in_experiment, Some(ev.is_experiment_group));
                            assert_eq!(x.is_experiment_active, Some(ev.is_experiment_active));
                        }
                        assert_eq!(x.secondary_exposures, want, "{ctx}");
                    }
                }
            }
            "layer" => {
                let got = r
                    .layer_configs
                    .get(&key)
                    .unwrap_or_else(|| panic!("{ctx}: missing"));
                let ev = rs.get_layer(&user, name, &eval);
                assert_eq!(&Value::Object(got.value.clone()), ev.value, "{ctx}");
                assert_eq!(Value::Object(got.value.clone()), e["value"], "{ctx}");
                assert_eq!(got.rule_id, ev.rule_id, "{ctx}");
                assert_eq!(got.rule_id, e["rule_id"].as_str().unwrap(), "{ctx}");
                assert_eq!(got.group_name.as_deref(), ev.group_name, "{ctx}");
                assert_eq!(got.group_name.as_deref(), e["group_name"].as_str(), "{ctx}");
                let alloc = e["allocated_experiment"].as_str().map(|a| h.hash(a));
                assert_eq!(got.allocated_experiment_name, alloc, "{ctx}");
                assert_eq!(got.explicit_parameters, ev.explicit_parameters, "{ctx}");
                let want = hashed_exposures(h, &ev.secondary_exposures);
                assert_eq!(got.secondary_exposures, want, "{ctx}");
                let want = hashed_exposures(h, &ev.undelegated_secondary_exposures);
                assert_eq!(got.undelegated_secondary_exposures, want, "{ctx}");
            }
            other => panic!("{ctx}: unknown kind {other}"),
        }
        compared += 1;
    }
    // Nothing else is sent: exactly the expected gates (minus segments and
    // holdouts), configs, experiments and layers of one user.
    let r = &responses[0];
    let sent = r.feature_gates.len() + r.dynamic_configs.len() + r.layer_configs.len();
    let expected_for_user0 = c
        .expected
        .iter()
        .filter(|e| e["user"] == 0)
        .filter(|e| {
            e["kind"] != "gate"
                || !matches!(
                    types[&(EntityKind::Gate, e["name"].as_str().unwrap().to_string())].as_str(),
                    "segment" | "holdout"
                )
        })
        .count();
    assert_eq!(sent, expected_for_user0, "case {}", c.name);
    compared
}

#[test]
fn responses_equal_the_evaluator_and_statsig_for_every_user() {
    let mut total = 0;
    for name in CASES {
        let c = load(name);
        assert!(!c.users.is_empty() && !c.expected.is_empty(), "case {name}");
        for h in HashAlgorithm::ALL {
            total += check_case(&c, h);
        }
    }
    eprintln!("{total} comparisons");
    // 16 400 expected lines in the shared cases, three algorithms each,
    // segment/holdout lines excluded.
    assert!(total > 30_000, "only {total} comparisons");
}

#[test]
fn top_level_fields_are_statsigs() {
    let c = load("experiments");
    let r = response(&c, &c.users[0], HashAlgorithm::Djb2);
    let v = r.to_json_value();
    for f in [
        "feature_gates",
        "dynamic_configs",
        "layer_configs",
        "param_stores",
        "time",
        "has_updates",
        "hash_used",
        "user",
        "evaluated_keys",
        "sdkInfo",
        "sdkParams",
    ] {
        assert!(v.get(f).is_some(), "missing {f}");
    }
    assert_eq!(v["time"], 1_700_000_000_000u64);
    assert_eq!(v["has_updates"], true);
    assert_eq!(v["hash_used"], "djb2");
    assert_eq!(v["evaluated_keys"]["userID"], c.users[0]["userID"]);
    // Parsing the bytes back gives the same response.
    let back: InitializeResponse = serde_json::from_slice(&r.to_json_bytes()).unwrap();
    assert_eq!(back, r);
}

/// Strings that would reveal rules: every salt (spec, rule, user_bucket)
/// and every regex, minus those that legitimately appear as a name, rule
/// id, group name, value or user field.
fn secrets(c: &Case) -> Vec<String> {
    let mut secret = HashSet::new();
    let mut allowed = HashSet::new();
    fn strings(v: &Value, out: &mut HashSet<String>) {
        match v {
            Value::String(s) => {
                out.insert(s.clone());
            }
            Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
            Value::Object(m) => m.iter().for_each(|(k, x)| {
                out.insert(k.clone());
                strings(x, out)
            }),
            _ => {}
        }
    }
    for u in &c.users {
        strings(u, &mut allowed);
    }
    for e in &c.entities {
        allowed.insert(e.key.name.clone());
        let b = &e.body;
        if let Some(s) = b.get("salt").and_then(Value::as_str) {
            secret.insert(s.to_string());
        }
        strings(b.get("defaultValue").unwrap_or(&Value::Null), &mut allowed);
        for r in b
            .get("rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for f in ["id", "groupName", "name"] {
                if let Some(s) = r.get(f).and_then(Value::as_str) {
                    allowed.insert(s.to_string());
                }
            }
            strings(r.get("returnValue").unwrap_or(&Value::Null), &mut allowed);
            if let Some(s) = r.get("salt").and_then(Value::as_str) {
                secret.insert(s.to_string());
            }
            for cond in r
                .get("conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(s) = cond
                    .pointer("/additionalValues/salt")
                    .and_then(Value::as_str)
                {
                    secret.insert(s.to_string());
                }
                if cond.get("operator").and_then(Value::as_str) == Some("str_matches") {
                    strings(cond.get("targetValue").unwrap_or(&Value::Null), &mut secret);
                }
            }
        }
    }
    let mut out: Vec<String> = secret
        .into_iter()
        .filter(|s| s.len() >= 4 && !allowed.contains(s))
        .collect();
    out.sort();
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn no_rule_condition_or_salt_in_the_bytes() {
    const RULE_KEYS: [&str; 11] = [
        "\"rules\"",
        "\"conditions\"",
        "\"salt\"",
        "\"passPercentage\"",
        "\"returnValue\"",
        "\"defaultValue\"",
        "\"targetValue\"",
        "\"additionalValues\"",
        "\"operator\"",
        "\"configDelegate\"",
        "\"idType\"",
    ];
    let mut checked_secrets = 0;
    for name in CASES {
        let c = load(name);
        let secrets = secrets(&c);
        assert!(!secrets.is_empty(), "case {name}: no salts found to check");
        checked_secrets += secrets.len();
        eprintln!(
            "case {name}: {} secrets, e.g. {:?}",
            secrets.len(),
            secrets.first()
        );
        for user in &c.users {
            for h in HashAlgorithm::ALL {
                let bytes = response(&c, user, h).to_json_bytes();
                for k in RULE_KEYS {
                    assert!(!contains(&bytes, k.as_bytes()), "case {name}: {k} sent");
                }
                for s in &secrets {
                    assert!(
                        !contains(&bytes, s.as_bytes()),
                        "case {name}: rule text {s:?} sent"
                    );
                }
            }
        }
    }
    assert!(
        checked_secrets > 50,
        "only {checked_secrets} secrets checked"
    );
}

#[test]
fn private_attributes_are_never_echoed() {
    let c = load("gates");
    let mut user = c.users[0].clone();
    user["privateAttributes"] = serde_json::json!({"ssn": "123-45-6789"});
    let bytes = response(&c, &user, HashAlgorithm::None).to_json_bytes();
    assert!(!contains(&bytes, b"123-45-6789"));
    assert!(!contains(&bytes, b"privateAttributes"));
    assert!(contains(&bytes, b"\"pa_hash\""));
}
