//! The directory: a copy-on-write B+tree in the database file, keyed by
//! (database, key), whose leaf entries hold each key's metadata (byte
//! length, cardinality, expiry) and where its Roaring payload lives (inline
//! in the leaf, or in an extent of whole pages), with the payload checksum.
//!
//! Reads walk committed pages through a `PageSource` (the read-only
//! mapping). Writes never touch a committed page: `TreeWriter::apply` takes
//! a sorted batch of changes, rewrites the affected leaves and their paths to
//! the root into newly allocated pages, and reports the pages it replaced.
//! Page layouts are documented in `docs/FORMAT.md`.

use super::page::{
    checksum, get_u16, get_u32, get_u64, open_node_with, seal_node_with, NODE_HEADER, NODE_SLOTTED,
    PAGE_BRANCH, PAGE_LEAF, PAGE_SIZE,
};
use super::StorageError;
use std::ops::ControlFlow;

/// Longest key accepted (bytes): keys live in directory pages, and at least
/// two leaf entries must fit one page.
pub const MAX_KEY_LEN: usize = 1024;
/// Payloads up to this size are stored inline in the leaf.
pub const INLINE_MAX: usize = 512;
/// Deepest tree walked before the file is considered corrupt (a cycle).
const MAX_DEPTH: usize = 32;
const BODY: usize = PAGE_SIZE - NODE_HEADER;

/// The directory key of `key` in database `db`: the database number, then
/// the key bytes. Byte order of these equals (db, key) order.
pub fn dir_key(db: usize, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(db as u8);
    k.extend_from_slice(key);
    k
}

/// Where a value's portable Roaring bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Shared, so copying an entry (the directory memo, lookups) copies no bytes.
    Inline(std::sync::Arc<[u8]>),
    /// `pages` whole pages from `page`; the first `len` bytes are the payload.
    Extent { page: u64, pages: u32, len: u32 },
}

/// A directory entry: everything known about a key without its bitmap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryMeta {
    pub byte_len: u64,
    pub cardinality: u64,
    /// Unix milliseconds; 0 when the key does not expire.
    pub expire_at: u64,
    /// CRC-32C of the payload bytes.
    pub payload_crc: u32,
    pub payload: Payload,
}

impl EntryMeta {
    fn encoded_len(&self, key: &[u8]) -> usize {
        2 + key.len()
            + 8
            + 8
            + 8
            + 4
            + 1
            + match &self.payload {
                Payload::Inline(b) => 2 + b.len(),
                Payload::Extent { .. } => 16,
            }
    }

    fn encode(&self, key: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&self.byte_len.to_le_bytes());
        out.extend_from_slice(&self.cardinality.to_le_bytes());
        out.extend_from_slice(&self.expire_at.to_le_bytes());
        out.extend_from_slice(&self.payload_crc.to_le_bytes());
        match &self.payload {
            Payload::Inline(b) => {
                out.push(0);
                out.extend_from_slice(&(b.len() as u16).to_le_bytes());
                out.extend_from_slice(b);
            }
            Payload::Extent { page, pages, len } => {
                out.push(1);
                out.extend_from_slice(&page.to_le_bytes());
                out.extend_from_slice(&pages.to_le_bytes());
                out.extend_from_slice(&len.to_le_bytes());
            }
        }
    }

    /// The payload as it must be checksummed.
    pub fn verify_payload(&self, bytes: &[u8]) -> bool {
        checksum(bytes) == self.payload_crc
    }
}

