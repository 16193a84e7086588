//! Waiting for a condition with a deadline (tests never sleep to synchronise).

use std::future::Future;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct WaitError {
    pub what: String,
    pub waited: Duration,
    pub last: String,
}

impl std::fmt::Display for WaitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "timed out after {:?} waiting for {} (last: {})",
            self.waited, self.what, self.last
        )
    }
}

/// Polls `check` until it returns `Ok(v)` or `timeout` passes. `check`
/// returns `Err(description)` while the condition does not hold. Between
/// polls it waits `poll` (a bounded poll interval, not a synchronisation).
pub async fn wait_for<T, F, Fut>(
    what: &str,
    timeout: Duration,
    poll: Duration,
    mut check: F,
) -> Result<T, WaitError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let mut last = String::from("not checked");
    // Bounded in time by `timeout` and in count by timeout/poll.
    let max_polls = (timeout.as_millis() / poll.as_millis().max(1)) as u64 + 2;
    for _ in 0..max_polls {
        match tokio::time::timeout(timeout.saturating_sub(start.elapsed()), check()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(why)) => last = why,
            Err(_) => last = "check did not finish in time".into(),
        }
        if start.elapsed() >= timeout {
            break;
        }
        tokio::time::sleep(poll).await;
    }
    Err(WaitError {
        what: what.into(),
        waited: start.elapsed(),
        last,
    })
}
