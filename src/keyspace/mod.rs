//! The keyspace: databases 0..15 of keys whose values are strings kept as
//! bitmaps plus byte lengths (`BitString`), with expiries.
//!
//! A key is resolved through three layers, newest first:
//! - the *overlay*: every change since the last checkpoint began (values
//!   decoded in memory, or a committed payload kept as it is, or a deletion);
//! - the *frozen* overlay: the changes a running checkpoint is writing;
//! - the *committed* state: the directory B+tree of the database file, read
//!   through its read-only mapping.
//!
//! Committed keys are looked up in the directory once and then held, with
//! their values decoded on demand, in a byte-bounded LRU cache.
//! Metadata (length, cardinality, expiry) comes from the directory entry, so
//! STRLEN, EXISTS, TYPE, TTL, BITCOUNT without a range, DBSIZE, KEYS and SCAN
//! never decode a bitmap. Owns lazy and active expiry, ordered iteration for
//! KEYS and SCAN, and the SCAN cursor table. Knows nothing about RESP.

pub mod bitstring;
pub mod cache;
pub mod glob;
pub mod key;
pub mod memo;
pub mod slots;
pub mod watch;

use crate::storage::btree::{self, dir_key, EntryMeta, Payload};
use crate::storage::pagefile::Committed;
use crate::storage::StorageError;
use cache::Cache;
use std::ops::{Bound, ControlFlow};
use std::sync::Arc;

pub use bitstring::{BitOp, BitString, RangeUnit};

/// Number of databases, as Redis's default `databases 16`.
pub const DATABASES: usize = 16;

/// How many SCAN cursors are remembered; the oldest are forgotten first. A
/// forgotten cursor restarts its iteration, which keeps SCAN's guarantee
/// (every key present for the whole iteration is returned) at the price of
/// repeats.
const SCAN_CURSORS: usize = 16 * 1024;

/// Where a value is.
#[derive(Clone, Debug)]
pub enum Value {
    /// Decoded in memory (changed since the last checkpoint).
    Loaded(Arc<BitString>),
    /// A committed payload, unchanged (the entry around it may have changed:
    /// a new expiry, or a new name after RENAME).
    Stored(EntryMeta),
}

/// A key's value and expiry.
#[derive(Clone, Debug)]
pub struct Entry {
    pub value: Value,
    /// Unix milliseconds.
    pub expire_at: Option<u64>,
}

impl Entry {
    fn is_expired(&self, now_ms: u64) -> bool {
        matches!(self.expire_at, Some(at) if at <= now_ms)
    }

    pub fn meta(&self) -> KeyMeta {
        match &self.value {
            Value::Loaded(v) => KeyMeta {
                len: v.len(),
                cardinality: v.count(),
                expire_at: self.expire_at,
            },
            Value::Stored(m) => KeyMeta {
                len: m.byte_len,
                cardinality: m.cardinality,
                expire_at: self.expire_at,
            },
        }
    }

    fn from_committed(meta: EntryMeta) -> Entry {
        let expire_at = committed_expiry(&meta);
        Entry {
            value: Value::Stored(meta),
            expire_at,
        }
    }
}

/// A directory entry's expiry (stored as 0 when the key does not expire).
fn committed_expiry(meta: &EntryMeta) -> Option<u64> {
    (meta.expire_at != 0).then_some(meta.expire_at)
}

/// Whether a directory entry has expired.
fn committed_expired(meta: &EntryMeta, now_ms: u64) -> bool {
    matches!(committed_expiry(meta), Some(at) if at <= now_ms)
}

/// What is known about a key without its bitmap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyMeta {
    pub len: u64,
    pub cardinality: u64,
    pub expire_at: Option<u64>,
}

/// What a BITOP did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BitopDone {
    /// The result's byte length (the reply).
    pub len: u64,
    /// The destination already held the result: nothing changed.
    pub from_memo: bool,
}

/// An overlay slot: the key's newest state.
#[derive(Clone, Debug)]
pub enum Slot {
    Present(Entry),
    Deleted,
}

/// One database's changes in a layer.
#[derive(Clone, Debug, Default)]
pub struct LayerDb {
    pub slots: slots::Slots,
    /// Everything below this layer is gone for this database (FLUSHDB).
    pub flushed: bool,
    /// Keys added minus removed relative to the layers below (or to zero
    /// when flushed).
    pub delta: i64,
    /// Estimated bytes of the values held (see `Layer::value_bytes`).
    pub value_bytes: usize,
}

/// Bytes a key held in a layer costs besides its value and a long key's
/// allocation (`KeyBytes::heap_bytes_of`): its hash-table bucket (the key
/// and the slot, at the table's typical load of about two thirds) and its
/// entry in the ordered set (the key and its share of the B-tree node).
/// `tests/heap_accounting.rs` checks the sum against what the allocator
/// holds for many changed keys.
const SLOT_OVERHEAD: usize = (std::mem::size_of::<(key::KeyBytes, Slot)>() * 3) / 2
    + std::mem::size_of::<key::KeyBytes>()
    + 24;
/// The allocation of a loaded value's `Arc<BitString>`.
const LOADED_VALUE_OVERHEAD: usize = 64;

/// Bytes counted for a slot in a layer's `value_bytes`.
fn slot_bytes(key: &[u8], slot: Option<&Slot>) -> usize {
    let held = match slot {
        None => return 0,
        Some(Slot::Present(Entry {
            value: Value::Loaded(v),
            ..
        })) => LOADED_VALUE_OVERHEAD + v.heap_bytes(),
        Some(Slot::Present(Entry {
            value:
                Value::Stored(EntryMeta {
                    payload: Payload::Inline(bytes),
                    ..
                }),
            ..
        })) => bytes.len(),
        Some(_) => 0,
    };
    SLOT_OVERHEAD + key::KeyBytes::heap_bytes_of(key.len()) + held
}

/// A set of changes to all databases.
#[derive(Clone, Debug)]
pub struct Layer {
    pub dbs: Vec<LayerDb>,
}

impl Default for Layer {
    fn default() -> Self {
        Layer {
            dbs: (0..DATABASES).map(|_| LayerDb::default()).collect(),
        }
    }
}

/// The most keys per database a new overlay is sized for at a freeze
/// (`Layer::sized_like`): about 15 MB of hash table, mostly untouched until
/// used.
const PRESIZED_KEYS: usize = 128 * 1024;