/// Where entry parsing is in a page.
struct Cursor<'a> {
    page: &'a [u8],
    at: usize,
    id: u64,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StorageError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.page.len());
        match end {
            Some(end) => {
                let s = &self.page[self.at..end];
                self.at = end;
                Ok(s)
            }
            None => Err(StorageError::corrupt(format!(
                "page {}: entry runs past the page",
                self.id
            ))),
        }
    }
    fn u8(&mut self) -> Result<u8, StorageError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, StorageError> {
        Ok(get_u16(self.take(2)?, 0))
    }
    fn u32(&mut self) -> Result<u32, StorageError> {
        Ok(get_u32(self.take(4)?, 0))
    }
    fn u64(&mut self) -> Result<u64, StorageError> {
        Ok(get_u64(self.take(8)?, 0))
    }

    /// Skips the rest of a leaf entry whose key was just read.
    fn skip_leaf_value(&mut self) -> Result<(), StorageError> {
        self.take(8 + 8 + 8 + 4)?;
        match self.u8()? {
            0 => {
                let n = self.u16()? as usize;
                self.take(n)?;
            }
            1 => {
                self.take(16)?;
            }
            other => {
                return Err(StorageError::corrupt(format!(
                    "page {}: unknown payload kind {other}",
                    self.id
                )))
            }
        }
        Ok(())
    }

    fn leaf_entry(&mut self) -> Result<(&'a [u8], EntryMeta), StorageError> {
        let klen = self.u16()? as usize;
        let key = self.take(klen)?;
        let byte_len = self.u64()?;
        let cardinality = self.u64()?;
        let expire_at = self.u64()?;
        let payload_crc = self.u32()?;
        let payload = match self.u8()? {
            0 => {
                let n = self.u16()? as usize;
                Payload::Inline(self.take(n)?.into())
            }
            1 => Payload::Extent {
                page: self.u64()?,
                pages: self.u32()?,
                len: self.u32()?,
            },
            other => {
                return Err(StorageError::corrupt(format!(
                    "page {}: unknown payload kind {other}",
                    self.id
                )))
            }
        };
        Ok((
            key,
            EntryMeta {
                byte_len,
                cardinality,
                expire_at,
                payload_crc,
                payload,
            },
        ))
    }
}

/// Read access to committed pages.
pub trait PageSource {
    fn page(&self, id: u64) -> Result<&[u8], StorageError>;
    /// True when `page` returns only pages whose checksum it has verified
    /// (so readers need not check it again).
    fn verifies_checksums(&self) -> bool {
        false
    }
}

/// A decoded node.
enum Node<'a> {
    Leaf(Vec<(&'a [u8], EntryMeta)>),
    /// Children with their lower-bound keys (the first one's is empty).
    Branch(Vec<(&'a [u8], u64)>),
}

fn decode<'a>(page: &'a [u8], id: u64, verify: bool) -> Result<Node<'a>, StorageError> {
    let (kind, count) = open_node_with(page, id, &[PAGE_LEAF, PAGE_BRANCH], verify)?;
    let mut c = Cursor {
        page,
        at: NODE_HEADER,
        id,
    };
    if kind == PAGE_LEAF {
        let mut entries = Vec::with_capacity(count as usize);
        for _ in 0..count {
            entries.push(c.leaf_entry()?);
        }
        Ok(Node::Leaf(entries))
    } else {
        let mut children = Vec::with_capacity(count as usize + 1);
        children.push((&page[0..0], c.u64()?));
        for _ in 0..count {
            let klen = c.u16()? as usize;
            let key = c.take(klen)?;
            children.push((key, c.u64()?));
        }
        Ok(Node::Branch(children))
    }
}

/// The child of a branch whose range holds `key`.
fn route(children: &[(&[u8], u64)], key: &[u8]) -> usize {
    // The last child whose lower bound is <= key (child 0 has no bound).
    children[1..].partition_point(|(low, _)| *low <= key)
}

/// The slot array of a page flagged `NODE_SLOTTED`: `count` u16 offsets at
/// the end of the page, each pointing at an entry (leaf) or a separator
/// (branch) that starts with a u16 key length and the key.
struct Slots<'a> {
    page: &'a [u8],
    count: usize,
    id: u64,
}

impl<'a> Slots<'a> {
    fn new(page: &'a [u8], count: usize, id: u64) -> Result<Self, StorageError> {
        if NODE_HEADER + 2 * count > PAGE_SIZE {
            return Err(StorageError::corrupt(format!(
                "page {id}: slot array larger than the page"
            )));
        }
        Ok(Slots { page, count, id })
    }

