//! A fleet of lightweight `flagraft.v1` subscribers: raw WebSocket
//! connections (tokio-tungstenite) that follow project `default`'s versions
//! without keeping the ruleset, and record when every one of them has reached
//! each version.
//!
//! Each subscriber checks the protocol's ordering (a delta starts at the
//! version it holds, versions never go back) and counts violations; it does
//! not recompute digests (that would make the bench process, which shares
//! the machine's two cores with the nodes, the bottleneck) but resumes with
//! the last digest it was sent, as the SDK does. Reconnects follow the SDK's
//! policy: the next endpoint, after the SDK's backoff (100 ms base, jittered)
//! on a network failure or a jittered 0–250 ms on a "reconnect now" close.
//!
//! The fleet shares the machine's cores with the nodes, so it is kept cheap per
//! message: one single-threaded runtime per core (no work stealing, no
//! cross-thread wake-ups), and a delta's header (`from_version`, `to_version`,
//! `digest`) read from the fixed places the node's encoder puts it, with a
//! full JSON parse of the header fields only when the text does not have that
//! shape.

use flagraft_client::protocol::{CloseCode, Reaction, STREAM_PATH, SUBPROTOCOL};
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde::Deserialize;
use std::borrow::Cow;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// Versions tracked per fleet (the bench commits far fewer).
const MAX_TRACKED_VERSION: usize = 1 << 16;
/// Largest message a bench subscriber accepts.
const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Handshakes in flight while the fleet first connects (a node's listen
/// backlog is finite; the initial ramp-up is not what is measured).
const INITIAL_CONNECTS_IN_FLIGHT: usize = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Longest `stop` waits for the subscribers to close before aborting them.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// State shared by the fleet's tasks and the bench driving it.
pub struct Fleet {
    total: usize,
    key: String,
    /// HTTP ports of the nodes, with their node ids.
    endpoints: Vec<(u64, u16)>,
    /// Set once to stop every subscriber; a watch, so no task can miss it.
    stop: tokio::sync::watch::Sender<bool>,
    /// Subscribers whose session is synced (first heartbeat after welcome seen).
    connected: AtomicUsize,
    /// Per subscriber: the node it is synced with (0: none).
    node_of: Vec<AtomicU64>,
    /// Per subscriber: the version it holds.
    version_of: Vec<AtomicU64>,
    /// Per version: subscribers that reached it.
    reached: Vec<AtomicU32>,
    done_tx: mpsc::UnboundedSender<(u64, Instant)>,
    pub violations: AtomicU64,
    pub reconnects: AtomicU64,
    pub snapshots: AtomicU64,
    initial: Semaphore,
}

/// The driving side: subscriber threads and the "version reached by all" feed.
pub struct FleetHandle {
    pub fleet: Arc<Fleet>,
    threads: Vec<std::thread::JoinHandle<()>>,
    done_rx: mpsc::UnboundedReceiver<(u64, Instant)>,
    seen: std::collections::HashMap<u64, Instant>,
}

/// The fields of a node message a bench subscriber needs; the rest is skipped.
#[derive(Deserialize)]
struct Header<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    node_id: Option<u64>,
    heartbeat_ms: Option<u64>,
    version: Option<u64>,
    from_version: Option<u64>,
    to_version: Option<u64>,
    #[serde(borrow)]
    digest: Option<Cow<'a, str>>,
    more: Option<bool>,
}

impl Fleet {
    /// Fleet state for `total` subscribers tracking versions below `tracked`.
    fn new(
        total: usize,
        key: &str,
        endpoints: Vec<(u64, u16)>,
        tracked: usize,
    ) -> (Fleet, mpsc::UnboundedReceiver<(u64, Instant)>) {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let fleet = Fleet {
            total,
            key: key.into(),
            endpoints,
            stop: tokio::sync::watch::channel(false).0,
            connected: AtomicUsize::new(0),
            node_of: (0..total).map(|_| AtomicU64::new(0)).collect(),
            version_of: (0..total).map(|_| AtomicU64::new(0)).collect(),
            reached: (0..tracked).map(|_| AtomicU32::new(0)).collect(),
            done_tx,
            violations: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            snapshots: AtomicU64::new(0),
            initial: Semaphore::new(INITIAL_CONNECTS_IN_FLIGHT),
        };
        (fleet, done_rx)
    }