impl Layer {
    /// An empty layer whose databases have room for as many keys as
    /// `like`'s changed (up to `PRESIZED_KEYS`). The overlay that starts at
    /// a freeze is sized so: the keys written during the last interval are
    /// mostly written again during the next one, and a hash table grown
    /// from empty rehashes all of its keys at each doubling, on the network
    /// thread, while the checkpoint runs beside it.
    fn sized_like(like: &Layer) -> Layer {
        Layer {
            dbs: like
                .dbs
                .iter()
                .map(|d| LayerDb {
                    slots: slots::Slots::with_capacity(d.slots.len().min(PRESIZED_KEYS)),
                    ..LayerDb::default()
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.dbs.iter().all(|d| d.slots.is_empty() && !d.flushed)
    }

    /// Bytes of decoded values held (the dirty data a checkpoint must
    /// write), kept as a running estimate so that asking costs nothing: a
    /// value is measured when it enters or leaves the layer, and a bit set
    /// in place counts two bytes (what it adds to a sparse container; dense
    /// ones grow less, so this errs towards checkpointing early).
    pub fn value_bytes(&self) -> usize {
        self.dbs.iter().map(|d| d.value_bytes).sum()
    }

    /// Puts `upper`'s changes on top of this layer's.
    fn absorb(&mut self, upper: Layer) {
        for (lower, upper) in self.dbs.iter_mut().zip(upper.dbs) {
            if upper.flushed {
                *lower = upper;
            } else {
                lower.delta += upper.delta;
                // Keys in both are counted twice: an overestimate until the
                // merged layer is checkpointed.
                lower.value_bytes += upper.value_bytes;
                lower.slots.extend(upper.slots);
            }
        }
    }
}

/// A key that a command needs decoded but whose payload is on disk.
#[derive(Clone, Debug)]
pub struct ColdValue {
    pub db: usize,
    pub key: Vec<u8>,
    pub meta: EntryMeta,
}

/// Whether a cache lookup marks the key recently used (`Peek`: a second
/// look in the same request, whose other look does).
#[derive(Clone, Copy)]
enum Use {
    Touch,
    Peek,
}

/// A value a checkpoint wrote, with its new directory entry.
pub struct WrittenValue {
    pub db: usize,
    pub key: Vec<u8>,
    pub meta: EntryMeta,
    pub value: Arc<BitString>,
    /// `value.heap_bytes()`, measured outside the keyspace lock.
    pub value_bytes: usize,
}

/// Where a SCAN iteration stands: the database and the last key visited.
#[derive(Clone, Debug)]
struct ScanPosition {
    db: usize,
    after: Vec<u8>,
}

/// All databases, their layers, the value cache and the SCAN cursors.
pub struct Keyspace {
    top: Layer,
    frozen: Option<Arc<Layer>>,
    /// The committed state already includes the frozen layer (a checkpoint
    /// is being published): its key counts are not added again.
    frozen_committed: bool,
    committed: Arc<Committed>,
    /// Committed directory entries and decoded values of recently used keys
    /// (a cell: plain lookups through `physical` take `&self`).
    cache: std::cell::RefCell<Cache>,
    cursors: lru::LruCache<u64, ScanPosition>,
    next_cursor: u64,
    /// Where the active expiry sweep resumes (a directory key).
    sweep_from: Vec<u8>,
    /// Keys deleted because they expired, lazily or by the sweep.
    pub expired_keys: u64,
    /// Committed payloads decoded on a command's path without a prefetch.
    pub sync_loads: u64,
    /// WATCH: who watches which keys, and whose watched keys changed.
    pub watches: watch::Watches,
    /// BITOPs whose results are still in their destinations.
    pub bitop_memo: memo::BitopMemo,
}

/// Result of walking keys: a live key and what is known of it.
type Visit<'a> = &'a mut dyn FnMut(&[u8], &KeyMeta) -> ControlFlow<()>;

impl Keyspace {
    pub fn new(committed: Arc<Committed>, cache_budget: usize) -> Self {
        let capacity =
            std::num::NonZeroUsize::new(SCAN_CURSORS).unwrap_or(std::num::NonZeroUsize::MIN);
        // Cursor numbers start at a per-process offset so a cursor from a
        // previous run is unlikely to name a live position.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Keyspace {
            top: Layer::default(),
            frozen: None,
            frozen_committed: false,
            committed,
            cache: std::cell::RefCell::new(Cache::new(cache_budget)),
            cursors: lru::LruCache::new(capacity),
            next_cursor: (seed % (1 << 40)) | 1,
            sweep_from: Vec::new(),
            expired_keys: 0,
            sync_loads: 0,
            watches: watch::Watches::default(),
            bitop_memo: memo::BitopMemo::default(),
        }
    }

    pub fn committed(&self) -> &Arc<Committed> {
        &self.committed
    }

    pub fn cache(&self) -> std::cell::Ref<'_, Cache> {
        self.cache.borrow()
    }

    /// Values the cache let go of, to be freed after the keyspace lock is
    /// released (see `server::KeyspaceGuard`).
    pub fn take_released(&mut self) -> Vec<Arc<BitString>> {
        self.cache.get_mut().take_released()
    }

    /// Bytes of changed values not yet written by a checkpoint.
    pub fn dirty_bytes(&self) -> usize {
        self.top.value_bytes() + self.frozen.as_ref().map_or(0, |f| f.value_bytes())
    }

    /// Bytes of values changed since the last checkpoint began (not those a
    /// running checkpoint writes).
    pub fn changed_bytes(&self) -> usize {
        self.top.value_bytes()
    }

    pub fn has_changes(&self) -> bool {
        !self.top.is_empty() || self.frozen.is_some()
    }

    pub fn db(&mut self, index: usize) -> Db<'_> {
        Db { ks: self, index }
    }

    /// The newest physical entry of a key (expired or not), through the layers.
    fn physical(&self, db: usize, key: &[u8]) -> Result<Option<Entry>, StorageError> {
        self.physical_as(db, key, Use::Touch)
    }

    fn physical_as(&self, db: usize, key: &[u8], use_: Use) -> Result<Option<Entry>, StorageError> {
        if let Some(entry) = self.overlay_entry(db, key) {
            return Ok(entry.cloned());
        }
        Ok(self
            .committed_entry(db, key, use_)?
            .map(Entry::from_committed))
    }

    /// What the overlay layers (the changes since the last checkpoint, and
    /// those of a running one) say of a key: `None` when they leave it to the
    /// committed state, `Some(None)` when it is deleted there.
    fn overlay_entry(&self, db: usize, key: &[u8]) -> Option<Option<&Entry>> {
        let top = &self.top.dbs[db];
        if let Some(slot) = top.slots.get(key) {
            return Some(match slot {
                Slot::Present(e) => Some(e),
                Slot::Deleted => None,
            });
        }
        if top.flushed {
            return Some(None);
        }
        if let Some(frozen) = &self.frozen {
            let f = &frozen.dbs[db];
            if let Some(slot) = f.slots.get(key) {
                return Some(match slot {
                    Slot::Present(e) => Some(e),
                    Slot::Deleted => None,
                });
            }
            if f.flushed {
                return Some(None);
            }
        }
        None
    }

