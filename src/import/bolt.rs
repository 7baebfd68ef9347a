//! Read-only reader for bbolt database files (`go.etcd.io/bbolt`, file format
//! version 2, as written by bbolt 1.3.x), so that users of the Go
//! bitmapist-server can import its database.
//!
//! This module owns everything about that file format and nothing else: it
//! never writes, never maps the file, and calls only `std`. It reads:
//!
//! - the two meta pages (pages 0 and 1): magic `0xED0CDAED`, version 2 and the
//!   FNV-64a checksum of the first 56 bytes of the meta are verified (stricter
//!   than bbolt, which skips a zero checksum; bbolt always writes one); of the
//!   valid ones the one with the highest txid is used, as bbolt does. If meta 0
//!   is damaged, meta 1 is looked for at the common page sizes. The meta's
//!   page count must fit in the file, so a truncated copy is refused;
//! - branch and leaf pages, including values that spill into overflow pages;
//! - buckets: top-level buckets (in the root bucket whose page the meta names),
//!   nested buckets, and inline buckets (a bucket header with root page 0
//!   followed by a whole leaf page inside the parent's value).
//!
//! Nothing read from the file is trusted. Every page id is checked against the
//! meta's high-water mark and the file length, every element's offsets against
//! its page, every arithmetic step is checked, and a traversal refuses to visit
//! a page twice (which catches cycles and shared pages) or to descend more than
//! [`MAX_DEPTH`] levels. A truncated or corrupt file therefore gives a
//! [`BoltError`], never a panic or an endless loop, and no allocation is larger
//! than the file itself (the file is held in memory; keys and values are handed
//! out as slices of it). Iteration also checks that keys strictly increase and
//! lie within the ranges the branch keys above them give, so whatever a walk
//! yields, a lookup ([`BoltFile::get`]) finds the same.
//!
//! Nested buckets inside a top-level bucket are skipped by iteration (and
//! counted, [`BucketIter::nested_buckets_skipped`]); `get` of such a key gives
//! `None`, as bbolt's `Get` does. The Go server never nests buckets.
//!
//! Only little-endian files are read (bbolt writes native byte order; every
//! platform the Go server was shipped for is little-endian). A big-endian file
//! is recognised and refused with a clear message.
//!
//! The second half ([`read_go_database`]) knows the layout the Go
//! bitmapist-server (bbolt era) used inside the file: bucket `bitmapist` maps a
//! key to its bitmap in the portable Roaring format, bucket `expires` maps a key
//! to its expiry as a Go `binary.PutVarint` of Unix nanoseconds, and bucket
//! `aux` is a cache that is ignored.

use std::cmp::Ordering;
use std::fmt;
use std::io;
use std::path::Path;

/// bbolt's magic number, the first field of both meta pages.
const MAGIC: u32 = 0xED0C_DAED;
/// The only file format version bbolt has written since 1.0.
const VERSION: u32 = 2;
/// Page header: id u64, flags u16, count u16, overflow u32.
const PAGE_HEADER_SIZE: usize = 16;
/// Branch element (pos u32, ksize u32, pgid u64) and leaf element (flags u32,
/// pos u32, ksize u32, vsize u32) are both 16 bytes.
const ELEMENT_SIZE: usize = 16;
/// Bucket header stored as a bucket's value: root pgid u64, sequence u64.
const BUCKET_HEADER_SIZE: usize = 16;
/// Meta: magic, version, page size, flags (u32 each), root bucket header
/// (16 bytes), freelist pgid, pgid, txid, checksum (u64 each).
const META_SIZE: usize = 64;
/// The checksum covers the meta bytes before it.
const META_CHECKSUM_OFFSET: usize = 56;

const BRANCH_PAGE: u16 = 0x01;
const LEAF_PAGE: u16 = 0x02;
const META_PAGE: u16 = 0x04;
const FREELIST_PAGE: u16 = 0x10;
/// Leaf element flag: the value is a bucket header (plus an inline page).
const BUCKET_LEAF_FLAG: u32 = 0x01;
/// Freelist pgid used when the freelist is not synced to disk.
const NO_FREELIST: u64 = u64::MAX;

/// Smallest and largest page size accepted in a meta page.
const MIN_PAGE_SIZE: u32 = 512;
const MAX_PAGE_SIZE: u32 = 1 << 26;
/// Page sizes tried for meta page 1 when meta page 0 is unreadable.
const PAGE_SIZE_CANDIDATES: [u32; 8] = [4096, 16384, 65536, 8192, 32768, 2048, 1024, 512];

/// Deepest B+tree accepted. bbolt keeps at least two keys on every page, so a
/// real tree this deep would need more than 2^64 pages.
pub const MAX_DEPTH: usize = 64;

/// Why a bbolt file could not be read.
#[derive(Debug)]
pub enum BoltError {
    /// Reading the file failed (the message names the path).
    Io(io::Error),
    /// The file is not a bbolt database at all (no magic where it belongs).
    NotBolt(String),
    /// The file is a bbolt database but is truncated or damaged; the message
    /// says which page and what was wrong.
    Corrupt(String),
    /// The named top-level bucket does not exist.
    MissingBucket(String),
}

impl fmt::Display for BoltError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BoltError::Io(e) => write!(f, "{e}"),
            BoltError::NotBolt(m) => write!(f, "not a bbolt database: {m}"),
            BoltError::Corrupt(m) => write!(f, "bbolt database is corrupt: {m}"),
            BoltError::MissingBucket(b) => write!(f, "bbolt database has no bucket {b:?}"),
        }
    }
}

impl std::error::Error for BoltError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BoltError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for BoltError {
    fn from(e: io::Error) -> Self {
        BoltError::Io(e)
    }
}

fn corrupt(msg: impl Into<String>) -> BoltError {
    BoltError::Corrupt(msg.into())
}

/// Prefixes the message of a `Corrupt` error with where it was found.
fn in_context(e: BoltError, context: impl FnOnce() -> String) -> BoltError {
    match e {
        BoltError::Corrupt(m) => BoltError::Corrupt(format!("{}: {m}", context())),
        other => other,
    }
}

/// Shows a bucket or key name: as text when it is printable UTF-8.
fn show_name(name: &[u8]) -> String {
    match std::str::from_utf8(name) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_owned(),
        _ => {
            let mut out = String::from("0x");
            for b in name.iter().take(64) {
                out.push_str(&format!("{b:02x}"));
            }
            if name.len() > 64 {
                out.push_str("...");
            }
            out
        }
    }
}

fn read_u16(b: &[u8], off: usize) -> Option<u16> {
    let bytes = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes(bytes.try_into().ok()?))
}

fn read_u32(b: &[u8], off: usize) -> Option<u32> {
    let bytes = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

fn read_u64(b: &[u8], off: usize) -> Option<u64> {
    let bytes = b.get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// FNV-64a, the checksum bbolt keeps in each meta page.
fn fnv64a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Cheap sniff of a file's first bytes (its first 4 KiB are plenty): true when
/// meta page 0 carries bbolt's magic, i.e. this is (or was meant to be) a bbolt
/// file such as the Go bitmapist-server's database. When the slice is longer,
/// meta page 1 is also looked for at the usual page sizes.
pub fn is_bolt_file(first_page: &[u8]) -> bool {
    let magic_at = |page_offset: usize| {
        read_u32(first_page, page_offset + PAGE_HEADER_SIZE)
            .is_some_and(|m| m == MAGIC || m.swap_bytes() == MAGIC)
    };
    magic_at(0) || PAGE_SIZE_CANDIDATES.iter().any(|&ps| magic_at(ps as usize))
}

/// Decodes a Go `binary.PutVarint` encoding (zig-zag, then base-128 little
/// endian groups), as the Go server stored expiries. The slice must hold
/// exactly one varint, as the Go server wrote it; anything else (empty,
/// unterminated, overlong, trailing bytes, more than 64 bits) gives `None`.
/// Like Go's `binary.Varint`, non-minimal encodings are accepted.
pub fn decode_go_varint(bytes: &[u8]) -> Option<i64> {
    let mut ux: u64 = 0;
    let mut used = None;
    for (i, &b) in bytes.iter().enumerate() {
        if i == 10 {
            return None;
        }
        let shift = 7 * i as u32;
        if b < 0x80 {
            // The tenth byte may only carry the 64th bit.
            if i == 9 && b > 1 {
                return None;
            }
            ux |= u64::from(b) << shift;
            used = Some(i + 1);
            break;
        }
        ux |= u64::from(b & 0x7f) << shift;
    }
    if used? != bytes.len() {
        return None;
    }
    let x = (ux >> 1) as i64;
    Some(if ux & 1 != 0 { !x } else { x })
}

/// A validated meta page.
#[derive(Clone, Copy, Debug)]
struct Meta {
    page_size: u32,
    root: u64,
    freelist: u64,
    pgid: u64,
    txid: u64,
}

/// Why a meta page was rejected.
enum MetaProblem {
    /// No bbolt magic (or no bytes at all where the meta page belongs): the
    /// file may not be bbolt at all.
    NoMagic(String),
    /// Anything else.
    Invalid(String),
}

impl MetaProblem {
    fn describe(&self) -> String {
        match self {
            MetaProblem::NoMagic(m) => m.clone(),
            MetaProblem::Invalid(m) => m.clone(),
        }
    }
}

/// Reads and validates the meta page with id `id` at byte `offset`.
fn parse_meta(data: &[u8], offset: usize, id: u64) -> Result<Meta, MetaProblem> {
    let end = offset
        .checked_add(PAGE_HEADER_SIZE + META_SIZE)
        .ok_or_else(|| MetaProblem::NoMagic("offset overflows".into()))?;
    let page = data.get(offset..end).ok_or_else(|| {
        let has_magic = offset
            .checked_add(PAGE_HEADER_SIZE)
            .and_then(|at| read_u32(data, at))
            .is_some_and(|m| m == MAGIC || m.swap_bytes() == MAGIC);
        let problem = if has_magic {
            MetaProblem::Invalid
        } else {
            MetaProblem::NoMagic
        };
        problem(format!(
            "the file ends at byte {} (the meta page needs bytes {offset}..{end})",
            data.len()
        ))
    })?;
    let meta = &page[PAGE_HEADER_SIZE..];
    let field32 = |off| read_u32(meta, off).unwrap_or(0);
    let field64 = |off| read_u64(meta, off).unwrap_or(0);
    let magic = field32(0);
    if magic != MAGIC {
        if magic.swap_bytes() == MAGIC {
            return Err(MetaProblem::Invalid(
                "the file was written on a big-endian machine, which is not supported".into(),
            ));
        }
        return Err(MetaProblem::NoMagic(format!(
            "no bbolt magic number at byte {}",
            offset + PAGE_HEADER_SIZE
        )));
    }
    let version = field32(4);
    if version != VERSION {
        return Err(MetaProblem::Invalid(format!(
            "file format version {version}, expected {VERSION}"
        )));
    }
    let stored = field64(META_CHECKSUM_OFFSET);
    let computed = fnv64a(&meta[..META_CHECKSUM_OFFSET]);
    if stored != computed {
        return Err(MetaProblem::Invalid(format!(
            "checksum mismatch (stored {stored:#018x}, computed {computed:#018x})"
        )));
    }
    let page_id = read_u64(page, 0).unwrap_or(u64::MAX);
    let flags = read_u16(page, 8).unwrap_or(0);
    if flags != META_PAGE || page_id != id {
        return Err(MetaProblem::Invalid(format!(
            "page header says id {page_id}, flags {flags:#06x}; expected meta page {id}"
        )));
    }
    let page_size = field32(8);
    if !(MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&page_size) {
        return Err(MetaProblem::Invalid(format!(
            "page size {page_size} is outside {MIN_PAGE_SIZE}..={MAX_PAGE_SIZE}"
        )));
    }
    Ok(Meta {
        page_size,
        root: field64(16),
        freelist: field64(32),
        pgid: field64(40),
        txid: field64(48),
    })
}

/// A page (with its overflow pages) or an inline bucket's page, checked so
/// that its element array lies inside it.
#[derive(Clone, Copy)]
struct Page<'a> {
    /// `None` for an inline page.
    id: Option<u64>,
    flags: u16,
    count: usize,
    /// The whole page including its header and overflow pages.
    buf: &'a [u8],
}

/// One leaf element.
#[derive(Clone, Copy)]
struct LeafElem<'a> {
    key: &'a [u8],
    value: &'a [u8],
    is_bucket: bool,
}

