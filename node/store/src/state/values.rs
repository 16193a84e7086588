//! Bounded-size sled values.
//!
//! sled rewrites a whole leaf (up to ~17 items) every 10 updates and writes any leaf larger than
//! 128 KiB to a separate blob file. One big value (a 1,000-entity commit's record, a large ID
//! list) next to keys updated on every commit would make every commit pay for it. So values that
//! may be large are split: the key holds a head (inline bytes, or a chunk count) and chunks of at
//! most [`CHUNK`] bytes live under `c <key> <i:u32 BE>`. Every leaf then stays small.
//!
//! ```text
//! head = 0x00 ++ bytes                 (bytes.len() <= CHUNK)
//!      | 0x01 ++ chunk_count:u32 BE    (chunks hold the bytes in order)
//! ```

use super::redo::{self, Writes};
use crate::codec::CodecError;
use std::collections::HashMap;

/// Largest inline value and chunk size.
pub const CHUNK: usize = 4096;
const CHUNK_PREFIX: u8 = b'c';
const INLINE: u8 = 0;
const CHUNKED: u8 = 1;

fn chunk_key(key: &[u8], i: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len() + 4);
    k.push(CHUNK_PREFIX);
    k.extend_from_slice(key);
    k.extend_from_slice(&i.to_be_bytes());
    k
}

/// Chunk counts of the chunked values whose keys start with `key_prefix`, by key suffix.
pub fn chunked_under(
    tree: &sled::Tree,
    key_prefix: &[u8],
) -> Result<HashMap<Vec<u8>, u32>, CodecError> {
    let mut prefix = Vec::with_capacity(1 + key_prefix.len());
    prefix.push(CHUNK_PREFIX);
    prefix.extend_from_slice(key_prefix);
    let mut counts: HashMap<Vec<u8>, u32> = HashMap::new();
    for key in tree.scan_prefix(&prefix).keys() {
        let key = key?;
        // c ++ value key ++ i:u32
        let Some(suffix) = key.get(prefix.len()..key.len().saturating_sub(4)) else {
            return Err(CodecError::Corrupt("bad chunk key".into()));
        };
        *counts.entry(suffix.to_vec()).or_default() += 1;
    }
    Ok(counts)
}

/// How many chunks a value of `len` bytes is stored in (0: inline in its head).
pub fn chunk_count_of_len(len: usize) -> u32 {
    if len <= CHUNK {
        0
    } else {
        u32::try_from(len.div_ceil(CHUNK)).unwrap_or(u32::MAX)
    }
}

fn chunk_count_of_head(head: &[u8]) -> Result<u32, CodecError> {
    match head.split_first() {
        Some((&INLINE, _)) => Ok(0),
        Some((&CHUNKED, n)) => {
            let n: [u8; 4] = n
                .try_into()
                .map_err(|_| CodecError::Corrupt("bad chunked value head".into()))?;
            Ok(u32::from_be_bytes(n))
        }
        _ => Err(CodecError::Corrupt("bad value head".into())),
    }
}

/// Collects one atomic set of state machine writes ([`SmWriter::commit`] makes them).
pub struct SmWriter<'a> {
    tree: &'a sled::Tree,
    /// The writes, by key (a later write of a key replaces an earlier one, as in a sled batch).
    writes: Writes,
    /// Chunk counts of big values already written or removed here (sled does not see the
    /// writes until they are committed).
    chunks: HashMap<Vec<u8>, u32>,
    /// Everything in the tree is being removed by these writes: old values have no chunks left.
    cleared: bool,
}

impl<'a> SmWriter<'a> {
    pub fn new(tree: &'a sled::Tree) -> Self {
        SmWriter {
            tree,
            writes: Writes::new(),
            chunks: HashMap::new(),
            cleared: false,
        }
    }

    /// Removes every key of the tree (for installing a snapshot).
    pub fn clear_all(&mut self) -> Result<(), CodecError> {
        for key in self.tree.iter().keys() {
            self.writes.insert(key?.to_vec(), None);
        }
        self.chunks.clear();
        self.cleared = true;
        Ok(())
    }

