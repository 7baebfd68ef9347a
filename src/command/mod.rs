//! Commands: looking a request up in the command table, checking its arity,
//! queueing it inside MULTI, and running it against the keyspace with Redis
//! 7.0's exact replies and errors. One file per command family; this file
//! owns dispatch, the per-connection `Session` and the execution context.

pub mod args;
pub mod bits;
pub mod connection;
pub mod expire;
pub mod keys;
pub mod migrate;
pub mod server;
pub mod strings;
pub mod table;
pub mod transaction;

use crate::keyspace::{Db, Keyspace};
use crate::resp::ReplyBuf;
use crate::server::{ClientShared, Server};
use std::borrow::Cow;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use table::{CommandSpec, Lookup};

/// An error reply: the whole line after `-`, code included. Bytes, because
/// Redis quotes client input in some errors verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdError(pub Cow<'static, [u8]>);

pub type CmdResult = Result<(), CmdError>;

impl CmdError {
    pub fn new(text: impl Into<Cow<'static, str>>) -> Self {
        CmdError(match text.into() {
            Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
            Cow::Owned(s) => Cow::Owned(s.into_bytes()),
        })
    }
    pub fn from_bytes(text: Vec<u8>) -> Self {
        CmdError(Cow::Owned(text))
    }
    pub fn syntax() -> Self {
        Self::new("ERR syntax error")
    }
    pub fn not_integer() -> Self {
        Self::new("ERR value is not an integer or out of range")
    }
    pub fn arity(name: &str) -> Self {
        Self::new(format!(
            "ERR wrong number of arguments for '{name}' command"
        ))
    }
}

impl From<crate::storage::StorageError> for CmdError {
    fn from(e: crate::storage::StorageError) -> Self {
        tracing::error!(error = %e, "storage error while running a command");
        CmdError::new(format!("ERR {e}"))
    }
}

/// An open MULTI block. The queued commands' arguments are copied into one
/// buffer (a copy per argument made four allocations per queued SETBIT,
/// part of the 7% of W1's network thread spent in malloc and free), and
/// a finished block's buffers serve this thread's next one (growing them
/// anew was still 4% of W1's network thread).
#[derive(Debug, Default)]
pub struct Transaction {
    /// Per queued command: its command table index and its arguments, a
    /// range of `args`.
    commands: Vec<(usize, std::ops::Range<usize>)>,
    /// Per argument: its bytes, a range of `bytes`.
    args: Vec<std::ops::Range<usize>>,
    bytes: Vec<u8>,
    /// A command failed to queue: EXEC will abort.
    pub failed: bool,
}

/// A finished transaction's buffers are kept for the next one up to this
/// many argument bytes.
const KEPT_TRANSACTION_BYTES: usize = 64 * 1024;

thread_local! {
    static SPARE_TRANSACTION: std::cell::Cell<Transaction> = std::cell::Cell::new(Transaction::default());
}

impl Transaction {
    /// An empty transaction, with the buffers of this thread's last one.
    pub fn new() -> Transaction {
        SPARE_TRANSACTION.with(std::cell::Cell::take)
    }

    /// Gives the buffers back to this thread for its next transaction.
    pub fn recycle(mut self) {
        if self.bytes.capacity() <= KEPT_TRANSACTION_BYTES && self.args.capacity() <= 4096 {
            self.commands.clear();
            self.args.clear();
            self.bytes.clear();
            self.failed = false;
            SPARE_TRANSACTION.with(|spare| spare.set(self));
        }
    }

    /// Queues a command (its table index and arguments).
    pub fn queue(&mut self, index: usize, argv: &[&[u8]]) {
        let first = self.args.len();
        for arg in argv {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(arg);
            self.args.push(start..self.bytes.len());
        }
        self.commands.push((index, first..self.args.len()));
    }

    /// How many commands are queued.
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// The `i`th queued command: returns its table index and puts its
    /// arguments in `argv` (cleared first, so that one vector serves every
    /// command).
    pub fn command<'a>(&'a self, i: usize, argv: &mut Vec<&'a [u8]>) -> usize {
        let (index, args) = &self.commands[i];
        argv.clear();
        argv.extend(
            self.args[args.clone()]
                .iter()
                .map(|r| &self.bytes[r.clone()]),
        );
        *index
    }
}

