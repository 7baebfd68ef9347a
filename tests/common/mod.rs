//! Harness shared by the integration tests.
//!
//! * [`ServerProcess`] starts a server (redis-server or the server under test)
//!   on a free 127.0.0.1 port in a temporary directory and kills it on drop.
//! * [`RawClient`] is a byte-level RESP client: it sends arbitrary bytes and
//!   reads back exactly one complete reply (RESP2 or RESP3) as raw bytes.
//! * [`Pair`] / [`DualClient`] run the same input against redis-server and the
//!   server under test and assert that the raw reply bytes are identical.
//!
//! The server under test is the binary named by `BITMAPIST_TEST_BIN` if that
//! variable is set, otherwise the crate's `bitmapist-server` binary.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a server may take to accept its first connection.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Read timeout of every [`RawClient`].
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Ports handed out by this process, never handed out twice: tests run in
/// parallel threads, and two servers must never race for the same port.
static RESERVED_PORTS: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// A port that was free a moment ago (bind port 0, note it, release it).
pub fn free_port() -> u16 {
    let mut reserved = RESERVED_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        if !reserved.contains(&port) {
            reserved.push(port);
            return port;
        }
    }
}

/// Escapes bytes for failure messages: printable ASCII as is, `\\` and `"`
/// escaped, `\r` `\n` `\t`, others as `\xNN`; very long inputs are cut.
pub fn esc(bytes: &[u8]) -> String {
    const MAX: usize = 1500;
    fn one(out: &mut String, bytes: &[u8]) {
        for &b in bytes {
            match b {
                b'\\' => out.push_str("\\\\"),
                b'"' => out.push_str("\\\""),
                b'\r' => out.push_str("\\r"),
                b'\n' => out.push_str("\\n"),
                b'\t' => out.push_str("\\t"),
                0x20..=0x7e => out.push(char::from(b)),
                _ => out.push_str(&format!("\\x{b:02x}")),
            }
        }
    }
    let mut out = String::new();
    if bytes.len() <= MAX {
        one(&mut out, bytes);
    } else {
        one(&mut out, &bytes[..MAX - 200]);
        out.push_str(&format!("...<{} bytes in all>...", bytes.len()));
        one(&mut out, &bytes[bytes.len() - 200..]);
    }
    out
}

/// Asserts that a reply is `expected`, showing both escaped on failure.
#[track_caller]
pub fn assert_reply(actual: &[u8], expected: &[u8], what: &str) {
    assert!(
        actual == expected,
        "{what}: got \"{}\", expected \"{}\"",
        esc(actual),
        esc(expected)
    );
}

/// Encodes a command as a RESP multibulk: `*N\r\n$len\r\narg\r\n...`.
pub fn resp_encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// [`resp_encode`] for anything byte-like (`&str`, `String`, `Vec<u8>`, ...).
pub fn encode<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_ref()).collect();
    resp_encode(&args)
}

// ---------------------------------------------------------------------------
// Reply framing and parsing
// ---------------------------------------------------------------------------

/// Length of the first complete reply in `buf`: `Ok(None)` while more bytes
/// are needed, `Err` when the bytes cannot be a RESP2/RESP3 reply.
pub fn reply_len(buf: &[u8]) -> Result<Option<usize>, String> {
    frame_at(buf, 0, 0)
}

fn parse_len(line: &[u8], what: u8) -> Result<i64, String> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| {
            format!(
                "bad length {:?} after '{}'",
                esc(line),
                char::from(what).escape_default()
            )
        })
}

fn frame_at(buf: &[u8], pos: usize, depth: usize) -> Result<Option<usize>, String> {
    if depth > 64 {
        return Err("aggregates nested more than 64 deep".into());
    }
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let Some(eol) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = &buf[pos + 1..pos + eol];
    let next = pos + eol + 2;
    match kind {
        b'+' | b'-' | b':' | b',' | b'#' | b'(' => Ok(Some(next)),
        b'_' if line.is_empty() => Ok(Some(next)),
        b'$' | b'=' | b'!' => {
            let n = parse_len(line, kind)?;
            if n == -1 && kind == b'$' {
                return Ok(Some(next));
            }
            let n = usize::try_from(n).map_err(|_| format!("negative length {n}"))?;
            let end = next + n + 2;
            if buf.len() < end {
                return Ok(None);
            }
            if &buf[end - 2..end] != b"\r\n" {
                return Err(format!("bulk of {n} bytes not followed by \\r\\n"));
            }
            Ok(Some(end))
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = parse_len(line, kind)?;
            if n == -1 && kind == b'*' {
                return Ok(Some(next));
            }
            let n = usize::try_from(n).map_err(|_| format!("negative count {n}"))?;
            let items = if matches!(kind, b'%' | b'|') {
                2 * n
            } else {
                n
            };
            let mut at = next;
            for _ in 0..items {
                match frame_at(buf, at, depth + 1)? {
                    Some(end) => at = end,
                    None => return Ok(None),
                }
            }
            if kind == b'|' {
                // An attribute map is followed by the reply it annotates.
                return frame_at(buf, at, depth + 1);
            }
            Ok(Some(at))
        }
        other => Err(format!(
            "unexpected type byte '{}' at offset {pos}",
            [other].escape_ascii()
        )),
    }
}

