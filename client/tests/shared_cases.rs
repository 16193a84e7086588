//! Runs every shared evaluation case (`../../shared/cases`) and matches every
//! expected line on value, rule_id, group_name and allocated_experiment.

use flagraft_client::report::{line, targets};
use flagraft_client::{CompiledRuleset, EvalOptions, User};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/cases")
}

fn case_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(cases_dir())
        .expect("shared cases directory")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".dcs.json"))
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

/// Returns (lines compared, mismatches as text).
fn run_case(name: &str) -> (usize, Vec<String>) {
    let dir = cases_dir();
    let read = |suffix: &str| std::fs::read(dir.join(format!("{name}{suffix}")));
    let dcs = read(".dcs.json").unwrap();
    let id_lists = read(".id_lists.json").ok();
    let rs = CompiledRuleset::from_dcs(&dcs, id_lists.as_deref())
        .unwrap_or_else(|e| panic!("case {name}: {e}"));
    let users: Vec<Value> = serde_json::from_slice(&read(".users.json").unwrap()).unwrap();
    let users: Vec<User> = users.iter().map(|u| User::from_json(u).unwrap()).collect();
    let expected: Vec<Value> = std::str::from_utf8(&read(".expected.jsonl").unwrap())
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let opts = EvalOptions::default();
    let targets = targets(&rs);
    let mut actual = Vec::new();
    for (i, u) in users.iter().enumerate() {
        for t in &targets {
            actual.push(line(&rs, i, u, t, &opts));
        }
    }
    let mut problems = Vec::new();
    if actual.len() != expected.len() {
        problems.push(format!(
            "{name}: {} lines produced, {} expected",
            actual.len(),
            expected.len()
        ));
    }
    for (a, e) in actual.iter().zip(&expected) {
        for field in [
            "user",
            "kind",
            "name",
            "value",
            "rule_id",
            "group_name",
            "allocated_experiment",
        ] {
            if a.get(field) != e.get(field) {
                problems.push(format!(
                    "{name}: {field} differs\n  expected {e}\n  actual   {a}"
                ));
                break;
            }
        }
    }
    (expected.len(), problems)
}

#[test]
fn every_shared_case_matches() {
    let names = case_names();
    assert!(
        names.len() >= 3,
        "expected the shared cases, found {names:?}"
    );
    let mut total = 0;
    let mut all_problems = Vec::new();
    for name in &names {
        let (n, problems) = run_case(name);
        eprintln!("case {name}: {n} lines, {} mismatches", problems.len());
        total += n;
        all_problems.extend(problems);
    }
    eprintln!("{total} expected lines over {} cases", names.len());
    if !all_problems.is_empty() {
        let shown: Vec<&String> = all_problems.iter().take(30).collect();
        panic!(
            "{} mismatches:\n{}",
            all_problems.len(),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// Every case round-trips through entities in both dialects, and the
/// round-tripped ruleset evaluates identically.
#[test]
fn shared_cases_round_trip_in_both_dialects() {
    use flagraft_client::dcs::{dcs_from_entities, detect_dialect, entities_from_dcs, Dialect};
    for name in case_names() {
        let bytes = std::fs::read(cases_dir().join(format!("{name}.dcs.json"))).unwrap();
        let original: Value = serde_json::from_slice(&bytes).unwrap();
        let dialect = detect_dialect(original.as_object().unwrap());
        let time = original["time"].as_i64().unwrap();
        let entities = entities_from_dcs(&bytes).unwrap();
        let same = dcs_from_entities(&entities, dialect, time);
        // A v1 output always carries `layers`; a v2 one `response_format`.
        let mut expected = original.clone();
        match dialect {
            Dialect::V1 => {
                expected
                    .as_object_mut()
                    .unwrap()
                    .entry("layers")
                    .or_insert(serde_json::json!({}));
            }
            Dialect::V2 => {
                expected
                    .as_object_mut()
                    .unwrap()
                    .entry("response_format")
                    .or_insert(serde_json::json!("dcs-v2"));
            }
        }
        assert!(same == expected, "{name}: same-dialect round trip differs");
        let other = if dialect == Dialect::V1 {
            Dialect::V2
        } else {
            Dialect::V1
        };
        let converted = dcs_from_entities(&entities, other, time);
        let entities2 = entities_from_dcs(converted.to_string().as_bytes()).unwrap();
        let back = dcs_from_entities(&entities2, dialect, time);
        // v2 maps are keyed by name, so v1 array order becomes name order;
        // v1 has no condition keys, so v2 keys are re-derived from content.
        assert!(
            semantic(&back) == semantic(&expected),
            "{name}: {dialect:?} -> {other:?} -> {dialect:?} differs"
        );
        // And the converted document evaluates identically.
        let ids = std::fs::read(cases_dir().join(format!("{name}.id_lists.json"))).ok();
        let a = CompiledRuleset::from_dcs(&bytes, ids.as_deref()).unwrap();
        let b =
            CompiledRuleset::from_dcs(converted.to_string().as_bytes(), ids.as_deref()).unwrap();
        let users: Vec<Value> = serde_json::from_slice(
            &std::fs::read(cases_dir().join(format!("{name}.users.json"))).unwrap(),
        )
        .unwrap();
        let opts = EvalOptions::default();
        for (i, u) in users.iter().enumerate().take(50) {
            let u = User::from_json(u).unwrap();
            for t in targets(&a) {
                assert_eq!(
                    line(&a, i, &u, &t, &opts),
                    line(&b, i, &u, &t, &opts),
                    "{name}"
                );
            }
        }
    }
}

/// A document's entities, sorted, with v2 condition keys dropped.
fn semantic(doc: &Value) -> Vec<(String, Value)> {
    let entities = flagraft_client::dcs::entities_from_dcs(doc.to_string().as_bytes()).unwrap();
    let mut out: Vec<(String, Value)> = entities
        .into_iter()
        .map(|e| {
            let text = e.body.to_string().replace(r#""__key":"#, r#""__ignored":"#);
            let mut body: Value = serde_json::from_str(&text).unwrap();
            strip(&mut body);
            (e.key.to_string(), body)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn strip(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("__ignored");
            m.values_mut().for_each(strip);
        }
        Value::Array(a) => a.iter_mut().for_each(strip),
        _ => {}
    }
}
