//! The value cache: decoded bitmaps of committed payload extents, least
//! recently used evicted first, bounded in bytes. Entries are keyed by the
//! payload's first page and checksum, so a key renamed or rewritten never
//! finds another payload's value. Only clean values live here: a value
//! changed since the last checkpoint lives in the keyspace's overlay until
//! the checkpoint commits it.

use super::BitString;
use lru::LruCache;
use std::sync::Arc;

/// Bytes counted for one cached entry besides its bitmap (map node, key
/// allocation, Arc header).
const ENTRY_OVERHEAD: usize = 96;

pub struct Cache {
    lru: LruCache<PayloadId, Arc<BitString>>,
    bytes: usize,
    budget: usize,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    /// Bytes of values dropped so far (evicted, removed or cleared): what
    /// the allocator may hand back to the system.
    pub released_bytes: u64,
}

/// A committed payload's identity: its location (see
/// `keyspace::payload_id`), the checksum of its bytes, and the string's byte
/// length (equal bits can belong to strings of different lengths).
pub type PayloadId = (u64, u32, u64);

fn cost(value: &BitString) -> usize {
    value.heap_bytes() + ENTRY_OVERHEAD
}

impl Cache {
    pub fn new(budget: usize) -> Self {
        Cache {
            lru: LruCache::unbounded(),
            bytes: 0,
            budget,
            hits: 0,
            misses: 0,
            evictions: 0,
            released_bytes: 0,
        }
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.lru.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lru.is_empty()
    }

    /// The cached value of a payload, marking it recently used.
    pub fn get(&mut self, key: PayloadId) -> Option<Arc<BitString>> {
        match self.lru.get(&key) {
            Some(v) => {
                self.hits += 1;
                Some(v.clone())
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    pub fn contains(&self, key: PayloadId) -> bool {
        self.lru.contains(&key)
    }

    /// Caches a clean value, evicting least recently used ones beyond the
    /// budget (the new value itself stays even if it alone is larger).
    pub fn put(&mut self, key: PayloadId, value: Arc<BitString>) {
        let added = cost(&value);
        if let Some(old) = self.lru.put(key, value) {
            self.bytes -= cost(&old);
            self.released_bytes += cost(&old) as u64;
        }
        self.bytes += added;
        while self.bytes > self.budget && self.lru.len() > 1 {
            match self.lru.pop_lru() {
                Some((_, v)) => {
                    self.bytes -= cost(&v);
                    self.released_bytes += cost(&v) as u64;
                    self.evictions += 1;
                }
                None => break,
            }
        }
    }

    pub fn remove(&mut self, key: PayloadId) -> Option<Arc<BitString>> {
        let v = self.lru.pop(&key)?;
        self.bytes -= cost(&v);
        self.released_bytes += cost(&v) as u64;
        Some(v)
    }

    /// Drops every cached payload that starts at one of `pages` (they were
    /// released and may be reused).
    pub fn forget_pages(&mut self, pages: &std::collections::HashSet<u64>) {
        if pages.is_empty() {
            return;
        }
        let stale: Vec<PayloadId> = self
            .lru
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| pages.contains(&k.0))
            .collect();
        for k in stale {
            self.remove(k);
        }
    }

    pub fn clear(&mut self) {
        self.lru.clear();
        self.released_bytes += self.bytes as u64;
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(bits: u32) -> Arc<BitString> {
        let mut v = BitString::new();
        for i in 0..bits {
            v.set_bit(i * 3, true);
        }
        Arc::new(v)
    }

    #[test]
    fn stays_within_budget_and_evicts_lru_first() {
        let mut c = Cache::new(20_000);
        for i in 0..100u32 {
            c.put((u64::from(i), 7, 1), value(1000));
            assert!(c.bytes() <= 20_000 || c.len() == 1);
        }
        assert!(c.len() < 100);
        assert!(c.get((99, 7, 1)).is_some());
        assert!(c.get((0, 7, 1)).is_none());
        assert!(c.evictions > 0);
    }

    #[test]
    fn replacing_and_removing_keep_the_byte_count() {
        let mut c = Cache::new(1 << 20);
        c.put((1, 1, 1), value(10));
        c.put((1, 1, 1), value(2000));
        c.put((2, 1, 1), value(5));
        c.forget_pages(&[2].into_iter().collect());
        assert!(c.remove((1, 1, 1)).is_some());
        assert!(c.remove((2, 1, 1)).is_none());
        assert_eq!(c.bytes(), 0);
    }
}