    /// A cursor at entry `i` (`i < count`).
    fn cursor(&self, i: usize) -> Result<Cursor<'a>, StorageError> {
        let slots_at = PAGE_SIZE - 2 * self.count;
        let at = get_u16(self.page, slots_at + 2 * i) as usize;
        if at < NODE_HEADER || at >= slots_at {
            return Err(StorageError::corrupt(format!(
                "page {}: slot {i} points outside the entries",
                self.id
            )));
        }
        Ok(Cursor {
            page: &self.page[..slots_at],
            at,
            id: self.id,
        })
    }

    /// The key of entry `i`.
    fn key(&self, i: usize) -> Result<&'a [u8], StorageError> {
        let mut c = self.cursor(i)?;
        let klen = c.u16()? as usize;
        c.take(klen)
    }

    /// How many entries have keys `<= key` (they are in key order).
    fn count_le(&self, key: &[u8]) -> Result<usize, StorageError> {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.key(mid)? <= key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }
}

/// Looks `ckey` (a `dir_key`) up in the tree rooted at `root` (0 = empty).
pub fn lookup<S: PageSource + ?Sized>(
    src: &S,
    root: u64,
    ckey: &[u8],
) -> Result<Option<EntryMeta>, StorageError> {
    let mut id = root;
    for _ in 0..MAX_DEPTH {
        if id == 0 {
            return Ok(None);
        }
        // Walk the page's entries in place: no allocation but the result.
        let page = src.page(id)?;
        let (kind, count) = open_node_with(
            page,
            id,
            &[PAGE_LEAF, PAGE_BRANCH],
            !src.verifies_checksums(),
        )?;
        if page[5] & NODE_SLOTTED != 0 {
            // Binary search through the slot array.
            let slots = Slots::new(page, count as usize, id)?;
            let le = slots.count_le(ckey)?;
            if kind == PAGE_BRANCH {
                id = if le == 0 {
                    get_u64(page, NODE_HEADER)
                } else {
                    let mut c = slots.cursor(le - 1)?;
                    let klen = c.u16()? as usize;
                    c.take(klen)?;
                    c.u64()?
                };
                continue;
            }
            if le == 0 || slots.key(le - 1)? != ckey {
                return Ok(None);
            }
            return Ok(Some(slots.cursor(le - 1)?.leaf_entry()?.1));
        }
        // A version-1 page: parse the entries in order.
        let mut c = Cursor {
            page,
            at: NODE_HEADER,
            id,
        };
        if kind == PAGE_BRANCH {
            let mut child = c.u64()?;
            for _ in 0..count {
                let klen = c.u16()? as usize;
                let low = c.take(klen)?;
                let next = c.u64()?;
                if low > ckey {
                    break;
                }
                child = next;
            }
            id = child;
            continue;
        }
        for _ in 0..count {
            let klen = c.u16()? as usize;
            let key = c.take(klen)?;
            match key.cmp(ckey) {
                std::cmp::Ordering::Less => c.skip_leaf_value()?,
                std::cmp::Ordering::Equal => {
                    c.at -= klen + 2;
                    return Ok(Some(c.leaf_entry()?.1));
                }
                std::cmp::Ordering::Greater => return Ok(None),
            }
        }
        return Ok(None);
    }
    Err(StorageError::corrupt(
        "directory deeper than possible (a page cycle)",
    ))
}