/// A parsed reply, for tests that look inside replies (SCAN, KEYS, ...).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reply {
    Simple(Vec<u8>),
    Error(Vec<u8>),
    Integer(i64),
    /// `$-1` is `Bulk(None)`.
    Bulk(Option<Vec<u8>>),
    /// `*-1` is `Array(None)`; also used for RESP3 sets, pushes and maps
    /// (flattened key, value, key, value).
    Array(Option<Vec<Reply>>),
    /// Any other RESP3 scalar, raw.
    Other(Vec<u8>),
}

impl Reply {
    pub fn as_array(&self) -> &[Reply] {
        match self {
            Reply::Array(Some(items)) => items,
            other => panic!("expected an array reply, got {other:?}"),
        }
    }

    pub fn as_bulk(&self) -> &[u8] {
        match self {
            Reply::Bulk(Some(b)) => b,
            other => panic!("expected a bulk reply, got {other:?}"),
        }
    }

    pub fn as_int(&self) -> i64 {
        match self {
            Reply::Integer(i) => *i,
            other => panic!("expected an integer reply, got {other:?}"),
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }
}

/// Parses one complete reply (as returned by [`RawClient::read_reply`]).
pub fn parse_reply(raw: &[u8]) -> Reply {
    let (reply, used) = parse_at(raw, 0);
    assert_eq!(used, raw.len(), "trailing bytes after reply {}", esc(raw));
    reply
}

fn parse_at(buf: &[u8], pos: usize) -> (Reply, usize) {
    let end = match frame_at(buf, pos, 0) {
        Ok(Some(end)) => end,
        other => panic!("not a complete reply ({other:?}): {}", esc(&buf[pos..])),
    };
    let eol = pos + buf[pos..].windows(2).position(|w| w == b"\r\n").unwrap();
    let line = &buf[pos + 1..eol];
    let text = String::from_utf8_lossy(line);
    let reply = match buf[pos] {
        b'+' => Reply::Simple(line.to_vec()),
        b'-' => Reply::Error(line.to_vec()),
        b':' => Reply::Integer(text.parse().expect("integer reply")),
        b'$' if line == b"-1" => Reply::Bulk(None),
        b'$' => Reply::Bulk(Some(buf[eol + 2..end - 2].to_vec())),
        b'*' if line == b"-1" => Reply::Array(None),
        kind @ (b'*' | b'~' | b'>' | b'%') => {
            let n: usize = text.parse().expect("aggregate length");
            let n = if kind == b'%' { 2 * n } else { n };
            let mut items = Vec::with_capacity(n);
            let mut at = eol + 2;
            for _ in 0..n {
                let (item, next) = parse_at(buf, at);
                items.push(item);
                at = next;
            }
            Reply::Array(Some(items))
        }
        _ => Reply::Other(buf[pos..end].to_vec()),
    };
    (reply, end)
}

// ---------------------------------------------------------------------------
// Server processes
// ---------------------------------------------------------------------------

/// A server child process listening on 127.0.0.1; killed on drop, and its
/// temporary directory removed.
pub struct ServerProcess {
    name: String,
    child: Child,
    port: u16,
    log: PathBuf,
    dir: tempfile::TempDir,
}

enum StartError {
    Exited(String),
    TimedOut,
}

impl ServerProcess {
    /// A stock redis-server with 16 databases and no persistence.
    pub fn redis() -> ServerProcess {
        ServerProcess::start("redis-server", |port, _dir| {
            let mut cmd = Command::new("redis-server");
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--databases", "16"]);
            cmd
        })
    }

