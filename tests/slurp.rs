//! SLURP against real processes: a redis-server full of bitmapist-style keys
//! (db 0 and a non-zero db, TTLs, trailing zero bytes, empty strings, list and
//! hash keys that are skipped), a fake Go bitmapist-server (SCAN only in its
//! one exact form, or not at all; no TYPE), a closed port, a source that
//! hangs or answers garbage, a password-protected redis-server, argument
//! errors, and a restart of our server on the imported database.

mod common;

use common::{encode, parse_reply, Reply, ServerProcess};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Client = common::RawClient;
/// String keys: value and PTTL.
type Strings = BTreeMap<Vec<u8>, (Vec<u8>, i64)>;
/// The commands a fake source received.
type CommandLog = Arc<Mutex<Vec<Vec<Vec<u8>>>>>;

/// Runs a command and parses its reply.
#[track_caller]
fn call<A: AsRef<[u8]>>(c: &mut Client, args: &[A]) -> Reply {
    parse_reply(&c.call(args))
}

/// Sends many commands in one write and checks that none failed.
#[track_caller]
fn pipeline(c: &mut Client, commands: &[Vec<Vec<u8>>]) {
    let mut bytes = Vec::new();
    for cmd in commands {
        bytes.extend_from_slice(&encode(cmd));
    }
    c.send(&bytes);
    for cmd in commands {
        let reply = parse_reply(&c.read_reply());
        assert!(
            !reply.is_error(),
            "{:?} failed: {reply:?}",
            String::from_utf8_lossy(&cmd[0])
        );
    }
}

fn args(parts: &[&[u8]]) -> Vec<Vec<u8>> {
    parts.iter().map(|p| p.to_vec()).collect()
}

