//! Durability of the real binary: kill -9 under concurrent pipelined
//! writers loses no acknowledged write; restarts keep values, lengths and
//! TTLs; a torn log tail is cut; a corrupt payload is an error for its key
//! only; a full disk refuses writes (MISCONF) while reads work, and writes
//! resume when space returns; a second process (on the same file or the same
//! port) and foreign files are refused with clear messages.

mod common;

use common::{assert_bits_set, encode, parse_reply, RawClient, ServerProcess, SmallDisk};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn db_in(dir: &Path) -> PathBuf {
    dir.join("bitmapist.db")
}

/// Starts the server on `db`, which must refuse to start (exit status 1)
/// within 10 s; returns what it printed on stderr.
fn refused_start(db: &Path) -> String {
    refused_start_with(db, "127.0.0.1:0", &[])
}

/// `refused_start` on address `addr` with extra flags.
fn refused_start_with(db: &Path, addr: &str, extra: &[&str]) -> String {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bitmapist-server"))
        .args(["--addr", addr])
        .args(extra)
        .arg("--db")
        .arg(db)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the server binary");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the server") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server started on {} instead of refusing", db.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut stderr).expect("read stderr");
    }
    assert_eq!(status.code(), Some(1), "{stderr}");
    stderr
}

/// One writer: pipelined batches of SETBIT on its own keys; returns every
/// (key, offset) whose reply arrived (acknowledged) before the server died.
fn writer(
    port: u16,
    id: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeSet<(String, u64)>>>,
    round: usize,
) {
    let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut client = RawClient::from_stream(stream, port);
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let mut batch = Vec::new();
        let mut sent = Vec::new();
        for _ in 0..50 {
            let key = format!("r{round}:w{id}:{}", n % 37);
            let offset = n * 7 + (id as u64);
            batch.extend(encode(&[
                b"SETBIT".as_slice(),
                key.as_bytes(),
                offset.to_string().as_bytes(),
                b"1",
            ]));
            sent.push((key, offset));
            n += 1;
        }
        if client.try_send(&batch).is_err() {
            return;
        }
        for item in sent {
            match client.try_read_reply() {
                Ok(reply) if reply.starts_with(b":") => {
                    acked.lock().unwrap_or_else(|e| e.into_inner()).insert(item);
                }
                _ => return,
            }
        }
    }
}

#[test]
fn kill9_loop_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = db_in(dir.path());
    // A small log limit makes checkpoints (and log rotations) happen while
    // the writers run.
    let flags = [
        "--checkpoint-log-size",
        "200KiB",
        "--checkpoint-interval",
        "1",
    ];
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    for round in 0..4 {
        let mut server = ServerProcess::bitmapist_at(&db, &flags);
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|id| {
                let (stop, acked, port) = (stop.clone(), acked.clone(), server.port());
                std::thread::spawn(move || writer(port, id, stop, acked, round))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(400 + 250 * round as u64));
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            let _ = w.join();
        }
        assert!(
            acked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|(k, _)| k.starts_with(&format!("r{round}:"))),
            "round {round}: no write was acknowledged; output:\n{}",
            server.output()
        );
    }
    // Every acknowledged bit of every round is there after the last restart.
    let server = ServerProcess::bitmapist_at(&db, &[]);
    let mut client = server.connect();
    let acked = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_bits_set(
        &mut client,
        acked.iter().map(|(k, o)| (k.as_str(), *o)),
        &format!("was acknowledged and then lost\n{}", server.output()),
    );
    assert!(
        acked.len() > 1000,
        "too few writes acknowledged to mean anything: {}",
        acked.len()
    );
}

/// A key with its GET, STRLEN and EXPIRETIME replies.
type Seen = (String, Vec<u8>, Vec<u8>, Vec<u8>);

/// The state a client sees of a set of keys, byte for byte.
fn snapshot(client: &mut RawClient, keys: &[&str]) -> Vec<Seen> {
    keys.iter()
        .map(|k| {
            let get = client.call(&["GET", k]);
            let len = client.call(&["STRLEN", k]);
            let ttl = client.call(&["EXPIRETIME", k]);
            (k.to_string(), get, len, ttl)
        })
        .collect()
}

fn fill(client: &mut RawClient) {
    client.call(&["SET", "plain", "hello\0\0\0"]);
    client.call(&["SET", "empty", ""]);
    client.call(&["SETBIT", "bits", "100000", "1"]);
    client.call(&["SETBIT", "bits", "7", "1"]);
    client.call(&["SETBIT", "zeros", "8191", "0"]);
    client.call(&["SET", "ttl", "v", "EX", "100000"]);
    client.call(&["SET", "gone", "x", "PX", "1"]);
    client.call(&["SETBIT", "moved", "3", "1"]);
    client.call(&["RENAME", "moved", "renamed"]);
    client.call(&["EXPIRE", "renamed", "5000"]);
    client.call(&["SELECT", "7"]);
    client.call(&["SETBIT", "in7", "9", "1"]);
    client.call(&["SELECT", "0"]);
    let big: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    client.call(&[b"SET".as_slice(), b"big", &big]);
    client.call(&["BITOP", "OR", "or", "bits", "big"]);
}

