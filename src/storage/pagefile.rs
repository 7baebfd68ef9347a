//! The database file: opening it (lock, sniff, choose the meta page, map it
//! read-only), the committed state readers use (`Committed`), payload
//! encoding, and writing a checkpoint (new pages, sync, meta, sync).
//!
//! Only the checkpointer writes this file. Readers see a `Committed`
//! snapshot: the meta it was opened with and a read-only mapping; a new one
//! is published after each checkpoint.

use super::alloc::Allocator;
use super::btree::{
    self, Change, EntryMeta, PageAlloc, PageSource, Payload, TreeWriter, INLINE_MAX,
};
use super::io::{FileIo, SimFile, UringFile};
use super::page::{choose_meta, node_checksum_ok, Meta, DATABASES, MAGIC, PAGE_SIZE};
use super::StorageError;
use crate::keyspace::BitString;
use roaring::RoaringBitmap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The bytes of a committed file state.
pub enum Mapping {
    Mmap(memmap2::Mmap),
    /// A copy in memory (simulated files in tests).
    Memory(Vec<u8>),
}

impl Mapping {
    fn bytes(&self) -> &[u8] {
        match self {
            Mapping::Mmap(m) => m,
            Mapping::Memory(v) => v,
        }
    }
}

/// A file that can be mapped for reading.
pub trait MapFile: FileIo {
    fn map(&mut self) -> Result<Mapping, StorageError>;
}

impl MapFile for UringFile {
    fn map(&mut self) -> Result<Mapping, StorageError> {
        // SAFETY: only this process writes the file (it holds an exclusive
        // flock), and it never writes a page reachable from a published
        // meta, so mapped bytes a reader looks at do not change under it.
        let map = unsafe { memmap2::Mmap::map(self.file()) };
        map.map(Mapping::Mmap)
            .map_err(|e| StorageError::io("mapping the database file", e))
    }
}

impl MapFile for SimFile {
    fn map(&mut self) -> Result<Mapping, StorageError> {
        Ok(Mapping::Memory(self.contents()))
    }
}

/// One committed state: its meta and the mapped file.
pub struct Committed {
    pub meta: Meta,
    map: Mapping,
    /// One bit per page: its checksum has been verified. Committed pages
    /// never change, so each is checked once per state, not per read.
    verified: Box<[AtomicU64]>,
}

impl Committed {
    /// Drops this process's mappings of the file's pages (MADV_DONTNEED);
    /// the page cache keeps them, and the next read of a page maps it again
    /// with the same bytes. The expiry sweep and KEYS walk the whole
    /// directory over time, and without this every page they ever read
    /// would stay counted in the process's memory.
    pub fn release_mapped_pages(&self) {
        if let Mapping::Mmap(m) = &self.map {
            // SAFETY: a shared, read-only mapping of a file: dropping its
            // pages discards nothing (it is private mappings whose data
            // MADV_DONTNEED would throw away); readers fault them back in.
            if let Err(e) = unsafe { m.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) } {
                tracing::debug!(error = %e, "cannot release mapped database pages");
            }
        }
    }
}

impl PageSource for Committed {
    fn page(&self, id: u64) -> Result<&[u8], StorageError> {
        let bytes = self.map.bytes();
        let start = usize::try_from(id)
            .ok()
            .and_then(|i| i.checked_mul(PAGE_SIZE));
        let page = match start.and_then(|s| bytes.get(s..s + PAGE_SIZE)) {
            Some(p) if id < self.meta.page_count => p,
            _ => {
                return Err(StorageError::corrupt(format!(
                    "page {id} is past the end of the database"
                )))
            }
        };
        let (word, bit) = ((id / 64) as usize, 1u64 << (id % 64));
        let slot = self.verified.get(word);
        if slot.is_some_and(|w| w.load(Ordering::Relaxed) & bit != 0) {
            return Ok(page);
        }
        if !node_checksum_ok(page) {
            return Err(StorageError::corrupt(format!(
                "page {id} has a bad checksum"
            )));
        }
        if let Some(w) = slot {
            w.fetch_or(bit, Ordering::Relaxed);
        }
        Ok(page)
    }

    fn verifies_checksums(&self) -> bool {
        true
    }
}

