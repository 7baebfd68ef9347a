//! One client connection: reads into an owned buffer with io_uring, parses
//! every complete request in it, runs them as one batch (one keyspace lock),
//! and sends all their replies in one write. Reads are never cancelled.

use crate::command::{self, Ctx, Session};
use crate::resp::{self, Limits, Parsed, ReplyBuf};
use crate::server::Server;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::TcpStream;

/// Initial read buffer; it grows for large requests and shrinks back after.
const READ_BUFFER: usize = 16 * 1024;
/// A batch stops after this many requests or this much reply data, so one
/// client cannot hold the keyspace lock for long.
const BATCH_REQUESTS: usize = 1024;
const BATCH_REPLY_BYTES: usize = 1024 * 1024;

/// What a batch left for the connection to do next.
enum Next {
    /// Everything complete was run; read more (at least up to this length).
    Read { need: usize },
    /// The batch stopped early; more complete requests may be buffered.
    Continue,
    /// Close after the replies are written (QUIT or a protocol error).
    Close,
}

pub async fn serve(server: Arc<Server>, stream: TcpStream, peer: SocketAddr, local: String) {
    let _ = stream.set_nodelay(true);
    let client = server.register_client(peer.to_string(), local);
    let id = client.id;
    tracing::debug!(client = id, %peer, "client connected");
    let mut session = Session::new(client);
    let mut out = ReplyBuf::new();
    let mut input: Vec<u8> = Vec::with_capacity(READ_BUFFER);
    let limits = Limits::default();
    let mut need = 1;

    let reason = loop {
        if input.len() >= need {
            let (consumed, next) = run_batch(&server, &mut session, &mut out, &input, &limits);
            if consumed == input.len() {
                input.clear();
                if input.capacity() > 4 * READ_BUFFER {
                    input = Vec::with_capacity(READ_BUFFER);
                }
            } else if consumed > 0 {
                input.drain(..consumed);
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
            }
        }
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
            }
            Err(e) => break format!("read failed: {e}"),
        }
    };
    tracing::debug!(client = id, reason, "client disconnected");
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
) -> (usize, Next) {
    let mut ctx = Ctx::new(server, session, out);
    let mut pos = 0;
    let mut requests = 0;
    loop {
        if requests == BATCH_REQUESTS || ctx.out.len() >= BATCH_REPLY_BYTES {
            return (pos, Next::Continue);
        }
        match resp::parse(&input[pos..], limits) {
            Ok(Parsed::Request { args, consumed }) => {
                pos += consumed;
                requests += 1;
                let argv: Vec<&[u8]> = args.iter().map(|a| a.as_ref()).collect();
                command::execute(&mut ctx, &argv);
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
