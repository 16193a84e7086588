//! Reads at "at least version V": wait until this node has applied V.

use crate::state::NodeState;
use flagraft_store::ProjectHead;
use std::time::Duration;
use tokio::time::Instant;
use tonic::Status;

/// The project's head once its version is at least `min_version`, waiting at
/// most `timeout`. Without `min_version`, the current head (or NOT_FOUND).
pub async fn head_at_least(
    node: &NodeState,
    project: &str,
    min_version: Option<u64>,
    timeout: Duration,
) -> Result<ProjectHead, Status> {
    let Some(min) = min_version else {
        return node
            .sm
            .head(project)
            .ok_or_else(|| Status::not_found(format!("no project '{project}'")));
    };
    let deadline = Instant::now() + timeout;
    let mut applied = node.sm.applied_watch();
    loop {
        // Mark the current value seen before checking, so no apply is missed.
        applied.borrow_and_update();
        let head = node.sm.head(project);
        if let Some(h) = &head {
            if h.version >= min {
                return Ok(h.clone());
            }
        }
        match tokio::time::timeout_at(deadline, applied.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(Status::unavailable("node is shutting down")),
            Err(_) => {
                let at = head.map_or("absent".to_string(), |h| {
                    format!("at version {}", h.version)
                });
                return Err(Status::deadline_exceeded(format!(
                    "project '{project}' did not reach version {min} in {timeout:?} on this node ({at})"
                )));
            }
        }
    }
}
