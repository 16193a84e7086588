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