impl<'a> Page<'a> {
    /// Parses a page header and checks that `count` elements fit.
    fn parse(buf: &'a [u8], id: Option<u64>) -> Result<Page<'a>, BoltError> {
        let describe = || match id {
            Some(id) => format!("page {id}"),
            None => "inline bucket page".to_owned(),
        };
        let (Some(flags), Some(count)) = (read_u16(buf, 8), read_u16(buf, 10)) else {
            return Err(corrupt(format!(
                "{}: {} bytes cannot hold a page header",
                describe(),
                buf.len()
            )));
        };
        let count = usize::from(count);
        if flags == BRANCH_PAGE || flags == LEAF_PAGE {
            let needed = PAGE_HEADER_SIZE + count * ELEMENT_SIZE;
            if needed > buf.len() {
                return Err(corrupt(format!(
                    "{}: {count} elements need {needed} bytes, the page has {}",
                    describe(),
                    buf.len()
                )));
            }
        }
        Ok(Page {
            id,
            flags,
            count,
            buf,
        })
    }

    fn describe(&self) -> String {
        match self.id {
            Some(id) => format!("page {id}"),
            None => "inline bucket page".to_owned(),
        }
    }

    fn is_branch(&self) -> bool {
        self.flags == BRANCH_PAGE
    }

    /// The bytes `pos..pos+len` counted from element `i`'s own offset.
    fn element_bytes(
        &self,
        i: usize,
        pos: u32,
        len: u32,
        what: &str,
    ) -> Result<&'a [u8], BoltError> {
        // Element offsets are below 16 + 65535 * 16; u64 holds the sums.
        let elem = (PAGE_HEADER_SIZE + i * ELEMENT_SIZE) as u64;
        let start = elem + u64::from(pos);
        let end = start + u64::from(len);
        let range = usize::try_from(start).ok().zip(usize::try_from(end).ok());
        range.and_then(|(s, e)| self.buf.get(s..e)).ok_or_else(|| {
            corrupt(format!(
                "{}: element {i}: {what} at {start}..{end} runs past the end of the page ({} bytes)",
                self.describe(),
                self.buf.len()
            ))
        })
    }

    fn element_field(&self, i: usize, field: usize) -> Result<u32, BoltError> {
        if i >= self.count {
            return Err(corrupt(format!("{}: no element {i}", self.describe())));
        }
        read_u32(self.buf, PAGE_HEADER_SIZE + i * ELEMENT_SIZE + field).ok_or_else(|| {
            corrupt(format!(
                "{}: element {i} lies outside the page",
                self.describe()
            ))
        })
    }

    /// Branch element `i`: its key and child page id.
    fn branch(&self, i: usize) -> Result<(&'a [u8], u64), BoltError> {
        let pos = self.element_field(i, 0)?;
        let ksize = self.element_field(i, 4)?;
        let lo = self.element_field(i, 8)?;
        let hi = self.element_field(i, 12)?;
        let child = u64::from(lo) | (u64::from(hi) << 32);
        let key = self.element_bytes(i, pos, ksize, "key")?;
        Ok((key, child))
    }

    /// Leaf element `i`.
    fn leaf(&self, i: usize) -> Result<LeafElem<'a>, BoltError> {
        let flags = self.element_field(i, 0)?;
        let pos = self.element_field(i, 4)?;
        let ksize = self.element_field(i, 8)?;
        let vsize = self.element_field(i, 12)?;
        let both = u32::try_from(u64::from(ksize) + u64::from(vsize)).map_err(|_| {
            corrupt(format!(
                "{}: element {i}: key size {ksize} + value size {vsize} overflow",
                self.describe()
            ))
        })?;
        let kv = self.element_bytes(i, pos, both, "key and value")?;
        let (key, value) = kv.split_at(ksize as usize);
        Ok(LeafElem {
            key,
            value,
            is_bucket: flags & BUCKET_LEAF_FLAG != 0,
        })
    }
}

/// Where a bucket's tree starts.
#[derive(Clone, Copy)]
enum Root<'a> {
    /// A page of the file.
    Page(u64),
    /// An inline bucket: a leaf page stored inside the parent's value.
    Inline(&'a [u8]),
}

/// Interprets a bucket's value (bucket header, maybe followed by an inline page).
fn bucket_root(value: &[u8]) -> Result<Root<'_>, BoltError> {
    let root = read_u64(value, 0).ok_or_else(|| {
        corrupt(format!(
            "bucket header is {} bytes, needs {BUCKET_HEADER_SIZE}",
            value.len()
        ))
    })?;
    if root == 0 {
        Ok(Root::Inline(value.get(BUCKET_HEADER_SIZE..).unwrap_or(&[])))
    } else {
        Ok(Root::Page(root))
    }
}

/// Pages already visited by one traversal (one bit per page id).
struct Visited {
    bits: Vec<u64>,
}

impl Visited {
    fn new() -> Visited {
        Visited { bits: Vec::new() }
    }

    /// Marks pages `first..=last` (all below `page_count`, which is bounded by
    /// the file length); fails if one was already marked.
    fn mark(&mut self, first: u64, last: u64, page_count: u64) -> Result<(), BoltError> {
        if self.bits.is_empty() {
            // page_count <= file length / page size, so this is small.
            let words = usize::try_from(page_count.div_ceil(64))
                .map_err(|_| corrupt("page count does not fit in memory"))?;
            self.bits = vec![0; words];
        }
        for id in first..=last {
            let word = self
                .bits
                .get_mut((id / 64) as usize)
                .ok_or_else(|| corrupt(format!("page {id} is past the last page")))?;
            let bit = 1u64 << (id % 64);
            if *word & bit != 0 {
                return Err(corrupt(format!(
                    "page {id} is reached twice (a cycle or a page shared between trees)"
                )));
            }
            *word |= bit;
        }
        Ok(())
    }
}

/// A bbolt database file, read fully into memory and validated at the meta
/// level; pages are checked as they are read.
pub struct BoltFile {
    data: Vec<u8>,
    meta: Meta,
    /// Which meta page (0 or 1) is in use.
    meta_page: u8,
}

impl fmt::Debug for BoltFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoltFile")
            .field("len", &self.data.len())
            .field("page_size", &self.meta.page_size)
            .field("txid", &self.meta.txid)
            .field("meta_page", &self.meta_page)
            .finish()
    }
}