    /// Spawns `total` subscribers, subscriber `i` starting on endpoint `i % n`,
    /// over one single-threaded runtime per core.
    pub fn spawn(
        total: usize,
        key: &str,
        endpoints: Vec<(u64, u16)>,
    ) -> std::io::Result<FleetHandle> {
        let (fleet, done_rx) = Fleet::new(total, key, endpoints, MAX_TRACKED_VERSION);
        let fleet = Arc::new(fleet);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = (0..cores)
            .map(|t| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let fleet = Arc::clone(&fleet);
                std::thread::Builder::new()
                    .name(format!("subscribers-{t}"))
                    .spawn(move || rt.block_on(run_share(fleet, t, cores)))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(FleetHandle {
            fleet,
            threads,
            done_rx,
            seen: std::collections::HashMap::new(),
        })
    }

    pub fn total(&self) -> usize {
        self.total
    }

    pub fn connected(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
    }

    /// Synced subscribers per node id.
    pub fn per_node(&self) -> std::collections::BTreeMap<u64, usize> {
        let mut m = std::collections::BTreeMap::new();
        for n in &self.node_of {
            let id = n.load(Ordering::Relaxed);
            if id != 0 {
                *m.entry(id).or_insert(0) += 1;
            }
        }
        m
    }

    /// Subscribers holding at least `version`.
    pub fn at_least(&self, version: u64) -> usize {
        self.version_of
            .iter()
            .filter(|v| v.load(Ordering::Relaxed) >= version)
            .count()
    }

    /// Subscriber `i` moved from `from` to `to`: count every version it passed.
    fn advance(&self, i: usize, from: u64, to: u64) {
        if to <= from {
            if to < from {
                self.violations.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        self.version_of[i].store(to, Ordering::Relaxed);
        let now = Instant::now();
        for v in from + 1..=to {
            let Some(slot) = usize::try_from(v).ok().and_then(|v| self.reached.get(v)) else {
                break;
            };
            if slot.fetch_add(1, Ordering::AcqRel) as usize + 1 == self.total {
                let _ = self.done_tx.send((v, now));
            }
        }
    }
}

impl FleetHandle {
    /// Waits (bounded) until every subscriber has reached `version`; when the
    /// last one did.
    pub async fn all_reached(&mut self, version: u64, timeout: Duration) -> Option<Instant> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(&t) = self.seen.get(&version) {
                return Some(t);
            }
            match tokio::time::timeout_at(deadline, self.done_rx.recv()).await {
                Ok(Some((v, t))) => {
                    self.seen.insert(v, t);
                }
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Stops every subscriber (close frames sent) and waits for the threads
    /// (each aborts what has not stopped after [`STOP_TIMEOUT`]).
    pub async fn stop(self) {
        self.fleet.stop.send_replace(true);
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// One thread's share of the fleet (subscribers `t`, `t + threads`, ...),
/// until the fleet is stopped.
async fn run_share(fleet: Arc<Fleet>, t: usize, threads: usize) {
    let mut stop = fleet.stop.subscribe();
    let tasks: Vec<_> = (t..fleet.total)
        .step_by(threads.max(1))
        .map(|i| tokio::spawn(subscriber(Arc::clone(&fleet), i)))
        .collect();
    stopped(&mut stop).await;
    let all = futures_util::future::join_all(tasks);
    // Dropping the runtime after the timeout cancels whatever is left.
    let _ = tokio::time::timeout(STOP_TIMEOUT, all).await;
}

/// How a session ended.
enum End {
    Stopped,
    Closed(Option<u16>),
    Failed,
}

/// The state a subscriber keeps across sessions.
struct Held {
    version: u64,
    /// The digest after `version` (empty: none), its buffer reused.
    digest: String,
}

async fn subscriber(fleet: Arc<Fleet>, i: usize) {
    let n = fleet.endpoints.len();
    let mut at = i % n.max(1);
    let mut held = Held {
        version: 0,
        digest: String::new(),
    };
    let mut attempt: u32 = 0;
    let mut first = true;
    let mut stop = fleet.stop.subscribe();
    while !*stop.borrow() && n > 0 {
        let permit = if first {
            fleet.initial.acquire().await.ok()
        } else {
            None
        };
        let (node, port) = fleet.endpoints[at];
        let end = session(&fleet, i, (node, port), &mut held, permit, &mut stop).await;
        first = false;
        let delay = match end {
            End::Stopped => return,
            End::Closed(Some(code)) => match CloseCode::from_code(code).map(CloseCode::reaction) {
                Some(Reaction::ReconnectNow | Reaction::ReconnectElsewhere) => {
                    jitter(Duration::ZERO, Duration::from_millis(250))
                }
                Some(Reaction::Stop) => return,
                _ => backoff(&mut attempt),
            },
            End::Closed(None) | End::Failed => backoff(&mut attempt),
        };
        fleet.reconnects.fetch_add(1, Ordering::Relaxed);
        at = (at + 1) % n;
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

/// Resolves once the fleet is told to stop (at once if it already was).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = stop.wait_for(|s| *s).await;
}

/// The SDK's backoff: uniformly in [cap/2, cap], cap doubling from the base.
fn backoff(attempt: &mut u32) -> Duration {
    let cap = BACKOFF_BASE
        .saturating_mul(1u32 << (*attempt).min(16))
        .min(BACKOFF_MAX);
    *attempt = attempt.saturating_add(1);
    jitter(cap / 2, cap)
}

fn jitter(lo: Duration, hi: Duration) -> Duration {
    if hi <= lo {
        return lo;
    }
    let span = u64::try_from((hi - lo).as_micros()).unwrap_or(u64::MAX);
    lo + Duration::from_micros(rand::thread_rng().gen_range(0..=span))
}

fn hello(key: &str, held: &Held) -> String {
    let mut v = serde_json::json!({"type": "hello", "key": key, "sdk": "flagraft-bench"});
    if held.version > 0 {
        v["have_version"] = held.version.into();
        if !held.digest.is_empty() {
            v["have_digest"] = held.digest.as_str().into();
        }
    }
    v.to_string()
}

async fn session(
    fleet: &Fleet,
    i: usize,
    (node, port): (u64, u16),
    held: &mut Held,
    permit: Option<tokio::sync::SemaphorePermit<'_>>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> End {
    let Ok(mut request) = format!("ws://127.0.0.1:{port}{STREAM_PATH}").into_client_request()
    else {
        return End::Failed;
    };
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        tokio_tungstenite::tungstenite::http::HeaderValue::from_static(SUBPROTOCOL),
    );
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let connect = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
    let mut ws = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok((ws, _))) => ws,
        _ => return End::Failed,
    };
    if ws
        .send(Message::text(hello(&fleet.key, held)))
        .await
        .is_err()
    {
        return End::Failed;
    }
    let mut permit = permit;
    let mut synced = false;
    let mut pending_snapshot: Option<(u64, String)> = None;
    let mut ping = tokio::time::interval(Duration::from_secs(3600));
    ping.tick().await;
    let mut ping_id = 0u64;
    let end = loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = ping.tick() => {
                ping_id += 1;
                let p = format!("{{\"type\":\"ping\",\"id\":{ping_id}}}");
                if ws.send(Message::text(p)).await.is_err() {
                    break End::Failed;
                }
                continue;
            }
            _ = stopped(stop) => {
                let _ = ws.close(None).await;
                break End::Stopped;
            }
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(frame))) => break End::Closed(frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break End::Failed,
        };
        if let Some(d) = DeltaHeader::read(text.as_str()) {
            // The hot path: every commit, every subscriber.
            if d.from != held.version {
                fleet.violations.fetch_add(1, Ordering::Relaxed);
                held.digest.clear();
                break End::Failed;
            }
            apply(fleet, i, held, d.to, d.digest);
            continue;
        }
        let Ok(h) = serde_json::from_str::<Header>(text.as_str()) else {
            fleet.violations.fetch_add(1, Ordering::Relaxed);
            break End::Failed;
        };
        match h.kind.as_ref() {
            "welcome" => {
                if let Some(hb) = h.heartbeat_ms.filter(|&hb| hb > 0) {
                    let hb = Duration::from_millis(hb);
                    ping = tokio::time::interval_at(tokio::time::Instant::now() + hb, hb);
                }
                fleet.node_of[i].store(h.node_id.unwrap_or(node), Ordering::Relaxed);
            }
            "snapshot" => {
                fleet.snapshots.fetch_add(1, Ordering::Relaxed);
                let (Some(v), Some(d)) = (h.version, h.digest) else {
                    fleet.violations.fetch_add(1, Ordering::Relaxed);
                    break End::Failed;
                };
                if h.more == Some(true) {
                    pending_snapshot = Some((v, d.into_owned()));
                } else {
                    apply(fleet, i, held, v, &d);
                }
            }
            "snapshot_part" if h.more != Some(true) => {
                if let Some((v, d)) = pending_snapshot.take() {
                    apply(fleet, i, held, v, &d);
                }
            }
            "delta" => {
                let (Some(from), Some(to), Some(d)) = (h.from_version, h.to_version, h.digest)
                else {
                    fleet.violations.fetch_add(1, Ordering::Relaxed);
                    break End::Failed;
                };
                if from != held.version {
                    fleet.violations.fetch_add(1, Ordering::Relaxed);
                    // Start over from a snapshot, as the SDK would.
                    held.digest.clear();
                    break End::Failed;
                }
                apply(fleet, i, held, to, &d);
            }
            "heartbeat" if !synced => {
                // The node sends its first heartbeat right after the initial sync.
                synced = true;
                permit.take();
                fleet.connected.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    };
    if synced {
        fleet.connected.fetch_sub(1, Ordering::Relaxed);
    }
    fleet.node_of[i].store(0, Ordering::Relaxed);
    end
}

fn apply(fleet: &Fleet, i: usize, held: &mut Held, version: u64, digest: &str) {
    fleet.advance(i, held.version, version);
    held.version = held.version.max(version);
    held.digest.clear();
    held.digest.push_str(digest);
}

/// A delta's header, read without parsing its entities.
#[derive(Debug, PartialEq)]
struct DeltaHeader<'a> {
    from: u64,
    to: u64,
    digest: &'a str,
}

impl<'a> DeltaHeader<'a> {
    const PREFIX: &'static str = r#"{"type":"delta","from_version":"#;
    const TO: &'static str = r#","to_version":"#;
    const DIGEST: &'static str = r#","digest":""#;
    const END: &'static str = r#""}"#;
    const DIGEST_HEX: usize = 64;

    /// The header of a delta laid out as the node's encoder writes it (tag and
    /// versions first, digest last); None for anything else, which then gets
    /// a JSON parse.
    fn read(text: &'a str) -> Option<DeltaHeader<'a>> {
        let rest = text.strip_prefix(Self::PREFIX)?;
        let (from, rest) = leading_u64(rest)?;
        let (to, _) = leading_u64(rest.strip_prefix(Self::TO)?)?;
        let body = text.strip_suffix(Self::END)?;
        let split = body.len().checked_sub(Self::DIGEST_HEX)?;
        let digest = body.get(split..)?;
        body.get(..split)?.strip_suffix(Self::DIGEST)?;
        digest
            .bytes()
            .all(|b| b.is_ascii_hexdigit())
            .then_some(DeltaHeader { from, to, digest })
    }
}

/// A decimal u64 at the start of `s`, and what follows it.
fn leading_u64(s: &str) -> Option<(u64, &str)> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let n = s.get(..digits)?.parse().ok()?;
    Some((n, &s[digits..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jittered_bounds_up_to_the_cap() {
        let mut attempt = 0;
        let first = backoff(&mut attempt);
        assert!(first >= BACKOFF_BASE / 2 && first <= BACKOFF_BASE);
        for _ in 0..40 {
            assert!(backoff(&mut attempt) <= BACKOFF_MAX);
        }
        assert!(backoff(&mut attempt) >= BACKOFF_MAX / 2);
    }

    #[test]
    fn hello_resumes_only_with_a_version() {
        let fresh = Held {
            version: 0,
            digest: String::new(),
        };
        let v: serde_json::Value = serde_json::from_str(&hello("k", &fresh)).unwrap();
        assert_eq!(v["type"], "hello");
        assert!(v.get("have_version").is_none());
        let resumed = Held {
            version: 7,
            digest: "ab".repeat(32),
        };
        let v: serde_json::Value = serde_json::from_str(&hello("k", &resumed)).unwrap();
        assert_eq!(v["have_version"], 7);
        assert_eq!(v["have_digest"], "ab".repeat(32));
    }

    #[test]
    fn the_header_reads_a_delta_and_skips_its_entities() {
        let text = r#"{"type":"delta","from_version":3,"to_version":4,"commit_time_ms":1,
            "upserts":[{"key":{"kind":"gate","name":"g"},"body":{"a":[1,2,{"b":"c\"d"}]}}],
            "deletes":[],"digest":"00"}"#;
        let h: Header = serde_json::from_str(text).unwrap();
        assert_eq!(h.kind, "delta");
        assert_eq!((h.from_version, h.to_version), (Some(3), Some(4)));
        assert_eq!(h.digest.as_deref(), Some("00"));
    }

    #[test]
    fn the_fast_header_reads_what_the_node_encodes() {
        use flagraft_client::digest::RulesetDigest;
        use flagraft_client::entity::{Entity, EntityKey, EntityKind};
        use flagraft_client::protocol::{encode_server, Delta, ServerMessage};
        let mut digest = RulesetDigest::default();
        let gate = Entity {
            key: EntityKey::new(EntityKind::Gate, "g\"}"),
            body: serde_json::json!({"rules": [{"digest": "x"}], "pad": "}\"digest\":\""}),
        };
        digest.add(&[7u8; 32]);
        let msg = ServerMessage::Delta(Delta {
            from_version: 41,
            to_version: 42,
            commit_time_ms: 7,
            upserts: vec![gate],
            deletes: vec![EntityKey::new(EntityKind::Config, "c")],
            digest,
        });
        let text = encode_server(&msg).unwrap();
        let fast = DeltaHeader::read(&text).expect("the encoder's layout");
        let slow: Header = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (Some(fast.from), Some(fast.to)),
            (slow.from_version, slow.to_version)
        );
        assert_eq!(Some(fast.digest), slow.digest.as_deref());
    }

    #[test]
    fn the_fast_header_leaves_other_shapes_to_the_json_parser() {
        let d = "ab".repeat(32);
        for text in [
            r#"{"type":"heartbeat","head_version":3,"time_ms":1}"#.to_string(),
            format!(r#"{{"type":"delta","to_version":4,"from_version":3,"digest":"{d}"}}"#),
            format!(
                r#"{{"type":"delta","from_version":3,"to_version":4,"digest":"{}"}}"#,
                &d[1..]
            ),
            format!(r#"{{"type":"delta","from_version":,"to_version":4,"digest":"{d}"}}"#),
            format!(r#"{{"type":"delta","from_version":3,"to_version":4,"digest":"{d}","x":1}}"#),
            format!(
                r#"{{"type":"delta","from_version":3,"to_version":4,"digest":"{}zz"}}"#,
                &d[2..]
            ),
            "{\"type\":\"delta\",\"from_version\":3,\"to_version\":4é".to_string(),
        ] {
            assert_eq!(DeltaHeader::read(&text), None, "{text}");
        }
        let ok = format!(
            r#"{{"type":"delta","from_version":3,"to_version":4,"upserts":[],"deletes":[],"digest":"{d}"}}"#
        );
        assert_eq!(
            DeltaHeader::read(&ok),
            Some(DeltaHeader {
                from: 3,
                to: 4,
                digest: &d
            })
        );
    }

    #[test]
    fn advancing_counts_every_passed_version_once_per_subscriber() {
        let (fleet, mut done) = Fleet::new(2, "k", vec![], 16);
        fleet.advance(0, 0, 3);
        fleet.advance(1, 0, 2);
        assert!(done.try_recv().is_ok_and(|(v, _)| v == 1));
        assert!(done.try_recv().is_ok_and(|(v, _)| v == 2));
        assert!(
            done.try_recv().is_err(),
            "version 3 is not reached by all yet"
        );
        fleet.advance(1, 2, 3);
        fleet.advance(1, 3, 3);
        fleet.advance(1, 3, 1);
        assert_eq!(fleet.violations.load(Ordering::Relaxed), 1);
        assert_eq!(fleet.at_least(3), 2);
        assert!(done.try_recv().is_ok_and(|(v, _)| v == 3));
        assert!(done.try_recv().is_err(), "each version completes once");
    }

    #[test]
    fn versions_beyond_the_tracked_range_are_ignored() {
        let (fleet, mut done) = Fleet::new(1, "k", vec![], 4);
        fleet.advance(0, 0, 10);
        let got: Vec<u64> = std::iter::from_fn(|| done.try_recv().ok().map(|(v, _)| v)).collect();
        assert_eq!(got, vec![1, 2, 3]);
        assert_eq!(fleet.at_least(10), 1);
    }
}
