//! The checks behind every fuzz target, shared by the libFuzzer targets in
//! `fuzz/fuzz_targets/` and by `tests/fuzz_regressions.rs` (which replays the
//! committed corpus and every regression input through the same functions on
//! stable Rust, without libFuzzer). Both include this file with `#[path]`.
//!
//! Each check takes untrusted bytes and must return normally: any panic, any
//! hang and any allocation sized by a length field in the input is a bug in
//! the code under test (or here). Where a check knows a property of a
//! correct result it asserts it.

#![allow(dead_code)]

use bitmapist_server::command::{self, Ctx, Session};
use bitmapist_server::config::Config;
use bitmapist_server::import::bolt::{self, BoltFile};
use bitmapist_server::keyspace::glob::{self, Pattern};
use bitmapist_server::keyspace::{BitOp, BitString, Keyspace, RangeUnit};
use bitmapist_server::persistence::{PersistStats, Storage, WriteHold};
use bitmapist_server::resp::parser::{self, Limits, Parsed, ProtocolError};
use bitmapist_server::resp::ReplyBuf;
use bitmapist_server::server::Server;
use bitmapist_server::storage::alloc::Allocator;
use bitmapist_server::storage::btree::{self, EntryMeta, PageSource, Payload};
use bitmapist_server::storage::io::SimFile;
use bitmapist_server::storage::log::{FsyncPolicy, Log};
use bitmapist_server::storage::page::{self, Meta, MAGIC, PAGE_SIZE};
use bitmapist_server::storage::pagefile::{decode_payload, encode_payload, PageFile};
use bitmapist_server::storage::wal::{self, WalWriter};
use bitmapist_server::storage::StorageError;
use std::borrow::Cow;
use std::cell::Cell;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

/// A check: takes one input, panics on a finding.
pub type Check = fn(&[u8]);

/// Every target: its name (the file name under `fuzz_targets/`, the corpus
/// and regression directory) and its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("resp_parser", resp_parser),
    ("glob", glob),
    ("wal_segment", wal_segment),
    ("page_directory", page_directory),
    ("bolt_reader", bolt_reader),
    ("roaring_payload", roaring_payload),
];

/// A tiny deterministic generator, for choices derived from the input.
struct Rng(u64);

impl Rng {
    fn new(seed: &[u8]) -> Rng {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for &b in seed.iter().take(16) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h | 1)
    }
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// Splits `data` at a point given by its first two bytes.
fn split2(data: &[u8]) -> (&[u8], &[u8]) {
    if data.len() < 2 {
        return (data, &[]);
    }
    let at = usize::from(u16::from_le_bytes([data[0], data[1]]));
    let rest = &data[2..];
    rest.split_at(at % (rest.len() + 1))
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_le_bytes(a)
}

// ------------------------------------------------------------------ RESP

/// One parse outcome in owned form, for comparing two ways of feeding.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Request(Vec<Vec<u8>>, usize),
    Skip(usize),
    Error(Vec<u8>),
}

fn is_too_big(e: &ProtocolError) -> bool {
    let t = e.as_bytes();
    t == ProtocolError::TOO_BIG_INLINE
        || t == ProtocolError::TOO_BIG_MBULK_COUNT
        || t == ProtocolError::TOO_BIG_BULK_COUNT
}

/// Checks one `parse` result against the buffer it was given; returns the
/// step, or `Err(need)` for `Incomplete` (with `need` checked).
fn checked_step(buf: &[u8], limits: &Limits) -> Result<Step, usize> {
    match parser::parse(buf, limits) {
        Ok(Parsed::Request { args, consumed }) => {
            assert!(consumed > 0, "a request consumed nothing");
            assert!(
                consumed <= buf.len(),
                "consumed {consumed} of {}",
                buf.len()
            );
            assert!(!args.is_empty(), "a request without arguments");
            let total: usize = args.iter().map(|a| a.len()).sum();
            assert!(total <= consumed, "arguments longer than the request");
            if buf[0] == b'*' {
                for a in &args {
                    // Multibulk arguments are slices of the buffer.
                    assert!(matches!(a, Cow::Borrowed(_)), "a bulk was copied");
                    assert!(a.len() <= limits.max_bulk_len);
                    if limits.unauthenticated {
                        assert!(a.len() <= 16384);
                    }
                }
                assert!(args.len() <= limits.max_multibulk_len);
                if limits.unauthenticated {
                    assert!(args.len() <= 10);
                }
            } else {
                // An inline request ends with the first newline.
                assert_eq!(buf[consumed - 1], b'\n');
                assert!(!buf[..consumed - 1].contains(&b'\n'));
            }
            Ok(Step::Request(
                args.iter().map(|a| a.to_vec()).collect(),
                consumed,
            ))
        }
        Ok(Parsed::Skip { consumed }) => {
            assert!(consumed > 0, "a skip consumed nothing");
            assert!(consumed <= buf.len(), "skipped {consumed} of {}", buf.len());
            Ok(Step::Skip(consumed))
        }
        Ok(Parsed::Incomplete { need }) => {
            assert!(
                need > buf.len(),
                "incomplete with need {need} <= {}",
                buf.len()
            );
            Err(need)
        }
        Err(e) => {
            assert!(!e.as_bytes().is_empty());
            Ok(Step::Error(e.as_bytes().to_vec()))
        }
    }
}

