//! The cache of committed keys: for each recently used key, what the
//! directory B+tree says of it (its entry, or that it has none) and, once
//! decoded, its value. One LRU (lru crate) keyed by database and key and
//! bounded in bytes by `--cache-size`, so a hot key costs one hash lookup:
//! no B+tree walk and no second map for its value.
//!
//! Only the committed state lives here. A key changed since the last
//! checkpoint is answered by the keyspace's overlay, and the checkpoint that
//! commits the change forgets the key here (`forget`, `forget_db`). A value
//! is only ever used with the directory entry it was decoded from (same
//! location, checksum and length), so an overlay entry that points at
//! another key's payload (a renamed key) never picks up a wrong value.
//!
//! A hit does not relink the LRU list (that would touch two more nodes, and
//! lookups are bound by memory latency): it sets the entry's `used` flag,
//! and eviction gives a flagged entry a second chance at the recent end
//! instead of dropping it (the CLOCK approximation of LRU). Short keys are
//! stored inside the LRU node (`KeyBytes`), so comparing them touches no
//! other memory.

use super::key::KeyBytes;
use super::BitString;
use crate::storage::btree::{EntryMeta, Payload};
use foldhash::fast::RandomState;
use lru::LruCache;
use std::sync::Arc;

/// Bytes counted for one entry besides its key, inline payload and value
/// (the LRU node and its map slot). `tests/heap_accounting.rs` checks the
/// costs below against the allocator.
const ENTRY_OVERHEAD: usize = 160;
/// An inline payload's shared allocation besides its bytes (reference
/// counts, the allocator's header and rounding).
const INLINE_PAYLOAD_OVERHEAD: usize = 32;
/// A decoded value's `Arc` allocation.
const VALUE_OVERHEAD: usize = 64;

/// A cache key: the database number byte followed by the key.
type CacheKey = KeyBytes;

/// What is held for one key.
struct Held {
    /// The key's committed directory entry; `None`: the key is not committed.
    meta: Option<EntryMeta>,
    /// The decoded value of `meta`'s payload.
    value: Option<Arc<BitString>>,
    /// The value's heap bytes, measured once (a value held here is never
    /// changed, and measuring walks its containers).
    value_bytes: usize,
    /// Used since it last reached the old end of the list.
    used: bool,
}

impl Held {
    /// A new, unused entry; `value_bytes` is `value`'s `heap_bytes` (0 without).
    fn new(meta: Option<EntryMeta>, value: Option<Arc<BitString>>, value_bytes: usize) -> Held {
        Held {
            meta,
            value,
            value_bytes,
            used: false,
        }
    }

    fn cost(&self, key: &CacheKey) -> usize {
        let inline = match self.meta.as_ref().map(|m| &m.payload) {
            Some(Payload::Inline(b)) => INLINE_PAYLOAD_OVERHEAD + b.len(),
            _ => 0,
        };
        let value = match self.value {
            Some(_) => VALUE_OVERHEAD + self.value_bytes,
            None => 0,
        };
        ENTRY_OVERHEAD + KeyBytes::heap_bytes_of(key.as_slice().len()) + inline + value
    }

    fn value_of(&self, meta: &EntryMeta) -> Option<&Arc<BitString>> {
        match (&self.meta, &self.value) {
            (Some(held), Some(v)) if same_payload(held, meta) => Some(v),
            _ => None,
        }
    }
}

/// Whether two directory entries describe the same payload bytes of the
/// same string (the expiry may differ).
pub fn same_payload(a: &EntryMeta, b: &EntryMeta) -> bool {
    a.payload_crc == b.payload_crc && a.byte_len == b.byte_len && a.payload == b.payload
}

pub struct Cache {
    lru: LruCache<CacheKey, Held, RandomState>,
    /// The lookup key being built (no allocation per lookup).
    scratch: Vec<u8>,
    bytes: usize,
    /// Entries holding a decoded value.
    values: usize,
    budget: usize,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    /// Bytes of entries dropped so far (evicted, forgotten or cleared): what
    /// the allocator may hand back to the system.
    pub released_bytes: u64,
    /// Values evicted or forgotten and not yet freed: freeing a large bitmap
    /// (hundreds of containers) is left to whoever holds the keyspace lock,
    /// to do after releasing it (`take_released`).
    released: Vec<Arc<BitString>>,
}

