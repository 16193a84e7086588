//! `POST /v1/initialize`: the client initialize response for one user.
//!
//! | status | `code` | when |
//! | --- | --- | --- |
//! | 200 | | the response (`ETag`, `Cache-Control: private, no-cache`) |
//! | 304 | | `If-None-Match` names the current response for this user |
//! | 400 | `bad_json`, `bad_user`, `bad_hash`, `bad_query` | malformed body, user, `hash` |
//! | 401 | `missing_key`, `unknown_key` | no key / unknown or revoked key |
//! | 403 | `server_key_not_allowed` | a server key (they read rules; use a client key) |
//! | 404 | `project_not_found` | the key's project does not exist on this node |
//! | 413 | `body_too_large` | body over `max_body_bytes` (64 KiB by default) |
//! | 429 | `rate_limited` | the key's token bucket is empty (`Retry-After`) |
//!
//! The key: `Authorization: Bearer <key>`, else `statsig-api-key: <key>`,
//! else the query parameter `k` (Statsig's newer JS client). Every response
//! allows any origin (CORS; `OPTIONS` answers the preflight): keys are not
//! cookies, and client keys are public by design.
//!
//! Errors are JSON `{"code": ..., "message": ...}`. The `hash` option is
//! the query parameter `?hash=djb2|sha256|none`, else the envelope's
//! `hash` field, else `djb2`.

use super::error::ApiError;
use super::{InitializeService, RulesetSource};
use crate::stream::KeyKind;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use flagraft_client::eval::EvalOptions;
use flagraft_client::gcir::{
    client_initialize_response, content_etag, request_etag, ClientUser, GcirOptions, HashAlgorithm,
};
use flagraft_client::protocol::MAX_KEY_BYTES;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

/// The Statsig client SDKs' key header.
pub const STATSIG_KEY_HEADER: &str = "statsig-api-key";

/// Query parameters; others (Statsig's `st`, `sv`, `t`, `sid`...) are ignored.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct InitQuery {
    hash: Option<String>,
    /// The key, as Statsig's newer JS client sends it (no CORS preflight).
    k: Option<String>,
}

/// The key of a request: `Authorization: Bearer <key>`, else the
/// `statsig-api-key` header, else the `k` query parameter.
pub(crate) fn request_key<'a>(
    headers: &'a HeaderMap,
    query_key: Option<&'a str>,
) -> Result<&'a str, ApiError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let key = bearer
        .or_else(|| {
            headers
                .get(STATSIG_KEY_HEADER)
                .and_then(|v| v.to_str().ok())
        })
        .or(query_key)
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(ApiError::missing_key)?;
    if key.len() > MAX_KEY_BYTES {
        return Err(ApiError::unknown_key());
    }
    Ok(key)
}

/// A client key's project, rate-limited.
pub(crate) fn authorize<S: RulesetSource>(
    svc: &InitializeService<S>,
    key: &str,
) -> Result<String, ApiError> {
    let grant = svc.keys.resolve(key).ok_or_else(ApiError::unknown_key)?;
    if grant.kind != KeyKind::Client {
        return Err(ApiError::server_key());
    }
    svc.limiter.check(key).map_err(ApiError::rate_limited)?;
    Ok(grant.project)
}

/// The user and the requested hash from a body: a user object, or the
/// envelope `{"user": {...}, "hash": "..."}` Statsig's client SDKs send.
pub(crate) fn parse_body(bytes: &[u8]) -> Result<(ClientUser, Option<HashAlgorithm>), ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "bad_json",
            "empty body: expected a user object",
        ));
    }
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request("bad_json", format!("not valid JSON: {e}")))?;
    let (user, hash) = match &v {
        Value::Object(m) if m.contains_key("user") => {
            let hash = match m.get("hash") {
                None | Some(Value::Null) => None,
                Some(Value::String(h)) => Some(parse_hash(h)?),
                Some(_) => return Err(bad_hash()),
            };
            (&m["user"], hash)
        }
        _ => (&v, None),
    };
    let user = ClientUser::from_json(user)
        .map_err(|e| ApiError::bad_request("bad_user", e.to_string()))?;
    Ok((user, hash))
}

