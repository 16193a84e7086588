//! Tunables of `/v1/initialize` and `/v1/stream/client` (the `[initialize]`
//! section of a node's config).

use serde::Deserialize;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InitializeConfig {
    /// Largest request body (a user) accepted, in bytes; larger is `413`.
    pub max_body_bytes: usize,
    /// Sustained requests per second allowed per client key (token bucket);
    /// 0 disables rate limiting. Beyond it: `429` with `Retry-After`.
    pub rate_per_key_per_sec: f64,
    /// Bucket size: requests a key may make at once after being idle.
    pub rate_burst: u32,
    /// Client-side stream connections a node accepts at most.
    pub live_max_connections: usize,
    /// Heartbeat interval of the client-side stream.
    pub live_heartbeat_ms: u64,
    /// Maximum age of a client-side stream connection (`4006 max_age` after).
    pub live_max_age_ms: u64,
    /// Time allowed between the upgrade and the hello.
    pub hello_timeout_ms: u64,
    /// Time allowed for one message to be written to a client.
    pub send_timeout_ms: u64,
}

impl Default for InitializeConfig {
    fn default() -> Self {
        InitializeConfig {
            max_body_bytes: 64 * 1024,
            rate_per_key_per_sec: 100.0,
            rate_burst: 200,
            live_max_connections: 10_000,
            live_heartbeat_ms: 15_000,
            live_max_age_ms: 3_600_000,
            hello_timeout_ms: 10_000,
            send_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("initialize config: {0}")]
pub struct InitializeConfigError(pub &'static str);

impl InitializeConfig {
    pub fn validate(&self) -> Result<(), InitializeConfigError> {
        if !(1024..=16 * 1024 * 1024).contains(&self.max_body_bytes) {
            return Err(InitializeConfigError(
                "max_body_bytes must be in 1024..=16777216",
            ));
        }
        if !self.rate_per_key_per_sec.is_finite() || self.rate_per_key_per_sec < 0.0 {
            return Err(InitializeConfigError(
                "rate_per_key_per_sec must be a non-negative number",
            ));
        }
        if self.rate_per_key_per_sec > 0.0 && self.rate_burst == 0 {
            return Err(InitializeConfigError(
                "rate_burst must be positive when rate limiting is on",
            ));
        }
        if !(100..=300_000).contains(&self.live_heartbeat_ms) {
            return Err(InitializeConfigError(
                "live_heartbeat_ms must be in 100..=300000",
            ));
        }
        if self.live_max_age_ms < 1_000 || self.hello_timeout_ms == 0 || self.send_timeout_ms == 0 {
            return Err(InitializeConfigError(
                "live_max_age_ms must be at least 1000; timeouts must be positive",
            ));
        }
        Ok(())
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.live_heartbeat_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_refused() {
        assert_eq!(InitializeConfig::default().validate(), Ok(()));
        let bad = [
            InitializeConfig {
                max_body_bytes: 10,
                ..Default::default()
            },
            InitializeConfig {
                rate_per_key_per_sec: -1.0,
                ..Default::default()
            },
            InitializeConfig {
                rate_burst: 0,
                ..Default::default()
            },
            InitializeConfig {
                live_heartbeat_ms: 0,
                ..Default::default()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
        let off = InitializeConfig {
            rate_per_key_per_sec: 0.0,
            rate_burst: 0,
            ..Default::default()
        };
        assert_eq!(off.validate(), Ok(()));
    }

    #[test]
    fn reads_from_toml() {
        let c: InitializeConfig =
            toml::from_str("rate_per_key_per_sec = 5.0\nrate_burst = 10\n").unwrap();
        assert_eq!((c.rate_per_key_per_sec, c.rate_burst), (5.0, 10));
        assert!(toml::from_str::<InitializeConfig>("typo = 1").is_err());
    }
}
