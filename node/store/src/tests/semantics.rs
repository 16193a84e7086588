//! Versions, conflicts, idempotency, validation, commit time, projects, publication.

use super::harness::*;
use crate::{AppliedChange, Command, CommandOutcome, StoreConfig, DEFAULT_PROJECT};
use flagraft_client::digest::RulesetDigest;
use flagraft_client::entity::{EntityKey, EntityKind};
use serde_json::json;

#[tokio::test]
async fn fresh_store_has_an_empty_default_project_at_version_zero() {
    let h = Harness::new().await;
    let heads = h.sm.projects();
    assert_eq!(heads.len(), 1);
    assert_eq!(heads[0].name, DEFAULT_PROJECT);
    assert_eq!(heads[0].version, 0);
    assert_eq!(heads[0].digest, RulesetDigest::EMPTY);
    assert_eq!(heads[0].entity_count, 0);
    assert_eq!(h.sm.last_applied(), None);
    assert_eq!(h.sm.oldest_retained(DEFAULT_PROJECT), Some(1));
    assert!(h.sm.history(DEFAULT_PROJECT, 0, 10).unwrap().is_empty());
}

#[tokio::test]
async fn every_commit_advances_the_version_by_one_even_when_empty() {
    let mut h = Harness::new().await;
    let a = h
        .run(Command::Commit(commit(
            "default",
            vec![gate("a", json!({"on": true}))],
            vec![],
        )))
        .await;
    assert_eq!(committed_version(&a), 1);
    let b = h
        .run(Command::Commit(commit("default", vec![], vec![])))
        .await;
    assert_eq!(committed_version(&b), 2);
    // A no-op version keeps the digest.
    let (
        CommandOutcome::Committed { digest: da, .. },
        CommandOutcome::Committed { digest: db, .. },
    ) = (&a, &b)
    else {
        unreachable!()
    };
    assert_eq!(da, db);
    let head = h.sm.head("default").unwrap();
    assert_eq!(head.version, 2);
    assert_eq!(head.entity_count, 1);
    let records = h.sm.history("default", 1, 10).unwrap();
    assert_eq!(
        records.iter().map(|r| r.version).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(records[0].upserts, vec![gate("a", json!({"on": true}))]);
    assert_eq!(records[0].author, "alice");
    assert_eq!(records[1].digest, head.digest);
    assert_eq!(h.sm.last_applied().map(|l| l.index), Some(2));
}

#[tokio::test]
async fn expected_version_mismatch_is_a_conflict_and_changes_nothing() {
    let mut h = Harness::new().await;
    h.run(Command::Commit(commit(
        "default",
        vec![gate("a", json!(1))],
        vec![],
    )))
    .await;
    let before = h.sm.head("default").unwrap();
    let mut c = commit("default", vec![gate("b", json!(2))], vec![]);
    c.expected_version = Some(0);
    let out = h.run(Command::Commit(c)).await;
    assert_eq!(
        out,
        CommandOutcome::Conflict {
            project: "default".into(),
            current_version: 1
        }
    );
    assert_eq!(h.sm.head("default").unwrap(), before);
    let mut c = commit("default", vec![gate("b", json!(2))], vec![]);
    c.expected_version = Some(1);
    assert_eq!(committed_version(&h.run(Command::Commit(c)).await), 2);
}

#[tokio::test]
async fn a_repeated_request_id_answers_the_first_commit_and_commits_nothing() {
    let mut h = Harness::new().await;
    let mut c = commit("default", vec![gate("a", json!(1))], vec![]);
    c.request_id = Some("req-1".into());
    c.expected_version = Some(0);
    let first = h.run(Command::Commit(c.clone())).await;
    h.run(Command::Commit(commit(
        "default",
        vec![gate("b", json!(2))],
        vec![],
    )))
    .await;
    let head = h.sm.head("default").unwrap();
    // The retry carries the same expected version: it must not be reported as a conflict.
    let again = h.run(Command::Commit(c)).await;
    let CommandOutcome::Committed {
        version,
        digest,
        commit_time_ms,
        duplicate,
        ..
    } = again
    else {
        panic!("expected a duplicate Committed, got {again:?}");
    };
    let CommandOutcome::Committed {
        version: v1,
        digest: d1,
        commit_time_ms: t1,
        duplicate: dup1,
        ..
    } = first
    else {
        unreachable!()
    };
    assert!(!dup1);
    assert!(duplicate);
    assert_eq!((version, digest, commit_time_ms), (v1, d1, t1));
    assert_eq!(h.sm.head("default").unwrap(), head, "nothing committed");

    // Ids are per project.
    h.run(Command::CreateProject {
        name: "other".into(),
        time_ms: 0,
    })
    .await;
    let mut c = commit("other", vec![], vec![]);
    c.request_id = Some("req-1".into());
    let out = h.run(Command::Commit(c)).await;
    assert!(matches!(
        out,
        CommandOutcome::Committed {
            version: 1,
            duplicate: false,
            ..
        }
    ));
}

/// Request ids are remembered for `REQUEST_ID_WINDOW` versions, across a reopen, whether the
/// history keeps their records (the default limit: the record holds the id) or compacts them
/// first (the id's entry is then stored on its own, and removed when it leaves the window).
async fn request_ids_are_forgotten_after_the_window(history_limit: u64) {
    let config = || StoreConfig {
        history_limit,
        ..StoreConfig::default()
    };
    let mut h = Harness::with_config(config()).await;
    let mut c = commit("default", vec![], vec![]);
    c.request_id = Some("old".into());
    h.run(Command::Commit(c.clone())).await;
    // Version 1 holds "old"; it stays remembered through version REQUEST_ID_WINDOW. Every
    // 1000th filler carries an id too.
    let fillers = crate::REQUEST_ID_WINDOW - 1;
    let filler = |v: u64| {
        let mut f = commit("default", vec![], vec![]);
        f.request_id = v.is_multiple_of(1000).then(|| format!("f{v}"));
        Command::Commit(f)
    };
    for start in (2..2 + fillers).step_by(1000) {
        let end = (start + 1000).min(2 + fillers);
        h.apply((start..end).map(filler).collect()).await;
    }
    let window = crate::REQUEST_ID_WINDOW;
    assert_eq!(h.sm.head("default").unwrap().version, window);
    h.sm.flush().await.unwrap();
    let mut h = h.reopen(config()).await;
    let dup = h.run(Command::Commit(c.clone())).await;
    assert!(matches!(
        dup,
        CommandOutcome::Committed {
            version: 1,
            duplicate: true,
            ..
        }
    ));
    let f = h.sm.remembered_request("default", "f5000");
    assert_eq!(f.map(|(v, _, _)| v), Some(5000));
    h.run(Command::Commit(commit("default", vec![], vec![])))
        .await;
    // Now at REQUEST_ID_WINDOW + 1: version 1 left the window.
    let fresh = h.run(Command::Commit(c)).await;
    assert!(
        matches!(
            fresh,
            CommandOutcome::Committed {
                duplicate: false,
                ..
            }
        ),
        "{fresh:?}"
    );
    // Stored on their own: exactly the remembered ids whose record is gone.
    let version = h.sm.head("default").unwrap().version;
    let oldest = h.sm.oldest_retained("default").unwrap();
    let expected = (version.saturating_sub(window) + 1..oldest)
        .filter(|v| v.is_multiple_of(1000))
        .count();
    let stored =
        h.sm.tree_for_tests()
            .scan_prefix(crate::keys::scoped(crate::keys::REQUEST, 0))
            .count();
    assert_eq!(stored, expected);
    if history_limit < window {
        assert!(expected > 0, "the test must cover stored entries");
    }
}

#[tokio::test]
async fn request_ids_are_forgotten_after_the_window_with_a_short_history() {
    request_ids_are_forgotten_after_the_window(10).await;
}

#[tokio::test]
async fn request_ids_are_forgotten_after_the_window_with_the_default_history() {
    request_ids_are_forgotten_after_the_window(StoreConfig::default().history_limit).await;
}

#[tokio::test]
async fn invalid_deltas_are_rejected_deterministically() {
    let mut h = Harness::new().await;
    let missing = EntityKey::new(EntityKind::Config, "nope");
    let out = h
        .run(Command::Commit(commit("default", vec![], vec![missing])))
        .await;
    assert!(matches!(out, CommandOutcome::Rejected { .. }), "{out:?}");
    let out = h
        .run(Command::Commit(commit(
            "default",
            vec![gate("a", json!(1)), gate("a", json!(2))],
            vec![],
        )))
        .await;
    assert!(matches!(out, CommandOutcome::Rejected { .. }), "{out:?}");
    let out = h
        .run(Command::Commit(commit(
            "default",
            vec![gate("a", json!(1))],
            vec![EntityKey::new(EntityKind::Gate, "a")],
        )))
        .await;
    assert!(matches!(out, CommandOutcome::Rejected { .. }), "{out:?}");
    assert_eq!(h.sm.head("default").unwrap().version, 0);
}

#[tokio::test]
async fn commit_time_never_goes_backwards() {
    let mut h = Harness::new().await;
    let mut times = Vec::new();
    for proposed in [100, 50, 200, 199] {
        let mut c = commit("default", vec![], vec![]);
        c.proposed_time_ms = proposed;
        match h.run(Command::Commit(c)).await {
            CommandOutcome::Committed { commit_time_ms, .. } => times.push(commit_time_ms),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(times, [100, 100, 200, 200]);
    assert_eq!(
        h.sm.version_record("default", 2)
            .unwrap()
            .unwrap()
            .commit_time_ms,
        100
    );
}

#[tokio::test]
async fn projects_are_created_deleted_and_recreated_empty() {
    let mut h = Harness::new().await;
    let create = || Command::CreateProject {
        name: "web".into(),
        time_ms: 500,
    };
    assert_eq!(
        h.run(create()).await,
        CommandOutcome::ProjectCreated {
            project: "web".into()
        }
    );
    assert_eq!(
        h.run(create()).await,
        CommandOutcome::ProjectExists {
            project: "web".into()
        }
    );
    let mut c = commit("web", vec![gate("g", json!({"x": 1}))], vec![]);
    c.request_id = Some("r".into());
    c.proposed_time_ms = 10;
    let out = h.run(Command::Commit(c.clone())).await;
    // The creation time is the first "previous" commit time.
    assert!(matches!(
        out,
        CommandOutcome::Committed {
            version: 1,
            commit_time_ms: 500,
            ..
        }
    ));
    assert_eq!(
        h.run(Command::Commit(commit("nope", vec![], vec![]))).await,
        CommandOutcome::UnknownProject {
            project: "nope".into()
        }
    );
    let delete = Command::DeleteProject {
        name: "web".into(),
        time_ms: 0,
    };
    assert_eq!(
        h.run(delete.clone()).await,
        CommandOutcome::ProjectDeleted {
            project: "web".into()
        }
    );
    assert!(h.sm.head("web").is_none());
    assert_eq!(
        h.run(delete).await,
        CommandOutcome::UnknownProject {
            project: "web".into()
        }
    );
    h.run(create()).await;
    let head = h.sm.head("web").unwrap();
    assert_eq!((head.version, head.entity_count), (0, 0));
    assert!(h.sm.history("web", 0, 10).unwrap().is_empty());
    // The old request id died with the old project.
    let out = h.run(Command::Commit(c)).await;
    assert!(matches!(
        out,
        CommandOutcome::Committed {
            version: 1,
            duplicate: false,
            ..
        }
    ));
    assert!(matches!(
        h.run(Command::DeleteProject {
            name: DEFAULT_PROJECT.into(),
            time_ms: 0
        })
        .await,
        CommandOutcome::Rejected { .. }
    ));
    assert!(matches!(
        h.run(Command::CreateProject {
            name: String::new(),
            time_ms: 0
        })
        .await,
        CommandOutcome::Rejected { .. }
    ));
}

#[tokio::test]
async fn applied_changes_are_published_in_order_and_the_watch_moves() {
    let mut h = Harness::new().await;
    let mut rx = h.sm.subscribe();
    let mut watch = h.sm.applied_watch();
    h.apply(vec![
        Command::CreateProject {
            name: "p".into(),
            time_ms: 0,
        },
        Command::Commit(commit("p", vec![gate("a", json!(1))], vec![])),
        Command::Commit(commit(
            "p",
            vec![],
            vec![EntityKey::new(EntityKind::Config, "x")],
        )),
        Command::DeleteProject {
            name: "p".into(),
            time_ms: 0,
        },
    ])
    .await;
    assert_eq!(*watch.borrow_and_update(), 4);
    assert!(
        matches!(&*rx.try_recv().unwrap(), AppliedChange::ProjectCreated { project } if project == "p")
    );
    match &*rx.try_recv().unwrap() {
        AppliedChange::Version { project, record } => {
            assert_eq!(project, "p");
            assert_eq!(record.version, 1);
        }
        other => panic!("{other:?}"),
    }
    // The rejected commit published nothing.
    assert!(matches!(
        &*rx.try_recv().unwrap(),
        AppliedChange::ProjectDeleted { .. }
    ));
    assert!(rx.try_recv().is_err());
}

/// Record stubs are written once per group, at the end of the apply call (`state::apply`): a
/// project deleted later in the same call must leave none of them behind, also when it is
/// created again in that call.
#[tokio::test]
async fn a_project_created_committed_to_and_deleted_in_one_call_leaves_no_keys() {
    let mut h = Harness::new().await;
    let baseline = h.sm.stored_key_count();
    let mut commands = vec![Command::CreateProject {
        name: "p".into(),
        time_ms: 0,
    }];
    commands.extend(
        (0..40)
            .map(|i| Command::Commit(commit("p", vec![gate(&format!("g{i}"), json!(i))], vec![]))),
    );
    commands.push(Command::DeleteProject {
        name: "p".into(),
        time_ms: 0,
    });
    let outcomes = h.apply(commands).await;
    assert_eq!(
        outcomes.last(),
        Some(&CommandOutcome::ProjectDeleted {
            project: "p".into()
        })
    );
    assert!(h.sm.head("p").is_none());
    assert_eq!(h.sm.stored_key_count(), baseline);

    // The same again, then the project created anew in that call: the new incarnation starts
    // empty, with none of the old one's records.
    let mut commands = vec![Command::CreateProject {
        name: "p".into(),
        time_ms: 0,
    }];
    commands.extend(
        (0..5)
            .map(|i| Command::Commit(commit("p", vec![gate(&format!("g{i}"), json!(i))], vec![]))),
    );
    commands.push(Command::DeleteProject {
        name: "p".into(),
        time_ms: 0,
    });
    commands.push(Command::CreateProject {
        name: "p".into(),
        time_ms: 0,
    });
    h.apply(commands).await;
    assert_eq!(h.sm.head("p").map(|head| head.version), Some(0));
    assert!(h.sm.history("p", 0, 10).unwrap().is_empty());
    assert_eq!(
        h.sm.stored_key_count(),
        baseline + 1,
        "only the new project's head"
    );
}

#[tokio::test]
async fn readers_keep_their_copy_while_applies_go_on() {
    let mut h = Harness::new().await;
    h.run(Command::Commit(commit(
        "default",
        vec![gate("a", json!(1))],
        vec![],
    )))
    .await;
    let before = h.sm.ruleset("default").unwrap();
    h.run(Command::Commit(commit(
        "default",
        vec![gate("a", json!(2)), gate("b", json!(3))],
        vec![],
    )))
    .await;
    assert_eq!(before.head.version, 1);
    assert_eq!(before.entities.len(), 1);
    assert_eq!(
        before
            .entities
            .get(&EntityKey::new(EntityKind::Gate, "a"))
            .unwrap()
            .to_value()
            .unwrap(),
        json!(1)
    );
    let after = h.sm.ruleset("default").unwrap();
    assert_eq!(after.entities.len(), 2);
    assert_eq!(after.head.digest, full_digest(&h.sm, "default"));
}

#[tokio::test]
async fn a_commit_batch_applies_like_the_same_commits_one_by_one() {
    // The same five commits, once as a batch in one entry and once as five entries.
    let commits = || {
        let mut stale = commit("default", vec![gate("c", json!(3))], vec![]);
        stale.expected_version = Some(0); // conflicts: the first commit made it version 1
        let mut first = commit("default", vec![gate("a", json!(1))], vec![]);
        first.request_id = Some("req-1".into());
        let mut retry = commit("default", vec![gate("a", json!(1))], vec![]);
        retry.request_id = Some("req-1".into()); // a retry inside the same batch
        let delete_missing = commit("default", vec![], vec![gate("zz", json!(0)).key]);
        vec![
            first,
            stale,
            retry,
            delete_missing,
            commit("default", vec![gate("b", json!(2))], vec![]),
        ]
    };
    let mut batched = Harness::new().await;
    let out = batched.run(Command::CommitBatch(commits())).await;
    let CommandOutcome::Batch(outcomes) = out else {
        panic!("a batch answers with a batch outcome, got {out:?}")
    };
    let mut single = Harness::new().await;
    let expected = single
        .apply(commits().into_iter().map(Command::Commit).collect())
        .await;
    assert_eq!(outcomes, expected);
    assert_eq!(committed_version(&outcomes[0]), 1);
    assert!(matches!(
        outcomes[1],
        CommandOutcome::Conflict {
            current_version: 1,
            ..
        }
    ));
    assert!(matches!(
        outcomes[2],
        CommandOutcome::Committed {
            version: 1,
            duplicate: true,
            ..
        }
    ));
    assert!(matches!(outcomes[3], CommandOutcome::Rejected { .. }));
    assert_eq!(committed_version(&outcomes[4]), 2);
    // Same state, same history, one version per successful commit.
    assert_eq!(batched.sm.head("default"), single.sm.head("default"));
    assert_eq!(
        batched.sm.history("default", 1, 10).unwrap(),
        single.sm.history("default", 1, 10).unwrap()
    );
    assert_eq!(
        full_digest(&batched.sm, "default"),
        batched.sm.head("default").unwrap().digest
    );
}
