//! API keys: create, revoke, project delete, persistence and snapshots.

use super::harness::*;
use crate::{
    ApiKeyKind, AppliedChange, Command, CommandOutcome, CreateKeyCommand, StoreConfig,
    MAX_KEY_ID_BYTES,
};
use openraft::storage::RaftStateMachine;
use openraft::RaftSnapshotBuilder;

fn create(id: &str, project: &str, kind: ApiKeyKind) -> Command {
    Command::CreateKey(CreateKeyCommand {
        id: id.to_string(),
        project: project.to_string(),
        kind,
        sha256: [id.len() as u8; 32],
        description: format!("key {id}"),
        time_ms: 10,
    })
}

#[tokio::test]
async fn keys_are_created_listed_and_revoked_once() {
    let mut h = Harness::new().await;
    let mut changes = h.sm.subscribe();
    let out = h.run(create("k1", "default", ApiKeyKind::Server)).await;
    assert_eq!(out, CommandOutcome::KeyCreated { id: "k1".into() });
    assert_eq!(*changes.recv().await.unwrap(), AppliedChange::KeysChanged);
    let key = h.sm.api_key("k1").unwrap();
    assert_eq!(key.project, "default");
    assert_eq!(key.kind, ApiKeyKind::Server);
    assert_eq!(key.sha256, [2; 32]);
    assert_eq!(key.created_ms, 10);
    assert_eq!(key.revoked_ms, None);

    let out = h
        .run(Command::RevokeKey {
            id: "k1".into(),
            time_ms: 20,
        })
        .await;
    assert_eq!(
        out,
        CommandOutcome::KeyRevoked {
            id: "k1".into(),
            revoked_ms: 20
        }
    );
    // Revoking again answers the first revocation and changes nothing.
    let out = h
        .run(Command::RevokeKey {
            id: "k1".into(),
            time_ms: 30,
        })
        .await;
    assert_eq!(
        out,
        CommandOutcome::KeyRevoked {
            id: "k1".into(),
            revoked_ms: 20
        }
    );
    assert_eq!(h.sm.api_key("k1").unwrap().revoked_ms, Some(20));
    let out = h
        .run(Command::RevokeKey {
            id: "nope".into(),
            time_ms: 30,
        })
        .await;
    assert_eq!(out, CommandOutcome::UnknownKey { id: "nope".into() });
    assert_eq!(h.sm.api_keys().len(), 1);
}

#[tokio::test]
async fn bad_key_commands_are_refused_deterministically() {
    let mut h = Harness::new().await;
    h.run(create("k1", "default", ApiKeyKind::Client)).await;
    let cases = [
        (create("k1", "default", ApiKeyKind::Client), "already taken"),
        (create("", "default", ApiKeyKind::Client), "key id"),
        (
            create(
                &"x".repeat(MAX_KEY_ID_BYTES + 1),
                "default",
                ApiKeyKind::Client,
            ),
            "key id",
        ),
        (create("a1", "default", ApiKeyKind::Admin), "cluster-wide"),
    ];
    for (cmd, want) in cases {
        match h.run(cmd).await {
            CommandOutcome::Rejected { reason } => assert!(reason.contains(want), "{reason}"),
            other => panic!("expected a rejection naming {want}, got {other:?}"),
        }
    }
    assert_eq!(
        h.run(create("k2", "missing", ApiKeyKind::Server)).await,
        CommandOutcome::UnknownProject {
            project: "missing".into()
        }
    );
    assert_eq!(
        h.run(create("a2", "", ApiKeyKind::Admin)).await,
        CommandOutcome::KeyCreated { id: "a2".into() }
    );
    assert_eq!(h.sm.api_keys().len(), 2);
}

#[tokio::test]
async fn deleting_a_project_revokes_its_keys_only() {
    let mut h = Harness::new().await;
    h.run(Command::CreateProject {
        name: "p".into(),
        time_ms: 1,
    })
    .await;
    h.run(create("p-srv", "p", ApiKeyKind::Server)).await;
    h.run(create("p-cli", "p", ApiKeyKind::Client)).await;
    h.run(create("d-srv", "default", ApiKeyKind::Server)).await;
    let out = h
        .run(Command::DeleteProject {
            name: "p".into(),
            time_ms: 99,
        })
        .await;
    assert_eq!(
        out,
        CommandOutcome::ProjectDeleted {
            project: "p".into()
        }
    );
    assert_eq!(h.sm.api_key("p-srv").unwrap().revoked_ms, Some(99));
    assert_eq!(h.sm.api_key("p-cli").unwrap().revoked_ms, Some(99));
    assert_eq!(h.sm.api_key("d-srv").unwrap().revoked_ms, None);
    // A project re-created with the same name does not bring its old keys back.
    h.run(Command::CreateProject {
        name: "p".into(),
        time_ms: 100,
    })
    .await;
    assert_eq!(h.sm.api_key("p-srv").unwrap().revoked_ms, Some(99));
}

#[tokio::test]
async fn keys_survive_a_reopen_and_travel_in_snapshots() {
    let mut h = Harness::new().await;
    h.run(create("k1", "default", ApiKeyKind::Server)).await;
    h.run(create("a1", "", ApiKeyKind::Admin)).await;
    h.run(Command::RevokeKey {
        id: "k1".into(),
        time_ms: 5,
    })
    .await;
    let before = h.sm.api_keys();

    let snap = {
        let mut builder = h.sm.get_snapshot_builder().await;
        builder.build_snapshot().await.unwrap()
    };
    let mut other = Harness::new().await;
    let mut buf = other.sm.begin_receiving_snapshot().await.unwrap();
    *buf = *snap.snapshot;
    other.sm.install_snapshot(&snap.meta, buf).await.unwrap();
    assert_eq!(other.sm.api_keys(), before);

    h.sm.flush().await.unwrap();
    let h = h.reopen(StoreConfig::default()).await;
    assert_eq!(h.sm.api_keys(), before);
    let other = other.reopen(StoreConfig::default()).await;
    assert_eq!(other.sm.api_keys(), before);
}

#[tokio::test]
async fn remembered_requests_answer_their_first_commit() {
    let mut h = Harness::new().await;
    let mut c = commit("default", vec![gate("g", serde_json::json!({}))], vec![]);
    c.request_id = Some("r1".into());
    let out = h.run(Command::Commit(c)).await;
    let CommandOutcome::Committed {
        version, digest, ..
    } = out
    else {
        panic!("{out:?}")
    };
    let (v, d, _) = h.sm.remembered_request("default", "r1").unwrap();
    assert_eq!((v, d), (version, digest));
    assert!(h.sm.remembered_request("default", "r2").is_none());
    assert!(h.sm.remembered_request("nope", "r1").is_none());
}