/// Parses everything in `buf` like a connection that has it all buffered.
fn parse_all(buf: &[u8], limits: &Limits) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut pos = 0;
    // Every step consumes at least one byte, so this bounds the loop.
    for _ in 0..=buf.len() {
        match checked_step(&buf[pos..], limits) {
            Err(_) => return steps,
            Ok(Step::Error(e)) => {
                steps.push(Step::Error(e));
                return steps;
            }
            Ok(s @ (Step::Request(_, n) | Step::Skip(n))) => {
                pos += n;
                steps.push(s);
            }
        }
    }
    panic!("parse made no progress");
}

/// Parses `data` as it arrives in chunks (sizes drawn from `rng`), the way
/// the connection does: after `Incomplete { need }` it parses again only
/// once `need` bytes are buffered.
fn parse_chunked(data: &[u8], limits: &Limits, rng: &mut Rng) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut need = 1;
    while fed < data.len() {
        let n = (1 + rng.below(96) as usize).min(data.len() - fed);
        buf.extend_from_slice(&data[fed..fed + n]);
        fed += n;
        if buf.len() < need {
            continue;
        }
        loop {
            match checked_step(&buf, limits) {
                Err(n) => {
                    need = n;
                    break;
                }
                Ok(Step::Error(e)) => {
                    steps.push(Step::Error(e));
                    return steps;
                }
                Ok(s @ (Step::Request(_, n) | Step::Skip(n))) => {
                    buf.drain(..n);
                    steps.push(s);
                }
            }
        }
    }
    steps
}

/// `resp_parser`: the request parser over the whole input and over the
/// input arriving in chunks, with default, small and unauthenticated limits.
pub fn resp_parser(data: &[u8]) {
    let small = Limits {
        max_bulk_len: 64,
        max_multibulk_len: 8,
        max_inline_len: 32,
        unauthenticated: false,
    };
    let unauth = Limits {
        unauthenticated: true,
        ..Limits::default()
    };
    for limits in [Limits::default(), small, unauth] {
        let whole = parse_all(data, &limits);
        let chunked = parse_chunked(data, &limits, &mut Rng::new(data));
        // Both see the same requests, up to a "too big" error (which
        // depends on how much was buffered when the line was looked at,
        // as in Redis).
        for (a, b) in whole.iter().zip(&chunked) {
            let too_big = |s: &Step| match s {
                Step::Error(e) => is_too_big(&ProtocolError(Cow::Owned(e.clone()))),
                _ => false,
            };
            if too_big(a) || too_big(b) {
                break;
            }
            assert_eq!(a, b, "whole-buffer and chunked parsing differ");
        }
        let errs = |s: &[Step]| s.iter().any(|s| matches!(s, Step::Error(_)));
        if !errs(&whole) && !errs(&chunked) {
            assert_eq!(whole, chunked, "whole-buffer and chunked parsing differ");
        }
    }
    // The batch prefetch's look ahead: where it sees a request, the parser
    // sees the same one (length, name, key).
    if let Some(r) = parser::skim(data) {
        match parser::parse(data, &Limits::default()) {
            Ok(Parsed::Request { args, consumed }) => {
                assert_eq!(consumed, r.len, "skim and parse differ in length");
                assert_eq!(&*args[0], r.name, "skim and parse differ in the name");
                assert_eq!(
                    args.get(1).map(|a| &**a),
                    r.key,
                    "skim and parse differ in the key"
                );
            }
            other => panic!("skim saw a request where parse gave {other:?}"),
        }
    }
}

// ------------------------------------------------------------------ glob

