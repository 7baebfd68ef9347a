//! Security options against real processes: authentication (`--requirepass`,
//! `--requirepass-file`, AUTH, HELLO AUTH, the NOAUTH gate, the stricter
//! protocol limits before authentication) compared byte for byte with a
//! redis-server started with the same options; protected mode at start-up;
//! `--disable-command` (compared with Redis's `rename-command X ""`);
//! `--maxclients`, `--timeout`, `--client-query-buffer-limit` and
//! `--client-output-buffer-limit`.

mod common;

use common::{encode, DualClient, RawClient, ServerProcess};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PASS: &str = "s3cret";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_bitmapist-server")
}

/// A redis-server like `ServerProcess::redis()`, with `extra` options.
fn redis_with(extra: &[&str]) -> ServerProcess {
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    ServerProcess::start("redis-server", move |port, _dir| {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--databases", "16"])
            .args(&extra);
        cmd
    })
}

/// Sends `input` on a fresh connection to each server and compares everything
/// read until the server closes the connection.
#[track_caller]
fn raw_close_both(redis: &ServerProcess, ours: &ServerProcess, input: &[u8]) -> Vec<u8> {
    let mut r = redis.connect();
    let mut o = ours.connect();
    r.send(input);
    o.send(input);
    let (r, o) = (r.read_to_close(), o.read_to_close());
    assert_eq!(
        common::esc(&o),
        common::esc(&r),
        "input {:?}",
        common::esc(input)
    );
    o
}

fn str_args(s: &str) -> Vec<&str> {
    s.split(' ').collect()
}