impl Committed {
    fn new(meta: Meta, map: Mapping) -> Committed {
        let words = meta.page_count.div_ceil(64) as usize;
        Committed {
            meta,
            map,
            verified: (0..words).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Committed {
    /// The directory entry of `ckey` (a `btree::dir_key`).
    pub fn lookup(&self, ckey: &[u8]) -> Result<Option<EntryMeta>, StorageError> {
        btree::lookup(self, self.meta.root, ckey)
    }

    /// Reads an extent's bytes through the mapping (start-up replay and the
    /// rare fallback; network threads normally read payloads with io_uring).
    pub fn extent_bytes(&self, page: u64, len: u32) -> Result<&[u8], StorageError> {
        let bytes = self.map.bytes();
        let start = usize::try_from(page)
            .ok()
            .and_then(|p| p.checked_mul(PAGE_SIZE));
        let end = start.and_then(|s| s.checked_add(len as usize));
        match (start, end) {
            (Some(s), Some(e)) if e <= bytes.len() => Ok(&bytes[s..e]),
            _ => Err(StorageError::corrupt(format!(
                "extent at page {page} runs past the end of the file"
            ))),
        }
    }

    /// Loads and verifies the value an entry describes.
    pub fn load_value(&self, meta: &EntryMeta) -> Result<BitString, StorageError> {
        match &meta.payload {
            Payload::Inline(bytes) => decode_payload(bytes, meta),
            Payload::Extent { page, len, .. } => {
                decode_payload(self.extent_bytes(*page, *len)?, meta)
            }
        }
    }
}

/// Serializes a value in the portable Roaring format.
pub fn encode_payload(value: &BitString) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.bits().serialized_size());
    // Writing into a Vec cannot fail.
    let _ = value.bits().serialize_into(&mut out);
    out
}

/// Verifies and decodes a payload against its directory entry.
pub fn decode_payload(bytes: &[u8], meta: &EntryMeta) -> Result<BitString, StorageError> {
    if !meta.verify_payload(bytes) {
        return Err(StorageError::corrupt("payload checksum mismatch"));
    }
    let bits = RoaringBitmap::deserialize_from(bytes).map_err(|e| {
        StorageError::corrupt(format!("payload is not a valid Roaring bitmap: {e}"))
    })?;
    if bits.len() != meta.cardinality
        || meta.byte_len > crate::keyspace::bitstring::MAX_LEN
        || bits
            .max()
            .is_some_and(|m| u64::from(m) >= meta.byte_len.saturating_mul(8))
    {
        return Err(StorageError::corrupt(
            "payload does not match its directory entry",
        ));
    }
    Ok(BitString::from_parts(bits, meta.byte_len))
}

/// A value to store at a checkpoint.
pub enum NewValue {
    /// Freshly serialized payload bytes.
    Fresh {
        payload: Vec<u8>,
        byte_len: u64,
        cardinality: u64,
        expire_at: u64,
    },
    /// The committed payload is kept; the entry (e.g. its expiry) changes.
    Keep(EntryMeta),
}

/// The database file as its writer (the checkpointer) holds it.
pub struct PageFile<F: MapFile> {
    io: F,
    path: PathBuf,
    meta: Meta,
    alloc: Allocator,
    /// Pages of the free list written by the last checkpoint.
    freelist_pages: Vec<u64>,
    /// Held for the life of the file: a second process is refused.
    _lock: Option<nix::fcntl::Flock<std::fs::File>>,
}

/// Explains what a file that is not ours looks like.
fn not_ours(path: &Path, head: &[u8]) -> StorageError {
    if crate::import::bolt::is_bolt_file(head) {
        StorageError::NotOurs(format!(
            "{} is a Go bitmapist-server (bbolt) database; this server does not open it directly. \
             Convert it with `bitmapist-server import-bolt --from {} --db NEW.db` and start with `-db NEW.db` \
             (the original file is not modified)",
            path.display(),
            path.display()
        ))
    } else {
        StorageError::NotOurs(format!(
            "{} is not a bitmapist-server database (unknown format); refusing to open it",
            path.display()
        ))
    }
}

impl PageFile<UringFile> {
    /// Opens (or creates) the database at `path`, locking it against other
    /// processes.
    pub fn open(path: &Path) -> Result<(PageFile<UringFile>, Committed), StorageError> {
        let std_file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| StorageError::io(format!("opening {}", path.display()), e))?;
        let lock_handle = std_file
            .try_clone()
            .map_err(|e| StorageError::io(format!("opening {}", path.display()), e))?;
        let lock = nix::fcntl::Flock::lock(lock_handle, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
            if errno == nix::errno::Errno::EWOULDBLOCK {
                StorageError::NotOurs(format!(
                    "{} is in use by another running bitmapist-server process; stop it first or choose another -db",
                    path.display()
                ))
            } else {
                StorageError::io(format!("locking {}", path.display()), std::io::Error::from(errno))
            }
        })?;
        let io = UringFile::from_file(std_file, path)
            .map_err(|e| StorageError::io(format!("opening {}", path.display()), e))?;
        let (mut file, committed) = Self::open_io(io, path)?;
        file._lock = Some(lock);
        if let Some(dir) = path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            let _ = super::io::sync_dir(dir);
        }
        Ok((file, committed))
    }
}

