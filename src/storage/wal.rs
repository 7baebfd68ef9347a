//! Owns the write-ahead log: record framing, checksums, segment files,
//! appending with group commit, and recovery (replay up to the first torn or
//! corrupt record).
//!
//! # Files
//! The log is a sequence of segment files next to the database, named
//! `<db path>-wal.<seq>` with `seq` as 20 zero-padded decimal digits
//! ([`segment_path`], [`list_segments`]). `seq` grows by one at each
//! rotation: a checkpoint starts a new segment, and once the checkpoint has
//! committed the older segments are deleted ([`remove_segments_before`]).
//!
//! # Format (all integers little-endian)
//! A segment starts with a 32-byte header:
//!
//! | bytes | field |
//! |-------|-------|
//! | 0..8   | magic `b"BMWAL\0\0\x01"` |
//! | 8..12  | format version (1) |
//! | 12..16 | reserved (0) |
//! | 16..24 | seq |
//! | 24..28 | crc32c of bytes 0..24 (plain, not masked) |
//! | 28..32 | reserved (0) |
//!
//! Records follow back to back, with no padding or alignment:
//! `len: u32` (payload length, at most [`MAX_RECORD_LEN`]), `crc: u32`, then
//! the `len` payload bytes. `crc` is the crc32c of the payload, *masked* as
//! LevelDB does (`((c >> 15) | (c << 17)) + 0xa282ead8`, wrapping) so that a
//! run of zeros (a file extended whose data never reached the disk) is not a
//! valid empty record. The payload is opaque here: the caller encodes
//! commands.
//!
//! # Writing
//! One writer thread owns a [`WalWriter`]. It frames records with [`frame`]
//! into one buffer (a group of commands), [`WalWriter::append`]s the buffer
//! with one write, then [`WalWriter::sync`]s; only after `sync` returns `Ok`
//! may the commands in the group be acknowledged.
//!
//! # Recovery
//! [`read_segment`] streams a segment in 1 MiB chunks (a larger record is
//! read whole) and hands each payload to a visitor. It stops at the first
//! record that is torn (runs past the end of the file), has a bad checksum,
//! or declares an absurd length, and reports the valid length, the discarded
//! bytes and why ([`ReplayStats`]); the caller logs it and reopens the
//! segment with [`WalWriter::open_for_append`], which cuts the tail off. A
//! bad segment header is a [`WalError::Header`] naming the file.

use std::error::Error as StdError;
use std::ffi::OsString;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use super::io::{sync_dir, FileIo, UringFile};

/// The first 8 bytes of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"BMWAL\0\0\x01";
/// The format version written in segment headers.
pub const FORMAT_VERSION: u32 = 1;
/// Length of the segment header; the first record starts here.
pub const HEADER_LEN: u64 = 32;
/// Length of a record's framing (`len` + `crc`).
pub const RECORD_HEADER_LEN: usize = 8;
/// The largest payload a record may carry (1 GiB). [`frame`] refuses larger
/// payloads; a larger length found on replay is treated as corruption.
pub const MAX_RECORD_LEN: usize = 1 << 30;
/// Size of the reusable read buffer of [`read_segment`].
const READ_CHUNK: usize = 1 << 20;

const CRC_MASK_DELTA: u32 = 0xa282_ead8;

fn mask_crc(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(CRC_MASK_DELTA)
}

fn record_crc(payload: &[u8]) -> u32 {
    mask_crc(crc32c::crc32c(payload))
}

/// The bytes `frame` appends for a payload of `payload_len` bytes.
pub fn framed_len(payload_len: usize) -> usize {
    RECORD_HEADER_LEN + payload_len
}

/// Appends one record (`len`, masked crc32c, payload) to `out`.
///
/// Fails with `InvalidInput` (appending nothing) when the payload is larger
/// than [`MAX_RECORD_LEN`], since replay would reject such a record.
pub fn frame(out: &mut Vec<u8>, payload: &[u8]) -> io::Result<()> {
    if payload.len() > MAX_RECORD_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "WAL record of {} bytes exceeds the limit of {MAX_RECORD_LEN} bytes",
                payload.len()
            ),
        ));
    }
    out.reserve(framed_len(payload.len()));
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&record_crc(payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// The 32-byte header of segment `seq`.
pub fn encode_header(seq: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// What is wrong with a segment header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderProblem {
    /// The file is shorter than a header (`len` bytes).
    TooShort { len: u64 },
    /// The header is all zeros (its write never reached the disk).
    Zeroed,
    /// The first 8 bytes are not [`SEGMENT_MAGIC`].
    BadMagic { found: [u8; 8] },
    /// The header checksum does not match.
    BadChecksum { stored: u32, computed: u32 },
    /// A format version this build cannot read.
    UnsupportedVersion { found: u32 },
    /// The header names another sequence number than the file name.
    WrongSeq { expected: u64, found: u64 },
}

impl fmt::Display for HeaderProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort { len } => write!(
                f,
                "file is {len} bytes, shorter than the {HEADER_LEN}-byte header"
            ),
            Self::Zeroed => f.write_str("header is all zeros"),
            Self::BadMagic { found } => write!(f, "bad magic {found:02x?}, not a WAL segment"),
            Self::BadChecksum { stored, computed } => {
                write!(
                    f,
                    "header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
                )
            }
            Self::UnsupportedVersion { found } => {
                write!(
                    f,
                    "unsupported format version {found} (this build reads {FORMAT_VERSION})"
                )
            }
            Self::WrongSeq { expected, found } => {
                write!(f, "header has sequence number {found}, expected {expected}")
            }
        }
    }
}