/// The fields of `INFO slurp`.
fn slurp_info(c: &mut Client) -> BTreeMap<String, String> {
    let raw = c.call(&["INFO", "slurp"]);
    let text = match parse_reply(&raw) {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        Reply::Other(b) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("INFO slurp answered {other:?}"),
    };
    assert!(text.contains("# Slurp"), "no slurp section: {text}");
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Waits until INFO says no import runs; returns its fields.
#[track_caller]
fn wait_done(c: &mut Client) -> BTreeMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info = slurp_info(c);
        if info.get("slurp_running").map(String::as_str) == Some("0") {
            return info;
        }
        assert!(Instant::now() < deadline, "SLURP still running: {info:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn num(info: &BTreeMap<String, String>, field: &str) -> u64 {
    info.get(field)
        .unwrap_or_else(|| panic!("no {field} in {info:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("{field} is not a number in {info:?}"))
}

#[track_caller]
fn slurp_ok(c: &mut Client, extra: &[&str]) {
    let mut a = vec!["SLURP"];
    a.extend_from_slice(extra);
    let reply = c.call(&a);
    assert_eq!(
        reply,
        b"+OK\r\n",
        "{a:?}: {}",
        String::from_utf8_lossy(&reply)
    );
}

/// What the source holds: string keys with (value, pttl), other keys.
struct Expected {
    strings: Strings,
    others: Vec<Vec<u8>>,
}

/// Fills the selected db of a redis-server with bitmapist-style keys: month,
/// week and day bitmaps (SETBIT), values with trailing zero bytes, an empty
/// string, binary key names, TTLs, and a list and a hash.
fn fill_bitmapist(c: &mut Client, prefix: &str, days: usize) {
    let mut cmds = Vec::new();
    for event in ["active", "login", "purchase"] {
        for day in 1..=days {
            let key = format!("{prefix}trackist_{event}_2024-01-{day:02}");
            for user in [day * 7, day * 131 + 5, 40_000 + day, 3] {
                cmds.push(args(&[
                    b"SETBIT",
                    key.as_bytes(),
                    user.to_string().as_bytes(),
                    b"1",
                ]));
            }
            // Trailing zero bytes: set a far bit, then clear it.
            if day % 3 == 0 {
                cmds.push(args(&[b"SETBIT", key.as_bytes(), b"200000", b"1"]));
                cmds.push(args(&[b"SETBIT", key.as_bytes(), b"200000", b"0"]));
            }
            if day % 5 == 0 {
                cmds.push(args(&[b"PEXPIRE", key.as_bytes(), b"600000"]));
            }
        }
        for week in 1..=5 {
            let key = format!("{prefix}trackist_{event}_W2024-{week}");
            for user in [week, week * 1000, 77_777] {
                cmds.push(args(&[
                    b"SETBIT",
                    key.as_bytes(),
                    user.to_string().as_bytes(),
                    b"1",
                ]));
            }
            if week == 2 {
                cmds.push(args(&[b"EXPIRE", key.as_bytes(), b"3600"]));
            }
        }
        let key = format!("{prefix}trackist_{event}_2024-1");
        cmds.push(args(&[b"SETBIT", key.as_bytes(), b"123456", b"1"]));
    }
    let p = prefix.as_bytes();
    cmds.push(args(&[
        b"SET",
        &[p, b"zeros"].concat(),
        b"\x80\x00\x00\x00",
    ]));
    cmds.push(args(&[b"SET", &[p, b"all-zero"].concat(), b"\x00\x00\x00"]));
    cmds.push(args(&[b"SET", &[p, b"empty"].concat(), b""]));
    cmds.push(args(&[
        b"SET",
        &[p, b"bin\x00\xff key \r\n"].concat(),
        b"\xff\x00",
    ]));
    cmds.push(args(&[b"SET", &[p, b"text"].concat(), b"hello world"]));
    cmds.push(args(&[
        b"SET",
        &[p, b"ttl-text"].concat(),
        b"soon",
        b"PX",
        b"900000",
    ]));
    cmds.push(args(&[b"RPUSH", &[p, b"a-list"].concat(), b"x", b"y"]));
    cmds.push(args(&[b"HSET", &[p, b"a-hash"].concat(), b"f", b"v"]));
    pipeline(c, &cmds);
}

/// Every key of the client's selected db, by SCAN.
fn all_keys(c: &mut Client) -> Vec<Vec<u8>> {
    common::scan_keys(c, &[]).expect("SCAN")
}

fn snapshot(c: &mut Client) -> Expected {
    let mut strings = BTreeMap::new();
    let mut others = Vec::new();
    for key in all_keys(c) {
        let kind = call(c, &[b"TYPE".as_slice(), &key]);
        if kind == Reply::Simple(b"string".to_vec()) {
            let value = call(c, &[b"GET".as_slice(), &key]).as_bulk().to_vec();
            let pttl = call(c, &[b"PTTL".as_slice(), &key]).as_int();
            strings.insert(key, (value, pttl));
        } else {
            others.push(key);
        }
    }
    Expected { strings, others }
}

/// Checks that `ours` (its selected db) holds exactly `want`'s strings.
#[track_caller]
fn assert_same(ours: &mut Client, want: &Expected, what: &str) {
    let mut keys = all_keys(ours);
    keys.sort();
    let want_keys: Vec<Vec<u8>> = want.strings.keys().cloned().collect();
    assert_eq!(keys, want_keys, "{what}: key sets differ");
    for (key, (value, pttl)) in &want.strings {
        let shown = key.escape_ascii().to_string();
        let got = call(ours, &[b"GET".as_slice(), key]);
        assert_eq!(got.as_bulk(), value.as_slice(), "{what}: GET {shown}");
        let len = call(ours, &[b"STRLEN".as_slice(), key]).as_int();
        assert_eq!(len as usize, value.len(), "{what}: STRLEN {shown}");
        let got_ttl = call(ours, &[b"PTTL".as_slice(), key]).as_int();
        if *pttl < 0 {
            assert_eq!(got_ttl, *pttl, "{what}: PTTL {shown}");
        } else {
            assert!(
                got_ttl > 0 && (got_ttl - pttl).abs() < 20_000,
                "{what}: PTTL {shown}: ours {got_ttl}, source {pttl}"
            );
        }
    }
    for key in &want.others {
        let exists = call(ours, &[b"EXISTS".as_slice(), key]).as_int();
        assert_eq!(
            exists,
            0,
            "{what}: non-string {} was imported",
            key.escape_ascii()
        );
    }
}

#[test]
fn imports_from_redis_db0_and_another_db_and_survives_a_restart() {
    let redis = ServerProcess::redis();
    let mut src = redis.connect();
    fill_bitmapist(&mut src, "", 28);
    let db0 = snapshot(&mut src);
    assert!(db0.strings.len() > 100 && db0.others.len() == 2);
    assert!(db0.strings.values().any(|(v, _)| v.ends_with(&[0, 0])));
    assert!(db0.strings.values().any(|(v, _)| v.is_empty()));
    assert!(db0.strings.values().filter(|(_, t)| *t > 0).count() >= 5);
    src.call(&["SELECT", "3"]);
    fill_bitmapist(&mut src, "db3:", 9);
    let db3 = snapshot(&mut src);

    let mut ours = ServerProcess::bitmapist(&[]);
    let mut c = ours.connect();
    let source = format!("127.0.0.1:{}", redis.port());

    // db 0 into our db 0.
    slurp_ok(&mut c, &[&source]);
    let info = wait_done(&mut c);
    assert_eq!(
        num(&info, "slurp_keys_imported"),
        db0.strings.len() as u64,
        "{info:?}"
    );
    assert_eq!(num(&info, "slurp_keys_skipped"), 2, "{info:?}");
    assert_eq!(num(&info, "slurp_errors"), 0, "{info:?}");
    assert_eq!(info["slurp_source"], source);
    assert_eq!(info["slurp_last_error"], "");
    assert_same(&mut c, &db0, "db 0");

    // Source db 3 into the caller's db 5.
    let mut c5 = ours.connect();
    c5.call(&["SELECT", "5"]);
    slurp_ok(&mut c5, &[&source, "3"]);
    let info = wait_done(&mut c5);
    assert_eq!(
        num(&info, "slurp_keys_imported"),
        db3.strings.len() as u64,
        "{info:?}"
    );
    assert_eq!(num(&info, "slurp_keys_skipped"), 2, "{info:?}");
    assert_eq!(info["slurp_source_db"], "3");
    assert_eq!(info["slurp_target_db"], "5");
    assert_same(&mut c5, &db3, "db 3 into db 5");
    assert_same(&mut c, &db0, "db 0 after the second import");
    let log = ours.output();
    assert!(log.contains("SLURP finished"), "no summary logged:\n{log}");

    // The source was only read.
    let after = snapshot(&mut src);
    let values = |e: &Expected| -> Vec<(Vec<u8>, Vec<u8>)> {
        e.strings
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect()
    };
    assert!(values(&after) == values(&db3), "the source db 3 changed");
    assert_eq!(after.others, db3.others);

    // Everything is still there after a restart.
    let db_path = ours.dir().join("bitmapist.db");
    c.send(&encode(&["SHUTDOWN"]));
    assert!(
        ours.wait_exit(Duration::from_secs(20)).is_some(),
        "no exit after SHUTDOWN"
    );
    let again = ServerProcess::bitmapist_at(&db_path, &[]);
    let mut c = again.connect();
    assert_same(&mut c, &db0, "db 0 after a restart");
    c.call(&["SELECT", "5"]);
    assert_same(&mut c, &db3, "db 5 after a restart");
}

#[test]
fn imports_from_a_password_protected_redis() {
    let redis = ServerProcess::start("redis-server", |port, _dir| {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--requirepass", "s3cret"]);
        cmd
    });
    let mut src = redis.connect();
    assert_eq!(src.call(&["AUTH", "s3cret"]), b"+OK\r\n");
    fill_bitmapist(&mut src, "", 6);
    let want = snapshot(&mut src);
    let source = format!("127.0.0.1:{}", redis.port());

    let ours = ServerProcess::bitmapist(&[]);
    let mut c = ours.connect();
    // Without the password: stopped, with the source's reason.
    slurp_ok(&mut c, &[&source]);
    let info = wait_done(&mut c);
    assert!(info["slurp_last_error"].contains("NOAUTH"), "{info:?}");
    assert_eq!(num(&info, "slurp_errors"), 1);
    // A wrong password.
    slurp_ok(&mut c, &[&source, "0", "wrong"]);
    let info = wait_done(&mut c);
    assert!(info["slurp_last_error"].contains("AUTH"), "{info:?}");
    assert_eq!(call(&mut c, &["DBSIZE"]).as_int(), 0);
    // The right one.
    slurp_ok(&mut c, &[&source, "0", "s3cret"]);
    let info = wait_done(&mut c);
    assert_eq!(num(&info, "slurp_errors"), 0, "{info:?}");
    assert_eq!(num(&info, "slurp_keys_imported"), want.strings.len() as u64);
    assert_same(&mut c, &want, "with a password");
}

#[test]
fn connection_failure_is_reported_and_the_server_keeps_working() {
    let ours = ServerProcess::bitmapist(&[]);
    let mut c = ours.connect();
    let port = common::free_port(); // nothing listens there
    slurp_ok(&mut c, &[&format!("127.0.0.1:{port}")]);
    let info = wait_done(&mut c);
    assert_eq!(num(&info, "slurp_errors"), 1, "{info:?}");
    assert_eq!(num(&info, "slurp_keys_imported"), 0);
    let why = &info["slurp_last_error"];
    assert!(
        why.contains("connection failed") && why.contains(&port.to_string()),
        "{why}"
    );
    let log_deadline = Instant::now() + Duration::from_secs(5);
    while !ours.output().contains("SLURP stopped") && Instant::now() < log_deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = ours.output();
    assert!(
        log.contains("SLURP stopped") && log.contains("connection failed"),
        "{log}"
    );
    assert_eq!(c.call(&["SET", "k", "v"]), b"+OK\r\n");
    assert_eq!(c.call(&["GET", "k"]), b"$1\r\nv\r\n");
}

#[test]
fn argument_errors() {
    let ours = ServerProcess::bitmapist(&[]);
    let mut c = ours.connect();
    let arity = b"-ERR wrong number of arguments for 'slurp' command\r\n".as_slice();
    assert_eq!(c.call(&["SLURP"]), arity);
    assert_eq!(c.call(&["slurp", "127.0.0.1:1", "0", "pw", "more"]), arity);
    for (input, needle) in [
        (vec!["SLURP", "localhost"], "no port"),
        (vec!["SLURP", "localhost:"], "port"),
        (vec!["SLURP", "localhost:70000"], "port"),
        (vec!["SLURP", ":6379"], "no host"),
        (vec!["SLURP", "127.0.0.1:6379", "16"], "0 to 15"),
        (vec!["SLURP", "127.0.0.1:6379", "-1"], "0 to 15"),
        (vec!["SLURP", "127.0.0.1:6379", "one"], "0 to 15"),
    ] {
        let reply = String::from_utf8_lossy(&c.call(&input)).into_owned();
        assert!(
            reply.starts_with("-ERR ") && reply.contains(needle),
            "{input:?}: {reply}"
        );
    }
    // Nothing was started.
    let info = slurp_info(&mut c);
    assert_eq!(info["slurp_running"], "0");
    assert_eq!(info["slurp_source"], "");
}

// ---- fake sources ----

/// Reads one RESP command (a multibulk) from a client.
fn read_command(r: &mut BufReader<TcpStream>) -> Option<Vec<Vec<u8>>> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let n: usize = line.trim_end().strip_prefix('*')?.parse().ok()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        line.clear();
        r.read_line(&mut line).ok()?;
        let len: usize = line.trim_end().strip_prefix('$')?.parse().ok()?;
        let mut arg = vec![0; len + 2];
        r.read_exact(&mut arg).ok()?;
        arg.truncate(len);
        out.push(arg);
    }
    Some(out)
}

fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

/// A fake Go bitmapist-server: SCAN only as exactly `SCAN 0 MATCH * COUNT n`
/// (answering every key with cursor 0), or (with `scan: false`) not at all,
/// KEYS, GET, PTTL, SELECT 0; TYPE is an unknown command. `listed` keys are
/// answered by SCAN/KEYS even when absent from `data` (they expired).
/// Returns its port and the log of commands it received.
fn fake_go_server(data: Strings, listed: Vec<Vec<u8>>, scan: bool) -> (u16, CommandLog) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let mut w = stream.try_clone().expect("clone");
        let mut r = BufReader::new(stream);
        while let Some(cmd) = read_command(&mut r) {
            log.lock().unwrap().push(cmd.clone());
            let name = String::from_utf8_lossy(&cmd[0]).to_ascii_lowercase();
            let mut out = Vec::new();
            let wrong = format!("-ERR wrong number of arguments for '{name}' command\r\n");
            match name.as_str() {
                "scan" if scan => {
                    let exact = cmd.len() == 6
                        && cmd[1] == b"0"
                        && cmd[2].eq_ignore_ascii_case(b"match")
                        && cmd[3] == b"*"
                        && cmd[4].eq_ignore_ascii_case(b"count");
                    if exact {
                        out.extend_from_slice(b"*2\r\n$1\r\n0\r\n");
                        out.extend_from_slice(format!("*{}\r\n", listed.len()).as_bytes());
                        for k in &listed {
                            bulk(&mut out, k);
                        }
                    } else {
                        out.extend_from_slice(wrong.as_bytes());
                    }
                }
                "keys" if cmd.len() == 2 && cmd[1] == b"*" => {
                    out.extend_from_slice(format!("*{}\r\n", listed.len()).as_bytes());
                    for k in &listed {
                        bulk(&mut out, k);
                    }
                }
                "get" if cmd.len() == 2 => match data.get(&cmd[1]) {
                    Some((v, _)) => bulk(&mut out, v),
                    None => out.extend_from_slice(b"$-1\r\n"),
                },
                "pttl" if cmd.len() == 2 => {
                    let t = data.get(&cmd[1]).map_or(-2, |(_, t)| *t);
                    out.extend_from_slice(format!(":{t}\r\n").as_bytes());
                }
                "select" if cmd.len() == 2 && cmd[1] == b"0" => out.extend_from_slice(b"+OK\r\n"),
                "select" => out.extend_from_slice(b"-ERR invalid DB index\r\n"),
                _ => out.extend_from_slice(format!("-ERR unknown command '{name}'\r\n").as_bytes()),
            }
            if w.write_all(&out).is_err() {
                return;
            }
        }
    });
    (port, seen)
}

