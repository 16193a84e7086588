//! One apply call's writes made atomic without a sled batch.
//!
//! sled makes a batch atomic by first writing out its current IO buffer and sealing another
//! around the batch (`pin_log`): one or two jobs of its IO thread pool per batch, each waking
//! every idle pool thread, and a global write lock that stalls the log's appends meanwhile. An
//! apply call of a single commit paid that for ~5 small writes.
//!
//! So a small apply call writes, in this order:
//! 1. the *redo record*: every write of the call, encoded, as the one value of the redo tree
//!    ([`keys::REDO_TREE`], so that no other value shares its leaf);
//! 2. each write on its own (plain `insert` / `remove`) in the state machine tree.
//!
//! sled recovers a prefix of its writes after a crash (in log order). A recovered state that
//! holds any write of step 2 therefore holds the redo record too, and [`replay`] at open
//! completes the call: every write sets a key to its final value or removes it, so applying a
//! write twice changes nothing. A state cut before the redo record holds all of the previous
//! call's writes, whose own record replays to the same values.
//!
//! A call whose writes encode to more than [`MAX_BYTES`] (a large load, a snapshot install)
//! still uses one sled batch, and removes the redo record first ([`clear`]): a record older
//! than the batch must never be replayed over it. A crash between the two leaves the previous
//! call complete (its writes come before the removal) and nothing to replay.
//!
//! ```text
//! record = write*
//! write  = 0x00 key_len:u32 BE key                       (remove)
//!        | 0x01 key_len:u32 BE key value_len:u32 BE value (insert)
//! ```

use crate::codec::CodecError;
use crate::keys;
use std::collections::BTreeMap;

/// Largest redo record; larger calls use a sled batch.
pub const MAX_BYTES: usize = 64 * 1024;

/// One call's writes by key: the value it ends with (`None`: removed).
pub type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// One decoded write: the key and the value it ends with (`None`: removed).
pub type Write<'a> = (&'a [u8], Option<&'a [u8]>);

const REMOVE: u8 = 0;
const INSERT: u8 = 1;

/// Encoded size of one write.
pub fn write_len(key: &[u8], value: Option<&[u8]>) -> usize {
    1 + 4 + key.len() + value.map_or(0, |v| 4 + v.len())
}

fn put_len(out: &mut Vec<u8>, len: usize) -> Result<(), CodecError> {
    let len = u32::try_from(len).map_err(|_| CodecError::Corrupt("redo write too large".into()))?;
    out.extend_from_slice(&len.to_be_bytes());
    Ok(())
}

pub fn encode(writes: &Writes, size: usize) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(size);
    for (key, value) in writes {
        out.push(if value.is_some() { INSERT } else { REMOVE });
        put_len(&mut out, key.len())?;
        out.extend_from_slice(key);
        if let Some(value) = value {
            put_len(&mut out, value.len())?;
            out.extend_from_slice(value);
        }
    }
    Ok(out)
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], CodecError> {
    if bytes.len() < n {
        return Err(CodecError::Corrupt("truncated redo record".into()));
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Ok(head)
}

fn take_sized<'a>(bytes: &mut &'a [u8]) -> Result<&'a [u8], CodecError> {
    let len = take(bytes, 4)?;
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    let len = usize::try_from(len).map_err(|_| CodecError::Corrupt("redo length".into()))?;
    take(bytes, len)
}

/// The writes of a record, in its order.
pub fn decode(mut bytes: &[u8]) -> Result<Vec<Write<'_>>, CodecError> {
    let mut writes = Vec::new();
    while let Some((&tag, rest)) = bytes.split_first() {
        bytes = rest;
        let key = take_sized(&mut bytes)?;
        let value = match tag {
            REMOVE => None,
            INSERT => Some(take_sized(&mut bytes)?),
            _ => return Err(CodecError::Corrupt("bad redo write tag".into())),
        };
        writes.push((key, value));
    }
    Ok(writes)
}

/// Makes `writes` in `tree` one by one, after their record in `redo` (see the module docs).
pub fn write_with_record(
    tree: &sled::Tree,
    redo: &sled::Tree,
    writes: &Writes,
    size: usize,
) -> Result<(), CodecError> {
    redo.insert(keys::REDO, encode(writes, size)?)?;
    for (key, value) in writes {
        write_one(tree, key, value.as_deref())?;
    }
    Ok(())
}