/// `glob`: the input is a pattern and a subject; the compiled and one-shot
/// matchers agree, every match starts with the literal prefix, and escaped
/// literals match themselves.
pub fn glob(data: &[u8]) {
    let (pat, subject) = split2(data);
    let compiled = Pattern::new(pat);
    let m = compiled.matches(subject);
    assert_eq!(
        m,
        glob::matches(pat, subject),
        "Pattern::matches != matches"
    );
    let prefix = glob::literal_prefix(pat);
    if m {
        assert!(
            subject.starts_with(&prefix),
            "a match does not start with the literal prefix {prefix:?}"
        );
    }
    if glob::matches_everything(pat) && !subject.is_empty() {
        assert!(m, "a match-everything pattern did not match");
    }
    // A pattern without special bytes matches exactly itself.
    if !pat.iter().any(|b| matches!(b, b'*' | b'?' | b'[' | b'\\')) {
        assert_eq!(m, pat == subject);
        assert_eq!(prefix, pat);
    }
    // Every byte of the subject escaped: matches the subject only, and is
    // its own literal prefix.
    let mut escaped = Vec::with_capacity(subject.len() * 2 + 1);
    for &b in subject {
        escaped.push(b'\\');
        escaped.push(b);
    }
    assert!(
        glob::matches(&escaped, subject),
        "an escaped literal did not match itself"
    );
    assert_eq!(glob::literal_prefix(&escaped), subject);
    if !subject.is_empty() {
        assert!(
            !glob::matches(&escaped, &subject[1..]),
            "an escaped literal matched a shorter subject"
        );
        // The subject's own prefix followed by `*` matches it.
        let cut = subject.len() / 2;
        let mut star = Vec::with_capacity(cut * 2 + 1);
        for &b in &subject[..cut] {
            star.push(b'\\');
            star.push(b);
        }
        star.push(b'*');
        assert!(glob::matches(&star, subject), "prefix* did not match");
        assert!(Pattern::new(&star).matches(subject));
    }
    // The pattern against the subject's prefixes (each must agree too).
    for cut in [0, subject.len() / 3, subject.len().saturating_sub(1)] {
        let s = &subject[..cut.min(subject.len())];
        assert_eq!(compiled.matches(s), glob::matches(pat, s));
    }
}

// ------------------------------------------------------------------ WAL

/// A server over an empty in-memory database, for replaying log records.
/// Its checkpointer channel has no receiver: SAVE and BGSAVE fail at once.
fn replay_server() -> Server {
    let (_file, committed) =
        PageFile::open_io(SimFile::new(), Path::new("fuzz.db")).expect("open an empty database");
    let keyspace = Keyspace::new(Arc::new(committed), 1 << 20);
    let (tx, _) = mpsc::channel();
    let storage = Storage {
        log: Arc::new(Log::new(FsyncPolicy::No, 1, 0)),
        requests: Mutex::new(tx),
        stats: Mutex::new(PersistStats::default()),
        db_path: PathBuf::from("fuzz.db"),
        write_hold: WriteHold::new(1 << 20),
    };
    Server::new(Config::defaults(), keyspace, storage)
}

/// Whether a log record may be replayed by the harness. The record format
/// is `count: u32`, then per command `time: u64`, `db: u8`, `argc: u32`,
/// per argument `len: u32` + bytes. Commands are looked at up to the first
/// one that does not decode (replay stops there with an error). Refused:
/// commands whose legitimate cost is set by a number in the input, not by
/// its size (a `SETBIT` past 2^24 makes a string up to 512 MiB long that a
/// `GET`, `MGET` or `SET ... GET` then copies out); the real log only ever
/// holds write commands anyway.
fn replay_allowed(record: &[u8]) -> bool {
    let mut rec = record;
    let mut take = |n: usize| -> Option<&[u8]> {
        if rec.len() < n {
            return None;
        }
        let (h, t) = rec.split_at(n);
        rec = t;
        Some(h)
    };
    let u32_of = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let Some(count) = take(4).map(u32_of) else {
        return true;
    };
    for _ in 0..count {
        if take(9).is_none() {
            return true;
        }
        let Some(argc) = take(4).map(u32_of) else {
            return true;
        };
        let mut argv: Vec<&[u8]> = Vec::new();
        for _ in 0..argc {
            let Some(len) = take(4).map(u32_of) else {
                break;
            };
            match take(len) {
                Some(a) => argv.push(a),
                None => break,
            }
        }
        let Some(name) = argv.first() else {
            continue;
        };
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("get") || is("mget") || (is("set") && argv.len() > 3) {
            return false;
        }
        if is("setbit") {
            let offset = argv
                .get(2)
                .and_then(|o| std::str::from_utf8(o).ok())
                .and_then(|o| o.parse::<u64>().ok());
            if offset.is_none_or(|o| o > 1 << 24) {
                return false;
            }
        }
    }
    true
}

