//! `flagraft eval` end to end: output format, explanations, bench, errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cases() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/cases")
}

fn flagraft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flagraft"))
        .args(args)
        .output()
        .expect("run flagraft")
}

fn case_args(name: &str) -> Vec<String> {
    let c = cases();
    let mut v = vec![
        "eval".to_string(),
        "--specs".into(),
        c.join(format!("{name}.dcs.json")).display().to_string(),
        "--users".into(),
        c.join(format!("{name}.users.json")).display().to_string(),
    ];
    let ids = c.join(format!("{name}.id_lists.json"));
    if ids.exists() {
        v.push("--id-lists".into());
        v.push(ids.display().to_string());
    }
    v
}

fn run_case(name: &str, extra: &[&str]) -> Output {
    let mut args = case_args(name);
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    flagraft(&refs)
}

#[test]
fn prints_exactly_the_expected_lines() {
    for name in ["gates", "experiments", "layers"] {
        let out = run_case(name, &["--quiet"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let expected =
            std::fs::read_to_string(cases().join(format!("{name}.expected.jsonl"))).unwrap();
        let actual = String::from_utf8(out.stdout).unwrap();
        assert_eq!(actual.lines().count(), expected.lines().count(), "{name}");
        for (i, (a, e)) in actual.lines().zip(expected.lines()).enumerate() {
            let a: serde_json::Value = serde_json::from_str(a).unwrap();
            let e: serde_json::Value = serde_json::from_str(e).unwrap();
            assert_eq!(a, e, "{name} line {}", i + 1);
        }
    }
}

#[test]
fn explain_names_the_deciding_rule_and_conditions() {
    let out = run_case("gates", &["--quiet", "--explain"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("-> decided by rule 'r_public'"),
        "missing deciding rule"
    );
    assert!(
        text.contains("user_field 'age' = 65 gte 18: true"),
        "missing compared values"
    );
    assert!(
        text.contains("pass percentage 30%"),
        "missing rollout explanation"
    );
}

#[test]
fn bench_ends_with_evals_per_sec() {
    let out = run_case("layers", &["--quiet", "--bench", "--rounds", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let last = text.lines().last().unwrap_or("");
    let n: f64 = last
        .strip_prefix("evals_per_sec ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("last line {last:?}"));
    assert!(n > 0.0);
}

fn error_of(out: &Output) -> String {
    assert!(!out.status.success(), "should fail");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.starts_with("error: "), "{err}");
    err
}

#[test]
fn bad_inputs_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    std::fs::write(&users, r#"[{"userID": "u"}]"#).unwrap();
    let users = users.to_str().unwrap();

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{ not json").unwrap();
    let err = error_of(&flagraft(&[
        "eval",
        "--specs",
        bad.to_str().unwrap(),
        "--users",
        users,
    ]));
    assert!(
        err.contains("bad.json") && err.contains("not valid JSON"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    let err = error_of(&flagraft(&[
        "eval",
        "--specs",
        "/nonexistent/x.json",
        "--users",
        users,
    ]));
    assert!(
        err.contains("cannot read --specs /nonexistent/x.json"),
        "{err}"
    );

    let cycle = dir.path().join("cycle.json");
    let g = |n: &str, dep: &str| {
        serde_json::json!({"name": n, "salt": "s", "enabled": true, "defaultValue": false, "idType": "userID",
            "rules": [{"id": "r", "passPercentage": 100, "returnValue": true, "idType": "userID",
                "conditions": [{"type": "pass_gate", "targetValue": dep, "idType": "userID"}]}]})
    };
    let doc = serde_json::json!({"feature_gates": [g("a", "b"), g("b", "a")], "dynamic_configs": [], "layer_configs": []});
    std::fs::write(&cycle, doc.to_string()).unwrap();
    let err = error_of(&flagraft(&[
        "eval",
        "--specs",
        cycle.to_str().unwrap(),
        "--users",
        users,
    ]));
    assert!(err.contains("dependency cycle"), "{err}");

    let wrong = dir.path().join("wrong.json");
    let doc = serde_json::json!({"feature_gates": [{"name": "g", "salt": "s", "defaultValue": false, "idType": "userID",
        "rules": [{"id": "r1", "passPercentage": "all", "returnValue": true, "idType": "userID", "conditions": []}]}]});
    std::fs::write(&wrong, doc.to_string()).unwrap();
    let err = error_of(&flagraft(&[
        "eval",
        "--specs",
        wrong.to_str().unwrap(),
        "--users",
        users,
    ]));
    assert!(
        err.contains("gate 'g'")
            && err.contains("rule 'r1'")
            && err.contains("rules[0].passPercentage"),
        "{err}"
    );

    let not_users = dir.path().join("not_users.json");
    std::fs::write(&not_users, r#"{"userID": "u"}"#).unwrap();
    let specs = cases().join("gates.dcs.json");
    let err = error_of(&flagraft(&[
        "eval",
        "--specs",
        specs.to_str().unwrap(),
        "--users",
        not_users.to_str().unwrap(),
        "--quiet",
    ]));
    assert!(err.contains("expected a JSON array of users"), "{err}");
}