/// 260 keys (Go-style values, some with TTLs), plus a listed key that has
/// expired and one too long for this server.
fn go_dataset() -> (Strings, Vec<Vec<u8>>) {
    let mut data = BTreeMap::new();
    for i in 0..260u32 {
        let key = format!("trackist_active_2024-{:02}-{:02}", i / 28 + 1, i % 28 + 1);
        // The Go server's GET: max_bit/8 + 1 bytes.
        let mut value = vec![0u8; (i as usize % 40) + 1];
        value[0] = 0x80;
        let last = value.len() - 1;
        value[last] |= 1 << (i % 8);
        let ttl = if i % 50 == 0 { 300_000 } else { -1 };
        data.insert(key.into_bytes(), (value, ttl));
    }
    let mut listed: Vec<Vec<u8>> = data.keys().cloned().collect();
    listed.push(b"trackist_expired_key".to_vec());
    data.insert(too_long_key(), (b"\x01".to_vec(), -1));
    listed.push(too_long_key());
    (data, listed)
}

fn too_long_key() -> Vec<u8> {
    vec![b'k'; 2000]
}

fn check_go_import(scan: bool) {
    let (data, listed) = go_dataset();
    let (port, seen) = fake_go_server(data.clone(), listed, scan);
    let mut ours = ServerProcess::bitmapist(&[]);
    let mut c = ours.connect();
    slurp_ok(&mut c, &[&format!("127.0.0.1:{port}"), "0"]);
    let info = wait_done(&mut c);
    // The key too long for this server is an error; the import goes on.
    assert_eq!(num(&info, "slurp_errors"), 1, "{info:?}");
    assert!(info["slurp_last_error"].contains("longer than"), "{info:?}");
    assert_eq!(
        num(&info, "slurp_keys_imported"),
        data.len() as u64 - 1,
        "{info:?}"
    );
    assert_eq!(num(&info, "slurp_keys_expired"), 1, "{info:?}");
    assert_eq!(num(&info, "slurp_keys_skipped"), 0, "{info:?}");
    let mut strings = data;
    strings.remove(&too_long_key());
    let want = Expected {
        strings,
        others: vec![b"trackist_expired_key".to_vec()],
    };
    assert_same(&mut c, &want, "from a Go-style server");
    // The writes went to the log: a kill -9 loses none of them.
    let db_path = ours.dir().join("bitmapist.db");
    ours.kill9();
    let again = ServerProcess::bitmapist_at(&db_path, &[]);
    assert_same(&mut again.connect(), &want, "after kill -9");
    let seen = seen.lock().unwrap();
    let scans: Vec<_> = seen.iter().filter(|c| c[0] == b"SCAN").collect();
    assert_eq!(scans.len(), 1, "one SCAN: {scans:?}");
    let keys = seen.iter().filter(|c| c[0] == b"KEYS").count();
    assert_eq!(keys, usize::from(!scan));
}