/// Payloads framed from `body`: each is prefixed by a one-byte length.
fn framed_payloads(body: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some((&n, tail)) = rest.split_first() {
        // 0xff: the rest of the input is one payload.
        let n = if n == 0xff {
            tail.len()
        } else {
            usize::from(n).min(tail.len())
        };
        let (p, t) = tail.split_at(n);
        out.push(p);
        rest = t;
    }
    out
}

/// Reads a segment, checking the stats against the records handed out;
/// returns the stats and the payloads.
fn read_checked(bytes: &[u8], seq: u64) -> Option<(wal::ReplayStats, Vec<Vec<u8>>)> {
    let mut file = SimFile::from_bytes(bytes.to_vec());
    let mut seen: Vec<Vec<u8>> = Vec::new();
    let stats = wal::read_segment(&mut file, Path::new("fuzz.db-wal"), seq, |p| {
        seen.push(p.to_vec());
        Ok::<(), String>(())
    });
    let stats = match stats {
        Ok(s) => s,
        Err(e) => {
            let _ = e.to_string();
            assert!(
                matches!(e, wal::WalError::Header { .. }),
                "unexpected error reading an in-memory segment: {e}"
            );
            assert!(wal::check_header(bytes, seq).is_err());
            return None;
        }
    };
    assert!(wal::check_header(bytes, seq).is_ok());
    let len = bytes.len() as u64;
    assert_eq!(stats.file_len, len);
    assert!(stats.valid_len >= wal::HEADER_LEN && stats.valid_len <= len);
    assert_eq!(stats.discarded_bytes, len - stats.valid_len);
    assert_eq!(stats.records, seen.len() as u64);
    let payload: u64 = seen.iter().map(|p| p.len() as u64).sum();
    assert_eq!(stats.payload_bytes, payload);
    assert_eq!(
        stats.valid_len,
        wal::HEADER_LEN + payload + 8 * stats.records,
        "valid length is not the header plus the records"
    );
    if stats.damage.is_none() {
        assert_eq!(stats.valid_len, len, "no damage but bytes left over");
    } else {
        assert!(
            stats.valid_len < len,
            "damage reported at the end of the file"
        );
        let _ = stats.damage.as_ref().map(|d| d.to_string());
    }
    Some((stats, seen))
}

/// `wal_segment`: the segment reader over raw bytes or over well-framed
/// records (optionally torn or damaged), recovery (cut the tail, append,
/// read again), and the replay of each record through the command layer.
pub fn wal_segment(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    const SEQ: u64 = 7;
    let (bytes, seq, framed) = if mode & 1 == 1 {
        // Raw file; the sequence number its header names (so that a good
        // header passes), else 1.
        let seq = if body.len() >= 24 {
            le_u64(&body[16..24])
        } else {
            1
        };
        for s in [seq, seq.wrapping_add(1), 0] {
            let _ = wal::check_header(body, s).map_err(|p| p.to_string());
        }
        (body.to_vec(), seq, None)
    } else {
        let payloads = framed_payloads(body);
        let mut file = wal::encode_header(SEQ).to_vec();
        for p in &payloads {
            wal::frame(&mut file, p).expect("frame a small payload");
        }
        let clean = file.len();
        if mode & 2 != 0 {
            // Tear the tail.
            let cut = usize::from(mode >> 4) + 1;
            file.truncate(clean.saturating_sub(cut).max(wal::HEADER_LEN as usize));
        }
        if mode & 4 != 0 && file.len() > wal::HEADER_LEN as usize {
            // Damage one byte after the header.
            let span = file.len() - wal::HEADER_LEN as usize;
            let at = wal::HEADER_LEN as usize + (usize::from(mode) * 7919 + body.len()) % span;
            file[at] ^= 0x5a;
        }
        let intact = mode & 6 == 0;
        (file, SEQ, Some((payloads, intact)))
    };

    let Some((stats, seen)) = read_checked(&bytes, seq) else {
        return;
    };
    if let Some((payloads, intact)) = &framed {
        if *intact {
            assert!(
                stats.damage.is_none(),
                "well-framed records reported as damaged"
            );
            assert_eq!(seen.len(), payloads.len());
            for (a, b) in seen.iter().zip(payloads) {
                assert_eq!(a.as_slice(), *b, "a record came back different");
            }
        } else {
            // Records before the damage come back as they were written.
            for (a, b) in seen.iter().zip(payloads) {
                assert_eq!(a.as_slice(), *b, "a record came back different");
            }
        }
    }

    // Recovery: cut the tail off, append one record, read again.
    let mut file = SimFile::from_bytes(bytes.clone());
    let handle = file.clone_handle();
    let mut writer =
        WalWriter::open_for_append(handle, seq, stats.valid_len).expect("reopen for append");
    let mut extra = Vec::new();
    wal::frame(&mut extra, b"appended after recovery").expect("frame");
    writer.append(&extra).expect("append");
    writer.sync().expect("sync");
    drop(writer);
    let after = file_contents(&mut file);
    let (again, seen_again) = read_checked(&after, seq).expect("header still good");
    assert!(again.damage.is_none(), "damage left after recovery");
    assert_eq!(again.records, stats.records + 1);
    assert_eq!(&seen_again[..seen.len()], &seen[..]);

    // Replay through the command layer, as recovery does. Decoding an
    // untrusted record must give an error, not a panic.
    let server = replay_server();
    let client = server.register_client(String::from("fuzz"), String::new());
    let mut session = Session::new(client);
    let mut out = ReplyBuf::new();
    let mut ctx = Ctx::new(&server, &mut session, &mut out);
    for record in seen.iter().take(64) {
        if !replay_allowed(record) {
            continue;
        }
        match command::replay_record(&mut ctx, record) {
            Ok(n) => {
                assert!(record.len() >= 4);
                let _ = n;
            }
            Err(e) => assert!(!e.is_empty()),
        }
    }
    drop(ctx);
    let keys = server.keyspace().total_keys();
    let _ = keys;
}