impl BoltFile {
    /// Reads the whole file at `path` (read-only) and validates its meta pages.
    pub fn open(path: &Path) -> Result<BoltFile, BoltError> {
        let bytes = std::fs::read(path)
            .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", path.display())))?;
        BoltFile::from_bytes(bytes).map_err(|e| match e {
            BoltError::NotBolt(m) => BoltError::NotBolt(format!("{}: {m}", path.display())),
            BoltError::Corrupt(m) => BoltError::Corrupt(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Validates the meta pages of a file already in memory.
    pub fn from_bytes(data: Vec<u8>) -> Result<BoltFile, BoltError> {
        let meta0 = parse_meta(&data, 0, 0);
        // Where is meta page 1? One page size after meta 0 — known from a valid
        // meta 0, otherwise tried at the usual page sizes.
        let candidates: Vec<u32> = match &meta0 {
            Ok(m) => vec![m.page_size],
            Err(_) => PAGE_SIZE_CANDIDATES.to_vec(),
        };
        let mut meta1: Result<Meta, MetaProblem> =
            Err(MetaProblem::NoMagic("no page size to try".into()));
        for ps in candidates {
            let found = match parse_meta(&data, ps as usize, 1) {
                Ok(m) if m.page_size == ps => Ok(m),
                Ok(m) => Err(MetaProblem::Invalid(format!(
                    "it says page size {} but sits at offset {ps}",
                    m.page_size
                ))),
                Err(p) => Err(p),
            };
            // Keep a valid meta, else the first problem that is not merely a
            // missing magic number.
            match (&meta1, found) {
                (_, Ok(m)) => {
                    meta1 = Ok(m);
                    break;
                }
                (Err(MetaProblem::NoMagic(_)), Err(p @ MetaProblem::Invalid(_))) => meta1 = Err(p),
                _ => {}
            }
        }
        let (meta, meta_page) = match (&meta0, &meta1) {
            (Ok(a), Ok(b)) => {
                if b.txid > a.txid {
                    (*b, 1)
                } else {
                    (*a, 0)
                }
            }
            (Ok(a), Err(_)) => (*a, 0),
            (Err(_), Ok(b)) => (*b, 1),
            (Err(MetaProblem::NoMagic(m0)), Err(MetaProblem::NoMagic(_))) => {
                return Err(BoltError::NotBolt(format!(
                    "neither meta page carries bbolt's magic number (meta page 0: {m0})"
                )));
            }
            (Err(p0), Err(p1)) => {
                return Err(corrupt(format!(
                    "both meta pages are invalid: meta page 0: {}; meta page 1: {}",
                    p0.describe(),
                    p1.describe()
                )));
            }
        };
        let file = BoltFile {
            data,
            meta,
            meta_page,
        };
        file.check_meta()?;
        Ok(file)
    }

    /// Checks the chosen meta against the file.
    fn check_meta(&self) -> Result<(), BoltError> {
        let m = &self.meta;
        let here = || format!("meta page {} (txid {})", self.meta_page, m.txid);
        let len = self.data.len() as u128;
        let needed = u128::from(m.pgid) * u128::from(m.page_size);
        if needed > len {
            return Err(corrupt(format!(
                "{}: the file is truncated: it should hold {} pages of {} bytes ({needed} bytes) but has {len} bytes",
                here(),
                m.pgid,
                m.page_size
            )));
        }
        if m.root < 2 || m.root >= m.pgid {
            return Err(corrupt(format!(
                "{}: root page {} is not a data page (the file has {} pages)",
                here(),
                m.root,
                m.pgid
            )));
        }
        if m.freelist != NO_FREELIST && (m.freelist < 2 || m.freelist >= m.pgid) {
            return Err(corrupt(format!(
                "{}: freelist page {} is not a data page (the file has {} pages)",
                here(),
                m.freelist,
                m.pgid
            )));
        }
        Ok(())
    }

    /// Page size in bytes, from the meta page in use.
    pub fn page_size(&self) -> u32 {
        self.meta.page_size
    }

    /// Transaction id of the meta page in use (the last committed write).
    pub fn txid(&self) -> u64 {
        self.meta.txid
    }

    /// Number of pages in use (the meta's high-water mark); the file may be
    /// longer.
    pub fn page_count(&self) -> u64 {
        self.meta.pgid
    }

    /// Which meta page is in use: 0 or 1.
    pub fn meta_page(&self) -> u8 {
        self.meta_page
    }

    /// Page `id` (with its overflow pages) as a branch or leaf page of a tree.
    /// With `visited`, refuses a page the traversal has already seen.
    fn tree_page(&self, id: u64, visited: Option<&mut Visited>) -> Result<Page<'_>, BoltError> {
        let pgid = self.meta.pgid;
        if id < 2 {
            return Err(corrupt(format!("page id {id} points at a meta page")));
        }
        if id >= pgid {
            return Err(corrupt(format!(
                "page id {id} is past the end of the database ({pgid} pages)"
            )));
        }
        // Byte offset of page `n` (never out of range for n <= pgid, since
        // pgid pages fit in the file, but checked all the same).
        let ps = u64::from(self.meta.page_size);
        let byte_at = |n: u64| n.checked_mul(ps).and_then(|b| usize::try_from(b).ok());
        let past_end = || corrupt(format!("page {id} is past the end of the file"));
        let offset = byte_at(id).ok_or_else(past_end)?;
        let header = offset
            .checked_add(PAGE_HEADER_SIZE)
            .and_then(|end| self.data.get(offset..end))
            .ok_or_else(past_end)?;
        let stored_id = read_u64(header, 0).unwrap_or(u64::MAX);
        let flags = read_u16(header, 8).unwrap_or(0);
        let overflow = read_u32(header, 12).unwrap_or(0);
        if stored_id != id {
            return Err(corrupt(format!(
                "page {id}: its header says it is page {stored_id}"
            )));
        }
        if flags != BRANCH_PAGE && flags != LEAF_PAGE {
            let kind = match flags {
                META_PAGE => "a meta page".to_owned(),
                FREELIST_PAGE => "a freelist page".to_owned(),
                f => format!("flags {f:#06x}"),
            };
            return Err(corrupt(format!(
                "page {id}: expected a branch or leaf page, found {kind}"
            )));
        }
        let last = id.saturating_add(u64::from(overflow));
        if last >= pgid {
            return Err(corrupt(format!(
                "page {id}: its {overflow} overflow pages run past the end of the database ({pgid} pages)"
            )));
        }
        if let Some(visited) = visited {
            visited.mark(id, last, pgid)?;
        }
        let bytes = byte_at(last + 1)
            .and_then(|end| self.data.get(offset..end))
            .ok_or_else(past_end)?;
        let page = Page::parse(bytes, Some(id))?;
        if page.is_branch() && page.count == 0 {
            return Err(corrupt(format!("page {id}: branch page without elements")));
        }
        Ok(page)
    }

    /// The first page of a bucket's tree.
    fn root_page<'a>(
        &'a self,
        root: Root<'a>,
        visited: Option<&mut Visited>,
    ) -> Result<Page<'a>, BoltError> {
        match root {
            Root::Page(id) => self.tree_page(id, visited),
            Root::Inline(buf) => {
                let page = Page::parse(buf, None)?;
                if page.flags != LEAF_PAGE {
                    return Err(corrupt(format!(
                        "inline bucket page has flags {:#06x}, expected a leaf page",
                        page.flags
                    )));
                }
                Ok(page)
            }
        }
    }

    /// Looks `key` up in the tree starting at `root`.
    fn search<'a>(&'a self, root: Root<'a>, key: &[u8]) -> Result<Option<LeafElem<'a>>, BoltError> {
        let mut page = self.root_page(root, None)?;
        for _ in 0..=MAX_DEPTH {
            if !page.is_branch() {
                let (mut lo, mut hi) = (0, page.count);
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    let elem = page.leaf(mid)?;
                    match elem.key.cmp(key) {
                        Ordering::Less => lo = mid + 1,
                        Ordering::Greater => hi = mid,
                        Ordering::Equal => return Ok(Some(elem)),
                    }
                }
                return Ok(None);
            }
            // The child to follow is the last whose first key is <= key (or
            // the first child when key sorts before all of them).
            let (mut lo, mut hi) = (0, page.count);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                let (k, _) = page.branch(mid)?;
                if k <= key {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            let index = lo.saturating_sub(1);
            let (_, child) = page.branch(index)?;
            let parent = page.describe();
            page = self
                .tree_page(child, None)
                .map_err(|e| in_context(e, || format!("{parent}, element {index}")))?;
        }
        Err(corrupt(format!(
            "the tree is deeper than {MAX_DEPTH} levels (a cycle of branch pages?)"
        )))
    }

    /// The root of top-level bucket `name`.
    fn top_bucket(&self, name: &[u8]) -> Result<Root<'_>, BoltError> {
        let elem = self
            .search(Root::Page(self.meta.root), name)
            .map_err(|e| in_context(e, || "root bucket".to_owned()))?
            .ok_or_else(|| BoltError::MissingBucket(show_name(name)))?;
        if !elem.is_bucket {
            return Err(corrupt(format!(
                "root bucket: key {:?} is not a bucket",
                show_name(name)
            )));
        }
        bucket_root(elem.value)
            .map_err(|e| in_context(e, || format!("bucket {:?}", show_name(name))))
    }

    /// Names of the top-level buckets, in key order.
    pub fn buckets(&self) -> Result<Vec<Vec<u8>>, BoltError> {
        let mut names = Vec::new();
        let mut iter = RawIter::new(self, Root::Page(self.meta.root))
            .map_err(|e| in_context(e, || "root bucket".to_owned()))?;
        while let Some(elem) = iter.next_elem() {
            let elem = elem.map_err(|e| in_context(e, || "root bucket".to_owned()))?;
            if !elem.is_bucket {
                return Err(corrupt(format!(
                    "root bucket: key {:?} is not a bucket",
                    show_name(elem.key)
                )));
            }
            names.push(elem.key.to_vec());
        }
        Ok(names)
    }

    /// Whether top-level bucket `name` exists.
    pub fn has_bucket(&self, name: &[u8]) -> Result<bool, BoltError> {
        match self.top_bucket(name) {
            Ok(_) => Ok(true),
            Err(BoltError::MissingBucket(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Iterates over the key/value pairs of top-level bucket `bucket` in key
    /// order, borrowing from the file. Nested buckets inside it are skipped
    /// (and counted: [`BucketIter::nested_buckets_skipped`]). After an error
    /// the iterator ends.
    pub fn iter(&self, bucket: &[u8]) -> Result<BucketIter<'_>, BoltError> {
        let root = self.top_bucket(bucket)?;
        let name = show_name(bucket);
        let raw =
            RawIter::new(self, root).map_err(|e| in_context(e, || format!("bucket {name:?}")))?;
        Ok(BucketIter {
            raw,
            name,
            nested: 0,
        })
    }

    /// Visits every key/value of top-level bucket `bucket` in key order.
    /// Nested buckets inside it are skipped. Stops at the first error, from
    /// the file or from `visit`.
    pub fn for_each(
        &self,
        bucket: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), BoltError>,
    ) -> Result<(), BoltError> {
        for item in self.iter(bucket)? {
            let (k, v) = item?;
            visit(k, v)?;
        }
        Ok(())
    }

    /// The value of `key` in top-level bucket `bucket`, borrowed from the file.
    /// `None` when the key is absent or names a nested bucket (as bbolt's
    /// `Get` does).
    pub fn get_ref(&self, bucket: &[u8], key: &[u8]) -> Result<Option<&[u8]>, BoltError> {
        let root = self.top_bucket(bucket)?;
        let elem = self
            .search(root, key)
            .map_err(|e| in_context(e, || format!("bucket {:?}", show_name(bucket))))?;
        Ok(elem.filter(|e| !e.is_bucket).map(|e| e.value))
    }

    /// The value of `key` in top-level bucket `bucket`; see [`BoltFile::get_ref`].
    pub fn get(&self, bucket: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>, BoltError> {
        Ok(self.get_ref(bucket, key)?.map(<[u8]>::to_vec))
    }
}

/// One page on a traversal's path, with the next element to visit and the key
/// range its subtree may hold (from the branch keys above it).
#[derive(Clone, Copy)]
struct Frame<'a> {
    page: Page<'a>,
    next: usize,
    /// Keys must be >= this (when set)...
    low: Option<&'a [u8]>,
    /// ...and < this (when set).
    high: Option<&'a [u8]>,
}

/// Depth-first walk of one bucket's tree, yielding leaf elements in key order
/// (nested buckets included). It checks that keys strictly increase, that the
/// keys of each branch page increase, and that every key lies in the range
/// the branch keys above it give its subtree; so every key it yields is also
/// what [`BoltFile::search`] finds.
struct RawIter<'a> {
    file: &'a BoltFile,
    /// Pages from the root down.
    stack: Vec<Frame<'a>>,
    visited: Visited,
    prev_key: Option<&'a [u8]>,
}

impl<'a> RawIter<'a> {
    fn new(file: &'a BoltFile, root: Root<'a>) -> Result<RawIter<'a>, BoltError> {
        let mut visited = Visited::new();
        let page = file.root_page(root, Some(&mut visited))?;
        Ok(RawIter {
            file,
            stack: vec![Frame {
                page,
                next: 0,
                low: None,
                high: None,
            }],
            visited,
            prev_key: None,
        })
    }