const KEYS: &[&str] = &[
    "plain", "empty", "bits", "zeros", "ttl", "gone", "moved", "renamed", "big", "or", "in7",
];

#[test]
fn restart_keeps_values_lengths_and_ttls() {
    for (how, kill) in [("SIGTERM", false), ("kill -9", true), ("SHUTDOWN", false)] {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = db_in(dir.path());
        let mut server = ServerProcess::bitmapist_at(&db, &[]);
        let mut client = server.connect();
        fill(&mut client);
        std::thread::sleep(Duration::from_millis(5));
        let before = snapshot(&mut client, KEYS);
        let size_before = client.call(&["DBSIZE"]);
        client.call(&["SELECT", "7"]);
        let in7 = client.call(&["GET", "in7"]);
        if kill {
            server.kill9();
        } else if how == "SHUTDOWN" {
            client.send(&encode(&["SHUTDOWN"]));
            assert_eq!(
                server.wait_exit(Duration::from_secs(20)),
                Some(0),
                "{}",
                server.output()
            );
        } else {
            assert_eq!(
                server.terminate(Duration::from_secs(20)),
                Some(0),
                "{}",
                server.output()
            );
        }
        let server = ServerProcess::bitmapist_at(&db, &[]);
        let mut client = server.connect();
        assert_eq!(snapshot(&mut client, KEYS), before, "after {how}");
        assert_eq!(client.call(&["GET", "gone"]), b"$-1\r\n");
        assert_eq!(client.call(&["DBSIZE"]), size_before, "after {how}");
        client.call(&["SELECT", "7"]);
        assert_eq!(client.call(&["GET", "in7"]), in7, "after {how}");
    }
}

/// The newest log segment of a database.
fn last_segment(db: &Path) -> PathBuf {
    let name = db
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let mut segs: Vec<PathBuf> = std::fs::read_dir(db.parent().expect("dir"))
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{name}-wal.")))
        })
        .collect();
    segs.sort();
    segs.pop().expect("a log segment")
}

#[test]
fn torn_log_tail_is_cut_and_the_rest_replayed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = db_in(dir.path());
    let mut server = ServerProcess::bitmapist_at(&db, &["--checkpoint-interval", "100000"]);
    let mut client = server.connect();
    for i in 0..100 {
        assert_eq!(
            client.call(&["SETBIT", &format!("k{i}"), "5", "1"]),
            b":0\r\n"
        );
    }
    server.kill9();
    let seg = last_segment(&db);
    let len = std::fs::metadata(&seg).expect("segment").len();
    // Tear the last record: cut its final 3 bytes.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open segment");
    f.set_len(len - 3).expect("truncate");
    drop(f);
    let server = ServerProcess::bitmapist_at(&db, &[]);
    let mut client = server.connect();
    for i in 0..99 {
        assert_eq!(
            client.call(&["GETBIT", &format!("k{i}"), "5"]),
            b":1\r\n",
            "k{i}"
        );
    }
    assert_eq!(
        client.call(&["GETBIT", "k99", "5"]),
        b":0\r\n",
        "the torn record must be dropped"
    );
    assert!(
        server.output().contains("torn"),
        "the cut is logged:\n{}",
        server.output()
    );
    // One record per unpipelined SETBIT, one command in each.
    let info = String::from_utf8_lossy(&client.call(&["INFO", "persistence"])).into_owned();
    for field in [
        "wal_replayed_records:99\r\n",
        "wal_replayed_commands:99\r\n",
    ] {
        assert!(info.contains(field), "INFO lacks {field:?}:\n{info}");
    }
    // The log continues cleanly after the cut.
    assert_eq!(client.call(&["SETBIT", "after", "1", "1"]), b":0\r\n");
}

#[test]
fn corrupt_payload_is_an_error_for_that_key_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = db_in(dir.path());
    let mut server = ServerProcess::bitmapist_at(&db, &[]);
    let mut client = server.connect();
    // A dense value whose payload lives in its own page extent.
    let big: Vec<u8> = (0..64_000u32)
        .map(|i| (i.wrapping_mul(2246822519) >> 11) as u8)
        .collect();
    client.call(&[b"SET".as_slice(), b"big", &big]);
    client.call(&["SETBIT", "small", "3", "1"]);
    client.send(&encode(&["SHUTDOWN"]));
    assert_eq!(server.wait_exit(Duration::from_secs(20)), Some(0));
    // Find the payload in the file (the portable Roaring bytes of `big`)
    // and flip a byte in its middle.
    let mut bits = roaring::RoaringBitmap::new();
    for (i, byte) in big.iter().enumerate() {
        for b in 0..8 {
            if byte & (0x80 >> b) != 0 {
                bits.insert((i * 8 + b) as u32);
            }
        }
    }
    let mut payload = Vec::new();
    bits.serialize_into(&mut payload).expect("serialize");
    let mut file = std::fs::read(&db).expect("read db");
    let at = file
        .windows(64)
        .position(|w| w == &payload[payload.len() / 2..payload.len() / 2 + 64])
        .expect("payload bytes in the file");
    file[at + 10] ^= 0x5a;
    std::fs::write(&db, &file).expect("write db");

    let mut server = ServerProcess::bitmapist_at(&db, &[]);
    let mut client = server.connect();
    let reply = client.call(&["GET", "big"]);
    assert!(
        reply.starts_with(b"-ERR") && String::from_utf8_lossy(&reply).contains("corrupt"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    // Metadata still answers; other keys and the server are fine.
    assert_eq!(client.call(&["STRLEN", "big"]), b":64000\r\n");
    assert_eq!(client.call(&["GETBIT", "small", "3"]), b":1\r\n");
    assert_eq!(client.call(&["PING"]), b"+PONG\r\n");
    assert!(server.is_running());
    assert!(
        server.output().contains("corrupt"),
        "logged:\n{}",
        server.output()
    );
}

#[test]
fn a_second_process_on_the_same_file_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = db_in(dir.path());
    let _server = ServerProcess::bitmapist_at(&db, &[]);
    let stderr = refused_start(&db);
    assert!(stderr.contains("in use by another"), "{stderr}");
}

