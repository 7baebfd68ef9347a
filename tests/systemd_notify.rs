//! The server's side of systemd, against the binary: READY=1 (with a
//! STATUS naming the bound address) once it listens, WATCHDOG=1 pings when
//! WATCHDOG_USEC asks for them, STOPPING=1 on SIGTERM, and socket
//! activation (a listener passed as fd 3 with LISTEN_FDS/LISTEN_PID).
//! The packaging test (tests/packaging/run.sh) checks the same under a
//! real systemd.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_bitmapist-server");

fn notify_socket(dir: &Path) -> UnixDatagram {
    let sock = UnixDatagram::bind(dir.join("notify.sock")).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    sock
}

/// Receives datagrams until one contains `what`; returns that one.
fn expect_message(sock: &UnixDatagram, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) => panic!("no {what:?} from the server ({e}); got {seen:?}"),
        };
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if msg.lines().any(|l| l == what) {
            return msg;
        }
        seen.push(msg);
    }
    panic!("no {what:?} from the server; got {seen:?}");
}

fn ping(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"PING\r\n").unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn stop(mut child: Child) {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn ready_watchdog_and_stopping_are_sent() {
    let dir = tempfile::tempdir().unwrap();
    let sock = notify_socket(dir.path());
    let child = Command::new(BIN)
        .args([
            "-addr",
            "127.0.0.1:0",
            "--threads",
            "1",
            "--log-level",
            "warn",
        ])
        .arg("-db")
        .arg(dir.path().join("t.db"))
        .env("NOTIFY_SOCKET", dir.path().join("notify.sock"))
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let ready = expect_message(&sock, "READY=1");
    let status = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS=listening on 127.0.0.1:"))
        .unwrap_or_else(|| panic!("READY without the address in STATUS: {ready:?}"));
    let port: u16 = status.trim().parse().unwrap();
    // It listens by the time it says it is ready.
    assert_eq!(ping(port), "+PONG\r\n");
    expect_message(&sock, "WATCHDOG=1");
    expect_message(&sock, "WATCHDOG=1");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let stopping = expect_message(&sock, "STOPPING=1");
    assert!(
        stopping.contains("STATUS=stopping (SIGTERM)"),
        "{stopping:?}"
    );
    stop(child);
}

#[test]
fn a_socket_passed_by_systemd_is_served_and_addr_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("/bin/sh");
    // LISTEN_PID must be the server's own pid: the shell's, kept by exec.
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"")
        .arg(BIN)
        // An address that cannot be bound: it must not be used.
        .args([
            "-addr",
            "192.0.2.1:1",
            "--threads",
            "2",
            "--log-level",
            "warn",
        ])
        .arg("-db")
        .arg(dir.path().join("t.db"))
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDNAMES")
        .stdin(Stdio::null());
    // SAFETY: dup2 is async-signal-safe; the listener stays open in the
    // parent until the child has exec'd (spawn waits for that).
    unsafe {
        cmd.pre_exec(move || {
            if fd != 3 && nix::libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if fd == 3 {
                nix::libc::fcntl(3, nix::libc::F_SETFD, 0);
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(listener);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Connections queue on the passed socket until the server accepts.
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => panic!("cannot connect: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    assert_eq!(ping(port), "+PONG\r\n");
    assert_eq!(ping(port), "+PONG\r\n");
    stop(child);
}