/// Checks a segment header against the sequence number its name gives.
pub fn check_header(header: &[u8], expected_seq: u64) -> Result<(), HeaderProblem> {
    if header.len() < HEADER_LEN as usize {
        return Err(HeaderProblem::TooShort {
            len: header.len() as u64,
        });
    }
    let h = &header[..HEADER_LEN as usize];
    if h.iter().all(|&b| b == 0) {
        return Err(HeaderProblem::Zeroed);
    }
    if h[0..8] != SEGMENT_MAGIC {
        let mut found = [0u8; 8];
        found.copy_from_slice(&h[0..8]);
        return Err(HeaderProblem::BadMagic { found });
    }
    let stored = le_u32(&h[24..28]);
    let computed = crc32c::crc32c(&h[0..24]);
    if stored != computed {
        return Err(HeaderProblem::BadChecksum { stored, computed });
    }
    let version = le_u32(&h[8..12]);
    if version != FORMAT_VERSION {
        return Err(HeaderProblem::UnsupportedVersion { found: version });
    }
    let seq = le_u64(&h[16..24]);
    if seq != expected_seq {
        return Err(HeaderProblem::WrongSeq {
            expected: expected_seq,
            found: seq,
        });
    }
    Ok(())
}

/// Errors of reading a segment.
#[derive(Debug)]
pub enum WalError {
    /// Reading the file failed.
    Io { path: PathBuf, source: io::Error },
    /// The segment header is missing or wrong: the file is not the segment
    /// its name says. See [`WalError::is_incomplete_header`].
    Header {
        path: PathBuf,
        problem: HeaderProblem,
    },
    /// The visitor refused the record at `offset` (whose checksum was good).
    Visit {
        path: PathBuf,
        seq: u64,
        offset: u64,
        source: Box<dyn StdError + Send + Sync>,
    },
}

impl WalError {
    /// True when the header is absent, short or all zeros: what a crash
    /// while [`WalWriter::create`] ran leaves behind. Since `create` syncs
    /// the header before any record is appended, such a segment cannot hold
    /// an acknowledged record, and if it is the newest segment the caller
    /// may delete and recreate it. Any other header problem is real damage.
    pub fn is_incomplete_header(&self) -> bool {
        matches!(
            self,
            WalError::Header {
                problem: HeaderProblem::TooShort { .. } | HeaderProblem::Zeroed,
                ..
            }
        )
    }
}

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => {
                write!(f, "reading WAL segment {}: {source}", path.display())
            }
            Self::Header { path, problem } => {
                write!(f, "bad WAL segment header in {}: {problem}", path.display())
            }
            Self::Visit {
                path,
                seq,
                offset,
                source,
            } => write!(
                f,
                "replaying the record at offset {offset} of WAL segment {seq} ({}): {source}",
                path.display()
            ),
        }
    }
}

impl StdError for WalError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::Header { .. } => None,
            Self::Visit { source, .. } => Some(source.as_ref()),
        }
    }
}

/// Why replay stopped before the end of the file. Offsets are from the
/// start of the file, at the record that was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TailDamage {
    /// The file ends inside a record's 8-byte framing (`have` bytes of it).
    TornFraming { offset: u64, have: u64 },
    /// The record declares `len` payload bytes but the file ends after `have`.
    TornPayload { offset: u64, len: u64, have: u64 },
    /// The record declares more than [`MAX_RECORD_LEN`] bytes.
    AbsurdLength { offset: u64, len: u64 },
    /// The payload's checksum does not match.
    BadChecksum {
        offset: u64,
        len: u64,
        stored: u32,
        computed: u32,
    },
}

impl fmt::Display for TailDamage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TornFraming { offset, have } => {
                write!(f, "torn record at offset {offset}: file ends {have} bytes into its 8-byte header")
            }
            Self::TornPayload { offset, len, have } => write!(
                f,
                "torn record at offset {offset}: {len}-byte payload but the file ends after {have} bytes"
            ),
            Self::AbsurdLength { offset, len } => {
                write!(f, "corrupt record at offset {offset}: length {len} exceeds {MAX_RECORD_LEN}")
            }
            Self::BadChecksum {
                offset,
                len,
                stored,
                computed,
            } => write!(
                f,
                "corrupt record at offset {offset} ({len} bytes): checksum {stored:#010x}, computed {computed:#010x}"
            ),
        }
    }
}

/// What [`read_segment`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayStats {
    pub seq: u64,
    /// Records handed to the visitor.
    pub records: u64,
    /// Sum of their payload lengths.
    pub payload_bytes: u64,
    /// Length of the header plus the intact records: where appending resumes.
    pub valid_len: u64,
    /// The file length when replay started.
    pub file_len: u64,
    /// `file_len - valid_len`: bytes after the last intact record.
    pub discarded_bytes: u64,
    /// Why replay stopped early; `None` when the file ended cleanly at a
    /// record boundary.
    pub damage: Option<TailDamage>,
}