/// Per-connection state that commands read and change.
pub struct Session {
    pub client: Arc<ClientShared>,
    pub db: usize,
    pub multi: Option<Transaction>,
    /// Close the connection once the pending replies are written (QUIT).
    pub close_after_reply: bool,
    /// SHUTDOWN was accepted: stop the server after this batch.
    pub shutdown_requested: bool,
    /// Log position of this client's last logged write: its replies wait
    /// until the log is written that far.
    pub last_lsn: u64,
    /// The client may run commands: no password is configured, or it
    /// authenticated (AUTH, HELLO ... AUTH).
    pub authenticated: bool,
    /// Keys this client WATCHes (registered in the keyspace's `watches`).
    pub watched: Vec<crate::keyspace::watch::WatchedKey>,
}

impl Session {
    pub fn new(client: Arc<ClientShared>) -> Self {
        Session {
            client,
            db: 0,
            multi: None,
            close_after_reply: false,
            shutdown_requested: false,
            last_lsn: 0,
            authenticated: true,
            watched: Vec::new(),
        }
    }
}

/// What a command runs with. The keyspace lock is taken on first use and
/// held until the context is dropped, so a pipelined batch (or an EXEC)
/// takes it once.
pub struct Ctx<'a> {
    pub server: &'a Server,
    pub session: &'a mut Session,
    pub out: &'a mut ReplyBuf,
    guard: Option<crate::server::KeyspaceGuard<'a>>,
    /// Unix milliseconds, fixed for the duration of one command.
    pub now: u64,
    /// Replaying the log at start-up: nothing is logged again.
    pub replaying: bool,
    /// Runs a network thread's batch of pipelined requests. Consecutive
    /// write commands then share one log record (up to
    /// `MERGED_RECORD_BYTES`), appended when the lock is released or the
    /// context ends: one append (a mutex, a frame, a checksum) per batch
    /// instead of one per command; their replies wait for the whole record
    /// anyway. The record is appended without waking the log writer: the
    /// caller kicks it (`Log::kick`) before waiting for `session.last_lsn`.
    pub network_batch: bool,
    /// A change in this network batch already looked at the changed data.
    pub write_checked: bool,
    /// The write command just run changed nothing (a BITOP answered from
    /// the memo): it is not logged (replaying the log without it gives the
    /// same state), but its reply waits until the log is written as far as
    /// it is appended, since the state it confirmed may rest on records not
    /// yet written (another client's identical BITOP, say).
    pub unchanged: bool,
    /// The batch stopped before a change that must wait for the end of a
    /// checkpoint attempt after this many (`persistence::WriteHold`).
    pub hold_writes: Option<u64>,
    /// Write commands run since the last log record (an EXEC logs its
    /// commands as one record, so recovery never sees half of it).
    log: LogRecord,
}

impl<'a> Ctx<'a> {
    pub fn new(server: &'a Server, session: &'a mut Session, out: &'a mut ReplyBuf) -> Self {
        Ctx {
            server,
            session,
            out,
            guard: None,
            now: crate::keyspace::now_ms(),
            replaying: false,
            network_batch: false,
            write_checked: false,
            unchanged: false,
            hold_writes: None,
            log: LogRecord::new(),
        }
    }

    /// The keyspace, locked for the rest of this context's life.
    pub fn keyspace(&mut self) -> &mut Keyspace {
        let server = self.server;
        self.guard.get_or_insert_with(|| server.keyspace())
    }

    /// The session's selected database.
    pub fn db(&mut self) -> Db<'_> {
        let index = self.session.db;
        self.keyspace().db(index)
    }

    /// The selected database and the reply buffer, borrowed together (so a
    /// value can be encoded straight from the keyspace).
    pub fn db_and_out(&mut self) -> (Db<'_>, &mut ReplyBuf) {
        let server = self.server;
        let index = self.session.db;
        let keyspace = self.guard.get_or_insert_with(|| server.keyspace());
        (keyspace.db(index), &mut *self.out)
    }

    /// Releases the keyspace lock early (before a slow non-keyspace step).
    /// Merged log records are appended first: the log's order must be the
    /// order in which commands ran under the lock.
    pub fn release(&mut self) {
        flush_log(self);
        self.guard = None;
    }
}

