//! SLURP: copies the string keys of a running Redis (or Go bitmapist-server)
//! into this server. The command checks its arguments and starts a
//! background thread; the thread reads the source with a small blocking
//! RESP2 client of its own (SCAN, then TYPE/PTTL/GET pipelined per batch)
//! and writes through `command::execute`, so every key is logged and
//! durable like a client's SET. Owns the import's progress (`INFO slurp`).
//! May call `command`, `server` and `keyspace::now_ms`; the source is only
//! ever read.

use super::{CmdError, CmdResult, Ctx, Session};
use crate::resp::ReplyBuf;
use crate::server::{lock, Server};
use std::fmt::{self, Write as _};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long connecting to the source may take (per resolved address).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one reply (or one write) to the source may take.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// SCAN's COUNT hint.
const SCAN_COUNT: &str = "1000";
/// Keys fetched per round trip (TYPE, PTTL and GET pipelined for each) and
/// written per keyspace lock.
const BATCH: usize = 100;
/// Values written per keyspace lock, at most (a batch holds up to BATCH keys).
const LOCK_BYTES: usize = 4 * 1024 * 1024;
/// Keys that could not be written are logged one by one up to this many.
const LOGGED_KEY_ERRORS: u64 = 20;
/// A progress line is logged every this many keys.
const PROGRESS_EVERY: u64 = 10_000;
/// The longest bulk string accepted from the source (Redis's own limit).
const MAX_BULK: usize = 512 * 1024 * 1024;
/// The longest status/error/integer line accepted from the source.
const MAX_LINE: usize = 64 * 1024;
/// Aggregates nested deeper than this are a protocol error.
const MAX_DEPTH: usize = 8;
/// Databases a source may be asked to SELECT (Redis's default count).
const SOURCE_DATABASES: i64 = 16;

/// The last import's progress, shown by `INFO slurp`.
#[derive(Debug, Default, Clone)]
pub struct SlurpStatus {
    pub running: bool,
    /// `host:port` as given to SLURP.
    pub source: String,
    /// The source database (SELECTed when given).
    pub source_db: usize,
    /// The database here that receives the keys (the caller's).
    pub target_db: usize,
    pub imported: u64,
    /// Keys that are not strings (lists, hashes, ...).
    pub skipped: u64,
    /// Keys that expired or vanished between SCAN and GET.
    pub expired: u64,
    /// Keys that could not be written, plus the error that stopped an import.
    pub errors: u64,
    pub started: Option<Instant>,
    /// Set when the import ends.
    pub finished_ms: Option<u64>,
    pub last_error: String,
}

impl SlurpStatus {
    /// Milliseconds the import has run (so far, while it runs).
    pub fn duration_ms(&self) -> u64 {
        match (self.finished_ms, self.started) {
            (Some(ms), _) => ms,
            (None, Some(t)) => t.elapsed().as_millis() as u64,
            (None, None) => 0,
        }
    }

    /// The `# Slurp` INFO section.
    pub fn info_section(&self, out: &mut String) {
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "# Slurp\r\nslurp_running:{}\r\nslurp_source:{}\r\nslurp_source_db:{}\r\n\
             slurp_target_db:{}\r\nslurp_keys_imported:{}\r\nslurp_keys_skipped:{}\r\n\
             slurp_keys_expired:{}\r\nslurp_errors:{}\r\nslurp_duration_ms:{}\r\n\
             slurp_last_error:{}\r\n",
            u8::from(self.running),
            one_line(&self.source),
            self.source_db,
            self.target_db,
            self.imported,
            self.skipped,
            self.expired,
            self.errors,
            self.duration_ms(),
            one_line(&self.last_error),
        );
    }
}

/// Text safe for one INFO line.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// What one SLURP was asked to do.
#[derive(Debug, Clone)]
struct Job {
    addr: String,
    db: Option<usize>,
    password: Option<Vec<u8>>,
    target_db: usize,
}

