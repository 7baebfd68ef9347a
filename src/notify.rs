//! systemd integration: tells the service manager when the server is ready
//! (`READY=1`, once the database is open and the sockets listen), when it is
//! stopping (`STOPPING=1`), what it is doing (`STATUS=`), pings the watchdog
//! when the unit asks for one (`WatchdogSec=`), and takes over listening
//! sockets passed by a socket unit (`LISTEN_FDS`).
//!
//! Every function here does nothing when the process was not started by
//! systemd (no `NOTIFY_SOCKET`, `WATCHDOG_USEC` or `LISTEN_PID`). Failures
//! to notify are logged, never fatal. Calls only into `server` (for the
//! watchdog's liveness check).

use crate::server::Server;
use sd_notify::NotifyState;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// `READY=1` with a status line; starts the watchdog thread if the unit
/// has `WatchdogSec=`. Call once the database is open and every listening
/// socket is bound.
pub fn ready(server: &Arc<Server>, listening: &[std::net::SocketAddr]) {
    let addrs: Vec<String> = listening.iter().map(|a| a.to_string()).collect();
    let status = format!("listening on {}", addrs.join(", "));
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
    if let Some(interval) = sd_notify::watchdog_enabled() {
        spawn_watchdog(server.clone(), interval);
    }
}

/// `STOPPING=1`: the final checkpoint is being written.
pub fn stopping(reason: &str) {
    let status = format!("stopping ({reason}): writing the final checkpoint");
    send(&[NotifyState::Stopping, NotifyState::Status(&status)]);
}

/// `STATUS=...`, shown by `systemctl status`.
pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

/// Pings the watchdog at half its interval, each time after taking (and
/// at once releasing) the keyspace lock, which every command takes: a
/// server wedged on that lock stops pinging and systemd restarts it.
fn spawn_watchdog(server: Arc<Server>, interval: Duration) {
    let period = (interval / 2).max(Duration::from_millis(100));
    let started = std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || loop {
            drop(server.keyspace());
            send(&[NotifyState::Watchdog]);
            std::thread::sleep(period);
        });
    match started {
        Ok(_) => tracing::debug!(
            interval_ms = interval.as_millis() as u64,
            "watchdog enabled"
        ),
        Err(e) => tracing::error!(error = %e, "cannot start the watchdog thread"),
    }
}

/// The TCP listening sockets passed by systemd socket activation
/// (`LISTEN_PID` is this process), each duplicated once per network thread;
/// `None` when none were passed. The descriptors are taken at most once per
/// process. A passed descriptor that is not a listening TCP socket is an
/// error (the socket unit must use `ListenStream=` with an IP address).
pub fn inherited_listeners(threads: usize) -> std::io::Result<Option<Vec<Vec<TcpListener>>>> {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    let fds: Vec<RawFd> = sd_notify::listen_fds()?.collect();
    if fds.is_empty() || TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(None);
    }
    let mut firsts = Vec::with_capacity(fds.len());
    for fd in fds {
        check_tcp_listener(fd)?;
        // SAFETY: systemd passed this descriptor to this process (LISTEN_PID
        // matched), it was checked above to be an open listening TCP socket,
        // and TAKEN makes sure nothing else takes ownership of it.
        firsts.push(unsafe { TcpListener::from_raw_fd(fd) });
    }
    let threads = threads.max(1);
    let mut per_thread = Vec::with_capacity(threads);
    for _ in 1..threads {
        per_thread.push(
            firsts
                .iter()
                .map(TcpListener::try_clone)
                .collect::<std::io::Result<Vec<_>>>()?,
        );
    }
    let addrs: Vec<String> = firsts
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .collect();
    tracing::info!(sockets = %addrs.join(", "), "using the sockets passed by systemd; -addr is not used");
    per_thread.insert(0, firsts);
    Ok(Some(per_thread))
}

fn check_tcp_listener(fd: RawFd) -> std::io::Result<()> {
    use nix::sys::socket::{
        getsockname, getsockopt, sockopt, AddressFamily, SockType, SockaddrLike, SockaddrStorage,
    };
    // SAFETY: only borrowed for the duration of these calls; the descriptor
    // stays open (it is owned by this process, passed by systemd).
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let bad = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("descriptor {fd} passed by systemd is {what}; use ListenStream=ADDRESS:PORT"),
        )
    };
    let stream = getsockopt(&borrowed, sockopt::SockType).map_err(|_| bad("not a socket"))?;
    if stream != SockType::Stream {
        return Err(bad("not a stream socket"));
    }
    if !getsockopt(&borrowed, sockopt::AcceptConn).map_err(std::io::Error::from)? {
        return Err(bad("not listening"));
    }
    let addr: SockaddrStorage = getsockname(fd).map_err(std::io::Error::from)?;
    match addr.family() {
        Some(AddressFamily::Inet | AddressFamily::Inet6) => Ok(()),
        _ => Err(bad("not a TCP (IPv4/IPv6) socket")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_tcp_socket_passes_the_check() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        check_tcp_listener(std::os::fd::AsRawFd::as_raw_fd(&l)).unwrap();
    }

    #[test]
    fn other_descriptors_are_refused_with_the_fix() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let e = check_tcp_listener(std::os::fd::AsRawFd::as_raw_fd(&a)).unwrap_err();
        assert!(e.to_string().contains("ListenStream"), "{e}");
        let f = std::fs::File::open("/dev/null").unwrap();
        let e = check_tcp_listener(std::os::fd::AsRawFd::as_raw_fd(&f)).unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
    }

    #[test]
    fn without_systemd_nothing_happens() {
        // No NOTIFY_SOCKET / LISTEN_PID in the test environment.
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            status("test");
            stopping("test");
        }
        if std::env::var_os("LISTEN_PID").is_none() {
            assert!(inherited_listeners(2).unwrap().is_none());
        }
    }
}