impl Drop for Ctx<'_> {
    /// Appends merged log records while the lock is still held (the guard
    /// field is dropped after this).
    fn drop(&mut self) {
        flush_log(self);
        self.log.recycle();
    }
}

/// A merged log record is appended once it reaches this size.
const MERGED_RECORD_BYTES: usize = 64 * 1024;

/// Runs one request (a complete argument vector) and appends its reply.
pub fn execute(ctx: &mut Ctx<'_>, argv: &[&[u8]]) {
    execute_at(ctx, argv, crate::keyspace::now_ms());
}

/// [`execute`] at `now_ms`, a clock reading the caller took just before
/// (a network batch reads the clock once per request, for its look at cold
/// values and for the command).
pub fn execute_at(ctx: &mut Ctx<'_>, argv: &[&[u8]], now_ms: u64) {
    ctx.now = now_ms;
    if ctx.server.config.debug {
        let shown: Vec<String> = argv.iter().map(|a| a.escape_ascii().to_string()).collect();
        tracing::info!(
            client = ctx.session.client.id,
            "command: {}",
            shown.join(" ")
        );
    }
    let lookup = match table::lookup(argv) {
        // A disabled command is unknown, exactly as if it did not exist.
        Lookup::Found(_, spec) if ctx.server.config.is_disabled(argv[0], spec.name) => {
            Lookup::Error(table::unknown_command(argv))
        }
        other => other,
    };
    let lookup = match lookup {
        Lookup::Found(_, spec) if !ctx.session.authenticated && !spec.no_auth() => {
            Lookup::Error(CmdError::new("NOAUTH Authentication required."))
        }
        other => other,
    };
    let (index, spec) = match lookup {
        Lookup::Found(_, spec) if spec.is_write() && ctx.server.storage.log.is_failing() => {
            if let Some(tx) = ctx.session.multi.as_mut() {
                tx.failed = true;
            }
            let why = ctx.server.storage.log.failure().unwrap_or_default();
            ctx.out.error(&format!(
                "MISCONF Writes are refused because the write-ahead log cannot be written ({why}). \
                 Reads keep working; writes resume when the disk recovers."
            ));
            return;
        }
        Lookup::Found(index, spec) => (index, spec),
        Lookup::Error(err) => {
            if argv
                .first()
                .is_some_and(|n| n.eq_ignore_ascii_case(b"exec"))
            {
                // A rejected EXEC aborts the transaction, naming the reason.
                ctx.session.multi = None;
                let reason = err.0.strip_prefix(b"ERR ").unwrap_or(&err.0);
                let mut line = b"EXECABORT Transaction discarded because of: ".to_vec();
                line.extend_from_slice(reason);
                ctx.out.error_bytes(&line);
                return;
            }
            if let Some(tx) = ctx.session.multi.as_mut() {
                tx.failed = true;
            }
            ctx.out.error_bytes(&err.0);
            return;
        }
    };
    if spec.is_write() {
        if let Some(err) = key_too_long(spec, argv) {
            if let Some(tx) = ctx.session.multi.as_mut() {
                tx.failed = true;
            }
            ctx.out.error(&err);
            return;
        }
    }
    // The first change of a network batch looks at how much changed data
    // waits for a checkpoint (see `persistence::WriteHold`).
    let changes = || match ctx.session.multi {
        Some(_) => spec.name == "exec",
        None => spec.is_write(),
    };
    if ctx.network_batch && !ctx.write_checked && changes() {
        ctx.write_checked = true;
        let ks = ctx.keyspace();
        let (dirty, changed) = (ks.dirty_bytes(), ks.changed_bytes());
        if let Some(seen) = ctx.server.storage.before_write(dirty, changed) {
            ctx.hold_writes = Some(seen);
            return;
        }
    }
    if let Some(tx) = ctx.session.multi.as_mut() {
        if !spec.runs_inside_multi() {
            tx.queue(index, argv);
            ctx.out.simple("QUEUED");
            return;
        }
    }
    run(ctx, index, spec, argv);
    if !ctx.network_batch || ctx.log.bytes.len() >= MERGED_RECORD_BYTES {
        flush_log(ctx);
    }
}