/// Reads segment `expected_seq` from `file` (whose `path` is used in
/// errors), handing each intact record's payload, in order, to `visit`.
///
/// The file is read in 1 MiB chunks into one reusable buffer (a record
/// larger than that is read whole), never loaded whole. Replay stops at
/// the first torn or corrupt record, which is reported in
/// [`ReplayStats::damage`], not as an error. Errors are: I/O failures, a bad
/// header, or an `Err` from `visit` (replay stops there).
pub fn read_segment<F, E, V>(
    file: &mut F,
    path: &Path,
    expected_seq: u64,
    mut visit: V,
) -> Result<ReplayStats, WalError>
where
    F: FileIo,
    E: Into<Box<dyn StdError + Send + Sync>>,
    V: FnMut(&[u8]) -> Result<(), E>,
{
    let io_err = |source: io::Error| WalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file_len = file.len().map_err(io_err)?;
    let mut header = [0u8; HEADER_LEN as usize];
    let got = file.read_at(&mut header, 0).map_err(io_err)?;
    check_header(&header[..got], expected_seq).map_err(|problem| WalError::Header {
        path: path.to_path_buf(),
        problem,
    })?;

    let mut stats = ReplayStats {
        seq: expected_seq,
        records: 0,
        payload_bytes: 0,
        valid_len: HEADER_LEN,
        file_len,
        discarded_bytes: 0,
        damage: None,
    };
    // buf[start..end] holds file bytes [pos, pos + end - start), unconsumed.
    let mut buf = vec![
        0u8;
        READ_CHUNK
            .min(file_len.saturating_sub(HEADER_LEN) as usize)
            .max(RECORD_HEADER_LEN)
    ];
    let mut start = 0usize;
    let mut end = 0usize;
    let mut pos = HEADER_LEN; // file offset of buf[start]
    let mut eof = false;

    // Makes at least `need` bytes available (fewer only at end of file).
    let mut fill = |buf: &mut Vec<u8>,
                    start: &mut usize,
                    end: &mut usize,
                    pos: u64,
                    need: usize|
     -> io::Result<()> {
        if *end - *start >= need {
            return Ok(());
        }
        // Move the unconsumed bytes to the front, then grow the buffer for
        // an oversized record, or shrink it back after one.
        buf.copy_within(*start..*end, 0);
        *end -= *start;
        *start = 0;
        if need > buf.len() {
            buf.resize(need, 0);
        } else if buf.len() > READ_CHUNK && need <= READ_CHUNK && *end <= READ_CHUNK {
            buf.truncate(READ_CHUNK);
            buf.shrink_to_fit();
        }
        while *end < need && !eof {
            let file_off = pos + *end as u64;
            let want = (buf.len() - *end).min(file_len.saturating_sub(file_off) as usize);
            if want == 0 {
                eof = true;
                break;
            }
            let n = file.read_at(&mut buf[*end..*end + want], file_off)?;
            if n < want {
                eof = true;
            }
            *end += n;
        }
        Ok(())
    };

    loop {
        fill(&mut buf, &mut start, &mut end, pos, RECORD_HEADER_LEN).map_err(io_err)?;
        let avail = end - start;
        if avail == 0 {
            break;
        }
        if avail < RECORD_HEADER_LEN {
            stats.damage = Some(TailDamage::TornFraming {
                offset: pos,
                have: avail as u64,
            });
            break;
        }
        let len = le_u32(&buf[start..]) as u64;
        let stored = le_u32(&buf[start + 4..]);
        if len > MAX_RECORD_LEN as u64 {
            stats.damage = Some(TailDamage::AbsurdLength { offset: pos, len });
            break;
        }
        let body_start = pos + RECORD_HEADER_LEN as u64;
        if body_start + len > file_len {
            stats.damage = Some(TailDamage::TornPayload {
                offset: pos,
                len,
                have: file_len - body_start,
            });
            break;
        }
        let need = RECORD_HEADER_LEN + len as usize;
        fill(&mut buf, &mut start, &mut end, pos, need).map_err(io_err)?;
        if end - start < need {
            // The file shrank while we read it.
            stats.damage = Some(TailDamage::TornPayload {
                offset: pos,
                len,
                have: (end - start - RECORD_HEADER_LEN) as u64,
            });
            break;
        }
        let payload = &buf[start + RECORD_HEADER_LEN..start + need];
        let computed = record_crc(payload);
        if computed != stored {
            stats.damage = Some(TailDamage::BadChecksum {
                offset: pos,
                len,
                stored,
                computed,
            });
            break;
        }
        visit(payload).map_err(|e| WalError::Visit {
            path: path.to_path_buf(),
            seq: expected_seq,
            offset: pos,
            source: e.into(),
        })?;
        stats.records += 1;
        stats.payload_bytes += len;
        start += need;
        pos += need as u64;
    }
    stats.valid_len = pos;
    stats.discarded_bytes = file_len.saturating_sub(pos);
    Ok(stats)
}

