//! Process-wide state shared by every network thread: the configuration, the
//! keyspace behind its lock, statistics, the registry of connected clients,
//! and the shutdown path. Owns nothing that does I/O.

use crate::config::Config;
use crate::keyspace::Keyspace;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Instant;

/// Counters reported by INFO.
#[derive(Debug, Default)]
pub struct Stats {
    pub commands_processed: AtomicU64,
    pub connections_received: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub net_input_bytes: AtomicU64,
    pub net_output_bytes: AtomicU64,
    /// Calls per command, indexed like `command::table::COMMANDS`.
    pub per_command: Vec<AtomicU64>,
}

/// What other connections may see of a client (CLIENT LIST / INFO clients).
#[derive(Debug)]
pub struct ClientShared {
    pub id: u64,
    pub addr: String,
    pub laddr: String,
    pub created: Instant,
    pub db: AtomicUsize,
    pub resp: AtomicU8,
    pub last_active_ms: AtomicU64,
    pub name: Mutex<Vec<u8>>,
    pub lib_name: Mutex<Vec<u8>>,
    pub lib_ver: Mutex<Vec<u8>>,
}

impl ClientShared {
    /// One CLIENT LIST line (without the trailing newline), in Redis's layout.
    pub fn describe(&self, now_ms: u64) -> String {
        let name = lock(&self.name);
        let lib_name = lock(&self.lib_name);
        let lib_ver = lock(&self.lib_ver);
        let idle = now_ms.saturating_sub(self.last_active_ms.load(Relaxed)) / 1000;
        format!(
            "id={} addr={} laddr={} fd=-1 name={} age={} idle={} flags=N db={} sub=0 psub=0 ssub=0 multi=-1 \
             qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r \
             cmd=NULL user=default redir=-1 resp={} lib-name={} lib-ver={}",
            self.id,
            self.addr,
            self.laddr,
            String::from_utf8_lossy(&name),
            self.created.elapsed().as_secs(),
            idle,
            self.db.load(Relaxed),
            self.resp.load(Relaxed),
            String::from_utf8_lossy(&lib_name),
            String::from_utf8_lossy(&lib_ver),
        )
    }
}

/// The state shared by all threads.
pub struct Server {
    pub config: Config,
    keyspace: parking_lot::Mutex<Keyspace>,
    pub storage: crate::persistence::Storage,
    pub stats: Stats,
    pub started: Instant,
    pub started_unix_ms: u64,
    clients: Mutex<BTreeMap<u64, Arc<ClientShared>>>,
    /// Open client connections, counted at accept for `--maxclients`.
    pub connections: AtomicUsize,
    next_client_id: AtomicU64,
    /// The addresses actually listened on (filled in once bound).
    pub listening: Mutex<Vec<std::net::SocketAddr>>,
    /// Progress of the last SLURP import (INFO slurp).
    pub slurp: Mutex<crate::command::migrate::SlurpStatus>,
    /// This server's own `Arc`, for background work started by a command.
    handle: OnceLock<Weak<Server>>,
}

