//! The keyspace: databases 0..15, each a map from key to entry (a string
//! value kept as a bitmap plus its byte length, and an optional expiry).
//! Owns lazy and active expiry, ordered key iteration for KEYS and SCAN, and
//! the SCAN cursor table. Knows nothing about RESP or connections.

pub mod bitstring;
pub mod glob;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

pub use bitstring::{BitOp, BitString, RangeUnit};

/// Number of databases, as Redis's default `databases 16`.
pub const DATABASES: usize = 16;

/// How many SCAN cursors are remembered; the oldest are forgotten first. A
/// forgotten cursor restarts its iteration, which keeps SCAN's guarantee
/// (every key present for the whole iteration is returned) at the price of
/// repeats.
const SCAN_CURSORS: usize = 16 * 1024;

/// One key's value and expiry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Entry {
    pub value: BitString,
    expire_at: Option<u64>,
}

impl Entry {
    pub fn new(value: BitString) -> Self {
        Entry {
            value,
            expire_at: None,
        }
    }

    /// Absolute expiry in Unix milliseconds, if the key is volatile.
    pub fn expire_at(&self) -> Option<u64> {
        self.expire_at
    }

    fn is_expired(&self, now_ms: u64) -> bool {
        matches!(self.expire_at, Some(at) if at <= now_ms)
    }
}

/// One database.
#[derive(Debug, Default)]
pub struct Db {
    entries: BTreeMap<Vec<u8>, Entry>,
    /// Keys that carry an expiry, for the active sweep.
    volatile: BTreeSet<Vec<u8>>,
    /// Where the active sweep resumes.
    sweep_from: Vec<u8>,
}

