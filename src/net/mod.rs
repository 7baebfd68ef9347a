//! Networking: binds the listening sockets (one per thread and address, with
//! SO_REUSEPORT so the kernel spreads connections, after checking that no
//! other process listens there), probes io_uring, and
//! runs one tokio-uring runtime per thread, each accepting and serving its
//! own connections. Network threads never write files.

mod connection;

use crate::config::Config;
use crate::server::{lock, Server};
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Why the server could not start serving.
#[derive(Debug)]
pub enum StartError {
    /// io_uring cannot be used; the text names the cause and the fix.
    IoUring(String),
    Resolve(String, std::io::Error),
    Bind(SocketAddr, std::io::Error),
    Thread(std::io::Error),
    /// The sockets passed by systemd (LISTEN_FDS) cannot be used.
    Activation(std::io::Error),
    /// Protected mode: a non-loopback address without a password.
    Protected(SocketAddr),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::IoUring(msg) => f.write_str(msg),
            StartError::Resolve(addr, e) => {
                write!(f, "cannot resolve listen address {addr:?}: {e}")
            }
            StartError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            StartError::Thread(e) => write!(f, "cannot start a network thread: {e}"),
            StartError::Protected(addr) => write!(
                f,
                "refusing to listen on {addr} without a password (protected mode): it is not a \
                 loopback address, so anyone who can reach it could read and change every key; \
                 set a password with --requirepass-file (or --requirepass), or, on a trusted \
                 network, pass --protected-mode no"
            ),
            StartError::Activation(e) => {
                write!(
                    f,
                    "cannot use the sockets passed by systemd (LISTEN_FDS): {e}"
                )
            }
        }
    }
}

/// Checks that this process may create an io_uring, and if not, explains
/// why in one line.
pub fn probe_io_uring() -> Result<(), StartError> {
    let err = match io_uring::IoUring::new(4) {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| s != "0");
    let msg = match (err.raw_os_error(), disabled) {
        (Some(libc_eperm), Some(level)) if libc_eperm == nix::libc::EPERM => format!(
            "io_uring is disabled on this host (sysctl kernel.io_uring_disabled={level}); \
             enable it with `sysctl -w kernel.io_uring_disabled=0`"
        ),
        (Some(e), None) if e == nix::libc::EPERM => String::from(
            "io_uring is blocked (EPERM), most likely by a seccomp filter such as Docker's default profile; \
             run with a profile that allows io_uring_setup/io_uring_enter (e.g. docker --security-opt seccomp=unconfined)",
        ),
        (Some(e), _) if e == nix::libc::ENOSYS => String::from(
            "io_uring is not available: this kernel lacks it (ENOSYS); Linux 5.11 or newer with CONFIG_IO_URING is required",
        ),
        (Some(e), _) if e == nix::libc::ENOMEM => String::from(
            "io_uring could not allocate its rings (ENOMEM): raise the locked-memory limit (ulimit -l / LimitMEMLOCK=)",
        ),
        _ => format!("io_uring is not available: {err}"),
    };
    Err(StartError::IoUring(msg))
}

/// Whether `addr` can only be reached from this host.
fn is_loopback(addr: &SocketAddr) -> bool {
    match addr.ip() {
        std::net::IpAddr::V4(ip) => ip.is_loopback(),
        std::net::IpAddr::V6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Protected mode: refuses any non-loopback address while no password is set.
fn check_addresses(config: &Config, addrs: &[SocketAddr]) -> Result<(), StartError> {
    if !config.protected() {
        return Ok(());
    }
    match addrs.iter().find(|a| !is_loopback(a)) {
        Some(a) => Err(StartError::Protected(*a)),
        None => Ok(()),
    }
}

/// Checks `--addr` against protected mode before anything is opened (the
/// sockets passed by systemd are checked once received).
pub fn check_protected(config: &Config) -> Result<(), StartError> {
    if !config.protected() || std::env::var_os("LISTEN_FDS").is_some() {
        return Ok(());
    }
    check_addresses(config, &resolve(&config.addr)?)
}

/// Resolves `host:port` into the addresses to listen on.
pub fn resolve(addr: &str) -> Result<Vec<SocketAddr>, StartError> {
    let mut addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| StartError::Resolve(addr.to_string(), e))?
        .collect();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(StartError::Resolve(
            addr.to_string(),
            std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
        ));
    }
    Ok(addrs)
}