/// A second server started on a port in use (with another database) must
/// fail to bind, not join the port and take some of the first one's
/// connections (SO_REUSEPORT alone would let it).
#[test]
fn a_second_server_on_the_same_port_is_refused() {
    let first = ServerProcess::bitmapist(&["--threads", "2"]);
    first.connect().call(&["SET", "owner", "first"]);
    let other = tempfile::tempdir().expect("temp dir");
    let addr = format!("127.0.0.1:{}", first.port());
    let other_db = db_in(other.path());
    let stderr = refused_start_with(&other_db, &addr, &["--threads", "2"]);
    assert!(stderr.contains("Address already in use"), "{stderr}");
    for _ in 0..32 {
        let reply = first.connect().call(&["GET", "owner"]);
        assert_eq!(
            reply, b"$5\r\nfirst\r\n",
            "a connection reached another server"
        );
    }
}

/// A server started on the port of one just killed comes up: the killed
/// one's listening socket lingers some milliseconds while the kernel tears
/// down its io_uring, which the new start waits out instead of failing.
#[test]
fn a_restart_on_the_port_of_a_killed_server_comes_up() {
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let db = db_in(dir.path());
    let mut first = ServerProcess::bitmapist_at(&db, &[]);
    let port = first.port();
    first.connect().call(&["SET", "k", "v"]);
    first.kill9();
    let mut second = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_bitmapist-server"))
            .args(["--addr", &format!("127.0.0.1:{port}"), "--db"])
            .arg(&db)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run the server binary"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let reply = loop {
        // A connection can still land on the killed server's lingering
        // socket, which resets it: try again.
        if let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let mut client = RawClient::from_stream(stream, port);
            let get = encode(&["GET", "k"]);
            if let Ok(reply) = client.try_send(&get).and_then(|()| client.try_read_reply()) {
                break reply;
            }
        }
        if let Some(status) = second.0.try_wait().expect("wait for the server") {
            let mut stderr = String::new();
            if let Some(mut e) = second.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
            }
            panic!("the restarted server exited ({status}): {stderr}");
        }
        assert!(
            Instant::now() < deadline,
            "the restarted server never answered"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(reply, b"$1\r\nv\r\n");
}

/// A backup restored next to the log of the newer database it replaces is
/// refused, not replayed with the segments between them missing; with the
/// segments moved aside it starts with the backup's data.
#[test]
fn a_restored_backup_beside_a_newer_log_is_refused_until_it_is_moved_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = db_in(dir.path());
    let backup = dir.path().join("backup.db");
    let flags = ["--checkpoint-interval", "100000", "--bak"];
    let bak = backup.to_str().expect("utf-8 path");
    {
        let mut server = ServerProcess::bitmapist_at(&db, &[flags[0], flags[1], flags[2], bak]);
        let mut client = server.connect();
        assert_eq!(client.call(&["SET", "kept", "backup"]), b"+OK\r\n");
        server.signal("USR1");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !backup.exists() {
            assert!(Instant::now() < deadline, "no backup was written");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Checkpoints move the log on past the backup's segment, then more
        // writes go to the newest segment.
        for i in 0..3 {
            client.call(&["SET", "later", &i.to_string()]);
            assert_eq!(client.call(&["SAVE"]), b"+OK\r\n");
        }
        client.call(&["SET", "latest", "x"]);
        server.kill9();
    }
    std::fs::copy(&backup, &db).expect("restore the backup");
    let stderr = refused_start(&db);
    assert!(
        stderr.contains("does not continue the database"),
        "{stderr}"
    );
    let aside = dir.path().join("aside");
    std::fs::create_dir(&aside).expect("mkdir");
    for entry in std::fs::read_dir(dir.path()).expect("list") {
        let path = entry.expect("entry").path();
        if path.to_string_lossy().contains("bitmapist.db-wal.") {
            let name = path.file_name().expect("name").to_owned();
            std::fs::rename(&path, aside.join(name)).expect("move aside");
        }
    }
    let server = ServerProcess::bitmapist_at(&db, &[]);
    let mut client = server.connect();
    assert_eq!(client.call(&["GET", "kept"]), b"$6\r\nbackup\r\n");
    assert_eq!(client.call(&["EXISTS", "later", "latest"]), b":0\r\n");
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/go-bitmapist-server/bitmapist.db")
}

