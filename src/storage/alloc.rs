//! Page allocation: which pages of the file are free, first-fit allocation
//! of runs of pages, and the free list as it is stored in the file (a chain
//! of free-list pages written at every checkpoint).
//!
//! Pages released while a checkpoint is being written are still reachable
//! from the committed meta, so they only become allocatable after that
//! checkpoint commits (`commit`). Pages a running backup still reads are
//! held back the same way (`hold`/`unhold`).

use super::btree::{PageAlloc, PageSource};
use super::page::{get_u32, get_u64, open_node, seal_node, NODE_HEADER, PAGE_FREELIST, PAGE_SIZE};
use super::StorageError;
use std::collections::BTreeMap;

/// Ranges per free-list page: 12 bytes each after an 8-byte next pointer.
const RANGES_PER_PAGE: usize = (PAGE_SIZE - NODE_HEADER - 8) / 12;

/// Free pages as coalesced ranges, plus the file's high-water mark.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Allocator {
    /// start → length of free runs.
    free: BTreeMap<u64, u64>,
    /// Released during the current checkpoint: free once it commits.
    pending: Vec<(u64, u64)>,
    /// Pages past the end of the used file: the next new page.
    high_water: u64,
}

impl Allocator {
    pub fn new(high_water: u64) -> Self {
        Allocator {
            high_water,
            ..Self::default()
        }
    }

    pub fn high_water(&self) -> u64 {
        self.high_water
    }

    pub fn free_pages(&self) -> u64 {
        self.free.values().sum()
    }

    /// Adds a free run (coalescing with its neighbours).
    fn insert_free(&mut self, mut start: u64, mut len: u64) {
        if len == 0 {
            return;
        }
        if let Some((&s, &l)) = self.free.range(..start).next_back() {
            if s + l == start {
                self.free.remove(&s);
                start = s;
                len += l;
            }
        }
        if let Some(&l) = self.free.get(&(start + len)) {
            self.free.remove(&(start + len));
            len += l;
        }
        self.free.insert(start, len);
    }

    /// Makes the pages released by the checkpoint that just committed
    /// allocatable.
    pub fn commit(&mut self) {
        for (s, l) in std::mem::take(&mut self.pending) {
            self.insert_free(s, l);
        }
    }

    /// Forgets releases of a checkpoint that failed (its pages stay in use).
    pub fn abort(&mut self, before: &Allocator) {
        *self = before.clone();
    }

    /// Runs released but not yet committed (kept in the free list written by
    /// this checkpoint, since they are free once it commits).
    pub fn pending(&self) -> &[(u64, u64)] {
        &self.pending
    }

    /// Encodes the free list (free runs plus pending ones) into pages
    /// allocated past the high-water mark; returns the first page id (0 if
    /// the list is empty) and the pages to write.
    pub fn write_freelist(&mut self, txid: u64) -> (u64, Vec<(u64, Vec<u8>)>) {
        let mut ranges: Vec<(u64, u64)> = self.free.iter().map(|(&s, &l)| (s, l)).collect();
        ranges.extend(self.pending.iter().copied());
        ranges.sort_unstable();
        if ranges.is_empty() {
            return (0, Vec::new());
        }
        let chunks: Vec<&[(u64, u64)]> = ranges.chunks(RANGES_PER_PAGE).collect();
        let first = self.high_water;
        self.high_water += chunks.len() as u64;
        let mut pages = Vec::with_capacity(chunks.len());
        for (i, chunk) in chunks.iter().enumerate() {
            let id = first + i as u64;
            let next = if i + 1 < chunks.len() { id + 1 } else { 0 };
            let mut p = vec![0u8; PAGE_SIZE];
            p[NODE_HEADER..NODE_HEADER + 8].copy_from_slice(&next.to_le_bytes());
            let mut at = NODE_HEADER + 8;
            for (s, l) in chunk.iter() {
                p[at..at + 8].copy_from_slice(&s.to_le_bytes());
                p[at + 8..at + 12].copy_from_slice(&(*l as u32).to_le_bytes());
                at += 12;
            }
            seal_node(&mut p, PAGE_FREELIST, chunk.len() as u16, txid);
            pages.push((id, p));
        }
        (first, pages)
    }

