//! `Client::builder()`: endpoints, key, environment, cache, local mode.

use super::cache;
use super::client::{Client, ClientError, Inner};
use super::shared::Shared;
use super::state::{RulesetState, StateSource};
use super::stream::{self, StreamSettings};
use crate::entity::Entity;
use crate::eval::EvalOptions;
use crate::protocol::{DEFAULT_MAX_SERVER_MESSAGE_BYTES, MAX_KEY_BYTES, STREAM_PATH};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Largest local rules file read.
const MAX_LOCAL_FILE_BYTES: u64 = 64 * 1024 * 1024;

enum Local {
    Entities(Vec<Entity>),
    File(PathBuf),
}

pub struct ClientBuilder {
    endpoints: Vec<String>,
    sdk_key: Option<String>,
    eval: EvalOptions,
    disk_cache: Option<PathBuf>,
    cache_min_interval: Duration,
    local: Option<Local>,
    init_timeout: Duration,
    connect_timeout: Duration,
    backoff_base: Duration,
    backoff_max: Duration,
    max_message_bytes: usize,
    random_start: bool,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            endpoints: Vec::new(),
            sdk_key: None,
            eval: EvalOptions::default(),
            disk_cache: None,
            cache_min_interval: Duration::from_secs(1),
            local: None,
            init_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            max_message_bytes: DEFAULT_MAX_SERVER_MESSAGE_BYTES,
            random_start: true,
        }
    }
}

/// `host:port`, `http://host:port` or `ws://host:port[/path]` → a stream URL.
pub(crate) fn stream_url(endpoint: &str) -> Result<String, ClientError> {
    let e = endpoint.trim();
    let (scheme, rest) = if let Some(r) = e.strip_prefix("ws://") {
        ("ws", r)
    } else if let Some(r) = e.strip_prefix("wss://") {
        ("wss", r)
    } else if let Some(r) = e.strip_prefix("http://") {
        ("ws", r)
    } else if let Some(r) = e.strip_prefix("https://") {
        ("wss", r)
    } else if e.contains("://") {
        return Err(ClientError::Config(format!(
            "unsupported endpoint {endpoint:?}"
        )));
    } else {
        ("ws", e)
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.starts_with('/') {
        return Err(ClientError::Config(format!(
            "endpoint {endpoint:?} has no host"
        )));
    }
    Ok(if rest.contains('/') {
        format!("{scheme}://{rest}")
    } else {
        format!("{scheme}://{rest}{STREAM_PATH}")
    })
}

impl ClientBuilder {
    /// Nodes to connect to (any of them; the client fails over between them).
    pub fn endpoints<I, S>(mut self, endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.endpoints = endpoints.into_iter().map(Into::into).collect();
        self
    }

    /// Start with a random endpoint (default, spreads clients) or, with false,
    /// with the first one listed (e.g. the nearest node); failover goes round the list.
    pub fn random_start(mut self, random: bool) -> Self {
        self.random_start = random;
        self
    }

    /// A server key of the project.
    pub fn sdk_key(mut self, key: impl Into<String>) -> Self {
        self.sdk_key = Some(key.into());
        self
    }

    /// The environment tier (e.g. "production") for rules that check it.
    pub fn environment(mut self, tier: &str) -> Self {
        self.eval = self.eval.with_environment(tier);
        self
    }

    /// Full evaluation options (IP table, fixed clock...).
    pub fn eval_options(mut self, opts: EvalOptions) -> Self {
        self.eval = opts;
        self
    }

    /// Keep the last applied rules in this file and start from it when no node answers.
    pub fn disk_cache(mut self, path: impl Into<PathBuf>) -> Self {
        self.disk_cache = Some(path.into());
        self
    }

    /// At most one cache write per this interval (default 1 s).
    pub fn disk_cache_min_interval(mut self, d: Duration) -> Self {
        self.cache_min_interval = d;
        self
    }

    /// Local mode: these rules, no network.
    pub fn local_rules(mut self, entities: Vec<Entity>) -> Self {
        self.local = Some(Local::Entities(entities));
        self
    }

    /// Local mode: rules from a file (a DCS document or a JSON array of entities).
    pub fn local_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.local = Some(Local::File(path.into()));
        self
    }

    /// How long `build` waits for the first ruleset from a node (default 5 s).
    pub fn init_timeout(mut self, d: Duration) -> Self {
        self.init_timeout = d;
        self
    }

    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Reconnect backoff: first delay and cap (defaults 100 ms, 30 s).
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max;
        self
    }

    /// Largest message accepted from a node (a snapshot is one message).
    pub fn max_message_bytes(mut self, n: usize) -> Self {
        self.max_message_bytes = n;
        self
    }

    /// Start the client. With a network, waits up to the init timeout for the
    /// first ruleset; it returns anyway after that (with the disk cache's rules
    /// or code defaults, see `health()`) and keeps connecting in the background.
    pub async fn build(self) -> Result<Client, ClientError> {
        if let Some(local) = self.local {
            return build_local(local, self.eval);
        }
        let key = self
            .sdk_key
            .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_BYTES)
            .ok_or_else(|| ClientError::Config("an sdk_key (1..=256 bytes) is required".into()))?;
        if self.endpoints.is_empty() {
            return Err(ClientError::Config(
                "at least one endpoint is required".into(),
            ));
        }
        let endpoints = self
            .endpoints
            .iter()
            .map(|e| stream_url(e))
            .collect::<Result<Vec<_>, _>>()?;
        let key_id = cache::key_id(&key);
        let mut cache_error = None;
        let initial = match &self.disk_cache {
            Some(path) => match cache::load(path, &key_id) {
                Ok(Some(state)) => state,
                Ok(None) => RulesetState::empty(),
                Err(e) => {
                    cache_error = Some(e.to_string());
                    RulesetState::empty()
                }
            },
            None => RulesetState::empty(),
        };
        let shared = Arc::new(Shared::new(initial, self.eval));
        shared.health_mut().last_error = cache_error;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let settings = StreamSettings {
            endpoints,
            sdk_key: key,
            connect_timeout: self.connect_timeout,
            backoff_base: self.backoff_base,
            backoff_max: self.backoff_max,
            max_message_bytes: self.max_message_bytes,
            random_start: self.random_start,
        };
        let mut tasks = vec![tokio::spawn(stream::run(
            Arc::clone(&shared),
            settings,
            shutdown_rx.clone(),
        ))];
        if let Some(path) = self.disk_cache {
            tasks.push(tokio::spawn(cache_writer(
                Arc::clone(&shared),
                path,
                key_id,
                self.cache_min_interval,
                shutdown_rx,
            )));
        }
        let mut version = shared.version.subscribe();
        let from_network = {
            let shared = Arc::clone(&shared);
            move |_: &u64| shared.state.load().source == StateSource::Network
        };
        let _ = tokio::time::timeout(self.init_timeout, version.wait_for(from_network)).await;
        Ok(Client::from_inner(Inner {
            shared,
            shutdown,
            tasks: Mutex::new(tasks),
            local: false,
        }))
    }
}