#[test]
fn foreign_files_are_refused_unchanged() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The Go server's bbolt database: named as such, pointing at import-bolt.
    let go = dir.path().join("go.db");
    std::fs::copy(fixture(), &go).expect("copy the Go fixture");
    let before = std::fs::read(&go).expect("read");
    let stderr = refused_start(&go);
    assert!(
        stderr.contains("Go bitmapist-server") && stderr.contains("import-bolt"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&go).expect("read"),
        before,
        "the Go database must not be modified"
    );
    // Something else entirely.
    let other = dir.path().join("notes.txt");
    std::fs::write(&other, vec![b'x'; 10_000]).expect("write");
    let stderr = refused_start(&other);
    assert!(
        stderr.contains("not a bitmapist-server database"),
        "{stderr}"
    );
    // A database from a newer format version.
    let newer = dir.path().join("newer.db");
    {
        let server = ServerProcess::bitmapist_at(&newer, &[]);
        let mut client = server.connect();
        client.call(&["SETBIT", "a", "1", "1"]);
        client.call(&["SAVE"]);
    }
    let mut bytes = std::fs::read(&newer).expect("read");
    for page in 0..2 {
        let p = &mut bytes[page * 4096..page * 4096 + 4096];
        p[8..12].copy_from_slice(&99u32.to_le_bytes());
        let sum = crc32c(&p[..192]);
        p[192..196].copy_from_slice(&sum.to_le_bytes());
    }
    std::fs::write(&newer, &bytes).expect("write");
    let stderr = refused_start(&newer);
    assert!(stderr.contains("newer bitmapist-server"), "{stderr}");
}

/// CRC-32C, bitwise (test-only; the server uses the crc32c crate).
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn a_full_disk_refuses_writes_keeps_reads_and_recovers() {
    let disk = SmallDisk::mount("8m");
    let db = db_in(&disk.path);
    let server = ServerProcess::bitmapist_at(
        &db,
        &["--checkpoint-interval", "100000", "--fsync", "always"],
    );
    let mut client = server.connect();
    assert_eq!(client.call(&["SET", "before", "kept"]), b"+OK\r\n");
    // Fill the disk.
    let filler = disk.path.join("filler");
    let mut f = std::fs::File::create(&filler).expect("filler");
    let chunk = vec![7u8; 64 * 1024];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    let _ = f.sync_all();
    drop(f);
    // This write cannot be logged: its reply must wait, not be acknowledged.
    let value = vec![b'v'; 200_000];
    let port = server.port();
    let pending = std::thread::spawn(move || {
        let mut c = RawClient::connect(port);
        let t0 = Instant::now();
        let reply = c.call(&[b"SET".as_slice(), b"during", &value]);
        (reply, t0.elapsed())
    });
    // Once the log writer has failed (INFO says so; a write probe sent
    // before that would itself wait), new writes get MISCONF; reads work.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = String::from_utf8_lossy(&client.call(&["INFO", "persistence"])).into_owned();
        if info.contains("wal_write_ok:0") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the log writer did not report the full disk:\n{info}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let misconf = client.call(&["SETBIT", "x", "1", "1"]);
    assert!(
        misconf.starts_with(b"-MISCONF"),
        "{}",
        String::from_utf8_lossy(&misconf)
    );
    assert!(
        String::from_utf8_lossy(&misconf).contains("No space left"),
        "{}",
        String::from_utf8_lossy(&misconf)
    );
    assert_eq!(client.call(&["GET", "before"]), b"$4\r\nkept\r\n");
    assert!(
        !pending.is_finished(),
        "a write that was not logged must not be acknowledged"
    );
    // Space returns: the pending write is logged and acknowledged, writes resume.
    std::fs::remove_file(&filler).expect("free space");
    let (reply, waited) = pending.join().expect("pending writer");
    assert_eq!(reply, b"+OK\r\n");
    assert!(waited >= Duration::from_millis(100));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if client.call(&["SETBIT", "y", "1", "1"]).starts_with(b":") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes did not resume after the disk recovered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(client.call(&["STRLEN", "during"]), b":200000\r\n");
    drop(client);
    drop(server);
    let server = ServerProcess::bitmapist_at(&db, &[]);
    let mut client = server.connect();
    assert_eq!(
        client.call(&["STRLEN", "during"]),
        b":200000\r\n",
        "the acknowledged write survives a restart"
    );
    let r = parse_reply(&client.call(&["GET", "before"]));
    assert_eq!(r.as_bulk(), b"kept");
}

