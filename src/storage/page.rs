//! The page layout of the database file: page size, page headers and
//! checksums, and the two meta pages (encode, decode, validate, choose).
//! `docs/FORMAT.md` documents every byte defined here.

use super::StorageError;

/// Every page is this many bytes; page `n` starts at byte `n * PAGE_SIZE`.
pub const PAGE_SIZE: usize = 4096;
/// Format version written into meta pages; a newer one is refused.
pub const FORMAT_VERSION: u32 = 2;
/// The first eight bytes of both meta pages.
pub const MAGIC: &[u8; 8] = b"BMPDB\0\0\x01";
/// Page ids of the two meta pages.
pub const META_PAGES: [u64; 2] = [0, 1];
/// Databases per file (SELECT 0..15).
pub const DATABASES: usize = 16;

/// Node page types (byte 4 of a node page).
pub const PAGE_BRANCH: u8 = 1;
pub const PAGE_LEAF: u8 = 2;
pub const PAGE_FREELIST: u8 = 3;
/// Size of the header of branch, leaf and freelist pages.
pub const NODE_HEADER: usize = 16;

/// The checksum used everywhere in the file (CRC-32C).
pub fn checksum(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

pub fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

pub fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Node header flag (byte 5): the page ends with a slot array, one u16
/// offset per entry (per separator in a branch), in key order, so lookups
/// binary-search instead of parsing entries one after another. Pages
/// written by format version 1 have no flags.
pub const NODE_SLOTTED: u8 = 1;

/// Writes the header of a node page and its checksum (call after the body).
pub fn seal_node(page: &mut [u8], kind: u8, count: u16, txid: u64) {
    seal_node_with(page, kind, 0, count, txid)
}

/// `seal_node` with header flags (`NODE_SLOTTED`).
pub fn seal_node_with(page: &mut [u8], kind: u8, flags: u8, count: u16, txid: u64) {
    page[4] = kind;
    page[5] = flags;
    page[6..8].copy_from_slice(&count.to_le_bytes());
    page[8..16].copy_from_slice(&txid.to_le_bytes());
    let sum = checksum(&page[4..]);
    page[0..4].copy_from_slice(&sum.to_le_bytes());
}

/// Checks a node page's checksum and type; returns its entry count.
pub fn open_node(page: &[u8], id: u64, expected: &[u8]) -> Result<(u8, u16), StorageError> {
    open_node_with(page, id, expected, true)
}

/// Whether a node page's stored checksum matches its bytes.
pub fn node_checksum_ok(page: &[u8]) -> bool {
    page.len() == PAGE_SIZE && get_u32(page, 0) == checksum(&page[4..])
}

/// `open_node`, skipping the checksum when the caller's page source has
/// verified it already.
pub fn open_node_with(
    page: &[u8],
    id: u64,
    expected: &[u8],
    verify: bool,
) -> Result<(u8, u16), StorageError> {
    if page.len() != PAGE_SIZE {
        return Err(StorageError::corrupt(format!("page {id} is truncated")));
    }
    if verify && !node_checksum_ok(page) {
        return Err(StorageError::corrupt(format!(
            "page {id} has a bad checksum"
        )));
    }
    let kind = page[4];
    if !expected.contains(&kind) {
        return Err(StorageError::corrupt(format!(
            "page {id} has unexpected type {kind}"
        )));
    }
    Ok((kind, get_u16(page, 6)))
}

/// One committed state of the file, as recorded in a meta page.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Meta {
    /// Transaction id: increases by one at every checkpoint.
    pub txid: u64,
    /// Root page of the directory B+tree, 0 when it is empty.
    pub root: u64,
    /// First page of the free-list chain, 0 when there is none.
    pub freelist: u64,
    /// Number of pages the committed state uses (the file may be longer).
    pub page_count: u64,
    /// The first write-ahead-log segment this state does not include.
    pub wal_seq: u64,
    /// Keys per database.
    pub key_counts: [u64; DATABASES],
    /// When the checkpoint committed, Unix milliseconds.
    pub committed_at_ms: u64,
}

const META_CHECKSUM_AT: usize = 192;

