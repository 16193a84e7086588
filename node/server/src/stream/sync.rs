//! How to bring a client from the version it holds to the node's head (§6 of
//! docs/protocol.md). Shared by the WebSocket stream and the polling endpoint.

use super::source::{DeltaRecord, Head, SourceError, StreamSource};
use flagraft_client::digest::RulesetDigest;
use flagraft_client::protocol::SnapshotReason;
use std::sync::Arc;

/// Deltas read from history per call.
pub(crate) const HISTORY_PAGE: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// Send the whole ruleset.
    Snapshot(SnapshotReason),
    /// Say `history_gone`, then send a snapshot.
    HistoryGone { oldest_retained: u64 },
    /// Send the deltas after `have_version`.
    Deltas { have_version: u64 },
    /// The client is current.
    UpToDate,
    /// The client holds a version this node has not applied yet.
    Ahead { have_version: u64 },
}

pub(crate) fn plan<S: StreamSource>(
    source: &S,
    project: &str,
    head: &Head,
    have_version: Option<u64>,
    have_digest: Option<RulesetDigest>,
) -> Result<Start, SourceError> {
    let Some(v) = have_version else {
        return Ok(Start::Snapshot(SnapshotReason::Initial));
    };
    if v > head.version {
        return Ok(Start::Ahead { have_version: v });
    }
    if v == head.version {
        return Ok(match have_digest {
            Some(d) if d != head.digest => Start::Snapshot(SnapshotReason::DigestMismatch),
            _ => Start::UpToDate,
        });
    }
    match source.oldest_retained(project) {
        Some(oldest) if oldest <= v + 1 => {}
        oldest => {
            return Ok(Start::HistoryGone {
                oldest_retained: oldest.unwrap_or(head.version + 1),
            })
        }
    }
    if let Some(d) = have_digest {
        let known = match source.digest_at(project, v)? {
            Some(known) => Some(known),
            None if v == 0 => Some(RulesetDigest::EMPTY),
            // The record of v itself is compacted: the client checks the next digest.
            None => None,
        };
        if known.is_some_and(|k| k != d) {
            return Ok(Start::Snapshot(SnapshotReason::DigestMismatch));
        }
    }
    Ok(Start::Deltas { have_version: v })
}

/// The records after `version` up to at least `target` (more if applied meanwhile),
/// or None if one of them is no longer retained.
pub(crate) fn deltas_after<S: StreamSource>(
    source: &S,
    project: &str,
    version: u64,
    target: u64,
    max: usize,
) -> Result<Option<Vec<Arc<DeltaRecord>>>, SourceError> {
    let mut out = Vec::new();
    let mut at = version;
    // Each page advances `at` by at least one or ends the loop.
    while at < target && out.len() < max {
        let page = source.history(project, at + 1, HISTORY_PAGE.min(max - out.len()))?;
        if page.is_empty() {
            return Ok(None);
        }
        for r in page {
            if r.version != at + 1 {
                return Ok(None);
            }
            at = r.version;
            out.push(r);
        }
    }
    if at < target {
        return Ok(None);
    }
    Ok(Some(out))
}
