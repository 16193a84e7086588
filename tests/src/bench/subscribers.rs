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
use rand::Rng;
use serde::Deserialize;
use std::borrow::Cow;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};

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
    /// Per version and node (`version * endpoints.len() + the node's position`): when the
    /// first and the last of that node's subscribers reached the version.
    spans: Vec<Span>,
    /// The origin of the times in `spans`.
    epoch: Instant,
    done_tx: mpsc::UnboundedSender<(u64, Instant)>,
    pub violations: AtomicU64,
    pub reconnects: AtomicU64,
    pub snapshots: AtomicU64,
    initial: Semaphore,
}

/// When the first and the last of one node's subscribers reached one version, in ns since the
/// fleet's epoch (`u64::MAX` and 0 until one has).
struct Span {
    first: AtomicU64,
    last: AtomicU64,
}

/// When the first and the last subscriber of one node reached a version.
#[derive(Clone, Copy, Debug)]
pub struct NodeSpan {
    pub node: u64,
    pub first: Instant,
    pub last: Instant,
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
        let spans = (0..tracked * endpoints.len())
            .map(|_| Span {
                first: AtomicU64::new(u64::MAX),
                last: AtomicU64::new(0),
            })
            .collect();
        let fleet = Fleet {
            total,
            key: key.into(),
            endpoints,
            stop: tokio::sync::watch::channel(false).0,
            connected: AtomicUsize::new(0),
            node_of: (0..total).map(|_| AtomicU64::new(0)).collect(),
            version_of: (0..total).map(|_| AtomicU64::new(0)).collect(),
            reached: (0..tracked).map(|_| AtomicU32::new(0)).collect(),
            spans,
            epoch: Instant::now(),
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
        let node = self.node_of[i].load(Ordering::Relaxed);
        let node_pos = self.endpoints.iter().position(|(id, _)| *id == node);
        let at =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        for v in from + 1..=to {
            let Some(slot) = usize::try_from(v).ok().and_then(|v| self.reached.get(v)) else {
                break;
            };
            if let Some(span) = node_pos.and_then(|pos| self.span(v, pos)) {
                // Only the first subscriber writes `first` (a load, not a contended write).
                if span.first.load(Ordering::Relaxed) > at {
                    span.first.fetch_min(at, Ordering::Relaxed);
                }
                span.last.fetch_max(at, Ordering::Relaxed);
            }
            if slot.fetch_add(1, Ordering::AcqRel) as usize + 1 == self.total {
                let _ = self.done_tx.send((v, now));
            }
        }
    }

    fn span(&self, version: u64, node_pos: usize) -> Option<&Span> {
        let v = usize::try_from(version).ok()?;
        self.spans
            .get(v.checked_mul(self.endpoints.len())?.checked_add(node_pos)?)
    }

