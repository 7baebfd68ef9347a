//! One client connection: reads into an owned buffer with io_uring, parses
//! every complete request in it, runs them as one batch (one keyspace lock),
//! waits until the write-ahead log holds the batch's writes, and sends all
//! the replies in one write. A command that needs a bitmap whose payload is
//! on disk pauses the batch while the payload is read with io_uring (never
//! through a page fault). Reads are never cancelled.

use crate::command::{self, Ctx, Session};
use crate::keyspace::{BitString, ColdValue, Keyspace};
use crate::resp::{self, Limits, Parsed, ReplyBuf};
use crate::server::{ClientShared, Server};
use crate::storage::btree::Payload;
use crate::storage::page::PAGE_SIZE;
use crate::storage::pagefile::decode_payload;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::TcpStream;

/// Initial read buffer; it grows for large requests and shrinks back after.
const READ_BUFFER: usize = 16 * 1024;
/// A batch stops after this many requests, this much reply data or this
/// long, so one client cannot hold the keyspace lock for long: a pipeline of
/// SETBITs that each moved a multi-megabyte bitmap into the overlay held it
/// for 40 to 80 ms in a few hundred requests.
const BATCH_REQUESTS: usize = 1024;
const BATCH_REPLY_BYTES: usize = 1024 * 1024;
const BATCH_TIME: std::time::Duration = std::time::Duration::from_micros(500);
/// The clock is read once per this many requests of a batch.
const BATCH_CLOCK_EVERY: usize = 4;

/// What a batch left for the connection to do next.
enum Next {
    /// Everything complete was run; read more (at least up to this length).
    Read { need: usize },
    /// The batch stopped early; more complete requests may be buffered.
    Continue,
    /// Close after the replies are written (QUIT or a protocol error).
    Close,
    /// The next request needs these payloads read from disk first.
    Load(Vec<ColdValue>),
    /// The replies outgrew `--client-output-buffer-limit`: close without
    /// writing them.
    Overflow,
    /// The next request changes data, and changed data outgrew the cache
    /// budget: wait for a checkpoint attempt to end after this many (see
    /// `persistence::WriteHold`).
    HoldWrites(u64),
}

/// A connection's socket and shared record, for the idle-client timer.
type Registered = (Rc<TcpStream>, Arc<ClientShared>);

thread_local! {
    /// This thread's handle on the database file, for payload reads.
    static DB_FILE: RefCell<Option<Rc<tokio_uring::fs::File>>> = const { RefCell::new(None) };
    /// This thread's connections, for closing idle ones (`--timeout`). A
    /// connection removes itself before its socket is dropped.
    static CONNECTIONS: RefCell<HashMap<u64, Registered>> = RefCell::new(HashMap::new());
    /// A kick of the log writer is scheduled for the end of this round.
    static LOG_KICK_SCHEDULED: Cell<bool> = const { Cell::new(false) };
}

/// Wakes the log writer once the connections already ready on this thread
/// have run their batches: the kick is a task queued behind them. Batches
/// append their records without waking the writer (`Ctx::network_batch`),
/// so one log write and one wake-up of the waiters carry the whole round
/// instead of a few records each (pipelined SETBIT spent a third of the
/// server's CPU time switching to the writer and back).
fn kick_log_after_round(server: &Arc<Server>) {
    if LOG_KICK_SCHEDULED.with(|scheduled| scheduled.replace(true)) {
        return;
    }
    let server = server.clone();
    tokio_uring::spawn(async move {
        LOG_KICK_SCHEDULED.with(|scheduled| scheduled.set(false));
        server.storage.log.kick();
    });
}

/// Closes this thread's clients idle for longer than `--timeout`, with
/// `shutdown()`: their in-flight read (or stalled write) then ends by
/// itself, never cancelled.
pub async fn close_idle_clients(server: Arc<Server>) {
    let timeout_ms = server.config.timeout.saturating_mul(1000);
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(
            timeout_ms.clamp(100, 1000),
        ))
        .await;
        let now = crate::keyspace::now_ms();
        CONNECTIONS.with(|c| {
            for (stream, client) in c.borrow().values() {
                let idle = now.saturating_sub(client.last_active_ms.load(Relaxed));
                if idle > timeout_ms {
                    tracing::debug!(client = client.id, idle_ms = idle, "closing an idle client");
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                }
            }
        });
    }
}