/// `SLURP host:port [db] [password]`: replies +OK and imports in the
/// background.
pub fn slurp(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> CmdResult {
    if argv.len() > 4 {
        return Err(CmdError::arity("slurp"));
    }
    let addr = parse_addr(argv[1])?;
    let db = argv.get(2).map(|a| parse_db(a)).transpose()?;
    let job = Job {
        addr,
        db,
        password: argv.get(3).map(|p| p.to_vec()),
        target_db: ctx.session.db,
    };
    let server = ctx
        .server
        .handle()
        .ok_or_else(|| CmdError::new("ERR SLURP cannot start a background import here"))?;
    {
        let mut status = lock(&server.slurp);
        if status.running {
            return Err(CmdError::new("ERR a SLURP import is already running"));
        }
        *status = SlurpStatus {
            running: true,
            source: job.addr.clone(),
            source_db: job.db.unwrap_or(0),
            target_db: job.target_db,
            started: Some(Instant::now()),
            ..SlurpStatus::default()
        };
    }
    let thread_server = server.clone();
    let spawned = std::thread::Builder::new()
        .name(String::from("slurp"))
        .spawn(move || import(thread_server, job));
    if let Err(e) = spawned {
        let mut status = lock(&server.slurp);
        status.running = false;
        status.errors += 1;
        status.finished_ms = Some(0);
        status.last_error = format!("cannot start the import thread: {e}");
        return Err(CmdError::new(format!(
            "ERR cannot start the SLURP import thread: {e}"
        )));
    }
    ctx.out.ok();
    Ok(())
}

/// Checks `host:port` (the host may be a bracketed IPv6 address). Resolving
/// is left to the import thread, so a slow DNS never blocks a network thread.
fn parse_addr(arg: &[u8]) -> Result<String, CmdError> {
    let shown = String::from_utf8_lossy(arg);
    let bad = |why: &str| {
        CmdError::new(format!(
            "ERR invalid SLURP address '{shown}': {why} (expected host:port)"
        ))
    };
    let text = std::str::from_utf8(arg).map_err(|_| bad("not UTF-8"))?;
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(bad("no port"));
    };
    if host.is_empty() || host == "[]" {
        return Err(bad("no host"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad("an IPv6 address must be in brackets"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(text.to_string()),
        _ => Err(bad("the port must be a number from 1 to 65535")),
    }
}

fn parse_db(arg: &[u8]) -> Result<usize, CmdError> {
    match super::args::parse_i64(arg) {
        Some(n) if (0..SOURCE_DATABASES).contains(&n) => Ok(n as usize),
        _ => Err(CmdError::new(format!(
            "ERR invalid SLURP database '{}': expected an integer from 0 to {}",
            String::from_utf8_lossy(arg),
            SOURCE_DATABASES - 1
        ))),
    }
}

// ---- the import thread ----

/// Marks the import finished even if the thread panics.
struct RunningGuard<'a> {
    server: &'a Server,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        let mut status = lock(&self.server.slurp);
        if status.running {
            status.running = false;
            status.finished_ms = Some(status.duration_ms());
            if std::thread::panicking() {
                status.errors += 1;
                status.last_error = String::from("the import thread panicked");
            }
        }
    }
}

fn import(server: Arc<Server>, job: Job) {
    let guard = RunningGuard { server: &server };
    let started = Instant::now();
    tracing::info!(
        source = %job.addr,
        source_db = job.db.unwrap_or(0),
        target_db = job.target_db,
        "SLURP: importing from {}",
        job.addr
    );
    let client = server.register_client(String::from("slurp"), job.addr.clone());
    *lock(&client.name) = b"slurp".to_vec();
    client.db.store(job.target_db, Relaxed);
    let mut session = Session::new(client.clone());
    session.db = job.target_db;

    let mut importer = Importer {
        server: &server,
        session,
        source: job.addr.clone(),
        counts: Counts::default(),
        next_progress: PROGRESS_EVERY,
        started,
    };
    let result = importer.run(&job);
    // What was written is acknowledged only once the log holds it.
    if !server.storage.log.wait_written(Duration::from_secs(30)) {
        tracing::warn!(source = %job.addr, "SLURP: the log is not yet written after 30 s");
    }
    server.unregister_client(client.id);

    let counts = importer.counts;
    let ms = started.elapsed().as_millis() as u64;
    {
        let mut status = lock(&server.slurp);
        counts.publish(&mut status);
        status.running = false;
        status.finished_ms = Some(ms);
        if let Err(e) = &result {
            status.errors += 1;
            status.last_error = e.to_string();
        }
    }
    drop(guard);
    match result {
        Ok(()) => tracing::info!(
            source = %job.addr,
            keys = counts.imported,
            skipped = counts.skipped,
            expired = counts.expired,
            errors = counts.errors,
            ms,
            "SLURP finished: {} keys imported from {}, {} non-string keys skipped, \
             {} expired, {} errors",
            counts.imported,
            job.addr,
            counts.skipped,
            counts.expired,
            counts.errors
        ),
        Err(e) => tracing::error!(
            source = %job.addr,
            keys = counts.imported,
            skipped = counts.skipped,
            expired = counts.expired,
            errors = counts.errors + 1,
            ms,
            error = %e,
            "SLURP stopped: {e}; {} keys imported before it stay",
            counts.imported
        ),
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    imported: u64,
    skipped: u64,
    expired: u64,
    errors: u64,
}

impl Counts {
    fn total(&self) -> u64 {
        self.imported + self.skipped + self.expired + self.errors
    }

    fn publish(&self, status: &mut SlurpStatus) {
        status.imported = self.imported;
        status.skipped = self.skipped;
        status.expired = self.expired;
        status.errors = self.errors;
    }
}

/// Why an import stopped.
#[derive(Debug)]
enum SlurpError {
    /// Resolving or connecting failed.
    Connect(String),
    /// Reading or writing the connection failed.
    Io(String),
    /// The source answered something that is not RESP2 or not the expected
    /// shape.
    Protocol(String),
    /// The source refused a command the import needs (AUTH, SELECT, SCAN).
    Refused(String),
    /// This server refuses writes (the log cannot be written).
    Writes(String),
}

impl fmt::Display for SlurpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlurpError::Connect(s) => write!(f, "connection failed: {s}"),
            SlurpError::Io(s) => write!(f, "connection error: {s}"),
            SlurpError::Protocol(s) => write!(f, "protocol error: {s}"),
            SlurpError::Refused(s) => write!(f, "the source refused: {s}"),
            SlurpError::Writes(s) => write!(f, "writes refused here: {s}"),
        }
    }
}