    /// A committed key's directory entry and cached value, in one cache
    /// lookup (a B+tree lookup when the cache does not hold the key).
    fn committed_entry_and_value(
        &self,
        db: usize,
        key: &[u8],
        touch: bool,
    ) -> Result<(Option<EntryMeta>, Option<Arc<BitString>>), StorageError> {
        let mut cache = self.cache.borrow_mut();
        if let Some(held) = cache.entry_and_value(db, key, touch) {
            return Ok(held);
        }
        let meta = self.committed.lookup(&dir_key(db, key))?;
        cache.insert_entry(db, key, meta.clone());
        Ok((meta, None))
    }

    /// The committed directory entry of a key, through the cache, so a hot
    /// key is not looked up in the B+tree again and again.
    fn committed_entry(
        &self,
        db: usize,
        key: &[u8],
        use_: Use,
    ) -> Result<Option<EntryMeta>, StorageError> {
        let mut cache = self.cache.borrow_mut();
        let held = match use_ {
            Use::Touch => cache.entry(db, key),
            Use::Peek => cache.peek_entry(db, key),
        };
        if let Some(found) = held {
            return Ok(found);
        }
        let meta = self.committed.lookup(&dir_key(db, key))?;
        cache.insert_entry(db, key, meta.clone());
        Ok(meta)
    }

    /// Writes a slot into the overlay, keeping the key count right: a
    /// change of the key, which fails the EXEC of clients that watch it.
    fn set_slot(&mut self, db: usize, key: &[u8], slot: Slot) -> Result<(), StorageError> {
        self.write_slot(db, key, slot)?;
        self.watches.touch(db, key);
        Ok(())
    }

    /// Touches the watched keys of `db` (all databases with `None`) that
    /// exist, before a flush: Redis counts a flush as a change of the keys
    /// it removes only.
    fn touch_existing_watched(&mut self, db: Option<usize>) {
        for (d, key) in self.watches.watched_in(db) {
            if self
                .physical_as(d, &key, Use::Peek)
                .ok()
                .flatten()
                .is_some()
            {
                self.watches.touch(d, &key);
            }
        }
    }

    /// Whether a key watched by `client` changed since it was watched, or
    /// expired since (Redis fails EXEC on a watched key that expired in
    /// between, deleted or not yet).
    pub fn watch_broken(&self, client: u64, keys: &[watch::WatchedKey], now_ms: u64) -> bool {
        self.watches.is_touched(client)
            || keys.iter().any(|w| {
                self.watches.watched_live(w.db, &w.key, client)
                    && matches!(self.physical_as(w.db, &w.key, Use::Peek), Ok(Some(e)) if e.is_expired(now_ms))
            })
    }

    /// Starts watching `key` of `db` for `client`; `None` when it already
    /// does, else what the client keeps to unwatch it.
    pub fn watch(
        &mut self,
        db: usize,
        key: &[u8],
        client: u64,
        now_ms: u64,
    ) -> Option<watch::WatchedKey> {
        let expired_when_watched =
            matches!(self.physical_as(db, key, Use::Peek), Ok(Some(e)) if e.is_expired(now_ms));
        if !self.watches.watch(db, key, client, expired_when_watched) {
            return None;
        }
        Some(watch::WatchedKey {
            db,
            key: key.to_vec(),
        })
    }

    /// Writes a slot into the overlay, keeping the key count right, without
    /// counting it as a change (a value moved into the overlay to be
    /// changed in place: the change itself is touched).
    fn write_slot(&mut self, db: usize, key: &[u8], slot: Slot) -> Result<(), StorageError> {
        let bytes_before = slot_bytes(key, self.top.dbs[db].slots.get(key));
        self.set_slot_counted(db, key, slot)?;
        let layer = &mut self.top.dbs[db];
        layer.value_bytes = (layer.value_bytes + slot_bytes(key, layer.slots.get(key)))
            .saturating_sub(bytes_before);
        Ok(())
    }

    fn set_slot_counted(&mut self, db: usize, key: &[u8], slot: Slot) -> Result<(), StorageError> {
        let was = self.physical(db, key)?.is_some();
        let is = matches!(slot, Slot::Present(_));
        let layer = &mut self.top.dbs[db];
        layer.delta += i64::from(is) - i64::from(was);
        match slot {
            Slot::Present(e) => {
                layer.slots.insert(key, Slot::Present(e));
            }
            Slot::Deleted => {
                // A tombstone is needed only if a lower layer has the key.
                let below = if layer.flushed {
                    false
                } else {
                    layer.slots.remove(key);
                    self.physical(db, key)?.is_some()
                };
                let layer = &mut self.top.dbs[db];
                if below {
                    layer.slots.insert(key, Slot::Deleted);
                } else {
                    layer.slots.remove(key);
                }
            }
        }
        Ok(())
    }

    /// The live entry of a key; an expired one is deleted on the way.
    fn live(&mut self, db: usize, key: &[u8], now_ms: u64) -> Result<Option<Entry>, StorageError> {
        self.live_as(db, key, now_ms, Use::Touch)
    }

    fn live_as(
        &mut self,
        db: usize,
        key: &[u8],
        now_ms: u64,
        use_: Use,
    ) -> Result<Option<Entry>, StorageError> {
        match self.physical_as(db, key, use_)? {
            Some(e) if e.is_expired(now_ms) => {
                self.write_slot(db, key, Slot::Deleted)?;
                self.watches.touch_expired(db, key);
                self.expired_keys += 1;
                Ok(None)
            }
            other => Ok(other),
        }
    }

    /// Decodes a committed payload (cached, inline, or read now).
    fn load(
        &mut self,
        db: usize,
        key: &[u8],
        meta: &EntryMeta,
    ) -> Result<Arc<BitString>, StorageError> {
        if let Some(v) = self.cache.get_mut().value(db, key, meta) {
            return Ok(v);
        }
        if matches!(meta.payload, Payload::Extent { .. }) {
            self.sync_loads += 1;
        }
        let v = Arc::new(self.committed.load_value(meta)?);
        // Kept only if `meta` is the key's committed entry (not, say, a
        // renamed key's payload in the overlay).
        self.cache.get_mut().put_value(db, key, meta, v.clone());
        Ok(v)
    }

    /// A payload read by a network thread (verified), cached if it is still
    /// the key's committed payload (a checkpoint may have changed the key
    /// while it was read without the lock).
    pub fn install(&mut self, cold: &ColdValue, value: Arc<BitString>) {
        if let Ok(Some(current)) = self.committed_entry(cold.db, &cold.key, Use::Peek) {
            if cache::same_payload(&current, &cold.meta) {
                self.cache
                    .get_mut()
                    .put_value(cold.db, &cold.key, &cold.meta, value);
            }
        }
    }