async fn db_file(server: &Server) -> std::io::Result<Rc<tokio_uring::fs::File>> {
    if let Some(f) = DB_FILE.with(|f| f.borrow().clone()) {
        return Ok(f);
    }
    let f = Rc::new(tokio_uring::fs::File::open(&server.config.db).await?);
    DB_FILE.with(|slot| *slot.borrow_mut() = Some(f.clone()));
    Ok(f)
}

/// Reads and verifies a payload extent with io_uring.
async fn read_cold(server: &Server, cold: &ColdValue) -> Result<BitString, String> {
    let Payload::Extent { page, len, .. } = cold.meta.payload else {
        return Err(String::from("not an extent"));
    };
    let file = db_file(server)
        .await
        .map_err(|e| format!("opening the database for reading: {e}"))?;
    let len = len as usize;
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    let base = page * PAGE_SIZE as u64;
    while buf.len() < len {
        let filled = buf.len();
        let (res, slice) = file
            .read_at(buf.slice(filled..len), base + filled as u64)
            .await;
        buf = slice.into_inner();
        match res {
            Ok(0) => {
                return Err(format!(
                    "payload at page {page} runs past the end of the file"
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(format!("reading the payload at page {page}: {e}")),
        }
    }
    decode_payload(&buf, &cold.meta).map_err(|e| e.to_string())
}

pub async fn serve(server: Arc<Server>, stream: TcpStream, peer: SocketAddr, local: String) {
    let _ = stream.set_nodelay(true);
    let stream = Rc::new(stream);
    let client = server.register_client(peer.to_string(), local);
    let id = client.id;
    tracing::debug!(client = id, %peer, "client connected");
    if server.config.timeout > 0 {
        CONNECTIONS.with(|c| c.borrow_mut().insert(id, (stream.clone(), client.clone())));
    }
    let query_limit = server.config.query_buffer_limit();
    let mut session = Session::new(client);
    session.authenticated = server.config.requirepass.is_none();
    let mut out = ReplyBuf::new();
    let mut input: Vec<u8> = Vec::with_capacity(READ_BUFFER);
    let limits = Limits::default();
    let mut need = 1;
    let mut written = server.storage.log.subscribe();
    // Run the first request without the cold check (its load failed).
    let mut skip_cold = false;

    let reason = loop {
        if input.len() >= need {
            let (consumed, next) = run_batch(
                &server,
                &mut session,
                &mut out,
                &input,
                &limits,
                std::mem::take(&mut skip_cold),
            );
            if consumed == input.len() {
                input.clear();
                if input.capacity() > 4 * READ_BUFFER {
                    input = Vec::with_capacity(READ_BUFFER);
                }
            } else if consumed > 0 {
                input.drain(..consumed);
            }
            // Acknowledge writes only once the log holds them.
            let lsn = session.last_lsn;
            let logged = *written.borrow() >= lsn;
            if !logged {
                kick_log_after_round(&server);
                if written.wait_for(|w| *w >= lsn).await.is_err() {
                    break String::from("the log writer stopped");
                }
            }
            if matches!(next, Next::Overflow) {
                tracing::warn!(
                    client = id,
                    %peer,
                    pending = out.len(),
                    limit = server.config.output_buffer_limit(),
                    "closing a client whose replies outgrew --client-output-buffer-limit"
                );
                out.clear();
                let _ = stream.shutdown(std::net::Shutdown::Both);
                break String::from("output buffer limit reached");
            }
            if !out.is_empty() {
                let bytes = std::mem::take(&mut out.buf);
                server
                    .stats
                    .net_output_bytes
                    .fetch_add(bytes.len() as u64, Relaxed);
                let (res, mut bytes) = stream.write_all(bytes).await;
                bytes.clear();
                out.buf = bytes;
                if let Err(e) = res {
                    break format!("write failed: {e}");
                }
            }
            if session.shutdown_requested {
                server.shutdown("SHUTDOWN command");
            }
            match next {
                Next::Close => {
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                    break String::from("closed by the server");
                }
                Next::Continue => {
                    need = 1;
                    continue;
                }
                Next::Read { need: n } => need = n,
                Next::Overflow => unreachable!("handled before writing"),
                Next::HoldWrites(seen) => {
                    server.storage.write_hold.wait(seen).await;
                    need = 1;
                    continue;
                }
                Next::Load(cold) => {
                    for c in &cold {
                        match read_cold(&server, c).await {
                            Ok(value) => server.keyspace().install(c, Arc::new(value)),
                            Err(e) => {
                                tracing::error!(client = id, error = %e, "cannot read a payload");
                                skip_cold = true;
                            }
                        }
                    }
                    need = 1;
                    continue;
                }
            }
        }
        if input.len() > query_limit {
            tracing::warn!(
                client = id,
                %peer,
                buffered = input.len(),
                limit = query_limit,
                "closing a client that reached --client-query-buffer-limit"
            );
            let _ = stream.shutdown(std::net::Shutdown::Both);
            break String::from("query buffer limit reached");
        }
        // A request may claim more than the limit: buffer at most one byte
        // past it, which is enough to decide.
        let need = need.min(query_limit.saturating_add(1));
        if input.capacity() < need {
            input.reserve(need - input.len());
        } else if input.len() == input.capacity() {
            input.reserve(READ_BUFFER);
        }
        // Read into the spare capacity after what is buffered; the read is
        // awaited to completion, never dropped.
        let filled = input.len();
        let (res, slice) = stream.read(input.slice(filled..)).await;
        input = slice.into_inner();
        match res {
            Ok(0) => break String::from("closed by the client"),
            Ok(n) => {
                server.stats.net_input_bytes.fetch_add(n as u64, Relaxed);
                session
                    .client
                    .last_active_ms
                    .store(crate::keyspace::now_ms(), Relaxed);
            }
            Err(e) => break format!("read failed: {e}"),
        }
    };
    tracing::debug!(client = id, reason, "client disconnected");
    if !session.watched.is_empty() {
        server.keyspace().watches.unwatch(id, &session.watched);
    }
    CONNECTIONS.with(|c| c.borrow_mut().remove(&id));
    server.unregister_client(id);
}

/// Runs the complete requests at the start of `input`. Returns the bytes
/// consumed and what to do next.
fn run_batch(
    server: &Server,
    session: &mut Session,
    out: &mut ReplyBuf,
    input: &[u8],
    limits: &Limits,
    mut skip_cold: bool,
) -> (usize, Next) {
    let output_limit = server.config.output_buffer_limit();
    let unauthenticated = Limits {
        unauthenticated: true,
        ..*limits
    };
    let mut ctx = Ctx::new(server, session, out);
    ctx.network_batch = true;
    if !skip_cold && ctx.session.authenticated {
        prefetch_batch(&mut ctx, input);
    }
    let mut pos = 0;
    let mut requests = 0;
    let started = std::time::Instant::now();
    loop {
        if ctx.out.len() > output_limit {
            return (pos, Next::Overflow);
        }
        if requests == BATCH_REQUESTS
            || ctx.out.len() >= BATCH_REPLY_BYTES
            || (requests % BATCH_CLOCK_EVERY == BATCH_CLOCK_EVERY - 1
                && started.elapsed() >= BATCH_TIME)
        {
            return (pos, Next::Continue);
        }
        let limits = if ctx.session.authenticated {
            limits
        } else {
            &unauthenticated
        };
        match resp::parse(&input[pos..], limits) {
            Ok(Parsed::Request { args, consumed }) => {
                let argv: Vec<&[u8]> = args.iter().map(|a| a.as_ref()).collect();
                let now = crate::keyspace::now_ms();
                if !std::mem::take(&mut skip_cold) {
                    let cold = cold_values(&mut ctx, &argv, now);
                    if !cold.is_empty() {
                        return (pos, Next::Load(cold));
                    }
                }
                command::execute_at(&mut ctx, &argv, now);
                if let Some(seen) = ctx.hold_writes {
                    // Not run: it runs again after the wait.
                    return (pos, Next::HoldWrites(seen));
                }
                pos += consumed;
                requests += 1;
                if ctx.out.len() > output_limit {
                    return (pos, Next::Overflow);
                }
                if ctx.session.close_after_reply || ctx.session.shutdown_requested {
                    return (
                        pos,
                        if ctx.session.close_after_reply {
                            Next::Close
                        } else {
                            Next::Continue
                        },
                    );
                }
            }
            Ok(Parsed::Skip { consumed }) => pos += consumed,
            Ok(Parsed::Incomplete { need }) => {
                return (pos, Next::Read { need });
            }
            Err(e) => {
                let mut line = b"ERR ".to_vec();
                line.extend_from_slice(e.as_bytes());
                ctx.out.error_bytes(&line);
                tracing::debug!(client = ctx.session.client.id, error = %e, "protocol error");
                return (pos, Next::Close);
            }
        }
    }
}

/// Requests of a pipelined batch whose values are prefetched before it runs.
const PREFETCH_REQUESTS: usize = 16;
/// The fewest point requests a batch must start with to be prefetched.
const PREFETCH_MIN: usize = 4;

/// Before a pipelined batch runs, looks up the keys of the point requests
/// (SETBIT, GETBIT, BITCOUNT, BITPOS, GET) it starts with and starts loading
/// their changed values into the CPU's cache. With many keys, each request's
/// time goes mostly to waiting for memory (the key's slot, then its value,
/// then the bitmap's containers); one after the other here, the lookups'
/// misses overlap, and the requests then find their slot and value in the
/// cache. A few requests have little to overlap, so nothing is done for
/// fewer than [`PREFETCH_MIN`]; a batch that starts otherwise (`MULTI`: a
/// `mark_event` transaction sets three bits in keys that stay in the cache
/// anyway) costs one look at its first request.
fn prefetch_batch(ctx: &mut Ctx<'_>, input: &[u8]) {
    let mut keys: [&[u8]; PREFETCH_REQUESTS] = [&[]; PREFETCH_REQUESTS];
    let mut n = 0;
    let mut pos = 0;
    while n < PREFETCH_REQUESTS {
        let Some(r) = input.get(pos..).and_then(resp::skim) else {
            break;
        };
        let point = [&b"setbit"[..], b"getbit", b"bitcount", b"bitpos", b"get"]
            .iter()
            .any(|c| r.name.eq_ignore_ascii_case(c));
        match r.key {
            Some(key) if point => keys[n] = key,
            _ => break,
        }
        n += 1;
        pos += r.len;
    }
    if n < PREFETCH_MIN {
        return;
    }
    let db = ctx.session.db;
    let ks = ctx.keyspace();
    for key in &keys[..n] {
        ks.prefetch(db, key);
    }
}

/// Payloads on disk that the request needs decoded (for EXEC: those of every
/// queued command).
fn cold_values(ctx: &mut Ctx<'_>, argv: &[&[u8]], now: u64) -> Vec<ColdValue> {
    let db = ctx.session.db;
    let mut cold = Vec::new();
    match ctx.session.multi.take() {
        // Taken out of the session while the lock is held (the keys are
        // borrowed from it), and put back.
        Some(tx)
            if argv
                .first()
                .is_some_and(|n| n.eq_ignore_ascii_case(b"exec")) =>
        {
            let ks = ctx.keyspace();
            let mut queued = Vec::new();
            for i in 0..tx.len() {
                tx.command(i, &mut queued);
                push_cold(ks, db, command::value_keys(&queued), now, &mut cold);
            }
            ctx.session.multi = Some(tx);
        }
        Some(tx) => ctx.session.multi = Some(tx),
        None => {
            let keys = command::value_keys(argv);
            if !keys.is_empty() {
                push_cold(ctx.keyspace(), db, keys, now, &mut cold);
            }
        }
    }
    cold
}

fn push_cold(ks: &mut Keyspace, db: usize, keys: &[&[u8]], now: u64, cold: &mut Vec<ColdValue>) {
    cold.extend(
        keys.iter()
            .filter_map(|k| ks.cold(db, k, now).ok().flatten()),
    );
}
