//! Client-side values on a real 3-node cluster: `POST /v1/initialize` on
//! every node answers exactly what the SDK's bootstrap document
//! (`Client::client_initialize_response`) holds for the same version and
//! user; bad requests get their status codes; key kinds never cross; a
//! client key following a user on `/v1/stream/client` gets the new values
//! when a commit changes them.

use flagraft_client::dcs::entities_from_dcs;
use flagraft_client::gcir::{GcirOptions, HashAlgorithm};
use flagraft_client::sdk::Client;
use flagraft_cluster_tests::{wait_for, Cluster, ClusterOptions};
use flagraft_proto::admin::v1 as pb;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const SERVER_KEY: &str = "srv-gcir-test";
const CLIENT_KEY: &str = "client-gcir-test";
const WAIT: Duration = Duration::from_secs(30);

fn cases() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/cases")
}

async fn cluster() -> Cluster {
    let c = Cluster::configure(ClusterOptions::default());
    for id in c.ids() {
        let path = c.config_path(id);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&format!(
            "\n[stream]\nheartbeat_ms = 1000\n\n[stream.keys]\n\
             \"{SERVER_KEY}\" = {{ project = \"default\", kind = \"server\" }}\n\
             \"{CLIENT_KEY}\" = {{ project = \"default\", kind = \"client\" }}\n\
             \n[initialize]\nrate_per_key_per_sec = 1000.0\nrate_burst = 1000\n"
        ));
        std::fs::write(&path, text).unwrap();
        c.spawn(id);
    }
    for id in c.ids() {
        c.wait_ready(id, WAIT).await.unwrap();
    }
    c
}

fn commit_request(entities: &[flagraft_client::entity::Entity], id: &str) -> pb::CommitRequest {
    pb::CommitRequest {
        project: "default".into(),
        upserts: entities
            .iter()
            .map(|e| pb::Entity {
                kind: e.key.kind.as_str().into(),
                name: e.key.name.clone(),
                json: e.body.to_string(),
            })
            .collect(),
        deletes: vec![],
        author: "initialize-test".into(),
        message: id.into(),
        expected_version: None,
        request_id: Some(id.into()),
    }
}

struct Reply {
    status: u16,
    etag: Option<String>,
    body: Vec<u8>,
}

/// `POST path` on node `id`'s HTTP port (one connection, `Connection: close`).
async fn post(c: &Cluster, id: u64, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let addr = format!("127.0.0.1:{}", c.ports(id).http);
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    // The node may answer (413) before reading a large body; a reset then is fine.
    let _ = s.write_all(body).await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.take(64 << 20).read_to_end(&mut raw)).await;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response head");
    let text = String::from_utf8_lossy(&raw[..end]).to_string();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let etag = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("etag"))
        .map(|(_, v)| v.trim().to_string());
    Reply {
        status,
        etag,
        body: raw[end + 4..].to_vec(),
    }
}

fn bearer() -> String {
    format!("Bearer {CLIENT_KEY}")
}