/// A listening socket with SO_REUSEPORT set, so several threads can each
/// listen on the same address (the kernel spreads connections evenly by
/// their addresses).
fn reuseport_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let fd = bound_socket(addr, true)?;
    socket::listen(
        &fd,
        socket::Backlog::new(1024).unwrap_or(socket::Backlog::MAXCONN),
    )?;
    // SAFETY: the descriptor is a freshly created, owned, listening TCP socket.
    Ok(unsafe { TcpListener::from_raw_fd(fd.into_raw_fd()) })
}

/// How long a port in use is retried: a server that has just exited (or was
/// killed) keeps its listening socket for some milliseconds more, while the
/// kernel tears down its io_uring (measured: 7 to 10 ms).
const PORT_IN_USE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Fails when something already listens on `addr`. SO_REUSEPORT alone would
/// let a second server (another database, say) join this one's port and
/// silently take half its connections; a bind without it fails instead, as
/// a second redis-server's does. The probe only binds (were it to listen, a
/// client connecting that instant would leave a connection on the port) and
/// is closed before the real sockets bind (a start at the same instant could
/// still slip between).
fn check_port_free(addr: SocketAddr) -> std::io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let started = std::time::Instant::now();
    loop {
        match bound_socket(addr, false) {
            Ok(_) => return Ok(()),
            Err(e)
                if e.raw_os_error() == Some(libc::EADDRINUSE)
                    && started.elapsed() < PORT_IN_USE_RETRY =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
}

fn bound_socket(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::os::fd::OwnedFd> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if reuse_port {
        socket::setsockopt(&fd, sockopt::ReusePort, &true)?;
    }
    if addr.is_ipv6() {
        socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(addr),
    )?;
    Ok(fd)
}

/// Binds every address once per thread. A port of 0 is resolved by the first
/// socket and reused by the others.
fn bind_all(addrs: &[SocketAddr], threads: usize) -> Result<Vec<Vec<TcpListener>>, StartError> {
    let mut per_thread: Vec<Vec<TcpListener>> = (0..threads).map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    for (i, &requested) in addrs.iter().enumerate() {
        let first = match check_port_free(requested).and_then(|()| reuseport_listener(requested)) {
            Ok(l) => l,
            // A second address of a name (say ::1 for localhost on a host
            // without IPv6) is optional; the first one is not.
            Err(e) if i > 0 => {
                tracing::warn!(address = %requested, error = %e, "skipping an address that cannot be bound");
                continue;
            }
            Err(e) => return Err(StartError::Bind(requested, e)),
        };
        let actual = first
            .local_addr()
            .map_err(|e| StartError::Bind(requested, e))?;
        per_thread[0].push(first);
        for listeners in per_thread.iter_mut().skip(1) {
            listeners.push(reuseport_listener(actual).map_err(|e| StartError::Bind(actual, e))?);
        }
        bound.push(actual);
    }
    tracing::debug!(?bound, "bound");
    Ok(per_thread)
}

/// Descriptors kept for the database, the log, listeners and io_uring,
/// besides one per client (as Redis's CONFIG_MIN_RESERVED_FDS).
const RESERVED_FDS: u64 = 64;

/// Raises the soft limit on open files to what `--maxclients` needs, up to
/// the hard limit, and says so when the hard limit is lower (Redis does the
/// same); beyond the limit a client is refused at accept, not crashed into.
fn raise_open_file_limit(maxclients: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let want = maxclients as u64 + RESERVED_FDS;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft >= want {
        return;
    }
    let new = want.min(hard);
    if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, new, hard) {
        tracing::warn!(error = %e, soft, "cannot raise the open file limit");
        return;
    }
    if new < want {
        tracing::warn!(
            limit = new,
            maxclients,
            "the open file limit (hard limit {hard}) allows fewer clients than --maxclients; raise it (LimitNOFILE= in the unit, ulimit -n)"
        );
    } else {
        tracing::info!(
            from = soft,
            to = new,
            "raised the open file limit for --maxclients"
        );
    }
}