#[test]
fn keys_longer_than_the_directory_holds_are_refused_for_writes() {
    let server = ServerProcess::bitmapist(&[]);
    let mut c = server.connect();
    let long = "k".repeat(1025);
    let ok = "k".repeat(1024);
    let err = b"-ERR key is longer than 1024 bytes, the longest this server stores\r\n".to_vec();
    assert_eq!(c.call(&["SET", &long, "v"]), err);
    assert_eq!(c.call(&["SETBIT", &long, "1", "1"]), err);
    assert_eq!(c.call(&["RENAME", "x", &long]), err);
    assert_eq!(c.call(&["GET", &long]), b"$-1\r\n");
    assert_eq!(c.call(&["SET", &ok, "v"]), b"+OK\r\n");
    // Inside MULTI the refusal aborts the transaction, like any queue-time error.
    c.call(&["MULTI"]);
    assert_eq!(c.call(&["SET", &long, "v"]), err);
    assert!(c.call(&["EXEC"]).starts_with(b"-EXECABORT"));
    assert_eq!(c.call(&["SAVE"]), b"+OK\r\n");
    assert_eq!(c.call(&["STRLEN", &ok]), b":1\r\n");
}

#[test]
fn the_log_is_rotated_even_when_commands_change_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = db_in(dir.path());
    let server = ServerProcess::bitmapist_at(&db, &["--checkpoint-log-size", "64KiB"]);
    let mut c = server.connect();
    // DEL of missing keys is logged (it is a write) but changes nothing.
    for round in 0..20 {
        let mut batch = Vec::new();
        for i in 0..500 {
            batch.extend(encode(&["DEL", &format!("missing:{round}:{i}")]));
        }
        c.send(&batch);
        for _ in 0..500 {
            assert_eq!(c.read_reply(), b":0\r\n");
        }
    }
    let log_bytes = || -> u64 {
        std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("-wal."))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while log_bytes() > 256 * 1024 {
        assert!(
            Instant::now() < deadline,
            "the log kept {} bytes",
            log_bytes()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A database written by format version 1 (node pages without slot arrays,
/// version 1 in the meta pages) opens, answers from the old pages, and its
/// next checkpoint writes version 2.
#[test]
fn a_version_1_database_is_read_and_upgraded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("v1.db");
    let keys: Vec<String> = (0..3000).map(|i| format!("user:{i:05}")).collect();
    {
        let mut server = ServerProcess::bitmapist_at(&db, &[]);
        let mut client = server.connect();
        let mut batch = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            batch.extend(encode(&["SETBIT", k.as_str(), &i.to_string(), "1"]));
        }
        client.send(&batch);
        for _ in &keys {
            client.read_reply();
        }
        assert_eq!(client.call(&["SAVE"]), b"+OK\r\n");
        assert_eq!(server.terminate(Duration::from_secs(30)), Some(0));
    }
    // Rewrite it the way version 1 wrote it.
    let le16 = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]) as usize;
    let le32 = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let mut bytes = std::fs::read(&db).expect("read");
    let mut stripped = 0;
    for page in bytes.chunks_mut(4096).skip(2) {
        let node = page.len() == 4096
            && crc32c(&page[4..]) == le32(&page[0..4])
            && (page[4] == 1 || page[4] == 2);
        if !node || page[5] != 1 {
            continue;
        }
        let count = le16(&page[6..8]);
        page[4096 - 2 * count..].fill(0);
        page[5] = 0;
        let sum = crc32c(&page[4..]);
        page[0..4].copy_from_slice(&sum.to_le_bytes());
        stripped += 1;
    }
    assert!(stripped > 5, "only {stripped} node pages found");
    let meta_version = |bytes: &[u8]| -> u32 {
        (0..2)
            .map(|m| &bytes[m * 4096..m * 4096 + 4096])
            .filter(|p| &p[0..8] == b"BMPDB\0\0\x01" && crc32c(&p[..192]) == le32(&p[192..196]))
            .map(|p| le32(&p[8..12]))
            .max()
            .unwrap_or(0)
    };
    for m in 0..2 {
        let p = &mut bytes[m * 4096..m * 4096 + 4096];
        if crc32c(&p[..192]) != le32(&p[192..196]) {
            continue;
        }
        p[8..12].copy_from_slice(&1u32.to_le_bytes());
        let sum = crc32c(&p[..192]);
        p[192..196].copy_from_slice(&sum.to_le_bytes());
    }
    assert_eq!(meta_version(&bytes), 1);
    std::fs::write(&db, &bytes).expect("write");

    let check = |client: &mut RawClient| {
        assert_bits_set(
            client,
            keys.iter().enumerate().map(|(i, k)| (k.as_str(), i as u64)),
            "keys of the version-1 file",
        );
        assert_eq!(client.call(&["DBSIZE"]), b":3000\r\n");
        assert_eq!(client.call(&["GETBIT", "user:00007", "8"]), b":0\r\n");
        let listed = parse_reply(&client.call(&["KEYS", "user:012*"]));
        assert_eq!(listed.as_array().len(), 100);
    };
    {
        let mut server = ServerProcess::bitmapist_at(&db, &[]);
        let mut client = server.connect();
        check(&mut client);
        assert_eq!(client.call(&["SETBIT", "user:00001", "9", "1"]), b":0\r\n");
        assert_eq!(client.call(&["SAVE"]), b"+OK\r\n");
        assert_eq!(server.terminate(Duration::from_secs(30)), Some(0));
    }
    let bytes = std::fs::read(&db).expect("read");
    assert_eq!(meta_version(&bytes), 2, "the checkpoint writes version 2");
    let server = ServerProcess::bitmapist_at(&db, &[]);
    let mut client = server.connect();
    check(&mut client);
    assert_eq!(client.call(&["GETBIT", "user:00001", "9"]), b":1\r\n");
}