/// One key read from the source, ready to write.
struct Fetched {
    key: Vec<u8>,
    value: Vec<u8>,
    /// Absolute expiry, Unix milliseconds.
    expire_at: Option<u64>,
}

struct Importer<'a> {
    server: &'a Server,
    session: Session,
    source: String,
    counts: Counts,
    next_progress: u64,
    started: Instant,
}

impl Importer<'_> {
    fn run(&mut self, job: &Job) -> Result<(), SlurpError> {
        let mut src = SourceConn::connect(&job.addr)?;
        if let Some(password) = &job.password {
            match src.call(&[b"AUTH".as_slice(), password])? {
                Reply::Simple(_) => {}
                Reply::Error(e) => {
                    return Err(SlurpError::Refused(format!(
                        "AUTH: {}",
                        String::from_utf8_lossy(&e)
                    )))
                }
                other => return Err(unexpected("AUTH", &other)),
            }
        }
        if let Some(db) = job.db {
            let db = db.to_string();
            match src.call(&[b"SELECT".as_slice(), db.as_bytes()])? {
                Reply::Simple(_) => {}
                Reply::Error(e) => {
                    return Err(SlurpError::Refused(format!(
                        "SELECT {db}: {}",
                        String::from_utf8_lossy(&e)
                    )))
                }
                other => return Err(unexpected("SELECT", &other)),
            }
        }

        // `SCAN <cursor> MATCH * COUNT n` is the one form the Go server
        // accepts (it answers every key at once with cursor 0); Redis treats
        // MATCH * as no filter. A source without SCAN gets KEYS *.
        let mut cursor = b"0".to_vec();
        let mut first = true;
        loop {
            let scan: [&[u8]; 6] = [
                b"SCAN",
                &cursor,
                b"MATCH",
                b"*",
                b"COUNT",
                SCAN_COUNT.as_bytes(),
            ];
            let reply = src.call(&scan)?;
            let (next, keys) = match reply {
                Reply::Error(e) if first => {
                    tracing::info!(
                        source = %self.source,
                        reply = %String::from_utf8_lossy(&e),
                        "SLURP: the source refused SCAN; listing its keys with KEYS *"
                    );
                    let keys = match src.call(&[b"KEYS".as_slice(), b"*"])? {
                        Reply::Array(Some(items)) => bulk_list(items, "KEYS")?,
                        Reply::Error(e) => {
                            return Err(SlurpError::Refused(format!(
                                "SCAN and KEYS: {}",
                                String::from_utf8_lossy(&e)
                            )))
                        }
                        other => return Err(unexpected("KEYS", &other)),
                    };
                    (b"0".to_vec(), keys)
                }
                Reply::Error(e) => {
                    return Err(SlurpError::Refused(format!(
                        "SCAN: {}",
                        String::from_utf8_lossy(&e)
                    )))
                }
                Reply::Array(Some(items)) => parse_scan(items)?,
                other => return Err(unexpected("SCAN", &other)),
            };
            first = false;
            for chunk in keys.chunks(BATCH) {
                self.batch(&mut src, chunk)?;
            }
            if next == b"0" {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Reads one batch of keys (one round trip) and writes it.
    fn batch(&mut self, src: &mut SourceConn, keys: &[Vec<u8>]) -> Result<(), SlurpError> {
        let mut request = Vec::new();
        for key in keys {
            encode(&mut request, &[b"TYPE".as_slice(), key]);
            encode(&mut request, &[b"PTTL".as_slice(), key]);
            encode(&mut request, &[b"GET".as_slice(), key]);
        }
        src.send(&request)?;
        let mut fetched = Vec::with_capacity(keys.len());
        for key in keys {
            let kind = src.read()?;
            let ttl = src.read()?;
            let value = src.read()?;
            // Read every reply before acting, so the stream stays in step.
            match classify(key, kind, ttl, value, crate::keyspace::now_ms())? {
                Outcome::Import(f) => fetched.push(f),
                Outcome::Skipped => self.counts.skipped += 1,
                Outcome::Expired => self.counts.expired += 1,
                Outcome::Error(why) => self.key_error(key, &why),
            }
        }
        self.write(fetched)?;
        self.progress();
        Ok(())
    }

    /// Writes a batch through the command path, taking the keyspace lock
    /// once per group of at most LOCK_BYTES of values (so large bitmaps do
    /// not hold other clients up for long).
    fn write(&mut self, batch: Vec<Fetched>) -> Result<(), SlurpError> {
        let mut out = ReplyBuf::new();
        let mut failures = Vec::new();
        let mut rest = batch.as_slice();
        while !rest.is_empty() {
            let mut bytes = 0;
            let n = rest
                .iter()
                .take_while(|f| {
                    let first = bytes == 0;
                    bytes += f.value.len() + f.key.len() + 1;
                    first || bytes <= LOCK_BYTES
                })
                .count();
            let (group, tail) = rest.split_at(n.max(1));
            rest = tail;
            let mut ctx = Ctx::new(self.server, &mut self.session, &mut out);
            for f in group {
                ctx.out.clear();
                let at;
                let mut argv: Vec<&[u8]> = vec![b"SET", &f.key, &f.value];
                if let Some(ms) = f.expire_at {
                    at = ms.to_string();
                    argv.push(b"PXAT");
                    argv.push(at.as_bytes());
                }
                super::execute(&mut ctx, &argv);
                match ctx.out.buf.strip_prefix(b"-") {
                    None => self.counts.imported += 1,
                    Some(err) => {
                        let err = String::from_utf8_lossy(err).trim_end().to_string();
                        if err.starts_with("MISCONF") {
                            return Err(SlurpError::Writes(err));
                        }
                        failures.push((f.key.clone(), err));
                    }
                }
            }
        }
        for (key, err) in failures {
            self.key_error(&key, &err);
        }
        Ok(())
    }

    fn key_error(&mut self, key: &[u8], why: &str) {
        self.counts.errors += 1;
        let text = format!("key '{}': {why}", key.escape_ascii());
        if self.counts.errors <= LOGGED_KEY_ERRORS {
            tracing::warn!(source = %self.source, "SLURP: {text}");
        }
        if self.counts.errors == LOGGED_KEY_ERRORS {
            tracing::warn!(
                source = %self.source,
                "SLURP: further key errors are counted (INFO slurp), not logged"
            );
        }
        lock(&self.server.slurp).last_error = text;
    }

    /// Publishes the counts; logs a line every PROGRESS_EVERY keys.
    fn progress(&mut self) {
        let counts = self.counts;
        counts.publish(&mut lock(&self.server.slurp));
        if counts.total() >= self.next_progress {
            while self.next_progress <= counts.total() {
                self.next_progress += PROGRESS_EVERY;
            }
            tracing::info!(
                source = %self.source,
                keys = counts.imported,
                skipped = counts.skipped,
                expired = counts.expired,
                errors = counts.errors,
                ms = self.started.elapsed().as_millis() as u64,
                "SLURP progress: {} keys imported",
                counts.imported
            );
        }
    }
}

enum Outcome {
    Import(Fetched),
    Skipped,
    Expired,
    Error(String),
}

/// Decides what to do with a key from its TYPE, PTTL and GET replies.
fn classify(
    key: &[u8],
    kind: Reply,
    ttl: Reply,
    value: Reply,
    now_ms: u64,
) -> Result<Outcome, SlurpError> {
    // TYPE: a source without it (the Go server) answers an error; then GET
    // decides (WRONGTYPE means not a string).
    match &kind {
        Reply::Simple(t) if t.eq_ignore_ascii_case(b"none") => return Ok(Outcome::Expired),
        Reply::Simple(t) if !t.eq_ignore_ascii_case(b"string") => return Ok(Outcome::Skipped),
        Reply::Simple(_) | Reply::Error(_) => {}
        other => return Err(unexpected("TYPE", other)),
    }
    let expire_at = match ttl {
        Reply::Integer(-1) => None,
        Reply::Integer(ms) if ms > 0 => Some(now_ms.saturating_add(ms as u64)),
        // -2 (gone) or 0 (expiring this millisecond).
        Reply::Integer(_) => return Ok(Outcome::Expired),
        // A source without PTTL: the key is copied without an expiry.
        Reply::Error(_) => None,
        other => return Err(unexpected("PTTL", &other)),
    };
    match value {
        Reply::Bulk(Some(value)) => Ok(Outcome::Import(Fetched {
            key: key.to_vec(),
            value,
            expire_at,
        })),
        Reply::Bulk(None) => Ok(Outcome::Expired),
        Reply::Error(e) if e.starts_with(b"WRONGTYPE") => Ok(Outcome::Skipped),
        Reply::Error(e) => Ok(Outcome::Error(format!(
            "GET failed on the source: {}",
            String::from_utf8_lossy(&e)
        ))),
        other => Err(unexpected("GET", &other)),
    }
}

fn unexpected(command: &str, reply: &Reply) -> SlurpError {
    SlurpError::Protocol(format!(
        "unexpected reply to {command}: {}",
        reply.describe()
    ))
}

/// `[cursor, [key...]]`.
fn parse_scan(items: Vec<Reply>) -> Result<(Vec<u8>, Vec<Vec<u8>>), SlurpError> {
    let mut it = items.into_iter();
    match (it.next(), it.next(), it.next()) {
        (Some(Reply::Bulk(Some(cursor))), Some(Reply::Array(Some(keys))), None) => {
            if cursor.is_empty() || !cursor.iter().all(u8::is_ascii_digit) {
                return Err(SlurpError::Protocol(format!(
                    "SCAN returned the cursor '{}'",
                    cursor.escape_ascii()
                )));
            }
            Ok((cursor, bulk_list(keys, "SCAN")?))
        }
        _ => Err(SlurpError::Protocol(String::from(
            "SCAN did not answer [cursor, [keys]]",
        ))),
    }
}

fn bulk_list(items: Vec<Reply>, command: &str) -> Result<Vec<Vec<u8>>, SlurpError> {
    items
        .into_iter()
        .map(|r| match r {
            Reply::Bulk(Some(k)) => Ok(k),
            other => Err(unexpected(command, &other)),
        })
        .collect()
}

// ---- the RESP2 client ----

/// A reply from the source.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Simple(Vec<u8>),
    Error(Vec<u8>),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// A short description for error messages.
    fn describe(&self) -> String {
        match self {
            Reply::Simple(s) => format!("+{}", s.escape_ascii()),
            Reply::Error(s) => format!("-{}", s.escape_ascii()),
            Reply::Integer(n) => format!(":{n}"),
            Reply::Bulk(None) => String::from("nil"),
            Reply::Bulk(Some(b)) => format!("a bulk string of {} bytes", b.len()),
            Reply::Array(None) => String::from("a nil array"),
            Reply::Array(Some(a)) => format!("an array of {} elements", a.len()),
        }
    }
}

fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Reads RESP2 replies with bounded allocation.
struct ReplyReader<R> {
    inner: R,
}

impl<R: BufRead> ReplyReader<R> {
    fn read(&mut self) -> Result<Reply, SlurpError> {
        self.read_at(0)
    }

    fn read_at(&mut self, depth: usize) -> Result<Reply, SlurpError> {
        let line = self.line()?;
        let Some((&kind, rest)) = line.split_first() else {
            return Err(SlurpError::Protocol(String::from("empty reply line")));
        };
        match kind {
            b'+' => Ok(Reply::Simple(rest.to_vec())),
            b'-' => Ok(Reply::Error(rest.to_vec())),
            b':' => Ok(Reply::Integer(number(rest)?)),
            b'$' => {
                let len = number(rest)?;
                if len == -1 {
                    return Ok(Reply::Bulk(None));
                }
                let len = usize::try_from(len)
                    .ok()
                    .filter(|&n| n <= MAX_BULK)
                    .ok_or_else(|| {
                        SlurpError::Protocol(format!(
                            "bulk length {len} (at most {MAX_BULK} accepted)"
                        ))
                    })?;
                let mut data = Vec::with_capacity(len.min(1 << 20));
                let read = (&mut self.inner)
                    .take(len as u64 + 2)
                    .read_to_end(&mut data)
                    .map_err(io_error)?;
                if read < len + 2 {
                    return Err(closed());
                }
                if !data.ends_with(b"\r\n") {
                    return Err(SlurpError::Protocol(String::from(
                        "bulk string not followed by CRLF",
                    )));
                }
                data.truncate(len);
                Ok(Reply::Bulk(Some(data)))
            }
            b'*' => {
                let n = number(rest)?;
                if n == -1 {
                    return Ok(Reply::Array(None));
                }
                let n = usize::try_from(n)
                    .map_err(|_| SlurpError::Protocol(format!("array length {n}")))?;
                if depth >= MAX_DEPTH {
                    return Err(SlurpError::Protocol(String::from("arrays nested too deep")));
                }
                let mut items = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    items.push(self.read_at(depth + 1)?);
                }
                Ok(Reply::Array(Some(items)))
            }
            other => Err(SlurpError::Protocol(format!(
                "unexpected reply type byte '{}'",
                [other].escape_ascii()
            ))),
        }
    }

    /// One CRLF-terminated line, without the CRLF.
    fn line(&mut self) -> Result<Vec<u8>, SlurpError> {
        let mut line = Vec::new();
        loop {
            let buf = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error(e)),
            };
            if buf.is_empty() {
                return Err(closed());
            }
            let (used, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            line.extend_from_slice(&buf[..used]);
            self.inner.consume(used);
            if line.len() > MAX_LINE + 2 {
                return Err(SlurpError::Protocol(format!(
                    "a reply line longer than {MAX_LINE} bytes"
                )));
            }
            if done {
                if !line.ends_with(b"\r\n") {
                    return Err(SlurpError::Protocol(String::from(
                        "a reply line not ended by CRLF",
                    )));
                }
                line.truncate(line.len() - 2);
                return Ok(line);
            }
        }
    }
}

