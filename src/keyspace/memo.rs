//! The committed-lookup memo: what the directory B+tree said about recently
//! used keys, so a hot key is not looked up in the tree again and again.
//! Bounded in bytes (an eighth of `--cache-size`) with two generations (an
//! approximate LRU without relinking on every hit): lookups search the
//! current generation, then the previous one (moving a hit forward); when the
//! current generation holds half the budget it becomes the previous one and
//! the oldest is dropped. A checkpoint changes only the keys it wrote, so it
//! forgets just those (or a whole database it flushed), and everything else
//! stays valid.

use super::{Layer, DATABASES};
use crate::storage::btree::{EntryMeta, Payload};
use foldhash::fast::RandomState;
use std::collections::HashMap;

/// Bytes counted for an entry besides its key and inline payload (map slot,
/// key allocation, the entry itself).
const ENTRY_OVERHEAD: usize = 112;

fn cost(key: &[u8], found: &Option<EntryMeta>) -> usize {
    let inline = match found.as_ref().map(|m| &m.payload) {
        Some(Payload::Inline(b)) => b.len(),
        _ => 0,
    };
    key.len() + inline + ENTRY_OVERHEAD
}

type Generation = Vec<HashMap<Box<[u8]>, Option<EntryMeta>, RandomState>>;

fn generation() -> Generation {
    (0..DATABASES).map(|_| HashMap::default()).collect()
}

#[allow(clippy::len_without_is_empty)] // only its size is reported (INFO)
pub struct Memo {
    current: Generation,
    previous: Generation,
    /// Bytes in the current generation; it turns over at `budget / 2`.
    current_bytes: usize,
    budget: usize,
}

impl Memo {
    pub fn new(budget: usize) -> Self {
        Memo {
            current: generation(),
            previous: generation(),
            current_bytes: 0,
            budget,
        }
    }

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
        if self.current_bytes >= self.budget / 2 {
            self.previous = std::mem::replace(&mut self.current, generation());
            self.current_bytes = 0;
        }
        let key_len = key.len();
        let added = cost(&key, &found);
        if let Some(map) = self.current.get_mut(db) {
            if let Some(old) = map.insert(key, found) {
                let removed = key_len + cost(&[], &old);
                self.current_bytes = self.current_bytes.saturating_sub(removed);
            }
            self.current_bytes += added;
        }
    }

    /// A checkpoint committed `layer`: forget what it changed.
    pub fn forget_written(&mut self, layer: &Layer) {
        for (db, changes) in layer.dbs.iter().enumerate() {
            if let Some(map) = self.previous.get_mut(db) {
                if changes.flushed {
                    map.clear();
                } else {
                    for (key, _) in changes.slots.iter() {
                        map.remove(key);
                    }
                }
            }
            let Some(map) = self.current.get_mut(db) else {
                continue;
            };
            let mut removed = 0;
            if changes.flushed {
                removed = map.iter().map(|(k, v)| cost(k, v)).sum();
                map.clear();
            } else {
                for (key, _) in changes.slots.iter() {
                    if let Some(v) = map.remove(key) {
                        removed += cost(key, &v);
                    }
                }
            }
            self.current_bytes = self.current_bytes.saturating_sub(removed);
        }
    }

    pub fn clear(&mut self) {
        *self = Memo::new(self.budget);
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
        let budget = 1 << 20;
        let mut m = Memo::new(budget);
        m.insert(0, b"hot", meta(1));
        for i in 0..(3 * budget / ENTRY_OVERHEAD) as u64 {
            m.insert(0, format!("k{i}").as_bytes(), meta(i));
            if i % 1000 == 0 {
                assert_eq!(m.get(0, b"hot"), Some(meta(1)), "after {i} inserts");
            }
        }
        assert!(m.len() <= budget / ENTRY_OVERHEAD);
        assert_eq!(m.get(0, b"k0"), None, "the oldest generation was dropped");
        assert_eq!(m.get(1, b"hot"), None, "databases are separate");
    }

    #[test]
    fn a_checkpoint_forgets_only_what_it_wrote() {
        let mut m = Memo::new(1 << 20);
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
