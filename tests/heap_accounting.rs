//! The cache's byte budget rests on `BitString::heap_bytes`: this test
//! decodes values of the shapes an analytics dataset holds, the way the
//! storage engine does, and compares the estimate with what the allocator
//! really hands out for them (with glibc: each chunk's usable size plus its
//! 8-byte header), counted by a global allocator that wraps the system's.

use bitmapist_server::keyspace::bitstring::BitString;
use roaring::RoaringBitmap;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    /// Bytes held by this thread's live allocations (frees on other threads
    /// are not expected while a measurement runs).
    static HELD: Cell<isize> = const { Cell::new(0) };
}

/// The memory an allocation really takes.
fn footprint(ptr: *mut u8, layout: Layout) -> isize {
    if ptr.is_null() {
        return 0;
    }
    #[cfg(target_env = "gnu")]
    {
        let _ = layout;
        // SAFETY: `ptr` was just returned by (or is about to be given back
        // to) glibc's malloc, which the system allocator uses for these
        // alignments.
        (unsafe { libc::malloc_usable_size(ptr.cast()) } + 8) as isize
    }
    #[cfg(not(target_env = "gnu"))]
    {
        let _ = ptr;
        (layout.size() + 16) as isize
    }
}

fn count(delta: isize) {
    let _ = HELD.try_with(|h| h.set(h.get() + delta));
}

struct Counting;

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        count(footprint(p, layout));
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        count(footprint(p, layout));
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-footprint(ptr, layout));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(-footprint(ptr, layout));
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        let new_layout = Layout::from_size_align(new_size, layout.align()).unwrap_or(layout);
        // On failure the old block is still held.
        count(if p.is_null() {
            footprint(ptr, layout)
        } else {
            footprint(p, new_layout)
        });
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes held by what `make` returns, measured on this thread.
fn measure<T>(make: impl FnOnce() -> T) -> (T, usize) {
    let before = HELD.with(Cell::get);
    let value = make();
    let after = HELD.with(Cell::get);
    (value, (after - before).max(0) as usize)
}

/// A small deterministic generator (xorshift), so that no shape depends on
/// a crate's random numbers.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u32) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % u64::from(n)) as u32
    }
}

const USERS: u32 = 20_000_000;

fn random_users(count: usize, seed: u64) -> RoaringBitmap {
    let mut rng = Rng(seed);
    (0..count).map(|_| rng.below(USERS)).collect()
}

/// Decodes `bits` (of a string of the users' length) from its portable
/// serialization, as a cold read does.
fn decoded(bits: &RoaringBitmap) -> (BitString, usize) {
    decoded_as(bits, u64::from(USERS / 8))
}

/// [`decoded`] for a string of `len` bytes.
fn decoded_as(bits: &RoaringBitmap, len: u64) -> (BitString, usize) {
    let mut payload = Vec::new();
    bits.serialize_into(&mut payload)
        .expect("serialize into a Vec");
    measure(|| {
        let bits = RoaringBitmap::deserialize_from(&payload[..]).expect("own serialization");
        BitString::from_parts(bits, len)
    })
}

fn assert_close(shape: &str, estimate: usize, held: usize) {
    let low = held - held * 20 / 100;
    let high = held + held * 20 / 100;
    eprintln!("{shape}: estimate {estimate}, allocated {held}");
    assert!(
        (low..=high).contains(&estimate),
        "{shape}: the estimate is {estimate} bytes, the allocator holds {held}"
    );
}

#[test]
fn heap_bytes_matches_what_decoded_values_hold() {
    let shapes = [
        // A rare event's day key: a few users in each of ~300 containers.
        ("rare event, 600 users", random_users(600, 1)),
        ("rare event, 3,000 users", random_users(3_000, 2)),
        // A day of active users: arrays of about a thousand values.
        ("daily active, 300,000 users", random_users(300_000, 3)),
        // A month of active users: bitmap containers throughout.
        (
            "monthly active, 6,000,000 users",
            random_users(6_000_000, 4),
        ),
    ];
    for (shape, bits) in &shapes {
        let (value, held) = decoded(bits);
        assert_close(shape, value.heap_bytes(), held);
    }
    // Runs, as SET of a string of whole 0xff bytes leaves them, decoded.
    // (The value SET itself built may hold spare capacity in its container
    // vector, which the estimate leaves out.)
    let mut bytes = vec![0u8; 4 << 20];
    let mut rng = Rng(5);
    for _ in 0..400 {
        let start = rng.below(4 << 20) as usize;
        let end = (start + 3_000).min(bytes.len());
        bytes[start..end].fill(0xff);
    }
    let set = BitString::from_bytes(&bytes);
    assert!(
        set.bits().statistics().n_run_containers > 0,
        "the runs shape should hold run containers"
    );
    let (value, held) = decoded_as(set.bits(), bytes.len() as u64);
    assert_close("SET of 0xff runs", value.heap_bytes(), held);
}