/// Visits entries with keys >= `start` in key order until `visit` breaks.
pub fn visit_from<S: PageSource + ?Sized>(
    src: &S,
    root: u64,
    start: &[u8],
    visit: &mut dyn FnMut(&[u8], &EntryMeta) -> ControlFlow<()>,
) -> Result<ControlFlow<()>, StorageError> {
    fn walk<S: PageSource + ?Sized>(
        src: &S,
        id: u64,
        start: &[u8],
        depth: usize,
        seen: &mut Seen,
        visit: &mut dyn FnMut(&[u8], &EntryMeta) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>, StorageError> {
        if depth > MAX_DEPTH {
            return Err(StorageError::corrupt(
                "directory deeper than possible (a page cycle)",
            ));
        }
        seen.visit(id)?;
        match decode(src.page(id)?, id, !src.verifies_checksums())? {
            Node::Leaf(entries) => {
                let from = entries.partition_point(|(k, _)| *k < start);
                for (k, meta) in &entries[from..] {
                    if visit(k, meta).is_break() {
                        return Ok(ControlFlow::Break(()));
                    }
                }
            }
            Node::Branch(children) => {
                let first = route(&children, start);
                for (_, child) in &children[first..] {
                    if walk(src, *child, start, depth + 1, seen, visit)?.is_break() {
                        return Ok(ControlFlow::Break(()));
                    }
                }
            }
        }
        Ok(ControlFlow::Continue(()))
    }
    if root == 0 {
        return Ok(ControlFlow::Continue(()));
    }
    walk(src, root, start, 0, &mut Seen::default(), visit)
}

/// The pages a walk has entered. In a tree every page has one parent; a
/// damaged file whose branches share children would otherwise be walked
/// once per path (exponentially many times).
#[derive(Default)]
struct Seen(std::collections::HashSet<u64>);

impl Seen {
    fn visit(&mut self, id: u64) -> Result<(), StorageError> {
        if self.0.insert(id) {
            Ok(())
        } else {
            Err(StorageError::corrupt(format!(
                "page {id} is reachable twice in the directory"
            )))
        }
    }
}

/// Every page of the tree (for backups and consistency checks).
pub fn pages_of<S: PageSource + ?Sized>(
    src: &S,
    root: u64,
    out: &mut Vec<u64>,
) -> Result<(), StorageError> {
    fn walk<S: PageSource + ?Sized>(
        src: &S,
        id: u64,
        depth: usize,
        seen: &mut Seen,
        out: &mut Vec<u64>,
    ) -> Result<(), StorageError> {
        if depth > MAX_DEPTH {
            return Err(StorageError::corrupt(
                "directory deeper than possible (a page cycle)",
            ));
        }
        seen.visit(id)?;
        out.push(id);
        if let Node::Branch(children) = decode(src.page(id)?, id, !src.verifies_checksums())? {
            for (_, child) in children {
                walk(src, child, depth + 1, seen, out)?;
            }
        }
        Ok(())
    }
    if root != 0 {
        walk(src, root, 0, &mut Seen::default(), out)?;
    }
    Ok(())
}

/// Gives out page numbers for new pages and takes back replaced ones.
pub trait PageAlloc {
    /// `n` contiguous new pages; returns the first.
    fn alloc(&mut self, n: u64) -> u64;
    /// Pages no longer reachable once the state being written commits.
    fn release(&mut self, first: u64, n: u64);
}

/// One copy-on-write update of the directory.
pub struct TreeWriter<'a, S: PageSource + ?Sized, A: PageAlloc> {
    src: &'a S,
    alloc: &'a mut A,
    txid: u64,
    /// New pages and their bytes, to be written before the meta page.
    pub written: Vec<(u64, Vec<u8>)>,
    /// Payload extents of entries that were replaced or removed. The caller
    /// releases those that no new entry still points at (RENAME keeps them).
    pub dropped_extents: Vec<(u64, u32)>,
    /// Keys added minus keys removed, per database.
    pub key_delta: [i64; super::page::DATABASES],
}

/// A change to apply: the new entry, or None to delete the key.
pub type Change = (Vec<u8>, Option<EntryMeta>);

impl<'a, S: PageSource + ?Sized, A: PageAlloc> TreeWriter<'a, S, A> {
    pub fn new(src: &'a S, alloc: &'a mut A, txid: u64) -> Self {
        TreeWriter {
            src,
            alloc,
            txid,
            written: Vec::new(),
            dropped_extents: Vec::new(),
            key_delta: [0; super::page::DATABASES],
        }
    }

    /// Applies `changes` (sorted by key, keys unique) to the tree rooted at
    /// `root`; returns the new root (0 when the tree became empty).
    pub fn apply(&mut self, root: u64, changes: &[Change]) -> Result<u64, StorageError> {
        debug_assert!(changes.windows(2).all(|w| w[0].0 < w[1].0));
        for (key, _) in changes {
            if key.len() > MAX_KEY_LEN + 1 {
                return Err(StorageError::corrupt(
                    "key longer than the directory allows",
                ));
            }
        }
        if changes.is_empty() {
            return Ok(root);
        }
        let mut level: Vec<(Vec<u8>, u64)> = if root == 0 {
            let entries: Vec<(&[u8], &EntryMeta)> = changes
                .iter()
                .filter_map(|(k, v)| v.as_ref().map(|m| (k.as_slice(), m)))
                .collect();
            for (k, _) in &entries {
                self.count(k, 1);
            }
            self.write_leaves(&entries)
        } else {
            self.update(root, changes, 0)?
        };
        // Grow the tree while a level has more than one page.
        while level.len() > 1 {
            let children: Vec<(&[u8], u64)> =
                level.iter().map(|(k, id)| (k.as_slice(), *id)).collect();
            level = self.write_branches(&children);
        }
        Ok(level.first().map_or(0, |(_, id)| *id))
    }