fn write_one(tree: &sled::Tree, key: &[u8], value: Option<&[u8]>) -> Result<(), sled::Error> {
    match value {
        Some(value) => tree.insert(key, value).map(drop),
        None => tree.remove(key).map(drop),
    }
}

/// Drops the redo record before writes that do not go through it (a sled batch).
pub fn clear(redo: &sled::Tree) -> Result<(), sled::Error> {
    redo.remove(keys::REDO).map(drop)
}

/// At open, before anything reads `tree`: completes the last apply call that wrote a record,
/// then drops the record. True if there was one.
pub fn replay(tree: &sled::Tree, redo: &sled::Tree) -> Result<bool, CodecError> {
    let Some(record) = redo.get(keys::REDO)? else {
        return Ok(false);
    };
    for (key, value) in decode(&record)? {
        write_one(tree, key, value)?;
    }
    // After the writes in sled's log: a state that lost them still has the record.
    clear(redo)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A state machine tree and its redo tree.
    fn trees() -> (sled::Db, sled::Tree, sled::Tree) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let t = db.open_tree("t").unwrap();
        let r = db.open_tree("r").unwrap();
        (db, t, r)
    }

    fn contents(t: &sled::Tree) -> Vec<(Vec<u8>, Vec<u8>)> {
        t.iter()
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
            .collect()
    }

    fn size(writes: &Writes) -> usize {
        writes.iter().map(|(k, v)| write_len(k, v.as_deref())).sum()
    }

    fn writes_strategy() -> impl Strategy<Value = Writes> {
        let key = prop::collection::vec(0u8..4, 1..3);
        let value = prop::option::of(prop::collection::vec(any::<u8>(), 0..40));
        prop::collection::btree_map(key, value, 0..12)
    }

    proptest! {
        #[test]
        fn records_round_trip(writes in writes_strategy()) {
            let bytes = encode(&writes, size(&writes)).unwrap();
            prop_assert_eq!(bytes.len(), size(&writes));
            let back: Vec<_> = decode(&bytes).unwrap().into_iter()
                .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
                .collect();
            prop_assert_eq!(back, writes.into_iter().collect::<Vec<_>>());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }

        /// A crash after the record and any prefix of the writes: replay ends where the whole
        /// call would have, from any earlier state.
        #[test]
        fn replay_completes_any_prefix_of_a_call(
            before in writes_strategy(),
            call in writes_strategy(),
            cut in 0usize..13,
        ) {
            let (_a, whole, whole_redo) = trees();
            let (_b, crashed, crashed_redo) = trees();
            for (t, r) in [(&whole, &whole_redo), (&crashed, &crashed_redo)] {
                write_with_record(t, r, &before, size(&before)).unwrap();
            }
            write_with_record(&whole, &whole_redo, &call, size(&call)).unwrap();

            crashed_redo.insert(keys::REDO, encode(&call, size(&call)).unwrap()).unwrap();
            for (key, value) in call.iter().take(cut) {
                write_one(&crashed, key, value.as_deref()).unwrap();
            }
            prop_assert!(replay(&crashed, &crashed_redo).unwrap());
            prop_assert_eq!(contents(&crashed), contents(&whole));
            prop_assert!(crashed_redo.is_empty(), "the record is gone after a replay");
            prop_assert!(!replay(&crashed, &crashed_redo).unwrap());
        }
    }

    #[test]
    fn replaying_a_complete_call_changes_nothing_but_drops_its_record() {
        let (_db, t, r) = trees();
        t.insert(b"b", &b"0"[..]).unwrap();
        let call: Writes = [(b"a".to_vec(), Some(b"1".to_vec())), (b"b".to_vec(), None)].into();
        write_with_record(&t, &r, &call, size(&call)).unwrap();
        let expected = vec![(b"a".to_vec(), b"1".to_vec())];
        assert_eq!(contents(&t), expected);
        assert!(replay(&t, &r).unwrap());
        assert_eq!(contents(&t), expected);
        assert!(r.is_empty());
    }

    #[test]
    fn corrupt_records_are_errors() {
        for bytes in [
            &[2u8, 0, 0, 0, 0][..],
            &[1, 0, 0, 0, 1, b'k'],
            &[0, 0, 0, 0, 9, b'k'],
            &[1, 0, 0, 0, 1, b'k', 0, 0, 0, 5, 1],
        ] {
            assert!(decode(bytes).is_err(), "{bytes:?}");
        }
    }
}
