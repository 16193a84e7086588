//! In-process tests of `/v1/initialize` and `/v1/stream/client` over an
//! in-memory ruleset source, served on 127.0.0.1.

use super::*;
use crate::stream::{KeyGrant, KeyKind, StaticKeys};
use flagraft_client::dcs::entities_from_dcs;
use flagraft_client::digest::{entity_key_hash, RulesetDigest};
use flagraft_client::entity::Entity;
use flagraft_client::eval::EvalOptions;
use flagraft_client::gcir::{
    client_initialize_response, ClientRuleset, ClientUser, GcirOptions, HashAlgorithm,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const CLIENT_KEY: &str = "client-web";
const SERVER_KEY: &str = "server-1";
const ORPHAN_KEY: &str = "client-orphan";
const WAIT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Mem {
    projects: Mutex<HashMap<String, (RulesetHead, Vec<Entity>)>>,
    applied: watch::Sender<u64>,
}

#[derive(Clone)]
struct MemSource(Arc<Mem>);

impl MemSource {
    fn set(&self, project: &str, version: u64, entities: Vec<Entity>) {
        let hashes: Vec<[u8; 32]> = entities
            .iter()
            .map(|e| entity_key_hash(&e.key, &e.body))
            .collect();
        let head = RulesetHead {
            version,
            digest: RulesetDigest::from_hashes(&hashes),
            commit_time_ms: 1_000 + version,
        };
        let mut p = self.0.projects.lock().unwrap();
        p.insert(project.to_string(), (head, entities));
        drop(p);
        self.0.applied.send_modify(|n| *n += 1);
    }
}

impl RulesetSource for MemSource {
    fn node_id(&self) -> u64 {
        9
    }
    fn head(&self, project: &str) -> Option<RulesetHead> {
        self.0.projects.lock().unwrap().get(project).map(|p| p.0)
    }
    fn entities(&self, project: &str) -> Option<(RulesetHead, Vec<Entity>)> {
        self.0.projects.lock().unwrap().get(project).cloned()
    }
    fn applied_watch(&self) -> watch::Receiver<u64> {
        self.0.applied.subscribe()
    }
}

/// Gates: `g_public` (everyone), `g_user` (userID in `ids`, returning
/// `on`), `g_other_app` (targeted at another app); a config.
fn entities(salt: &str, on: bool) -> Vec<Entity> {
    let rule = |id: &str, cond: Value, ret: Value| {
        json!({"id": id, "salt": "", "passPercentage": 100, "returnValue": ret,
               "idType": "userID", "conditions": [cond]})
    };
    let public = json!({"type": "public", "idType": "userID"});
    let dcs = json!({
        "has_updates": true, "time": 1,
        "feature_gates": [
            {"name": "g_public", "type": "feature_gate", "entity": "feature_gate", "salt": salt,
             "enabled": true, "defaultValue": false, "idType": "userID",
             "rules": [rule("r_pub", public.clone(), json!(true))]},
            {"name": "g_user", "type": "feature_gate", "entity": "feature_gate", "salt": "s2",
             "enabled": true, "defaultValue": false, "idType": "userID",
             "rules": [rule("r_user", json!({"type": "user_field", "field": "userID",
                 "operator": "any", "targetValue": ["u1"], "idType": "userID"}), json!(on))]},
        ],
        "dynamic_configs": [
            {"name": "cfg", "type": "dynamic_config", "entity": "dynamic_config", "salt": "s3",
             "enabled": true, "defaultValue": {"color": "red"}, "idType": "userID",
             "rules": [rule("r_cfg", public, json!({"color": "blue"}))]}
        ],
        "layer_configs": [], "layers": {}
    });
    entities_from_dcs(dcs.to_string().as_bytes()).unwrap()
}

struct Node {
    addr: String,
    source: MemSource,
    svc: Arc<InitializeService<MemSource>>,
    _stop: watch::Sender<bool>,
}

async fn node(config: InitializeConfig) -> Node {
    let source = MemSource(Arc::new(Mem::default()));
    source.set("p", 1, entities("s1", true));
    let keys = StaticKeys::default();
    let grant = |project: &str, kind| KeyGrant {
        project: project.into(),
        kind,
    };
    keys.insert(CLIENT_KEY, grant("p", KeyKind::Client));
    keys.insert(SERVER_KEY, grant("p", KeyKind::Server));
    keys.insert(ORPHAN_KEY, grant("nothing-here", KeyKind::Client));
    let (stop, stop_rx) = watch::channel(false);
    let svc = InitializeService::new(source.clone(), Arc::new(keys), config, stop_rx).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let app = router(Arc::clone(&svc));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Node {
        addr,
        source,
        svc,
        _stop: stop,
    }
}

struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`).
async fn request(addr: &str, head: &str, body: &[u8]) -> Reply {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, s.take(8 << 20).read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let text = String::from_utf8_lossy(&raw[..end]).to_string();
    let mut lines = text.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status: status.parse().unwrap(),
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

async fn post(addr: &str, path: &str, extra: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    request(addr, &head, body).await
}

fn bearer(key: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {key}"))
}

async fn post_user(n: &Node, key: &str, body: &Value) -> Reply {
    let (k, v) = bearer(key);
    post(
        &n.addr,
        INITIALIZE_PATH,
        &[(k, &v)],
        body.to_string().as_bytes(),
    )
    .await
}

#[tokio::test]
async fn answers_equal_the_library_for_the_same_version_and_user() {
    let n = node(InitializeConfig::default()).await;
    let user = json!({"userID": "u1", "customIDs": {"stableID": "s"}});
    let r = post_user(&n, CLIENT_KEY, &user).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.headers["content-type"], "application/json");
    let (head, entities) = n.source.entities("p").unwrap();
    let rs = ClientRuleset::new(head.version, head.digest, head.commit_time_ms, &entities);
    let opts = GcirOptions::default().with_client_key(CLIENT_KEY);
    let eval = EvalOptions::default();
    let want = client_initialize_response(
        &rs.view(&eval),
        &ClientUser::from_json(&user).unwrap(),
        &opts,
    );
    assert_eq!(r.body, want.to_json_bytes());
    let v = r.json();
    assert_eq!(v["hash_used"], "djb2");
    assert_eq!(v["time"], 1_001);
    let g = &v["feature_gates"][HashAlgorithm::Djb2.hash("g_user")];
    assert_eq!(g["value"], true);
    assert_eq!(g["rule_id"], "r_user");
}

#[tokio::test]
async fn keys_bodies_and_hashes_are_checked() {
    let n = node(InitializeConfig::default()).await;
    let user = json!({"userID": "u1"});
    let body = user.to_string();
    let code = |r: &Reply| r.json()["code"].as_str().unwrap_or("").to_string();

    let r = post(&n.addr, INITIALIZE_PATH, &[], body.as_bytes()).await;
    assert_eq!((r.status, code(&r)), (401, "missing_key".into()));
    let r = post_user(&n, "nope", &user).await;
    assert_eq!((r.status, code(&r)), (401, "unknown_key".into()));
    let r = post_user(&n, SERVER_KEY, &user).await;
    assert_eq!((r.status, code(&r)), (403, "server_key_not_allowed".into()));
    let r = post_user(&n, ORPHAN_KEY, &user).await;
    assert_eq!((r.status, code(&r)), (404, "project_not_found".into()));
    // Statsig's client SDK header and envelope.
    let env = json!({"user": user, "hash": "sha256", "statsigMetadata": {"sdkType": "js"}});
    let r = post(
        &n.addr,
        INITIALIZE_PATH,
        &[("STATSIG-API-KEY", CLIENT_KEY)],
        env.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["hash_used"], "sha256");
    // The query parameter wins over the envelope.
    let (k, v) = bearer(CLIENT_KEY);
    let r = post(
        &n.addr,
        "/v1/initialize?hash=none",
        &[(k, &v)],
        env.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.json()["hash_used"], "none");
    assert!(r.json()["feature_gates"]["g_user"].is_object());

    for (bad, want) in [
        (&b"{not json"[..], "bad_json"),
        (b"", "bad_json"),
        (b"[1,2]", "bad_user"),
        (br#"{"userID": {"x": 1}}"#, "bad_user"),
        (br#"{"user": 5}"#, "bad_user"),
        (br#"{"user": {}, "hash": "md5"}"#, "bad_hash"),
    ] {
        let r = post(&n.addr, INITIALIZE_PATH, &[(k, &v)], bad).await;
        assert_eq!((r.status, code(&r)), (400, want.into()), "{bad:?}");
    }
    let r = post(
        &n.addr,
        "/v1/initialize?hash=MD5",
        &[(k, &v)],
        body.as_bytes(),
    )
    .await;
    assert_eq!((r.status, code(&r)), (400, "bad_hash".into()));
    // The key in the query (Statsig's newer JS client), extra parameters ignored.
    let path = format!("{INITIALIZE_PATH}?k={CLIENT_KEY}&st=javascript-client&sv=3.0.0");
    let r = post(&n.addr, &path, &[], body.as_bytes()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    let r = post(&n.addr, "/v1/initialize?k=nope", &[], body.as_bytes()).await;
    assert_eq!((r.status, code(&r)), (401, "unknown_key".into()));
    assert_eq!(r.headers["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn browsers_get_a_cors_preflight() {
    let n = node(InitializeConfig::default()).await;
    let head = format!(
        "OPTIONS {INITIALIZE_PATH} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nOrigin: https://app.example\r\n\
         Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: statsig-api-key\r\n\r\n"
    );
    let r = request(&n.addr, &head, b"").await;
    assert_eq!(r.status, 204);
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    assert!(r.headers["access-control-allow-methods"].contains("POST"));
    assert!(r.headers["access-control-allow-headers"].contains("statsig-api-key"));
    assert!(r.headers["access-control-expose-headers"].contains("etag"));
}

#[tokio::test]
async fn oversized_bodies_are_refused_declared_or_chunked() {
    let n = node(InitializeConfig::default()).await;
    let big = json!({"userID": "u1", "custom": {"pad": "x".repeat(70 * 1024)}}).to_string();
    let (k, v) = bearer(CLIENT_KEY);
    let r = post(&n.addr, INITIALIZE_PATH, &[(k, &v)], big.as_bytes()).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["code"], "body_too_large");
    // Without a Content-Length: chunked, counted while read.
    let head = format!(
        "POST {INITIALIZE_PATH} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{k}: {v}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let mut chunked = Vec::new();
    for part in big.as_bytes().chunks(8 * 1024) {
        chunked.extend(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend(part);
        chunked.extend(b"\r\n");
    }
    chunked.extend(b"0\r\n\r\n");
    let r = request(&n.addr, &head, &chunked).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["code"], "body_too_large");
}

#[tokio::test]
async fn if_none_match_short_circuits_until_the_version_changes() {
    let n = node(InitializeConfig::default()).await;
    let user = json!({"userID": "u1"});
    let (k, v) = bearer(CLIENT_KEY);
    let body = user.to_string();
    let first = post(&n.addr, INITIALIZE_PATH, &[(k, &v)], body.as_bytes()).await;
    let tag = first.headers["etag"].clone();
    assert!(tag.starts_with("\"i1-"), "{tag}");
    let again = post(
        &n.addr,
        INITIALIZE_PATH,
        &[(k, &v), ("If-None-Match", &tag)],
        body.as_bytes(),
    )
    .await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    // Another user: a different tag, so a full answer.
    let other = json!({"userID": "u2"}).to_string();
    let r = post(
        &n.addr,
        INITIALIZE_PATH,
        &[(k, &v), ("If-None-Match", &tag)],
        other.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200);
    n.source.set("p", 2, entities("s1", false));
    let r = post(
        &n.addr,
        INITIALIZE_PATH,
        &[(k, &v), ("If-None-Match", &tag)],
        body.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.headers["etag"].starts_with("\"i2-"));
    assert_eq!(
        r.json()["feature_gates"][HashAlgorithm::Djb2.hash("g_user")]["value"],
        false
    );
}

#[tokio::test]
async fn each_key_is_rate_limited() {
    let n = node(InitializeConfig {
        rate_per_key_per_sec: 0.01,
        rate_burst: 2,
        ..Default::default()
    })
    .await;
    let user = json!({"userID": "u1"});
    assert_eq!(post_user(&n, CLIENT_KEY, &user).await.status, 200);
    assert_eq!(post_user(&n, CLIENT_KEY, &user).await.status, 200);
    let r = post_user(&n, CLIENT_KEY, &user).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["code"], "rate_limited");
    let after: u64 = r.headers["retry-after"].parse().unwrap();
    assert!((1..=100).contains(&after), "{after}");
    // Unknown keys are refused before the limiter (they get no bucket).
    assert_eq!(post_user(&n, "nope", &user).await.status, 401);
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws(n: &Node, protocol: &str) -> Ws {
    let mut req = format!("ws://{}{CLIENT_STREAM_PATH}", n.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

/// The next JSON message that is not a heartbeat.
async fn next(ws: &mut Ws) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    for _ in 0..1000 {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a message in time");
        match msg {
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
    panic!("too many heartbeats");
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

#[tokio::test]
async fn the_client_stream_pushes_values_only_when_they_change() {
    let n = node(InitializeConfig::default()).await;
    let mut c = ws(&n, CLIENT_SUBPROTOCOL).await;
    send(
        &mut c,
        json!({"type": "hello", "key": CLIENT_KEY, "user": {"userID": "u1"}}),
    )
    .await;
    let w = next(&mut c).await;
    assert_eq!(
        (w["type"].as_str(), w["project"].as_str()),
        (Some("welcome"), Some("p"))
    );
    let v1 = next(&mut c).await;
    assert_eq!(v1["type"], "values");
    assert_eq!(v1["version"], 1);
    let g = HashAlgorithm::Djb2.hash("g_user");
    assert_eq!(v1["response"]["feature_gates"][&g]["value"], true);
    assert!(!v1.to_string().contains("\"conditions\""));
    // Version 2 does not change this user's values (only a 100% rule's
    // salt): nothing is pushed. Version 3 does: pushed, at version 3.
    n.source.set("p", 2, entities("s1-changed", true));
    // The connection evaluated version 2 once it compiled it (nothing else
    // reads this node); a ping sent after that is answered after that push.
    let deadline = tokio::time::Instant::now() + WAIT;
    while n.svc.cache.cached("p").map(|r| r.version) != Some(2) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "version 2 never evaluated"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    send(&mut c, json!({"type": "ping", "id": 2})).await;
    assert_eq!(next(&mut c).await, json!({"type": "pong", "id": 2}));
    n.source.set("p", 3, entities("s1-changed", false));
    let v3 = next(&mut c).await;
    assert_eq!(
        (v3["type"].as_str(), v3["version"].as_u64()),
        (Some("values"), Some(3))
    );
    assert_eq!(v3["response"]["feature_gates"][&g]["value"], false);
    assert_ne!(v3["etag"], v1["etag"]);
    // Switching user: values for the new one at once.
    send(&mut c, json!({"type": "user", "user": {"userID": "u2"}})).await;
    let u2 = next(&mut c).await;
    assert_eq!(u2["response"]["evaluated_keys"]["userID"], "u2");
    send(&mut c, json!({"type": "ping", "id": 7})).await;
    assert_eq!(next(&mut c).await, json!({"type": "pong", "id": 7}));
    assert_eq!(n.svc.live_connection_count(), 1);
}

#[tokio::test]
async fn a_client_holding_the_current_values_gets_none() {
    let n = node(InitializeConfig::default()).await;
    let user = json!({"userID": "u1"});
    let tag = post_user(&n, CLIENT_KEY, &user).await.headers["etag"].clone();
    let mut c = ws(&n, CLIENT_SUBPROTOCOL).await;
    send(
        &mut c,
        json!({"type": "hello", "key": CLIENT_KEY, "user": user, "have_etag": tag}),
    )
    .await;
    assert_eq!(next(&mut c).await["type"], "welcome");
    send(&mut c, json!({"type": "ping", "id": 1})).await;
    // Had values been sent, they would come before the pong.
    assert_eq!(next(&mut c).await["type"], "pong");
}

#[tokio::test]
async fn the_client_stream_refuses_server_keys_bad_users_and_other_protocols() {
    let n = node(InitializeConfig::default()).await;
    let cases = [
        (
            json!({"type": "hello", "key": SERVER_KEY, "user": {}}),
            4001,
        ),
        (json!({"type": "hello", "key": "nope", "user": {}}), 4001),
        (
            json!({"type": "hello", "key": CLIENT_KEY, "user": [1]}),
            4000,
        ),
        (
            json!({"type": "hello", "key": CLIENT_KEY, "user": {}, "hash": "md5"}),
            4000,
        ),
        (json!({"type": "ping", "id": 1}), 4000),
    ];
    for (hello, code) in cases {
        let mut c = ws(&n, CLIENT_SUBPROTOCOL).await;
        send(&mut c, hello.clone()).await;
        let bye = next(&mut c).await;
        assert_eq!(bye["type"], "goodbye", "{hello}");
        assert_eq!(bye["code"], code, "{hello}");
        assert_eq!(next(&mut c).await["code"], code);
    }
    let mut c = ws(&n, "flagraft.v1").await;
    send(
        &mut c,
        json!({"type": "hello", "key": CLIENT_KEY, "user": {}}),
    )
    .await;
    assert_eq!(next(&mut c).await["code"], 4003);
    assert_eq!(n.svc.live_connection_count(), 0);
}

mod props {
    use super::super::handler::{etag_matches_value, parse_body};
    use proptest::prelude::*;

    proptest! {
        /// Any body is parsed or refused with a 400, never a panic.
        #[test]
        fn any_body_is_parsed_or_refused(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            if let Err(e) = parse_body(&bytes) {
                prop_assert_eq!(e.status.as_u16(), 400);
            }
        }

        #[test]
        fn json_like_bodies_are_parsed_or_refused(s in r#"[{}\[\]":,a-zA-Z0-9 ]{0,80}"#) {
            if let Err(e) = parse_body(s.as_bytes()) {
                prop_assert_eq!(e.status.as_u16(), 400);
            }
        }

        #[test]
        fn etag_lists_match_their_members(tags in prop::collection::vec("\"[a-z0-9-]{1,12}\"", 1..5)) {
            let list = tags.join(", ");
            for t in &tags {
                prop_assert!(etag_matches_value(&list, t));
            }
            prop_assert!(!etag_matches_value(&list, "\"not-there-at-all\""));
        }
    }
}