    /// Per node that has subscribers at `version`: when the first and the last of them got it.
    pub fn node_spans(&self, version: u64) -> Vec<NodeSpan> {
        self.endpoints
            .iter()
            .enumerate()
            .filter_map(|(pos, (node, _))| {
                let span = self.span(version, pos)?;
                let first = span.first.load(Ordering::Relaxed);
                let last = span.last.load(Ordering::Relaxed);
                (first != u64::MAX).then(|| NodeSpan {
                    node: *node,
                    first: self.epoch + Duration::from_nanos(first),
                    last: self.epoch + Duration::from_nanos(last),
                })
            })
            .collect()
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
    let connect = wire::Conn::connect(port, STREAM_PATH, SUBPROTOCOL);
    let mut ws = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(ws)) => ws,
        _ => return End::Failed,
    };
    if ws.send_text(&hello(&fleet.key, held)).await.is_err() {
        return End::Failed;
    }
    let mut permit = permit;
    let mut synced = false;
    let mut pending_snapshot: Option<(u64, String)> = None;
    let mut ping = tokio::time::interval(Duration::from_secs(3600));
    ping.tick().await;
    let mut ping_id = 0u64;
    // One future for the whole session, not one per message.
    let stop = stopped(stop);
    tokio::pin!(stop);
    let end = 'session: loop {
        // Every whole frame received so far, then wait for more.
        loop {
            let text = match ws.next_frame() {
                Ok(Some(wire::Frame::Text(t))) => t,
                Ok(Some(wire::Frame::Close(code))) => break 'session End::Closed(code),
                Ok(Some(wire::Frame::Other)) => continue,
                Ok(None) => break,
                Err(_) => {
                    fleet.violations.fetch_add(1, Ordering::Relaxed);
                    break 'session End::Failed;
                }
            };
            if let Some(d) = DeltaHeader::read(text) {
                // The hot path: every commit, every subscriber.
                if d.from != held.version {
                    fleet.violations.fetch_add(1, Ordering::Relaxed);
                    held.digest.clear();
                    break 'session End::Failed;
                }
                apply(fleet, i, held, d.to, d.digest);
                continue;
            }
            let Ok(h) = serde_json::from_str::<Header>(text) else {
                fleet.violations.fetch_add(1, Ordering::Relaxed);
                break 'session End::Failed;
            };
            match h.kind.as_ref() {
                "welcome" => {
                    if let Some(hb) = h.heartbeat_ms.filter(|&hb| hb > 0) {
                        let hb = Duration::from_millis(hb);
                        // A random phase, as the SDK pings.
                        let first = tokio::time::Instant::now() + jitter(hb / 2, hb);
                        ping = tokio::time::interval_at(first, hb);
                    }
                    fleet.node_of[i].store(h.node_id.unwrap_or(node), Ordering::Relaxed);
                }
                "snapshot" => {
                    fleet.snapshots.fetch_add(1, Ordering::Relaxed);
                    let (Some(v), Some(d)) = (h.version, h.digest) else {
                        fleet.violations.fetch_add(1, Ordering::Relaxed);
                        break 'session End::Failed;
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
                        break 'session End::Failed;
                    };
                    if from != held.version {
                        fleet.violations.fetch_add(1, Ordering::Relaxed);
                        // Start over from a snapshot, as the SDK would.
                        held.digest.clear();
                        break 'session End::Failed;
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
        }
        if ws.answer_pings().await.is_err() {
            break End::Failed;
        }
        // Biased: a message that is already in is read without polling the
        // timer or the stop signal first (no random branch order per message).
        tokio::select! {
            biased;
            r = ws.fill() => match r {
                Ok(true) => {}
                Ok(false) | Err(_) => break End::Failed,
            },
            _ = ping.tick() => {
                ping_id += 1;
                let p = format!("{{\"type\":\"ping\",\"id\":{ping_id}}}");
                if ws.send_text(&p).await.is_err() {
                    break End::Failed;
                }
            }
            _ = &mut stop => {
                ws.close().await;
                break End::Stopped;
            }
        }
    };
    if synced {
        fleet.connected.fetch_sub(1, Ordering::Relaxed);
    }
    fleet.node_of[i].store(0, Ordering::Relaxed);
    end
}

/// The client side of RFC 6455, only as much as a bench subscriber needs:
/// the upgrade, reading whole unfragmented frames out of one reused buffer
/// (no allocation or copy per message), masked text, pong and close frames.
mod wire {
    use std::io;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};

    /// Initial receive buffer; it grows to the largest frame, at most
    /// [`super::MAX_MESSAGE_BYTES`].
    const BUFFER: usize = 8 * 1024;
    const MAX_HANDSHAKE: usize = 8 * 1024;

    pub enum Frame<'a> {
        Text(&'a str),
        Close(Option<u16>),
        /// Ping (answered by [`Conn::answer_pings`]) or pong.
        Other,
    }

    pub struct Conn {
        stream: TcpStream,
        buf: Vec<u8>,
        /// Bytes of `buf` received and not yet consumed: `start..end`.
        start: usize,
        end: usize,
        pings: Vec<Vec<u8>>,
    }

    fn bad(what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, what.to_string())
    }

    impl Conn {
        pub async fn connect(port: u16, path: &str, protocol: &str) -> io::Result<Conn> {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
            stream.set_nodelay(true)?;
            let key = generate_key();
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).await?;
            let mut conn = Conn {
                stream,
                buf: vec![0; BUFFER],
                start: 0,
                end: 0,
                pings: Vec::new(),
            };
            let head_len = loop {
                if let Some(p) = conn.buf[..conn.end]
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                {
                    break p + 4;
                }
                if conn.end >= MAX_HANDSHAKE || !conn.fill().await? {
                    return Err(bad("no upgrade response"));
                }
            };
            let head = std::str::from_utf8(&conn.buf[..head_len]).map_err(|_| bad("response"))?;
            let accept = derive_accept_key(key.as_bytes());
            let header = |name: &str| {
                head.lines().find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
                })
            };
            if !head.starts_with("HTTP/1.1 101")
                || header("sec-websocket-accept") != Some(accept.as_str())
                || header("sec-websocket-protocol") != Some(protocol)
            {
                return Err(bad("upgrade refused"));
            }
            conn.start = head_len;
            Ok(conn)
        }

        /// Receives more bytes; false when the peer closed the connection.
        pub async fn fill(&mut self) -> io::Result<bool> {
            if self.start == self.end {
                (self.start, self.end) = (0, 0);
            } else if self.end == self.buf.len() {
                // Make room: move the unconsumed bytes to the front, or grow.
                if self.start > 0 {
                    self.buf.copy_within(self.start..self.end, 0);
                    (self.start, self.end) = (0, self.end - self.start);
                } else if self.buf.len() < super::MAX_MESSAGE_BYTES + 14 {
                    let len = (self.buf.len() * 2).min(super::MAX_MESSAGE_BYTES + 14);
                    self.buf.resize(len, 0);
                } else {
                    return Err(bad("frame too large"));
                }
            }
            let n = self.stream.read(&mut self.buf[self.end..]).await?;
            self.end += n;
            Ok(n > 0)
        }

        /// The next whole frame received, if any.
        pub fn next_frame(&mut self) -> io::Result<Option<Frame<'_>>> {
            let Some((opcode, payload)) = parse(&self.buf[self.start..self.end])? else {
                return Ok(None);
            };
            let (from, to) = (self.start + payload.start, self.start + payload.end);
            self.start = to;
            let payload = &self.buf[from..to];
            Ok(Some(match opcode {
                0x1 => Frame::Text(std::str::from_utf8(payload).map_err(|_| bad("utf-8"))?),
                0x8 => Frame::Close(payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]))),
                0x9 => {
                    self.pings.push(payload.to_vec());
                    Frame::Other
                }
                0xA => Frame::Other,
                _ => return Err(bad("unexpected opcode")),
            }))
        }

        pub async fn answer_pings(&mut self) -> io::Result<()> {
            for p in std::mem::take(&mut self.pings) {
                self.stream.write_all(&masked(0xA, &p)).await?;
            }
            Ok(())
        }

        pub async fn send_text(&mut self, text: &str) -> io::Result<()> {
            self.stream.write_all(&masked(0x1, text.as_bytes())).await
        }

        /// Says goodbye (a close frame, 1000) and shuts the write side.
        pub async fn close(&mut self) {
            let _ = self
                .stream
                .write_all(&masked(0x8, &1000u16.to_be_bytes()))
                .await;
            let _ = self.stream.shutdown().await;
        }
    }

    /// A whole server frame at the start of `b`: (opcode, payload range).
    /// Server frames are never masked; this bench's node never fragments.
    pub fn parse(b: &[u8]) -> io::Result<Option<(u8, std::ops::Range<usize>)>> {
        let (Some(&b0), Some(&b1)) = (b.first(), b.get(1)) else {
            return Ok(None);
        };
        if b0 & 0x80 == 0 || b0 & 0x70 != 0 {
            return Err(bad("fragmented frame or reserved bits"));
        }
        if b1 & 0x80 != 0 {
            return Err(bad("masked server frame"));
        }
        let (len, at) = match b1 & 0x7f {
            126 => match b.get(2..4) {
                Some(l) => (u64::from(u16::from_be_bytes([l[0], l[1]])), 4),
                None => return Ok(None),
            },
            127 => match b.get(2..10) {
                Some(l) => (
                    u64::from_be_bytes(l.try_into().map_err(|_| bad("length"))?),
                    10,
                ),
                None => return Ok(None),
            },
            n => (u64::from(n), 2),
        };
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= super::MAX_MESSAGE_BYTES)
            .ok_or_else(|| bad("frame too large"))?;
        if b.len() < at + len {
            return Ok(None);
        }
        Ok(Some((b0 & 0x0f, at..at + len)))
    }

    /// A final client frame, masked as RFC 6455 requires of clients.
    pub fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask: [u8; 4] = rand::random();
        let mut out = Vec::with_capacity(payload.len() + 14);
        out.push(0x80 | opcode);
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= usize::from(u16::MAX) => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }
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
    fn the_bench_client_reads_frames_whole_and_writes_masked_ones() {
        use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
        // Server frames: short, 16-bit and 64-bit lengths; partial input waits.
        for len in [0usize, 5, 125, 126, 2048, 65_535, 65_536, 70_000] {
            let payload = vec![b'a'; len];
            let mut frame = vec![0x81];
            match len {
                n if n < 126 => frame.push(n as u8),
                n if n <= 65_535 => {
                    frame.push(126);
                    frame.extend_from_slice(&(n as u16).to_be_bytes());
                }
                n => {
                    frame.push(127);
                    frame.extend_from_slice(&(n as u64).to_be_bytes());
                }
            }
            frame.extend_from_slice(&payload);
            let (op, range) = wire::parse(&frame).unwrap().unwrap();
            assert_eq!((op, range.len()), (1, len));
            assert_eq!(range.end, frame.len());
            assert!(wire::parse(&frame[..frame.len() - 1]).unwrap().is_none() || len == 0);
        }
        assert!(wire::parse(&[0x01, 0x00]).is_err(), "fragments are refused");
        assert!(
            wire::parse(&[0x81, 0x80, 0, 0, 0, 0]).is_err(),
            "masked server frames too"
        );
        // Client frames read back with tungstenite's parser, unmasked.
        for len in [3usize, 200, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let frame = wire::masked(0x1, &payload);
            let mut cursor = std::io::Cursor::new(&frame);
            let (header, n) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            let mask = header.mask.expect("client frames are masked");
            let at = cursor.position() as usize;
            assert_eq!(n as usize, len);
            let unmasked: Vec<u8> = frame[at..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(unmasked, payload);
        }
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
    fn each_node_records_its_first_and_last_subscriber_per_version() {
        let (fleet, _done) = Fleet::new(3, "k", vec![(1, 0), (2, 0)], 8);
        fleet.node_of[0].store(1, Ordering::Relaxed);
        fleet.node_of[1].store(1, Ordering::Relaxed);
        fleet.node_of[2].store(2, Ordering::Relaxed);
        fleet.advance(0, 0, 2);
        fleet.advance(2, 0, 1);
        fleet.advance(1, 0, 2);

        let v1 = fleet.node_spans(1);
        assert_eq!(v1.iter().map(|s| s.node).collect::<Vec<_>>(), vec![1, 2]);
        assert!(v1[0].first <= v1[0].last);
        assert!(v1[1].first == v1[1].last, "one subscriber on node 2");
        let v2 = fleet.node_spans(2);
        assert_eq!(
            v2.iter().map(|s| s.node).collect::<Vec<_>>(),
            vec![1],
            "node 2's subscriber has not reached version 2"
        );
        assert!(fleet.node_spans(3).is_empty());
        assert!(fleet.node_spans(100).is_empty(), "beyond the tracked range");
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