    fn count(&mut self, key: &[u8], delta: i64) {
        if let Some(slot) = key
            .first()
            .and_then(|&db| self.key_delta.get_mut(db as usize))
        {
            *slot += delta;
        }
    }

    fn update(
        &mut self,
        id: u64,
        changes: &[Change],
        depth: usize,
    ) -> Result<Vec<(Vec<u8>, u64)>, StorageError> {
        if depth > MAX_DEPTH {
            return Err(StorageError::corrupt(
                "directory deeper than possible (a page cycle)",
            ));
        }
        let src = self.src;
        let node = decode(src.page(id)?, id, !src.verifies_checksums())?;
        self.alloc.release(id, 1);
        match node {
            Node::Leaf(entries) => {
                let mut merged: Vec<(&[u8], &EntryMeta)> =
                    Vec::with_capacity(entries.len() + changes.len());
                let (mut i, mut j) = (0, 0);
                while i < entries.len() || j < changes.len() {
                    let take_old = j == changes.len()
                        || (i < entries.len() && entries[i].0 < changes[j].0.as_slice());
                    if take_old {
                        merged.push((entries[i].0, &entries[i].1));
                        i += 1;
                        continue;
                    }
                    let (key, new) = &changes[j];
                    let existed = i < entries.len() && entries[i].0 == key.as_slice();
                    if existed {
                        if let Payload::Extent { page, pages, .. } = entries[i].1.payload {
                            self.dropped_extents.push((page, pages));
                        }
                        i += 1;
                    }
                    match (existed, new.is_some()) {
                        (false, true) => self.count(key, 1),
                        (true, false) => self.count(key, -1),
                        _ => {}
                    }
                    if let Some(meta) = new {
                        merged.push((key.as_slice(), meta));
                    }
                    j += 1;
                }
                Ok(self.write_leaves(&merged))
            }
            Node::Branch(children) => {
                let mut new_children: Vec<(Vec<u8>, u64)> = Vec::with_capacity(children.len() + 1);
                let mut rest = changes;
                for (index, (low, child)) in children.iter().enumerate() {
                    // Changes below the next child's lower bound belong here.
                    let split = match children.get(index + 1) {
                        Some((next_low, _)) => {
                            rest.partition_point(|(k, _)| k.as_slice() < *next_low)
                        }
                        None => rest.len(),
                    };
                    let (mine, after) = rest.split_at(split);
                    rest = after;
                    if mine.is_empty() {
                        new_children.push((low.to_vec(), *child));
                    } else {
                        let replaced = self.update(*child, mine, depth + 1)?;
                        for (i, (new_low, new_id)) in replaced.into_iter().enumerate() {
                            // Keep the old bound for the first piece: it still
                            // separates this child from the previous one.
                            let bound = if i == 0 { low.to_vec() } else { new_low };
                            new_children.push((bound, new_id));
                        }
                    }
                }
                let children: Vec<(&[u8], u64)> = new_children
                    .iter()
                    .map(|(k, id)| (k.as_slice(), *id))
                    .collect();
                if children.is_empty() {
                    return Ok(Vec::new());
                }
                Ok(self.write_branches(&children))
            }
        }
    }

    /// Packs leaf entries into as few pages as they fit; returns each page
    /// with its first key.
    fn write_leaves(&mut self, entries: &[(&[u8], &EntryMeta)]) -> Vec<(Vec<u8>, u64)> {
        let mut out = Vec::new();
        let mut start = 0;
        while start < entries.len() {
            let mut used = 0;
            let mut end = start;
            while end < entries.len() {
                // The entry and its slot.
                let size = entries[end].1.encoded_len(entries[end].0) + 2;
                if end > start && used + size > BODY {
                    break;
                }
                used += size;
                end += 1;
            }
            let mut page = Vec::with_capacity(PAGE_SIZE);
            page.resize(NODE_HEADER, 0);
            let mut slots = Vec::with_capacity(2 * (end - start));
            for (k, m) in &entries[start..end] {
                slots.extend_from_slice(&(page.len() as u16).to_le_bytes());
                m.encode(k, &mut page);
            }
            finish_slotted(&mut page, &slots);
            seal_node_with(
                &mut page,
                PAGE_LEAF,
                NODE_SLOTTED,
                (end - start) as u16,
                self.txid,
            );
            let id = self.alloc.alloc(1);
            self.written.push((id, page));
            out.push((entries[start].0.to_vec(), id));
            start = end;
        }
        out
    }