/// Binds, starts the network threads and blocks until they end (they end
/// only when the process exits).
pub fn serve(server: Arc<Server>) -> Result<(), StartError> {
    probe_io_uring()?;
    raise_open_file_limit(server.config.maxclients);
    let threads = server.config.thread_count();
    // Sockets passed by a systemd socket unit replace binding -addr.
    let listeners = match crate::notify::inherited_listeners(threads) {
        Ok(Some(inherited)) => inherited,
        Ok(None) => bind_all(&resolve(&server.config.addr)?, threads)?,
        Err(e) => return Err(StartError::Activation(e)),
    };
    if let Some(first) = listeners.first() {
        let bound: Vec<SocketAddr> = first.iter().filter_map(|l| l.local_addr().ok()).collect();
        check_addresses(&server.config, &bound)?;
    }
    {
        let mut listening = lock(&server.listening);
        for l in &listeners[0] {
            if let Ok(a) = l.local_addr() {
                listening.push(a);
            }
        }
        crate::notify::ready(&server, &listening);
    }
    let mut handles = Vec::new();
    for (i, thread_listeners) in listeners.into_iter().enumerate() {
        let server = server.clone();
        let handle = std::thread::Builder::new()
            .name(format!("net-{i}"))
            .spawn(move || run_thread(server, thread_listeners))
            .map_err(StartError::Thread)?;
        handles.push(handle);
    }
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(StartError::Thread(std::io::Error::other(
                    "a network thread panicked",
                )))
            }
        }
    }
    Ok(())
}

fn run_thread(server: Arc<Server>, listeners: Vec<TcpListener>) -> Result<(), StartError> {
    let runtime = network_runtime()
        .map_err(|e| StartError::IoUring(format!("cannot create an io_uring runtime: {e}")))?;
    runtime.block_on(async move {
        let mut accepting = Vec::new();
        for listener in listeners {
            let listener = tokio_uring::net::TcpListener::from_std(listener);
            accepting.push(tokio_uring::spawn(accept_loop(server.clone(), listener)));
        }
        if server.config.timeout > 0 {
            tokio_uring::spawn(connection::close_idle_clients(server.clone()));
        }
        for task in accepting {
            let _ = task.await;
        }
    });
    Ok(())
}

/// The io_uring runtime of one network thread. Completions are run
/// cooperatively (IORING_SETUP_COOP_TASKRUN, Linux 5.19): the kernel finishes
/// a socket read at this thread's next system call instead of interrupting it
/// with an inter-processor interrupt the moment data arrives, which under load
/// also spun on the socket lock the receiving core still held. Older kernels
/// get the default setup.
fn network_runtime() -> std::io::Result<tokio_uring::Runtime> {
    let mut ring = tokio_uring::uring_builder();
    ring.setup_coop_taskrun();
    match tokio_uring::Runtime::new(tokio_uring::builder().uring_builder(&ring)) {
        Ok(runtime) => Ok(runtime),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            tracing::debug!("io_uring without cooperative task running (kernel before 5.19)");
            tokio_uring::Runtime::new(&tokio_uring::builder())
        }
        Err(e) => Err(e),
    }
}

async fn accept_loop(server: Arc<Server>, listener: tokio_uring::net::TcpListener) {
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    loop {
        // The accept is always awaited to completion: never cancelled.
        match listener.accept().await {
            Ok((stream, peer)) => {
                let server = server.clone();
                // Reserve a place among --maxclients, across all threads.
                let before = server.connections.fetch_add(1, Relaxed);
                if before >= server.config.maxclients {
                    server.connections.fetch_sub(1, Relaxed);
                    server.stats.rejected_connections.fetch_add(1, Relaxed);
                    tracing::warn!(%peer, maxclients = server.config.maxclients, "refusing a client: max number of clients reached");
                    tokio_uring::spawn(async move {
                        let _ = stream.set_nodelay(true);
                        let (_, _) = stream
                            .write_all(b"-ERR max number of clients reached\r\n".to_vec())
                            .await;
                        let _ = stream.shutdown(std::net::Shutdown::Both);
                    });
                    continue;
                }
                let local = local.clone();
                tokio_uring::spawn(async move {
                    connection::serve(server.clone(), stream, peer, local).await;
                    server.connections.fetch_sub(1, Relaxed);
                });
            }
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}
