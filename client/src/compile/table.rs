//! The two containers a [`CompiledRuleset`](super::CompiledRuleset) keeps
//! its specs in, built so that a new version shares everything it does not
//! change with the previous one:
//!
//! * [`SpecTable`]: specs by slot (the index nested gates and delegates
//!   compile to), in chunks of [`CHUNK`] `Arc`s. Replacing one spec copies
//!   one chunk and the chunk list (n / 64 pointers), never the specs.
//! * [`NameMap`]: names to values, in [`SHARDS`] independently shared hash
//!   tables. Changing one name copies one shard (n / 64 entries of `Arc<str>`
//!   keys) and the 64 shard pointers.
//!
//! Reads stay about as cheap as a plain `Vec` / `HashMap`: a spec is one
//! more pointer hop away, and a name lookup hashes once (foldhash, faster
//! than std's SipHash on short names) for both the shard and the bucket.

use super::CSpec;
use hashbrown::hash_table::Entry;
use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock};

/// Slots per chunk of a [`SpecTable`].
pub(crate) const CHUNK: usize = 64;
/// Shards of a [`NameMap`].
pub(crate) const SHARDS: usize = 64;

/// A fixed array, so a cell is one hop from the chunk pointer.
type Chunk = [Option<Arc<CSpec>>; CHUNK];

/// Specs by slot. A slot may be empty (a deleted spec whose slot waits for
/// reuse); nothing compiled refers to an empty slot, and iteration skips it.
#[derive(Clone, Debug, Default)]
pub(crate) struct SpecTable {
    chunks: Vec<Arc<Chunk>>,
    slots: usize,
}

impl SpecTable {
    pub fn from_vec(specs: Vec<CSpec>) -> Self {
        let mut t = SpecTable::default();
        for s in specs {
            let slot = t.push_empty();
            t.set(slot, Some(Arc::new(s)));
        }
        t
    }

    /// Number of slots (filled or empty): every index below it is valid.
    pub fn len(&self) -> usize {
        self.slots
    }

    pub fn get(&self, slot: u32) -> Option<&CSpec> {
        let i = slot as usize;
        self.chunks.get(i / CHUNK)?.get(i % CHUNK)?.as_deref()
    }

    /// The shared spec in `slot` (tests check what a delta shares).
    #[cfg(test)]
    pub fn shared(&self, slot: u32) -> Option<&Arc<CSpec>> {
        let i = slot as usize;
        self.chunks.get(i / CHUNK)?.get(i % CHUNK)?.as_ref()
    }

    /// A new empty slot at the end.
    pub fn push_empty(&mut self) -> u32 {
        let i = self.slots;
        if i.is_multiple_of(CHUNK) {
            self.chunks.push(Arc::new(std::array::from_fn(|_| None)));
        }
        self.slots += 1;
        i as u32
    }

    /// Fill or empty an existing slot (copy-on-write of its chunk only).
    pub fn set(&mut self, slot: u32, spec: Option<Arc<CSpec>>) {
        let i = slot as usize;
        if i >= self.slots {
            return;
        }
        if let Some(chunk) = self.chunks.get_mut(i / CHUNK) {
            if let Some(cell) = Arc::make_mut(chunk).get_mut(i % CHUNK) {
                *cell = spec;
            }
        }
    }

    /// The filled slots, in slot order.
    pub fn iter(&self) -> SpecIter<'_> {
        SpecIter {
            chunks: self.chunks.iter(),
            cells: [].iter(),
        }
    }
}

/// What an index into an empty slot reads. Compiled references never point
/// to one (their holders are recompiled when a slot is emptied), so this is
/// only a panic-free answer to a bug.
fn placeholder() -> &'static CSpec {
    static EMPTY: OnceLock<CSpec> = OnceLock::new();
    EMPTY.get_or_init(|| CSpec {
        name: "".into(),
        entity: "".into(),
        enabled: false,
        default_bool: false,
        default_json: serde_json::Value::Object(Default::default()),
        id_type: "".into(),
        rules: Box::default(),
        is_active: false,
        is_in_layer: false,
        explicit_parameters: Box::default(),
        version: None,
    })
}

impl std::ops::Index<usize> for SpecTable {
    type Output = CSpec;

    fn index(&self, i: usize) -> &CSpec {
        match u32::try_from(i).ok().and_then(|slot| self.get(slot)) {
            Some(s) => s,
            None => placeholder(),
        }
    }
}

pub(crate) struct SpecIter<'a> {
    chunks: std::slice::Iter<'a, Arc<Chunk>>,
    cells: std::slice::Iter<'a, Option<Arc<CSpec>>>,
}

impl<'a> Iterator for SpecIter<'a> {
    type Item = &'a CSpec;

    fn next(&mut self) -> Option<&'a CSpec> {
        loop {
            if let Some(s) = self.cells.by_ref().flatten().next() {
                return Some(s);
            }
            self.cells = self.chunks.next()?.iter();
        }
    }
}

