//! Commit and rollback on the leader: idempotency, validation against the
//! resulting ruleset, pinning to the validated version, bounded retries.

use super::{conflict, now_ms, outcome_error, AdminService};
use crate::history;
use crate::limits::{MAX_CHANGES_PER_COMMIT, MAX_COMMIT_BYTES, MAX_NAME_BYTES, MAX_TEXT_BYTES};
use crate::ruleset_check::{self, Checked};
use crate::validate::{self, project_name, Invalid};
use flagraft_client::entity::Entity;
use flagraft_proto::admin::v1 as pb;
use flagraft_store::{CommandOutcome, CommitCommand, ProjectHead, Upsert};
use std::sync::atomic::Ordering;
use std::time::Instant;
use tonic::Status;

/// Validate-and-propose rounds before a pinned commit gives up (each lost
/// round means another commit changed the project in between).
const MAX_ROUNDS: usize = 5;

/// Commits up to this size are checked on the calling task, larger ones on a
/// blocking thread.
const INLINE_CHECK_CHANGES: usize = 8;
const INLINE_CHECK_BYTES: usize = 64 * 1024;

fn invalid(e: Invalid) -> Status {
    Status::invalid_argument(e.0)
}

fn join_error(e: tokio::task::JoinError) -> Status {
    Status::internal(format!("validation task failed: {e}"))
}

fn too_busy(project: &str) -> Status {
    Status::aborted(format!(
        "project '{project}' changed {MAX_ROUNDS} times while this commit was being validated; retry"
    ))
}

impl AdminService {
    /// Waits until this node is confirmed leader and has applied everything
    /// committed so far: local state read after this is not from the past.
    async fn confirm_leadership(&self) -> Result<(), Status> {
        self.node.linearizable_barrier().await
    }

    /// The answer for a retried request id, if this node remembers it.
    fn remembered(&self, project: &str, request_id: Option<&str>) -> Option<pb::CommitResponse> {
        let (version, digest, commit_time_ms) =
            self.node.sm.remembered_request(project, request_id?)?;
        Some(pb::CommitResponse {
            version,
            digest: digest.to_hex(),
            commit_time_ms,
            duplicate: true,
        })
    }

    /// The current head of `project` and the check of `cmd` against it, on a
    /// blocking thread (it compiles entities). `parsed`: the upserted bodies
    /// as JSON trees, if the caller has them (else they are parsed here).
    async fn check(
        &self,
        cmd: CommitCommand,
        parsed: Option<Vec<Entity>>,
        bytes: usize,
    ) -> Result<(CommitCommand, ProjectHead, Checked), Status> {
        let cmd_is_small = cmd.upserts.len() + cmd.deletes.len() <= INLINE_CHECK_CHANGES
            && bytes <= INLINE_CHECK_BYTES;
        let mut rs = self
            .node
            .sm
            .ruleset(&cmd.project)
            .ok_or_else(|| Status::not_found(format!("no project '{}'", cmd.project)))?;
        if let Some(expected) = cmd.expected_version {
            if expected != rs.head.version {
                // Local state may be stale (a deposed or cut-off leader): only
                // answer "conflict" from state read after leadership is
                // confirmed, or the answer names a version from the past.
                self.confirm_leadership().await?;
                rs =
                    self.node.sm.ruleset(&cmd.project).ok_or_else(|| {
                        Status::not_found(format!("no project '{}'", cmd.project))
                    })?;
                if expected != rs.head.version {
                    return Err(conflict(&cmd.project, rs.head.version, Some(expected)));
                }
            }
        }
        let run = move || {
            let parsed = match parsed {
                Some(p) => p,
                None => cmd
                    .upserts
                    .iter()
                    .map(|u| u.to_entity())
                    .collect::<Result<_, _>>()
                    .map_err(|e| Invalid(format!("a body is unreadable: {e}")))?,
            };
            let checked = ruleset_check::check_commit(&rs.entities, parsed, &cmd.deletes);
            checked.map(|c| (cmd, rs.head, c))
        };
        // A small commit checks in tens of microseconds: cheaper inline than
        // the two thread hand-offs of a blocking task.
        if cmd_is_small {
            return run().map_err(invalid);
        }
        tokio::task::spawn_blocking(run)
            .await
            .map_err(join_error)?
            .map_err(invalid)
    }

    /// Proposes a validated commit (bodies about `bytes` long) through the
    /// group commit: the response, or the outcome that refused it.
    async fn propose_commit(
        &self,
        mut cmd: CommitCommand,
        bytes: usize,
    ) -> Result<Result<pb::CommitResponse, CommandOutcome>, Status> {
        cmd.proposed_time_ms = now_ms();
        let started = Instant::now();
        let outcome = self.batcher.propose(cmd, bytes).await?;
        let m = &self.node.metrics;
        match outcome {
            CommandOutcome::Committed {
                version,
                digest,
                commit_time_ms,
                duplicate,
                ..
            } => {
                m.commit_latency.observe(started.elapsed());
                m.commits_ok.fetch_add(1, Ordering::Relaxed);
                Ok(Ok(pb::CommitResponse {
                    version,
                    digest: digest.to_hex(),
                    commit_time_ms,
                    duplicate,
                }))
            }
            other => {
                m.commits_refused.fetch_add(1, Ordering::Relaxed);
                Ok(Err(other))
            }
        }
    }