/// Locks a mutex, carrying on if a thread panicked while holding it (the
/// data behind our locks stays consistent between statements).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Server {
    pub fn new(config: Config, keyspace: Keyspace, storage: crate::persistence::Storage) -> Server {
        Server {
            config,
            keyspace: parking_lot::Mutex::new(keyspace),
            storage,
            stats: Stats {
                per_command: (0..crate::command::table::COMMANDS.len())
                    .map(|_| AtomicU64::new(0))
                    .collect(),
                ..Stats::default()
            },
            started: Instant::now(),
            started_unix_ms: crate::keyspace::now_ms(),
            clients: Mutex::new(BTreeMap::new()),
            connections: AtomicUsize::new(0),
            next_client_id: AtomicU64::new(1),
            listening: Mutex::new(Vec::new()),
            slurp: Mutex::new(Default::default()),
            handle: OnceLock::new(),
        }
    }

    /// Remembers the `Arc` this server lives in (see [`Server::handle`]).
    pub fn set_handle(self: &Arc<Self>) {
        let _ = self.handle.set(Arc::downgrade(self));
    }

    /// The `Arc` this server lives in, for a command that starts background
    /// work (SLURP); `None` before [`Server::set_handle`].
    pub fn handle(&self) -> Option<Arc<Server>> {
        self.handle.get().and_then(Weak::upgrade)
    }

    /// The first port actually listened on (0 before binding).
    pub fn listening_port(&self) -> u16 {
        lock(&self.listening).first().map_or(0, |a| a.port())
    }

    pub fn keyspace(&self) -> KeyspaceGuard<'_> {
        KeyspaceGuard {
            guard: std::mem::ManuallyDrop::new(self.keyspace.lock()),
            fair: false,
        }
    }

    /// Registers a new connection and returns its shared record.
    pub fn register_client(&self, addr: String, laddr: String) -> Arc<ClientShared> {
        let id = self.next_client_id.fetch_add(1, Relaxed);
        let client = Arc::new(ClientShared {
            id,
            addr,
            laddr,
            created: Instant::now(),
            db: AtomicUsize::new(0),
            resp: AtomicU8::new(2),
            last_active_ms: AtomicU64::new(crate::keyspace::now_ms()),
            name: Mutex::new(Vec::new()),
            lib_name: Mutex::new(Vec::new()),
            lib_ver: Mutex::new(Vec::new()),
        });
        lock(&self.clients).insert(id, client.clone());
        self.stats.connections_received.fetch_add(1, Relaxed);
        client
    }

    pub fn unregister_client(&self, id: u64) {
        lock(&self.clients).remove(&id);
    }

    pub fn clients(&self) -> Vec<Arc<ClientShared>> {
        lock(&self.clients).values().cloned().collect()
    }

    pub fn client_count(&self) -> usize {
        lock(&self.clients).len()
    }

    /// Stops the process: called by SHUTDOWN and by SIGTERM/SIGINT. A final
    /// checkpoint writes every change first; if it fails, the write-ahead
    /// log still holds them and the next start replays it. Must be called
    /// without holding the keyspace lock.
    pub fn shutdown(&self, reason: &str) -> ! {
        static SHUTTING_DOWN: std::sync::Once = std::sync::Once::new();
        let mut first = false;
        SHUTTING_DOWN.call_once(|| first = true);
        if !first {
            // Another thread is already shutting down; it will exit.
            loop {
                std::thread::park();
            }
        }
        tracing::info!(reason, "shutting down");
        crate::notify::stopping(reason);
        match self.storage.shutdown() {
            Ok(()) => tracing::info!("final checkpoint written"),
            Err(e) => {
                tracing::error!(error = %e, "final checkpoint failed; the write-ahead log keeps the changes");
                self.storage
                    .log
                    .wait_written(std::time::Duration::from_secs(10));
            }
        }
        std::process::exit(0)
    }
}

/// The keyspace, locked. When it is dropped, the values the cache let go of
/// while it was held are freed after the lock is released: freeing a large
/// bitmap walks hundreds of allocations, and it was more than half of the
/// time a checkpoint held the lock to publish (profiled on a W6-like run).
pub struct KeyspaceGuard<'a> {
    guard: std::mem::ManuallyDrop<parking_lot::MutexGuard<'a, Keyspace>>,
    /// Hand the lock to a waiting thread when released (`unlock_fair`).
    fair: bool,
}

impl KeyspaceGuard<'_> {
    /// Releases the lock to the thread waiting longest, if any, instead of
    /// letting this thread take it again first. Background work that takes
    /// the lock in many short steps (publishing a checkpoint) does this, or
    /// the clients it wakes at each release would find it taken again and
    /// wait through all the steps.
    pub fn unlock_fair(mut self) {
        self.fair = true;
    }
}

impl std::ops::Deref for KeyspaceGuard<'_> {
    type Target = Keyspace;
    fn deref(&self) -> &Keyspace {
        &self.guard
    }
}

impl std::ops::DerefMut for KeyspaceGuard<'_> {
    fn deref_mut(&mut self) -> &mut Keyspace {
        &mut self.guard
    }
}

impl Drop for KeyspaceGuard<'_> {
    fn drop(&mut self) {
        let released = self.guard.take_released();
        // SAFETY: the guard is taken out once, here, and `self.guard` is not
        // used again (the ManuallyDrop field is not dropped by itself).
        let guard = unsafe { std::mem::ManuallyDrop::take(&mut self.guard) };
        if self.fair {
            parking_lot::MutexGuard::unlock_fair(guard);
        } else {
            drop(guard);
        }
        drop(released);
    }
}
