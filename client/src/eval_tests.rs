//! Evaluation semantics on small hand-written rulesets.

use super::*;
use crate::dcs::entities_from_dcs;
use crate::entity::Entity;
use crate::problem::Severity;
use serde_json::json;

fn gate(name: &str, rules: Value) -> Value {
    json!({"name": name, "type": "feature_gate", "entity": "feature_gate", "salt": format!("salt-{name}"),
           "enabled": true, "defaultValue": false, "idType": "userID", "rules": rules})
}

fn rule(id: &str, pct: f64, conds: Value) -> Value {
    json!({"id": id, "name": id, "salt": id, "passPercentage": pct, "returnValue": true,
           "idType": "userID", "conditions": conds})
}

fn cond(t: &str, op: Option<&str>, field: Option<&str>, target: Value) -> Value {
    json!({"type": t, "operator": op, "field": field, "targetValue": target, "idType": "userID"})
}

fn public() -> Value {
    cond("public", None, None, Value::Null)
}

fn pass_gate(g: &str) -> Value {
    cond("pass_gate", None, None, json!(g))
}

fn entities(gates: Vec<Value>, configs: Vec<Value>, layers: Vec<Value>) -> Vec<Entity> {
    let doc = json!({"has_updates": true, "time": 1, "feature_gates": gates,
                     "dynamic_configs": configs, "layer_configs": layers, "layers": {}});
    entities_from_dcs(doc.to_string().as_bytes()).unwrap()
}

fn lenient(gates: Vec<Value>, configs: Vec<Value>, layers: Vec<Value>) -> CompiledRuleset {
    CompiledRuleset::compile_lenient(&entities(gates, configs, layers)).0
}

fn user(v: Value) -> User {
    User::from_json(&v).unwrap()
}

#[test]
fn unsupported_keeps_the_and_of_the_other_conditions() {
    let rs = lenient(
        vec![
            gate(
                "a",
                json!([rule(
                    "r",
                    100.0,
                    json!([
                        public(),
                        cond("user_field", Some("nope"), Some("x"), json!(1))
                    ])
                )]),
            ),
            gate(
                "b",
                json!([rule(
                    "r",
                    100.0,
                    json!([cond("PUBLIC", None, None, Value::Null)])
                )]),
            ),
            gate(
                "c",
                json!([
                    rule(
                        "r",
                        100.0,
                        json!([cond("multi_pass_gate", None, None, json!(["a"]))])
                    ),
                    rule("r2", 100.0, json!([public()]))
                ]),
            ),
        ],
        vec![],
        vec![],
    );
    let u = User::with_user_id("u");
    let o = EvalOptions::default();
    let a = rs.check_gate(&u, "a", &o);
    assert_eq!(
        (a.value, a.rule_id, a.reason),
        (true, "", Reason::Unsupported)
    );
    let b = rs.check_gate(&u, "b", &o);
    assert_eq!(
        (b.value, b.rule_id, b.reason),
        (false, "", Reason::Unsupported)
    );
    let c = rs.check_gate(&u, "c", &o);
    assert_eq!(
        (c.value, c.reason),
        (false, Reason::Unsupported),
        "stops at the unsupported rule"
    );
}

#[test]
fn failed_percentage_attributes_the_rule_with_the_default() {
    let rs = lenient(
        vec![gate("g", json!([rule("r30", 30.0, json!([public()]))]))],
        vec![],
        vec![],
    );
    let o = EvalOptions::default();
    let (mut ins, mut outs) = (0, 0);
    for i in 0..200 {
        let r = rs.check_gate(&User::with_user_id(&format!("user_{i}")), "g", &o);
        assert_eq!(r.rule_id, "r30");
        if r.value {
            ins += 1
        } else {
            outs += 1
        }
    }
    assert!(ins > 30 && outs > 100, "{ins} in, {outs} out");
}