    fn fail(&mut self, e: BoltError) -> Option<Result<LeafElem<'a>, BoltError>> {
        self.stack.clear();
        Some(Err(e))
    }

    /// The frame for child `i` of branch frame `parent`.
    fn descend(&mut self, parent: &Frame<'a>, i: usize) -> Result<Frame<'a>, BoltError> {
        let page = parent.page;
        let (key, child) = page.branch(i)?;
        let mut low = parent.low;
        if i > 0 {
            low = Some(low.map_or(key, |l| l.max(key)));
        }
        let mut high = parent.high;
        if i + 1 < page.count {
            let (next_key, _) = page.branch(i + 1)?;
            if next_key <= key {
                return Err(corrupt(format!(
                    "{}: branch keys {i} and {} are out of order",
                    page.describe(),
                    i + 1
                )));
            }
            high = Some(high.map_or(next_key, |h| h.min(next_key)));
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(corrupt(format!(
                "{}: the tree is deeper than {MAX_DEPTH} levels",
                page.describe()
            )));
        }
        let child_page = self
            .file
            .tree_page(child, Some(&mut self.visited))
            .map_err(|e| in_context(e, || format!("{}, element {i}", page.describe())))?;
        Ok(Frame {
            page: child_page,
            next: 0,
            low,
            high,
        })
    }

    fn next_elem(&mut self) -> Option<Result<LeafElem<'a>, BoltError>> {
        loop {
            let top = self.stack.last_mut()?;
            if top.next >= top.page.count {
                self.stack.pop();
                continue;
            }
            let i = top.next;
            top.next += 1;
            let frame = *top;
            if frame.page.is_branch() {
                match self.descend(&frame, i) {
                    Ok(child) => self.stack.push(child),
                    Err(e) => return self.fail(e),
                }
                continue;
            }
            let elem = match frame.page.leaf(i) {
                Ok(elem) => elem,
                Err(e) => return self.fail(e),
            };
            let out_of_range = frame.low.is_some_and(|l| elem.key < l)
                || frame.high.is_some_and(|h| elem.key >= h);
            if out_of_range {
                return self.fail(corrupt(format!(
                    "{}, element {i}: key {:?} lies outside the range of the branch keys above it",
                    frame.page.describe(),
                    show_name(elem.key)
                )));
            }
            if let Some(prev) = self.prev_key {
                if elem.key <= prev {
                    return self.fail(corrupt(format!(
                        "{}, element {i}: key {:?} does not sort after the previous key {:?}",
                        frame.page.describe(),
                        show_name(elem.key),
                        show_name(prev)
                    )));
                }
            }
            self.prev_key = Some(elem.key);
            return Some(Ok(elem));
        }
    }
}

/// Iterator over a top-level bucket's key/value pairs; see [`BoltFile::iter`].
pub struct BucketIter<'a> {
    raw: RawIter<'a>,
    name: String,
    nested: u64,
}

impl fmt::Debug for BucketIter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BucketIter")
            .field("bucket", &self.name)
            .field("nested_buckets_skipped", &self.nested)
            .finish_non_exhaustive()
    }
}

impl BucketIter<'_> {
    /// How many nested buckets were skipped so far.
    pub fn nested_buckets_skipped(&self) -> u64 {
        self.nested
    }
}

impl<'a> Iterator for BucketIter<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), BoltError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.raw.next_elem()? {
                Ok(elem) if elem.is_bucket => self.nested += 1,
                Ok(elem) => return Some(Ok((elem.key, elem.value))),
                Err(e) => {
                    let name = &self.name;
                    return Some(Err(in_context(e, || format!("bucket {name:?}"))));
                }
            }
        }
    }
}

/// Bucket of the Go bitmapist-server holding key name -> portable Roaring bitmap.
pub const GO_BITMAPS_BUCKET: &[u8] = b"bitmapist";
/// Bucket of the Go bitmapist-server holding key name -> expiry (Go varint of
/// Unix nanoseconds).
pub const GO_EXPIRES_BUCKET: &[u8] = b"expires";

/// One key of the Go bitmapist-server's database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoEntry {
    /// The key name (arbitrary bytes).
    pub key: Vec<u8>,
    /// The bitmap in the portable Roaring format (Go `ToBytes`), undecoded.
    pub bitmap: Vec<u8>,
    /// When the key expires, in Unix nanoseconds; `None` when it does not.
    /// Already-past expiries are passed on as they are: the caller decides.
    pub expire_unix_nanos: Option<i64>,
}

/// What [`read_go_database`] saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GoStats {
    /// Keys visited (entries of bucket `bitmapist`).
    pub keys: u64,
    /// Of those, keys with an expiry.
    pub with_expiry: u64,
    /// Entries of bucket `expires` whose key has no bitmap; they are ignored
    /// (the key does not exist).
    pub orphan_expiries: u64,
    /// Nested buckets found inside `bitmapist` or `expires` (the Go server
    /// never makes them); they are skipped.
    pub nested_buckets_skipped: u64,
}

