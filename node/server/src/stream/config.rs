//! Tunables of the update stream (the `[stream]` section of a node's config).

use serde::Deserialize;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamConfig {
    /// Heartbeat interval both ways; a peer silent for 3 intervals is dropped.
    pub heartbeat_ms: u64,
    /// Maximum connection age before a `max_age` goodbye.
    pub max_age_ms: u64,
    /// Fraction (0..=1) by which each connection's max age is randomly shortened.
    pub max_age_jitter: f64,
    /// Pushes queued per connection before it is cut off as too slow.
    pub backlog: usize,
    /// How long a client ahead of this node is held before `node_behind`.
    pub behind_wait_ms: u64,
    /// Time allowed between the upgrade and the hello.
    pub hello_timeout_ms: u64,
    /// Time allowed for one message to be written to a client.
    pub send_timeout_ms: u64,
    /// Connections beyond this are refused with `overloaded`.
    pub max_connections: usize,
    /// tungstenite read buffer (initial capacity) per connection.
    pub read_buffer_bytes: usize,
    /// tungstenite write buffer target per connection (0: write each frame at
    /// once). tungstenite only writes control frames (pong, close reply); messages
    /// are written as pre-built frames through the connection's bounded outbox.
    pub write_buffer_bytes: usize,
    /// Cap on tungstenite's write buffer of a connection.
    pub max_write_buffer_bytes: usize,
    /// Largest message a client may send.
    pub max_client_message_bytes: usize,
    /// Deltas one poll returns at most; beyond, a snapshot.
    pub max_poll_deltas: usize,
    /// Target size of each message of a streamed snapshot. tungstenite keeps a
    /// connection's write buffer at the size of the largest frame it sent, so
    /// this bounds the idle memory of a connection that received a snapshot.
    pub snapshot_part_bytes: usize,
    /// Optional static keys, key -> {project, kind}, accepted besides the
    /// replicated keys (created with the Admin API); revoked by editing the
    /// config and restarting.
    pub keys: std::collections::HashMap<String, super::keys::KeyGrant>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            heartbeat_ms: 15_000,
            max_age_ms: 3_600_000,
            max_age_jitter: 0.1,
            backlog: 64,
            behind_wait_ms: 5_000,
            hello_timeout_ms: 10_000,
            send_timeout_ms: 10_000,
            max_connections: 50_000,
            read_buffer_bytes: 4 * 1024,
            write_buffer_bytes: 0,
            max_write_buffer_bytes: 80 * 1024 * 1024,
            max_client_message_bytes: flagraft_client::protocol::MAX_CLIENT_MESSAGE_BYTES,
            max_poll_deltas: 1_000,
            snapshot_part_bytes: 8 * 1024,
            keys: std::collections::HashMap::new(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("stream config: {0}")]
pub struct StreamConfigError(pub &'static str);

impl StreamConfig {
    pub fn validate(&self) -> Result<(), StreamConfigError> {
        if !(100..=300_000).contains(&self.heartbeat_ms) {
            return Err(StreamConfigError("heartbeat_ms must be in 100..=300000"));
        }
        if self.max_age_ms < 1_000 {
            return Err(StreamConfigError("max_age_ms must be at least 1000"));
        }
        if !(0.0..=1.0).contains(&self.max_age_jitter) {
            return Err(StreamConfigError("max_age_jitter must be in 0..=1"));
        }
        if self.backlog == 0 || self.max_connections == 0 || self.max_poll_deltas == 0 {
            return Err(StreamConfigError(
                "backlog, max_connections and max_poll_deltas must be positive",
            ));
        }
        if self.max_client_message_bytes < 1024 {
            return Err(StreamConfigError(
                "max_client_message_bytes must be at least 1024",
            ));
        }
        if self.snapshot_part_bytes < 1024 {
            return Err(StreamConfigError(
                "snapshot_part_bytes must be at least 1024",
            ));
        }
        if self.max_write_buffer_bytes <= self.write_buffer_bytes {
            return Err(StreamConfigError(
                "max_write_buffer_bytes must exceed write_buffer_bytes",
            ));
        }
        Ok(())
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }

    /// This connection's age limit: max age shortened by a random jitter.
    /// When a connection's second heartbeat is due (the first goes out at once): at a random
    /// point of the second half of an interval, so connections opened together (a reconnect
    /// storm, a restart) do not all send their heartbeats in the same instant ever after.
    pub fn first_heartbeat_delay(&self) -> Duration {
        use rand::Rng;
        self.heartbeat()
            .mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
    }

    pub fn jittered_max_age(&self) -> Duration {
        use rand::Rng;
        let cut = rand::thread_rng().gen_range(0.0..=self.max_age_jitter);
        Duration::from_millis(self.max_age_ms).mul_f64(1.0 - cut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_heartbeats_spread_over_half_an_interval() {
        let c = StreamConfig::default();
        let delays: Vec<Duration> = (0..200).map(|_| c.first_heartbeat_delay()).collect();
        assert!(delays
            .iter()
            .all(|d| *d >= c.heartbeat() / 2 && *d <= c.heartbeat()));
        let (lo, hi) = (delays.iter().min(), delays.iter().max());
        assert!(hi > lo, "the delays differ");
    }

    #[test]
    fn defaults_are_valid_and_heartbeat_at_most_30s() {
        let c = StreamConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert!(c.heartbeat() <= Duration::from_secs(30));
    }

    #[test]
    fn jittered_age_stays_within_bounds() {
        let c = StreamConfig {
            max_age_ms: 10_000,
            max_age_jitter: 0.5,
            ..StreamConfig::default()
        };
        for _ in 0..100 {
            let age = c.jittered_max_age();
            assert!(age >= Duration::from_millis(5_000) && age <= Duration::from_millis(10_000));
        }
    }

    #[test]
    fn invalid_values_are_refused() {
        let c = StreamConfig {
            heartbeat_ms: 0,
            ..StreamConfig::default()
        };
        assert!(c.validate().is_err());
        let c = StreamConfig {
            max_age_jitter: 2.0,
            ..StreamConfig::default()
        };
        assert!(c.validate().is_err());
    }
}