/// Runs the server binary expecting it to refuse to start; returns its output.
fn start_fails(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .arg("--db")
        .arg(dir.path().join("bitmapist.db"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the server");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "{args:?} should not start; output: {text}"
    );
    text
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

#[test]
fn noauth_gate_and_auth_replies_match_redis() {
    let redis = redis_with(&["--requirepass", PASS]);
    let ours = ServerProcess::bitmapist(&["--requirepass", PASS]);
    let mut d = DualClient::new(&redis, &ours);
    for line in [
        "GET a",
        "SET a b",
        "PING",
        "ECHO x",
        "SELECT 1",
        "KEYS *",
        "SCAN 0",
        "BITCOUNT a",
        "SETBIT a 1 1",
        "BITOP AND d a b",
        "DBSIZE",
        "EXISTS a",
        "TTL a",
        "EXPIRE a 10",
        "DEL a",
        "FLUSHDB",
        "FLUSHALL",
        "INFO",
        "CONFIG GET maxmemory",
        "CLIENT ID",
        "CLIENT SETNAME x",
        "COMMAND COUNT",
        "MULTI",
        "EXEC",
        "SHUTDOWN",
        "NOSUCHCOMMAND x",
        "GET",
        "AUTH",
        "AUTH wrong",
        "AUTH bob s3cret",
        "AUTH default wrong",
        "AUTH a b c",
        "HELLO",
        "HELLO 3",
        "HELLO 2 AUTH default wrong",
        "HELLO 3 AUTH bob s3cret",
        "HELLO 4",
        "GET a",
        "AUTH s3cret",
        "GET a",
        "SET a b",
        "GET a",
        "CONFIG GET requirepass",
        "CONFIG GET protected-mode",
        "CONFIG GET timeout",
        "AUTH wrong",
        // A failed AUTH does not undo the earlier success.
        "GET a",
        "RESET",
        "GET a",
        "AUTH default s3cret",
        "GET a",
        "DEL a",
    ] {
        d.cmd(&str_args(line));
    }
    // SLURP exists only here: behind the gate like everything else.
    let mut c = ours.connect();
    assert_eq!(
        c.call(&["SLURP", "127.0.0.1:1"]),
        b"-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(c.call(&["AUTH", "default", PASS]), b"+OK\r\n");
    assert_eq!(c.call(&["PING"]), b"+PONG\r\n");

    // QUIT needs no authentication.
    raw_close_both(&redis, &ours, &encode(&["QUIT"]));

    // HELLO AUTH authenticates and switches protocol (the id differs).
    for proto in ["2", "3"] {
        let mut d = DualClient::new(&redis, &ours);
        let (r, o) = d.both(&["HELLO", proto, "AUTH", "default", PASS]);
        let mask = |b: &[u8]| {
            let s = String::from_utf8_lossy(b).into_owned();
            let at = s.find("$2\r\nid\r\n:").unwrap() + 9;
            let end = at + s[at..].find("\r\n").unwrap();
            format!("{}N{}", &s[..at], &s[end..])
        };
        assert_eq!(mask(&o), mask(&r));
        d.cmd(&["SET", "k", "v"]);
        d.cmd(&["GET", "k"]);
        d.cmd(&["DEL", "k"]);
    }
}

#[test]
fn unauthenticated_protocol_limits_match_redis() {
    let redis = redis_with(&["--requirepass", PASS]);
    let ours = ServerProcess::bitmapist(&["--requirepass", PASS]);
    raw_close_both(&redis, &ours, b"*11\r\n");
    raw_close_both(&redis, &ours, b"*1\r\n$16385\r\n");
    raw_close_both(&redis, &ours, b"*100\r\n$3\r\nGET\r\n");
    // At the limits themselves a request is accepted (and gated).
    let mut d = DualClient::new(&redis, &ours);
    let ten: Vec<String> = std::iter::once("MGET".to_string())
        .chain((0..9).map(|i| format!("k{i}")))
        .collect();
    d.cmd(&ten);
    d.cmd(&["ECHO".to_string(), "x".repeat(16384)]);
    // Once authenticated the limits are Redis's usual ones, also for the
    // requests pipelined right after AUTH.
    let mut input = encode(&["AUTH", PASS]);
    let eleven: Vec<String> = std::iter::once("MGET".to_string())
        .chain((0..10).map(|i| format!("k{i}")))
        .collect();
    input.extend(encode(&eleven));
    input.extend(encode(&["ECHO".to_string(), "y".repeat(20000)]));
    input.extend(encode(&["QUIT"]));
    raw_close_both(&redis, &ours, &input);
}

#[test]
fn requirepass_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pass");
    std::fs::write(&file, "from-a-file\nsecond line ignored\n").unwrap();
    let ours = ServerProcess::bitmapist(&["--requirepass-file", file.to_str().unwrap()]);
    let mut c = ours.connect();
    assert_eq!(
        c.call(&["GET", "a"]),
        b"-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(
        c.call(&["AUTH", "from-a-file\n"]),
        &b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"[..]
    );
    assert_eq!(c.call(&["AUTH", "from-a-file"]), b"+OK\r\n");
    assert_eq!(c.call(&["GET", "a"]), b"$-1\r\n");
    assert!(
        ours.output().contains("failed authentication attempt"),
        "the failed attempt is logged: {}",
        ours.output()
    );
    assert!(ours.output().contains("127.0.0.1:"), "with the address");

    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let text = start_fails(&["--requirepass-file", empty.to_str().unwrap()]);
    assert!(text.contains("is empty"), "{text}");
    let missing = dir.path().join("missing");
    let text = start_fails(&["--requirepass-file", missing.to_str().unwrap()]);
    assert!(text.contains("cannot read the password file"), "{text}");
}

#[test]
fn without_a_password_auth_is_as_in_redis() {
    let redis = ServerProcess::redis();
    let ours = ServerProcess::bitmapist(&[]);
    let mut d = DualClient::new(&redis, &ours);
    for line in [
        "AUTH x",
        "AUTH default x",
        "AUTH bob x",
        "GET a",
        "CONFIG GET requirepass",
    ] {
        d.cmd(&str_args(line));
    }
}

#[test]
fn protected_mode_refuses_exposed_addresses_without_a_password() {
    let port = common::free_port().to_string();
    let text = start_fails(&["--addr", &format!("0.0.0.0:{port}")]);
    assert!(text.contains("protected mode"), "{text}");
    assert!(text.contains("--requirepass"), "{text}");
    assert!(text.contains("--protected-mode no"), "{text}");
    assert_eq!(text.trim().lines().count(), 1, "one line: {text}");
    let text = start_fails(&["--protected-mode", "maybe"]);
    assert!(text.contains("yes or no"), "{text}");

    for (extra, mode) in [
        (&["--protected-mode", "no"][..], "no"),
        (&["--requirepass", PASS], "yes"),
    ] {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let ours = ServerProcess::start("bitmapist-server", move |port, dir: &Path| {
            let mut cmd = Command::new(bin());
            cmd.arg("--addr")
                .arg(format!("0.0.0.0:{port}"))
                .arg("--db")
                .arg(dir.join("bitmapist.db"))
                .args(&extra);
            cmd
        });
        let mut c = ours.connect();
        let _ = c.call(&["AUTH", PASS]);
        assert_eq!(c.call(&["PING"]), b"+PONG\r\n");
        let reply = c.call(&["CONFIG", "GET", "protected-mode"]);
        let expected = format!(
            "*2\r\n$14\r\nprotected-mode\r\n${}\r\n{mode}\r\n",
            mode.len()
        );
        assert_eq!(common::esc(&reply), common::esc(expected.as_bytes()));
    }
}

#[test]
fn disabled_commands_are_unknown_as_with_rename_command() {
    let redis = redis_with(&[
        "--rename-command",
        "FLUSHALL",
        "",
        "--rename-command",
        "KEYS",
        "",
        "--rename-command",
        "SHUTDOWN",
        "",
        "--rename-command",
        "CONFIG",
        "",
    ]);
    let ours = ServerProcess::bitmapist(&[
        "--disable-command",
        "slurp",
        "--disable-command",
        "FLUSHALL",
        "--disable-command=keys",
        "--disable-command",
        "shutdown",
        "--disable-command",
        "config",
    ]);
    let mut d = DualClient::new(&redis, &ours);
    for line in [
        "SET a 1",
        "FLUSHALL",
        "flushall ASYNC",
        "KEYS *",
        "SHUTDOWN NOSAVE",
        "CONFIG GET maxclients",
        "SLURP 127.0.0.1:1",
        "GET a",
        "MULTI",
        "SET b 2",
        "KEYS *",
        "EXEC",
        "GET b",
        "MULTI",
        "SET b 2",
        "EXEC",
        "GET b",
        "DEL a b",
        "COMMAND INFO keys flushall",
        "COMMAND DOCS keys config",
    ] {
        d.cmd(&str_args(line));
    }
    // Introspection does not list them either.
    let mut c = ours.connect();
    let listed = common::parse_reply(&c.call(&["COMMAND", "LIST"]));
    let names: Vec<String> = listed
        .as_array()
        .iter()
        .map(|n| String::from_utf8_lossy(n.as_bulk()).to_string())
        .collect();
    assert!(names.iter().any(|n| n == "get"), "{names:?}");
    for gone in ["slurp", "flushall", "keys", "shutdown", "config"] {
        assert!(!names.iter().any(|n| n == gone), "{gone} listed: {names:?}");
    }
    let count = common::parse_reply(&c.call(&["COMMAND", "COUNT"])).as_int();
    assert_eq!(count as usize, names.len());
    let all = common::parse_reply(&c.call(&["COMMAND"]));
    assert_eq!(all.as_array().len(), names.len());
    assert_eq!(
        c.call(&["COMMAND", "INFO", "slurp"]),
        b"*1\r\n$-1\r\n",
        "COMMAND INFO of a disabled command"
    );
    assert!(ours.is_running_now());
}

trait Running {
    fn is_running_now(&self) -> bool;
}

impl Running for ServerProcess {
    fn is_running_now(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pid())).exists()
    }
}