fn bad_hash() -> ApiError {
    ApiError::bad_request("bad_hash", "hash must be djb2, sha256 or none")
}

fn parse_hash(s: &str) -> Result<HashAlgorithm, ApiError> {
    s.parse().map_err(|_| bad_hash())
}

/// Whether `If-None-Match` names `tag` (or is `*`); weak tags compare too.
pub(crate) fn etag_matches(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| etag_matches_value(v, tag))
}

/// Whether an `If-None-Match` value (a list of tags, or `*`) names `tag`.
pub(crate) fn etag_matches_value(value: &str, tag: &str) -> bool {
    value
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == tag)
}

async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Vec<u8>, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(limit));
    }
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes().to_vec()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::too_large(limit)),
        Err(e) => Err(ApiError::bad_request(
            "bad_body",
            format!("reading the body: {e}"),
        )),
    }
}

fn with_etag(mut resp: Response, tag: &str) -> Response {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(tag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    resp
}

/// Browsers call from other origins; the key travels in a header or the
/// query, never in a cookie, so any origin may call.
fn with_cors(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("etag, retry-after"),
    );
    resp
}

/// `OPTIONS /v1/initialize`: the CORS preflight.
pub(crate) async fn preflight() -> Response {
    let mut resp = with_cors(StatusCode::NO_CONTENT.into_response());
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(
            "authorization, content-type, if-none-match, statsig-api-key, \
             statsig-client-time, statsig-sdk-type, statsig-sdk-version",
        ),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    resp
}

pub(crate) async fn initialize<S: RulesetSource>(
    State(svc): State<Arc<InitializeService<S>>>,
    query: Result<Query<InitQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    with_cors(match serve(&svc, query, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    })
}

async fn serve<S: RulesetSource>(
    svc: &Arc<InitializeService<S>>,
    query: Result<Query<InitQuery>, axum::extract::rejection::QueryRejection>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let query = query.map(|Query(q)| q);
    let query_key = query.as_ref().ok().and_then(|q| q.k.as_deref());
    let key = request_key(headers, query_key)?;
    let project = authorize(svc, key)?;
    let Ok(query) = &query else {
        return Err(ApiError::bad_request(
            "bad_query",
            "expected ?hash=djb2|sha256|none",
        ));
    };
    let bytes = read_body(body, headers, svc.config.max_body_bytes).await?;
    let (user, body_hash) = parse_body(&bytes)?;
    let hash = match query.hash.as_deref() {
        Some(h) => parse_hash(h)?,
        None => body_hash.unwrap_or_default(),
    };
    let options = GcirOptions::default().with_hash(hash).with_client_key(key);
    let rs = svc
        .cache
        .current(&svc.source, &project)
        .await
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "project_not_found",
                "the key's project does not exist on this node",
            )
        })?;
    let time_dependent = rs.meta.is_time_dependent();
    let early_tag =
        (!time_dependent).then(|| request_etag(rs.version, &rs.digest, &user, &options));
    if let Some(tag) = &early_tag {
        if etag_matches(headers, tag) {
            return Ok(with_etag(StatusCode::NOT_MODIFIED.into_response(), tag));
        }
    }
    let eval = EvalOptions::default();
    let body = client_initialize_response(&rs.view(&eval), &user, &options).to_json_bytes();
    let tag = match early_tag {
        Some(t) => t,
        None => {
            let t = content_etag(rs.version, &body);
            if etag_matches(headers, &t) {
                return Ok(with_etag(StatusCode::NOT_MODIFIED.into_response(), &t));
            }
            t
        }
    };
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(with_etag(resp, &tag))
}