    /// The server under test: `$BITMAPIST_TEST_BIN` or the crate's binary,
    /// run as `--addr 127.0.0.1:P --db <tempdir>/bitmapist.db <extra_args>`.
    pub fn bitmapist(extra_args: &[&str]) -> ServerProcess {
        let bin = std::env::var_os("BITMAPIST_TEST_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_bitmapist-server")));
        ServerProcess::start("bitmapist-server", |port, dir| {
            let mut cmd = Command::new(&bin);
            cmd.arg("--addr")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--db")
                .arg(dir.join("bitmapist.db"))
                .args(extra_args);
            cmd
        })
    }

    /// Starts `make(port, tempdir)` (run inside `tempdir`) and waits until it
    /// accepts connections on 127.0.0.1:port. Retries on a fresh port when the
    /// process exits complaining that its address is in use.
    pub fn start(name: &str, make: impl Fn(u16, &Path) -> Command) -> ServerProcess {
        let dir = tempfile::Builder::new()
            .prefix("difftest-")
            .tempdir()
            .expect("create temp dir");
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            let port = free_port();
            let log = dir.path().join(format!("{name}.{attempt}.log"));
            let out = File::create(&log).expect("create log file");
            let err = out.try_clone().expect("clone log file");
            let mut cmd = make(port, dir.path());
            cmd.current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::from(out))
                .stderr(Stdio::from(err));
            let program = cmd.get_program().to_string_lossy().into_owned();
            let mut child = match cmd.spawn() {
                Ok(child) => child,
                Err(e) if e.kind() == ErrorKind::NotFound => panic!(
                    "cannot start {name}: `{program}` not found{}",
                    if program == "redis-server" {
                        " on PATH; the differential tests need redis-server 7.0 \
                         (Debian: apt-get install redis-server)"
                    } else {
                        ""
                    }
                ),
                Err(e) => panic!("cannot start {name} (`{program}`): {e}"),
            };
            match wait_ready(&mut child, port) {
                Ok(()) => {
                    return ServerProcess {
                        name: name.to_string(),
                        child,
                        port,
                        log,
                        dir,
                    }
                }
                Err(StartError::Exited(status)) => {
                    let output = read_tail(&log);
                    if attempt < ATTEMPTS && output.to_ascii_lowercase().contains("in use") {
                        continue;
                    }
                    panic!(
                        "{name} (`{program}`, port {port}) exited before accepting \
                         connections ({status}); its output:\n{output}"
                    );
                }
                Err(StartError::TimedOut) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "{name} (`{program}`) did not accept connections on 127.0.0.1:{port} \
                         within {START_TIMEOUT:?}; its output:\n{}",
                        read_tail(&log)
                    )
                }
            }
        }
        unreachable!()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn connect(&self) -> RawClient {
        RawClient::connect(self.port)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process's stdout and stderr so far (the last 8 KB).
    pub fn output(&self) -> String {
        read_tail(&self.log)
    }

    /// The server's temporary directory (its working directory).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`USR1`, `TERM`, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// `kill -9`: the process dies at once, wherever it is.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits (up to `timeout`) for the process to exit;
    /// returns its exit code.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.wait_exit(timeout)
    }

    /// Waits (up to `timeout`) for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Our server on a given database file (kept across restarts), with
    /// extra flags.
    pub fn bitmapist_at(db: &Path, extra_args: &[&str]) -> ServerProcess {
        let bin = std::env::var_os("BITMAPIST_TEST_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_bitmapist-server")));
        let db = db.to_path_buf();
        ServerProcess::start("bitmapist-server", |port, _dir| {
            let mut cmd = Command::new(&bin);
            cmd.arg("--addr")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--db")
                .arg(&db)
                .args(extra_args);
            cmd
        })
    }
}

fn read_tail(log: &Path) -> String {
    let bytes = std::fs::read(log).unwrap_or_default();
    let tail = &bytes[bytes.len().saturating_sub(8192)..];
    String::from_utf8_lossy(tail).into_owned()
}