    /// Starts loading into the CPU's cache the changed value a command on
    /// `key` is about to use (a hint: it changes nothing). A network thread
    /// calls it for the next requests of a pipelined batch before running
    /// them, so that their lookups and first touches of memory overlap
    /// instead of each waiting in turn. Only the overlay is looked at: the
    /// same for values in the cache of committed keys cost pipelined GETBIT
    /// more than it saved (its lookup builds the cache key and hashes again).
    pub fn prefetch(&self, db: usize, key: &[u8]) {
        if let Some(Slot::Present(Entry {
            value: Value::Loaded(v),
            ..
        })) = self.top.dbs[db].slots.get(key)
        {
            prefetch_value(v);
        }
    }

    /// If `key`'s value is a committed extent that is not cached, what to
    /// read (so the caller can read it with io_uring before running the
    /// command).
    pub fn cold(
        &mut self,
        db: usize,
        key: &[u8],
        now_ms: u64,
    ) -> Result<Option<ColdValue>, StorageError> {
        // A look only: the command that follows marks the key used (and
        // deletes it if it has expired).
        let (meta, held) = match self.overlay_entry(db, key) {
            Some(Some(
                e @ Entry {
                    value: Value::Stored(meta),
                    ..
                },
            )) => {
                if e.is_expired(now_ms) {
                    return Ok(None);
                }
                let meta = meta.clone();
                let held = self.cache.get_mut().has_value(db, key, &meta);
                (meta, held)
            }
            Some(_) => return Ok(None),
            None => match self.committed_entry_and_value(db, key, false)? {
                (Some(meta), _) if committed_expired(&meta, now_ms) => return Ok(None),
                (Some(meta), value) => (meta, value.is_some()),
                (None, _) => return Ok(None),
            },
        };
        match meta.payload {
            Payload::Extent { .. } if !held => Ok(Some(ColdValue {
                db,
                key: key.to_vec(),
                meta,
            })),
            _ => Ok(None),
        }
    }

    /// Number of keys in a database, including expired keys not yet
    /// reclaimed (as Redis's DBSIZE).
    pub fn key_count(&self, db: usize) -> u64 {
        let top = &self.top.dbs[db];
        let mut n = top.delta;
        if !top.flushed {
            let frozen = self.frozen.as_ref().filter(|_| !self.frozen_committed);
            match frozen {
                Some(f) if f.dbs[db].flushed => n += f.dbs[db].delta,
                Some(f) => n += f.dbs[db].delta + self.committed.meta.key_counts[db] as i64,
                None => n += self.committed.meta.key_counts[db] as i64,
            }
        }
        n.max(0) as u64
    }

    pub fn total_keys(&self) -> u64 {
        (0..DATABASES).map(|db| self.key_count(db)).sum()
    }

    pub fn flush_all(&mut self) {
        self.touch_existing_watched(None);
        for db in 0..DATABASES {
            self.top.dbs[db] = LayerDb {
                flushed: true,
                ..LayerDb::default()
            };
        }
        self.cursors.clear();
    }