impl Db {
    /// Number of keys, including expired keys not yet reclaimed (as Redis's DBSIZE).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn volatile_len(&self) -> usize {
        self.volatile.len()
    }

    /// Deletes `key` if it has expired; returns whether it did.
    fn expire_if_needed(&mut self, key: &[u8], now_ms: u64) -> bool {
        if self.volatile.is_empty() {
            return false;
        }
        match self.entries.get(key) {
            Some(e) if e.is_expired(now_ms) => {
                self.entries.remove(key);
                self.volatile.remove(key);
                true
            }
            _ => false,
        }
    }

    pub fn get(&mut self, key: &[u8], now_ms: u64) -> Option<&Entry> {
        self.expire_if_needed(key, now_ms);
        self.entries.get(key)
    }

    /// The entry as stored, without the expiry check (callers that already
    /// ran `get` on the key in this command).
    pub fn peek(&self, key: &[u8]) -> Option<&Entry> {
        self.entries.get(key)
    }

    pub fn get_mut(&mut self, key: &[u8], now_ms: u64) -> Option<&mut Entry> {
        self.expire_if_needed(key, now_ms);
        self.entries.get_mut(key)
    }

    pub fn contains(&mut self, key: &[u8], now_ms: u64) -> bool {
        self.get(key, now_ms).is_some()
    }

    /// The live entry for `key`, created empty when missing.
    pub fn get_or_create(&mut self, key: &[u8], now_ms: u64) -> &mut Entry {
        self.expire_if_needed(key, now_ms);
        self.entries.entry(key.to_vec()).or_default()
    }

    /// Stores `entry` under `key`, replacing any previous value and expiry.
    pub fn insert(&mut self, key: Vec<u8>, entry: Entry) {
        if entry.expire_at.is_some() {
            self.volatile.insert(key.clone());
        } else {
            self.volatile.remove(&key);
        }
        self.entries.insert(key, entry);
    }

    /// Removes a live key; returns its entry (None when missing or expired).
    pub fn remove(&mut self, key: &[u8], now_ms: u64) -> Option<Entry> {
        self.expire_if_needed(key, now_ms);
        let entry = self.entries.remove(key)?;
        if entry.expire_at.is_some() {
            self.volatile.remove(key);
        }
        Some(entry)
    }

    /// Sets or clears the expiry of an existing live key; false when missing.
    pub fn set_expire(&mut self, key: &[u8], expire_at: Option<u64>, now_ms: u64) -> bool {
        self.expire_if_needed(key, now_ms);
        let Some(entry) = self.entries.get_mut(key) else {
            return false;
        };
        entry.expire_at = expire_at;
        if expire_at.is_some() {
            if !self.volatile.contains(key) {
                self.volatile.insert(key.to_vec());
            }
        } else {
            self.volatile.remove(key);
        }
        true
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.volatile.clear();
        self.sweep_from.clear();
    }

    /// Live keys matching a Redis glob `pattern`, in key order. A literal
    /// prefix of the pattern narrows the walk to a range of the ordered map.
    pub fn keys(&self, pattern: &[u8], now_ms: u64) -> Vec<Vec<u8>> {
        let prefix = glob::literal_prefix(pattern);
        // Redis skips matching for a lone `*` (which also lists the empty key).
        let matcher = (!glob::matches_everything(pattern)).then(|| glob::Pattern::new(pattern));
        self.entries
            .range::<[u8], _>((Bound::Included(prefix.as_slice()), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, e)| !e.is_expired(now_ms) && matcher.as_ref().is_none_or(|m| m.matches(k)))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// One SCAN step: visits up to `count` keys after `after` (exclusive; from
    /// the start when None), returns the live ones matching `pattern` and the
    /// last key visited, or None when the iteration is complete.
    pub fn scan(
        &self,
        after: Option<&[u8]>,
        count: usize,
        pattern: Option<&[u8]>,
        now_ms: u64,
    ) -> (Vec<Vec<u8>>, Option<Vec<u8>>) {
        let pattern = pattern.filter(|p| !glob::matches_everything(p));
        let prefix = pattern.map(glob::literal_prefix).unwrap_or_default();
        let matcher = pattern.map(glob::Pattern::new);
        let lower = match after {
            Some(a) if a >= prefix.as_slice() => Bound::Excluded(a),
            _ => Bound::Included(prefix.as_slice()),
        };
        let mut found = Vec::new();
        let mut last = None;
        for (visited, (k, e)) in self
            .entries
            .range::<[u8], _>((lower, Bound::Unbounded))
            .enumerate()
        {
            if !k.starts_with(&prefix) {
                return (found, None);
            }
            if visited == count {
                return (found, last);
            }
            last = Some(k.clone());
            if e.is_expired(now_ms) {
                continue;
            }
            if matcher.as_ref().is_none_or(|m| m.matches(k)) {
                found.push(k.clone());
            }
        }
        (found, None)
    }

    /// Active expiry: examines up to `budget` volatile keys from where the
    /// previous sweep stopped and deletes the expired ones. Returns how many
    /// were deleted.
    pub fn sweep_expired(&mut self, now_ms: u64, budget: usize) -> usize {
        if self.volatile.is_empty() {
            return 0;
        }
        let mut expired = Vec::new();
        let mut next_from = Vec::new();
        let from = Bound::Included(self.sweep_from.as_slice());
        for (examined, key) in self
            .volatile
            .range::<[u8], _>((from, Bound::Unbounded))
            .enumerate()
        {
            if examined == budget {
                next_from = key.clone();
                break;
            }
            if self.entries.get(key).is_none_or(|e| e.is_expired(now_ms)) {
                expired.push(key.clone());
            }
        }
        self.sweep_from = next_from;
        for key in &expired {
            self.entries.remove(key);
            self.volatile.remove(key);
        }
        expired.len()
    }
}

/// Where a SCAN iteration stands: the database and the last key visited.
#[derive(Clone, Debug)]
struct ScanPosition {
    db: usize,
    after: Vec<u8>,
}

/// All databases plus the SCAN cursor table.
pub struct Keyspace {
    dbs: Vec<Db>,
    cursors: lru::LruCache<u64, ScanPosition>,
    next_cursor: u64,
    /// Keys deleted because they expired, lazily or by the sweep.
    pub expired_keys: u64,
}

impl Default for Keyspace {
    fn default() -> Self {
        Self::new()
    }
}