    /// Packs children into branch pages; returns each page with the lower
    /// bound of its first child.
    fn write_branches(&mut self, children: &[(&[u8], u64)]) -> Vec<(Vec<u8>, u64)> {
        let mut out = Vec::new();
        let mut start = 0;
        while start < children.len() {
            let mut used = 8;
            let mut end = start + 1;
            while end < children.len() {
                // The separator, its child and its slot.
                let size = 2 + children[end].0.len() + 8 + 2;
                if used + size > BODY {
                    break;
                }
                used += size;
                end += 1;
            }
            let mut page = Vec::with_capacity(PAGE_SIZE);
            page.resize(NODE_HEADER, 0);
            page.extend_from_slice(&children[start].1.to_le_bytes());
            let mut slots = Vec::with_capacity(2 * (end - start - 1));
            for (low, id) in &children[start + 1..end] {
                slots.extend_from_slice(&(page.len() as u16).to_le_bytes());
                page.extend_from_slice(&(low.len() as u16).to_le_bytes());
                page.extend_from_slice(low);
                page.extend_from_slice(&id.to_le_bytes());
            }
            finish_slotted(&mut page, &slots);
            seal_node_with(
                &mut page,
                PAGE_BRANCH,
                NODE_SLOTTED,
                (end - start - 1) as u16,
                self.txid,
            );
            let id = self.alloc.alloc(1);
            self.written.push((id, page));
            out.push((children[start].0.to_vec(), id));
            start = end;
        }
        out
    }
}