/// Damage inside a log segment that later segments follow is corruption,
/// not a crash (a segment is synced whole before the next one begins): the
/// server refuses to replay around the gap and says what to do. The same
/// damage in the last segment is a torn tail: cut, and the server starts.
#[test]
fn damage_before_a_later_log_segment_is_refused_a_torn_last_segment_is_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("bitmapist.db");
    {
        let mut server = ServerProcess::bitmapist_at(&db, &["--checkpoint-interval", "100000"]);
        let mut client = server.connect();
        // Five pipelined batches one after another: a batch read at once is
        // logged as one record, so one batch of all 500 could be a single
        // record, and the damage in the middle would take every write.
        for round in 0..5 {
            let mut batch = Vec::new();
            for i in round * 100..(round + 1) * 100 {
                batch.extend(encode(&[
                    "SETBIT",
                    &format!("k{}", i % 10),
                    &i.to_string(),
                    "1",
                ]));
            }
            client.send(&batch);
            for _ in 0..100 {
                client.read_reply();
            }
        }
        server.kill9();
    }
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().contains("-wal."))
        .collect();
    segments.sort();
    let last = segments.last().expect("a log segment").clone();
    let name = last
        .file_name()
        .expect("name")
        .to_string_lossy()
        .to_string();
    let seq: u64 = name
        .rsplit('.')
        .next()
        .expect("seq")
        .parse()
        .expect("number");
    let mut bytes = std::fs::read(&last).expect("read segment");
    assert!(
        bytes.len() > 4096,
        "the writes are in the log ({} bytes)",
        bytes.len()
    );
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&last, &bytes).expect("write segment");
    // A valid, empty next segment: the damaged one is no longer the last.
    let header = bitmapist_server::storage::wal::encode_header(seq + 1);
    let next = bitmapist_server::storage::wal::segment_path(&db, seq + 1);
    std::fs::write(&next, header).expect("write the next segment");

    let stderr = refused_start(&db);
    assert!(
        stderr.contains("is damaged") && stderr.contains("refusing to replay"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&last).expect("read"),
        bytes,
        "nothing was changed"
    );

    // As the last segment, the same damage is a torn tail: cut at start-up.
    std::fs::remove_file(&next).expect("remove");
    let server = ServerProcess::bitmapist_at(&db, &[]);
    let mut client = server.connect();
    assert_eq!(
        client.call(&["GETBIT", "k0", "0"]),
        b":1\r\n",
        "records before the damage"
    );
    assert!(server.output().contains("cut there"), "{}", server.output());
}

/// EXEC reads the payloads its queued commands need from disk first: values
/// of a restarted server are cold, and the block still runs atomically on
/// the right values.
#[test]
fn exec_over_cold_values_answers_from_the_values_on_disk() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = db_in(dir.path());
    let big = "x".repeat(20_000); // 0x78: four bits set a byte, stored in page extents
    {
        let mut server = ServerProcess::bitmapist_at(&db, &[]);
        let mut client = server.connect();
        assert_eq!(client.call(&["SET", "big", big.as_str()]), b"+OK\r\n");
        assert_eq!(client.call(&["SET", "other", big.as_str()]), b"+OK\r\n");
        assert_eq!(client.call(&["SAVE"]), b"+OK\r\n");
        assert_eq!(server.terminate(Duration::from_secs(30)), Some(0));
    }
    let server = ServerProcess::bitmapist_at(&db, &[]);
    let mut client = server.connect();
    let memory = String::from_utf8_lossy(&client.call(&["INFO", "memory"])).into_owned();
    assert!(
        memory.contains("cache_keys:0\r\n"),
        "nothing is cached after the restart:\n{memory}"
    );
    let mut batch = Vec::new();
    for argv in [
        &["MULTI"][..],
        &["GETBIT", "big", "1"],
        &["SETBIT", "big", "0", "1"],
        &["BITCOUNT", "big", "0", "-1"],
        &["BITOP", "AND", "dest", "big", "other"],
        &["EXEC"],
    ] {
        batch.extend(encode(argv));
    }
    client.send(&batch);
    let replies: Vec<Vec<u8>> = (0..6).map(|_| client.read_reply()).collect();
    assert_eq!(replies[0], b"+OK\r\n");
    assert!(
        replies[1..5].iter().all(|r| r == b"+QUEUED\r\n"),
        "{replies:?}"
    );
    assert_eq!(
        String::from_utf8_lossy(&replies[5]),
        "*4\r\n:1\r\n:0\r\n:80001\r\n:20000\r\n"
    );
    assert_eq!(client.call(&["BITCOUNT", "dest"]), b":80000\r\n");
}

