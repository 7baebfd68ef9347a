//! The committed-lookup memo: what the directory B+tree said about recently
//! used keys, so a hot key is not looked up in the tree again and again.
//! Bounded by entry count with two generations (an approximate LRU without
//! relinking on every hit): lookups search the current generation, then the
//! previous one (moving a hit forward); when the current generation is full
//! it becomes the previous one and the oldest is dropped. A checkpoint
//! changes only the keys it wrote, so it forgets just those (or a whole
//! database it flushed), and everything else stays valid.

use super::{Layer, DATABASES};
use crate::storage::btree::EntryMeta;
use foldhash::fast::RandomState;
use std::collections::HashMap;

/// Entries per generation (so at most twice this many are kept).
const GENERATION_ENTRIES: usize = 64 * 1024;

type Generation = Vec<HashMap<Box<[u8]>, Option<EntryMeta>, RandomState>>;

fn generation() -> Generation {
    (0..DATABASES).map(|_| HashMap::default()).collect()
}

#[allow(clippy::len_without_is_empty)] // only its size is reported (INFO)
pub struct Memo {
    current: Generation,
    previous: Generation,
    current_len: usize,
}

impl Default for Memo {
    fn default() -> Self {
        Memo {
            current: generation(),
            previous: generation(),
            current_len: 0,
        }
    }
}

impl Memo {
    /// The memoized directory entry of a key (`Some(None)`: known absent).
    pub fn get(&mut self, db: usize, key: &[u8]) -> Option<Option<EntryMeta>> {
        if let Some(found) = self.current.get(db)?.get(key) {
            return Some(found.clone());
        }
        let (key, found) = self.previous.get_mut(db)?.remove_entry(key)?;
        self.insert_owned(db, key, found.clone());
        Some(found)
    }

    pub fn insert(&mut self, db: usize, key: &[u8], found: Option<EntryMeta>) {
        self.insert_owned(db, key.into(), found);
    }

    fn insert_owned(&mut self, db: usize, key: Box<[u8]>, found: Option<EntryMeta>) {
        if self.current_len >= GENERATION_ENTRIES {
            self.previous = std::mem::replace(&mut self.current, generation());
            self.current_len = 0;
        }
        if let Some(map) = self.current.get_mut(db) {
            if map.insert(key, found).is_none() {
                self.current_len += 1;
            }
        }
    }

    /// A checkpoint committed `layer`: forget what it changed.
    pub fn forget_written(&mut self, layer: &Layer) {
        for (db, changes) in layer.dbs.iter().enumerate() {
            for generation in [&mut self.current, &mut self.previous] {
                let Some(map) = generation.get_mut(db) else {
                    continue;
                };
                if changes.flushed {
                    map.clear();
                } else {
                    for (key, _) in changes.slots.iter() {
                        map.remove(key);
                    }
                }
            }
        }
        self.current_len = self.current.iter().map(HashMap::len).sum();
    }

    pub fn clear(&mut self) {
        *self = Memo::default();
    }

    pub fn len(&self) -> usize {
        self.current
            .iter()
            .chain(&self.previous)
            .map(HashMap::len)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyspace::Slot;

    fn meta(n: u64) -> Option<EntryMeta> {
        Some(crate::storage::btree::tests::meta(n))
    }

    #[test]
    fn stays_bounded_and_keeps_recently_used_keys() {
        let mut m = Memo::default();
        m.insert(0, b"hot", meta(1));
        for i in 0..(3 * GENERATION_ENTRIES) as u64 {
            m.insert(0, format!("k{i}").as_bytes(), meta(i));
            if i % 1000 == 0 {
                assert_eq!(m.get(0, b"hot"), Some(meta(1)), "after {i} inserts");
            }
        }
        assert!(m.len() <= 2 * GENERATION_ENTRIES);
        assert_eq!(m.get(0, b"k0"), None, "the oldest generation was dropped");
        assert_eq!(m.get(1, b"hot"), None, "databases are separate");
    }

    #[test]
    fn a_checkpoint_forgets_only_what_it_wrote() {
        let mut m = Memo::default();
        m.insert(0, b"a", meta(1));
        m.insert(0, b"b", None);
        m.insert(3, b"c", meta(3));
        let mut layer = Layer::default();
        layer.dbs[0].slots.insert(b"b", Slot::Deleted);
        layer.dbs[3].flushed = true;
        m.forget_written(&layer);
        assert_eq!(m.get(0, b"a"), Some(meta(1)));
        assert_eq!(m.get(0, b"b"), None);
        assert_eq!(m.get(3, b"c"), None);
        assert_eq!(m.len(), 1);
    }
}