/// Entries one eviction gives a second chance at most (see `Cache::evict`).
const SECOND_CHANCES: usize = 1024;

/// Entries one insertion looks at for eviction at most (about a microsecond
/// each). A large value coming in among many small entries would otherwise
/// evict thousands of them in one call under the keyspace lock (measured:
/// 4 to 5 ms for one 800 KB value among W2's small keys). What is left over
/// is evicted in later bounded steps (`Cache::shrink`).
const EVICT_PER_INSERT: usize = 256;

/// Values kept in `Cache::released` at most; beyond that (a caller that
/// never takes them) they are freed at once.
const RELEASED_KEPT: usize = 4096;

impl Cache {
    pub fn new(budget: usize) -> Self {
        Cache {
            lru: LruCache::unbounded_with_hasher(RandomState::default()),
            scratch: Vec::new(),
            bytes: 0,
            values: 0,
            budget,
            hits: 0,
            misses: 0,
            evictions: 0,
            released_bytes: 0,
            released: Vec::new(),
        }
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Keys whose value is held decoded.
    pub fn len(&self) -> usize {
        self.values
    }

    pub fn is_empty(&self) -> bool {
        self.values == 0
    }

    /// Keys held, with or without their value.
    pub fn entries(&self) -> usize {
        self.lru.len()
    }

    fn lookup_key(&mut self, db: usize, key: &[u8]) {
        self.scratch.clear();
        self.scratch.push(db as u8);
        self.scratch.extend_from_slice(key);
    }

    /// The key's committed directory entry, if held (`Some(None)`: known
    /// absent); marks it used.
    pub fn entry(&mut self, db: usize, key: &[u8]) -> Option<Option<EntryMeta>> {
        self.lookup_key(db, key);
        let held = self.lru.peek_mut(self.scratch.as_slice())?;
        held.used = true;
        Some(held.meta.clone())
    }

    /// As `entry`, without marking the key used.
    pub fn peek_entry(&mut self, db: usize, key: &[u8]) -> Option<Option<EntryMeta>> {
        self.lookup_key(db, key);
        self.lru
            .peek(self.scratch.as_slice())
            .map(|h| h.meta.clone())
    }

    /// The key's committed directory entry and, if held, its decoded value,
    /// in one lookup (`None`: the key is not held). With `touch` the key is
    /// marked used. Hits and misses are the caller's to count.
    pub fn entry_and_value(
        &mut self,
        db: usize,
        key: &[u8],
        touch: bool,
    ) -> Option<(Option<EntryMeta>, Option<Arc<BitString>>)> {
        self.lookup_key(db, key);
        let held = self.lru.peek_mut(self.scratch.as_slice())?;
        let meta = held.meta.clone();
        let value = meta.as_ref().and_then(|m| held.value_of(m)).cloned();
        if touch {
            held.used = true;
        }
        Some((meta, value))
    }

    /// Holds what a B+tree lookup said of the key (no value yet).
    pub fn insert_entry(&mut self, db: usize, key: &[u8], meta: Option<EntryMeta>) {
        self.put(db, key, Held::new(meta, None, 0));
    }

    /// The decoded value of the key's payload `meta`, if held (the lookup
    /// of its entry just before marked the key used).
    pub fn value(&mut self, db: usize, key: &[u8], meta: &EntryMeta) -> Option<Arc<BitString>> {
        let value = self.peek_value(db, key, meta);
        if value.is_some() {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
        value
    }

    /// The decoded value of the key's payload `meta`, if held (not counted
    /// as a use, a hit or a miss).
    pub fn peek_value(
        &mut self,
        db: usize,
        key: &[u8],
        meta: &EntryMeta,
    ) -> Option<Arc<BitString>> {
        self.lookup_key(db, key);
        self.lru
            .peek(self.scratch.as_slice())
            .and_then(|h| h.value_of(meta))
            .cloned()
    }

    /// Whether the value of the key's payload `meta` is held (not counted
    /// as a use).
    pub fn has_value(&mut self, db: usize, key: &[u8], meta: &EntryMeta) -> bool {
        self.lookup_key(db, key);
        self.lru
            .peek(self.scratch.as_slice())
            .is_some_and(|h| h.value_of(meta).is_some())
    }

    /// Holds `value`, decoded from `meta`, if `meta` is the key's committed
    /// entry held here; returns whether it was kept.
    pub fn put_value(
        &mut self,
        db: usize,
        key: &[u8],
        meta: &EntryMeta,
        value: Arc<BitString>,
    ) -> bool {
        self.lookup_key(db, key);
        let Some((full, held)) = self.lru.get_key_value_mut(self.scratch.as_slice()) else {
            return false;
        };
        if !held.meta.as_ref().is_some_and(|m| same_payload(m, meta)) {
            return false;
        }
        let before = held.cost(full);
        if held.value.is_none() {
            self.values += 1;
        }
        held.value_bytes = value.heap_bytes();
        let replaced = held.value.replace(value);
        let after = held.cost(full);
        self.bytes = self.bytes - before + after;
        if let Some(old) = replaced {
            self.release(old);
        }
        self.evict();
        true
    }

    /// Takes the value of the key's payload `meta` out (a command is about
    /// to change it in the overlay, where no copy is then needed).
    pub fn take_value(
        &mut self,
        db: usize,
        key: &[u8],
        meta: &EntryMeta,
    ) -> Option<Arc<BitString>> {
        self.lookup_key(db, key);
        let (full, held) = self.lru.get_key_value_mut(self.scratch.as_slice())?;
        held.value_of(meta)?;
        let before = held.cost(full);
        let value = held.value.take();
        held.value_bytes = 0;
        let after = held.cost(full);
        self.values -= 1;
        self.bytes -= before - after;
        self.released_bytes += (before - after) as u64;
        value
    }

    /// Holds the key's new committed entry and its value (a checkpoint just
    /// wrote them), whose `heap_bytes` the caller measured (walking the
    /// containers of a thousand large bitmaps under the keyspace lock took
    /// tens of milliseconds).
    pub fn insert_committed(
        &mut self,
        db: usize,
        key: &[u8],
        meta: EntryMeta,
        value: Arc<BitString>,
        value_bytes: usize,
    ) {
        self.put(db, key, Held::new(Some(meta), Some(value), value_bytes));
    }

    /// Holds `held` for the key, at the recent end, in place of what was
    /// held: one lookup when the key is held, as it is for most keys a
    /// checkpoint wrote (a write takes the value out and leaves the entry),
    /// which publishing replaces under the keyspace lock.
    fn put(&mut self, db: usize, key: &[u8], held: Held) {
        self.lookup_key(db, key);
        let has_value = held.value.is_some();
        match self.lru.get_key_value_mut(self.scratch.as_slice()) {
            Some((full, slot)) => {
                let added = held.cost(full);
                let old = std::mem::replace(slot, held);
                let removed = old.cost(full);
                self.bytes = self.bytes + added - removed;
                self.released_bytes += removed as u64;
                if let Some(value) = old.value {
                    self.values -= 1;
                    self.release(value);
                }
            }
            None => {
                let full = CacheKey::new(&self.scratch);
                self.bytes += held.cost(&full);
                self.lru.put(full, held);
            }
        }
        if has_value {
            self.values += 1;
        }
        self.evict();
    }

    /// Eviction after an insertion: at most `EVICT_PER_INSERT` entries, the
    /// rest later (`shrink`), unless the cache is more than an eighth over
    /// its budget, which is as far as it may overshoot.
    fn evict(&mut self) {
        self.evict_at_most(EVICT_PER_INSERT);
        let limit = self.budget.saturating_add(self.budget / 8);
        if self.bytes > limit {
            self.evict_at_most(usize::MAX);
        }
    }

    /// Whether the cache holds more than its budget (and more than one
    /// entry, which may be larger than the budget by itself).
    pub fn over_budget(&self) -> bool {
        self.bytes > self.budget && self.lru.len() > 1
    }

    /// One bounded step of eviction towards the budget; returns whether the
    /// cache is still over it.
    pub fn shrink(&mut self) -> bool {
        self.evict_at_most(EVICT_PER_INSERT);
        self.over_budget()
    }

    /// Drops the least recently used entries beyond the budget, looking at
    /// `max` entries at most (the newest entry stays even if it alone is
    /// larger). An entry used since it was last looked at here goes back to
    /// the recent end instead, once, and at most `SECOND_CHANCES` entries
    /// per call do: when a large value comes in among a hundred thousand
    /// small entries that were all used, one call would otherwise walk all
    /// of them while holding the keyspace lock.
    fn evict_at_most(&mut self, max: usize) {
        let mut second_chances = self.lru.len().min(SECOND_CHANCES);
        let mut looked_at = 0;
        while self.over_budget() && looked_at < max {
            looked_at += 1;
            let Some((key, mut held)) = self.lru.pop_lru() else {
                break;
            };
            if held.used && second_chances > 0 {
                second_chances -= 1;
                held.used = false;
                self.lru.put(key, held);
                continue;
            }
            self.dropped(&key, held);
            self.evictions += 1;
        }
    }

    fn dropped(&mut self, key: &CacheKey, held: Held) {
        let cost = held.cost(key);
        self.bytes -= cost;
        self.released_bytes += cost as u64;
        if let Some(value) = held.value {
            self.values -= 1;
            self.release(value);
        }
    }

    fn release(&mut self, value: Arc<BitString>) {
        if self.released.len() >= RELEASED_KEPT {
            self.released.clear();
        }
        self.released.push(value);
    }

    /// The values evicted or forgotten since the last call, for the caller
    /// to free once it has released the keyspace lock.
    pub fn take_released(&mut self) -> Vec<Arc<BitString>> {
        std::mem::take(&mut self.released)
    }

    /// Forgets a key (its committed entry changed).
    pub fn forget(&mut self, db: usize, key: &[u8]) {
        self.lookup_key(db, key);
        if let Some((full, held)) = self.lru.pop_entry(self.scratch.as_slice()) {
            self.dropped(&full, held);
        }
    }

    /// Forgets every key of a database (it was flushed).
    pub fn forget_db(&mut self, db: usize) {
        let keys: Vec<CacheKey> = self
            .lru
            .iter()
            .filter(|(k, _)| k.as_slice().first() == Some(&(db as u8)))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            if let Some(held) = self.lru.pop(k.as_slice()) {
                self.dropped(&k, held);
            }
        }
    }

    pub fn clear(&mut self) {
        self.lru.clear();
        self.released_bytes += self.bytes as u64;
        self.bytes = 0;
        self.values = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(c: &mut Cache, db: usize, key: &[u8], m: EntryMeta, v: Arc<BitString>) {
        let bytes = v.heap_bytes();
        c.insert_committed(db, key, m, v, bytes);
    }

    fn value(bits: u32) -> Arc<BitString> {
        let mut v = BitString::new();
        for i in 0..bits {
            v.set_bit(i * 3, true);
        }
        Arc::new(v)
    }

    fn meta(page: u64, crc: u32) -> EntryMeta {
        EntryMeta {
            byte_len: 100,
            cardinality: 1,
            expire_at: 0,
            payload_crc: crc,
            payload: Payload::Extent {
                page,
                pages: 1,
                len: 10,
            },
        }
    }

    #[test]
    fn stays_within_budget_and_evicts_lru_first() {
        let mut c = Cache::new(20_000);
        for i in 0..100u32 {
            let key = i.to_be_bytes();
            let m = meta(u64::from(i), 7);
            insert(&mut c, 0, &key, m, value(1000));
            assert!(c.bytes() <= 20_000 || c.entries() == 1);
        }
        assert!(c.len() < 100);
        assert!(c.value(0, &99u32.to_be_bytes(), &meta(99, 7)).is_some());
        assert!(c.value(0, &0u32.to_be_bytes(), &meta(0, 7)).is_none());
        assert!(c.evictions > 0);
    }

    #[test]
    fn holding_a_key_again_replaces_its_entry_in_place_and_keeps_the_counts() {
        let mut c = Cache::new(1 << 20);
        insert(&mut c, 0, b"a", meta(1, 1), value(10));
        c.insert_entry(0, b"b", None);
        let (one_value, two_entries) = (c.bytes(), c.entries());
        // A write took the value out and left the entry; the checkpoint
        // that wrote the key holds its new entry and value.
        assert!(c.take_value(0, b"a", &meta(1, 1)).is_some());
        assert_eq!(c.len(), 0);
        insert(&mut c, 0, b"a", meta(2, 2), value(10));
        assert_eq!(
            (c.bytes(), c.entries(), c.len()),
            (one_value, two_entries, 1)
        );
        assert!(
            c.value(0, b"a", &meta(1, 1)).is_none(),
            "the old entry is gone"
        );
        assert!(c.value(0, b"a", &meta(2, 2)).is_some());
        // Over a held value: the old one is released, counted once.
        insert(&mut c, 0, b"a", meta(3, 3), value(20));
        assert_eq!(c.len(), 1);
        assert_eq!(c.take_released().len(), 1);
        // A known-absent key gets a value, and the counts follow.
        insert(&mut c, 0, b"b", meta(4, 4), value(10));
        assert_eq!((c.entries(), c.len()), (2, 2));
        c.forget(0, b"a");
        c.forget(0, b"b");
        assert_eq!((c.bytes(), c.entries(), c.len()), (0, 0, 0));
        // The replaced key is the most recent: eviction takes the other.
        insert(&mut c, 0, b"x", meta(5, 5), value(10));
        insert(&mut c, 0, b"y", meta(6, 6), value(10));
        insert(&mut c, 0, b"x", meta(7, 7), value(10));
        c.budget = c.bytes() - 1;
        c.shrink();
        assert!(c.value(0, b"x", &meta(7, 7)).is_some());
        assert!(c.value(0, b"y", &meta(6, 6)).is_none());
    }

    /// A cache of `n` entries without values, exactly at its budget.
    fn full_of_small_entries(n: u32) -> Cache {
        let mut c = Cache::new(n as usize * ENTRY_OVERHEAD);
        for i in 0..n {
            c.insert_entry(0, &i.to_be_bytes(), None);
        }
        assert_eq!(c.bytes(), c.budget());
        assert!(!c.over_budget());
        c
    }

    #[test]
    fn a_large_insertion_evicts_a_bounded_number_and_shrink_does_the_rest() {
        let mut c = full_of_small_entries(1000);
        // Needs 313 small entries to go; one insertion evicts 256 and
        // leaves the cache 9,040 bytes over, within an eighth of its budget.
        let cost = 50_000;
        c.insert_committed(
            0,
            b"big",
            meta(1, 1),
            value(1),
            cost - ENTRY_OVERHEAD - VALUE_OVERHEAD,
        );
        assert_eq!(c.evictions, EVICT_PER_INSERT as u64);
        assert!(c.over_budget());
        assert!(c.bytes() <= c.budget() + c.budget() / 8);
        let mut steps = 0;
        while c.shrink() {
            steps += 1;
            assert!(steps < 10, "shrink makes no progress");
        }
        assert!(c.bytes() <= c.budget());
        assert_eq!(c.evictions, 313);
        assert!(
            c.has_value(0, b"big", &meta(1, 1)),
            "the newest entry stays"
        );
        assert!(!c.shrink(), "nothing more to do");
        assert_eq!(c.evictions, 313);
    }

    #[test]
    fn an_insertion_never_leaves_the_cache_more_than_an_eighth_over() {
        let mut c = full_of_small_entries(1000);
        // 256 evictions would leave it 59,040 bytes over: more than 20,000.
        c.insert_committed(
            0,
            b"big",
            meta(1, 1),
            value(1),
            100_000 - ENTRY_OVERHEAD - VALUE_OVERHEAD,
        );
        assert!(c.bytes() <= c.budget());
        assert!(!c.over_budget());
        assert_eq!(c.evictions, 625);
    }

    #[test]
    fn a_used_entry_gets_a_second_chance_and_long_keys_work() {
        let mut c = Cache::new(4 * (ENTRY_OVERHEAD + 100));
        let long = [b'x'; 40];
        c.insert_entry(0, &long, None);
        c.insert_entry(0, b"old", None);
        c.insert_entry(0, b"b", None);
        // `long` is the least recent, but used: "old" goes first.
        assert_eq!(c.entry(0, &long), Some(None));
        insert(&mut c, 0, b"big", meta(1, 1), value(2000));
        assert_eq!(c.peek_entry(0, b"old"), None);
        assert_eq!(c.peek_entry(0, &long), Some(None));
        assert!(c.evictions >= 1);
        c.forget(0, &long);
        assert_eq!(c.peek_entry(0, &long), None);
    }

    #[test]
    fn a_value_is_used_only_with_its_own_entry() {
        let mut c = Cache::new(1 << 20);
        insert(&mut c, 0, b"k", meta(5, 1), value(10));
        // Another payload (a renamed key's) under the same key finds nothing.
        assert!(c.value(0, b"k", &meta(6, 1)).is_none());
        assert!(c.value(0, b"k", &meta(5, 2)).is_none());
        assert!(c.value(1, b"k", &meta(5, 1)).is_none());
        assert!(c.value(0, b"k", &meta(5, 1)).is_some());
        // A value decoded from another payload is not kept.
        assert!(!c.put_value(0, b"k", &meta(6, 1), value(3)));
        assert!(!c.put_value(0, b"absent", &meta(5, 1), value(3)));
        c.insert_entry(0, b"e", Some(meta(9, 9)));
        assert!(!c.has_value(0, b"e", &meta(9, 9)));
        assert!(c.put_value(0, b"e", &meta(9, 9), value(3)));
        assert!(c.has_value(0, b"e", &meta(9, 9)));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn values_let_go_of_are_handed_out_for_freeing_later() {
        let mut c = Cache::new(1 << 20);
        let a = value(10);
        let b = value(20);
        insert(&mut c, 0, b"a", meta(1, 1), a.clone());
        insert(&mut c, 0, b"b", meta(2, 1), b.clone());
        assert!(c.take_released().is_empty());
        // Replaced, forgotten and evicted values are kept, not dropped.
        insert(&mut c, 0, b"a", meta(3, 1), value(30));
        c.forget(0, b"b");
        let released = c.take_released();
        assert_eq!(released.len(), 2);
        assert!(released.iter().any(|v| Arc::ptr_eq(v, &a)));
        assert!(released.iter().any(|v| Arc::ptr_eq(v, &b)));
        assert!(c.take_released().is_empty(), "taken once");
        let mut small = Cache::new(1);
        insert(&mut small, 0, b"x", meta(1, 1), value(10));
        insert(&mut small, 0, b"y", meta(2, 1), value(10));
        assert_eq!(small.take_released().len(), 1, "the evicted value");
        // A caller that never takes them does not make them pile up.
        for i in 0..(RELEASED_KEPT as u64 + 10) {
            insert(&mut small, 0, &i.to_be_bytes(), meta(i, 1), value(1));
        }
        assert!(small.take_released().len() <= RELEASED_KEPT);
    }

    #[test]
    fn replacing_taking_and_forgetting_keep_the_byte_count() {
        let mut c = Cache::new(1 << 20);
        insert(&mut c, 0, b"a", meta(1, 1), value(10));
        insert(&mut c, 0, b"a", meta(1, 1), value(2000));
        insert(&mut c, 0, b"b", meta(2, 1), value(5));
        insert(&mut c, 3, b"c", meta(3, 1), value(5));
        c.insert_entry(3, b"d", None);
        assert_eq!(c.entry(3, b"d"), Some(None));
        assert!(c.take_value(0, b"a", &meta(1, 1)).is_some());
        assert!(c.take_value(0, b"a", &meta(1, 1)).is_none());
        assert_eq!(c.entry(0, b"a"), Some(Some(meta(1, 1))));
        c.forget_db(3);
        assert_eq!(c.entry(3, b"d"), None);
        assert_eq!(c.entries(), 2);
        assert_eq!(c.len(), 1);
        c.forget(0, b"b");
        c.forget(0, b"a");
        assert_eq!(c.bytes(), 0);
        assert_eq!(c.len(), 0);
    }
}