/// A checkpoint publishes each kind of change to the cache of committed
/// values: a new value (its cached entry replaced in place), a new expiry
/// over an unchanged value, a deletion, a rename and a new key; reads after
/// it, after a second change and checkpoint of the same keys, and after a
/// restart see the new state.
#[test]
fn reads_after_checkpoints_see_every_kind_of_change() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = db_in(dir.path());
    let big = "x".repeat(20_000); // stored in page extents
    let expected = |client: &mut RawClient, round: u8| {
        let first = if round == 0 { 0x81 } else { 0xc1 };
        let mut a = b"$3\r\n".to_vec();
        a.extend_from_slice(&[first, b'b', b'c', b'\r', b'\n']);
        assert_eq!(client.call(&["GET", "a"]), a);
        let ttl = String::from_utf8_lossy(&client.call(&["PTTL", "b"])).into_owned();
        let ms: i64 = ttl.trim_start_matches(':').trim().parse().expect("PTTL");
        assert!(ms > 0 && ms <= 1_000_000, "PTTL b {ttl}");
        assert_eq!(
            client.call(&["GET", "b"]),
            format!("${}\r\n{big}\r\n", big.len()).into_bytes()
        );
        assert_eq!(client.call(&["EXISTS", "c", "d"]), b":0\r\n");
        assert_eq!(client.call(&["GET", "e"]), b"$3\r\nddd\r\n");
        assert_eq!(client.call(&["GETBIT", "f", "1"]), b":1\r\n");
        assert_eq!(client.call(&["DBSIZE"]), b":4\r\n");
    };
    {
        let mut server = ServerProcess::bitmapist_at(&db, &[]);
        let mut client = server.connect();
        for (k, v) in [
            ("a", "abc"),
            ("b", big.as_str()),
            ("c", "ccc"),
            ("d", "ddd"),
        ] {
            assert_eq!(client.call(&["SET", k, v]), b"+OK\r\n");
        }
        assert_eq!(client.call(&["SAVE"]), b"+OK\r\n");
        // Cached, with their values.
        for k in ["a", "b", "c", "d"] {
            assert!(client.call(&["GET", k]).starts_with(b"$"));
        }
        // "abc" starts with 0x61 (0110 0001): bit 0 set, bits 1 and 2
        // cleared make 0x81; bit 1 set again (round 1) makes 0xc1.
        assert_eq!(client.call(&["SETBIT", "a", "0", "1"]), b":0\r\n");
        assert_eq!(client.call(&["SETBIT", "a", "1", "0"]), b":1\r\n");
        assert_eq!(client.call(&["SETBIT", "a", "2", "0"]), b":1\r\n");
        assert_eq!(client.call(&["PEXPIRE", "b", "1000000"]), b":1\r\n");
        assert_eq!(client.call(&["DEL", "c"]), b":1\r\n");
        assert_eq!(client.call(&["RENAME", "d", "e"]), b"+OK\r\n");
        assert_eq!(client.call(&["SETBIT", "f", "1", "1"]), b":0\r\n");
        assert_eq!(client.call(&["SAVE"]), b"+OK\r\n");
        expected(&mut client, 0);
        // The same keys again, over the entries the first checkpoint cached.
        assert_eq!(client.call(&["SETBIT", "a", "1", "1"]), b":0\r\n");
        assert_eq!(client.call(&["SAVE"]), b"+OK\r\n");
        expected(&mut client, 1);
        assert_eq!(server.terminate(Duration::from_secs(30)), Some(0));
    }
    let server = ServerProcess::bitmapist_at(&db, &[]);
    let mut client = server.connect();
    expected(&mut client, 1);
}

fn persistence_field(client: &mut RawClient, field: &str) -> u64 {
    info_number(client, "persistence", field)
}

fn info_number(client: &mut RawClient, section: &str, field: &str) -> u64 {
    let reply = client.call(&["INFO", section]);
    let text = String::from_utf8_lossy(&reply).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("INFO {section} has no {field}: {text}"))
}

