//! Latency samples and their order statistics.

use std::time::Duration;

/// A set of durations; percentiles by nearest rank on the sorted samples.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    sorted: Vec<Duration>,
    dirty: bool,
}

impl Samples {
    pub fn new() -> Self {
        Samples::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        Samples {
            sorted: Vec::with_capacity(n),
            dirty: false,
        }
    }

    pub fn push(&mut self, d: Duration) {
        self.sorted.push(d);
        self.dirty = true;
    }

    pub fn extend(&mut self, other: Samples) {
        self.sorted.extend(other.sorted);
        self.dirty = true;
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    fn sort(&mut self) {
        if self.dirty {
            self.sorted.sort_unstable();
            self.dirty = false;
        }
    }

    /// The `p`-th percentile (0..=100) by nearest rank; None when empty.
    pub fn percentile(&mut self, p: f64) -> Option<Duration> {
        self.sort();
        let n = self.sorted.len();
        if n == 0 {
            return None;
        }
        let rank = ((p.clamp(0.0, 100.0) / 100.0) * n as f64).ceil() as usize;
        Some(self.sorted[rank.clamp(1, n) - 1])
    }

    pub fn p50(&mut self) -> Option<Duration> {
        self.percentile(50.0)
    }

    pub fn p99(&mut self) -> Option<Duration> {
        self.percentile(99.0)
    }

    pub fn max(&mut self) -> Option<Duration> {
        self.percentile(100.0)
    }

    pub fn min(&mut self) -> Option<Duration> {
        self.percentile(0.0)
    }

    pub fn mean(&self) -> Option<Duration> {
        let n = u32::try_from(self.sorted.len()).ok().filter(|&n| n > 0)?;
        Some(self.sorted.iter().sum::<Duration>() / n)
    }
}

/// Milliseconds as a float, for reporting.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(ms: &[u64]) -> Samples {
        let mut s = Samples::new();
        for &m in ms {
            s.push(Duration::from_millis(m));
        }
        s
    }

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = of(&[5, 1, 4, 2, 3, 6, 7, 8, 9, 10]);
        assert_eq!(s.p50(), Some(Duration::from_millis(5)));
        assert_eq!(s.percentile(90.0), Some(Duration::from_millis(9)));
        assert_eq!(s.p99(), Some(Duration::from_millis(10)));
        assert_eq!(s.max(), Some(Duration::from_millis(10)));
        assert_eq!(s.min(), Some(Duration::from_millis(1)));
        assert_eq!(s.mean(), Some(Duration::from_micros(5500)));
    }

    #[test]
    fn one_sample_is_every_percentile_and_none_is_none() {
        let mut s = of(&[3]);
        assert_eq!(s.p50(), s.p99());
        assert_eq!(s.min(), Some(Duration::from_millis(3)));
        let mut e = Samples::new();
        assert_eq!(e.p50(), None);
        assert_eq!(e.mean(), None);
    }

    #[test]
    fn pushes_after_a_query_are_counted() {
        let mut s = of(&[1, 2]);
        assert_eq!(s.max(), Some(Duration::from_millis(2)));
        s.push(Duration::from_millis(9));
        assert_eq!(s.max(), Some(Duration::from_millis(9)));
        assert_eq!(s.len(), 3);
    }
}