fn file_contents(file: &mut SimFile) -> Vec<u8> {
    file.contents()
}

// ------------------------------------------------------------ directory

/// Node and meta checksums recomputed, so that the fuzzer gets past them.
pub fn reseal_pages(pages: &mut [u8]) {
    for (i, p) in pages.chunks_mut(PAGE_SIZE).enumerate() {
        if p.len() < PAGE_SIZE {
            continue;
        }
        if i < 2 && p.starts_with(MAGIC) {
            // docs/FORMAT.md: the meta checksum is at byte 192, over 0..192.
            let sum = page::checksum(&p[..192]);
            p[192..196].copy_from_slice(&sum.to_le_bytes());
        } else if matches!(
            p[4],
            page::PAGE_BRANCH | page::PAGE_LEAF | page::PAGE_FREELIST
        ) {
            let sum = page::checksum(&p[4..]);
            p[0..4].copy_from_slice(&sum.to_le_bytes());
        }
    }
}

/// The input as a page file, with a budget of page reads: the harness's
/// guard against the known exponential walk of a directory whose branches
/// share children (see fuzz/regressions/page_directory/README.md).
struct FuzzPages<'a> {
    bytes: &'a [u8],
    trusted: bool,
    reads: Cell<u64>,
    budget: u64,
}

/// Page reads one walk of the harness may make.
const PAGE_READ_BUDGET: u64 = 20_000;

impl PageSource for FuzzPages<'_> {
    fn page(&self, id: u64) -> Result<&[u8], StorageError> {
        self.reads.set(self.reads.get() + 1);
        if self.reads.get() > self.budget {
            return Err(StorageError::corrupt("harness: page read budget spent"));
        }
        let start = usize::try_from(id)
            .ok()
            .and_then(|i| i.checked_mul(PAGE_SIZE))
            .ok_or_else(|| StorageError::corrupt("page id out of range"))?;
        self.bytes
            .get(start..start.saturating_add(PAGE_SIZE))
            .ok_or_else(|| StorageError::corrupt("page past the end"))
    }
    fn verifies_checksums(&self) -> bool {
        self.trusted
    }
}

/// Page reads a full `visit_from` walk of the directory makes on a
/// `page_directory` input (its checksums resealed), counted up to `cap`.
/// A walk should read each page once; see
/// fuzz/regressions/page_directory/README.md for the known bug.
pub fn directory_walk_reads(data: &[u8], cap: u64) -> u64 {
    let Some((_, body)) = data.split_first() else {
        return 0;
    };
    let mut bytes = body.to_vec();
    reseal_pages(&mut bytes);
    let root = bytes
        .get(..PAGE_SIZE)
        .and_then(|p| Meta::decode(p).ok().flatten())
        .map_or(0, |m| m.root);
    let src = FuzzPages {
        bytes: &bytes,
        trusted: false,
        reads: Cell::new(0),
        budget: cap,
    };
    let _ = btree::visit_from(&src, root, b"", &mut |_, _| ControlFlow::Continue(()));
    src.reads.get()
}