fn number(text: &[u8]) -> Result<i64, SlurpError> {
    super::args::parse_i64(text)
        .ok_or_else(|| SlurpError::Protocol(format!("'{}' is not a number", text.escape_ascii())))
}

fn closed() -> SlurpError {
    SlurpError::Io(String::from("the source closed the connection"))
}

fn io_error(e: std::io::Error) -> SlurpError {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            SlurpError::Io(format!("no reply within {} s", IO_TIMEOUT.as_secs()))
        }
        ErrorKind::UnexpectedEof => closed(),
        _ => SlurpError::Io(e.to_string()),
    }
}

/// The blocking connection to the source.
struct SourceConn {
    reader: ReplyReader<BufReader<TcpStream>>,
}

impl SourceConn {
    fn connect(addr: &str) -> Result<SourceConn, SlurpError> {
        let addrs: Vec<_> = addr
            .to_socket_addrs()
            .map_err(|e| SlurpError::Connect(format!("cannot resolve {addr}: {e}")))?
            .collect();
        let mut last = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    let setup = stream
                        .set_read_timeout(Some(IO_TIMEOUT))
                        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
                        .and_then(|()| stream.set_nodelay(true));
                    if let Err(e) = setup {
                        return Err(SlurpError::Connect(format!("{addr}: {e}")));
                    }
                    return Ok(SourceConn {
                        reader: ReplyReader {
                            inner: BufReader::with_capacity(256 * 1024, stream),
                        },
                    });
                }
                Err(e) => last = Some(format!("{a}: {e}")),
            }
        }
        Err(SlurpError::Connect(format!(
            "cannot connect to {addr}: {}",
            last.unwrap_or_else(|| String::from("no address"))
        )))
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), SlurpError> {
        self.reader
            .inner
            .get_mut()
            .write_all(bytes)
            .map_err(io_error)
    }

    fn read(&mut self) -> Result<Reply, SlurpError> {
        self.reader.read()
    }

    fn call(&mut self, args: &[&[u8]]) -> Result<Reply, SlurpError> {
        let mut request = Vec::new();
        encode(&mut request, args);
        self.send(&request)?;
        self.read()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Reply, SlurpError> {
        ReplyReader { inner: bytes }.read()
    }

    #[test]
    fn reads_resp2_replies() {
        assert_eq!(parse(b"+OK\r\n").unwrap(), Reply::Simple(b"OK".to_vec()));
        assert_eq!(
            parse(b"-ERR x\r\n").unwrap(),
            Reply::Error(b"ERR x".to_vec())
        );
        assert_eq!(parse(b":-2\r\n").unwrap(), Reply::Integer(-2));
        assert_eq!(parse(b"$-1\r\n").unwrap(), Reply::Bulk(None));
        assert_eq!(parse(b"$0\r\n\r\n").unwrap(), Reply::Bulk(Some(Vec::new())));
        assert_eq!(
            parse(b"$4\r\na\r\n\0\r\n").unwrap(),
            Reply::Bulk(Some(b"a\r\n\0".to_vec()))
        );
        assert_eq!(
            parse(b"*2\r\n$1\r\n0\r\n*1\r\n$1\r\nk\r\n").unwrap(),
            Reply::Array(Some(vec![
                Reply::Bulk(Some(b"0".to_vec())),
                Reply::Array(Some(vec![Reply::Bulk(Some(b"k".to_vec()))]))
            ]))
        );
        assert_eq!(parse(b"*-1\r\n").unwrap(), Reply::Array(None));
    }

    #[test]
    fn refuses_bad_replies() {
        for bad in [
            &b"$536870913\r\n"[..],
            b"$3\r\nab",
            b"$2\r\nabc\r\n",
            b"%1\r\n",
            b"*x\r\n",
            b":1\n",
            b"+OK",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
        ] {
            assert!(parse(bad).is_err(), "{}", bad.escape_ascii());
        }
        let long = [b"+".as_slice(), &vec![b'a'; MAX_LINE + 10], b"\r\n"].concat();
        assert!(parse(&long).is_err());
    }

    #[test]
    fn checks_arguments() {
        assert!(parse_addr(b"localhost:6379").is_ok());
        assert!(parse_addr(b"[::1]:6379").is_ok());
        for bad in [
            &b"localhost"[..],
            b":6379",
            b"host:",
            b"host:0",
            b"host:99999",
            b"::1:6379",
        ] {
            assert!(parse_addr(bad).is_err(), "{}", bad.escape_ascii());
        }
        assert_eq!(parse_db(b"15").unwrap(), 15);
        for bad in [&b"16"[..], b"-1", b"x", b"01", b""] {
            assert!(parse_db(bad).is_err());
        }
    }

    #[test]
    fn classifies_keys() {
        let s = |t: &str| Reply::Simple(t.as_bytes().to_vec());
        let v = || Reply::Bulk(Some(b"v".to_vec()));
        let go_type = || Reply::Error(b"ERR unknown command".to_vec());
        let c = |k, t, v| classify(b"k", k, t, v, 1000).unwrap();
        assert!(matches!(
            c(s("string"), Reply::Integer(-1), v()),
            Outcome::Import(Fetched {
                expire_at: None,
                ..
            })
        ));
        assert!(matches!(
            c(go_type(), Reply::Integer(500), v()),
            Outcome::Import(Fetched {
                expire_at: Some(1500),
                ..
            })
        ));
        assert!(matches!(
            c(
                s("list"),
                Reply::Integer(-1),
                Reply::Error(b"WRONGTYPE x".to_vec())
            ),
            Outcome::Skipped
        ));
        assert!(matches!(
            c(
                go_type(),
                Reply::Integer(-1),
                Reply::Error(b"WRONGTYPE x".to_vec())
            ),
            Outcome::Skipped
        ));
        assert!(matches!(
            c(s("none"), Reply::Integer(-2), Reply::Bulk(None)),
            Outcome::Expired
        ));
        assert!(matches!(
            c(s("string"), Reply::Integer(-2), v()),
            Outcome::Expired
        ));
        assert!(matches!(
            c(s("string"), Reply::Integer(-1), Reply::Bulk(None)),
            Outcome::Expired
        ));
        assert!(classify(b"k", Reply::Integer(1), Reply::Integer(-1), v(), 0).is_err());
    }
}