/// Writers of new keys, faster than the checkpointer (idle priority) writes
/// them out: changed data stays near the cache budget, as writes wait for
/// the running checkpoint instead of piling up, and every write is kept.
#[test]
fn writes_wait_for_the_checkpoint_when_changed_data_outgrows_the_cache_budget() {
    const BUDGET: u64 = 4 << 20;
    const WRITERS: usize = 4;
    const KEYS_EACH: u64 = 60_000;
    let server = ServerProcess::bitmapist(&["--cache-size", "4MiB"]);
    let port = server.port();
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut client = RawClient::connect(port);
            let mut most = 0;
            while !done.load(Ordering::Relaxed) {
                most = most.max(persistence_field(&mut client, "dirty_bytes"));
                std::thread::sleep(Duration::from_millis(5));
            }
            most
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            std::thread::spawn(move || {
                let mut client = RawClient::connect(port);
                for start in (0..KEYS_EACH).step_by(500) {
                    let mut batch = Vec::new();
                    for i in start..start + 500 {
                        let key = format!("user:{w}:{i}");
                        batch.extend(encode(&["SETBIT", key.as_str(), "7", "1"]));
                    }
                    client.send(&batch);
                    for _ in 0..500 {
                        assert_eq!(client.read_reply(), b":0\r\n");
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    done.store(true, Ordering::Relaxed);
    let most = watcher.join().expect("watcher");
    let mut client = RawClient::connect(port);
    let holds = persistence_field(&mut client, "write_holds");
    let checkpoints = persistence_field(&mut client, "checkpoints");
    eprintln!("most dirty bytes seen {most}, write holds {holds}, checkpoints {checkpoints}");
    assert!(checkpoints > 0, "no checkpoint ran");
    // A batch already running when the limit is crossed still completes:
    // allow one batch (500 keys, about 500 bytes each) per writer over it.
    assert!(
        most <= BUDGET + (WRITERS as u64) * 500 * 1024,
        "changed data reached {most} bytes with a {BUDGET}-byte cache budget"
    );
    assert_eq!(
        client.call(&["DBSIZE"]),
        format!(":{}\r\n", WRITERS as u64 * KEYS_EACH).into_bytes()
    );
    for w in 0..WRITERS {
        let key = format!("user:{w}:{}", KEYS_EACH - 1);
        assert_eq!(client.call(&["GETBIT", key.as_str(), "7"]), b":1\r\n");
    }
}

/// Sends MULTI, the commands and EXEC in one write; returns EXEC's reply
/// (the others must be +OK and +QUEUED).
fn exec_reply(client: &mut RawClient, commands: &[&[&str]]) -> String {
    let mut batch = encode(&["MULTI"]);
    for argv in commands {
        batch.extend(encode(argv));
    }
    batch.extend(encode(&["EXEC"]));
    client.send(&batch);
    assert_eq!(client.read_reply(), b"+OK\r\n");
    for _ in commands {
        assert_eq!(client.read_reply(), b"+QUEUED\r\n");
    }
    String::from_utf8_lossy(&client.read_reply()).into_owned()
}

/// A BITOP answered from the memo (its destination already holds the
/// result over the same sources) changes nothing and is not logged; the
/// state it confirmed, and the changes around it, survive kill -9.
#[test]
fn a_bitop_answered_from_the_memo_is_not_logged_and_its_state_survives_kill9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = db_in(dir.path());
    let memo_hits = |client: &mut RawClient| info_number(client, "memory", "bitop_memo_hits");
    let (d, e);
    {
        let mut server = ServerProcess::bitmapist_at(&db, &[]);
        let mut client = server.connect();
        for (key, bit) in [("a", "3"), ("a", "90000"), ("b", "7"), ("b", "5000000")] {
            assert_eq!(client.call(&["SETBIT", key, bit, "1"]), b":0\r\n");
        }
        assert_eq!(client.call(&["BITOP", "OR", "d", "a", "b"]), b":625001\r\n");
        let appended = persistence_field(&mut client, "wal_appended");
        assert_eq!(client.call(&["BITOP", "OR", "d", "a", "b"]), b":625001\r\n");
        assert_eq!(memo_hits(&mut client), 1);
        assert_eq!(
            persistence_field(&mut client, "wal_appended"),
            appended,
            "a BITOP answered from the memo appends nothing to the log"
        );
        // In a transaction, between changes that are logged.
        assert_eq!(
            exec_reply(
                &mut client,
                &[
                    &["SETBIT", "c", "1", "1"],
                    &["BITOP", "OR", "d", "a", "b"],
                    &["SETBIT", "c", "2", "1"],
                ]
            ),
            "*3\r\n:0\r\n:625001\r\n:0\r\n"
        );
        assert_eq!(memo_hits(&mut client), 2);
        assert!(persistence_field(&mut client, "wal_appended") > appended);
        // Last in a transaction: the change before it is logged all the same.
        assert_eq!(
            exec_reply(
                &mut client,
                &[&["SETBIT", "c", "3", "1"], &["BITOP", "OR", "d", "a", "b"]]
            ),
            "*2\r\n:0\r\n:625001\r\n"
        );
        assert_eq!(memo_hits(&mut client), 3);
        // A changed source: computed again, and logged.
        assert_eq!(client.call(&["SETBIT", "b", "8", "1"]), b":0\r\n");
        let appended = persistence_field(&mut client, "wal_appended");
        assert_eq!(
            client.call(&["BITOP", "XOR", "e", "d", "b"]),
            b":625001\r\n"
        );
        assert_eq!(client.call(&["BITOP", "OR", "d", "a", "b"]), b":625001\r\n");
        assert_eq!(memo_hits(&mut client), 3);
        assert!(persistence_field(&mut client, "wal_appended") > appended);
        d = client.call(&["GET", "d"]);
        e = client.call(&["GET", "e"]);
        server.kill9();
    }
    let server = ServerProcess::bitmapist_at(&db, &[]);
    let mut client = server.connect();
    assert_eq!(client.call(&["GET", "d"]), d);
    assert_eq!(client.call(&["GET", "e"]), e);
    assert_eq!(client.call(&["BITCOUNT", "d"]), b":5\r\n");
    assert_eq!(client.call(&["BITCOUNT", "e"]), b":3\r\n");
    assert_eq!(client.call(&["BITCOUNT", "c"]), b":3\r\n");
}