/// The payload bytes an entry names, from the input's pages.
fn payload_bytes<'a>(bytes: &'a [u8], meta: &'a EntryMeta) -> Option<&'a [u8]> {
    match &meta.payload {
        Payload::Inline(b) => Some(b),
        Payload::Extent { page, len, .. } => {
            let start = usize::try_from(*page).ok()?.checked_mul(PAGE_SIZE)?;
            bytes.get(start..start.checked_add(*len as usize)?)
        }
    }
}

/// Checks a decoded value against the entry it came from.
fn check_value(value: &BitString, meta: &EntryMeta) {
    assert_eq!(value.len(), meta.byte_len);
    assert_eq!(value.count(), meta.cardinality);
    if let Some(max) = value.bits().max() {
        assert!(u64::from(max) < value.len() * 8);
    }
}

/// `page_directory`: meta pages, node pages, B+tree lookups and walks and
/// the free list over the input as pages; then the input as a whole
/// database file opened with `PageFile::open_io`.
pub fn page_directory(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let mut bytes = body.to_vec();
    if mode & 1 != 0 {
        reseal_pages(&mut bytes);
    }
    let raw = bytes.clone();
    // Whole pages (the tail padded with zeros) for the page-level checks.
    bytes.resize(bytes.len().div_ceil(PAGE_SIZE) * PAGE_SIZE, 0);
    let pages = bytes.len() / PAGE_SIZE;

    let zero = vec![0u8; PAGE_SIZE];
    let p0 = bytes.get(..PAGE_SIZE).unwrap_or(&zero);
    let p1 = bytes.get(PAGE_SIZE..2 * PAGE_SIZE).unwrap_or(&zero);
    let m0 = Meta::decode(p0);
    let m1 = Meta::decode(p1);
    let chosen = page::choose_meta(p0, p1);
    if let (Ok(Some(a)), Ok(Some(b))) = (&m0, &m1) {
        let c = chosen.as_ref().expect("two valid metas, no choice");
        assert_eq!(c.txid, a.txid.max(b.txid));
    }
    for m in [&m0, &m1] {
        if let Ok(Some(m)) = m {
            // A decoded meta encodes back to a page that decodes the same.
            assert_eq!(Meta::decode(&m.encode()).ok().flatten().as_ref(), Some(m));
        }
    }
    for (id, p) in bytes.chunks(PAGE_SIZE).enumerate().take(64) {
        let _ = page::open_node(p, id as u64, &[page::PAGE_BRANCH, page::PAGE_LEAF]);
        let _ = page::open_node(p, id as u64, &[page::PAGE_FREELIST]);
        let _ = page::node_checksum_ok(p);
    }

    let trusted = mode & 2 != 0;
    let src = FuzzPages {
        bytes: &bytes,
        trusted,
        reads: Cell::new(0),
        budget: PAGE_READ_BUDGET,
    };
    let mut roots: Vec<u64> = Vec::new();
    if let Ok(m) = &chosen {
        roots.push(m.root);
        src.reads.set(0);
        let count = m.page_count.min(pages as u64);
        let _ = Allocator::load(&src, m.freelist, count).map(|a| a.free_pages());
    }
    roots.push(u64::from(mode >> 4) % (pages as u64 + 1));
    for &root in &roots {
        // Every entry in order (bounded), then lookups of what was seen.
        let mut seen: Vec<(Vec<u8>, EntryMeta)> = Vec::new();
        src.reads.set(0);
        let walked = btree::visit_from(&src, root, b"", &mut |k, m| {
            seen.push((k.to_vec(), m.clone()));
            if seen.len() >= 512 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        // A complete walk that found every key in order: a walk from any of
        // them starts at it, and a lookup finds it.
        let ordered = matches!(walked, Ok(ControlFlow::Continue(())))
            && seen.windows(2).all(|w| w[0].0 < w[1].0);
        for (k, meta) in seen.iter().take(16) {
            src.reads.set(0);
            let found = btree::lookup(&src, root, k);
            src.reads.set(0);
            let mut first = None;
            let from = btree::visit_from(&src, root, k, &mut |k2, _| {
                first = Some(k2.to_vec());
                ControlFlow::Break(())
            });
            if ordered {
                if let Ok(found) = found {
                    assert!(found.is_none() || found.as_ref() == Some(meta));
                }
                if from.is_ok() {
                    if let Some(f) = first {
                        assert!(
                            f.as_slice() >= k.as_slice(),
                            "a walk from a key started before it"
                        );
                    }
                }
            }
        }
        for probe in [&b""[..], b"\0", b"\0trackist", b"\x0f\xff\xff"] {
            src.reads.set(0);
            let _ = btree::lookup(&src, root, probe);
        }
        src.reads.set(0);
        let mut out = Vec::new();
        let _ = btree::pages_of(&src, root, &mut out);
        for (_, meta) in seen.iter().take(32) {
            if let Some(p) = payload_bytes(&bytes, meta) {
                if let Ok(v) = decode_payload(p, meta) {
                    check_value(&v, meta);
                }
            }
        }
    }

    // The input as a database file.
    if let Ok((file, committed)) = PageFile::open_io(SimFile::from_bytes(raw), Path::new("fuzz.db"))
    {
        let _ = file.free_pages();
        let meta = committed.meta.clone();
        for probe in [&b"\0"[..], b"\0trackist_day_1", b"\x03zz", b"\0plain"] {
            if let Ok(Some(entry)) = committed.lookup(probe) {
                if let Ok(v) = committed.load_value(&entry) {
                    check_value(&v, &entry);
                }
            }
        }
        // The walk itself goes through the budgeted source (an unbounded
        // walk of a shared-children directory is the known bug).
        let src = FuzzPages {
            bytes: &bytes,
            trusted: false,
            reads: Cell::new(0),
            budget: PAGE_READ_BUDGET,
        };
        let mut keys = Vec::new();
        let _ = btree::visit_from(&src, meta.root, b"", &mut |k, _| {
            keys.push(k.to_vec());
            if keys.len() >= 64 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        for k in &keys {
            if let Ok(Some(entry)) = committed.lookup(k) {
                if let Ok(v) = committed.load_value(&entry) {
                    check_value(&v, &entry);
                }
            }
        }
    }
}

// ------------------------------------------------------------------ bbolt

/// FNV-64a, the checksum of bbolt's meta page.
fn fnv64a(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Recomputes the checksums of bbolt meta pages 0 and 1 (page 1 after the
/// page size meta 0 names, else at 4096).
fn reseal_bolt(data: &mut [u8]) {
    let ps = data
        .get(24..28)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .filter(|&ps| (512..=1 << 26).contains(&ps))
        .unwrap_or(4096);
    for at in [0, ps] {
        let m = at + 16;
        if let Some(meta) = data.get_mut(m..m + 64) {
            let sum = fnv64a(&meta[..56]);
            meta[56..64].copy_from_slice(&sum.to_le_bytes());
        }
    }
}

/// `bolt_reader`: the bbolt reader (meta pages, buckets, iteration, lookup)
/// and the Go server's layout on top of it, on the input as a file.
pub fn bolt_reader(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let mut bytes = body.to_vec();
    if mode & 1 != 0 {
        reseal_bolt(&mut bytes);
    }
    let _ = bolt::is_bolt_file(&bytes);
    let _ = bolt::decode_go_varint(&bytes[..bytes.len().min(12)]);
    let file = match BoltFile::from_bytes(bytes) {
        Ok(f) => f,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let _ = format!("{file:?}");
    let _ = (
        file.page_size(),
        file.txid(),
        file.page_count(),
        file.meta_page(),
    );
    let names = file.buckets().unwrap_or_default();
    for name in names.iter().take(8) {
        assert!(file.has_bucket(name).unwrap_or(true));
        let Ok(iter) = file.iter(name) else {
            continue;
        };
        let mut items: Vec<(&[u8], &[u8])> = Vec::new();
        let mut ok = true;
        for item in iter.take(4096) {
            match item {
                Ok(kv) => items.push(kv),
                Err(e) => {
                    let _ = e.to_string();
                    ok = false;
                    break;
                }
            }
        }
        // Iteration yields keys in strictly increasing order, and after a
        // walk that ended without an error a lookup of each finds the value
        // the walk gave (module documentation). A walk that ends in an error
        // may have yielded keys a lookup misses: it notices unordered branch
        // keys only when it reaches them, while the lookup's binary search
        // is already misrouted by them (fuzz/regressions/bolt_reader).
        assert!(
            items.windows(2).all(|w| w[0].0 < w[1].0),
            "keys out of order"
        );
        if ok {
            for (k, v) in items.iter().take(64) {
                if let Ok(found) = file.get_ref(name, k) {
                    assert_eq!(found, Some(*v), "get disagrees with iteration");
                }
            }
        }
        let _ = file.get(name, b"");
    }
    let mut decoded = 0;
    let _ = bolt::read_go_database(&file, |entry| {
        if decoded < 256 {
            decoded += 1;
            // Import decodes each bitmap; so does the harness.
            if let Ok(bits) = roaring::RoaringBitmap::deserialize_from(entry.bitmap.as_slice()) {
                let _ = (bits.len(), bits.max());
            }
        }
        Ok(())
    })
    .map(|s| s.keys);
}

// --------------------------------------------------------------- payload

/// `roaring_payload`: `decode_payload` with an entry derived from the
/// input; a decoded value is checked, used (counts, ranges, positions,
/// bit operations, bytes), and re-encoded to the same value.
pub fn roaring_payload(data: &[u8]) {
    if data.len() < 18 {
        return;
    }
    let mode = data[0];
    let raw_len = le_u64(&data[1..9]);
    let raw_card = le_u64(&data[9..17]);
    let payload = &data[17..];
    // Whatever roaring makes of the bytes, to derive an entry that fits.
    let parsed = roaring::RoaringBitmap::deserialize_from(payload).ok();
    let fit_len = parsed
        .as_ref()
        .and_then(|b| b.max())
        .map_or(0, |m| u64::from(m) / 8 + 1);
    let byte_len = match mode & 3 {
        0 => fit_len,
        1 => fit_len + raw_len % 4096,
        2 => raw_len,
        _ => raw_len % (1 << 30),
    };
    let cardinality = if mode & 4 == 0 {
        parsed.as_ref().map_or(0, |b| b.len())
    } else {
        raw_card
    };
    let payload_crc = if mode & 8 == 0 {
        page::checksum(payload)
    } else {
        raw_card as u32
    };
    let meta = EntryMeta {
        byte_len,
        cardinality,
        expire_at: 0,
        payload_crc,
        payload: Payload::Inline(payload.into()),
    };
    let value = match decode_payload(payload, &meta) {
        Ok(v) => v,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    check_value(&value, &meta);
    assert!(value.len() <= bitmapist_server::keyspace::bitstring::MAX_LEN);

    // Operations on the value, with arguments from the input.
    let mut rng = Rng::new(&data[..17]);
    let arg = |rng: &mut Rng| -> i64 {
        let v = rng.next() as i64;
        match rng.below(3) {
            0 => v,
            1 => v % 64,
            _ => v % (value.len() as i64 * 8 + 2).max(1),
        }
    };
    for _ in 0..4 {
        let off = rng.next() % (value.len() * 8 + 16);
        let bit = value.get_bit(off);
        assert_eq!(
            bit,
            u32::try_from(off).is_ok_and(|o| value.bits().contains(o))
        );
        let (s, e) = (arg(&mut rng), arg(&mut rng));
        for unit in [RangeUnit::Byte, RangeUnit::Bit] {
            assert!(value.count_range(s, e, unit) <= value.count());
            let p = value.position(true, Some(s), Some(e), unit);
            assert!(p == -1 || value.get_bit(p as u64));
            let p = value.position(false, Some(s), None, unit);
            assert!(p >= -1);
            if p >= 0 && (p as u64) < value.len() * 8 {
                assert!(!value.get_bit(p as u64));
            }
        }
    }
    assert_eq!(value.count_range(0, -1, RangeUnit::Byte), value.count());
    let _ = value.heap_bytes();

    // Bit operations with itself (NOT and bytes only on small strings: their
    // cost is the string's length, legitimately).
    let and = BitString::bitop(BitOp::And, &[Some(&value), Some(&value)]);
    assert_eq!(and.bits(), value.bits());
    let xor = BitString::bitop(BitOp::Xor, &[Some(&value), Some(&value)]);
    assert!(xor.bits().is_empty());
    assert_eq!(xor.len(), value.len());
    let or = BitString::bitop(BitOp::Or, &[Some(&value), None]);
    assert_eq!(or.bits(), value.bits());
    if value.len() <= 1 << 20 {
        let not = BitString::bitop(BitOp::Not, &[Some(&value)]);
        assert_eq!(not.count() + value.count(), value.len() * 8);
        let bytes = value.to_bytes();
        assert_eq!(bytes.len() as u64, value.len());
        let back = BitString::from_bytes(&bytes);
        assert_eq!(back.bits(), value.bits(), "GET/SET bytes round trip");
        assert_eq!(back.len(), value.len());
    }

    // Round trip: re-encoded, the payload decodes to the same value, and
    // encodes to the same bytes again.
    let encoded = encode_payload(&value);
    let meta2 = EntryMeta {
        payload_crc: page::checksum(&encoded),
        payload: Payload::Inline(encoded.clone().into()),
        ..meta.clone()
    };
    let again = decode_payload(&encoded, &meta2).expect("a re-encoded payload decodes");
    assert_eq!(again.bits(), value.bits());
    assert_eq!(again.len(), value.len());
    assert_eq!(encode_payload(&again), encoded, "encoding is not stable");
}