#[test]
fn imports_from_a_go_style_server_with_its_one_scan_form() {
    check_go_import(true);
}

#[test]
fn imports_with_keys_when_the_source_has_no_scan() {
    check_go_import(false);
}

#[test]
fn second_slurp_is_refused_and_a_garbage_reply_stops_the_import() {
    // A source that accepts, reads the first command, then waits for the
    // test's signal and answers garbage.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (go, wait) = mpsc::channel::<()>();
    let (got_command, command_seen) = mpsc::channel::<Vec<Vec<u8>>>();
    let source = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let mut w = stream.try_clone().expect("clone");
        let mut r = BufReader::new(stream);
        let cmd = read_command(&mut r).expect("a command");
        let _ = got_command.send(cmd);
        let _ = wait.recv();
        let _ = w.write_all(b"?garbage\r\n");
        // Keep the socket open until the importer gives up.
        let mut sink = Vec::new();
        let _ = r.read_to_end(&mut sink);
    });
    let ours = ServerProcess::bitmapist(&[]);
    let mut c = ours.connect();
    let addr = format!("127.0.0.1:{port}");
    slurp_ok(&mut c, &[&addr]);
    let first = command_seen
        .recv_timeout(Duration::from_secs(10))
        .expect("the importer sent nothing");
    assert_eq!(first[0], b"SCAN");
    let info = slurp_info(&mut c);
    assert_eq!(info["slurp_running"], "1", "{info:?}");
    assert_eq!(info["slurp_source"], addr);
    assert_eq!(
        c.call(&["SLURP", "127.0.0.1:1"]),
        b"-ERR a SLURP import is already running\r\n"
    );
    // Other clients are served meanwhile.
    assert_eq!(c.call(&["SET", "k", "v"]), b"+OK\r\n");
    go.send(()).expect("signal");
    let info = wait_done(&mut c);
    assert!(
        info["slurp_last_error"].contains("protocol error"),
        "{info:?}"
    );
    assert_eq!(num(&info, "slurp_errors"), 1);
    source.join().expect("fake source");
    assert_eq!(c.call(&["GET", "k"]), b"$1\r\nv\r\n");
    // A new import may start now (and fails at once: nothing listens).
    slurp_ok(&mut c, &[&addr]);
    wait_done(&mut c);
}