/// [`read_segment`] on the file at `path`, opened through io_uring.
pub fn replay_segment<E, V>(
    path: &Path,
    expected_seq: u64,
    visit: V,
) -> Result<ReplayStats, WalError>
where
    E: Into<Box<dyn StdError + Send + Sync>>,
    V: FnMut(&[u8]) -> Result<(), E>,
{
    let mut file = File::open(path)
        .and_then(|f| UringFile::from_file(f, path))
        .map_err(|source| WalError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    read_segment(&mut file, path, expected_seq, visit)
}

/// Appends framed records to one segment. Used by one writer thread.
///
/// Guarantees: when [`append`](Self::append) returns `Ok`, the records are
/// in the file (the page cache): a later read or replay sees them, and they
/// survive a crash of the process, but not a power loss. When
/// [`sync`](Self::sync) returns `Ok`, everything appended before it is
/// durable; acknowledge writes only then.
///
/// After an `append` error the file is cut back to the last good record
/// boundary and the writer stays usable; the records of the failed call may
/// or may not appear after a crash that comes before the next successful
/// `sync` (an ambiguous outcome, like a timeout). After a `sync` error the
/// writer is failed for good and every later call returns an error: Linux
/// may have dropped the unsynced pages, so a retried `fdatasync` could
/// report success falsely. The caller must stop acknowledging writes
/// (e.g. restart, which replays what did reach the disk).
pub struct WalWriter<F: FileIo> {
    file: F,
    seq: u64,
    len: u64,
    synced_len: u64,
    needs_sync: bool,
    failed: Option<String>,
}

impl<F: FileIo> WalWriter<F> {
    /// Starts segment `seq` in `file` (emptied first): writes and syncs the
    /// header. For a new file, the directory must be synced too
    /// ([`create_segment`] does both).
    pub fn create(mut file: F, seq: u64) -> io::Result<Self> {
        file.truncate(0)?;
        file.write_all_at(&encode_header(seq), 0)?;
        file.sync_data()?;
        Ok(Self {
            file,
            seq,
            len: HEADER_LEN,
            synced_len: HEADER_LEN,
            needs_sync: false,
            failed: None,
        })
    }

    /// Reopens segment `seq` after recovery: checks its header, cuts the file
    /// to `valid_len` (from [`ReplayStats::valid_len`]) and syncs the cut,
    /// so that new records follow the last intact one.
    pub fn open_for_append(mut file: F, seq: u64, valid_len: u64) -> io::Result<Self> {
        let mut header = [0u8; HEADER_LEN as usize];
        let got = file.read_at(&mut header, 0)?;
        check_header(&header[..got], seq).map_err(|p| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("WAL segment {seq}: {p}"),
            )
        })?;
        let file_len = file.len()?;
        if valid_len < HEADER_LEN || valid_len > file_len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "WAL segment {seq}: valid length {valid_len} outside {HEADER_LEN}..={file_len}"
                ),
            ));
        }
        if file_len > valid_len {
            file.truncate(valid_len)?;
            file.sync_data()?;
        }
        Ok(Self {
            file,
            seq,
            len: valid_len,
            synced_len: valid_len,
            needs_sync: false,
            failed: None,
        })
    }

    fn check_usable(&self) -> io::Result<()> {
        match &self.failed {
            None => Ok(()),
            Some(why) => Err(io::Error::other(format!(
                "WAL segment {} is unusable after an earlier failure: {why}",
                self.seq
            ))),
        }
    }

    /// Appends records already framed by [`frame`] (any number, back to
    /// back) with one positional write at the end of the log. Empty input
    /// is a no-op. The bytes are not checked: pass only whole frames.
    pub fn append(&mut self, records: &[u8]) -> io::Result<()> {
        self.check_usable()?;
        if records.is_empty() {
            return Ok(());
        }
        let end = self
            .len
            .checked_add(records.len() as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "WAL length overflow"))?;
        match self.file.write_all_at(records, self.len) {
            Ok(()) => {
                self.len = end;
                self.needs_sync = true;
                Ok(())
            }
            Err(e) => {
                // Part of the batch may be in the file: cut it off so that
                // the next append starts at a record boundary.
                self.needs_sync = true;
                if let Err(t) = self.file.truncate(self.len) {
                    self.failed = Some(format!(
                        "append failed ({e}) and cutting it off failed ({t})"
                    ));
                }
                Err(e)
            }
        }
    }

    /// Makes everything appended so far durable (`fdatasync`). A no-op when
    /// nothing changed since the last sync.
    pub fn sync(&mut self) -> io::Result<()> {
        self.check_usable()?;
        if !self.needs_sync {
            return Ok(());
        }
        match self.file.sync_data() {
            Ok(()) => {
                self.synced_len = self.len;
                self.needs_sync = false;
                Ok(())
            }
            Err(e) => {
                self.failed = Some(format!("fdatasync failed: {e}"));
                Err(e)
            }
        }
    }

    /// Length of the segment (header and records) appended so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the segment holds no record yet.
    pub fn is_empty(&self) -> bool {
        self.len == HEADER_LEN
    }

    /// Length known durable (as of the last successful sync).
    pub fn synced_len(&self) -> u64 {
        self.synced_len
    }

    /// The segment's sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Why the writer refuses work, if it does.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Gives the file back (e.g. to close a rotated segment).
    pub fn into_file(self) -> F {
        self.file
    }
}

/// The file of segment `seq` of the database at `db`:
/// `<db>-wal.<seq, 20 digits>`.
pub fn segment_path(db: &Path, seq: u64) -> PathBuf {
    let mut s: OsString = db.as_os_str().to_owned();
    s.push(format!("-wal.{seq:020}"));
    PathBuf::from(s)
}

fn db_dir_and_prefix(db: &Path) -> io::Result<(PathBuf, OsString)> {
    let name = db.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("database path {} has no file name", db.display()),
        )
    })?;
    let dir = db.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut prefix = name.to_owned();
    prefix.push("-wal.");
    Ok((dir, prefix))
}

/// The segments of the database at `db`, sorted by seq. Only names of the
/// exact form [`segment_path`] makes are listed; other files are ignored.
pub fn list_segments(db: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let (dir, prefix) = db_dir_and_prefix(db)?;
    let read_from = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir.as_path()
    };
    let entries = std::fs::read_dir(read_from)
        .map_err(|e| io::Error::new(e.kind(), format!("listing {}: {e}", read_from.display())))?;
    let prefix = prefix.as_encoded_bytes();
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| {
            io::Error::new(e.kind(), format!("listing {}: {e}", read_from.display()))
        })?;
        let name = entry.file_name();
        let Some(digits) = name.as_encoded_bytes().strip_prefix(prefix) else {
            continue;
        };
        if digits.len() != 20 || !digits.iter().all(u8::is_ascii_digit) {
            continue;
        }
        let Some(seq) = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((seq, dir.join(&name)));
    }
    out.sort_by_key(|&(seq, _)| seq);
    Ok(out)
}

/// Creates the file of segment `seq` (it must not exist), writes and syncs
/// its header, and syncs the directory so the file survives a power loss.
pub fn create_segment(db: &Path, seq: u64) -> io::Result<WalWriter<UringFile>> {
    let path = segment_path(db, seq);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", path.display())))?;
    let writer = WalWriter::create(UringFile::from_file(file, &path)?, seq)?;
    sync_dir(path.parent().unwrap_or(Path::new("")))?;
    Ok(writer)
}

/// Opens segment `seq` for [`WalWriter::open_for_append`].
pub fn open_segment(db: &Path, seq: u64, valid_len: u64) -> io::Result<WalWriter<UringFile>> {
    let path = segment_path(db, seq);
    WalWriter::open_for_append(UringFile::open(&path, false)?, seq, valid_len)
}