impl Keyspace {
    pub fn new() -> Self {
        let capacity =
            std::num::NonZeroUsize::new(SCAN_CURSORS).unwrap_or(std::num::NonZeroUsize::MIN);
        // Cursor numbers start at a per-process offset so a cursor from a
        // previous run is unlikely to name a live position.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Keyspace {
            dbs: (0..DATABASES).map(|_| Db::default()).collect(),
            cursors: lru::LruCache::new(capacity),
            next_cursor: (seed % (1 << 40)) | 1,
            expired_keys: 0,
        }
    }

    pub fn db(&mut self, index: usize) -> &mut Db {
        &mut self.dbs[index]
    }

    pub fn dbs(&self) -> &[Db] {
        &self.dbs
    }

    pub fn flush_all(&mut self) {
        for db in &mut self.dbs {
            db.clear();
        }
        self.cursors.clear();
    }

    pub fn total_keys(&self) -> usize {
        self.dbs.iter().map(Db::len).sum()
    }

    /// One SCAN step in database `db` from `cursor` (0 starts an iteration).
    /// Returns the next cursor (0 when complete) and the keys found.
    pub fn scan(
        &mut self,
        db: usize,
        cursor: u64,
        count: usize,
        pattern: Option<&[u8]>,
        now_ms: u64,
    ) -> (u64, Vec<Vec<u8>>) {
        let after = match cursor {
            0 => None,
            c => match self.cursors.get(&c) {
                Some(pos) if pos.db == db => Some(pos.after.clone()),
                _ => None,
            },
        };
        let (keys, last) = self.dbs[db].scan(after.as_deref(), count.max(1), pattern, now_ms);
        match last {
            None => (0, keys),
            Some(after) => {
                let id = self.next_cursor;
                self.next_cursor = self.next_cursor.wrapping_add(2).max(1);
                self.cursors.put(id, ScanPosition { db, after });
                (id, keys)
            }
        }
    }

    /// Active expiry over every database; returns keys deleted.
    pub fn sweep_expired(&mut self, now_ms: u64, budget_per_db: usize) -> usize {
        let n: usize = self
            .dbs
            .iter_mut()
            .map(|db| db.sweep_expired(now_ms, budget_per_db))
            .sum();
        self.expired_keys += n as u64;
        n
    }
}

/// Current time in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(bytes: &[u8]) -> Entry {
        Entry::new(BitString::from_bytes(bytes))
    }

    #[test]
    fn lazy_expiry_hides_and_deletes() {
        let mut db = Db::default();
        db.insert(b"a".to_vec(), value(b"x"));
        assert!(db.set_expire(b"a", Some(1000), 0));
        assert!(db.get(b"a", 999).is_some());
        assert!(db.get(b"a", 1000).is_none());
        assert_eq!(db.len(), 0);
        assert_eq!(db.volatile_len(), 0);
    }

    #[test]
    fn sweep_deletes_only_expired_keys_and_resumes() {
        let mut db = Db::default();
        for i in 0..100u32 {
            let k = format!("k{i:03}").into_bytes();
            db.insert(k.clone(), value(b"v"));
            db.set_expire(&k, Some(if i % 2 == 0 { 10 } else { 1_000 }), 0);
        }
        let mut deleted = 0;
        for _ in 0..10 {
            deleted += db.sweep_expired(20, 15);
        }
        assert_eq!(deleted, 50);
        assert_eq!(db.len(), 50);
    }

    #[test]
    fn keys_uses_prefix_and_pattern() {
        let mut db = Db::default();
        for k in ["user:1:a", "user:1:b", "user:2:a", "usex", "a"] {
            db.insert(k.as_bytes().to_vec(), value(b"1"));
        }
        assert_eq!(
            db.keys(b"user:1:*", 0),
            vec![b"user:1:a".to_vec(), b"user:1:b".to_vec()]
        );
        assert_eq!(db.keys(b"*:a", 0).len(), 2);
        assert_eq!(db.keys(b"*", 0).len(), 5);
    }

    #[test]
    fn scan_returns_every_key_once_in_steps() {
        let mut ks = Keyspace::new();
        for i in 0..1000u32 {
            ks.db(3)
                .insert(format!("key:{i}").into_bytes(), value(b"1"));
        }
        let mut cursor = 0;
        let mut seen = BTreeSet::new();
        let mut rounds = 0;
        loop {
            let (next, keys) = ks.scan(3, cursor, 7, None, 0);
            for k in keys {
                assert!(seen.insert(k));
            }
            rounds += 1;
            if next == 0 {
                break;
            }
            cursor = next;
        }
        assert_eq!(seen.len(), 1000);
        assert!(rounds > 100);
        // A cursor of another database restarts rather than leaking positions.
        let (c, _) = ks.scan(3, 0, 10, None, 0);
        let (_, keys) = ks.scan(4, c, 10, None, 0);
        assert!(keys.is_empty());
    }

    #[test]
    fn scan_with_prefix_pattern_stops_at_prefix_end() {
        let mut ks = Keyspace::new();
        for k in ["a1", "b1", "b2", "b3", "c1"] {
            ks.db(0).insert(k.as_bytes().to_vec(), value(b"1"));
        }
        let (c, keys) = ks.scan(0, 0, 2, Some(b"b*"), 0);
        assert_eq!(keys, vec![b"b1".to_vec(), b"b2".to_vec()]);
        let (c2, keys) = ks.scan(0, c, 2, Some(b"b*"), 0);
        assert_eq!(keys, vec![b"b3".to_vec()]);
        assert_eq!(c2, 0);
    }
}