/// Reads the Go bitmapist-server's layout: visits every key of bucket
/// `bitmapist` in key order together with its expiry from bucket `expires`
/// (merge-joined, both being in key order). A missing `bitmapist` bucket is
/// an error ([`BoltError::MissingBucket`]: not a bitmapist-server database); a
/// missing `expires` bucket means no key expires. An expiry that is not a
/// valid Go varint is reported as corruption. Bucket `aux` is not read.
pub fn read_go_database(
    file: &BoltFile,
    mut visit: impl FnMut(GoEntry) -> Result<(), BoltError>,
) -> Result<GoStats, BoltError> {
    let mut stats = GoStats::default();
    let mut bitmaps = file.iter(GO_BITMAPS_BUCKET)?;
    let mut expires = if file.has_bucket(GO_EXPIRES_BUCKET)? {
        Some(file.iter(GO_EXPIRES_BUCKET)?)
    } else {
        None
    };
    let mut next_expiry = || match expires.as_mut() {
        None => Ok(None),
        Some(it) => it.next().transpose(),
    };
    let mut pending = next_expiry()?;
    for item in bitmaps.by_ref() {
        let (key, bitmap) = item?;
        // Expiries of keys sorting before this one have no bitmap.
        while let Some((ekey, _)) = pending {
            if ekey >= key {
                break;
            }
            stats.orphan_expiries += 1;
            pending = next_expiry()?;
        }
        let mut expire_unix_nanos = None;
        if let Some((ekey, evalue)) = pending {
            if ekey == key {
                let nanos = decode_go_varint(evalue).ok_or_else(|| {
                    corrupt(format!(
                        "bucket \"expires\": key {:?}: value {:02x?} is not a Go varint",
                        show_name(key),
                        &evalue[..evalue.len().min(16)]
                    ))
                })?;
                expire_unix_nanos = Some(nanos);
                stats.with_expiry += 1;
                pending = next_expiry()?;
            }
        }
        stats.keys += 1;
        visit(GoEntry {
            key: key.to_vec(),
            bitmap: bitmap.to_vec(),
            expire_unix_nanos,
        })?;
    }
    while pending.is_some() {
        stats.orphan_expiries += 1;
        pending = next_expiry()?;
    }
    stats.nested_buckets_skipped = bitmaps.nested_buckets_skipped()
        + expires
            .as_ref()
            .map_or(0, BucketIter::nested_buckets_skipped);
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use roaring::RoaringBitmap;
    use std::collections::BTreeMap;

    // ---------------------------------------------------------------- fixture

    const FIXTURE_DIR: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/go-bitmapist-server"
    );
    /// Pages in use in the fixture (its meta's high-water mark).
    const FIXTURE_PAGES: usize = 62;

    fn fixture_bytes() -> Vec<u8> {
        let path = format!("{FIXTURE_DIR}/bitmapist.db");
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading fixture {path}: {e}"))
    }

    fn fixture() -> BoltFile {
        BoltFile::from_bytes(fixture_bytes()).unwrap()
    }

    /// Just enough JSON for expected.json.
    #[derive(Debug)]
    enum Json {
        Num(u64),
        Str(String),
        Arr(Vec<Json>),
        Obj(Vec<(String, Json)>),
        Lit,
    }

    impl Json {
        fn get(&self, key: &str) -> Option<&Json> {
            match self {
                Json::Obj(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
                _ => None,
            }
        }
        fn num(&self) -> u64 {
            match self {
                Json::Num(n) => *n,
                other => panic!("not a number: {other:?}"),
            }
        }
        fn arr(&self) -> &[Json] {
            match self {
                Json::Arr(a) => a,
                other => panic!("not an array: {other:?}"),
            }
        }
        fn obj(&self) -> &[(String, Json)] {
            match self {
                Json::Obj(o) => o,
                other => panic!("not an object: {other:?}"),
            }
        }
        fn str(&self) -> &str {
            match self {
                Json::Str(s) => s,
                other => panic!("not a string: {other:?}"),
            }
        }
    }

    struct JsonParser<'a> {
        s: &'a [u8],
        i: usize,
    }

    impl JsonParser<'_> {
        fn ws(&mut self) {
            while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
                self.i += 1;
            }
        }
        fn eat(&mut self, c: u8) -> bool {
            self.ws();
            if self.s.get(self.i) == Some(&c) {
                self.i += 1;
                true
            } else {
                false
            }
        }
        fn value(&mut self) -> Json {
            self.ws();
            match self.s[self.i] {
                b'{' => {
                    self.i += 1;
                    let mut fields = Vec::new();
                    if !self.eat(b'}') {
                        loop {
                            self.ws();
                            let k = self.string();
                            assert!(self.eat(b':'));
                            fields.push((k, self.value()));
                            if self.eat(b'}') {
                                break;
                            }
                            assert!(self.eat(b','));
                        }
                    }
                    Json::Obj(fields)
                }
                b'[' => {
                    self.i += 1;
                    let mut items = Vec::new();
                    if !self.eat(b']') {
                        loop {
                            items.push(self.value());
                            if self.eat(b']') {
                                break;
                            }
                            assert!(self.eat(b','));
                        }
                    }
                    Json::Arr(items)
                }
                b'"' => Json::Str(self.string()),
                b'0'..=b'9' => {
                    let start = self.i;
                    while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                        self.i += 1;
                    }
                    let text = std::str::from_utf8(&self.s[start..self.i]).unwrap();
                    Json::Num(text.parse().unwrap())
                }
                b't' | b'f' | b'n' => {
                    while self.i < self.s.len() && self.s[self.i].is_ascii_alphabetic() {
                        self.i += 1;
                    }
                    Json::Lit
                }
                c => panic!("unexpected JSON byte {c:?} at {}", self.i),
            }
        }
        fn string(&mut self) -> String {
            assert_eq!(self.s[self.i], b'"');
            self.i += 1;
            let mut out = Vec::new();
            loop {
                let c = self.s[self.i];
                self.i += 1;
                match c {
                    b'"' => break,
                    b'\\' => {
                        let e = self.s[self.i];
                        self.i += 1;
                        match e {
                            b'n' => out.push(b'\n'),
                            b't' => out.push(b'\t'),
                            b'r' => out.push(b'\r'),
                            b'b' => out.push(8),
                            b'f' => out.push(12),
                            b'u' => {
                                let hex = std::str::from_utf8(&self.s[self.i..self.i + 4]).unwrap();
                                self.i += 4;
                                let ch = char::from_u32(u32::from_str_radix(hex, 16).unwrap())
                                    .unwrap_or('\u{fffd}');
                                out.extend_from_slice(ch.to_string().as_bytes());
                            }
                            other => out.push(other),
                        }
                    }
                    other => out.push(other),
                }
            }
            String::from_utf8(out).unwrap()
        }
    }

    fn expected() -> Json {
        let text = std::fs::read(format!("{FIXTURE_DIR}/expected.json")).unwrap();
        JsonParser { s: &text, i: 0 }.value()
    }

    /// A bucket's name and its key/value pairs.
    type BucketDump = (Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

    /// Everything a file yields through the public API.
    #[derive(Debug, PartialEq)]
    struct Snapshot {
        buckets: Vec<BucketDump>,
        go: Option<(Vec<GoEntry>, GoStats)>,
    }

    /// Reads `bytes` through every entry point. Never panics on a bad file;
    /// when the file reads, checks that what it yields is consistent: keys in
    /// order, `get` finds every key with the same value, the Go layer agrees
    /// with the buckets.
    fn exercise(bytes: Vec<u8>) -> Result<Snapshot, BoltError> {
        let sniffed = is_bolt_file(&bytes);
        let file = BoltFile::from_bytes(bytes)?;
        assert!(sniffed, "opened a file the sniff rejects");
        let mut buckets = Vec::new();
        for name in file.buckets()? {
            let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            file.for_each(&name, |k, v| {
                entries.push((k.to_vec(), v.to_vec()));
                Ok(())
            })?;
            for pair in entries.windows(2) {
                assert!(pair[0].0 < pair[1].0, "keys out of order");
            }
            for (k, v) in &entries {
                assert_eq!(
                    file.get(&name, k)?.as_ref(),
                    Some(v),
                    "get disagrees with for_each"
                );
            }
            buckets.push((name, entries));
        }
        let go = if file.has_bucket(GO_BITMAPS_BUCKET)? {
            let mut entries = Vec::new();
            let stats = read_go_database(&file, |e| {
                entries.push(e);
                Ok(())
            })?;
            let raw = &buckets
                .iter()
                .find(|(n, _)| n == GO_BITMAPS_BUCKET)
                .expect("bitmapist bucket listed")
                .1;
            assert_eq!(entries.len(), raw.len());
            for (e, (k, v)) in entries.iter().zip(raw) {
                assert_eq!((&e.key, &e.bitmap), (k, v));
                let expiry = file.get(GO_EXPIRES_BUCKET, k).or_else(|e| match e {
                    BoltError::MissingBucket(_) => Ok(None),
                    e => Err(e),
                })?;
                assert_eq!(
                    e.expire_unix_nanos,
                    expiry.map(|v| decode_go_varint(&v).unwrap())
                );
            }
            Some((entries, stats))
        } else {
            None
        };
        Ok(Snapshot { buckets, go })
    }

    #[test]
    fn fixture_layout() {
        let file = fixture();
        assert_eq!(file.page_size(), 4096);
        assert_eq!(file.txid(), 6);
        assert_eq!(file.meta_page(), 0);
        assert_eq!(file.page_count(), FIXTURE_PAGES as u64);
        assert_eq!(
            file.buckets().unwrap(),
            vec![b"aux".to_vec(), b"bitmapist".to_vec(), b"expires".to_vec()]
        );
        // The structures the reader must handle all occur in the fixture:
        // a branch root, overflow pages and an inline bucket.
        let Root::Page(root) = file.top_bucket(b"bitmapist").unwrap() else {
            panic!("bitmapist is not inline")
        };
        assert!(file.tree_page(root, None).unwrap().is_branch());
        assert!(matches!(
            file.top_bucket(b"expires").unwrap(),
            Root::Inline(_)
        ));
        let mut overflowing = 0;
        let mut it = RawIter::new(&file, Root::Page(root)).unwrap();
        while let Some(e) = it.next_elem() {
            let e = e.unwrap();
            overflowing += usize::from(e.value.len() > 4096);
        }
        assert!(overflowing >= 1);
        let max_value = file
            .iter(b"bitmapist")
            .unwrap()
            .map(|r| r.unwrap().1.len())
            .max();
        assert!(max_value.unwrap() > 2 * 4096);
        assert!(file.get(b"aux", b"keys").unwrap().is_some());
    }

    #[test]
    fn fixture_matches_expected_json() {
        let file = fixture();
        let expected = expected();
        let mut got: BTreeMap<String, (RoaringBitmap, Option<i64>)> = BTreeMap::new();
        let stats = read_go_database(&file, |e| {
            let bm = RoaringBitmap::deserialize_from(&e.bitmap[..])
                .map_err(|err| corrupt(format!("{:?}: {err}", show_name(&e.key))))?;
            got.insert(String::from_utf8(e.key).unwrap(), (bm, e.expire_unix_nanos));
            Ok(())
        })
        .unwrap();
        let keys = expected.get("keys").unwrap().obj();
        assert_eq!(keys.len(), 306);
        assert_eq!(got.len(), 306);
        assert_eq!(
            stats,
            GoStats {
                keys: 306,
                with_expiry: 1,
                orphan_expiries: 0,
                nested_buckets_skipped: 0
            }
        );
        // 2026-11-23T00:00:00Z and ten years of 365 days.
        let set_day: i64 = 1_795_392_000;
        let ten_years: i64 = 10 * 365 * 86_400;
        for (name, want) in keys {
            let (bm, expiry) = got
                .get(name)
                .unwrap_or_else(|| panic!("missing key {name}"));
            let count = want.get("count").unwrap().num();
            assert_eq!(bm.len(), count, "{name}: count");
            assert_eq!(
                u64::from(bm.max().unwrap()),
                want.get("max").unwrap().num(),
                "{name}: max"
            );
            let bits: Vec<u64> = want
                .get("bits")
                .unwrap()
                .arr()
                .iter()
                .map(Json::num)
                .collect();
            let all: Vec<u64> = bm.iter().map(u64::from).collect();
            if count <= 100 {
                assert_eq!(all, bits, "{name}: bits");
            } else {
                assert_eq!(bits.len(), 100);
                assert_eq!(all[..50], bits[..50], "{name}: first bits");
                assert_eq!(all[all.len() - 50..], bits[50..], "{name}: last bits");
            }
            match (want.get("ttl"), expiry) {
                (None, None) => {}
                (Some(ttl), Some(nanos)) => {
                    assert!(ttl.str().contains("10 years"));
                    // Set on 2026-11-23 (some time that day) for ten years.
                    let secs = nanos / 1_000_000_000;
                    let from = set_day + ten_years;
                    assert!(
                        (from - 86_400..=from + 2 * 86_400).contains(&secs),
                        "{name}: expiry {secs} s is not ten years after 2026-11-23"
                    );
                }
                (want, got) => panic!("{name}: ttl expected {want:?}, got {got:?}"),
            }
        }
        for absent in expected.get("absent").unwrap().arr() {
            let name = absent.str().as_bytes();
            assert!(!got.contains_key(absent.str()));
            assert_eq!(file.get(GO_BITMAPS_BUCKET, name).unwrap(), None);
            // None of them kept an expiry entry either.
            assert_eq!(file.get(GO_EXPIRES_BUCKET, name).unwrap(), None);
        }
    }

    #[test]
    fn fixture_get_and_iter_agree() {
        let snap = exercise(fixture_bytes()).unwrap();
        assert_eq!(snap.buckets.len(), 3);
        assert_eq!(snap.buckets[1].1.len(), 306);
        let file = fixture();
        assert_eq!(file.get(b"bitmapist", b"").unwrap(), None);
        assert_eq!(file.get(b"bitmapist", b"zzzz").unwrap(), None);
        assert_eq!(file.get(b"bitmapist", b"trackist_ev0").unwrap(), None);
        assert!(matches!(
            file.get(b"nope", b"x"),
            Err(BoltError::MissingBucket(ref b)) if b == "nope"
        ));
        assert!(matches!(
            file.for_each(b"nope", |_, _| Ok(())),
            Err(BoltError::MissingBucket(_))
        ));
        assert!(file.has_bucket(b"aux").unwrap());
        assert!(!file.has_bucket(b"au").unwrap());
        // A visitor's error stops the walk and comes back unchanged.
        let mut seen = 0;
        let err = file
            .for_each(b"bitmapist", |_, _| {
                seen += 1;
                if seen == 3 {
                    Err(corrupt("stop"))
                } else {
                    Ok(())
                }
            })
            .unwrap_err();
        assert_eq!(seen, 3);
        assert_eq!(err.to_string(), "bbolt database is corrupt: stop");
    }

    #[test]
    fn open_reads_files_and_names_the_path() {
        let file = BoltFile::open(Path::new(&format!("{FIXTURE_DIR}/bitmapist.db"))).unwrap();
        assert_eq!(file.txid(), 6);
        let missing = BoltFile::open(Path::new("/nonexistent/bitmapist.db")).unwrap_err();
        assert!(matches!(missing, BoltError::Io(_)));
        assert!(missing.to_string().contains("/nonexistent/bitmapist.db"));
        let not_bolt = BoltFile::open(Path::new(&format!("{FIXTURE_DIR}/README.md"))).unwrap_err();
        assert!(matches!(not_bolt, BoltError::NotBolt(_)), "{not_bolt}");
        assert!(not_bolt.to_string().contains("README.md"));
    }

    #[test]
    fn sniff() {
        let bytes = fixture_bytes();
        assert!(is_bolt_file(&bytes[..4096]));
        assert!(is_bolt_file(&bytes[..20]));
        assert!(!is_bolt_file(&bytes[..19]));
        assert!(!is_bolt_file(&[]));
        assert!(!is_bolt_file(&[0; 4096]));
        assert!(!is_bolt_file(b"SQLite format 3\0........................"));
    }

    // ------------------------------------------------------------ truncation

    #[test]
    fn truncated_fixture() {
        let full = fixture_bytes();
        let whole = exercise(full.clone()).unwrap();
        let len = full.len();
        let used = FIXTURE_PAGES * 4096;
        for cut in [
            0,
            1,
            15,
            16,
            19,
            20,
            79,
            80,
            100,
            4095,
            4096,
            4097,
            4096 + 95,
            4096 + 96,
            8191,
            8192,
            8193,
            len / 2,
            used - 1,
            used,
            used + 1,
            len - 1,
        ] {
            check_truncated(&full, cut, &whole);
        }
    }

    fn check_truncated(full: &[u8], cut: usize, whole: &Snapshot) {
        match exercise(full[..cut].to_vec()) {
            Ok(snap) => {
                assert!(cut >= FIXTURE_PAGES * 4096, "cut at {cut} read fine");
                assert_eq!(&snap, whole, "cut at {cut}");
            }
            Err(e) => {
                assert!(cut < FIXTURE_PAGES * 4096, "cut at {cut}: {e}");
                if cut < 20 {
                    assert!(matches!(e, BoltError::NotBolt(_)), "cut at {cut}: {e}");
                } else {
                    assert!(matches!(e, BoltError::Corrupt(_)), "cut at {cut}: {e}");
                }
            }
        }
    }

    // ------------------------------------------------------------ corruption

    fn put_u16(b: &mut [u8], off: usize, v: u16) {
        b[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn put_u32(b: &mut [u8], off: usize, v: u32) {
        b[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn put_u64(b: &mut [u8], off: usize, v: u64) {
        b[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// Recomputes the checksum of the meta page at `page_off`.
    fn reseal_meta(b: &mut [u8], page_off: usize) {
        let meta = page_off + PAGE_HEADER_SIZE;
        let sum = fnv64a(&b[meta..meta + META_CHECKSUM_OFFSET]);
        put_u64(b, meta + META_CHECKSUM_OFFSET, sum);
    }

    /// Byte offset of the first fixture page with these flags (and overflow).
    fn find_page(b: &[u8], flags: u16, with_overflow: bool) -> usize {
        (2..FIXTURE_PAGES)
            .map(|id| id * 4096)
            .find(|&off| {
                read_u64(b, off) == Some((off / 4096) as u64)
                    && read_u16(b, off + 8) == Some(flags)
                    && (read_u32(b, off + 12).unwrap() > 0) == with_overflow
            })
            .unwrap()
    }

    fn corrupt_message(bytes: Vec<u8>) -> String {
        match exercise(bytes) {
            Ok(_) => panic!("corrupt file read fine"),
            Err(BoltError::Corrupt(m)) => m,
            Err(e) => panic!("expected Corrupt, got {e}"),
        }
    }

    #[test]
    fn bad_magic_on_both_metas_is_not_bolt() {
        let mut b = fixture_bytes();
        b[16] ^= 0xff;
        b[4096 + 16] ^= 0xff;
        assert!(matches!(
            BoltFile::from_bytes(b),
            Err(BoltError::NotBolt(_))
        ));
        assert!(matches!(
            BoltFile::from_bytes(vec![0; 1 << 16]),
            Err(BoltError::NotBolt(_))
        ));
        assert!(matches!(
            BoltFile::from_bytes(Vec::new()),
            Err(BoltError::NotBolt(_))
        ));
    }

    #[test]
    fn bad_checksum_on_both_metas() {
        let mut b = fixture_bytes();
        b[16 + 48] ^= 1; // txid of meta 0
        b[4096 + 16 + 48] ^= 1; // txid of meta 1
        let m = corrupt_message(b);
        assert!(m.contains("meta page 0: checksum mismatch"), "{m}");
        assert!(m.contains("meta page 1: checksum mismatch"), "{m}");
    }

    #[test]
    fn falls_back_to_the_older_meta() {
        let mut b = fixture_bytes();
        b[16 + 40] ^= 1; // pgid of meta 0, no longer matching its checksum
        let file = BoltFile::from_bytes(b.clone()).unwrap();
        assert_eq!((file.meta_page(), file.txid()), (1, 5));
        exercise(b).unwrap();
        // The page size of meta 0 is unreadable too: meta 1 is still found.
        let mut b = fixture_bytes();
        b[16 + 8] ^= 0x10;
        let file = BoltFile::from_bytes(b).unwrap();
        assert_eq!((file.meta_page(), file.page_size()), (1, 4096));
    }

    #[test]
    fn bad_version_and_big_endian() {
        let mut b = fixture_bytes();
        for off in [0, 4096] {
            put_u32(&mut b, off + 16 + 4, 1);
            reseal_meta(&mut b, off);
        }
        let m = corrupt_message(b);
        assert!(m.contains("version 1"), "{m}");
        let mut b = fixture_bytes();
        for off in [0, 4096] {
            put_u32(&mut b, off + 16, MAGIC.swap_bytes());
        }
        assert!(is_bolt_file(&b));
        assert!(corrupt_message(b).contains("big-endian"));
    }

    #[test]
    fn meta_fields_out_of_range() {
        // Each change is resealed so that only the value itself is wrong.
        let cases: [(usize, u64, &str); 6] = [
            (16 + 8, 0, "page size 0"),
            (16 + 8, 3, "page size 3"),
            (16 + 16, 1, "root page 1"),
            (16 + 16, 62, "root page 62"),
            (16 + 40, 1 << 40, "truncated"),
            (16 + 32, 70, "freelist page 70"),
        ];
        for (field, value, what) in cases {
            let mut b = fixture_bytes();
            for off in [0, 4096] {
                if field == 16 + 8 {
                    put_u32(&mut b, off + field, value as u32);
                } else {
                    put_u64(&mut b, off + field, value);
                }
                reseal_meta(&mut b, off);
            }
            let m = corrupt_message(b);
            assert!(m.contains(what), "{what}: {m}");
        }
    }

    #[test]
    fn branch_element_past_the_end() {
        let base = fixture_bytes();
        let branch = find_page(&base, BRANCH_PAGE, false);
        for target in [62, 63, 1000, u64::MAX / 4096, u64::MAX] {
            let mut b = base.clone();
            put_u64(&mut b, branch + PAGE_HEADER_SIZE + 8, target);
            let m = corrupt_message(b);
            assert!(m.contains("past the end"), "{target}: {m}");
        }
        // Pointing at a meta or freelist page.
        for (target, what) in [(0, "meta page"), (1, "meta page"), (56, "freelist")] {
            let mut b = base.clone();
            put_u64(&mut b, branch + PAGE_HEADER_SIZE + 8, target);
            let m = corrupt_message(b);
            assert!(m.contains(what), "{target}: {m}");
        }
    }

    #[test]
    fn leaf_count_overflows_the_page() {
        let mut b = fixture_bytes();
        let leaf = find_page(&b, LEAF_PAGE, false);
        put_u16(&mut b, leaf + 10, u16::MAX);
        let m = corrupt_message(b);
        assert!(m.contains("65535 elements need"), "{m}");
    }

    #[test]
    fn leaf_element_runs_past_the_page() {
        let base = fixture_bytes();
        let leaf = find_page(&base, LEAF_PAGE, false);
        for (field, value) in [(4, u32::MAX), (8, 5000), (12, u32::MAX), (12, 4000)] {
            let mut b = base.clone();
            put_u32(&mut b, leaf + PAGE_HEADER_SIZE + field, value);
            let m = corrupt_message(b);
            assert!(
                m.contains("past the end of the page") || m.contains("overflow"),
                "{m}"
            );
        }
    }

    #[test]
    fn overflow_count_runs_past_the_end() {
        let base = fixture_bytes();
        for page in [
            find_page(&base, LEAF_PAGE, true),
            find_page(&base, LEAF_PAGE, false),
        ] {
            for overflow in [60, 1000, u32::MAX] {
                let mut b = base.clone();
                put_u32(&mut b, page + 12, overflow);
                let m = corrupt_message(b);
                assert!(m.contains("overflow pages run past"), "{m}");
            }
        }
    }

    #[test]
    fn overflow_overlapping_the_next_page() {
        let mut b = fixture_bytes();
        // Page 2 claims page 3, which the tree also reaches on its own.
        let page = find_page(&b, LEAF_PAGE, false);
        put_u32(&mut b, page + 12, 1);
        assert!(exercise(b).is_err());
    }

    #[test]
    fn branch_cycle() {
        let base = fixture_bytes();
        let branch = find_page(&base, BRANCH_PAGE, false);
        let id = (branch / 4096) as u64;
        // The first child is the branch page itself.
        let mut b = base.clone();
        put_u64(&mut b, branch + PAGE_HEADER_SIZE + 8, id);
        let m = corrupt_message(b.clone());
        assert!(m.contains("reached twice"), "{m}");
        // get() follows the loop until the depth limit.
        let file = BoltFile::from_bytes(b).unwrap();
        let err = file.get(b"bitmapist", b"").unwrap_err();
        assert!(err.to_string().contains("deeper than"), "{err}");
        // Two children pointing at the same page.
        let mut b = base.clone();
        let second_child = read_u64(&b, branch + PAGE_HEADER_SIZE + ELEMENT_SIZE + 8).unwrap();
        put_u64(&mut b, branch + PAGE_HEADER_SIZE + 8, second_child);
        assert!(exercise(b).is_err());
    }

    #[test]
    fn keys_out_of_order() {
        let base = fixture_bytes();
        let leaf = find_page(&base, LEAF_PAGE, false);
        // Swap the positions of the first two elements of a leaf.
        let mut b = base.clone();
        let e0 = leaf + PAGE_HEADER_SIZE;
        let e1 = e0 + ELEMENT_SIZE;
        let (p0, k0, v0) = (
            read_u32(&b, e0 + 4).unwrap(),
            read_u32(&b, e0 + 8).unwrap(),
            read_u32(&b, e0 + 12).unwrap(),
        );
        let (p1, k1, v1) = (
            read_u32(&b, e1 + 4).unwrap(),
            read_u32(&b, e1 + 8).unwrap(),
            read_u32(&b, e1 + 12).unwrap(),
        );
        put_u32(&mut b, e0 + 4, p1 + ELEMENT_SIZE as u32);
        put_u32(&mut b, e0 + 8, k1);
        put_u32(&mut b, e0 + 12, v1);
        put_u32(&mut b, e1 + 4, p0 - ELEMENT_SIZE as u32);
        put_u32(&mut b, e1 + 8, k0);
        put_u32(&mut b, e1 + 12, v0);
        let m = corrupt_message(b);
        assert!(m.contains("does not sort after"), "{m}");
        // Swap two children of the branch page: keys leave their ranges.
        let mut b = base.clone();
        let branch = find_page(&b, BRANCH_PAGE, false);
        let c0 = read_u64(&b, branch + PAGE_HEADER_SIZE + 8).unwrap();
        let c1 = read_u64(&b, branch + PAGE_HEADER_SIZE + ELEMENT_SIZE + 8).unwrap();
        put_u64(&mut b, branch + PAGE_HEADER_SIZE + 8, c1);
        put_u64(&mut b, branch + PAGE_HEADER_SIZE + ELEMENT_SIZE + 8, c0);
        let m = corrupt_message(b);
        assert!(
            m.contains("outside the range") || m.contains("does not sort"),
            "{m}"
        );
    }

    #[test]
    fn inline_bucket_damaged() {
        let base = fixture_bytes();
        let file = fixture();
        let Root::Inline(inline) = file.top_bucket(b"expires").unwrap() else {
            panic!("expires is inline")
        };
        let at = inline.as_ptr() as usize - file.data.as_ptr() as usize;
        // Inline page flagged as a branch, count too large, header cut short.
        for (off, value, what) in [
            (8, BRANCH_PAGE, "expected a leaf page"),
            (10, 100, "100 elements need"),
        ] {
            let mut b = base.clone();
            put_u16(&mut b, at + off, value);
            let m = corrupt_message(b);
            assert!(m.contains(what), "{m}");
        }
        // Key and value run past the inline value.
        let mut b = base.clone();
        put_u32(&mut b, at + PAGE_HEADER_SIZE + 12, 100);
        let m = corrupt_message(b);
        assert!(m.contains("inline bucket page"), "{m}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        #[test]
        fn truncated_anywhere(cut in 0usize..262_144) {
            let full = fixture_bytes();
            let whole = exercise(full.clone()).unwrap();
            check_truncated(&full, cut, &whole);
        }

        #[test]
        fn random_byte_flips(flips in proptest::collection::vec((0usize..FIXTURE_PAGES * 4096, any::<u8>()), 1..12)) {
            let mut b = fixture_bytes();
            for (at, x) in flips {
                b[at] ^= x;
            }
            let _ = exercise(b);
        }

        #[test]
        fn random_header_and_element_fields(
            page in 2usize..FIXTURE_PAGES,
            slot in 0usize..12,
            value in prop_oneof![any::<u64>(), 0u64..80, Just(u64::MAX)],
        ) {
            // Page header fields or the fields of the first elements.
            let mut b = fixture_bytes();
            let off = page * 4096;
            match slot {
                0 => put_u64(&mut b, off, value),
                1 => put_u16(&mut b, off + 8, value as u16),
                2 => put_u16(&mut b, off + 10, value as u16),
                3 => put_u32(&mut b, off + 12, value as u32),
                s => {
                    let elem = off + PAGE_HEADER_SIZE + ((s - 4) / 4) * ELEMENT_SIZE;
                    if (s - 4) % 4 == 3 {
                        put_u64(&mut b, elem + 8, value);
                    } else {
                        put_u32(&mut b, elem + 4 * ((s - 4) % 4), value as u32);
                    }
                }
            }
            let _ = exercise(b);
        }

        #[test]
        fn random_flips_in_nested_buckets(
            ps in prop_oneof![Just(1024usize), Just(4096)],
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        ) {
            let (mut b, _) = nested_file(ps);
            // Skip the meta pages: the checksum would catch those flips.
            let len = b.len() - 2 * ps;
            for (at, x) in flips {
                b[2 * ps + at % len] ^= x;
            }
            let _ = exercise(b);
        }

        #[test]
        fn random_meta_fields_resealed(field in 0usize..7, value in any::<u64>(), small in 0u64..100) {
            // Meta fields changed and resealed, so that validation passes.
            let mut b = fixture_bytes();
            let v = if value % 2 == 0 { small } else { value };
            for off in [0, 4096] {
                match field {
                    0 => put_u32(&mut b, off + 16 + 8, v as u32),
                    1 => put_u32(&mut b, off + 16 + 12, v as u32),
                    f => put_u64(&mut b, off + 16 + 16 + 8 * (f - 2), v),
                }
                reseal_meta(&mut b, off);
            }
            let _ = exercise(b);
        }
    }

    // ------------------------------------------------------- synthetic files

    /// Builds bbolt pages by hand.
    mod build {
        use super::super::*;

        pub enum Val<'a> {
            Plain(&'a [u8]),
            Bucket(Vec<u8>),
        }

        /// A leaf page (inline when `id` is `None`: no padding).
        pub fn leaf(id: Option<u64>, ps: usize, elems: &[(&[u8], Val<'_>)]) -> Vec<u8> {
            let mut page = vec![0u8; PAGE_HEADER_SIZE + elems.len() * ELEMENT_SIZE];
            page[8..10].copy_from_slice(&LEAF_PAGE.to_le_bytes());
            page[10..12].copy_from_slice(&(elems.len() as u16).to_le_bytes());
            for (i, (k, v)) in elems.iter().enumerate() {
                let (flags, value): (u32, &[u8]) = match v {
                    Val::Plain(v) => (0, v),
                    Val::Bucket(v) => (BUCKET_LEAF_FLAG, v),
                };
                let elem = PAGE_HEADER_SIZE + i * ELEMENT_SIZE;
                let pos = (page.len() - elem) as u32;
                page[elem..elem + 4].copy_from_slice(&flags.to_le_bytes());
                page[elem + 4..elem + 8].copy_from_slice(&pos.to_le_bytes());
                page[elem + 8..elem + 12].copy_from_slice(&(k.len() as u32).to_le_bytes());
                page[elem + 12..elem + 16].copy_from_slice(&(value.len() as u32).to_le_bytes());
                page.extend_from_slice(k);
                page.extend_from_slice(value);
            }
            finish(page, id, ps)
        }

        pub fn branch(id: u64, ps: usize, elems: &[(&[u8], u64)]) -> Vec<u8> {
            let mut page = vec![0u8; PAGE_HEADER_SIZE + elems.len() * ELEMENT_SIZE];
            page[8..10].copy_from_slice(&BRANCH_PAGE.to_le_bytes());
            page[10..12].copy_from_slice(&(elems.len() as u16).to_le_bytes());
            for (i, (k, child)) in elems.iter().enumerate() {
                let elem = PAGE_HEADER_SIZE + i * ELEMENT_SIZE;
                let pos = (page.len() - elem) as u32;
                page[elem..elem + 4].copy_from_slice(&pos.to_le_bytes());
                page[elem + 4..elem + 8].copy_from_slice(&(k.len() as u32).to_le_bytes());
                page[elem + 8..elem + 16].copy_from_slice(&child.to_le_bytes());
                page.extend_from_slice(k);
            }
            finish(page, Some(id), ps)
        }

        fn finish(mut page: Vec<u8>, id: Option<u64>, ps: usize) -> Vec<u8> {
            if let Some(id) = id {
                page[0..8].copy_from_slice(&id.to_le_bytes());
                let pages = page.len().div_ceil(ps);
                page[12..16].copy_from_slice(&((pages - 1) as u32).to_le_bytes());
                page.resize(pages * ps, 0);
            }
            page
        }

        /// The value of a bucket whose tree starts at page `root`.
        pub fn bucket(root: u64) -> Vec<u8> {
            let mut v = root.to_le_bytes().to_vec();
            v.extend_from_slice(&0u64.to_le_bytes());
            v
        }

        /// The value of an inline bucket holding `elems`.
        pub fn inline(elems: &[(&[u8], Val<'_>)]) -> Vec<u8> {
            let mut v = bucket(0);
            v.extend_from_slice(&leaf(None, 0, elems));
            v
        }

        /// A file: meta pages 0 and 1 (txids 2 and 1) naming `root`, a
        /// freelist page 2, and `pages` (each starting at its id).
        pub fn file(ps: usize, root: u64, pages: Vec<Vec<u8>>) -> Vec<u8> {
            let mut out = vec![0u8; 3 * ps];
            let mut freelist = vec![0u8; ps];
            freelist[0..8].copy_from_slice(&2u64.to_le_bytes());
            freelist[8..10].copy_from_slice(&FREELIST_PAGE.to_le_bytes());
            out[2 * ps..].copy_from_slice(&freelist);
            for p in pages {
                let id = u64::from_le_bytes(p[0..8].try_into().unwrap()) as usize;
                if out.len() < id * ps + p.len() {
                    out.resize(id * ps + p.len(), 0);
                }
                out[id * ps..id * ps + p.len()].copy_from_slice(&p);
            }
            let pgid = (out.len() / ps) as u64;
            for (id, txid) in [(0u64, 2u64), (1, 1)] {
                let at = id as usize * ps;
                out[at..at + 8].copy_from_slice(&id.to_le_bytes());
                out[at + 8..at + 10].copy_from_slice(&META_PAGE.to_le_bytes());
                let m = at + PAGE_HEADER_SIZE;
                let fields: [(usize, u64, usize); 8] = [
                    (0, u64::from(MAGIC), 4),
                    (4, u64::from(VERSION), 4),
                    (8, ps as u64, 4),
                    (16, root, 8),
                    (24, 0, 8),
                    (32, 2, 8),
                    (40, pgid, 8),
                    (48, txid, 8),
                ];
                for (off, v, n) in fields {
                    out[m + off..m + off + n].copy_from_slice(&v.to_le_bytes()[..n]);
                }
                let sum = fnv64a(&out[m..m + META_CHECKSUM_OFFSET]);
                out[m + 56..m + 64].copy_from_slice(&sum.to_le_bytes());
            }
            out
        }
    }

    use build::Val::{Bucket, Plain};

    /// Root bucket (page 3): "b" (branch page 4 over leaves 5 and 6, with an
    /// inline nested bucket, a nested bucket at page 7 and a value in
    /// overflow pages) and "e" (an empty inline bucket).
    fn nested_file(ps: usize) -> (Vec<u8>, Vec<u8>) {
        let big: Vec<u8> = (0..3 * ps + 100).map(|i| (i % 251) as u8).collect();
        let child = build::inline(&[(b"c1", Plain(b"v1")), (b"c2", Plain(b"v2"))]);
        let first_leaf = build::leaf(
            Some(5),
            ps,
            &[
                (b"a", Plain(b"1")),
                (b"big", Plain(&big)),
                (b"child", Bucket(child)),
            ],
        );
        // The first leaf spans several pages: the second leaf follows them.
        let second = 5 + (first_leaf.len() / ps) as u64;
        let sub = second + 1;
        let pages = vec![
            build::leaf(
                Some(3),
                ps,
                &[
                    (b"b", Bucket(build::bucket(4))),
                    (b"e", Bucket(build::inline(&[]))),
                ],
            ),
            build::branch(4, ps, &[(b"a", 5), (b"m", second)]),
            first_leaf,
            build::leaf(
                Some(second),
                ps,
                &[
                    (b"m", Plain(b"2")),
                    (b"sub", Bucket(build::bucket(sub))),
                    (b"z", Plain(b"")),
                ],
            ),
            build::leaf(Some(sub), ps, &[(b"deep", Plain(b"x"))]),
        ];
        (build::file(ps, 3, pages), big)
    }

    #[test]
    fn nested_inline_and_overflow() {
        for ps in [1024, 4096, 16384] {
            let (bytes, big) = nested_file(ps);
            let file = BoltFile::from_bytes(bytes.clone()).unwrap();
            assert_eq!(file.page_size(), ps as u32);
            assert_eq!(file.txid(), 2);
            assert!(file.tree_page(5, None).unwrap().buf.len() >= 4 * ps);
            assert_eq!(file.buckets().unwrap(), vec![b"b".to_vec(), b"e".to_vec()]);
            let mut it = file.iter(b"b").unwrap();
            let got: Vec<(&[u8], &[u8])> = it.by_ref().map(Result::unwrap).collect();
            let want: Vec<(&[u8], &[u8])> =
                vec![(b"a", b"1"), (b"big", &big), (b"m", b"2"), (b"z", b"")];
            assert_eq!(got, want);
            assert_eq!(it.nested_buckets_skipped(), 2);
            assert_eq!(file.get(b"b", b"big").unwrap(), Some(big.clone()));
            assert_eq!(file.get(b"b", b"z").unwrap(), Some(Vec::new()));
            assert_eq!(file.get(b"b", b"child").unwrap(), None);
            assert_eq!(file.get(b"b", b"sub").unwrap(), None);
            assert_eq!(file.get(b"b", b"c1").unwrap(), None);
            assert_eq!(file.iter(b"e").unwrap().count(), 0);
            assert_eq!(file.get(b"e", b"x").unwrap(), None);
            let snap = exercise(bytes).unwrap();
            assert!(snap.go.is_none());
            // Meta 0 damaged: meta 1 is found by trying page sizes.
            let (mut bytes, _) = nested_file(ps);
            bytes[16] ^= 1;
            let file = BoltFile::from_bytes(bytes).unwrap();
            assert_eq!((file.meta_page(), file.page_size()), (1, ps as u32));
        }
    }

    #[test]
    fn plain_key_in_root_bucket_is_corrupt() {
        let pages = vec![build::leaf(Some(3), 4096, &[(b"k", Plain(b"v"))])];
        let file = BoltFile::from_bytes(build::file(4096, 3, pages)).unwrap();
        assert!(file
            .buckets()
            .unwrap_err()
            .to_string()
            .contains("not a bucket"));
        assert!(matches!(file.iter(b"k"), Err(BoltError::Corrupt(_))));
        assert!(matches!(
            file.get(b"j", b"x"),
            Err(BoltError::MissingBucket(_))
        ));
    }

    #[test]
    fn bucket_header_too_short() {
        let pages = vec![build::leaf(Some(3), 4096, &[(b"b", Bucket(vec![0; 7]))])];
        let file = BoltFile::from_bytes(build::file(4096, 3, pages)).unwrap();
        let e = file.iter(b"b").unwrap_err().to_string();
        assert!(e.contains("bucket header is 7 bytes"), "{e}");
        // Root 0 but no inline page after the header.
        let pages = vec![build::leaf(Some(3), 4096, &[(b"b", Bucket(vec![0; 16]))])];
        let file = BoltFile::from_bytes(build::file(4096, 3, pages)).unwrap();
        let e = file.iter(b"b").unwrap_err().to_string();
        assert!(e.contains("cannot hold a page header"), "{e}");
    }

    #[test]
    fn depth_limit() {
        // A chain of single-child branch pages, one level too deep.
        let first = 4u64;
        let levels = MAX_DEPTH as u64 + 1;
        let mut pages = vec![build::leaf(
            Some(3),
            4096,
            &[(b"b", Bucket(build::bucket(first)))],
        )];
        for i in 0..levels {
            pages.push(build::branch(first + i, 4096, &[(b"k", first + i + 1)]));
        }
        pages.push(build::leaf(
            Some(first + levels),
            4096,
            &[(b"k", Plain(b"v"))],
        ));
        let file = BoltFile::from_bytes(build::file(4096, 3, pages)).unwrap();
        let e = file.for_each(b"b", |_, _| Ok(())).unwrap_err().to_string();
        assert!(e.contains("deeper than"), "{e}");
        let e = file.get(b"b", b"k").unwrap_err().to_string();
        assert!(e.contains("deeper than"), "{e}");
        // One level less is fine.
        let mut pages = vec![build::leaf(
            Some(3),
            4096,
            &[(b"b", Bucket(build::bucket(first)))],
        )];
        let levels = MAX_DEPTH as u64 - 2;
        for i in 0..levels {
            pages.push(build::branch(first + i, 4096, &[(b"k", first + i + 1)]));
        }
        pages.push(build::leaf(
            Some(first + levels),
            4096,
            &[(b"k", Plain(b"v"))],
        ));
        let file = BoltFile::from_bytes(build::file(4096, 3, pages)).unwrap();
        assert_eq!(file.iter(b"b").unwrap().count(), 1);
        assert_eq!(file.get(b"b", b"k").unwrap(), Some(b"v".to_vec()));
    }

    #[test]
    fn branch_with_no_children() {
        let pages = vec![
            build::leaf(Some(3), 4096, &[(b"b", Bucket(build::bucket(4)))]),
            build::branch(4, 4096, &[]),
        ];
        let file = BoltFile::from_bytes(build::file(4096, 3, pages)).unwrap();
        let e = file.iter(b"b").unwrap_err().to_string();
        assert!(e.contains("branch page without elements"), "{e}");
    }

    // ------------------------------------------------------ Go server layout

    fn go_file(expires: Option<Vec<(&[u8], Vec<u8>)>>) -> BoltFile {
        let bitmaps = build::bucket(4);
        let mut root: Vec<(&[u8], build::Val<'_>)> = vec![(b"bitmapist", Bucket(bitmaps))];
        let expires_value = expires.map(|e| {
            let elems: Vec<(&[u8], build::Val<'_>)> =
                e.iter().map(|(k, v)| (*k, Plain(v.as_slice()))).collect();
            build::inline(&elems)
        });
        if let Some(v) = expires_value {
            root.push((b"expires", Bucket(v)));
        }
        let pages = vec![
            build::leaf(Some(3), 4096, &root),
            build::leaf(
                Some(4),
                4096,
                &[
                    (b"a", Plain(b"A")),
                    (b"b", Plain(b"B")),
                    (b"c", Plain(b"C")),
                ],
            ),
        ];
        BoltFile::from_bytes(build::file(4096, 3, pages)).unwrap()
    }

    fn collect(file: &BoltFile) -> Result<(Vec<GoEntry>, GoStats), BoltError> {
        let mut out = Vec::new();
        let stats = read_go_database(file, |e| {
            out.push(e);
            Ok(())
        })?;
        Ok((out, stats))
    }

    #[test]
    fn go_layout_merge_join() {
        let file = go_file(Some(vec![
            (b"0", go_put_varint(1)),
            (b"b", go_put_varint(-5)),
            (b"bb", go_put_varint(7)),
            (b"d", go_put_varint(9)),
        ]));
        let (entries, stats) = collect(&file).unwrap();
        let expiries: Vec<_> = entries
            .iter()
            .map(|e| (e.key.clone(), e.expire_unix_nanos))
            .collect();
        assert_eq!(
            expiries,
            vec![
                (b"a".to_vec(), None),
                (b"b".to_vec(), Some(-5)),
                (b"c".to_vec(), None)
            ]
        );
        assert_eq!(entries[2].bitmap, b"C");
        assert_eq!(
            stats,
            GoStats {
                keys: 3,
                with_expiry: 1,
                orphan_expiries: 3,
                nested_buckets_skipped: 0
            }
        );
        // No expires bucket: nothing expires.
        let (entries, stats) = collect(&go_file(None)).unwrap();
        assert!(entries.iter().all(|e| e.expire_unix_nanos.is_none()));
        assert_eq!((stats.keys, stats.with_expiry), (3, 0));
        // A broken expiry is reported with its key.
        let e = collect(&go_file(Some(vec![(b"c", vec![0x80])]))).unwrap_err();
        assert!(e.to_string().contains("\"c\""), "{e}");
        // Not a bitmapist database.
        let pages = vec![build::leaf(
            Some(3),
            4096,
            &[(b"other", Bucket(build::inline(&[])))],
        )];
        let file = BoltFile::from_bytes(build::file(4096, 3, pages)).unwrap();
        assert!(matches!(collect(&file), Err(BoltError::MissingBucket(ref b)) if b == "bitmapist"));
        // A visitor's error stops the walk.
        let file = go_file(None);
        let mut n = 0;
        let e = read_go_database(&file, |_| {
            n += 1;
            Err(corrupt("bad bitmap"))
        })
        .unwrap_err();
        assert_eq!(
            (n, e.to_string()),
            (1, "bbolt database is corrupt: bad bitmap".to_owned())
        );
    }

    // ---------------------------------------------------------------- varint

    /// Go's binary.PutVarint, from its definition: zig-zag, then base 128.
    fn go_put_varint(x: i64) -> Vec<u8> {
        let mut ux = (x as u64) << 1;
        if x < 0 {
            ux = !ux;
        }
        let mut out = Vec::new();
        while ux >= 0x80 {
            out.push(ux as u8 | 0x80);
            ux >>= 7;
        }
        out.push(ux as u8);
        out
    }

    #[test]
    fn go_varint_known_encodings() {
        let cases: [(i64, &[u8]); 10] = [
            (0, &[0x00]),
            (1, &[0x02]),
            (-1, &[0x01]),
            (63, &[0x7e]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
            (-65, &[0x81, 0x01]),
            (
                1_700_000_000_000_000_000,
                &[0x80, 0x80, 0xd0, 0xe2, 0xc6, 0xbf, 0xce, 0x97, 0x2f],
            ),
            (
                i64::MAX,
                &[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
            (
                i64::MIN,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for (value, bytes) in cases {
            assert_eq!(go_put_varint(value), bytes, "encoding {value}");
            assert_eq!(decode_go_varint(bytes), Some(value), "decoding {value}");
        }
        // The fixture's one expiry.
        assert_eq!(
            decode_go_varint(&[0xd2, 0xfe, 0xae, 0x86, 0xcd, 0xf2, 0x93, 0xcb, 0x3a]),
            Some(2_110_824_600_641_593_257)
        );
    }

    #[test]
    fn go_varint_rejects() {
        assert_eq!(decode_go_varint(&[]), None);
        assert_eq!(decode_go_varint(&[0x80]), None);
        assert_eq!(decode_go_varint(&[0x80; 10]), None);
        assert_eq!(decode_go_varint(&[0x80; 11]), None);
        // 65 bits.
        let mut too_big = vec![0xff; 9];
        too_big.push(0x02);
        assert_eq!(decode_go_varint(&too_big), None);
        // Trailing bytes after a complete varint.
        assert_eq!(decode_go_varint(&[0x02, 0x00]), None);
        // Non-minimal encodings are accepted, as in Go.
        assert_eq!(decode_go_varint(&[0x82, 0x00]), Some(1));
    }

    proptest! {
        #[test]
        fn go_varint_round_trip(x in any::<i64>()) {
            let bytes = go_put_varint(x);
            prop_assert!(bytes.len() <= 10);
            prop_assert_eq!(decode_go_varint(&bytes), Some(x));
        }

        #[test]
        fn go_varint_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            if let Some(x) = decode_go_varint(&bytes) {
                // Canonical re-encoding decodes to the same value.
                prop_assert_eq!(decode_go_varint(&go_put_varint(x)), Some(x));
            }
        }
    }
}