impl<F: MapFile> PageFile<F> {
    /// Opens a database over any file implementation (tests use SimFile).
    pub fn open_io(mut io: F, path: &Path) -> Result<(PageFile<F>, Committed), StorageError> {
        let len = io
            .len()
            .map_err(|e| StorageError::io("reading the database size", e))?;
        if len > 0 && len <= 2 * PAGE_SIZE as u64 {
            // A crash while the file was being created can leave zeros or a
            // torn first meta page. Such a file never held data pages.
            let mut head = vec![0u8; len as usize];
            let n = io
                .read_at(&mut head, 0)
                .map_err(|e| StorageError::io("reading the meta pages", e))?;
            head.truncate(n);
            let ours_or_blank = head.iter().all(|&b| b == 0) || head.starts_with(MAGIC);
            let valid = head.len() == 2 * PAGE_SIZE
                && choose_meta(&head[..PAGE_SIZE], &head[PAGE_SIZE..]).is_ok();
            if ours_or_blank && !valid {
                io.truncate(0)
                    .map_err(|e| StorageError::io("resetting a half-created database file", e))?;
            }
        }
        let len = io
            .len()
            .map_err(|e| StorageError::io("reading the database size", e))?;
        if len == 0 {
            let meta = Meta {
                txid: 0,
                page_count: 2,
                wal_seq: 1,
                committed_at_ms: crate::keyspace::now_ms(),
                ..Meta::default()
            };
            let mut first = meta.encode();
            first.extend(std::iter::repeat_n(0u8, PAGE_SIZE));
            io.write_all_at(&first, 0)
                .and_then(|_| io.sync_data())
                .map_err(|e| StorageError::io("initializing the database file", e))?;
        }
        let mut head = vec![0u8; 2 * PAGE_SIZE];
        let n = io
            .read_at(&mut head, 0)
            .map_err(|e| StorageError::io("reading the meta pages", e))?;
        head.truncate(n);
        if head.len() < 2 * PAGE_SIZE
            || (&head[0..8] != MAGIC && &head[PAGE_SIZE..PAGE_SIZE + 8] != MAGIC)
        {
            return Err(not_ours(path, &head));
        }
        let meta = choose_meta(&head[..PAGE_SIZE], &head[PAGE_SIZE..])?;
        let map = io.map()?;
        if meta
            .page_count
            .checked_mul(PAGE_SIZE as u64)
            .is_none_or(|n| (map.bytes().len() as u64) < n)
        {
            return Err(StorageError::corrupt(format!(
                "the file is shorter ({} bytes) than its committed state ({} pages)",
                map.bytes().len(),
                meta.page_count
            )));
        }
        let committed = Committed::new(meta.clone(), map);
        let alloc = Allocator::load(&committed, meta.freelist, meta.page_count)?;
        let file = PageFile {
            io,
            path: path.to_path_buf(),
            meta,
            alloc,
            freelist_pages: Vec::new(),
            _lock: None,
        };
        Ok((file, committed))
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A fresh read-only view of the committed state.
    pub fn committed(&mut self) -> Result<Committed, StorageError> {
        Ok(Committed::new(self.meta.clone(), self.io.map()?))
    }

    pub fn free_pages(&self) -> u64 {
        self.alloc.free_pages()
    }

    /// Copies the committed state (pages `0..page_count`) into `dst` and
    /// syncs it: a database this server opens. Only the file's writer may
    /// call this, so no checkpoint changes the file meanwhile. Returns the
    /// bytes copied.
    pub fn copy_committed_to<D: FileIo>(&mut self, dst: &mut D) -> Result<u64, StorageError> {
        const CHUNK: usize = 1 << 20;
        let total = self.meta.page_count * PAGE_SIZE as u64;
        dst.truncate(0)
            .map_err(|e| StorageError::io("emptying the backup file", e))?;
        dst.allocate(total)
            .map_err(|e| StorageError::io("reserving space for the backup", e))?;
        let mut buf = vec![0u8; CHUNK];
        let mut at = 0u64;
        while at < total {
            let n = CHUNK.min((total - at) as usize);
            let got = self
                .io
                .read_at(&mut buf[..n], at)
                .map_err(|e| StorageError::io("reading the database for a backup", e))?;
            if got < n {
                return Err(StorageError::corrupt(
                    "the database file is shorter than its committed state",
                ));
            }
            dst.write_all_at(&buf[..n], at)
                .map_err(|e| StorageError::io("writing the backup", e))?;
            at += n as u64;
        }
        dst.sync_data()
            .map_err(|e| StorageError::io("syncing the backup", e))?;
        Ok(total)
    }

    /// Writes a checkpoint: `changes` (sorted, unique directory keys) on top
    /// of `base` (the current committed state), recording that the WAL from
    /// segment `wal_seq` on is not included. Data pages are written and
    /// synced before the meta page, which is then synced. On error nothing
    /// committed changes and the allocator is as before. Returns the new
    /// meta.
    pub fn checkpoint(
        &mut self,
        base: &Committed,
        changes: Vec<(Vec<u8>, Option<NewValue>)>,
        wal_seq: u64,
    ) -> Result<Meta, StorageError> {
        let before = self.alloc.clone();
        let freelist_before = self.freelist_pages.clone();
        let result = self.write_checkpoint(base, changes, wal_seq);
        match result {
            Ok(meta) => {
                self.alloc.commit();
                self.meta = meta.clone();
                Ok(meta)
            }
            Err(e) => {
                self.alloc.abort(&before);
                self.freelist_pages = freelist_before;
                Err(e)
            }
        }
    }

    fn write_checkpoint(
        &mut self,
        base: &Committed,
        changes: Vec<(Vec<u8>, Option<NewValue>)>,
        wal_seq: u64,
    ) -> Result<Meta, StorageError> {
        let txid = self.meta.txid + 1;
        let mut writes: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut kept_extents = std::collections::HashSet::new();
        let mut tree_changes: Vec<Change> = Vec::with_capacity(changes.len());
        for (key, value) in changes {
            let entry = match value {
                None => None,
                Some(NewValue::Keep(meta)) => {
                    if let Payload::Extent { page, .. } = meta.payload {
                        kept_extents.insert(page);
                    }
                    Some(meta)
                }
                Some(NewValue::Fresh {
                    payload,
                    byte_len,
                    cardinality,
                    expire_at,
                }) => {
                    let payload_crc = super::page::checksum(&payload);
                    let payload = if payload.len() <= INLINE_MAX {
                        Payload::Inline(payload.into())
                    } else {
                        let len = u32::try_from(payload.len())
                            .map_err(|_| StorageError::corrupt("payload larger than 4 GiB"))?;
                        let pages = payload.len().div_ceil(PAGE_SIZE) as u64;
                        let page = self.alloc.alloc(pages);
                        let mut bytes = payload;
                        bytes.resize(pages as usize * PAGE_SIZE, 0);
                        writes.push((page, bytes));
                        Payload::Extent {
                            page,
                            pages: pages as u32,
                            len,
                        }
                    };
                    Some(EntryMeta {
                        byte_len,
                        cardinality,
                        expire_at,
                        payload_crc,
                        payload,
                    })
                }
            };
            tree_changes.push((key, entry));
        }
        let (root, key_delta) = {
            let mut writer = TreeWriter::new(base, &mut self.alloc, txid);
            let root = writer.apply(self.meta.root, &tree_changes)?;
            let dropped = std::mem::take(&mut writer.dropped_extents);
            let key_delta = writer.key_delta;
            writes.append(&mut writer.written);
            drop(writer);
            for (page, pages) in dropped {
                if !kept_extents.contains(&page) {
                    self.alloc.release(page, u64::from(pages));
                }
            }
            (root, key_delta)
        };
        for page in std::mem::take(&mut self.freelist_pages) {
            self.alloc.release(page, 1);
        }
        let (freelist, list_pages) = self.alloc.write_freelist(txid);
        let new_freelist_pages: Vec<u64> = list_pages.iter().map(|(id, _)| *id).collect();
        writes.extend(list_pages);
        let page_count = self.alloc.high_water();
        let file_len = page_count * PAGE_SIZE as u64;
        self.io
            .allocate(file_len)
            .map_err(|e| StorageError::io("growing the database file", e))?;
        let refs: Vec<(u64, &[u8])> = writes
            .iter()
            .map(|(id, b)| (id * PAGE_SIZE as u64, b.as_slice()))
            .collect();
        for batch in refs.chunks(256) {
            self.io
                .write_many(batch)
                .map_err(|e| StorageError::io("writing checkpoint pages", e))?;
        }
        self.io
            .sync_data()
            .map_err(|e| StorageError::io("syncing checkpoint pages", e))?;
        let mut key_counts = self.meta.key_counts;
        for (count, delta) in key_counts.iter_mut().zip(key_delta.iter()) {
            *count = count.saturating_add_signed(*delta);
        }
        let meta = Meta {
            txid,
            root,
            freelist,
            page_count,
            wal_seq,
            key_counts,
            committed_at_ms: crate::keyspace::now_ms(),
        };
        self.io
            .write_all_at(&meta.encode(), meta.slot() * PAGE_SIZE as u64)
            .map_err(|e| StorageError::io("writing the meta page", e))?;
        self.io
            .sync_data()
            .map_err(|e| StorageError::io("syncing the meta page", e))?;
        self.freelist_pages = new_freelist_pages;
        Ok(meta)
    }
}

/// Number of databases a directory key can name.
pub fn db_of(ckey: &[u8]) -> Option<usize> {
    ckey.first().map(|&d| d as usize).filter(|&d| d < DATABASES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::btree::dir_key;

    /// Releasing the mapped pages changes nothing a reader sees: directory
    /// entries and payloads (inline and in extents) read back the same.
    #[test]
    fn released_mapped_pages_read_back_the_same() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut file, empty) = PageFile::open(&dir.path().join("t.db")).expect("open");
        let value = |i: u32| {
            let mut v = BitString::new();
            // Every third key large enough for its own pages.
            let bits = if i % 3 == 0 { 20_000 } else { 3 };
            for b in 0..bits {
                v.set_bit(b * 7 + i, true);
            }
            v
        };
        let mut changes: Vec<(Vec<u8>, Option<NewValue>)> = (0..300u32)
            .map(|i| {
                let v = value(i);
                let fresh = NewValue::Fresh {
                    payload: encode_payload(&v),
                    byte_len: v.len(),
                    cardinality: v.count(),
                    expire_at: 0,
                };
                (dir_key(0, format!("key:{i}").as_bytes()), Some(fresh))
            })
            .collect();
        changes.sort_by(|a, b| a.0.cmp(&b.0));
        file.checkpoint(&empty, changes, 1).expect("checkpoint");
        let committed = file.committed().expect("committed");
        let read_all = |c: &Committed| -> Vec<(EntryMeta, Vec<u8>)> {
            (0..300u32)
                .map(|i| {
                    let meta = c
                        .lookup(&dir_key(0, format!("key:{i}").as_bytes()))
                        .expect("lookup")
                        .expect("present");
                    let v = c.load_value(&meta).expect("value");
                    assert_eq!(v.to_bytes(), value(i).to_bytes());
                    (meta, v.to_bytes())
                })
                .collect()
        };
        let before = read_all(&committed);
        for _ in 0..3 {
            committed.release_mapped_pages();
            assert_eq!(read_all(&committed), before);
        }
    }
}