fn build_local(local: Local, eval: EvalOptions) -> Result<Client, ClientError> {
    let entities = match local {
        Local::Entities(e) => e,
        Local::File(path) => read_local_file(&path)?,
    };
    let state = RulesetState::from_entities(1, 0, StateSource::Local, entities, None)
        .map_err(|e| ClientError::LocalRules(e.to_string()))?;
    Ok(Client::from_inner(Inner {
        shared: Arc::new(Shared::new(state, eval)),
        shutdown: watch::channel(false).0,
        tasks: Mutex::new(Vec::new()),
        local: true,
    }))
}

fn read_local_file(path: &Path) -> Result<Vec<Entity>, ClientError> {
    let err = |r: String| ClientError::LocalRules(format!("{}: {r}", path.display()));
    let len = std::fs::metadata(path)
        .map_err(|e| err(e.to_string()))?
        .len();
    if len > MAX_LOCAL_FILE_BYTES {
        return Err(err(format!("{len} bytes, over the limit")));
    }
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    // A JSON array is a list of entities; an object is a DCS document.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))
    } else {
        crate::dcs::entities_from_dcs(&bytes).map_err(|e| err(e.to_string()))
    }
}

/// Write each newly applied version to the cache, at most once per `min_interval`.
async fn cache_writer(
    shared: Arc<Shared>,
    path: PathBuf,
    key_id: String,
    min_interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut version = shared.version.subscribe();
    let mut written = None;
    // Ends on shutdown or when the client is gone.
    loop {
        tokio::select! {
            changed = version.changed() => if changed.is_err() { return },
            _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => return,
        }
        let state = shared.state.load_full();
        if state.source != StateSource::Network || written == Some(state.version) {
            continue;
        }
        let (p, k) = (path.clone(), key_id.clone());
        let st = Arc::clone(&state);
        match tokio::task::spawn_blocking(move || cache::store(&p, &k, &st)).await {
            Ok(Ok(())) => written = Some(state.version),
            Ok(Err(e)) => shared.health_mut().last_error = Some(e.to_string()),
            Err(e) => shared.health_mut().last_error = Some(format!("cache writer: {e}")),
        }
        // Rate limit, not synchronisation: later versions are picked up after it.
        tokio::select! {
            _ = tokio::time::sleep(min_interval) => {}
            _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_become_stream_urls() {
        assert_eq!(
            stream_url("127.0.0.1:80").unwrap(),
            "ws://127.0.0.1:80/v1/stream"
        );
        assert_eq!(stream_url("http://h:1/").unwrap(), "ws://h:1/v1/stream");
        assert_eq!(stream_url("https://h").unwrap(), "wss://h/v1/stream");
        assert_eq!(stream_url("ws://h:1/custom").unwrap(), "ws://h:1/custom");
        assert!(stream_url("ftp://h").is_err());
        assert!(stream_url("http://").is_err());
    }
}