#[test]
fn disabled_specs_ignore_their_rules() {
    let mut g = gate("g", json!([rule("r", 100.0, json!([public()]))]));
    g["enabled"] = json!(false);
    let rs = lenient(vec![g], vec![], vec![]);
    let r = rs.check_gate(&User::with_user_id("u"), "g", &EvalOptions::default());
    assert_eq!((r.value, r.rule_id), (false, "disabled"));
}

#[test]
fn unknown_entities_are_unrecognized() {
    let rs = lenient(vec![], vec![], vec![]);
    let u = User::with_user_id("u");
    let r = rs.check_gate(&u, "nope", &EvalOptions::default());
    assert_eq!(
        (r.value, r.rule_id, r.reason),
        (false, "", Reason::Unrecognized)
    );
    let c = rs.get_config(&u, "nope", &EvalOptions::default());
    assert_eq!((c.value, c.reason), (&json!({}), Reason::Unrecognized));
}

#[test]
fn nested_gate_exposures() {
    let rs = lenient(
        vec![
            gate("inner", json!([rule("ri", 100.0, json!([public()]))])),
            gate(
                "middle",
                json!([rule("rm", 100.0, json!([pass_gate("inner")]))]),
            ),
            gate("segment:s", json!([rule("rs", 100.0, json!([public()]))])),
            gate(
                "outer",
                json!([
                    rule(
                        "r0",
                        100.0,
                        json!([cond("fail_gate", None, None, json!("middle"))])
                    ),
                    rule(
                        "r1",
                        100.0,
                        json!([
                            pass_gate("middle"),
                            pass_gate("segment:s"),
                            pass_gate("ghost")
                        ])
                    ),
                    rule("r2", 100.0, json!([public()])),
                ]),
            ),
        ],
        vec![],
        vec![],
    );
    let r = rs.check_gate(&User::with_user_id("u"), "outer", &EvalOptions::default());
    assert_eq!(
        (r.value, r.rule_id),
        (true, "r2"),
        "ghost is false, so r1 fails"
    );
    let ex: Vec<(&str, bool, &str)> = r
        .secondary_exposures
        .iter()
        .map(|e| (e.gate, e.gate_value, e.rule_id))
        .collect();
    // Rule r0: middle (with inner first); rule r1: middle again, memoised
    // (its own entry only); segments and unknown gates are never exposed.
    assert_eq!(
        ex,
        vec![
            ("inner", true, "ri"),
            ("middle", true, "rm"),
            ("middle", true, "rm")
        ]
    );
}

#[test]
fn cycles_are_refused_strictly_and_stop_at_the_depth_limit() {
    let ents = entities(
        vec![
            gate("a", json!([rule("ra", 100.0, json!([pass_gate("b")]))])),
            gate("b", json!([rule("rb", 100.0, json!([pass_gate("a")]))])),
        ],
        vec![],
        vec![],
    );
    let err = CompiledRuleset::from_entities(&ents).unwrap_err();
    assert!(err.to_string().contains("dependency cycle"), "{err}");
    let (rs, problems) = CompiledRuleset::compile_lenient(&ents);
    assert!(problems.iter().any(|p| p.severity == Severity::Error));
    let r = rs.check_gate(&User::with_user_id("u"), "a", &EvalOptions::default());
    assert_eq!(
        (r.value, r.rule_id, r.reason),
        (false, "", Reason::DepthLimitExceeded)
    );
}

#[test]
fn long_chains_hit_the_limit_and_short_ones_do_not() {
    let chain = |n: usize| {
        let mut gates = vec![gate("g0", json!([rule("r", 100.0, json!([public()]))]))];
        for i in 1..n {
            gates.push(gate(
                &format!("g{i}"),
                json!([rule("r", 100.0, json!([pass_gate(&format!("g{}", i - 1))]))]),
            ));
        }
        (lenient(gates, vec![], vec![]), format!("g{}", n - 1))
    };
    let o = EvalOptions::default();
    let (rs, top) = chain(60);
    let r = rs.check_gate(&User::with_user_id("u"), &top, &o);
    assert_eq!((r.value, r.reason), (true, Reason::Recognized));
    let (rs, top) = chain(200);
    let r = rs.check_gate(&User::with_user_id("u"), &top, &o);
    assert_eq!((r.value, r.reason), (false, Reason::DepthLimitExceeded));
}

