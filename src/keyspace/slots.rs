//! A layer's slots for one database: a hash map for point lookups (every
//! command's path) plus an ordered set of the same keys for range walks
//! (KEYS, SCAN, the expiry sweep, checkpoints). Short keys are copied into
//! both; a long one is one allocation both share (`KeyBytes`).

use super::key::KeyBytes;
use super::Slot;
use foldhash::fast::RandomState;
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

#[derive(Clone, Debug, Default)]
pub struct Slots {
    map: HashMap<KeyBytes, Slot, RandomState>,
    order: BTreeSet<KeyBytes>,
}

impl Slots {
    /// Empty, with room for `keys` keys before the hash table grows.
    pub fn with_capacity(keys: usize) -> Slots {
        Slots {
            map: HashMap::with_capacity_and_hasher(keys, RandomState::default()),
            order: BTreeSet::new(),
        }
    }

    /// Keys the hash table holds before it grows.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.map.capacity()
    }

    pub fn get(&self, key: &[u8]) -> Option<&Slot> {
        self.map.get(key)
    }

    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut Slot> {
        self.map.get_mut(key)
    }

    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.map.contains_key(key)
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Sets a key's slot; the key is allocated only when it is new.
    pub fn insert(&mut self, key: &[u8], slot: Slot) {
        match self.map.get_mut(key) {
            Some(existing) => *existing = slot,
            None => {
                let key = KeyBytes::new(key);
                self.order.insert(key.clone());
                self.map.insert(key, slot);
            }
        }
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<Slot> {
        let slot = self.map.remove(key)?;
        self.order.remove(key);
        Some(slot)
    }

    /// Every slot, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &Slot> {
        self.map.values()
    }

    /// Every key and slot, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &Slot)> {
        self.order
            .iter()
            .filter_map(|k| Some((k.as_slice(), self.map.get(k)?)))
    }

    /// The keys and slots within `range`, in key order.
    pub fn range<'a>(
        &'a self,
        range: (Bound<&'a [u8]>, Bound<&'a [u8]>),
    ) -> impl Iterator<Item = (&'a [u8], &'a Slot)> + 'a {
        self.order
            .range::<[u8], _>(range)
            .filter_map(|k| Some((k.as_slice(), self.map.get(k)?)))
    }

    /// Puts `upper`'s slots over these.
    pub fn extend(&mut self, upper: Slots) {
        for (key, slot) in upper.map {
            match self.map.get_mut(&key) {
                Some(existing) => *existing = slot,
                None => {
                    self.order.insert(key.clone());
                    self.map.insert(key, slot);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_and_ordered_views_agree() {
        let mut s = Slots::default();
        for k in [&b"b"[..], b"a", b"c", b"b"] {
            s.insert(k, Slot::Deleted);
        }
        assert_eq!(s.len(), 3);
        let keys: Vec<&[u8]> = s.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec![&b"a"[..], b"b", b"c"]);
        assert!(s.remove(b"b").is_some());
        assert!(s.remove(b"b").is_none());
        let ranged: Vec<&[u8]> = s
            .range((Bound::Excluded(&b"a"[..]), Bound::Unbounded))
            .map(|(k, _)| k)
            .collect();
        assert_eq!(ranged, vec![&b"c"[..]]);
        let mut upper = Slots::default();
        upper.insert(b"d", Slot::Deleted);
        upper.insert(b"a", Slot::Deleted);
        s.extend(upper);
        let keys: Vec<&[u8]> = s.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec![&b"a"[..], b"c", b"d"]);
        assert!(s.contains_key(b"d") && s.get(b"c").is_some());
    }
}