/// The node's answer for `user` once it has applied `version`.
async fn initialize_at(c: &Cluster, id: u64, user: &Value, version: u64) -> Vec<u8> {
    let auth = bearer();
    let body = user.to_string();
    wait_for(
        &format!("node {id} at version {version}"),
        WAIT,
        Duration::from_millis(20),
        || async {
            let r = post(
                c,
                id,
                "/v1/initialize",
                &[("Authorization", &auth)],
                body.as_bytes(),
            )
            .await;
            let prefix = format!("\"i{version}-");
            match (&r.status, &r.etag) {
                (200, Some(t)) if t.starts_with(&prefix) => Ok(r.body),
                _ => Err(format!("{} {:?}", r.status, r.etag)),
            }
        },
    )
    .await
    .unwrap()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws(c: &Cluster, id: u64, path: &str, protocol: &str) -> Ws {
    let mut req = format!("ws://127.0.0.1:{}{path}", c.ports(id).http)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

/// The next message that is not a heartbeat (a close as `{"type":"closed"}`).
async fn next(ws: &mut Ws) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    for _ in 0..10_000 {
        match tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] != "heartbeat" {
                    return v;
                }
            }
            Some(Ok(Message::Close(f))) => {
                return json!({"type": "closed", "code": f.map(|f| u16::from(f.code))})
            }
            Some(Ok(_)) => {}
            other => return json!({"type": "ended", "detail": format!("{other:?}")}),
        }
    }
    panic!("no message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_and_the_sdk_agree_and_client_keys_get_values_never_rules() {
    let c = cluster().await;
    let ids = c.ids();
    let dcs = std::fs::read(cases().join("experiments.dcs.json")).unwrap();
    let entities = entities_from_dcs(&dcs).unwrap();
    let v1 = c
        .commit_retry(&ids, 0, commit_request(&entities, "gcir-1"), WAIT)
        .await
        .unwrap()
        .version;
    let endpoints: Vec<String> = ids
        .iter()
        .map(|&id| format!("127.0.0.1:{}", c.ports(id).http))
        .collect();
    let client = Client::builder()
        .endpoints(endpoints)
        .sdk_key(SERVER_KEY)
        .init_timeout(WAIT)
        .build()
        .await
        .unwrap();
    assert_eq!(client.wait_for_version(v1, WAIT).await, Ok(v1));

    // 1. Every node answers what the SDK's bootstrap document holds, byte for byte.
    let users: Vec<Value> =
        serde_json::from_slice(&std::fs::read(cases().join("experiments.users.json")).unwrap())
            .unwrap();
    let opts = GcirOptions::default().with_client_key(CLIENT_KEY);
    let mut compared = 0;
    for user in users.iter().take(12) {
        let sdk = client
            .client_initialize_response(user, &opts)
            .unwrap()
            .to_json_bytes();
        for &id in &ids {
            let node = initialize_at(&c, id, user, v1).await;
            assert_eq!(
                String::from_utf8_lossy(&node),
                String::from_utf8_lossy(&sdk),
                "node {id}, user {user}"
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 36);
    let sample: Value = serde_json::from_slice(&initialize_at(&c, 1, &users[0], v1).await).unwrap();
    assert!(!sample["dynamic_configs"].as_object().unwrap().is_empty());
    for word in [
        "\"conditions\"",
        "\"salt\"",
        "\"passPercentage\"",
        "\"targetValue\"",
    ] {
        assert!(
            !sample.to_string().contains(word),
            "{word} sent to a client key"
        );
    }

    // 2. Bad requests.
    let auth = bearer();
    let user = users[0].to_string();
    let status = |r: Reply| (r.status, serde_json::from_slice::<Value>(&r.body).ok());
    let (s, b) = status(post(&c, 2, "/v1/initialize", &[], user.as_bytes()).await);
    assert_eq!((s, b.unwrap()["code"].clone()), (401, json!("missing_key")));
    let srv = format!("Bearer {SERVER_KEY}");
    let (s, b) = status(
        post(
            &c,
            2,
            "/v1/initialize",
            &[("Authorization", &srv)],
            user.as_bytes(),
        )
        .await,
    );
    assert_eq!(
        (s, b.unwrap()["code"].clone()),
        (403, json!("server_key_not_allowed"))
    );
    let (s, _) = status(
        post(
            &c,
            2,
            "/v1/initialize",
            &[("Authorization", &auth)],
            b"{oops",
        )
        .await,
    );
    assert_eq!(s, 400);
    let big = vec![b' '; 100 * 1024];
    let (s, _) = status(post(&c, 2, "/v1/initialize", &[("Authorization", &auth)], &big).await);
    assert_eq!(s, 413);
    // Statsig's client SDK form, and an ETag short-circuit.
    let env = json!({"user": users[0], "hash": "sha256"}).to_string();
    let r = post(
        &c,
        3,
        "/v1/initialize",
        &[("statsig-api-key", CLIENT_KEY)],
        env.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200);
    let sha: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(sha["hash_used"], "sha256");
    let sdk_sha = client
        .client_initialize_response(&users[0], &opts.clone().with_hash(HashAlgorithm::Sha256))
        .unwrap();
    assert_eq!(r.body, sdk_sha.to_json_bytes());
    let tag = r.etag.unwrap();
    let r = post(
        &c,
        1,
        "/v1/initialize",
        &[("statsig-api-key", CLIENT_KEY), ("If-None-Match", &tag)],
        env.as_bytes(),
    )
    .await;
    assert_eq!(
        r.status, 304,
        "the same version on another node has the same ETag"
    );

    // 3. A client key cannot open the rules stream.
    let mut rules = ws(&c, 1, "/v1/stream", "flagraft.v1").await;
    rules
        .send(Message::text(
            json!({"type": "hello", "key": CLIENT_KEY}).to_string(),
        ))
        .await
        .unwrap();
    let bye = next(&mut rules).await;
    assert_eq!(
        (bye["type"].clone(), bye["code"].clone()),
        (json!("goodbye"), json!(4001))
    );

    // 4. Live values: a commit that changes this user's values is pushed.
    let mut live = ws(&c, 2, "/v1/stream/client", "flagraft-client.v1").await;
    let hello = json!({"type": "hello", "key": CLIENT_KEY, "user": users[0]});
    live.send(Message::text(hello.to_string())).await.unwrap();
    assert_eq!(next(&mut live).await["type"], "welcome");
    let first = next(&mut live).await;
    assert_eq!(first["type"], "values");
    assert!(first["version"].as_u64().unwrap() >= v1);
    let probe = json!({"type": "feature_gate", "entity": "feature_gate", "salt": "probe",
        "enabled": true, "defaultValue": false, "idType": "userID",
        "rules": [{"id": "probe_rule", "salt": "", "passPercentage": 100, "returnValue": true,
                   "idType": "userID", "conditions": [{"type": "public", "idType": "userID"}]}]});
    let req = pb::CommitRequest {
        upserts: vec![pb::Entity {
            kind: "gate".into(),
            name: "gcir_probe".into(),
            json: probe.to_string(),
        }],
        ..commit_request(&[], "gcir-2")
    };
    let v2 = c.commit_retry(&ids, 1, req, WAIT).await.unwrap().version;
    let pushed = next(&mut live).await;
    assert_eq!(pushed["type"], "values");
    assert_eq!(pushed["version"], v2);
    let g = &pushed["response"]["feature_gates"][HashAlgorithm::Djb2.hash("gcir_probe")];
    assert_eq!(
        (g["value"].clone(), g["rule_id"].clone()),
        (json!(true), json!("probe_rule"))
    );
    assert!(!pushed.to_string().contains("\"conditions\""));
    // And the SDK at that version agrees with what was pushed.
    assert_eq!(client.wait_for_version(v2, WAIT).await, Ok(v2));
    let sdk = client
        .client_initialize_response(&users[0], &opts)
        .unwrap()
        .to_json_value();
    assert_eq!(pushed["response"], sdk);
    client.shutdown().await;
}