#[test]
fn diamonds_are_memoised() {
    // Each level references the next twice: 2^60 paths without memoisation.
    let mut gates = vec![gate("d60", json!([rule("r", 100.0, json!([public()]))]))];
    for i in (0..60).rev() {
        let next = format!("d{}", i + 1);
        gates.push(gate(
            &format!("d{i}"),
            json!([rule(
                "r",
                100.0,
                json!([pass_gate(&next), pass_gate(&next)])
            )]),
        ));
    }
    let rs = lenient(gates, vec![], vec![]);
    let r = rs.check_gate(&User::with_user_id("u"), "d0", &EvalOptions::default());
    assert!(r.value);
    assert_eq!(r.secondary_exposures.len(), 2 * 60);
}

fn layered() -> CompiledRuleset {
    let exp = json!({"name": "exp", "type": "dynamic_config", "entity": "experiment", "salt": "es",
        "enabled": true, "defaultValue": {"p": "default"}, "idType": "userID", "isActive": true,
        "hasSharedParams": true, "explicitParameters": ["p"],
        "rules": [{"id": "grp", "salt": "", "passPercentage": 100, "returnValue": {"p": "test"},
                   "idType": "userID", "groupName": "Test", "isExperimentGroup": true,
                   "conditions": [pass_gate("g")]}]});
    let layer = json!({"name": "lay", "type": "dynamic_config", "entity": "layer", "salt": "ls",
        "enabled": true, "defaultValue": {"p": "layer"}, "idType": "userID",
        "rules": [
            {"id": "experimentAssignment", "salt": "", "passPercentage": 0, "returnValue": {"p": "x"},
             "idType": "userID", "configDelegate": "exp", "conditions": [pass_gate("h")]},
            {"id": "ghostAssignment", "salt": "", "passPercentage": 100, "returnValue": {"p": "own"},
             "idType": "userID", "configDelegate": "ghost", "conditions": [public()]}]});
    lenient(
        vec![
            gate("g", json!([rule("rg", 100.0, json!([public()]))])),
            gate(
                "h",
                json!([rule(
                    "rh",
                    100.0,
                    json!([cond(
                        "user_field",
                        Some("any"),
                        Some("country"),
                        json!(["US"])
                    )])
                )]),
            ),
        ],
        vec![exp],
        vec![layer],
    )
}

#[test]
fn layers_delegate_before_the_percentage() {
    let rs = layered();
    let o = EvalOptions::default();
    let r = rs.get_layer(&user(json!({"userID": "u", "country": "us"})), "lay", &o);
    assert_eq!(
        r.value,
        &json!({"p": "test"}),
        "pass percentage 0 is not applied"
    );
    assert_eq!(
        (r.rule_id, r.group_name, r.allocated_experiment),
        ("grp", Some("Test"), Some("exp"))
    );
    assert_eq!(r.explicit_parameters, &["p".to_string()]);
    assert!(r.is_experiment_group && r.is_experiment_active && r.is_in_layer);
    fn names<'a>(v: &[SecondaryExposure<'a>]) -> Vec<&'a str> {
        v.iter().map(|e| e.gate).collect()
    }
    assert_eq!(names(&r.undelegated_secondary_exposures), vec!["h"]);
    assert_eq!(names(&r.secondary_exposures), vec!["h", "g"]);
    // A delegate that does not exist: an ordinary rule.
    let r = rs.get_layer(&user(json!({"userID": "u", "country": "FR"})), "lay", &o);
    assert_eq!(
        (r.value, r.rule_id, r.allocated_experiment),
        (&json!({"p": "own"}), "ghostAssignment", None)
    );
}