impl Meta {
    pub fn encode(&self) -> Vec<u8> {
        let mut p = vec![0u8; PAGE_SIZE];
        p[0..8].copy_from_slice(MAGIC);
        p[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        p[12..16].copy_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
        p[16..24].copy_from_slice(&self.txid.to_le_bytes());
        p[24..32].copy_from_slice(&self.root.to_le_bytes());
        p[32..40].copy_from_slice(&self.freelist.to_le_bytes());
        p[40..48].copy_from_slice(&self.page_count.to_le_bytes());
        p[48..56].copy_from_slice(&self.wal_seq.to_le_bytes());
        for (i, n) in self.key_counts.iter().enumerate() {
            p[56 + i * 8..64 + i * 8].copy_from_slice(&n.to_le_bytes());
        }
        p[184..192].copy_from_slice(&self.committed_at_ms.to_le_bytes());
        let sum = checksum(&p[..META_CHECKSUM_AT]);
        p[META_CHECKSUM_AT..META_CHECKSUM_AT + 4].copy_from_slice(&sum.to_le_bytes());
        p
    }

    /// Decodes a meta page. `Ok(None)` means "not a valid meta page" (torn
    /// or zero); errors are for files that are not ours or too new.
    pub fn decode(p: &[u8]) -> Result<Option<Meta>, StorageError> {
        if p.len() < PAGE_SIZE || &p[0..8] != MAGIC {
            return Ok(None);
        }
        if get_u32(p, META_CHECKSUM_AT) != checksum(&p[..META_CHECKSUM_AT]) {
            return Ok(None);
        }
        let version = get_u32(p, 8);
        if version > FORMAT_VERSION {
            return Err(StorageError::TooNew(version));
        }
        let page_size = get_u32(p, 12);
        if page_size as usize != PAGE_SIZE {
            return Err(StorageError::corrupt(format!(
                "unsupported page size {page_size}"
            )));
        }
        let mut key_counts = [0u64; DATABASES];
        for (i, n) in key_counts.iter_mut().enumerate() {
            *n = get_u64(p, 56 + i * 8);
        }
        Ok(Some(Meta {
            txid: get_u64(p, 16),
            root: get_u64(p, 24),
            freelist: get_u64(p, 32),
            page_count: get_u64(p, 40),
            wal_seq: get_u64(p, 48),
            key_counts,
            committed_at_ms: get_u64(p, 184),
        }))
    }

    /// The meta page slot this state is written to (txids alternate).
    pub fn slot(&self) -> u64 {
        META_PAGES[(self.txid % 2) as usize]
    }
}

/// Picks the valid meta page with the highest txid from the first two pages.
pub fn choose_meta(page0: &[u8], page1: &[u8]) -> Result<Meta, StorageError> {
    let a = Meta::decode(page0)?;
    let b = Meta::decode(page1)?;
    match (a, b) {
        (Some(a), Some(b)) => Ok(if a.txid >= b.txid { a } else { b }),
        (Some(m), None) | (None, Some(m)) => Ok(m),
        (None, None) => Err(StorageError::corrupt("neither meta page is valid")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trip_and_choice() {
        let mut m = Meta {
            txid: 7,
            root: 12,
            freelist: 3,
            page_count: 40,
            wal_seq: 5,
            committed_at_ms: 99,
            ..Meta::default()
        };
        m.key_counts[3] = 17;
        let a = m.encode();
        assert_eq!(Meta::decode(&a).ok().flatten(), Some(m.clone()));
        let mut newer = m.clone();
        newer.txid = 8;
        let b = newer.encode();
        assert_eq!(choose_meta(&a, &b).ok(), Some(newer.clone()));
        // A torn newer meta falls back to the older one.
        let mut torn = b.clone();
        torn[30] ^= 0xff;
        assert_eq!(choose_meta(&a, &torn).ok(), Some(m));
        assert!(choose_meta(&torn, &vec![0u8; PAGE_SIZE]).is_err());
    }

    #[test]
    fn newer_format_is_refused() {
        let mut p = Meta::default().encode();
        p[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let sum = checksum(&p[..META_CHECKSUM_AT]);
        p[META_CHECKSUM_AT..META_CHECKSUM_AT + 4].copy_from_slice(&sum.to_le_bytes());
        assert!(
            matches!(Meta::decode(&p), Err(StorageError::TooNew(v)) if v == FORMAT_VERSION + 1)
        );
        // A version-1 file (pages without slot arrays) is still read.
        let mut old = Meta::default().encode();
        old[8..12].copy_from_slice(&1u32.to_le_bytes());
        let sum = checksum(&old[..META_CHECKSUM_AT]);
        old[META_CHECKSUM_AT..META_CHECKSUM_AT + 4].copy_from_slice(&sum.to_le_bytes());
        assert!(matches!(Meta::decode(&old), Ok(Some(_))));
    }

    #[test]
    fn node_checksum_detects_damage() {
        let mut p = vec![0u8; PAGE_SIZE];
        p[NODE_HEADER] = 42;
        seal_node(&mut p, PAGE_LEAF, 1, 9);
        assert!(open_node(&p, 5, &[PAGE_LEAF]).is_ok());
        assert!(open_node(&p, 5, &[PAGE_BRANCH]).is_err());
        p[100] ^= 1;
        assert!(open_node(&p, 5, &[PAGE_LEAF]).is_err());
    }
}