    /// A small value (heads, counters) stored as is.
    pub fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.writes
            .insert(key.as_ref().to_vec(), Some(value.as_ref().to_vec()));
    }

    pub fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.writes.insert(key.as_ref().to_vec(), None);
    }

    fn chunk_count(&self, key: &[u8]) -> Result<u32, CodecError> {
        if let Some(n) = self.chunks.get(key) {
            return Ok(*n);
        }
        if self.cleared {
            return Ok(0);
        }
        match self.tree.get(key)? {
            Some(head) => chunk_count_of_head(&head),
            None => Ok(0),
        }
    }

    /// A value of any size, split into chunks when large.
    pub fn put_value(&mut self, key: &[u8], bytes: &[u8]) -> Result<(), CodecError> {
        let old = self.chunk_count(key)?;
        self.put_value_over(key, bytes, old)
    }

    /// [`Self::put_value`] where the caller knows the chunk count of the value it replaces
    /// (what [`chunk_count_of_len`] gives for its length, 0 for none) from its in-memory state:
    /// the commit path saves a sled read per write. Debug builds check it against sled.
    pub fn put_value_known(
        &mut self,
        key: &[u8],
        bytes: &[u8],
        old_chunks: u32,
    ) -> Result<(), CodecError> {
        debug_assert_eq!(self.chunk_count(key).ok(), Some(old_chunks), "{key:?}");
        self.put_value_over(key, bytes, old_chunks)
    }

    fn put_value_over(&mut self, key: &[u8], bytes: &[u8], old: u32) -> Result<(), CodecError> {
        let new = if bytes.len() <= CHUNK {
            let mut head = Vec::with_capacity(1 + bytes.len());
            head.push(INLINE);
            head.extend_from_slice(bytes);
            self.writes.insert(key.to_vec(), Some(head));
            0
        } else {
            let mut n = 0u32;
            for piece in bytes.chunks(CHUNK) {
                self.writes.insert(chunk_key(key, n), Some(piece.to_vec()));
                n += 1;
            }
            let mut head = vec![CHUNKED];
            head.extend_from_slice(&n.to_be_bytes());
            self.writes.insert(key.to_vec(), Some(head));
            n
        };
        for i in new..old {
            self.writes.insert(chunk_key(key, i), None);
        }
        self.chunks.insert(key.to_vec(), new);
        Ok(())
    }

    pub fn remove_value(&mut self, key: &[u8]) -> Result<(), CodecError> {
        let old = self.chunk_count(key)?;
        self.remove_value_over(key, old);
        Ok(())
    }

    /// [`Self::remove_value`] with the chunk count known, as in [`Self::put_value_known`].
    pub fn remove_value_known(&mut self, key: &[u8], old_chunks: u32) {
        debug_assert_eq!(self.chunk_count(key).ok(), Some(old_chunks), "{key:?}");
        self.remove_value_over(key, old_chunks);
    }

    fn remove_value_over(&mut self, key: &[u8], old: u32) {
        for i in 0..old {
            self.writes.insert(chunk_key(key, i), None);
        }
        self.writes.insert(key.to_vec(), None);
        self.chunks.insert(key.to_vec(), 0);
    }

    /// The writes as one sled batch; drop the redo record before applying it ([`redo::clear`]).
    pub fn into_batch(self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (k, v) in self.writes {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        batch
    }

    /// Makes the writes atomically: after a redo record (in `redo`) when they are small, else as
    /// one sled batch (see [`redo`]).
    pub fn commit(self, redo: &sled::Tree) -> Result<(), CodecError> {
        let size: usize = self
            .writes
            .iter()
            .map(|(k, v)| redo::write_len(k, v.as_deref()))
            .sum();
        if self.cleared || size > redo::MAX_BYTES {
            let tree = self.tree;
            redo::clear(redo)?;
            tree.apply_batch(self.into_batch())?;
        } else {
            redo::write_with_record(self.tree, redo, &self.writes, size)?;
        }
        Ok(())
    }
}

/// The value whose head is `head` (read from `key`). `None` if a chunk is gone, which happens
/// when the value was removed between reading the head and its chunks.
pub fn resolve(tree: &sled::Tree, key: &[u8], head: &[u8]) -> Result<Option<Vec<u8>>, CodecError> {
    match head.split_first() {
        Some((&INLINE, bytes)) => Ok(Some(bytes.to_vec())),
        Some((&CHUNKED, _)) => {
            let n = chunk_count_of_head(head)?;
            let mut out = Vec::with_capacity(n as usize * CHUNK);
            for i in 0..n {
                match tree.get(chunk_key(key, i))? {
                    Some(piece) => out.extend_from_slice(&piece),
                    None => return Ok(None),
                }
            }
            Ok(Some(out))
        }
        _ => Err(CodecError::Corrupt("bad value head".into())),
    }
}

/// Reads a value written by [`SmWriter::put_value`].
pub fn read_value(tree: &sled::Tree, key: &[u8]) -> Result<Option<Vec<u8>>, CodecError> {
    match tree.get(key)? {
        Some(head) => resolve(tree, key, &head),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (sled::Db, sled::Tree) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let t = db.open_tree("t").unwrap();
        (db, t)
    }

    #[test]
    fn values_of_every_size_round_trip_and_shrinking_leaves_no_chunks() {
        let (_db, t) = tree();
        let sizes = [0, 1, CHUNK, CHUNK + 1, 3 * CHUNK, 10 * CHUNK + 7, 5];
        for size in sizes {
            let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let mut w = SmWriter::new(&t);
            w.put_value(b"k", &bytes).unwrap();
            t.apply_batch(w.into_batch()).unwrap();
            assert_eq!(read_value(&t, b"k").unwrap(), Some(bytes));
        }
        // Only the head and the chunks of the current value remain (5 bytes: inline).
        assert_eq!(t.len(), 1);
        let mut w = SmWriter::new(&t);
        w.put_value(b"k", &vec![1; 3 * CHUNK]).unwrap();
        t.apply_batch(w.into_batch()).unwrap();
        let mut w = SmWriter::new(&t);
        w.remove_value(b"k").unwrap();
        t.apply_batch(w.into_batch()).unwrap();
        assert!(t.is_empty());
    }

    #[test]
    fn rewrites_within_one_batch_leave_no_stray_chunks() {
        let (_db, t) = tree();
        let mut w = SmWriter::new(&t);
        w.put_value(b"k", &vec![1; 5 * CHUNK]).unwrap();
        w.put_value(b"k", &vec![2; 2 * CHUNK]).unwrap();
        w.put_value(b"j", &vec![3; 4 * CHUNK]).unwrap();
        w.remove_value(b"j").unwrap();
        t.apply_batch(w.into_batch()).unwrap();
        assert_eq!(read_value(&t, b"k").unwrap(), Some(vec![2; 2 * CHUNK]));
        assert_eq!(read_value(&t, b"j").unwrap(), None);
        assert_eq!(t.len(), 3, "head of k and its two chunks");
    }
}