/// Keys live in directory pages: a write naming a longer key than they hold
/// is refused before it runs.
fn key_too_long(spec: &CommandSpec, argv: &[&[u8]]) -> Option<String> {
    use crate::storage::btree::MAX_KEY_LEN;
    let (first, last, step) = spec.keys;
    if first <= 0 || step <= 0 {
        return None;
    }
    let last = if last < 0 {
        argv.len() as i32 + last
    } else {
        last
    };
    let too_long = (first..=last)
        .step_by(step as usize)
        .filter_map(|i| argv.get(i as usize))
        .any(|k| k.len() > MAX_KEY_LEN);
    too_long.then(|| {
        format!("ERR key is longer than {MAX_KEY_LEN} bytes, the longest this server stores")
    })
}

/// Write commands collected for one log record.
#[derive(Default)]
struct LogRecord {
    commands: u32,
    bytes: Vec<u8>,
}

/// A log record's buffer, kept per thread between contexts up to this
/// capacity (a network batch's merged record; one huge `SET` is not kept).
const KEPT_RECORD_BYTES: usize = 2 * MERGED_RECORD_BYTES;

thread_local! {
    /// The buffer of this thread's last context, kept for its next one (a
    /// network batch otherwise grows a new buffer from nothing).
    static SPARE_RECORD: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

impl LogRecord {
    /// An empty record with this thread's spare buffer.
    fn new() -> LogRecord {
        LogRecord {
            commands: 0,
            bytes: SPARE_RECORD.with(std::cell::Cell::take),
        }
    }

    /// Gives the buffer back to this thread for its next context.
    fn recycle(&mut self) {
        let bytes = std::mem::take(&mut self.bytes);
        if bytes.capacity() <= KEPT_RECORD_BYTES {
            SPARE_RECORD.with(|spare| spare.set(bytes));
        }
    }
}

/// Log record layout: `count: u32`, then per command `time_ms: u64`,
/// `db: u8`, `argc: u32`, and per argument `len: u32` + bytes (LE).
fn log_command(ctx: &mut Ctx<'_>, argv: &[&[u8]]) {
    let rec = &mut ctx.log;
    if rec.commands == 0 {
        rec.bytes.clear();
        rec.bytes.extend_from_slice(&0u32.to_le_bytes());
    }
    rec.commands += 1;
    rec.bytes.extend_from_slice(&ctx.now.to_le_bytes());
    rec.bytes.push(ctx.session.db as u8);
    rec.bytes
        .extend_from_slice(&(argv.len() as u32).to_le_bytes());
    for a in argv {
        rec.bytes.extend_from_slice(&(a.len() as u32).to_le_bytes());
        rec.bytes.extend_from_slice(a);
    }
}

/// Appends the collected write commands to the log as one record.
fn flush_log(ctx: &mut Ctx<'_>) {
    if ctx.log.commands == 0 {
        return;
    }
    let count = ctx.log.commands;
    ctx.log.bytes[0..4].copy_from_slice(&count.to_le_bytes());
    ctx.log.commands = 0;
    let log = &ctx.server.storage.log;
    ctx.session.last_lsn = if ctx.network_batch {
        log.append_deferred(&ctx.log.bytes)
    } else {
        log.append(&ctx.log.bytes)
    };
}

/// Replays one log record at start-up. Returns the number of commands.
pub fn replay_record(ctx: &mut Ctx<'_>, record: &[u8]) -> Result<u32, String> {
    fn take<'r>(rec: &mut &'r [u8], n: usize) -> Result<&'r [u8], String> {
        if rec.len() < n {
            return Err(String::from("truncated log record"));
        }
        let (head, tail) = rec.split_at(n);
        *rec = tail;
        Ok(head)
    }
    fn u32_of(b: &[u8]) -> u32 {
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    let mut rec = record;
    let count = u32_of(take(&mut rec, 4)?);
    ctx.replaying = true;
    for _ in 0..count {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(take(&mut rec, 8)?);
        let db = take(&mut rec, 1)?[0] as usize;
        if db >= crate::keyspace::DATABASES {
            return Err(format!("log record names database {db}"));
        }
        let argc = u32_of(take(&mut rec, 4)?) as usize;
        let mut argv: Vec<&[u8]> = Vec::with_capacity(argc.min(1024));
        for _ in 0..argc {
            let len = u32_of(take(&mut rec, 4)?) as usize;
            argv.push(take(&mut rec, len)?);
        }
        ctx.session.db = db;
        ctx.now = u64::from_le_bytes(ts);
        match table::lookup(&argv) {
            Lookup::Found(index, spec) => run(ctx, index, spec, &argv),
            Lookup::Error(e) => {
                return Err(format!(
                    "log record holds an invalid command: {}",
                    String::from_utf8_lossy(&e.0)
                ))
            }
        }
    }
    ctx.out.clear();
    Ok(count)
}