    /// Loads the free list of a committed state. Runs must lie below
    /// `page_count`; the free-list pages themselves become free once the
    /// next checkpoint writes a new list (they are released as pending).
    pub fn load<S: PageSource + ?Sized>(
        src: &S,
        first: u64,
        page_count: u64,
    ) -> Result<Allocator, StorageError> {
        let mut a = Allocator::new(page_count);
        let mut id = first;
        let mut seen = 0u64;
        while id != 0 {
            if id >= page_count || seen > page_count {
                return Err(StorageError::corrupt(format!(
                    "free list runs past the file at page {id}"
                )));
            }
            seen += 1;
            let p = src.page(id)?;
            let (_, count) = open_node(p, id, &[PAGE_FREELIST])?;
            if count as usize > RANGES_PER_PAGE {
                return Err(StorageError::corrupt(format!(
                    "free-list page {id} claims {count} runs"
                )));
            }
            let next = get_u64(p, NODE_HEADER);
            let mut at = NODE_HEADER + 8;
            for _ in 0..count {
                let s = get_u64(p, at);
                let l = u64::from(get_u32(p, at + 8));
                if s < 2 || s.checked_add(l).is_none_or(|end| end > page_count) {
                    return Err(StorageError::corrupt(format!(
                        "free-list page {id} has an invalid run {s}+{l}"
                    )));
                }
                a.insert_free(s, l);
                at += 12;
            }
            a.pending.push((id, 1));
            id = next;
        }
        Ok(a)
    }
}

impl PageAlloc for Allocator {
    fn alloc(&mut self, n: u64) -> u64 {
        let found = self
            .free
            .iter()
            .find(|(_, &l)| l >= n)
            .map(|(&s, &l)| (s, l));
        match found {
            Some((s, l)) => {
                self.free.remove(&s);
                if l > n {
                    self.free.insert(s + n, l - n);
                }
                s
            }
            None => {
                let s = self.high_water;
                self.high_water += n;
                s
            }
        }
    }

    fn release(&mut self, first: u64, n: u64) {
        self.pending.push((first, n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Pages(HashMap<u64, Vec<u8>>);
    impl PageSource for Pages {
        fn page(&self, id: u64) -> Result<&[u8], StorageError> {
            self.0
                .get(&id)
                .map(Vec::as_slice)
                .ok_or_else(|| StorageError::corrupt("missing"))
        }
    }

    #[test]
    fn first_fit_coalesce_and_pending() {
        let mut a = Allocator::new(10);
        assert_eq!(a.alloc(3), 10);
        a.release(4, 2);
        a.release(6, 1);
        // Released pages are not reusable before the checkpoint commits.
        assert_eq!(a.alloc(1), 13);
        a.commit();
        assert_eq!(a.free_pages(), 3);
        assert_eq!(a.alloc(3), 4);
        assert_eq!(a.free_pages(), 0);
    }

    #[test]
    fn freelist_round_trip_includes_pending() {
        let mut a = Allocator::new(5000);
        for i in 0..1000u64 {
            a.release(2 + i * 4, 2);
        }
        a.commit();
        a.release(4000, 7);
        let (first, pages) = a.write_freelist(3);
        assert!(pages.len() >= 3);
        let src = Pages(pages.into_iter().collect());
        let b = Allocator::load(&src, first, a.high_water()).expect("load");
        assert_eq!(b.free_pages(), 2007);
        // The list's own pages are released by the next checkpoint.
        assert_eq!(b.pending().len(), src.0.len());
    }

    #[test]
    fn corrupt_runs_are_refused() {
        let mut a = Allocator::new(100);
        a.release(50, 10);
        a.commit();
        let (first, pages) = a.write_freelist(1);
        let src = Pages(pages.into_iter().collect());
        // A file shorter than the runs it lists.
        assert!(Allocator::load(&src, first, 55).is_err());
    }
}
