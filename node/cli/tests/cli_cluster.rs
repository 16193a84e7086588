//! `flagraft` against a real 3-node cluster: commit the example files, read
//! them back, history, diff, rollback, keys, projects, cluster status, and
//! one-line errors with a nonzero exit.

use flagraft_cluster_tests::{Cluster, ClusterOptions, TEST_ADMIN_KEY};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cluster-config/examples")
}

struct Cli {
    endpoints: String,
}

impl Cli {
    fn run(&self, key: Option<&str>, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flagraft"));
        cmd.args(args)
            .env("FLAGRAFT_ENDPOINTS", &self.endpoints)
            .env_remove("FLAGRAFT_ADMIN_KEY")
            .env_remove("FLAGRAFT_PROJECT");
        if let Some(k) = key {
            cmd.env("FLAGRAFT_ADMIN_KEY", k);
        }
        cmd.output().expect("run flagraft")
    }

    /// Runs with the test admin key; must succeed; stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(Some(TEST_ADMIN_KEY), args);
        assert!(
            out.status.success(),
            "flagraft {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).expect("--json prints one JSON document")
    }

    /// Runs and must fail with exit 1 and one line on stderr; that line.
    fn err(&self, key: Option<&str>, args: &[&str]) -> String {
        let out = self.run(key, args);
        assert_eq!(out.status.code(), Some(1), "flagraft {args:?} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        stderr.trim_end().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_a_real_cluster() {
    let c = Cluster::start(ClusterOptions::default());
    for id in c.ids() {
        c.wait_ready(id, WAIT).await.unwrap();
    }
    // Every node listed; the CLI may land on a follower (writes are forwarded).
    let endpoints = c
        .ids()
        .iter()
        .map(|&id| format!("127.0.0.1:{}", c.ports(id).admin))
        .collect::<Vec<_>>()
        .join(",");
    let cli = Cli { endpoints };
    let files: Vec<String> = [
        "10-segment-internal.yaml",
        "20-gates.yaml",
        "30-config-checkout.yaml",
        "40-layer-experiment.yaml",
    ]
    .iter()
    .map(|f| examples().join(f).display().to_string())
    .collect();
    let mut commit_args = vec!["commit", "-m", "examples", "--request-id", "ex-1"];
    commit_args.extend(files.iter().map(String::as_str));

    let first = cli.json(&commit_args);
    assert_eq!(
        (first["version"].as_u64(), first["duplicate"].as_bool()),
        (Some(1), Some(false))
    );
    assert_eq!(first["upserts"].as_u64(), Some(6));
    // The same request id again: the first version, nothing new.
    let again = cli.json(&commit_args);
    assert_eq!(
        (again["version"].as_u64(), again["duplicate"].as_bool()),
        (Some(1), Some(true))
    );
    let human = cli.ok(&commit_args);
    assert!(
        human.starts_with("already committed as version 1"),
        "{human}"
    );

    // get: the DCS document holds every example entity; --entity one body.
    let got = cli.json(&["get"]);
    assert_eq!(got["version"].as_u64(), Some(1));
    assert_eq!(got["digest"], first["digest"]);
    let gates: Vec<&str> = got["dcs"]["feature_gates"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert_eq!(
        gates,
        ["holiday_banner", "new_checkout", "segment:internal_users"]
    );
    let v2 = cli.json(&["get", "--dialect", "v2"]);
    assert!(v2["dcs"]["feature_gates"].is_object());
    let body: Value =
        serde_json::from_str(&cli.ok(&["get", "--entity", "experiment/button_color_test"]))
            .unwrap();
    assert_eq!(body["__layer"], "checkout_layer");

    // Evaluate the fetched document with `flagraft eval`.
    let dir = tempfile::tempdir().unwrap();
    let dcs_path = dir.path().join("dcs.json");
    std::fs::write(&dcs_path, cli.ok(&["get"])).unwrap();
    let users = examples().join("users.json");
    let lines = cli.ok(&[
        "eval",
        "--specs",
        &dcs_path.display().to_string(),
        "--users",
        &users.display().to_string(),
        "--quiet",
    ]);
    let evals: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |user: u64, name: &str| {
        evals
            .iter()
            .find(|e| e["user"].as_u64() == Some(user) && e["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(find(0, "new_checkout")["rule_id"], "internal");
    assert_eq!(find(1, "checkout_settings")["value"]["currency"], "EUR");

    // A delete, history, diff and rollback.
    let del = cli.json(&[
        "commit",
        "--delete",
        "gate/holiday_banner",
        "-m",
        "drop banner",
    ]);
    assert_eq!(del["version"].as_u64(), Some(2));
    let h = cli.json(&["history"]);
    let messages: Vec<&str> = h["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["message"].as_str())
        .collect();
    assert_eq!(messages, ["examples", "drop banner"]);
    let table = cli.ok(&["history"]);
    assert!(
        table.contains("VERSION") && table.contains("drop banner"),
        "{table}"
    );
    let d = cli.json(&["diff", "1", "2"]);
    assert_eq!(d["changes"][0]["change"], "removed");
    assert_eq!(d["changes"][0]["name"], "holiday_banner");
    let rb = cli.json(&["rollback", "1"]);
    assert_eq!(rb["version"].as_u64(), Some(3));
    assert_eq!(
        rb["digest"], first["digest"],
        "version 3 has version 1's digest"
    );

    // Projects and keys.
    cli.ok(&["projects", "create", "web"]);
    let list = cli.ok(&["projects", "list"]);
    assert!(list.lines().any(|l| l.starts_with("web ")), "{list}");
    let key = cli.json(&["keys", "create", "--kind", "server", "--project", "web"]);
    let secret = key["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("frs_"));
    let admin = cli.json(&["keys", "create", "--kind", "admin", "--description", "ci"]);
    let admin_secret = admin["secret"].as_str().unwrap().to_string();
    // The new admin key works (on whichever node answers, once applied there).
    let mut works = false;
    for _ in 0..100 {
        if cli
            .run(Some(&admin_secret), &["projects", "list"])
            .status
            .success()
        {
            works = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(works, "a replicated admin key is accepted");
    let keys = cli.json(&["keys", "list", "--project", "web"]);
    let ids: Vec<&str> = keys
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2, "the web server key and the admin key: {keys}");
    cli.ok(&["keys", "revoke", key["id"].as_str().unwrap()]);
    let e = cli.err(Some(TEST_ADMIN_KEY), &["projects", "delete", "web"]);
    assert!(e.contains("add --yes"), "{e}");
    cli.ok(&["projects", "delete", "web", "--yes"]);

    // Cluster status: every member, with its applied index.
    let s = cli.json(&["cluster", "status"]);
    let members = s["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    assert!(members
        .iter()
        .all(|m| m["reachable"] == true && m["applied_index"].as_u64() > Some(0)));
    let table = cli.ok(&["cluster", "status"]);
    assert!(
        table.contains("leader") && table.contains("APPLIED"),
        "{table}"
    );

    // Errors: one clear line, exit 1.
    let e = cli.err(None, &["history"]);
    assert!(e.starts_with("error: not authorized:"), "{e}");
    let e = cli.err(Some("wrong-key-0123456789"), &["history"]);
    assert!(e.starts_with("error: not authorized:"), "{e}");
    let e = cli.err(
        Some(TEST_ADMIN_KEY),
        &[
            "commit",
            "--expect-version",
            "1",
            "--delete",
            "gate/new_checkout",
        ],
    );
    assert_eq!(
        e,
        "error: conflict: project 'default' is at version 3, expected 1"
    );
    let e = cli.err(Some(TEST_ADMIN_KEY), &["get", "--version", "99"]);
    assert_eq!(
        e,
        "error: not found: project 'default' has no version 99 (current: 3)"
    );
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"kind": "gate", "name": "x", "body": [1]}"#).unwrap();
    let e = cli.err(
        Some(TEST_ADMIN_KEY),
        &["commit", &bad.display().to_string()],
    );
    assert_eq!(
        e,
        "error: invalid request: invalid ruleset: gate 'x': the body must be a JSON object, found an array"
    );
    let e = cli.err(Some(TEST_ADMIN_KEY), &["--project", "nope", "get"]);
    assert_eq!(e, "error: not found: no project 'nope'");
    let down = Cli {
        endpoints: "127.0.0.1:1".into(),
    };
    let e = down.err(Some(TEST_ADMIN_KEY), &["--timeout", "2", "history"]);
    assert!(e.starts_with("error: cluster unavailable:"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_adds_promotes_and_removes_a_node() {
    let c = Cluster::configure(ClusterOptions {
        nodes: 4,
        voters: Some(3),
        ..ClusterOptions::default()
    });
    for id in c.ids() {
        c.spawn(id);
    }
    let voters = [1, 2, 3];
    c.wait_for_leader(&voters, WAIT).await.unwrap();
    let endpoints = voters
        .iter()
        .map(|&id| format!("127.0.0.1:{}", c.ports(id).admin))
        .collect::<Vec<_>>()
        .join(",");
    let cli = Cli { endpoints };
    let p4 = c.ports(4);
    let (raft, admin, http) = (
        format!("127.0.0.1:{}", p4.raft),
        format!("127.0.0.1:{}", p4.admin),
        format!("127.0.0.1:{}", p4.http),
    );
    let added = cli.json(&[
        "cluster",
        "add-learner",
        "--node-id",
        "4",
        "--raft-addr",
        &raft,
        "--admin-addr",
        &admin,
        "--http-addr",
        &http,
    ]);
    assert_eq!(added["learners"], serde_json::json!([4]));
    let promoted = cli.json(&["cluster", "promote", "4"]);
    assert_eq!(promoted["voters"], serde_json::json!([1, 2, 3, 4]));
    let status = cli.ok(&["cluster", "status"]);
    assert_eq!(
        status.lines().filter(|l| l.contains(" voter ")).count(),
        4,
        "{status}"
    );
    let removed = cli.json(&["cluster", "remove", "4"]);
    assert_eq!(removed["voters"], serde_json::json!([1, 2, 3]));
    let e = cli.err(Some(TEST_ADMIN_KEY), &["cluster", "promote", "9"]);
    assert!(e.contains("node 9 is not a member"), "{e}");
    let e = cli.err(Some(TEST_ADMIN_KEY), &["cluster", "remove", "9"]);
    assert_eq!(e, "error: not found: node 9 is not a member");
}
