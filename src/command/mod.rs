//! Commands: looking a request up in the command table, checking its arity,
//! queueing it inside MULTI, and running it against the keyspace with Redis
//! 7.0's exact replies and errors. One file per command family; this file
//! owns dispatch, the per-connection `Session` and the execution context.

pub mod args;
pub mod bits;
pub mod connection;
pub mod expire;
pub mod keys;
pub mod server;
pub mod strings;
pub mod table;
pub mod transaction;

use crate::keyspace::{Db, Keyspace};
use crate::resp::ReplyBuf;
use crate::server::{ClientShared, Server};
use std::borrow::Cow;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, MutexGuard};
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

/// An open MULTI block.
#[derive(Debug, Default)]
pub struct Transaction {
    pub queued: Vec<(usize, Vec<Vec<u8>>)>,
    /// A command failed to queue: EXEC will abort.
    pub failed: bool,
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
}

impl Session {
    pub fn new(client: Arc<ClientShared>) -> Self {
        Session {
            client,
            db: 0,
            multi: None,
            close_after_reply: false,
            shutdown_requested: false,
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
    guard: Option<MutexGuard<'a, Keyspace>>,
    /// Unix milliseconds, fixed for the duration of one command.
    pub now: u64,
}

impl<'a> Ctx<'a> {
    pub fn new(server: &'a Server, session: &'a mut Session, out: &'a mut ReplyBuf) -> Self {
        Ctx {
            server,
            session,
            out,
            guard: None,
            now: crate::keyspace::now_ms(),
        }
    }

    /// The keyspace, locked for the rest of this context's life.
    pub fn keyspace(&mut self) -> &mut Keyspace {
        let server = self.server;
        self.guard.get_or_insert_with(|| server.keyspace())
    }

    /// The session's selected database.
    pub fn db(&mut self) -> &mut Db {
        let index = self.session.db;
        self.keyspace().db(index)
    }

    /// The selected database and the reply buffer, borrowed together (so a
    /// value can be encoded straight from the keyspace).
    pub fn db_and_out(&mut self) -> (&mut Db, &mut ReplyBuf) {
        let server = self.server;
        let index = self.session.db;
        let keyspace = self.guard.get_or_insert_with(|| server.keyspace());
        (keyspace.db(index), &mut *self.out)
    }

    /// Releases the keyspace lock early (before a slow non-keyspace step).
    pub fn release(&mut self) {
        self.guard = None;
    }
}

/// Runs one request (a complete argument vector) and appends its reply.
pub fn execute(ctx: &mut Ctx<'_>, argv: &[&[u8]]) {
    ctx.now = crate::keyspace::now_ms();
    if ctx.server.config.debug {
        let shown: Vec<String> = argv.iter().map(|a| a.escape_ascii().to_string()).collect();
        tracing::info!(
            client = ctx.session.client.id,
            "command: {}",
            shown.join(" ")
        );
    }
    let (index, spec) = match table::lookup(argv) {
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
    if let Some(tx) = ctx.session.multi.as_mut() {
        if !spec.runs_inside_multi() {
            tx.queued
                .push((index, argv.iter().map(|a| a.to_vec()).collect()));
            ctx.out.simple("QUEUED");
            return;
        }
    }
    run(ctx, index, spec, argv);
}

/// Runs an already looked-up command (also used by EXEC for queued ones).
pub fn run(ctx: &mut Ctx<'_>, index: usize, spec: &CommandSpec, argv: &[&[u8]]) {
    let stats = &ctx.server.stats;
    stats.commands_processed.fetch_add(1, Relaxed);
    if let Some(counter) = stats.per_command.get(index) {
        counter.fetch_add(1, Relaxed);
    }
    if let Err(err) = (spec.handler)(ctx, argv) {
        ctx.out.error_bytes(&err.0);
    }
}
