//! Admin authentication and API keys on a real 3-node cluster: every call
//! needs an admin key, one reply for every kind of bad key, replicated admin
//! keys work on every node until revoked, server and client keys are refused
//! on the Admin API, and revoking a key closes its streams and refuses
//! `/v1/initialize`.

use flagraft_client::protocol::{
    decode_server, encode_client, ClientMessage, CloseCode, Hello, ServerMessage,
};
use flagraft_cluster_tests::fixtures::{commit, entity, gate_body};
use flagraft_cluster_tests::{admin_client_with_key, wait_for, BearerKey, Cluster, ClusterOptions};
use flagraft_proto::admin::v1 as pb;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(30);
const DENIED: &str = "a valid admin key is required (metadata authorization: Bearer <admin key>)";

async fn started() -> (Cluster, u64, u64) {
    let c = Cluster::start(ClusterOptions::default());
    for id in c.ids() {
        c.wait_ready(id, WAIT).await.unwrap();
    }
    let leader = c.wait_for_leader(&c.ids(), WAIT).await.unwrap();
    let follower = c.ids().into_iter().find(|&id| id != leader).unwrap();
    (c, leader, follower)
}

/// The outcome of a few different calls on node `id` with `key`.
async fn calls_with(c: &Cluster, id: u64, key: BearerKey) -> Vec<Result<(), (Code, String)>> {
    let mut admin = admin_client_with_key(c.admin_channel(id), key);
    let as_result =
        |r: Result<(), tonic::Status>| r.map_err(|s| (s.code(), s.message().to_string()));
    vec![
        as_result(
            admin
                .get_cluster_status(pb::GetClusterStatusRequest {})
                .await
                .map(drop),
        ),
        as_result(
            admin
                .list_projects(pb::ListProjectsRequest {})
                .await
                .map(drop),
        ),
        as_result(
            admin
                .get_ruleset(pb::GetRulesetRequest {
                    project: "default".into(),
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        as_result(
            admin
                .commit(commit("default", vec![], vec![], "auth probe"))
                .await
                .map(drop),
        ),
    ]
}

fn all_denied(results: &[Result<(), (Code, String)>]) -> bool {
    results
        .iter()
        .all(|r| matches!(r, Err((Code::Unauthenticated, m)) if m == DENIED))
}

async fn create_key(
    c: &Cluster,
    id: u64,
    kind: pb::KeyKind,
    project: &str,
) -> pb::CreateKeyResponse {
    c.admin(id)
        .create_key(pb::CreateKeyRequest {
            project: project.into(),
            kind: kind as i32,
            description: format!("{kind:?} key"),
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_call_needs_a_live_admin_key() {
    let (c, leader, f) = started().await;
    // No key, a wrong key, a malformed key: the same reply, on leader and follower.
    for id in [leader, f] {
        for key in [
            BearerKey::none(),
            BearerKey::new("not-the-key-0123456789"),
            BearerKey::new("fra_0123456789abcdef_forged"),
        ] {
            let results = calls_with(&c, id, key).await;
            assert!(all_denied(&results), "node {id}: {results:?}");
        }
    }

    // A replicated admin key, created through a follower, works on every node.
    let created = create_key(&c, f, pb::KeyKind::Admin, "").await;
    let info = created.key.clone().unwrap();
    assert!(
        created.secret.starts_with(&format!("fra_{}_", info.id)),
        "{}",
        created.secret
    );
    assert_eq!(
        (info.kind, info.revoked_ms),
        (pb::KeyKind::Admin as i32, None)
    );
    for id in c.ids() {
        wait_for(
            &format!("node {id} accepts the new admin key"),
            WAIT,
            Duration::from_millis(20),
            || async {
                let results = calls_with(&c, id, BearerKey::new(&created.secret)).await;
                if results.iter().all(Result::is_ok) {
                    Ok(())
                } else {
                    Err(format!("{results:?}"))
                }
            },
        )
        .await
        .unwrap();
    }
    // Listed without its secret or hash; revoked: refused with the same reply.
    let listed = c
        .admin(leader)
        .list_keys(pb::ListKeysRequest::default())
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(listed, vec![info.clone()]);
    let revoked = c
        .admin(leader)
        .revoke_key(pb::RevokeKeyRequest {
            id: info.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoked_ms.is_some());
    for id in c.ids() {
        wait_for(
            &format!("node {id} refuses the revoked key"),
            WAIT,
            Duration::from_millis(20),
            || async {
                let results = calls_with(&c, id, BearerKey::new(&created.secret)).await;
                if all_denied(&results) {
                    Ok(())
                } else {
                    Err(format!("{results:?}"))
                }
            },
        )
        .await
        .unwrap();
    }
    let active = c
        .admin(leader)
        .list_keys(pb::ListKeysRequest::default())
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert!(active.is_empty(), "revoked keys are listed only on request");
    let all = c
        .admin(leader)
        .list_keys(pb::ListKeysRequest {
            include_revoked: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(all, vec![revoked]);

    // Server and client keys are refused on the Admin API, with the same reply.
    let server = create_key(&c, leader, pb::KeyKind::Server, "default").await;
    let client = create_key(&c, leader, pb::KeyKind::Client, "default").await;
    assert!(server.secret.starts_with("frs_") && client.secret.starts_with("frc_"));
    for secret in [&server.secret, &client.secret] {
        let results = calls_with(&c, leader, BearerKey::new(secret)).await;
        assert!(all_denied(&results), "{results:?}");
    }

    // Key requests that make no sense.
    let bad = |project: &str, kind: pb::KeyKind| pb::CreateKeyRequest {
        project: project.into(),
        kind: kind as i32,
        description: String::new(),
    };
    let s = c
        .admin(f)
        .create_key(bad("default", pb::KeyKind::Admin))
        .await
        .unwrap_err();
    assert_eq!(
        (s.code(), s.message()),
        (
            Code::InvalidArgument,
            "admin keys are cluster-wide: give no project"
        )
    );
    let s = c
        .admin(f)
        .create_key(bad("nope", pb::KeyKind::Server))
        .await
        .unwrap_err();
    assert_eq!(
        (s.code(), s.message()),
        (Code::NotFound, "no project 'nope'")
    );
    let s = c
        .admin(f)
        .create_key(bad("default", pb::KeyKind::Unspecified))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    let s = c
        .admin(f)
        .revoke_key(pb::RevokeKeyRequest {
            id: "0123456789abcdef".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (s.code(), s.message()),
        (Code::NotFound, "no key '0123456789abcdef'")
    );
}

/// A `/v1/stream` connection on node `id` authenticated with `key`, after
/// its welcome.
async fn open_stream(
    c: &Cluster,
    id: u64,
    key: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("ws://127.0.0.1:{}/v1/stream", c.ports(id).http);
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "flagraft.v1".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let hello = ClientMessage::Hello(Hello {
        key: key.into(),
        have_version: None,
        have_digest: None,
        sdk: None,
    });
    ws.send(Message::text(encode_client(&hello).unwrap()))
        .await
        .unwrap();
    match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
        Some(Ok(Message::Text(t))) => {
            let m = decode_server(t.as_bytes(), 1 << 26).unwrap();
            assert!(matches!(m, ServerMessage::Welcome(_)), "{m:?}");
        }
        other => panic!("no welcome: {other:?}"),
    }
    ws
}

/// The close code the node ends the stream with (skipping data messages).
async fn close_code(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    within: Duration,
) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + within;
    for _ in 0..1000 {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => return Some(frame.code.into()),
            Ok(Some(Ok(_))) => {}
            _ => return None,
        }
    }
    None
}

/// `POST /v1/initialize` on node `id` with `key`: the HTTP status.
async fn initialize_status(c: &Cluster, id: u64, key: &str) -> u16 {
    let addr = format!("127.0.0.1:{}", c.ports(id).http);
    let body = r#"{"userID":"u1"}"#;
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/initialize HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.take(1 << 20).read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_keys_closes_streams_and_refuses_initialize() {
    let (c, leader, f) = started().await;
    c.admin(f)
        .commit(commit(
            "default",
            vec![entity("gate", "g", &gate_body("g", json!([])))],
            vec![],
            "g",
        ))
        .await
        .unwrap();
    let server = create_key(&c, f, pb::KeyKind::Server, "default").await;
    let client = create_key(&c, f, pb::KeyKind::Client, "default").await;
    for id in c.ids() {
        wait_for(
            &format!("node {id} knows the client key"),
            WAIT,
            Duration::from_millis(20),
            || async {
                match initialize_status(&c, id, &client.secret).await {
                    200 => Ok(()),
                    s => Err(format!("status {s}")),
                }
            },
        )
        .await
        .unwrap();
    }
    // Streams on every node with the replicated server key. The default
    // heartbeat is 15 s: a close well before that comes from the revocation.
    let mut streams = Vec::new();
    for id in c.ids() {
        streams.push((id, open_stream(&c, id, &server.secret).await));
    }
    // A client key does not open a rules stream; a server key gets no values.
    let url = format!("ws://127.0.0.1:{}/v1/stream", c.ports(leader).http);
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "flagraft.v1".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let hello = ClientMessage::Hello(Hello {
        key: client.secret.clone(),
        have_version: None,
        have_digest: None,
        sdk: None,
    });
    ws.send(Message::text(encode_client(&hello).unwrap()))
        .await
        .unwrap();
    assert_eq!(
        close_code(&mut ws, WAIT).await,
        Some(CloseCode::Unauthorized.code())
    );
    assert_eq!(initialize_status(&c, leader, &server.secret).await, 403);

    let server_id = server.key.unwrap().id;
    c.admin(leader)
        .revoke_key(pb::RevokeKeyRequest { id: server_id })
        .await
        .unwrap();
    for (id, ws) in &mut streams {
        assert_eq!(
            close_code(ws, Duration::from_secs(5)).await,
            Some(CloseCode::KeyRevoked.code()),
            "the stream on node {id} closes on revocation"
        );
    }

    let client_id = client.key.unwrap().id;
    c.admin(f)
        .revoke_key(pb::RevokeKeyRequest { id: client_id })
        .await
        .unwrap();
    for id in c.ids() {
        wait_for(
            &format!("node {id} refuses the revoked client key"),
            WAIT,
            Duration::from_millis(20),
            || async {
                match initialize_status(&c, id, &client.secret).await {
                    401 => Ok(()),
                    s => Err(format!("status {s}")),
                }
            },
        )
        .await
        .unwrap();
    }

    // Deleting a project revokes its keys.
    c.admin(f)
        .create_project(pb::CreateProjectRequest { name: "tmp".into() })
        .await
        .unwrap();
    let tmp = create_key(&c, f, pb::KeyKind::Client, "tmp").await;
    c.admin(f)
        .delete_project(pb::DeleteProjectRequest { name: "tmp".into() })
        .await
        .unwrap();
    let keys = c
        .admin(leader)
        .list_keys(pb::ListKeysRequest {
            project: "tmp".into(),
            include_revoked: true,
        })
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(keys.len(), 1);
    assert!(keys[0].revoked_ms.is_some());
    assert_eq!(initialize_status(&c, leader, &tmp.secret).await, 401);
}