    /// Commit on the leader (see `ruleset_check` for validation and pinning).
    pub(super) async fn commit_local(
        &self,
        req: pb::CommitRequest,
    ) -> Result<pb::CommitResponse, Status> {
        let bytes = req.upserts.iter().map(|e| e.json.len()).sum();
        let validate::ValidCommit { cmd, parsed } =
            validate::commit_command(req).map_err(invalid)?;
        if let Some(r) = self.remembered(&cmd.project, cmd.request_id.as_deref()) {
            return Ok(r);
        }
        let caller_expected = cmd.expected_version;
        let project = cmd.project.clone();
        let mut next = Some(cmd);
        // The first round checks the trees parsed from the request; a retry
        // parses the canonical bodies again.
        let mut parsed = Some(parsed);
        let mut round = 0;
        while let Some(cmd) = next.take() {
            round += 1;
            let (mut checked_cmd, head, checked) = self.check(cmd, parsed.take(), bytes).await?;
            let pin_here = caller_expected.is_none() && checked.needs_pin;
            if pin_here {
                checked_cmd.expected_version = Some(head.version);
            }
            // Only a commit pinned here is retried, so only it needs a copy.
            let retry = (pin_here && round < MAX_ROUNDS).then(|| {
                let mut c = checked_cmd.clone();
                c.expected_version = None;
                c
            });
            let expected = checked_cmd.expected_version;
            match self.propose_commit(checked_cmd, bytes).await? {
                Ok(resp) => return Ok(resp),
                // The conflict is with the version pinned here, not the caller's.
                Err(CommandOutcome::Conflict { .. }) if pin_here => {
                    next = retry;
                }
                Err(other) => return Err(outcome_error(other, expected)),
            }
        }
        Err(too_busy(&project))
    }

    /// Rollback on the leader: a new commit from the current ruleset to the
    /// one of `to_version`, pinned to the version it was computed from.
    pub(super) async fn rollback_local(
        &self,
        req: pb::RollbackRequest,
    ) -> Result<pb::CommitResponse, Status> {
        project_name(&req.project).map_err(invalid)?;
        for (what, text) in [("author", &req.author), ("message", &req.message)] {
            if text.len() > MAX_TEXT_BYTES {
                return Err(Status::invalid_argument(format!(
                    "{what} exceeds {MAX_TEXT_BYTES} bytes"
                )));
            }
        }
        if let Some(id) = &req.request_id {
            if id.is_empty() || id.len() > MAX_NAME_BYTES {
                return Err(Status::invalid_argument(format!(
                    "request_id must be 1 to {MAX_NAME_BYTES} bytes"
                )));
            }
        }
        if let Some(r) = self.remembered(&req.project, req.request_id.as_deref()) {
            return Ok(r);
        }
        let message = if req.message.is_empty() {
            format!("rollback to version {}", req.to_version)
        } else {
            req.message.clone()
        };
        let mut confirmed = false;
        for _ in 0..MAX_ROUNDS {
            let sm = self.node.sm.clone();
            let (project, target) = (req.project.clone(), req.to_version);
            let rebuilt =
                tokio::task::spawn_blocking(move || history::rebuild(&sm, &project, target))
                    .await
                    .map_err(join_error)??;
            let base = rebuilt.head.version;
            if let Some(expected) = req.expected_version {
                if expected != base {
                    // As in `check`: never refuse on possibly stale local state.
                    if !confirmed {
                        self.confirm_leadership().await?;
                        confirmed = true;
                        continue;
                    }
                    return Err(conflict(&req.project, base, Some(expected)));
                }
            }
            let mut upserts = Vec::new();
            let mut deletes = Vec::new();
            let mut bytes = 0usize;
            for key in &rebuilt.changed_since {
                match (
                    rebuilt.view.entities.get(key),
                    rebuilt.head.entities.get(key),
                ) {
                    (Some(then), now) if Some(then) != now => {
                        bytes += then.len();
                        upserts.push(Upsert {
                            key: key.clone(),
                            body: then.clone(),
                        });
                    }
                    (None, Some(_)) => deletes.push(key.clone()),
                    _ => {}
                }
            }
            if upserts.len() + deletes.len() > MAX_CHANGES_PER_COMMIT || bytes > MAX_COMMIT_BYTES {
                return Err(Status::failed_precondition(format!(
                    "rolling back to version {target} takes {} changes ({bytes} bytes), more than one commit may hold ({MAX_CHANGES_PER_COMMIT} changes, {MAX_COMMIT_BYTES} bytes)",
                    upserts.len() + deletes.len()
                )));
            }
            let cmd = CommitCommand {
                project: req.project.clone(),
                upserts,
                deletes,
                author: req.author.clone(),
                message: message.clone(),
                expected_version: Some(base),
                request_id: req.request_id.clone(),
                proposed_time_ms: 0,
            };
            // The target ruleset was valid when it was current; check anyway
            // (the compiler may have become stricter since).
            let (cmd, _, _) = self.check(cmd, None, bytes).await?;
            match self.propose_commit(cmd, bytes).await? {
                Ok(resp) => {
                    let want = rebuilt.view.digest.to_hex();
                    if !resp.duplicate && resp.digest != want {
                        tracing::error!(
                            project = %req.project,
                            target,
                            "rollback produced digest {} instead of {want}",
                            resp.digest
                        );
                        return Err(Status::internal(format!(
                            "rollback committed version {} with digest {}, not version {target}'s {want}",
                            resp.version, resp.digest
                        )));
                    }
                    return Ok(resp);
                }
                Err(CommandOutcome::Conflict { .. }) if req.expected_version.is_none() => {}
                Err(other) => return Err(outcome_error(other, Some(base))),
            }
        }
        Err(too_busy(&req.project))
    }
}
