//! Backups on SIGUSR1 (`-bak FILE`): a consistent database holding every
//! write acknowledged before the signal, written while clients are served;
//! a server started on a copy serves it; failures leave the previous backup
//! intact; signals are coalesced; without -bak the signal is only logged.

mod common;

use common::{assert_bits_set, encode, RawClient, ServerProcess, SmallDisk};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn info_field(client: &mut RawClient, field: &str) -> String {
    let reply = client.call(&["INFO", "persistence"]);
    let text = String::from_utf8_lossy(&reply).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")).map(str::to_string))
        .unwrap_or_default()
}

fn wait_for(client: &mut RawClient, field: &str, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = info_field(client, field);
        if want(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "INFO {field} stayed {v:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn backup_while_writers_run_holds_every_write_acknowledged_before_the_signal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("bitmapist.db");
    let bak = dir.path().join("backup.db");
    let bak_arg = bak.to_str().expect("path").to_string();
    let mut server = ServerProcess::bitmapist_at(&db, &["--bak", &bak_arg]);
    let port = server.port();
    let stop = Arc::new(AtomicBool::new(false));
    // (key, offset, acknowledged at)
    let acked = Arc::new(Mutex::new(Vec::<(String, u64, Instant)>::new()));
    let writers: Vec<_> = (0..3)
        .map(|id| {
            let (stop, acked) = (stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut c = RawClient::connect(port);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut batch = Vec::new();
                    let mut sent = Vec::new();
                    for _ in 0..40 {
                        let key = format!("w{id}:{}", n % 29);
                        batch.extend(encode(&[
                            b"SETBIT".as_slice(),
                            key.as_bytes(),
                            (n * 3).to_string().as_bytes(),
                            b"1",
                        ]));
                        sent.push((key, n * 3));
                        n += 1;
                    }
                    c.send(&batch);
                    for (key, offset) in sent {
                        assert!(c.read_reply().starts_with(b":"));
                        acked.lock().unwrap_or_else(|e| e.into_inner()).push((
                            key,
                            offset,
                            Instant::now(),
                        ));
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    server.signal("USR1");
    let mut c = server.connect();
    wait_for(&mut c, "backups", |v| v == "1");
    assert_eq!(info_field(&mut c, "last_backup_status"), "ok");
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        if w.join().is_err() {
            // A writer lost its connection: say what the server logged.
            panic!(
                "a writer failed; server running: {}; its log:\n{}",
                server.is_running(),
                server.output()
            );
        }
    }
    let before: BTreeSet<(String, u64)> = acked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|(_, _, at)| *at < signalled)
        .map(|(k, o, _)| (k.clone(), *o))
        .collect();
    assert!(
        before.len() > 500,
        "too few writes before the signal: {}",
        before.len()
    );
    assert!(
        server.output().contains("backup written"),
        "{}",
        server.output()
    );

    // A server started on a copy of the backup serves all of them.
    let copy = dir.path().join("restored.db");
    std::fs::copy(&bak, &copy).expect("copy backup");
    let restored = ServerProcess::bitmapist_at(&copy, &[]);
    let mut r = restored.connect();
    assert_bits_set(
        &mut r,
        before.iter().map(|(k, o)| (k.as_str(), *o)),
        "was acknowledged before the signal but is not in the backup",
    );
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn failed_backups_leave_the_previous_one_intact() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("bitmapist.db");
    let disk = SmallDisk::mount("2m");
    let bak = disk.path.join("backup.db");
    let bak_arg = bak.to_str().expect("path").to_string();
    let server = ServerProcess::bitmapist_at(&db, &["--bak", &bak_arg]);
    let mut c = server.connect();
    c.call(&["SETBIT", "first", "1", "1"]);
    server.signal("USR1");
    wait_for(&mut c, "backups", |v| v == "1");
    let good = std::fs::read(&bak).expect("first backup");

    // A read-only directory: the backup fails, the old file stays.
    c.call(&["SETBIT", "second", "1", "1"]);
    disk.set_read_only(true);
    server.signal("USR1");
    wait_for(&mut c, "last_backup_status", |v| v == "err");
    assert_eq!(std::fs::read(&bak).expect("old backup"), good);
    disk.set_read_only(false);

    // A full disk: the same.
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    c.call(&[b"SET".as_slice(), b"big", &big]);
    server.signal("USR1");
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.output().matches("backup failed").nth(1).is_none() {
        assert!(
            Instant::now() < deadline,
            "the second failure was not logged:\n{}",
            server.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(info_field(&mut c, "last_backup_status"), "err");
    assert_eq!(std::fs::read(&bak).expect("old backup"), good);
    assert_eq!(
        files_in(&disk.path),
        vec!["backup.db".to_string()],
        "no temporary file is left behind"
    );
    // The server keeps serving throughout.
    assert_eq!(c.call(&["GETBIT", "second", "1"]), b":1\r\n");
    assert_eq!(c.call(&["STRLEN", "big"]), b":3000000\r\n");
}

#[test]
fn signals_are_coalesced_and_without_bak_only_logged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("bitmapist.db");
    let bak = dir.path().join("b.db");
    let bak_arg = bak.to_str().expect("path").to_string();
    let server = ServerProcess::bitmapist_at(&db, &["--bak", &bak_arg]);
    let mut c = server.connect();
    for i in 0..2000 {
        c.send(&encode(&[
            "SETBIT",
            &format!("k{}", i % 50),
            &(i * 11).to_string(),
            "1",
        ]));
    }
    for _ in 0..2000 {
        c.read_reply();
    }
    // Six signals microseconds apart (not six `kill` processes, each of
    // which can take longer than a backup of this small database): all but
    // the first arrive while a backup is running.
    let pid = nix::unistd::Pid::from_raw(server.pid() as i32);
    for _ in 0..6 {
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1).expect("kill");
    }
    wait_for(&mut c, "backup_in_progress", |v| v == "0");
    std::thread::sleep(Duration::from_millis(500));
    wait_for(&mut c, "backup_in_progress", |v| v == "0");
    let backups: u64 = info_field(&mut c, "backups").parse().expect("number");
    assert!(
        (1..6).contains(&backups),
        "six signals gave {backups} backups"
    );
    assert!(bak.exists());

    let dir2 = tempfile::tempdir().expect("temp dir");
    let plain = ServerProcess::bitmapist_at(&dir2.path().join("x.db"), &[]);
    plain.signal("USR1");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !plain.output().contains("no backup path is configured") {
        assert!(Instant::now() < deadline, "{}", plain.output());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(plain.connect().call(&["PING"]), b"+PONG\r\n");
}
