//! The newest log entries, decoded, in memory.
//!
//! Right after an append openraft reads the same entries back: once per follower to replicate
//! them (on the leader) and once to apply them (on every node). Decoding them from sled each
//! time re-parses every entity body; this cache hands out clones instead. It only ever holds a
//! contiguous run that ends at the last appended entry and mirrors sled: filled after an append
//! is written, cut before a truncation is. A read it cannot serve whole goes to sled.

use crate::types::TypeConfig;
use openraft::Entry;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

type CachedEntry = (Arc<Entry<TypeConfig>>, usize);

pub(crate) struct LogCache {
    max_entries: usize,
    max_bytes: usize,
    inner: Mutex<Run>,
}

#[derive(Default)]
struct Run {
    /// Index of `entries[0]`.
    first: u64,
    /// Each with its encoded size (the unit of the reader's byte limit).
    entries: VecDeque<CachedEntry>,
    bytes: usize,
}

impl Run {
    fn end(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
            self.first += 1;
        }
    }
}

impl LogCache {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        LogCache {
            max_entries,
            max_bytes,
            inner: Mutex::new(Run::default()),
        }
    }

    fn run(&self) -> MutexGuard<'_, Run> {
        // Every update leaves the run consistent before it can panic (allocation aside).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records entries just written to sled (`size`: their encoded length).
    pub fn appended(&self, entries: impl IntoIterator<Item = (Entry<TypeConfig>, usize)>) {
        if self.max_entries == 0 {
            return;
        }
        let mut run = self.run();
        for (entry, size) in entries {
            let index = entry.log_id.index;
            if run.entries.is_empty() || index != run.end() {
                // Not contiguous with what is held (first append, or after a truncation
                // the cache did not see): start a new run here.
                *run = Run {
                    first: index,
                    ..Run::default()
                };
            }
            run.entries.push_back((Arc::new(entry), size));
            run.bytes += size;
            while run.entries.len() > self.max_entries || run.bytes > self.max_bytes {
                run.pop_front();
            }
        }
    }

    /// Forgets entries from `index` on (a truncation).
    pub fn truncated(&self, index: u64) {
        let mut run = self.run();
        if index <= run.first {
            *run = Run::default();
            return;
        }
        while run.end() > index {
            if let Some((_, size)) = run.entries.pop_back() {
                run.bytes -= size;
            }
        }
    }

    /// Forgets entries up to and including `index` (a purge).
    pub fn purged(&self, index: u64) {
        let mut run = self.run();
        while !run.entries.is_empty() && run.first <= index {
            run.pop_front();
        }
    }

    /// Entries `start..end` if all are held, with the reader's limits applied when `limit` is
    /// given: stop before the byte budget would be exceeded or at the entry count (always at
    /// least one entry).
    pub fn get(
        &self,
        start: u64,
        end: u64,
        limit: Option<(usize, usize)>,
    ) -> Option<Vec<Entry<TypeConfig>>> {
        let picked: Vec<Arc<Entry<TypeConfig>>> = {
            let run = self.run();
            if start < run.first || end > run.end() || start >= end {
                return None;
            }
            let mut bytes = 0usize;
            let mut out = Vec::new();
            for (entry, size) in run
                .entries
                .range((start - run.first) as usize..(end - run.first) as usize)
            {
                if let Some((max_bytes, max_entries)) = limit {
                    if !out.is_empty() && (bytes + size > max_bytes || out.len() >= max_entries) {
                        break;
                    }
                }
                bytes += size;
                out.push(entry.clone());
            }
            out
        };
        // Deep copies outside the lock.
        Some(picked.iter().map(|e| Entry::clone(e)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::EntryPayload;

    fn entry(index: u64) -> (Entry<TypeConfig>, usize) {
        (
            Entry {
                log_id: openraft::testing::log_id(1, 1, index),
                payload: EntryPayload::Blank,
            },
            10,
        )
    }

    fn indexes(v: Option<Vec<Entry<TypeConfig>>>) -> Option<Vec<u64>> {
        v.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn serves_only_ranges_it_holds_whole() {
        let c = LogCache::new(100, 1 << 20);
        c.appended((5..10).map(entry));
        assert_eq!(indexes(c.get(5, 10, None)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(indexes(c.get(7, 9, None)), Some(vec![7, 8]));
        assert_eq!(c.get(4, 9, None).map(|v| v.len()), None);
        assert_eq!(c.get(6, 11, None).map(|v| v.len()), None);
        assert_eq!(c.get(7, 7, None).map(|v| v.len()), None);
    }

    #[test]
    fn applies_the_readers_limits_like_the_sled_path() {
        let c = LogCache::new(100, 1 << 20);
        c.appended((1..=10).map(entry));
        assert_eq!(indexes(c.get(1, 11, Some((25, 100)))), Some(vec![1, 2]));
        assert_eq!(
            indexes(c.get(1, 11, Some((1 << 20, 3)))),
            Some(vec![1, 2, 3])
        );
        // One entry even when it alone exceeds the byte budget.
        assert_eq!(indexes(c.get(4, 11, Some((1, 100)))), Some(vec![4]));
    }

    #[test]
    fn truncation_and_purge_cut_the_run() {
        let c = LogCache::new(100, 1 << 20);
        c.appended((1..=10).map(entry));
        c.truncated(8);
        assert_eq!(c.get(5, 9, None).map(|v| v.len()), None);
        assert_eq!(indexes(c.get(5, 8, None)), Some(vec![5, 6, 7]));
        c.purged(5);
        assert_eq!(c.get(5, 8, None).map(|v| v.len()), None);
        assert_eq!(indexes(c.get(6, 8, None)), Some(vec![6, 7]));
        // A new entry after the truncation continues the run.
        c.appended([entry(8)]);
        assert_eq!(indexes(c.get(6, 9, None)), Some(vec![6, 7, 8]));
        c.truncated(1);
        assert_eq!(c.get(6, 7, None).map(|v| v.len()), None);
    }

    #[test]
    fn a_gap_starts_a_new_run_and_bounds_hold() {
        let c = LogCache::new(3, 1 << 20);
        c.appended((1..=5).map(entry));
        assert_eq!(indexes(c.get(3, 6, None)), Some(vec![3, 4, 5]));
        assert_eq!(c.get(2, 6, None).map(|v| v.len()), None);
        c.appended([entry(9)]);
        assert_eq!(c.get(5, 6, None).map(|v| v.len()), None);
        assert_eq!(indexes(c.get(9, 10, None)), Some(vec![9]));
        let small = LogCache::new(100, 25);
        small.appended((1..=5).map(entry));
        assert_eq!(indexes(small.get(4, 6, None)), Some(vec![4, 5]));
        assert_eq!(small.get(3, 6, None).map(|v| v.len()), None);
    }
}