#[test]
fn environment_tier_sources() {
    let rs = lenient(
        vec![gate(
            "prod",
            json!([rule(
                "r",
                100.0,
                json!([cond(
                    "environment_field",
                    Some("any"),
                    Some("tier"),
                    json!(["production"])
                )])
            )]),
        )],
        vec![],
        vec![],
    );
    let plain = User::with_user_id("u");
    let dev = user(json!({"userID": "u", "statsigEnvironment": {"tier": "development"}}));
    let none = EvalOptions::default();
    let prod = EvalOptions::default().with_environment("PRODUCTION");
    assert!(!rs.check_gate(&plain, "prod", &none).value);
    assert!(
        rs.check_gate(&plain, "prod", &prod).value,
        "SDK option, case-insensitive operator"
    );
    assert!(
        !rs.check_gate(&dev, "prod", &prod).value,
        "the user's tier wins"
    );
}

#[test]
fn ip_and_user_agent_fields() {
    let rs = lenient(
        vec![
            gate(
                "us",
                json!([rule(
                    "r",
                    100.0,
                    json!([cond(
                        "ip_based",
                        Some("any"),
                        Some("country"),
                        json!(["US"])
                    )])
                )]),
            ),
            gate(
                "ios",
                json!([rule(
                    "r",
                    100.0,
                    json!([cond(
                        "ua_based",
                        Some("any"),
                        Some("os_name"),
                        json!(["iOS"])
                    )])
                )]),
            ),
        ],
        vec![],
        vec![],
    );
    let table = Arc::new(IpTable::parse_csv("134744064,134744319,US,United States").unwrap());
    let with_table = EvalOptions::default().with_ip_table(table);
    let none = EvalOptions::default();
    let by_ip = user(json!({"userID": "u", "ip": "8.8.8.8"}));
    assert!(rs.check_gate(&by_ip, "us", &with_table).value);
    assert!(
        !rs.check_gate(&by_ip, "us", &none).value,
        "no table: only country counts"
    );
    let both = user(json!({"userID": "u", "ip": "8.8.8.8", "country": "CA"}));
    assert!(
        !rs.check_gate(&both, "us", &with_table).value,
        "the user's country wins"
    );
    let iphone = user(
        json!({"userID": "u", "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 16_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.5 Mobile/15E148 Safari/604.1"}),
    );
    assert!(rs.check_gate(&iphone, "ios", &none).value);
    let custom = user(json!({"userID": "u", "custom": {"os_name": "iOS"}}));
    assert!(
        rs.check_gate(&custom, "ios", &none).value,
        "a user field wins over parsing"
    );
}

#[test]
fn explanations_name_rules_and_values() {
    let rs = layered();
    let mut trace = Vec::new();
    rs.eval_config_traced(
        true,
        &user(json!({"userID": "u", "country": "us"})),
        "lay",
        &EvalOptions::default(),
        Some(&mut trace),
    );
    let text: Vec<&str> = trace.iter().map(|l| l.text.as_str()).collect();
    let all = text.join("\n");
    assert!(all.contains("layer 'lay'"), "{all}");
    assert!(
        all.contains("user_field 'country' = \"us\" any [\"US\"]: true"),
        "{all}"
    );
    assert!(all.contains("delegates to experiment 'exp'"), "{all}");
    assert!(all.contains("decided by rule 'grp'"), "{all}");
}

#[test]
fn validate_reports_dangling_references_as_warnings() {
    let ents = entities(
        vec![gate(
            "a",
            json!([rule("r", 100.0, json!([pass_gate("nope")]))]),
        )],
        vec![],
        vec![],
    );
    let problems = crate::validate::validate(&ents);
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].severity, Severity::Warning);
    let text = problems[0].to_string();
    assert!(
        text.contains("gate 'a'")
            && text.contains("rule 'r'")
            && text.contains("rules[0].conditions[0].targetValue"),
        "{text}"
    );
}