/// Runs an already looked-up command (also used by EXEC for queued ones).
pub fn run(ctx: &mut Ctx<'_>, index: usize, spec: &CommandSpec, argv: &[&[u8]]) {
    let stats = &ctx.server.stats;
    stats.commands_processed.fetch_add(1, Relaxed);
    if let Some(counter) = stats.per_command.get(index) {
        counter.fetch_add(1, Relaxed);
    }
    ctx.unchanged = false;
    let result = (spec.handler)(ctx, argv);
    // Taken, so that it never outlives the command (EXEC runs commands).
    let unchanged = std::mem::take(&mut ctx.unchanged);
    match result {
        Ok(()) if ctx.replaying || !spec.is_write() => {}
        Ok(()) if unchanged => {
            let appended = ctx.server.storage.log.appended();
            ctx.session.last_lsn = ctx.session.last_lsn.max(appended);
        }
        Ok(()) => log_command(ctx, argv),
        Err(err) => ctx.out.error_bytes(&err.0),
    }
}

/// Keys whose decoded values `argv` needs (so a connection can read cold
/// payloads with io_uring before running it).
pub fn value_keys<'a, 'b>(argv: &'b [&'a [u8]]) -> &'b [&'a [u8]] {
    let Some(name) = argv.first() else {
        return &[];
    };
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    let n = argv.len();
    let first_key = ((is("get") || is("getbit") || is("bitpos") || is("setbit")) && n > 1)
        || (is("bitcount") && n > 2)
        || (is("set") && n > 3 && argv[3..].iter().any(|a| a.eq_ignore_ascii_case(b"get")));
    if first_key {
        &argv[1..2]
    } else if is("mget") {
        &argv[1..]
    } else if is("bitop") && n > 3 {
        &argv[3..]
    } else {
        &[]
    }
}

#[cfg(test)]
mod tests {
    use super::Transaction;

    #[test]
    fn a_transaction_gives_back_each_queued_command_as_queued() {
        let mut tx = Transaction::default();
        assert!(tx.is_empty());
        tx.queue(7, &[b"SETBIT", b"k", b"5", b"1"]);
        tx.queue(3, &[b"PING"]);
        tx.queue(9, &[b"SET", b"", b"v"]);
        assert_eq!(tx.len(), 3);
        let mut argv = Vec::new();
        assert_eq!(tx.command(0, &mut argv), 7);
        assert_eq!(argv, [&b"SETBIT"[..], b"k", b"5", b"1"]);
        assert_eq!(tx.command(2, &mut argv), 9);
        assert_eq!(argv, [&b"SET"[..], b"", b"v"]);
        assert_eq!(tx.command(1, &mut argv), 3);
        assert_eq!(argv, [&b"PING"[..]]);
    }

    #[test]
    fn a_recycled_transaction_starts_empty_with_its_buffers() {
        let mut tx = Transaction::new();
        tx.queue(7, &[b"SETBIT", b"k", b"5", b"1"]);
        tx.failed = true;
        let capacity = tx.bytes.capacity();
        tx.recycle();
        let mut again = Transaction::new();
        assert!(again.is_empty() && !again.failed);
        assert_eq!(again.bytes.capacity(), capacity);
        again.queue(3, &[b"PING"]);
        let mut argv = Vec::new();
        assert_eq!(again.command(0, &mut argv), 3);
        assert_eq!(argv, [&b"PING"[..]]);
        assert_eq!(again.len(), 1);
    }
}