    /// Walks live keys of `db` in order from `from` (inclusive or exclusive
    /// bound) while they start with `prefix`, merging the three layers.
    fn walk(
        &self,
        db: usize,
        from: Bound<&[u8]>,
        prefix: &[u8],
        now_ms: u64,
        visit: Visit<'_>,
    ) -> Result<(), StorageError> {
        const CHUNK: usize = 256;
        let top = &self.top.dbs[db];
        let frozen = self.frozen.as_ref().map(|f| &f.dbs[db]);
        let use_frozen = !top.flushed;
        let use_committed = !top.flushed && frozen.is_none_or(|f| !f.flushed);
        let mut lower: Bound<Vec<u8>> = match from {
            Bound::Included(k) => Bound::Included(k.to_vec()),
            Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        if let Bound::Unbounded = lower {
            lower = Bound::Included(prefix.to_vec());
        }
        loop {
            // Next chunk of committed keys.
            let mut committed: Vec<(Vec<u8>, KeyMeta)> = Vec::new();
            let mut exhausted = true;
            if use_committed {
                let start = match &lower {
                    Bound::Included(k) | Bound::Excluded(k) => dir_key(db, k),
                    Bound::Unbounded => vec![db as u8],
                };
                let skip_equal = matches!(lower, Bound::Excluded(_));
                let _ = btree::visit_from(
                    &*self.committed,
                    self.committed.meta.root,
                    &start,
                    &mut |k, m| {
                        if k.first() != Some(&(db as u8)) || !k[1..].starts_with(prefix) {
                            return ControlFlow::Break(());
                        }
                        if skip_equal && k == start.as_slice() {
                            return ControlFlow::Continue(());
                        }
                        committed.push((
                            k[1..].to_vec(),
                            KeyMeta {
                                len: m.byte_len,
                                cardinality: m.cardinality,
                                expire_at: committed_expiry(m),
                            },
                        ));
                        if committed.len() == CHUNK {
                            exhausted = false;
                            return ControlFlow::Break(());
                        }
                        ControlFlow::Continue(())
                    },
                )?;
            }
            // Overlay keys up to the last committed key of this chunk (or all).
            let upper: Bound<&[u8]> = match committed.last() {
                Some((k, _)) if !exhausted => Bound::Included(k.as_slice()),
                _ => Bound::Unbounded,
            };
            {
                let range = (as_ref_bound(&lower), upper);
                // A lazy merge of the three sorted sources: the newest layer
                // holding a key decides it. Nothing is collected, so a walk that
                // stops early (SCAN, the expiry sweep) costs what it visits.
                let mut from_top = top
                    .slots
                    .range(range)
                    .map(|(k, slot)| (k, slot_meta(slot, now_ms)))
                    .peekable();
                let mut from_frozen = frozen
                    .filter(|_| use_frozen)
                    .into_iter()
                    .flat_map(|f| f.slots.range(range))
                    .map(|(k, slot)| (k, slot_meta(slot, now_ms)))
                    .peekable();
                let mut from_committed = committed
                    .iter()
                    .map(|(k, m)| (k.as_slice(), Some(*m).filter(|m| !expired(m, now_ms))))
                    .peekable();
                loop {
                    let heads = [
                        from_top.peek().map(|e| e.0),
                        from_frozen.peek().map(|e| e.0),
                        from_committed.peek().map(|e| e.0),
                    ];
                    let Some(key) = heads.iter().flatten().min().copied() else {
                        break;
                    };
                    let mut decided: Option<Option<KeyMeta>> = None;
                    if heads[0] == Some(key) {
                        decided = from_top.next().map(|e| e.1);
                    }
                    if heads[1] == Some(key) {
                        let m = from_frozen.next().map(|e| e.1);
                        decided = decided.or(m);
                    }
                    if heads[2] == Some(key) {
                        let m = from_committed.next().map(|e| e.1);
                        decided = decided.or(m);
                    }
                    if !key.starts_with(prefix) {
                        return Ok(());
                    }
                    if let Some(Some(meta)) = decided {
                        if visit(key, &meta).is_break() {
                            return Ok(());
                        }
                    }
                }
            }
            match committed.last() {
                Some((k, _)) if !exhausted => lower = Bound::Excluded(k.clone()),
                _ => return Ok(()),
            }
        }
    }

    /// Live keys matching a Redis glob `pattern`, in key order. A literal
    /// prefix of the pattern narrows the walk to a range of keys.
    pub fn keys(
        &self,
        db: usize,
        pattern: &[u8],
        now_ms: u64,
    ) -> Result<Vec<Vec<u8>>, StorageError> {
        let mut out = Vec::new();
        self.visit_keys(db, pattern, now_ms, &mut |k| {
            out.push(k.to_vec());
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    /// `keys`, handing each match to `visit` (which may stop the walk)
    /// instead of collecting them.
    pub fn visit_keys(
        &self,
        db: usize,
        pattern: &[u8],
        now_ms: u64,
        visit: &mut dyn FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<(), StorageError> {
        let prefix = glob::literal_prefix(pattern);
        // Redis skips matching for a lone `*` (which also lists the empty key).
        let matcher = (!glob::matches_everything(pattern)).then(|| glob::Pattern::new(pattern));
        self.walk(db, Bound::Unbounded, &prefix, now_ms, &mut |k, _| {
            if matcher.as_ref().is_none_or(|m| m.matches(k)) {
                visit(k)
            } else {
                ControlFlow::Continue(())
            }
        })
    }

    /// One SCAN step in database `db` from `cursor` (0 starts an iteration):
    /// visits up to `count` keys, returns the next cursor (0 when complete)
    /// and the matching ones.
    pub fn scan(
        &mut self,
        db: usize,
        cursor: u64,
        count: usize,
        pattern: Option<&[u8]>,
        now_ms: u64,
    ) -> Result<(u64, Vec<Vec<u8>>), StorageError> {
        let after = match cursor {
            0 => None,
            c => match self.cursors.get(&c) {
                Some(pos) if pos.db == db => Some(pos.after.clone()),
                _ => None,
            },
        };
        let pattern = pattern.filter(|p| !glob::matches_everything(p));
        let prefix = pattern.map(glob::literal_prefix).unwrap_or_default();
        let matcher = pattern.map(glob::Pattern::new);
        let from = match &after {
            Some(a) if a.as_slice() >= prefix.as_slice() => Bound::Excluded(a.as_slice()),
            _ => Bound::Unbounded,
        };
        let count = count.max(1);
        let mut found = Vec::new();
        let mut visited = 0usize;
        let mut last: Option<Vec<u8>> = None;
        let mut more = false;
        self.walk(db, from, &prefix, now_ms, &mut |k, _| {
            if visited == count {
                more = true;
                return ControlFlow::Break(());
            }
            visited += 1;
            last = Some(k.to_vec());
            if matcher.as_ref().is_none_or(|m| m.matches(k)) {
                found.push(k.to_vec());
            }
            ControlFlow::Continue(())
        })?;
        match last {
            Some(after) if more => {
                let id = self.next_cursor;
                self.next_cursor = self.next_cursor.wrapping_add(2).max(1);
                self.cursors.put(id, ScanPosition { db, after });
                Ok((id, found))
            }
            _ => Ok((0, found)),
        }
    }

    /// Active expiry: examines up to `budget` keys from where the previous
    /// sweep stopped (all databases in turn) and deletes the expired ones.
    pub fn sweep_expired(&mut self, now_ms: u64, budget: usize) -> usize {
        let mut expired_keys: Vec<(usize, Vec<u8>)> = Vec::new();
        let mut examined = 0;
        let start = std::mem::take(&mut self.sweep_from);
        let first_db = start.first().map_or(0, |&d| d as usize).min(DATABASES - 1);
        let mut next_from = Vec::new();
        for db in first_db..DATABASES {
            let from = if db == first_db && start.len() > 1 {
                Bound::Excluded(&start[1..])
            } else {
                Bound::Unbounded
            };
            // Expired keys must be seen, so walk without the expiry filter:
            // use a time before every expiry and compare here.
            let r = self.walk(db, from, b"", 0, &mut |k, m| {
                if examined == budget {
                    return ControlFlow::Break(());
                }
                examined += 1;
                next_from = dir_key(db, k);
                if expired(m, now_ms) {
                    expired_keys.push((db, k.to_vec()));
                }
                ControlFlow::Continue(())
            });
            if r.is_err() || examined == budget {
                break;
            }
        }
        if examined < budget {
            next_from.clear(); // wrapped around: start over next time
        }
        self.sweep_from = next_from;
        let mut n = 0;
        for (db, key) in expired_keys {
            if self.write_slot(db, &key, Slot::Deleted).is_ok() {
                self.watches.touch_expired(db, &key);
                n += 1;
            }
        }
        self.expired_keys += n as u64;
        n
    }

    /// Starts a checkpoint: the overlay becomes the frozen layer (merged
    /// with a previous frozen one whose checkpoint failed). Returns it.
    pub fn freeze(&mut self) -> Arc<Layer> {
        let next = Layer::sized_like(&self.top);
        let top = std::mem::replace(&mut self.top, next);
        let frozen = match self.frozen.take() {
            Some(old) => {
                let mut merged = Arc::unwrap_or_clone(old);
                merged.absorb(top);
                merged
            }
            None => top,
        };
        let frozen = Arc::new(frozen);
        self.frozen = Some(frozen.clone());
        frozen
    }

    /// A checkpoint committed the frozen layer: publish the new committed
    /// state, forget what the cache held of the keys it changed, and cache
    /// the values it wrote under their new entries. All at once; a server
    /// that keeps serving meanwhile uses the steps below instead.
    pub fn checkpoint_committed(&mut self, committed: Arc<Committed>, written: Vec<WrittenValue>) {
        self.publish_committed(committed);
        match self.frozen.clone() {
            Some(layer) => {
                for (db, changes) in layer.dbs.iter().enumerate() {
                    if changes.flushed {
                        self.forget_cached_db(db);
                    }
                    for (key, _) in changes.slots.iter() {
                        self.forget_cached(db, key);
                    }
                }
            }
            None => self.cache.get_mut().clear(),
        }
        self.cache_written(&mut written.into_iter(), std::time::Duration::MAX);
        self.checkpoint_published();
    }

    /// Step 1 of publishing a checkpoint: the new committed state. The
    /// frozen layer stays in front of it, so the keys the checkpoint changed
    /// are still answered from there, never from what the cache held of
    /// them before, until `checkpoint_published`. Meanwhile (lock released
    /// between steps, so clients are served) the cache entries of those keys
    /// are forgotten (`forget_cached`, `forget_cached_db`) and the values
    /// written cached (`cache_written`), a bounded number of keys at a time.
    pub fn publish_committed(&mut self, committed: Arc<Committed>) {
        self.committed = committed;
        self.frozen_committed = self.frozen.is_some();
    }

    pub fn forget_cached(&mut self, db: usize, key: &[u8]) {
        self.cache.get_mut().forget(db, key);
    }

    pub fn forget_cached_db(&mut self, db: usize) {
        self.cache.get_mut().forget_db(db);
    }

    /// Caches values a checkpoint wrote, taken from `written` until it runs
    /// out or `budget` has passed: the work is in the evictions they cause
    /// (a 2 MB bitmap can push out ten thousand small entries), so it is
    /// bounded by time rather than by a number of values.
    pub fn cache_written(
        &mut self,
        written: &mut impl Iterator<Item = WrittenValue>,
        budget: std::time::Duration,
    ) {
        let started = std::time::Instant::now();
        let cache = self.cache.get_mut();
        for w in written {
            cache.insert_committed(w.db, &w.key, w.meta, w.value, w.value_bytes);
            if started.elapsed() >= budget {
                break;
            }
        }
    }

    /// Evicts what the cache holds beyond its budget (insertions evict a
    /// bounded number of entries and may leave some over) for up to `time`;
    /// returns whether it is still over.
    pub fn shrink_cache(&mut self, time: std::time::Duration) -> bool {
        let started = std::time::Instant::now();
        let cache = self.cache.get_mut();
        while cache.shrink() {
            if started.elapsed() >= time {
                return true;
            }
        }
        false
    }

    /// The last step: the frozen layer is gone; the cache describes the new
    /// committed state.
    pub fn checkpoint_published(&mut self) {
        self.frozen = None;
        self.frozen_committed = false;
    }
}

/// Asks the CPU to start loading a value's first bytes (its reference
/// counts and the bitmap's header, which every use reads first).
fn prefetch_value(v: &Arc<BitString>) {
    let p = Arc::as_ptr(v).cast::<u8>();
    // The reference counts sit just before the value.
    prefetch_line(p.wrapping_sub(16));
    prefetch_line(p);
}

/// A prefetch of the cache line at `p` on x86-64 (elsewhere nothing).
#[inline]
fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is only a hint: it never faults, whatever the
    // address, and changes no memory.
    #[allow(unused_unsafe)]
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

fn as_ref_bound(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn expired(meta: &KeyMeta, now_ms: u64) -> bool {
    matches!(meta.expire_at, Some(at) if at <= now_ms)
}

fn slot_meta(slot: &Slot, now_ms: u64) -> Option<KeyMeta> {
    match slot {
        Slot::Present(e) => Some(e.meta()).filter(|m| !expired(m, now_ms)),
        Slot::Deleted => None,
    }
}

/// One database of the keyspace, as commands use it.
pub struct Db<'a> {
    ks: &'a mut Keyspace,
    index: usize,
}

impl Db<'_> {
    /// Length, cardinality and expiry of a live key (no bitmap is decoded).
    pub fn meta(&mut self, key: &[u8], now_ms: u64) -> Result<Option<KeyMeta>, StorageError> {
        Ok(self.ks.live(self.index, key, now_ms)?.map(|e| e.meta()))
    }

    pub fn contains(&mut self, key: &[u8], now_ms: u64) -> Result<bool, StorageError> {
        Ok(self.ks.live(self.index, key, now_ms)?.is_some())
    }

    /// The value of a live key, decoded.
    pub fn value(
        &mut self,
        key: &[u8],
        now_ms: u64,
    ) -> Result<Option<Arc<BitString>>, StorageError> {
        // A committed key whose value is cached: one cache lookup.
        if self.ks.overlay_entry(self.index, key).is_none() {
            if let (Some(meta), Some(value)) =
                self.ks.committed_entry_and_value(self.index, key, true)?
            {
                if !committed_expired(&meta, now_ms) {
                    self.ks.cache.get_mut().hits += 1;
                    return Ok(Some(value));
                }
            }
        }
        match self.ks.live(self.index, key, now_ms)? {
            None => Ok(None),
            Some(Entry {
                value: Value::Loaded(v),
                ..
            }) => Ok(Some(v)),
            Some(Entry {
                value: Value::Stored(meta),
                ..
            }) => self.ks.load(self.index, key, &meta).map(Some),
        }
    }

    /// `BITOP op dest sources...`: stores the result in `dest` (deletes
    /// `dest` when it is empty). Answered from the memo, with nothing
    /// computed or stored, when `dest` still holds the result of this very
    /// BITOP over these very source values (`memo`); that counts as a write
    /// of `dest` all the same (WATCH).
    pub fn bitop(
        &mut self,
        op: BitOp,
        dest: &[u8],
        sources: &[&[u8]],
        now_ms: u64,
    ) -> Result<BitopDone, StorageError> {
        let index = self.index;
        let values: Vec<Option<Arc<BitString>>> = sources
            .iter()
            .map(|k| self.value(k, now_ms))
            .collect::<Result<_, _>>()?;
        let held = self.value_in_memory_without_expiry(dest, now_ms)?;
        let call = memo::BitopCall {
            db: index,
            op,
            dest,
            sources,
        };
        let remembered = self.ks.bitop_memo.result_len(call, &values, held.as_ref());
        drop(held);
        if let Some(len) = remembered {
            self.ks.watches.touch(index, dest);
            return Ok(BitopDone {
                len,
                from_memo: true,
            });
        }
        let refs: Vec<Option<&BitString>> = values.iter().map(|v| v.as_deref()).collect();
        let result = BitString::bitop(op, &refs);
        let len = result.len();
        if len == 0 {
            self.remove(dest, now_ms)?;
        } else {
            let result = Arc::new(result);
            self.put_shared(dest, result.clone(), None)?;
            self.ks.bitop_memo.remember(call, &values, &result);
        }
        Ok(BitopDone {
            len,
            from_memo: false,
        })
    }

    /// A live key's value if it is decoded in memory (changed since the
    /// last checkpoint, or cached) and the key has no expiry; `None`
    /// otherwise, without reading or decoding anything.
    fn value_in_memory_without_expiry(
        &mut self,
        key: &[u8],
        now_ms: u64,
    ) -> Result<Option<Arc<BitString>>, StorageError> {
        let db = self.index;
        Ok(match self.ks.live(db, key, now_ms)? {
            Some(Entry {
                expire_at: Some(_), ..
            })
            | None => None,
            Some(Entry {
                value: Value::Loaded(v),
                ..
            }) => Some(v),
            Some(Entry {
                value: Value::Stored(meta),
                ..
            }) => self.ks.cache.get_mut().peek_value(db, key, &meta),
        })
    }

    /// The value of a key for changing it in place; a missing key is created
    /// empty. The key keeps its expiry.
    pub fn value_mut(&mut self, key: &[u8], now_ms: u64) -> Result<&mut BitString, StorageError> {
        let db = self.index;
        let fast = matches!(
            self.ks.top.dbs[db].slots.get(key),
            Some(Slot::Present(e @ Entry { value: Value::Loaded(_), .. })) if !e.is_expired(now_ms)
        );
        if !fast {
            let (value, expire_at) = match self.ks.live(db, key, now_ms)? {
                None => (Arc::new(BitString::new()), None),
                Some(Entry {
                    value: Value::Loaded(v),
                    expire_at,
                }) => (v, expire_at),
                Some(Entry {
                    value: Value::Stored(meta),
                    expire_at,
                }) => {
                    // Take the cached copy out so the change below needs no clone.
                    let v = match self.ks.cache.get_mut().take_value(db, key, &meta) {
                        Some(v) => v,
                        None => {
                            let v = self.ks.load(db, key, &meta)?;
                            self.ks.cache.get_mut().take_value(db, key, &meta);
                            v
                        }
                    };
                    (v, expire_at)
                }
            };
            self.ks.write_slot(
                db,
                key,
                Slot::Present(Entry {
                    value: Value::Loaded(value),
                    expire_at,
                }),
            )?;
        }
        match self.ks.top.dbs[db].slots.get_mut(key) {
            Some(Slot::Present(Entry {
                value: Value::Loaded(v),
                ..
            })) => Ok(Arc::make_mut(v)),
            _ => Err(StorageError::corrupt("overlay entry vanished")),
        }
    }

    /// Sets or clears one bit (a missing key is created empty); returns the
    /// bit's previous value.
    pub fn set_bit(
        &mut self,
        key: &[u8],
        now_ms: u64,
        offset: u32,
        value: bool,
    ) -> Result<bool, StorageError> {
        let bits = self.value_mut(key, now_ms)?;
        let len_before = bits.len();
        let was_empty = bits.bits().is_empty();
        let old = bits.set_bit(offset, value);
        let grew = bits.len() != len_before;
        if old != value {
            // A bit in an array container takes two bytes; the first bit of
            // a bitmap allocates its container vector and first container.
            self.ks.top.dbs[self.index].value_bytes += if was_empty {
                bitstring::FIRST_BIT_BYTES
            } else {
                2
            };
        }
        // As in Redis, a SETBIT that neither changes the bit nor creates or
        // lengthens the string is no change for WATCH.
        if old != value || grew {
            self.ks.watches.touch(self.index, key);
        }
        Ok(old)
    }

    /// Stores a value, replacing any previous value and expiry.
    pub fn put(
        &mut self,
        key: &[u8],
        value: BitString,
        expire_at: Option<u64>,
    ) -> Result<(), StorageError> {
        self.put_shared(key, Arc::new(value), expire_at)
    }

    /// As [`Db::put`], with a value the caller keeps a reference to (to
    /// recognise it later).
    fn put_shared(
        &mut self,
        key: &[u8],
        value: Arc<BitString>,
        expire_at: Option<u64>,
    ) -> Result<(), StorageError> {
        self.ks.set_slot(
            self.index,
            key,
            Slot::Present(Entry {
                value: Value::Loaded(value),
                expire_at,
            }),
        )
    }

    /// Removes a live key; returns whether it existed.
    pub fn remove(&mut self, key: &[u8], now_ms: u64) -> Result<bool, StorageError> {
        if self.ks.live(self.index, key, now_ms)?.is_none() {
            return Ok(false);
        }
        self.ks.set_slot(self.index, key, Slot::Deleted)?;
        Ok(true)
    }

    /// Sets or clears the expiry of a live key; false when missing.
    pub fn set_expire(
        &mut self,
        key: &[u8],
        expire_at: Option<u64>,
        now_ms: u64,
    ) -> Result<bool, StorageError> {
        let Some(mut entry) = self.ks.live(self.index, key, now_ms)? else {
            return Ok(false);
        };
        entry.expire_at = expire_at;
        if let Value::Stored(meta) = &mut entry.value {
            meta.expire_at = expire_at.unwrap_or(0);
        }
        self.ks.set_slot(self.index, key, Slot::Present(entry))?;
        Ok(true)
    }

    /// Moves a live key (value and expiry) to `dst`, replacing it; the
    /// payload is not decoded. False when `src` is missing.
    pub fn rename(&mut self, src: &[u8], dst: &[u8], now_ms: u64) -> Result<bool, StorageError> {
        let Some(entry) = self.ks.live(self.index, src, now_ms)? else {
            return Ok(false);
        };
        if src == dst {
            return Ok(true);
        }
        self.ks.set_slot(self.index, src, Slot::Deleted)?;
        self.ks.set_slot(self.index, dst, Slot::Present(entry))?;
        Ok(true)
    }

    pub fn len(&self) -> u64 {
        self.ks.key_count(self.index)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn flush(&mut self) {
        self.ks.touch_existing_watched(Some(self.index));
        self.ks.top.dbs[self.index] = LayerDb {
            flushed: true,
            ..LayerDb::default()
        };
    }

    pub fn keys(&self, pattern: &[u8], now_ms: u64) -> Result<Vec<Vec<u8>>, StorageError> {
        self.ks.keys(self.index, pattern, now_ms)
    }

    /// See `Keyspace::visit_keys`.
    pub fn visit_keys(
        &self,
        pattern: &[u8],
        now_ms: u64,
        visit: &mut dyn FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<(), StorageError> {
        self.ks.visit_keys(self.index, pattern, now_ms, visit)
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
pub mod tests {
    use super::*;
    use crate::storage::io::SimFile;
    use crate::storage::pagefile::PageFile;
    use std::path::Path;

    /// An empty keyspace over a simulated database file.
    pub fn memory_keyspace() -> Keyspace {
        let (_, committed) = PageFile::open_io(SimFile::new(), Path::new("mem.db")).expect("open");
        Keyspace::new(Arc::new(committed), 1 << 20)
    }

    fn put(ks: &mut Keyspace, db: usize, key: &str, bytes: &[u8]) {
        ks.db(db)
            .put(key.as_bytes(), BitString::from_bytes(bytes), None)
            .expect("put");
    }

    #[test]
    fn a_prefetch_changes_nothing() {
        let mut ks = memory_keyspace();
        put(&mut ks, 0, "a", b"x");
        put(&mut ks, 0, "gone", b"y");
        assert!(ks.db(0).remove(b"gone", 0).expect("remove"));
        let dirty = ks.dirty_bytes();
        for key in [&b"a"[..], b"gone", b"absent"] {
            ks.prefetch(0, key);
            ks.prefetch(1, key);
        }
        assert_eq!(ks.key_count(0), 1);
        assert_eq!(ks.dirty_bytes(), dirty);
        let v = ks.db(0).value(b"a", 0).expect("value").expect("present");
        assert_eq!(v.to_bytes(), b"x".to_vec());
        assert!(ks.db(0).value(b"gone", 0).expect("value").is_none());
    }

    #[test]
    fn lazy_expiry_hides_and_deletes() {
        let mut ks = memory_keyspace();
        put(&mut ks, 0, "a", b"x");
        assert!(ks.db(0).set_expire(b"a", Some(1000), 0).expect("expire"));
        assert!(ks.db(0).meta(b"a", 999).expect("meta").is_some());
        assert!(ks.db(0).meta(b"a", 1000).expect("meta").is_none());
        assert_eq!(ks.key_count(0), 0);
        assert_eq!(ks.expired_keys, 1);
    }

    #[test]
    fn sweep_deletes_only_expired_keys_and_resumes() {
        let mut ks = memory_keyspace();
        for i in 0..100u32 {
            let k = format!("k{i:03}");
            put(&mut ks, 2, &k, b"v");
            ks.db(2)
                .set_expire(k.as_bytes(), Some(if i % 2 == 0 { 10 } else { 1_000 }), 0)
                .expect("expire");
        }
        let mut deleted = 0;
        for _ in 0..10 {
            deleted += ks.sweep_expired(20, 15);
        }
        assert_eq!(deleted, 50);
        assert_eq!(ks.key_count(2), 50);
    }

    #[test]
    fn keys_uses_prefix_and_pattern() {
        let mut ks = memory_keyspace();
        for k in ["user:1:a", "user:1:b", "user:2:a", "usex", "a"] {
            put(&mut ks, 0, k, b"1");
        }
        let keys = ks.keys(0, b"user:1:*", 0).expect("keys");
        assert_eq!(keys, vec![b"user:1:a".to_vec(), b"user:1:b".to_vec()]);
        assert_eq!(ks.keys(0, b"*:a", 0).expect("keys").len(), 2);
        assert_eq!(ks.keys(0, b"*", 0).expect("keys").len(), 5);
    }

    #[test]
    fn scan_returns_every_key_once_in_steps() {
        let mut ks = memory_keyspace();
        for i in 0..1000u32 {
            put(&mut ks, 3, &format!("key:{i}"), b"1");
        }
        let mut cursor = 0;
        let mut seen = std::collections::BTreeSet::new();
        let mut rounds = 0;
        loop {
            let (next, keys) = ks.scan(3, cursor, 7, None, 0).expect("scan");
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
        let (c, _) = ks.scan(3, 0, 10, None, 0).expect("scan");
        let (_, keys) = ks.scan(4, c, 10, None, 0).expect("scan");
        assert!(keys.is_empty());
    }

    #[test]
    fn scan_with_prefix_pattern_stops_at_prefix_end() {
        let mut ks = memory_keyspace();
        for k in ["a1", "b1", "b2", "b3", "c1"] {
            put(&mut ks, 0, k, b"1");
        }
        let (c, keys) = ks.scan(0, 0, 2, Some(b"b*"), 0).expect("scan");
        assert_eq!(keys, vec![b"b1".to_vec(), b"b2".to_vec()]);
        let (c2, keys) = ks.scan(0, c, 2, Some(b"b*"), 0).expect("scan");
        assert_eq!(keys, vec![b"b3".to_vec()]);
        assert_eq!(c2, 0);
    }

    #[test]
    fn counts_follow_creates_deletes_renames_and_flushes() {
        let mut ks = memory_keyspace();
        put(&mut ks, 1, "a", b"1");
        put(&mut ks, 1, "b", b"1");
        put(&mut ks, 1, "a", b"2");
        assert_eq!(ks.key_count(1), 2);
        assert!(ks.db(1).rename(b"a", b"c", 0).expect("rename"));
        assert!(ks.db(1).rename(b"b", b"c", 0).expect("rename"));
        assert_eq!(ks.key_count(1), 1);
        assert!(ks.db(1).remove(b"c", 0).expect("remove"));
        assert!(!ks.db(1).remove(b"c", 0).expect("remove"));
        assert_eq!(ks.key_count(1), 0);
        put(&mut ks, 1, "x", b"1");
        ks.db(1).flush();
        assert_eq!(ks.key_count(1), 0);
        assert!(ks.keys(1, b"*", 0).expect("keys").is_empty());
    }

    #[test]
    fn dirty_bytes_follow_changes_without_walking_the_overlay() {
        let mut ks = memory_keyspace();
        assert_eq!(ks.dirty_bytes(), 0);
        for i in 0..100u32 {
            ks.db(0).set_bit(b"k", 0, i * 100, true).expect("setbit");
        }
        let after_bits = ks.dirty_bytes();
        // Measured when the key entered (empty), then two bytes a bit.
        assert!(after_bits >= 200, "{after_bits}");
        ks.db(0).set_bit(b"k", 0, 0, true).expect("setbit");
        assert_eq!(
            ks.dirty_bytes(),
            after_bits,
            "an unchanged bit adds nothing"
        );
        // Every other bit of 32768: a bitmap container (8 KiB).
        put(&mut ks, 1, "big", &[0x55; 4096]);
        assert!(ks.dirty_bytes() >= after_bits + 4096);
        ks.db(1).remove(b"big", 0).expect("del");
        assert_eq!(ks.dirty_bytes(), after_bits);
        ks.db(0).flush();
        assert_eq!(ks.dirty_bytes(), 0);
    }

    #[test]
    fn the_overlay_after_a_freeze_has_room_for_as_many_keys_as_the_last() {
        let mut ks = memory_keyspace();
        for i in 0..3_000u32 {
            ks.db(2)
                .value_mut(format!("k{i}").as_bytes(), 0)
                .expect("value")
                .set_bit(i, true);
        }
        ks.freeze();
        assert!(ks.top.dbs[2].slots.capacity() >= 3_000);
        assert!(ks.top.dbs[2].slots.is_empty());
        assert_eq!(ks.top.dbs[0].slots.capacity(), 0);
        // Reads still see the frozen keys.
        assert!(ks.db(2).value(b"k7", 0).expect("value").is_some());
    }

    #[test]
    fn value_mut_creates_and_changes_in_place() {
        let mut ks = memory_keyspace();
        ks.db(0).value_mut(b"k", 0).expect("value").set_bit(7, true);
        ks.db(0).value_mut(b"k", 0).expect("value").set_bit(8, true);
        let v = ks.db(0).value(b"k", 0).expect("value").expect("present");
        assert_eq!(v.to_bytes(), vec![0x01, 0x80]);
        assert_eq!(ks.key_count(0), 1);
    }
}