/// Polls until the server on 127.0.0.1:port answers a PING (`+PONG`, or an
/// error such as `-NOAUTH` from a server with a password) or the child
/// exits. A connection alone is not proof: while the child starts, the
/// port can be held for a moment by something else (a connect whose
/// ephemeral port is the port itself connects to itself, and another
/// test's `free_port` briefly listens on ports the kernel hands it), and a
/// test that took that for the server had its first connections reset or
/// refused.
fn wait_ready(child: &mut Child, port: u16) -> Result<(), StartError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(StartError::Exited(status.to_string()));
        }
        if answers_ping(&addr) {
            // Make sure the listener is our child and not a stranger that
            // took the port while our child failed to bind it.
            if let Ok(Some(status)) = child.try_wait() {
                return Err(StartError::Exited(status.to_string()));
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(StartError::TimedOut);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether a server at `addr` answers PING with a status or error line.
fn answers_ping(addr: &SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(addr, Duration::from_millis(200)) else {
        return false;
    };
    if stream.local_addr().is_ok_and(|local| local == *addr) {
        return false; // connected to itself
    }
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut first = [0u8; 1];
    matches!(stream.read(&mut first), Ok(1) if first[0] == b'+' || first[0] == b'-')
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// Raw client
// ---------------------------------------------------------------------------

/// A RESP client that works on raw bytes.
pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    port: u16,
}

impl RawClient {
    /// Wraps an already connected stream (its timeouts as the caller set them).
    pub fn from_stream(stream: TcpStream, port: u16) -> RawClient {
        let _ = stream.set_nodelay(true);
        RawClient {
            stream,
            buf: Vec::new(),
            port,
        }
    }

    pub fn connect(port: u16) -> RawClient {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        RawClient {
            stream,
            buf: Vec::new(),
            port,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .map_err(|e| format!("write to 127.0.0.1:{}: {e}", self.port))
    }

    #[track_caller]
    pub fn send(&mut self, bytes: &[u8]) {
        if let Err(e) = self.try_send(bytes) {
            panic!("{e}");
        }
    }

    /// Reads exactly one complete reply and returns its raw bytes.
    pub fn try_read_reply(&mut self) -> Result<Vec<u8>, String> {
        loop {
            match reply_len(&self.buf) {
                Err(e) => {
                    return Err(format!(
                        "malformed reply from 127.0.0.1:{}: {e}; bytes: {}",
                        self.port,
                        esc(&self.buf)
                    ))
                }
                Ok(Some(n)) => return Ok(self.buf.drain(..n).collect()),
                Ok(None) => {}
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(format!(
                        "connection closed by 127.0.0.1:{} while waiting for a reply; \
                         partial reply: {:?}",
                        self.port,
                        esc(&self.buf)
                    ))
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(format!(
                        "no complete reply from 127.0.0.1:{} ({e}; read timeout \
                         {READ_TIMEOUT:?}); partial reply: {:?}",
                        self.port,
                        esc(&self.buf)
                    ))
                }
            }
        }
    }

    #[track_caller]
    pub fn read_reply(&mut self) -> Vec<u8> {
        self.try_read_reply().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Encodes `args` as a multibulk, sends it and reads one reply.
    #[track_caller]
    pub fn cmd(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.send(&resp_encode(args));
        self.read_reply()
    }

    /// [`RawClient::cmd`] for anything byte-like.
    #[track_caller]
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Vec<u8> {
        self.send(&encode(args));
        self.read_reply()
    }

    /// Reads everything until the server closes the connection (a reset
    /// after the server's last bytes also counts as closing).
    pub fn try_read_to_close(&mut self) -> Result<Vec<u8>, String> {
        let mut out = std::mem::take(&mut self.buf);
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(out),
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(out),
                Err(e) => {
                    return Err(format!(
                        "127.0.0.1:{} did not close the connection ({e}; read timeout \
                         {READ_TIMEOUT:?}); read so far: {:?}",
                        self.port,
                        esc(&out)
                    ))
                }
            }
        }
    }

    #[track_caller]
    pub fn read_to_close(&mut self) -> Vec<u8> {
        self.try_read_to_close().unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Runs a full SCAN iteration (`SCAN cursor <extra...>` until cursor 0) and
/// returns every key returned, with duplicates, in order.
#[track_caller]
pub fn scan_keys(client: &mut RawClient, extra: &[&[u8]]) -> Result<Vec<Vec<u8>>, String> {
    let mut cursor = b"0".to_vec();
    let mut keys = Vec::new();
    for _ in 0..10_000_000 {
        let mut args: Vec<&[u8]> = vec![b"SCAN", &cursor];
        args.extend_from_slice(extra);
        let raw = client.cmd(&args);
        let reply = parse_reply(&raw);
        let items = match &reply {
            Reply::Array(Some(items)) if items.len() == 2 => items,
            _ => {
                return Err(format!(
                    "SCAN reply is not a 2-element array: {}",
                    esc(&raw)
                ))
            }
        };
        let Reply::Bulk(Some(next)) = &items[0] else {
            return Err(format!("SCAN cursor is not a bulk string: {}", esc(&raw)));
        };
        let Reply::Array(Some(batch)) = &items[1] else {
            return Err(format!("SCAN keys are not an array: {}", esc(&raw)));
        };
        for key in batch {
            match key {
                Reply::Bulk(Some(k)) => keys.push(k.clone()),
                other => return Err(format!("SCAN key is not a bulk string: {other:?}")),
            }
        }
        cursor = next.clone();
        if cursor == b"0" {
            return Ok(keys);
        }
    }
    Err("SCAN did not finish".into())
}

// ---------------------------------------------------------------------------
// Differential pair
// ---------------------------------------------------------------------------

/// One connection to each server of a [`Pair`]; every check sends the same
/// bytes to both and compares the replies.
pub struct DualClient {
    pub redis: RawClient,
    pub ours: RawClient,
    /// Number of commands sent on this pair of connections (for messages).
    sent: usize,
}

/// A command for messages: each argument quoted and escaped, long ones cut
/// (their length shown), at most 40 arguments.
fn fmt_args<A: AsRef<[u8]>>(args: &[A]) -> String {
    const MAX_ARG: usize = 120;
    let mut parts: Vec<String> = args
        .iter()
        .take(40)
        .map(|a| {
            let a = a.as_ref();
            if a.len() <= MAX_ARG {
                format!("\"{}\"", esc(a))
            } else {
                format!("\"{}...\"<{} bytes>", esc(&a[..MAX_ARG]), a.len())
            }
        })
        .collect();
    if args.len() > 40 {
        parts.push(format!("...<{} arguments in all>", args.len()));
    }
    parts.join(" ")
}

impl DualClient {
    pub fn new(redis: &ServerProcess, ours: &ServerProcess) -> DualClient {
        DualClient {
            redis: redis.connect(),
            ours: ours.connect(),
            sent: 0,
        }
    }

    /// Sends `args` to both servers and returns (redis reply, our reply)
    /// without comparing them.
    #[track_caller]
    pub fn both<A: AsRef<[u8]>>(&mut self, args: &[A]) -> (Vec<u8>, Vec<u8>) {
        self.sent += 1;
        let input = encode(args);
        let what = || format!("command #{} {}", self.sent, fmt_args(args));
        let redis = self
            .redis
            .try_send(&input)
            .and_then(|()| self.redis.try_read_reply())
            .unwrap_or_else(|e| panic!("redis-server failed on {}: {e}", what()));
        let ours = self
            .ours
            .try_send(&input)
            .and_then(|()| self.ours.try_read_reply())
            .unwrap_or_else(|e| panic!("server under test failed on {}: {e}", what()));
        (redis, ours)
    }

    /// Runs one command on both servers, asserts identical reply bytes and
    /// returns the reply.
    #[track_caller]
    pub fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Vec<u8> {
        self.cmd_at(args, None)
    }

    /// Runs one command on both servers; `Err` (with a readable message) when
    /// the replies differ. `pos` is (index, length) of a script step.
    pub fn compare<A: AsRef<[u8]>>(
        &mut self,
        args: &[A],
        pos: Option<(usize, usize)>,
    ) -> Result<Vec<u8>, String> {
        let (redis, ours) = self.both(args);
        if redis == ours {
            return Ok(redis);
        }
        let pos = pos
            .map(|(i, n)| format!(" (script step {} of {n})", i + 1))
            .unwrap_or_default();
        Err(format!(
            "reply mismatch on command #{}{pos}: {}\n  redis: \"{}\"\n  ours:  \"{}\"",
            self.sent,
            fmt_args(args),
            esc(&redis),
            esc(&ours)
        ))
    }

    #[track_caller]
    fn cmd_at<A: AsRef<[u8]>>(&mut self, args: &[A], pos: Option<(usize, usize)>) -> Vec<u8> {
        self.compare(args, pos).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Sends many commands pipelined (in batches) to both servers and
    /// compares the replies one by one.
    #[track_caller]
    pub fn check_many<A: AsRef<[u8]>>(&mut self, cmds: &[Vec<A>]) {
        const BATCH: usize = 256;
        for (b, batch) in cmds.chunks(BATCH).enumerate() {
            let input: Vec<u8> = batch.iter().flat_map(|c| encode(c)).collect();
            let read = |client: &mut RawClient, who: &str| -> Vec<Vec<u8>> {
                client
                    .try_send(&input)
                    .unwrap_or_else(|e| panic!("{who}: {e}"));
                (0..batch.len())
                    .map(|i| {
                        client.try_read_reply().unwrap_or_else(|e| {
                            panic!(
                                "{who}, pipelined command {}: {}: {e}",
                                b * BATCH + i + 1,
                                fmt_args(&batch[i])
                            )
                        })
                    })
                    .collect()
            };
            let redis = read(&mut self.redis, "redis-server");
            let ours = read(&mut self.ours, "server under test");
            self.sent += batch.len();
            for (i, (r, o)) in redis.iter().zip(&ours).enumerate() {
                if r != o {
                    panic!(
                        "reply mismatch on pipelined command {} of {}: {}\n  redis: \"{}\"\n  \
                         ours:  \"{}\"",
                        b * BATCH + i + 1,
                        cmds.len(),
                        fmt_args(&batch[i]),
                        esc(r),
                        esc(o)
                    );
                }
            }
        }
    }

    /// Runs each command of `script` in order; all replies must be equal.
    #[track_caller]
    pub fn check(&mut self, script: &[&[&[u8]]]) {
        for (i, args) in script.iter().enumerate() {
            self.cmd_at(args, Some((i, script.len())));
        }
    }

    /// Like [`DualClient::check`], each line split on ASCII whitespace
    /// (no quoting: use [`DualClient::cmd`] for binary or empty arguments).
    #[track_caller]
    pub fn check_lines(&mut self, lines: &[&str]) {
        for (i, line) in lines.iter().enumerate() {
            let args: Vec<&str> = line.split_ascii_whitespace().collect();
            self.cmd_at(&args, Some((i, lines.len())));
        }
    }

    /// Asserts that the reply of `args` is `expected` on both servers (for
    /// pinning down Redis's behaviour where a plain comparison is not enough).
    #[track_caller]
    pub fn expect<A: AsRef<[u8]>>(&mut self, args: &[A], expected: &[u8]) {
        let reply = self.cmd(args);
        assert_eq!(
            reply,
            expected,
            "{}: both servers replied \"{}\", expected \"{}\"",
            fmt_args(args),
            esc(&reply),
            esc(expected)
        );
    }

    /// For replies whose element order is unspecified (KEYS): arrays are
    /// compared as sorted multisets, anything else byte for byte.
    #[track_caller]
    pub fn check_unordered<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Reply {
        let (redis, ours) = self.both(args);
        let sorted = |raw: &[u8]| match parse_reply(raw) {
            Reply::Array(Some(mut items)) => {
                items.sort();
                Reply::Array(Some(items))
            }
            other => other,
        };
        let (r, o) = (sorted(&redis), sorted(&ours));
        if r != o || (redis.first() != ours.first()) {
            panic!(
                "reply mismatch (order ignored) on command #{}: {}\n  redis: \"{}\"\n  ours:  \"{}\"",
                self.sent,
                fmt_args(args),
                esc(&redis),
                esc(&ours)
            );
        }
        r
    }

    /// For TTL-like replies: both must be integers; negative values (-1,
    /// -2) must be equal, others may differ by at most `tolerance`.
    #[track_caller]
    pub fn check_int_approx<A: AsRef<[u8]>>(&mut self, args: &[A], tolerance: i64) -> i64 {
        let (redis, ours) = self.both(args);
        let fail = || -> ! {
            panic!(
                "reply mismatch (integer tolerance {tolerance}) on command #{}: {}\n  \
                 redis: \"{}\"\n  ours:  \"{}\"",
                self.sent,
                fmt_args(args),
                esc(&redis),
                esc(&ours)
            )
        };
        match (parse_reply(&redis), parse_reply(&ours)) {
            (Reply::Integer(r), Reply::Integer(o)) => {
                let ok = if r < 0 || o < 0 {
                    r == o
                } else {
                    (r - o).abs() <= tolerance
                };
                if !ok {
                    fail()
                }
                r
            }
            _ => fail(),
        }
    }

    /// Runs a whole SCAN iteration with `extra` arguments on both servers and
    /// asserts that they return the same set of keys (cursors and batches
    /// legitimately differ). Returns that set.
    #[track_caller]
    pub fn check_scan(&mut self, extra: &[&[u8]]) -> BTreeSet<Vec<u8>> {
        let what = || format!("SCAN iteration with {}", fmt_args(extra));
        let redis = scan_keys(&mut self.redis, extra)
            .unwrap_or_else(|e| panic!("redis-server, {}: {e}", what()));
        let ours = scan_keys(&mut self.ours, extra)
            .unwrap_or_else(|e| panic!("server under test, {}: {e}", what()));
        let redis: BTreeSet<Vec<u8>> = redis.into_iter().collect();
        let ours: BTreeSet<Vec<u8>> = ours.into_iter().collect();
        if redis != ours {
            let show = |s: &BTreeSet<Vec<u8>>| {
                s.iter()
                    .map(|k| format!("\"{}\"", esc(k)))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            panic!(
                "different key sets from a {}\n  only redis: {}\n  only ours:  {}",
                what(),
                show(&redis.difference(&ours).cloned().collect()),
                show(&ours.difference(&redis).cloned().collect())
            );
        }
        redis
    }
}

/// redis-server and the server under test, each started in its own temp
/// dir, both FLUSHALLed, with one open [`DualClient`] that the pair derefs to.
pub struct Pair {
    pub redis: ServerProcess,
    pub ours: ServerProcess,
    main: DualClient,
}

impl Deref for Pair {
    type Target = DualClient;
    fn deref(&self) -> &DualClient {
        &self.main
    }
}

impl DerefMut for Pair {
    fn deref_mut(&mut self) -> &mut DualClient {
        &mut self.main
    }
}

/// The command appended to raw inputs by [`Pair::check_raw`]; its reply
/// marks the end of the replies to the input.
const SENTINEL: &[u8] = b"difftest-sentinel-7f3a";

/// How many replies to read in [`Pair::check_raw_until`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Exactly this many replies.
    Replies(usize),
    /// Everything until the server closes the connection.
    Close,
    /// Everything before the reply to a `PING <sentinel>` sent after the input.
    Sentinel,
}

impl Pair {
    #[track_caller]
    pub fn new() -> Pair {
        Pair::with_ours_args(&[])
    }

    /// A pair whose server under test gets `extra_args`.
    #[track_caller]
    pub fn with_ours_args(extra_args: &[&str]) -> Pair {
        let redis = ServerProcess::redis();
        let ours = ServerProcess::bitmapist(extra_args);
        check_redis_version(&redis);
        let mut main = DualClient::new(&redis, &ours);
        main.expect(&["FLUSHALL"], b"+OK\r\n");
        Pair { redis, ours, main }
    }

    /// A new, independent pair of connections.
    pub fn connect(&self) -> DualClient {
        DualClient::new(&self.redis, &self.ours)
    }

    /// Sends raw `input` on fresh connections and compares every byte read
    /// until the reply to a sentinel PING sent right after it (so extra
    /// replies are caught without sleeping). Returns the bytes.
    #[track_caller]
    pub fn check_raw(&self, input: &[u8]) -> Vec<u8> {
        self.check_raw_chunks(&[input], Duration::ZERO, Until::Sentinel)
    }

    /// Sends raw `input` on fresh connections and compares the first `n`
    /// replies.
    #[track_caller]
    pub fn check_raw_n(&self, input: &[u8], n: usize) -> Vec<u8> {
        self.check_raw_chunks(&[input], Duration::ZERO, Until::Replies(n))
    }

    /// Sends raw `input` on fresh connections and compares everything read
    /// until the server closes the connection.
    #[track_caller]
    pub fn check_raw_close(&self, input: &[u8]) -> Vec<u8> {
        self.check_raw_chunks(&[input], Duration::ZERO, Until::Close)
    }

    /// Sends `chunks` as separate writes with `pause` between them, on fresh
    /// connections, and compares what is read according to `until`.
    #[track_caller]
    pub fn check_raw_chunks(&self, chunks: &[&[u8]], pause: Duration, until: Until) -> Vec<u8> {
        let input: Vec<u8> = chunks.concat();
        let redis = run_raw(&self.redis, chunks, pause, until);
        let ours = run_raw(&self.ours, chunks, pause, until);
        let (redis, ours) = match (redis, ours) {
            (Ok(r), Ok(o)) => (r, o),
            (r, o) => panic!(
                "raw input \"{}\" ({} writes, read until {until:?}):\n  redis: {}\n  ours:  {}",
                esc(&input[..input.len().min(400)]),
                chunks.len(),
                r.map(|b| format!("\"{}\"", esc(&b.concat())))
                    .unwrap_or_else(|e| e),
                o.map(|b| format!("\"{}\"", esc(&b.concat())))
                    .unwrap_or_else(|e| e),
            ),
        };
        if redis != ours {
            // Show the replies around the first difference.
            let first = redis
                .iter()
                .zip(&ours)
                .position(|(r, o)| r != o)
                .unwrap_or(redis.len().min(ours.len()));
            let from = first.saturating_sub(2);
            let show = |replies: &[Vec<u8>]| {
                let mut out = format!(" ({} replies)", replies.len());
                for (i, r) in replies.iter().enumerate().skip(from).take(5) {
                    out.push_str(&format!("\n    [{i}] \"{}\"", esc(r)));
                }
                out
            };
            let input_shown = if input.len() > 400 {
                format!("{}...<{} bytes>", esc(&input[..400]), input.len())
            } else {
                esc(&input)
            };
            panic!(
                "reply mismatch for raw input \"{input_shown}\" ({} writes, read until \
                 {until:?}), first difference at reply [{first}]:\n  redis:{}\n  ours:{}",
                chunks.len(),
                show(&redis),
                show(&ours)
            );
        }
        redis.concat()
    }
}

/// The expected replies are those of Redis 7.0: another version would make
/// the tests fail for reasons that have nothing to do with the server under
/// test. `BITMAPIST_TEST_ANY_REDIS=1` skips this check.
fn check_redis_version(redis: &ServerProcess) {
    if std::env::var_os("BITMAPIST_TEST_ANY_REDIS").is_some() {
        return;
    }
    let info = redis.connect().cmd(&[b"INFO", b"server"]);
    let info = String::from_utf8_lossy(&info);
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("unknown");
    assert!(
        version.starts_with("7.0."),
        "the differential tests compare against Redis 7.0, but redis-server on PATH is \
         version {version}; install redis-server 7.0 (Debian bookworm) or set \
         BITMAPIST_TEST_ANY_REDIS=1"
    );
}

/// Sends the chunks to a fresh connection and reads replies; in Close mode
/// everything read is one element.
fn run_raw(
    server: &ServerProcess,
    chunks: &[&[u8]],
    pause: Duration,
    until: Until,
) -> Result<Vec<Vec<u8>>, String> {
    let mut client = server.connect();
    for (i, chunk) in chunks.iter().enumerate() {
        if i > 0 && !pause.is_zero() {
            std::thread::sleep(pause);
        }
        client.try_send(chunk)?;
    }
    let mut replies = Vec::new();
    match until {
        Until::Replies(n) => {
            for _ in 0..n {
                replies.push(client.try_read_reply()?);
            }
        }
        Until::Close => replies.push(client.try_read_to_close()?),
        Until::Sentinel => {
            client.try_send(&resp_encode(&[b"PING", SENTINEL]))?;
            let marker = format!("${}\r\n", SENTINEL.len()).into_bytes();
            let marker = [marker.as_slice(), SENTINEL, b"\r\n"].concat();
            loop {
                let reply = client.try_read_reply().map_err(|e| {
                    let before: Vec<String> = replies.iter().map(|r| esc(r)).collect();
                    format!("{e}\n    (replies before: {before:?}; sentinel not seen)")
                })?;
                if reply == marker {
                    break;
                }
                replies.push(reply);
            }
        }
    }
    Ok(replies)
}

/// Asserts, with pipelined GETBITs, that every (key, offset) bit is set.
pub fn assert_bits_set<'a>(
    client: &mut RawClient,
    bits: impl IntoIterator<Item = (&'a str, u64)>,
    what: &str,
) {
    let bits: Vec<(&str, u64)> = bits.into_iter().collect();
    for chunk in bits.chunks(500) {
        let mut batch = Vec::new();
        for (key, offset) in chunk {
            batch.extend(encode(&[
                b"GETBIT".as_slice(),
                key.as_bytes(),
                offset.to_string().as_bytes(),
            ]));
        }
        client.send(&batch);
        for (key, offset) in chunk {
            assert_eq!(
                client.read_reply(),
                b":1\r\n",
                "SETBIT {key} {offset} 1 {what}"
            );
        }
    }
}

/// A small tmpfs (for full-disk and read-only tests), unmounted on drop.
/// Mounting needs root, which the test command has.
pub struct SmallDisk {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    pub fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).expect("mkdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("run mount")
            .success();
        assert!(
            ok,
            "mounting a tmpfs needs root (the test command runs as root)"
        );
        SmallDisk { path, _dir: dir }
    }

    pub fn set_read_only(&self, read_only: bool) {
        let opt = if read_only {
            "remount,ro"
        } else {
            "remount,rw"
        };
        let ok = Command::new("mount")
            .args(["-o", opt])
            .arg(&self.path)
            .status()
            .expect("remount")
            .success();
        assert!(ok, "remount {opt}");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