/// An empty keyspace over a database file held in memory.
fn memory_keyspace() -> bitmapist_server::keyspace::Keyspace {
    use bitmapist_server::storage::{io::SimFile, pagefile::PageFile};
    let (_, committed) =
        PageFile::open_io(SimFile::new(), std::path::Path::new("mem.db")).expect("open");
    bitmapist_server::keyspace::Keyspace::new(std::sync::Arc::new(committed), 1 << 20)
}

/// Changed keys live in the keyspace's overlay until a checkpoint, which is
/// forced when their counted bytes outgrow half the cache budget: the count
/// must follow what they hold, or memory outgrows `--cache-size` (1M one-bit
/// keys once took 620 MB while counted at 66 MB).
#[test]
fn dirty_bytes_match_what_changed_keys_hold() {
    let (_, empty) = measure(memory_keyspace);
    // Before and after the hash table's growth (28,672 keys fill 32,768
    // buckets to seven eighths).
    for keys in [20_000u32, 28_000] {
        let (ks, held) = measure(|| {
            let mut ks = memory_keyspace();
            let mut db = ks.db(0);
            for i in 0..keys {
                let key = format!("user:{}:{}", i % 1000, i);
                db.set_bit(key.as_bytes(), 0, i % 4096, true)
                    .expect("setbit");
            }
            ks
        });
        assert_close(
            &format!("{keys} one-bit keys"),
            ks.dirty_bytes(),
            held - empty,
        );
    }
    // Whole values (of a day's active users, without spare capacity, as
    // decoding or a BITOP leaves them), then one more bit in each. (Values
    // grown bit by bit hold spare capacity in their containers, which is not
    // counted: a few percent for a day key of 300,000 users.)
    let (values, values_held) = measure(|| {
        (0..40u64)
            .map(|i| decoded(&random_users(30_000, 100 + i)).0)
            .collect::<Vec<BitString>>()
    });
    let (ks, held) = measure(move || {
        let mut ks = memory_keyspace();
        let mut db = ks.db(0);
        for (i, value) in values.into_iter().enumerate() {
            let key = format!("trackist_active_2026-11-{i}");
            db.put(key.as_bytes(), value, None).expect("put");
            db.set_bit(key.as_bytes(), 0, 7, true).expect("setbit");
        }
        ks
    });
    // The values were allocated before the measurement: add what they hold.
    assert_close(
        "40 daily keys",
        ks.dirty_bytes(),
        held + values_held - empty,
    );
}

/// The cache's byte count of checkpointed keys (directory entry, inline
/// payload and value, which a checkpoint decodes again from a small payload)
/// against what it holds.
#[test]
fn cache_bytes_match_what_cached_keys_hold() {
    use bitmapist_server::keyspace::cache::Cache;
    use bitmapist_server::storage::btree::{EntryMeta, Payload};
    for keys in [20_000u32, 28_000] {
        let (values, values_held) = measure(|| {
            (0..keys)
                .map(|i| {
                    let bits: RoaringBitmap = std::iter::once(i % 4096).collect();
                    decoded_as(&bits, 512).0
                })
                .collect::<Vec<BitString>>()
        });
        let (cache, held) = measure(move || {
            let mut cache = Cache::new(1 << 30);
            for (i, value) in values.into_iter().enumerate() {
                let key = format!("user:{}:{}", i % 1000, i);
                let mut payload = Vec::new();
                value
                    .bits()
                    .serialize_into(&mut payload)
                    .expect("serialize");
                let meta = EntryMeta {
                    byte_len: value.len(),
                    cardinality: 1,
                    expire_at: 0,
                    payload_crc: 0,
                    payload: Payload::Inline(payload.into()),
                };
                let bytes = value.heap_bytes();
                cache.insert_committed(0, key.as_bytes(), meta, std::sync::Arc::new(value), bytes);
            }
            cache
        });
        // The Vec of values the measurement took them from is not cached.
        let vec_of_values = keys as usize * std::mem::size_of::<BitString>();
        assert_close(
            &format!("{keys} cached one-bit keys"),
            cache.bytes(),
            held + values_held - vec_of_values,
        );
    }
}