/// Pads a node body to the page size with the slot array at the very end.
fn finish_slotted(page: &mut Vec<u8>, slots: &[u8]) {
    page.resize(PAGE_SIZE - slots.len(), 0);
    page.extend_from_slice(slots);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, HashMap};

    /// Pages in memory, with a simple allocator that never reuses pages, so
    /// a test can check that committed pages are never overwritten.
    #[derive(Default)]
    pub struct MemPages {
        pub pages: HashMap<u64, Vec<u8>>,
        pub next: u64,
        pub released: Vec<u64>,
    }

    impl PageSource for MemPages {
        fn page(&self, id: u64) -> Result<&[u8], StorageError> {
            self.pages
                .get(&id)
                .map(Vec::as_slice)
                .ok_or_else(|| StorageError::corrupt(format!("no page {id}")))
        }
    }

    struct Alloc<'a> {
        next: &'a mut u64,
        released: &'a mut Vec<u64>,
    }

    impl PageAlloc for Alloc<'_> {
        fn alloc(&mut self, n: u64) -> u64 {
            let id = *self.next;
            *self.next += n;
            id
        }
        fn release(&mut self, first: u64, n: u64) {
            self.released.extend(first..first + n);
        }
    }

    impl MemPages {
        pub fn new() -> Self {
            MemPages {
                next: 2,
                ..Self::default()
            }
        }

        pub fn apply(&mut self, root: u64, changes: &[Change]) -> u64 {
            let mut next = self.next;
            let mut released = Vec::new();
            let (new_root, written) = {
                let mut alloc = Alloc {
                    next: &mut next,
                    released: &mut released,
                };
                let mut w = TreeWriter::new(&*self, &mut alloc, 1);
                let root = w.apply(root, changes).expect("apply");
                (root, w.written)
            };
            for (id, bytes) in written {
                assert!(!self.pages.contains_key(&id), "page {id} overwritten");
                self.pages.insert(id, bytes);
            }
            self.next = next;
            self.released.extend(released);
            new_root
        }
    }

    pub fn meta(n: u64) -> EntryMeta {
        EntryMeta {
            byte_len: n,
            cardinality: n * 3,
            expire_at: n % 5,
            payload_crc: n as u32,
            payload: if n % 2 == 0 {
                Payload::Inline(vec![n as u8; (n % 40) as usize].into())
            } else {
                Payload::Extent {
                    page: n,
                    pages: 1,
                    len: 10,
                }
            },
        }
    }

    fn all(src: &MemPages, root: u64) -> Vec<(Vec<u8>, EntryMeta)> {
        let mut out = Vec::new();
        let r = visit_from(src, root, b"", &mut |k, m| {
            out.push((k.to_vec(), m.clone()));
            ControlFlow::Continue(())
        });
        assert!(r.is_ok());
        out
    }

    #[test]
    fn many_inserts_split_into_a_deep_tree_and_read_back() {
        let mut src = MemPages::new();
        let mut model = BTreeMap::new();
        let mut root = 0;
        for round in 0..5u64 {
            let mut changes: Vec<Change> = (0..4000u64)
                .map(|i| {
                    let k = dir_key(
                        (i % 3) as usize,
                        format!("trackist_event_{}_{}", i * 7919 % 10007, round).as_bytes(),
                    );
                    (k, Some(meta(i + round)))
                })
                .collect();
            changes.sort_by(|a, b| a.0.cmp(&b.0));
            changes.dedup_by(|a, b| a.0 == b.0);
            for (k, v) in &changes {
                model.insert(k.clone(), v.clone().expect("insert"));
            }
            root = src.apply(root, &changes);
        }
        let got = all(&src, root);
        let want: Vec<(Vec<u8>, EntryMeta)> = model.into_iter().collect();
        assert_eq!(got.len(), want.len());
        assert!(got == want);
        for (k, v) in want.iter().step_by(97) {
            assert_eq!(lookup(&src, root, k).ok().flatten().as_ref(), Some(v));
        }
        assert_eq!(lookup(&src, root, b"\x05nope").ok().flatten(), None);
    }

    /// Rewrites every page as format version 1 wrote it: no flag, no slot
    /// array (entries unchanged, zeros after them).
    fn strip_slots(src: &mut MemPages) {
        for page in src.pages.values_mut() {
            if page[5] & NODE_SLOTTED == 0 {
                continue;
            }
            let count = get_u16(page, 6) as usize;
            let start = PAGE_SIZE - 2 * count;
            page[start..].fill(0);
            let (kind, txid) = (page[4], get_u64(page, 8));
            crate::storage::page::seal_node(page, kind, count as u16, txid);
        }
    }

    #[test]
    fn slotted_and_version_1_pages_answer_the_same_lookups() {
        let mut src = MemPages::new();
        let changes: Vec<Change> = (0..5000u64)
            .map(|i| {
                (
                    dir_key(1, format!("user:{:06}", i * 2).as_bytes()),
                    Some(meta(i)),
                )
            })
            .collect();
        let root = src.apply(0, &changes);
        assert!(src.pages.values().all(|p| p[5] & NODE_SLOTTED != 0));
        let check = |src: &MemPages| {
            for (i, (k, v)) in changes.iter().enumerate() {
                assert_eq!(lookup(src, root, k).ok().flatten().as_ref(), v.as_ref());
                // Between two keys, before the first, after the last.
                let missing = dir_key(1, format!("user:{:06}", i * 2 + 1).as_bytes());
                assert_eq!(lookup(src, root, &missing).ok().flatten(), None);
            }
            assert_eq!(lookup(src, root, b"\x01").ok().flatten(), None);
            assert_eq!(lookup(src, root, b"\x00zzz").ok().flatten(), None);
            assert_eq!(lookup(src, root, b"\x02").ok().flatten(), None);
            assert_eq!(all(src, root).len(), changes.len());
        };
        check(&src);
        strip_slots(&mut src);
        check(&src);
    }

    #[test]
    fn a_slot_pointing_outside_the_entries_is_an_error_not_a_panic() {
        let mut src = MemPages::new();
        let changes: Vec<Change> = (0..20u64)
            .map(|i| (dir_key(0, format!("k{i:03}").as_bytes()), Some(meta(i))))
            .collect();
        let root = src.apply(0, &changes);
        for bad in [0u16, 3, (PAGE_SIZE - 1) as u16, u16::MAX] {
            {
                let page = src.pages.get_mut(&root).expect("root page");
                let count = get_u16(page, 6) as usize;
                let first_slot = PAGE_SIZE - 2 * count;
                page[first_slot..first_slot + 2].copy_from_slice(&bad.to_le_bytes());
                let (kind, txid) = (page[4], get_u64(page, 8));
                seal_node_with(page, kind, NODE_SLOTTED, count as u16, txid);
            }
            let err = lookup(&src, root, &changes[0].0).expect_err("a bad slot");
            assert!(err.to_string().contains("slot 0"), "{err}");
        }
    }

    #[test]
    fn deleting_everything_empties_the_tree() {
        let mut src = MemPages::new();
        let changes: Vec<Change> = (0..3000u64)
            .map(|i| (dir_key(0, format!("{i:06}").as_bytes()), Some(meta(i))))
            .collect();
        let root = src.apply(0, &changes);
        let deletes: Vec<Change> = changes.iter().map(|(k, _)| (k.clone(), None)).collect();
        let root = src.apply(root, &deletes);
        assert_eq!(root, 0);
        assert!(all(&src, root).is_empty());
    }

    #[test]
    fn long_keys_fit() {
        let mut src = MemPages::new();
        let changes: Vec<Change> = (0..50u8)
            .map(|i| {
                let mut k = vec![b'x'; MAX_KEY_LEN];
                k[MAX_KEY_LEN - 1] = i;
                let mut m = meta(2);
                m.payload = Payload::Inline(vec![1; INLINE_MAX].into());
                (dir_key(0, &k), Some(m))
            })
            .collect();
        let root = src.apply(0, &changes);
        assert_eq!(all(&src, root).len(), 50);
    }

    #[test]
    fn replaced_extents_are_reported() {
        let mut src = MemPages::new();
        let root = src.apply(0, &[(dir_key(0, b"a"), Some(meta(1)))]);
        let mut next = src.next;
        let mut released = Vec::new();
        let mut alloc = Alloc {
            next: &mut next,
            released: &mut released,
        };
        let mut w = TreeWriter::new(&src, &mut alloc, 2);
        w.apply(root, &[(dir_key(0, b"a"), None)]).expect("apply");
        assert_eq!(w.dropped_extents, vec![(1, 1)]);
        assert!(released.contains(&root));
    }

    #[test]
    fn corrupt_pages_are_errors() {
        let mut src = MemPages::new();
        let changes: Vec<Change> = (0..10u64)
            .map(|i| (dir_key(0, &[i as u8]), Some(meta(i))))
            .collect();
        let root = src.apply(0, &changes);
        if let Some(p) = src.pages.get_mut(&root) {
            p[40] ^= 0x55;
        }
        assert!(lookup(&src, root, &dir_key(0, &[3])).is_err());
        let r = visit_from(&src, root, b"", &mut |_, _| ControlFlow::Continue(()));
        assert!(r.is_err());
    }

    proptest! {
        #[test]
        fn random_batches_match_a_model(batches in proptest::collection::vec(
            proptest::collection::vec((0u8..3, proptest::collection::vec(any::<u8>(), 0..40), proptest::option::of(0u64..1000)), 1..300), 1..6)) {
            let mut src = MemPages::new();
            let mut model: BTreeMap<Vec<u8>, EntryMeta> = BTreeMap::new();
            let mut root = 0;
            for batch in batches {
                let mut changes: BTreeMap<Vec<u8>, Option<EntryMeta>> = BTreeMap::new();
                for (db, key, v) in batch {
                    changes.insert(dir_key(db as usize, &key), v.map(meta));
                }
                for (k, v) in &changes {
                    match v {
                        Some(m) => { model.insert(k.clone(), m.clone()); }
                        None => { model.remove(k); }
                    }
                }
                let changes: Vec<Change> = changes.into_iter().collect();
                root = src.apply(root, &changes);
                let got = all(&src, root);
                let want: Vec<(Vec<u8>, EntryMeta)> = model.clone().into_iter().collect();
                prop_assert!(got == want);
                for (k, v) in model.iter().take(20) {
                    let found = lookup(&src, root, k).ok().flatten();
                    prop_assert_eq!(found.as_ref(), Some(v));
                }
            }
        }
    }
}
