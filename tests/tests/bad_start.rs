//! A node that cannot start stops at once with one line naming the problem,
//! and never wipes a data dir it cannot use.

use flagraft_cluster_tests::{run_node_once, Cluster, ClusterOptions};
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

/// Runs the node with `config` and returns its single stderr line.
fn refused(config: &Path) -> String {
    let (status, stderr) = run_node_once(config, T).expect("node should exit by itself");
    assert!(!status.success(), "exit status {status:?}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    lines[0].to_string()
}

fn one_node() -> Cluster {
    Cluster::configure(ClusterOptions {
        nodes: 1,
        ..ClusterOptions::default()
    })
}

#[test]
fn unknown_key_missing_field_and_bad_values_are_refused() {
    let c = one_node();
    let path = c.config_path(1);
    let good = c.config_text(1, "test");

    std::fs::write(&path, good.replace("[raft]\n", "[raft]\nheartbeat = 5\n")).unwrap();
    let line = refused(&path);
    assert!(
        line.contains("unknown field `heartbeat`") && line.contains("node1.toml"),
        "{line}"
    );

    std::fs::write(&path, good.replace("cluster = \"test\"\n", "")).unwrap();
    let line = refused(&path);
    assert!(line.contains("missing field `cluster`"), "{line}");

    std::fs::write(
        &path,
        good.replace("node_id = 1\ncluster", "node_id = 7\ncluster"),
    )
    .unwrap();
    let line = refused(&path);
    assert!(line.contains("peers does not list this node"), "{line}");

    let line = refused(&c.dir().join("absent.toml"));
    assert!(line.contains("absent.toml"), "{line}");
}

#[test]
fn port_in_use_is_refused() {
    let c = one_node();
    let taken = std::net::TcpListener::bind(("127.0.0.1", c.ports(1).admin)).unwrap();
    let line = refused(&c.config_path(1));
    assert!(
        line.contains("admin_addr") && line.contains("in use"),
        "{line}"
    );
    drop(taken);
}

/// Starts node 1 once so its data dir exists, then stops it.
fn initialised_data_dir(c: &Cluster) {
    c.spawn(1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(c.wait_for_leader(&[1], T)).unwrap();
    let status = c.sigterm(1, T);
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

#[test]
fn data_dir_of_another_cluster_or_node_is_refused() {
    let c = one_node();
    initialised_data_dir(&c);
    let path = c.config_path(1);
    let good = c.config_text(1, "test");

    std::fs::write(
        &path,
        good.replace("cluster = \"test\"", "cluster = \"other\""),
    )
    .unwrap();
    let line = refused(&path);
    assert!(
        line.contains("belongs to") && line.contains("data1"),
        "{line}"
    );

    // Same dir, other node id (listed in peers so the config itself is valid).
    let other = good
        .replacen("node_id = 1\n", "node_id = 2\n", 1)
        .replace("\n[[peers]]\nnode_id = 1\n", "\n[[peers]]\nnode_id = 2\n");
    std::fs::write(&path, other).unwrap();
    let line = refused(&path);
    assert!(
        line.contains("belongs to") && line.contains("data1"),
        "{line}"
    );
}

#[test]
fn data_dir_sled_cannot_reopen_is_named_and_kept() {
    let c = one_node();
    initialised_data_dir(&c);
    let sled_dir = c.data_dir(1).join("sled");
    let conf = sled_dir.join("conf");
    assert!(
        conf.is_file(),
        "sled layout changed: {:?}",
        std::fs::read_dir(&sled_dir)
    );
    std::fs::write(&conf, b"\xde\xad\xbe\xef not a sled config").unwrap();
    let before: Vec<_> = std::fs::read_dir(&sled_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();

    let line = refused(&c.config_path(1));
    assert!(
        line.contains(&c.data_dir(1).display().to_string()),
        "{line}"
    );

    // Nothing was wiped: the same files are still there, the corrupt one untouched.
    for p in &before {
        assert!(p.exists(), "{} was removed", p.display());
    }
    assert_eq!(
        std::fs::read(&conf).unwrap(),
        b"\xde\xad\xbe\xef not a sled config"
    );
}
