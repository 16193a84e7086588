//! `GET /v1/download_config_specs?since=V`: the stream's messages over plain
//! HTTP for networks that block WebSocket, with ETag / If-None-Match.

use super::hub::StreamHub;
use super::keys::KeyKind;
use super::source::{Head, StreamSource};
use super::sync::{deltas_after, plan, Start};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use flagraft_client::digest::RulesetDigest;
use flagraft_client::protocol::{encode_server, HistoryGone, ServerMessage, SnapshotReason};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
pub(crate) struct PollQuery {
    since: Option<u64>,
    digest: Option<String>,
}

/// The ETag of the state a response brings the client to.
pub fn etag(head: &Head) -> String {
    format!("\"v{}-{}\"", head.version, head.digest.to_hex())
}

pub(crate) async fn download_config_specs<S: StreamSource>(
    State(hub): State<Arc<StreamHub<S>>>,
    query: Result<Query<PollQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let Ok(Query(query)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad query: expected since=<u64>&digest=<hex>",
        );
    };
    let have_digest = match query.digest.as_deref().map(RulesetDigest::from_hex) {
        None => None,
        Some(Some(d)) if query.since.is_some() => Some(d),
        Some(_) => return error(StatusCode::BAD_REQUEST, "bad digest"),
    };
    let Some(project) = authorize(&hub, &headers) else {
        return error(StatusCode::UNAUTHORIZED, "unknown or non-server key");
    };
    let Some(head) = hub.source.head(&project) else {
        return error(StatusCode::NOT_FOUND, "project not found");
    };
    let tag = etag(&head);
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == tag.as_bytes())
    {
        return with_etag(StatusCode::NOT_MODIFIED.into_response(), &tag);
    }
    match messages(&hub, &project, &head, query.since, have_digest) {
        Ok(Some(msgs)) => {
            let body = format!(
                "{{\"head_version\":{},\"etag\":{},\"messages\":[{}]}}",
                head.version,
                serde_json::Value::String(tag.clone()),
                msgs.join(",")
            );
            let mut resp = (StatusCode::OK, body).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            with_etag(resp, &tag)
        }
        Ok(None) => {
            let mut resp = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "node behind; ask another node",
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            resp
        }
        Err(e) => {
            tracing::error!(error = %e, "poll cannot read the node's state");
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

fn authorize<S: StreamSource>(hub: &StreamHub<S>, headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let key = value.strip_prefix("Bearer ")?.trim();
    if key.is_empty() || key.len() > flagraft_client::protocol::MAX_KEY_BYTES {
        return None;
    }
    let grant = hub.keys.resolve(key)?;
    (grant.kind == KeyKind::Server).then_some(grant.project)
}

/// The encoded messages from `since` to the head; None when `since` is ahead of this node.
fn messages<S: StreamSource>(
    hub: &StreamHub<S>,
    project: &str,
    head: &Head,
    since: Option<u64>,
    have_digest: Option<RulesetDigest>,
) -> Result<Option<Vec<String>>, super::source::SourceError> {
    let snapshot = |reason| -> Result<Vec<String>, super::source::SourceError> {
        Ok(hub
            .snapshot_parts(project, reason, usize::MAX)?
            .map(|(_, parts)| parts.iter().map(|t| t.as_str().to_string()).collect())
            .unwrap_or_default())
    };
    let encode =
        |m: &ServerMessage| encode_server(m).map_err(|e| super::source::SourceError(e.to_string()));
    Ok(Some(
        match plan(&hub.source, project, head, since, have_digest)? {
            Start::Ahead { .. } => return Ok(None),
            Start::UpToDate => Vec::new(),
            Start::Snapshot(reason) => snapshot(reason)?,
            Start::HistoryGone { oldest_retained } => {
                let mut out = vec![encode(&ServerMessage::HistoryGone(HistoryGone {
                    have_version: since.unwrap_or(0),
                    oldest_retained,
                }))?];
                out.extend(snapshot(SnapshotReason::HistoryGone)?);
                out
            }
            Start::Deltas { have_version } => {
                let max = hub.config.max_poll_deltas;
                if head.version - have_version > max as u64 {
                    snapshot(SnapshotReason::Resync)?
                } else {
                    match deltas_after(&hub.source, project, have_version, head.version, max)? {
                        Some(records) => records
                            .iter()
                            .filter(|r| r.version <= head.version) // the ETag names the head
                            .map(|r| {
                                r.encode()
                                    .map_err(|e| super::source::SourceError(e.to_string()))
                            })
                            .collect::<Result<_, _>>()?,
                        None => snapshot(SnapshotReason::Resync)?,
                    }
                }
            }
        },
    ))
}

fn with_etag(mut resp: Response, tag: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(tag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

fn error(status: StatusCode, msg: &'static str) -> Response {
    (status, msg).into_response()
}