#[test]
fn maxclients_refuses_the_client_past_the_limit() {
    let ours = ServerProcess::bitmapist(&["--maxclients", "5"]);
    // The readiness probe's connection may still be closing: wait for it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut open: Vec<RawClient> = Vec::new();
    while open.len() < 5 {
        let mut c = ours.connect();
        c.send(&encode(&["PING"]));
        match c.try_read_reply() {
            Ok(r) if r == b"+PONG\r\n" => open.push(c),
            _ => {
                assert!(Instant::now() < deadline, "the first 5 clients are served");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let mut sixth = ours.connect();
    assert_eq!(
        common::esc(&sixth.read_to_close()),
        "-ERR max number of clients reached\\r\\n"
    );
    let mut c = ours.connect();
    assert_eq!(c.read_to_close(), b"-ERR max number of clients reached\r\n");
    // The others still work; after one leaves, a new one is served.
    assert_eq!(open[4].call(&["PING"]), b"+PONG\r\n");
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = ours.connect();
        c.send(&encode(&["PING"]));
        match c.try_read_reply() {
            Ok(r) if r == b"+PONG\r\n" => break,
            other => assert!(
                Instant::now() < deadline,
                "no place freed after a client left: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let c = &mut open[0];
    assert_eq!(
        c.call(&["CONFIG", "GET", "maxclients"]),
        b"*2\r\n$10\r\nmaxclients\r\n$1\r\n5\r\n"
    );
    let info = String::from_utf8(c.call(&["INFO", "stats"])).unwrap();
    // Two refusals above, and maybe more while the freed place was awaited.
    let rejected: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("rejected_connections:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(rejected >= 2, "{info}");
}

#[test]
fn timeout_closes_idle_clients_only() {
    let ours = ServerProcess::bitmapist(&["--timeout", "1"]);
    let mut idle = ours.connect();
    assert_eq!(idle.call(&["PING"]), b"+PONG\r\n");
    let mut active = ours.connect();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(3500) {
        assert_eq!(active.call(&["PING"]), b"+PONG\r\n");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The idle one was closed by the server (read returns end of stream).
    assert_eq!(idle.read_to_close(), b"");
    assert_eq!(active.call(&["PING"]), b"+PONG\r\n");
    assert_eq!(
        active.call(&["CONFIG", "GET", "timeout"]),
        b"*2\r\n$7\r\ntimeout\r\n$1\r\n1\r\n"
    );
}

#[test]
fn query_buffer_limit_closes_the_client() {
    let ours = ServerProcess::bitmapist(&["--client-query-buffer-limit", "1MiB"]);
    let mut other = ours.connect();
    // Below the limit a large value is fine.
    let value = vec![b'v'; 512 * 1024];
    assert_eq!(other.cmd(&[b"SET", b"big", &value]), b"+OK\r\n");
    let mut greedy = ours.connect();
    greedy.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000000\r\n");
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..64 {
        // Once closed, writes fail: that is the point.
        if greedy.try_send(&chunk).is_err() {
            break;
        }
    }
    assert!(greedy.try_read_to_close().is_ok(), "closed by the server");
    assert_eq!(other.call(&["PING"]), b"+PONG\r\n");
    assert_eq!(other.call(&["EXISTS", "k"]), b":0\r\n");
    assert!(
        ours.output().contains("client-query-buffer-limit"),
        "logged: {}",
        ours.output()
    );
}

#[test]
fn a_client_that_never_reads_is_disconnected_and_memory_stays_bounded() {
    // Replies are written after each batch with one awaited write, and the
    // connection reads nothing more until that write is done: a client that
    // stops reading holds at most one batch. The limit applies to that batch
    // (many pipelined replies, or one huge reply).
    let ours = ServerProcess::bitmapist(&["--client-output-buffer-limit", "1MiB"]);
    let mut c = ours.connect();
    let value = vec![b'v'; 700 * 1024];
    assert_eq!(c.cmd(&[b"SET", b"big", &value]), b"+OK\r\n");
    let before = rss_kib(ours.pid());
    let mut pipelined = Vec::new();
    for _ in 0..20_000 {
        pipelined.extend(encode(&["GET", "big"]));
    }
    let mut reader = ours.connect();
    // Many clients at once, none of them reading.
    let mut greedy: Vec<RawClient> = (0..8).map(|_| ours.connect()).collect();
    for g in &mut greedy {
        let _ = g.try_send(&pipelined);
    }
    // The server closes them: one sees the end of its stream.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = String::from_utf8(reader.call(&["INFO", "clients"])).unwrap();
        if info.contains("connected_clients:2\r\n") {
            break;
        }
        assert!(Instant::now() < deadline, "not disconnected: {info}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = rss_kib(ours.pid());
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    for g in &mut greedy {
        assert!(g.try_read_to_close().is_ok());
    }
    assert!(ours.output().contains("client-output-buffer-limit"));
    // One reply under the limit is fine.
    for _ in 0..4 {
        assert_eq!(reader.call(&["GET", "big"]).len(), 700 * 1024 + 11);
    }
}

#[test]
fn a_keys_reply_past_the_output_limit_closes_the_client_without_building_it_all() {
    let ours = ServerProcess::bitmapist(&["--client-output-buffer-limit", "256KiB"]);
    let mut c = ours.connect();
    // 40,000 keys: KEYS * would answer about 1 MB.
    let mut batch = Vec::new();
    for i in 0..40_000 {
        batch.extend(encode(&["SETBIT", &format!("user:{i:08}"), "7", "1"]));
    }
    c.send(&batch);
    for _ in 0..40_000 {
        c.read_reply();
    }
    // Under the limit: streamed into the reply, byte for byte a RESP array.
    let some = common::parse_reply(&c.call(&["KEYS", "user:0000*"]));
    assert_eq!(some.as_array().len(), 10_000);
    assert_eq!(some.as_array()[0].as_bulk(), b"user:00000000");
    assert_eq!(c.call(&["KEYS", "nothing*"]), b"*0\r\n");
    // Past it: the client is closed and gets nothing of that reply.
    let mut big = ours.connect();
    big.send(&encode(&["KEYS", "*"]));
    let got = big.try_read_to_close().expect("closed");
    assert!(
        got.is_empty(),
        "{} bytes of a reply past the limit",
        got.len()
    );
    assert!(ours.output().contains("client-output-buffer-limit"));
    // Everyone else is served.
    assert_eq!(c.call(&["DBSIZE"]), b":40000\r\n");
}

#[test]
fn thousands_of_idle_and_half_written_connections_leave_the_server_answering() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    // This process holds one end of every connection.
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let _ = setrlimit(Resource::RLIMIT_NOFILE, soft.max(8192.min(hard)), hard);
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let n = 3000.min(soft.saturating_sub(200) as usize);
    assert!(n >= 500, "open file limit {soft} too low for this test");
    let ours = ServerProcess::bitmapist(&[]);
    let mut c = ours.connect();
    assert_eq!(c.call(&["SETBIT", "kept", "5", "1"]), b":0\r\n");
    let before = rss_kib(ours.pid());
    // Idle, half a request, huge and negative claimed lengths, an inline
    // command never ended, binary garbage without a line end.
    let partials: [&[u8]; 7] = [
        b"",
        b"*3\r\n$6\r\nSETBIT\r\n$4\r\nke",
        b"*2\r\n$3\r\nGET\r\n$536870912\r\n",
        b"*1048576\r\n",
        b"*-5\r\n*1\r\n$4\r\nPI",
        b"SETBIT inline 1 1 and never a line end",
        b"\x00\xff\xfe\x80garbage",
    ];
    let mut open = Vec::with_capacity(n);
    for i in 0..n {
        let mut conn = ours.connect();
        let _ = conn.try_send(partials[i % partials.len()]);
        open.push(conn);
    }
    // Everyone else is still served, and quickly.
    let t0 = Instant::now();
    assert_eq!(c.call(&["PING"]), b"+PONG\r\n");
    assert_eq!(c.call(&["SETBIT", "kept", "6", "1"]), b":0\r\n");
    assert_eq!(c.call(&["GETBIT", "kept", "5"]), b":1\r\n");
    let mut fresh = ours.connect();
    assert_eq!(fresh.call(&["GET", "kept"]), b"$1\r\n\x06\r\n");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let info = String::from_utf8(c.call(&["INFO", "clients"])).expect("utf-8");
    let connected: usize = info
        .lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("connected_clients");
    assert!(connected >= n, "only {connected} of {n} held open: {info}");
    let after = rss_kib(ours.pid());
    assert!(
        after < before + 128 * 1024,
        "RSS grew from {before} KiB to {after} KiB with {n} connections"
    );
    drop(open);
    // The half-written requests did nothing.
    assert_eq!(c.call(&["EXISTS", "ke", "inline"]), b":0\r\n");
    assert_eq!(c.call(&["DBSIZE"]), b":1\r\n");
}