/// Deletes the segments older than `seq` (after a checkpoint that covers
/// them has committed) and syncs the directory. Returns how many went.
pub fn remove_segments_before(db: &Path, seq: u64) -> io::Result<usize> {
    let mut removed = 0;
    for (s, path) in list_segments(db)? {
        if s >= seq {
            break;
        }
        std::fs::remove_file(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("removing {}: {e}", path.display())))?;
        removed += 1;
    }
    if removed > 0 {
        let (dir, _) = db_dir_and_prefix(db)?;
        sync_dir(&dir)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::super::io::{CrashMode, Fault, SimFile};
    use super::*;
    use nix::libc;
    use proptest::prelude::*;
    use std::convert::Infallible;

    const P: &str = "sim-wal";

    fn framed(payloads: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            frame(&mut out, p).unwrap();
        }
        out
    }

    fn replay_bytes(data: Vec<u8>, seq: u64) -> Result<(Vec<Vec<u8>>, ReplayStats), WalError> {
        let mut f = SimFile::from_bytes(data);
        let mut got = Vec::new();
        let stats = read_segment(&mut f, Path::new(P), seq, |p| {
            got.push(p.to_vec());
            Ok::<(), Infallible>(())
        })?;
        Ok((got, stats))
    }

    fn payloads(n: usize, seed: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let len = (i * 7 + seed) % 50;
                (0..len).map(|j| (i + j + seed) as u8).collect()
            })
            .collect()
    }

    /// A segment holding `records`, and the offset where each record starts.
    fn segment_with(records: &[Vec<u8>], seq: u64) -> (Vec<u8>, Vec<u64>) {
        let f = SimFile::new();
        let mut w = WalWriter::create(f.clone_handle(), seq).unwrap();
        let mut starts = Vec::new();
        for r in records {
            starts.push(w.len());
            w.append(&framed(std::slice::from_ref(r))).unwrap();
        }
        w.sync().unwrap();
        (f.contents(), starts)
    }

    proptest! {
        #[test]
        fn round_trip(records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..60),
                      splits in proptest::collection::vec(1usize..8, 1..20),
                      seq in any::<u64>()) {
            let f = SimFile::new();
            let mut w = WalWriter::create(f.clone_handle(), seq).unwrap();
            // Append in batches of varying sizes, syncing after each.
            let mut i = 0;
            let mut s = 0;
            while i < records.len() {
                let n = splits[s % splits.len()].min(records.len() - i);
                w.append(&framed(&records[i..i + n])).unwrap();
                w.sync().unwrap();
                i += n;
                s += 1;
            }
            let expected_len = HEADER_LEN + records.iter().map(|r| framed_len(r.len()) as u64).sum::<u64>();
            prop_assert_eq!(w.len(), expected_len);
            prop_assert_eq!(w.synced_len(), expected_len);
            let (got, stats) = replay_bytes(f.crash(CrashMode::DropUnsynced), seq).unwrap();
            prop_assert_eq!(&got, &records);
            prop_assert_eq!(stats.records, records.len() as u64);
            prop_assert_eq!(stats.valid_len, expected_len);
            prop_assert_eq!(stats.file_len, expected_len);
            prop_assert_eq!(stats.discarded_bytes, 0);
            prop_assert_eq!(stats.damage, None);
        }
    }

    #[test]
    fn frame_layout() {
        let mut out = Vec::new();
        frame(&mut out, b"hello").unwrap();
        assert_eq!(out.len(), framed_len(5));
        assert_eq!(&out[0..4], &5u32.to_le_bytes());
        assert_eq!(
            &out[4..8],
            &mask_crc(crc32c::crc32c(b"hello")).to_le_bytes()
        );
        assert_eq!(&out[8..], b"hello");
        // An empty record does not look like zeros.
        out.clear();
        frame(&mut out, b"").unwrap();
        assert_ne!(out, [0u8; 8]);
        let h = encode_header(7);
        assert_eq!(&h[0..8], b"BMWAL\0\0\x01");
        assert_eq!(check_header(&h, 7), Ok(()));
    }

    #[test]
    fn frame_refuses_oversized_payload() {
        let big = vec![0u8; MAX_RECORD_LEN + 1];
        let mut out = vec![1, 2, 3];
        let err = frame(&mut out, &big).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn torn_tail_at_every_byte_of_last_record() {
        let records = payloads(20, 3);
        let mut records = records;
        records.push((0..100u8).collect()); // the last one, 108 bytes framed
        let (full, starts) = segment_with(&records, 5);
        let last = *starts.last().unwrap();
        for cut in last..full.len() as u64 {
            let (got, stats) = replay_bytes(full[..cut as usize].to_vec(), 5).unwrap();
            assert_eq!(got, records[..records.len() - 1], "cut at {cut}");
            assert_eq!(stats.valid_len, last, "cut at {cut}");
            assert_eq!(stats.discarded_bytes, cut - last);
            if cut == last {
                assert_eq!(stats.damage, None);
            } else if cut - last < RECORD_HEADER_LEN as u64 {
                assert_eq!(
                    stats.damage,
                    Some(TailDamage::TornFraming {
                        offset: last,
                        have: cut - last
                    })
                );
            } else {
                assert!(
                    matches!(stats.damage, Some(TailDamage::TornPayload { offset, len: 100, .. }) if offset == last),
                    "{:?}",
                    stats.damage
                );
            }
        }
        let (got, stats) = replay_bytes(full.clone(), 5).unwrap();
        assert_eq!(got, records);
        assert_eq!(stats.valid_len, full.len() as u64);
    }

    #[test]
    fn torn_write_through_simfile_crash_modes() {
        // The writer appends one batch per call and syncs every third call;
        // after a crash at any point, replay gives a prefix of the records
        // that holds at least every record acknowledged (synced) before it.
        let records = payloads(30, 1);
        let f = SimFile::new();
        let mut w = WalWriter::create(f.clone_handle(), 9).unwrap();
        // (changes when a sync completed, records acknowledged by it)
        let mut acks = vec![(f.changes(), 0usize)];
        for (i, chunk) in records.chunks(3).enumerate() {
            w.append(&framed(chunk)).unwrap();
            if i % 3 == 2 {
                w.sync().unwrap();
                acks.push((f.changes(), (i + 1) * 3));
            }
        }
        let total = f.changes();
        for k in 0..=total {
            let acked = acks.iter().filter(|&&(c, _)| c < k).map(|&(_, n)| n).max();
            let Some(acked) = acked else {
                // The header's sync had not happened yet.
                let res = replay_bytes(f.crash_after(k, CrashMode::DropUnsynced), 9);
                assert!(res.unwrap_err().is_incomplete_header());
                continue;
            };
            let batch_bytes = records[..3]
                .iter()
                .map(|r| framed_len(r.len()))
                .sum::<usize>();
            for mode in [
                CrashMode::DropUnsynced,
                CrashMode::KeepUnsynced,
                CrashMode::TearLastWrite(0),
                CrashMode::TearLastWrite(5),
                CrashMode::TearLastWrite(batch_bytes / 2),
            ] {
                let disk = f.crash_after(k, mode);
                let (got, stats) = replay_bytes(disk.clone(), 9).unwrap();
                assert!(
                    got.len() >= acked,
                    "k={k} {mode:?}: {} < {acked}",
                    got.len()
                );
                assert_eq!(got, records[..got.len()], "k={k} {mode:?}");
                assert_eq!(stats.valid_len + stats.discarded_bytes, disk.len() as u64);
            }
        }
    }

    #[test]
    fn flipped_byte_in_middle_record_stops_there() {
        let records = payloads(9, 11);
        let (full, starts) = segment_with(&records, 2);
        let mid = 4;
        let (from, to) = (starts[mid], starts[mid + 1]);
        for at in from..to {
            for bit in [0x01u8, 0x80] {
                let mut bad = full.clone();
                bad[at as usize] ^= bit;
                let (got, stats) = replay_bytes(bad, 2).unwrap();
                assert_eq!(got, records[..mid], "byte {at} bit {bit}");
                assert_eq!(stats.valid_len, from);
                assert_eq!(stats.discarded_bytes, full.len() as u64 - from);
                let damage = stats.damage.expect("damage reported");
                let text = damage.to_string();
                assert!(text.contains(&format!("offset {from}")), "{text}");
            }
        }
        // The length made absurd.
        let mut bad = full.clone();
        bad[from as usize + 3] = 0x80;
        let (_, stats) = replay_bytes(bad, 2).unwrap();
        assert!(
            matches!(stats.damage, Some(TailDamage::AbsurdLength { .. })),
            "{:?}",
            stats.damage
        );
        // A checksum error names itself.
        let mut bad = full.clone();
        bad[from as usize + 9] ^= 0xff;
        let (_, stats) = replay_bytes(bad, 2).unwrap();
        assert!(
            matches!(stats.damage, Some(TailDamage::BadChecksum { .. })),
            "{:?}",
            stats.damage
        );
        assert!(stats.damage.unwrap().to_string().contains("checksum"));
    }

    #[test]
    fn zero_filled_tail_is_not_replayed() {
        let records = payloads(5, 0);
        let (mut full, _) = segment_with(&records, 1);
        let valid = full.len() as u64;
        full.resize(full.len() + 4096, 0);
        let (got, stats) = replay_bytes(full, 1).unwrap();
        assert_eq!(got, records);
        assert_eq!(stats.valid_len, valid);
        assert_eq!(stats.discarded_bytes, 4096);
        assert!(matches!(
            stats.damage,
            Some(TailDamage::BadChecksum { len: 0, .. })
        ));
    }

    #[test]
    fn empty_segment_and_empty_records() {
        let (full, _) = segment_with(&[], 3);
        assert_eq!(full.len() as u64, HEADER_LEN);
        let (got, stats) = replay_bytes(full, 3).unwrap();
        assert!(got.is_empty());
        assert_eq!(stats.valid_len, HEADER_LEN);
        assert_eq!(stats.damage, None);
        let records = vec![vec![], vec![1], vec![], vec![]];
        let (full, _) = segment_with(&records, 3);
        let (got, stats) = replay_bytes(full, 3).unwrap();
        assert_eq!(got, records);
        assert_eq!(stats.records, 4);
        assert_eq!(stats.payload_bytes, 1);
    }

    #[test]
    fn records_larger_than_the_read_chunk() {
        let mut records = payloads(10, 2);
        records.insert(
            3,
            (0..3 * READ_CHUNK + 17).map(|i| (i % 251) as u8).collect(),
        );
        records.push((0..READ_CHUNK).map(|i| (i % 13) as u8).collect());
        records.extend(payloads(10, 5));
        let (full, starts) = segment_with(&records, 4);
        let (got, stats) = replay_bytes(full.clone(), 4).unwrap();
        assert_eq!(got, records);
        assert_eq!(stats.damage, None);
        // Torn inside the big record.
        let cut = starts[3] as usize + 2 * READ_CHUNK;
        let (got, stats) = replay_bytes(full[..cut].to_vec(), 4).unwrap();
        assert_eq!(got, records[..3]);
        assert!(matches!(stats.damage, Some(TailDamage::TornPayload { .. })));
    }

    #[test]
    fn bad_headers_are_errors_naming_the_file() {
        let (full, _) = segment_with(&payloads(3, 0), 6);
        let check = |data: Vec<u8>, seq: u64, want: &dyn Fn(&HeaderProblem) -> bool| {
            let err = replay_bytes(data, seq).unwrap_err();
            match &err {
                WalError::Header { path, problem } => {
                    assert_eq!(path, Path::new(P));
                    assert!(want(problem), "{problem:?}");
                }
                other => panic!("not a header error: {other:?}"),
            }
            assert!(err.to_string().contains(P), "{err}");
            err
        };
        let err = check(full.clone(), 7, &|p| {
            matches!(
                p,
                HeaderProblem::WrongSeq {
                    expected: 7,
                    found: 6
                }
            )
        });
        assert!(!err.is_incomplete_header());
        let mut bad = full.clone();
        bad[0] = b'X';
        check(bad, 6, &|p| matches!(p, HeaderProblem::BadMagic { .. }));
        let mut bad = full.clone();
        bad[17] ^= 1;
        check(bad, 6, &|p| matches!(p, HeaderProblem::BadChecksum { .. }));
        let mut bad = full.clone();
        bad[8] = 2;
        let crc = crc32c::crc32c(&bad[0..24]);
        bad[24..28].copy_from_slice(&crc.to_le_bytes());
        check(bad, 6, &|p| {
            matches!(p, HeaderProblem::UnsupportedVersion { found: 2 })
        });
        let err = check(full[..20].to_vec(), 6, &|p| {
            matches!(p, HeaderProblem::TooShort { len: 20 })
        });
        assert!(err.is_incomplete_header());
        let err = check(Vec::new(), 6, &|p| {
            matches!(p, HeaderProblem::TooShort { len: 0 })
        });
        assert!(err.is_incomplete_header());
        let err = check(vec![0; 100], 6, &|p| matches!(p, HeaderProblem::Zeroed));
        assert!(err.is_incomplete_header());
    }

    #[test]
    fn visitor_error_stops_replay_with_offset() {
        let records = payloads(5, 0);
        let (full, starts) = segment_with(&records, 1);
        let mut f = SimFile::from_bytes(full);
        let mut seen = 0;
        let err = read_segment(&mut f, Path::new(P), 1, |_| {
            seen += 1;
            if seen == 3 {
                Err("cannot decode")
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        match &err {
            WalError::Visit { offset, seq, .. } => {
                assert_eq!(*offset, starts[2]);
                assert_eq!(*seq, 1);
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("cannot decode"), "{err}");
        assert!(StdError::source(&err).is_some());
    }

    #[test]
    fn read_errors_are_reported() {
        let (full, _) = segment_with(&payloads(5, 0), 1);
        let mut f = SimFile::from_bytes(full);
        f.inject(Fault::Read(libc::EIO));
        let err = read_segment(&mut f, Path::new(P), 1, |_| Ok::<(), Infallible>(())).unwrap_err();
        assert!(matches!(err, WalError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains(P));
    }

    #[test]
    fn reopen_after_torn_tail_truncates_and_continues() {
        let first = payloads(10, 1);
        let f = SimFile::new();
        let mut w = WalWriter::create(f.clone_handle(), 3).unwrap();
        w.append(&framed(&first)).unwrap();
        w.sync().unwrap();
        let lost = payloads(4, 9);
        w.append(&framed(&lost)).unwrap();
        // Power fails during the unsynced write: 13 bytes of it landed.
        let disk = f.crash(CrashMode::TearLastWrite(13));
        let file = SimFile::from_bytes(disk);
        let mut got = Vec::new();
        let stats = read_segment(&mut file.clone_handle(), Path::new(P), 3, |p| {
            got.push(p.to_vec());
            Ok::<(), Infallible>(())
        })
        .unwrap();
        assert_eq!(got, first);
        assert_eq!(stats.discarded_bytes, 13);
        assert!(stats.damage.is_some());

        let mut w = WalWriter::open_for_append(file.clone_handle(), 3, stats.valid_len).unwrap();
        assert_eq!(w.len(), stats.valid_len);
        assert_eq!(file.contents().len() as u64, stats.valid_len);
        let second = payloads(3, 20);
        w.append(&framed(&second)).unwrap();
        w.sync().unwrap();
        let (got, stats) = replay_bytes(file.crash(CrashMode::DropUnsynced), 3).unwrap();
        let mut want = first.clone();
        want.extend(second);
        assert_eq!(got, want);
        assert_eq!(stats.damage, None);

        // Wrong arguments are refused.
        assert!(WalWriter::open_for_append(file.clone_handle(), 4, HEADER_LEN).is_err());
        assert!(WalWriter::open_for_append(file.clone_handle(), 3, 5).is_err());
        assert!(WalWriter::open_for_append(file.clone_handle(), 3, 1 << 40).is_err());
    }

    #[test]
    fn failed_append_is_cut_off_and_writer_continues() {
        let f = SimFile::new();
        let mut w = WalWriter::create(f.clone_handle(), 1).unwrap();
        let a = payloads(3, 0);
        w.append(&framed(&a)).unwrap();
        let len = w.len();
        f.inject(Fault::Write {
            errno: libc::ENOSPC,
            landed: 20,
        });
        let err = w.append(&framed(&payloads(3, 7))).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(w.len(), len);
        assert_eq!(f.contents().len() as u64, len);
        assert!(w.failure().is_none());
        let b = vec![b"short".to_vec()];
        w.append(&framed(&b)).unwrap();
        w.sync().unwrap();
        let (got, stats) = replay_bytes(f.crash(CrashMode::DropUnsynced), 1).unwrap();
        assert_eq!(got, [a.clone(), b].concat());
        assert_eq!(stats.damage, None);

        // If the cut fails too, the writer gives up.
        f.inject(Fault::Write {
            errno: libc::EIO,
            landed: 3,
        });
        f.inject(Fault::Truncate(libc::EIO));
        assert!(w.append(&framed(&a)).is_err());
        assert!(w.failure().is_some());
        assert!(w.append(&framed(&a)).is_err());
        assert!(w.sync().is_err());
    }

    #[test]
    fn failed_sync_fails_the_writer_for_good() {
        let f = SimFile::new();
        let mut w = WalWriter::create(f.clone_handle(), 1).unwrap();
        w.append(&framed(&payloads(2, 0))).unwrap();
        f.inject(Fault::Sync(libc::EIO));
        let err = w.sync().unwrap_err();
        assert_eq!(super::super::io::os_errno(&err), Some(libc::EIO));
        assert_eq!(w.synced_len(), HEADER_LEN);
        let err = w.sync().unwrap_err();
        assert!(err.to_string().contains("unusable"), "{err}");
        assert!(w.append(&framed(&payloads(1, 0))).is_err());
        // Nothing past the header reached the disk.
        let (got, _) = replay_bytes(f.crash(CrashMode::DropUnsynced), 1).unwrap();
        assert!(got.is_empty());
    }

    #[test]
    fn sync_is_skipped_when_nothing_changed() {
        let f = SimFile::new();
        let mut w = WalWriter::create(f.clone_handle(), 1).unwrap();
        let syncs = f.syncs();
        w.sync().unwrap();
        w.append(&[]).unwrap();
        w.sync().unwrap();
        assert_eq!(f.syncs(), syncs);
        w.append(&framed(&payloads(1, 0))).unwrap();
        w.sync().unwrap();
        w.sync().unwrap();
        assert_eq!(f.syncs(), syncs + 1);
        assert!(!w.is_empty());
        assert_eq!(w.seq(), 1);
    }

    #[test]
    fn segment_naming_and_listing() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("bitmapist.db");
        assert_eq!(
            segment_path(&db, 42),
            dir.path().join("bitmapist.db-wal.00000000000000000042")
        );
        assert_eq!(
            segment_path(Path::new("db"), u64::MAX),
            Path::new("db-wal.18446744073709551615")
        );
        for seq in [3u64, 1, 10, 2] {
            let mut w = create_segment(&db, seq).unwrap();
            w.append(&framed(&payloads(2, seq as usize))).unwrap();
            w.sync().unwrap();
        }
        // Creating an existing segment is refused (never wipes records).
        assert_eq!(
            create_segment(&db, 3).err().unwrap().kind(),
            io::ErrorKind::AlreadyExists
        );
        // Decoys.
        for name in [
            "bitmapist.db-wal.123",
            "bitmapist.db-wal.00000000000000000001.tmp",
            "bitmapist.db-wal.0000000000000000000x",
            "bitmapist.db-wal.99999999999999999999",
            "other.db-wal.00000000000000000001",
            "bitmapist.db",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let segs = list_segments(&db).unwrap();
        let seqs: Vec<u64> = segs.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [1, 2, 3, 10]);
        for (seq, path) in &segs {
            assert_eq!(path, &segment_path(&db, *seq));
            let mut n = 0;
            let stats = replay_segment(path, *seq, |_| {
                n += 1;
                Ok::<(), Infallible>(())
            })
            .unwrap();
            assert_eq!(n, 2);
            assert_eq!(stats.damage, None);
        }
        // Reopen through io_uring and continue.
        let mut w = open_segment(
            &db,
            10,
            std::fs::metadata(segment_path(&db, 10)).unwrap().len(),
        )
        .unwrap();
        w.append(&framed(&payloads(1, 0))).unwrap();
        w.sync().unwrap();
        let stats =
            replay_segment(&segment_path(&db, 10), 10, |_| Ok::<(), Infallible>(())).unwrap();
        assert_eq!(stats.records, 3);

        assert_eq!(remove_segments_before(&db, 3).unwrap(), 2);
        let seqs: Vec<u64> = list_segments(&db)
            .unwrap()
            .iter()
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(seqs, [3, 10]);
        assert_eq!(remove_segments_before(&db, 3).unwrap(), 0);
        assert!(dir.path().join("bitmapist.db-wal.123").exists());
        assert!(list_segments(Path::new("/")).is_err());
    }

    #[test]
    fn uring_backed_wal_survives_reopen_with_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("d");
        let records = payloads(1000, 4);
        let mut w = create_segment(&db, 1).unwrap();
        w.append(&framed(&records)).unwrap();
        w.sync().unwrap();
        drop(w);
        // A torn tail: half a record's worth of bytes at the end.
        let path = segment_path(&db, 1);
        let mut bytes = std::fs::read(&path).unwrap();
        let good = bytes.len() as u64;
        bytes.extend_from_slice(&framed(&[vec![7; 40]])[..20]);
        std::fs::write(&path, &bytes).unwrap();
        let mut got = Vec::new();
        let stats = replay_segment(&path, 1, |p| {
            got.push(p.to_vec());
            Ok::<(), Infallible>(())
        })
        .unwrap();
        assert_eq!(got, records);
        assert_eq!(stats.valid_len, good);
        assert_eq!(stats.discarded_bytes, 20);
        let mut w = open_segment(&db, 1, stats.valid_len).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
        w.append(&framed(&records[..1])).unwrap();
        w.sync().unwrap();
        let stats = replay_segment(&path, 1, |_| Ok::<(), Infallible>(())).unwrap();
        assert_eq!(stats.records, 1001);
        assert_eq!(stats.damage, None);
    }

    #[test]
    fn replay_one_million_small_records() {
        const N: usize = 1_000_000;
        let payload = [0x5au8; 40];
        let f = SimFile::new();
        let mut w = WalWriter::create(f.clone_handle(), 1).unwrap();
        let mut batch = Vec::with_capacity(framed_len(40) * 10_000);
        for chunk in 0..N / 10_000 {
            batch.clear();
            for i in 0..10_000 {
                let mut p = payload;
                p[..8].copy_from_slice(&((chunk * 10_000 + i) as u64).to_le_bytes());
                frame(&mut batch, &p).unwrap();
            }
            w.append(&batch).unwrap();
        }
        w.sync().unwrap();
        let mut f = SimFile::from_bytes(f.contents());
        let started = std::time::Instant::now();
        let mut n = 0u64;
        let mut sum = 0u64;
        let stats = read_segment(&mut f, Path::new(P), 1, |p| {
            sum = sum.wrapping_add(le_u64(p));
            n += 1;
            Ok::<(), Infallible>(())
        })
        .unwrap();
        let took = started.elapsed();
        assert_eq!(n, N as u64);
        assert_eq!(stats.records, N as u64);
        assert_eq!(sum, (N as u64 - 1) * N as u64 / 2);
        assert_eq!(stats.damage, None);
        println!(
            "replayed {N} records of 40 bytes in {took:?} ({:.2} M records/s)",
            N as f64 / took.as_secs_f64() / 1e6
        );
    }
}