impl<'a> IntoIterator for &'a SpecTable {
    type Item = &'a CSpec;
    type IntoIter = SpecIter<'a>;

    fn into_iter(self) -> SpecIter<'a> {
        self.iter()
    }
}

type Shard<V> = Arc<HashTable<(Arc<str>, V)>>;

/// Names to values, sharded so that a change copies one shard. One hash
/// (foldhash, randomly seeded per map) picks the shard (bits 32..38) and
/// the bucket within it (hashbrown uses the low bits and the top 7).
/// A shard is allocated on its first insert: an empty map (most maps of a
/// small ruleset, e.g. the one the leader compiles to validate a commit)
/// costs no allocation.
#[derive(Clone, Debug)]
pub(crate) struct NameMap<V> {
    shards: [Option<Shard<V>>; SHARDS],
    hasher: DefaultHashBuilder,
}

impl<V> Default for NameMap<V> {
    fn default() -> Self {
        NameMap {
            shards: std::array::from_fn(|_| None),
            hasher: DefaultHashBuilder::default(),
        }
    }
}

fn shard_of(hash: u64) -> usize {
    (hash >> 32) as usize % SHARDS
}

impl<V: Clone> NameMap<V> {
    pub fn get(&self, name: &str) -> Option<&V> {
        let h = self.hasher.hash_one(name);
        self.shards[shard_of(h)]
            .as_ref()?
            .find(h, |(k, _)| **k == *name)
            .map(|(_, v)| v)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn insert(&mut self, name: Arc<str>, value: V) {
        let hasher = &self.hasher;
        let h = hasher.hash_one(&*name);
        let shard = self.shards[shard_of(h)].get_or_insert_with(|| Arc::new(HashTable::new()));
        match Arc::make_mut(shard).entry(h, |(k, _)| *k == name, |(k, _)| hasher.hash_one(&**k)) {
            Entry::Occupied(mut o) => o.get_mut().1 = value,
            Entry::Vacant(v) => {
                v.insert((name, value));
            }
        }
    }

    pub fn remove(&mut self, name: &str) {
        let h = self.hasher.hash_one(name);
        let Some(shard) = self.shards[shard_of(h)].as_mut() else {
            return;
        };
        if shard.find(h, |(k, _)| **k == *name).is_none() {
            return;
        }
        if let Ok(o) = Arc::make_mut(shard).find_entry(h, |(k, _)| **k == *name) {
            o.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> CSpec {
        CSpec {
            name: name.into(),
            ..placeholder_clone()
        }
    }

    fn placeholder_clone() -> CSpec {
        let p = placeholder();
        CSpec {
            name: p.name.clone(),
            entity: p.entity.clone(),
            enabled: p.enabled,
            default_bool: p.default_bool,
            default_json: p.default_json.clone(),
            id_type: p.id_type.clone(),
            rules: Box::default(),
            is_active: false,
            is_in_layer: false,
            explicit_parameters: Box::default(),
            version: None,
        }
    }

    #[test]
    fn table_shares_untouched_chunks_and_skips_empty_slots() {
        let specs: Vec<CSpec> = (0..200).map(|i| spec(&format!("g{i}"))).collect();
        let a = SpecTable::from_vec(specs);
        let mut b = a.clone();
        b.set(3, None);
        b.set(150, Some(Arc::new(spec("new"))));
        assert_eq!(a.iter().count(), 200);
        assert_eq!(b.iter().count(), 199);
        assert_eq!(&*a[150].name, "g150");
        assert_eq!(&*b[150].name, "new");
        assert_eq!(&*b[3].name, "", "an empty slot reads as the placeholder");
        assert_eq!(
            &*b[10_000].name, "",
            "out of range reads as the placeholder"
        );
        // Chunk 1 (slots 64..128) was not touched: still the same allocation.
        assert!(Arc::ptr_eq(&a.chunks[1], &b.chunks[1]));
        assert!(!Arc::ptr_eq(&a.chunks[0], &b.chunks[0]));
    }

    #[test]
    fn name_map_copies_one_shard_per_change() {
        let mut a = NameMap::default();
        for i in 0..1000u32 {
            a.insert(format!("gate_{i}").into(), i);
        }
        let mut b = a.clone();
        b.insert("fresh".into(), 7);
        b.remove("gate_5");
        b.remove("missing");
        assert_eq!(a.get("gate_5"), Some(&5));
        assert_eq!(b.get("gate_5"), None);
        assert_eq!(b.get("fresh"), Some(&7));
        let shared = (0..SHARDS)
            .filter(|&i| match (&a.shards[i], &b.shards[i]) {
                (Some(x), Some(y)) => Arc::ptr_eq(x, y),
                (None, None) => true,
                _ => false,
            })
            .count();
        assert!(shared >= SHARDS - 2, "{shared} shards shared");
    }
}
