//! Durability: opening the database at start-up (lock, meta, replay of the
//! write-ahead log through the command layer), the two storage threads —
//! the log writer and the checkpointer, each the only writer of its files —
//! and the checkpoint itself (freeze the overlay, serialize it outside the
//! keyspace lock, write pages, commit the meta, publish, drop old log
//! segments). SAVE, BGSAVE, shutdown and the automatic triggers (interval,
//! log size, dirty bytes) all come here.

use crate::background::{self, at_background_priority};
use crate::command::{self, Ctx, Session};
use crate::config::Config;
use crate::keyspace::{BitString, Keyspace, Layer, Slot, Value, WrittenValue};
use crate::resp::ReplyBuf;
use crate::server::{lock, Server};
use crate::storage::btree::{self, dir_key, Payload};
use crate::storage::io::UringFile;
use crate::storage::log::{FsyncPolicy, Log};
use crate::storage::pagefile::{self, encode_payload, Committed, MapFile, NewValue, PageFile};
use crate::storage::wal;
use crate::storage::StorageError;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the checkpointer is asked to do.
pub enum Request {
    /// Checkpoint now; answer when done (SAVE).
    Save(Sender<Result<(), String>>),
    /// Checkpoint soon; nobody waits (BGSAVE).
    Background,
    /// Checkpoint soon: changed data reached half the cache budget.
    DirtyData,
    /// Final checkpoint, then stop; answer when done.
    Shutdown(Sender<Result<(), String>>),
    /// Checkpoint, then copy the database to the backup path (SIGUSR1).
    Backup,
}

/// Figures INFO reports.
#[derive(Clone, Debug, Default)]
pub struct PersistStats {
    pub checkpoints: u64,
    pub last_checkpoint_unix_ms: u64,
    pub last_checkpoint_ms: u64,
    pub last_checkpoint_error: Option<String>,
    pub db_pages: u64,
    pub free_pages: u64,
    pub wal_replayed_records: u64,
    /// Commands in the records replayed at start-up.
    pub wal_replayed_commands: u64,
    pub backups: u64,
    pub backup_running: bool,
    pub last_backup_unix_ms: u64,
    pub last_backup_ms: u64,
    pub last_backup_bytes: u64,
    pub last_backup_error: Option<String>,
}

/// The server's handle on durability.
pub struct Storage {
    pub log: Arc<Log>,
    pub requests: Mutex<Sender<Request>>,
    pub stats: Mutex<PersistStats>,
    pub db_path: PathBuf,
    pub write_hold: WriteHold,
}

/// Keeps changed data within the cache budget when writes arrive faster
/// than checkpoints write them out (the checkpointer runs at idle priority,
/// so under a full load of new keys it falls behind). Once changed keys hold
/// half the budget, the first write of a network batch asks for a
/// checkpoint at once (instead of at the checkpointer's next look, up to a
/// second later); past the whole budget, network clients' write commands
/// wait until a checkpoint takes the changes (begins) or ends, and look
/// again. They do not wait while less than a quarter of the budget changed
/// since the running checkpoint began: waiting cannot shrink what that
/// checkpoint writes, so after a burst of changes larger than the budget
/// (SETBIT on every key of a large dataset) writes wait for its checkpoint
/// to begin, not to end, and go on until they add a quarter of the budget
/// of their own. Changed data then peaks at what the running checkpoint
/// writes plus a quarter of the budget. Reads never wait, and nothing waits
/// after a failed checkpoint (writes then answer for themselves, with
/// MISCONF where the log cannot be written). It is also the one record of
/// whether a checkpoint runs (INFO, the allocator trims).
pub struct WriteHold {
    /// Changed bytes (`Keyspace::dirty_bytes`) above which writes wait (the
    /// cache budget).
    limit: usize,
    running: AtomicBool,
    /// A checkpoint was asked for and has not started yet.
    asked: AtomicBool,
    /// The last checkpoint failed.
    failing: AtomicBool,
    /// Counts checkpoints that began (took the changes made so far) and
    /// checkpoint attempts that ended, successful or not: what waiting
    /// writes wait for.
    progress: tokio::sync::watch::Sender<u64>,
    /// Times a client's write waited.
    pub holds: AtomicU64,
}

impl WriteHold {
    pub fn new(limit: usize) -> WriteHold {
        WriteHold {
            limit,
            running: AtomicBool::new(false),
            asked: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            progress: tokio::sync::watch::Sender::new(0),
            holds: AtomicU64::new(0),
        }
    }

    /// Whether a checkpoint runs.
    pub fn checkpoint_running(&self) -> bool {
        self.running.load(Acquire)
    }

    /// Waits until a checkpoint begins or ends, after the `seen`-th time
    /// one did.
    pub async fn wait(&self, seen: u64) {
        self.holds.fetch_add(1, Relaxed);
        let mut progress = self.progress.subscribe();
        let _ = progress.wait_for(|n| *n > seen).await;
    }

    fn started(&self) {
        self.asked.store(false, Release);
        self.running.store(true, Release);
    }

    /// The running checkpoint took the changes made so far (called right
    /// after `Keyspace::freeze`, under the keyspace lock).
    fn froze(&self) {
        self.progress.send_modify(|n| *n += 1);
    }

    fn ended(&self, ok: bool) {
        self.failing.store(!ok, Release);
        self.running.store(false, Release);
        self.progress.send_modify(|n| *n += 1);
    }
}

impl Storage {
    fn send(&self, r: Request) -> bool {
        lock(&self.requests).send(r).is_ok()
    }

    /// Called (under the keyspace lock) before the first write of a
    /// network batch, with the changed bytes (`Keyspace::dirty_bytes`) and
    /// those changed since the running checkpoint began
    /// (`Keyspace::changed_bytes`): asks for a checkpoint once the changed
    /// bytes reach half the budget, and returns `Some(n)` when the write must
    /// wait until a checkpoint begins or ends, after the `n`-th time one did
    /// (see [`WriteHold`]).
    pub fn before_write(&self, dirty: usize, changed: usize) -> Option<u64> {
        let hold = &self.write_hold;
        if dirty < hold.limit / 2 {
            return None;
        }
        if !hold.checkpoint_running() && !hold.asked.swap(true, AcqRel) {
            self.send(Request::DirtyData);
        }
        (dirty > hold.limit && changed > hold.limit / 4 && !hold.failing.load(Acquire))
            .then(|| *hold.progress.borrow())
    }

    /// Runs a checkpoint and waits for it (SAVE). Call without holding the
    /// keyspace lock.
    pub fn save(&self) -> Result<(), String> {
        let (tx, rx) = mpsc::channel();
        if !self.send(Request::Save(tx)) {
            return Err(String::from("the checkpointer is not running"));
        }
        rx.recv()
            .unwrap_or_else(|_| Err(String::from("the checkpointer stopped")))
    }

    pub fn background_save(&self) -> bool {
        self.send(Request::Background)
    }

    /// Asks for a backup to the configured `-bak` path (SIGUSR1).
    pub fn request_backup(&self) -> bool {
        self.send(Request::Backup)
    }

    /// Final checkpoint before exit; waits for it.
    pub fn shutdown(&self) -> Result<(), String> {
        let (tx, rx) = mpsc::channel();
        if !self.send(Request::Shutdown(tx)) {
            return Err(String::from("the checkpointer is not running"));
        }
        rx.recv()
            .unwrap_or_else(|_| Err(String::from("the checkpointer stopped")))
    }
}

/// Why the database could not be opened.
#[derive(Debug)]
pub enum OpenError {
    Storage(StorageError),
    Log(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Storage(e) => write!(f, "{e}"),
            OpenError::Log(e) => write!(f, "{e}"),
        }
    }
}

impl From<StorageError> for OpenError {
    fn from(e: StorageError) -> Self {
        OpenError::Storage(e)
    }
}

/// Tuning of checkpoints and the cache, from the command line.
#[derive(Clone, Debug)]
pub struct Tuning {
    pub cache_bytes: usize,
    pub fsync: FsyncPolicy,
    pub checkpoint_interval: Duration,
    pub checkpoint_log_bytes: u64,
}

impl Tuning {
    pub fn from_config(config: &Config) -> Result<Tuning, String> {
        Ok(Tuning {
            cache_bytes: crate::config::parse_size(&config.cache_size)
                .map_err(|e| format!("--cache-size: {e}"))? as usize,
            fsync: config.fsync.parse().map_err(|e| format!("--fsync: {e}"))?,
            checkpoint_interval: Duration::from_secs(config.checkpoint_interval.max(1)),
            checkpoint_log_bytes: crate::config::parse_size(&config.checkpoint_log_size)
                .map_err(|e| format!("--checkpoint-log-size: {e}"))?,
        })
    }
}

/// Opens the database, replays its log, and starts the storage threads.
pub fn open(config: Config) -> Result<Arc<Server>, OpenError> {
    let tuning = Tuning::from_config(&config).map_err(OpenError::Log)?;
    let started = Instant::now();
    let path = config.db.clone();
    let (file, committed) = PageFile::open(&path)?;
    let meta = committed.meta.clone();
    let keyspace = Keyspace::new(Arc::new(committed), tuning.cache_bytes);

    // Segments the committed state already includes are leftovers.
    let segments = wal::list_segments(&path)
        .map_err(|e| OpenError::Log(format!("listing log segments: {e}")))?;
    let (old, live): (Vec<_>, Vec<_>) = segments
        .into_iter()
        .partition(|(seq, _)| *seq < meta.wal_seq);
    for (_, p) in &old {
        if let Err(e) = std::fs::remove_file(p) {
            tracing::warn!(path = %p.display(), error = %e, "cannot remove an old log segment");
        }
    }

    // The log continues the committed state without a gap: segment
    // `wal_seq` first (when any), then each next one, as the writer creates
    // them. A gap means segments of another state, such as a backup restored
    // next to the log of the database it replaced: replaying them would
    // apply writes whose predecessors are missing.
    for (expected, (seq, seg_path)) in (meta.wal_seq..).zip(&live) {
        if *seq != expected {
            return Err(OpenError::Log(format!(
                "log segment {} does not continue the database (it expects segment {expected} \
                 next): the segments beside it belong to another state of the database, for \
                 example a newer one a restored backup replaced. Move {} and every later \
                 segment aside to start from the database file alone",
                seg_path.display(),
                seg_path.display()
            )));
        }
    }

    // The log starts out idle; replay does not append to it.
    let last = live.last().map(|(seq, _)| *seq);
    let (tx, rx) = mpsc::channel();
    let log = Arc::new(Log::new(tuning.fsync, last.unwrap_or(meta.wal_seq), 0));
    let storage = Storage {
        log: log.clone(),
        requests: Mutex::new(tx),
        stats: Mutex::new(PersistStats {
            last_checkpoint_unix_ms: meta.committed_at_ms,
            db_pages: meta.page_count,
            ..PersistStats::default()
        }),
        db_path: path.clone(),
        write_hold: WriteHold::new(tuning.cache_bytes),
    };
    let server = Arc::new(Server::new(config, keyspace, storage));
    server.set_handle();

    let mut replayed = 0u64;
    let mut replayed_commands = 0u64;
    let mut tail: Option<(u64, u64)> = None;
    for (i, (seq, seg_path)) in live.iter().enumerate() {
        let stats = replay_segment(&server, seg_path, *seq)?;
        replayed += stats.records;
        replayed_commands += stats.commands;
        tail = Some((*seq, stats.valid_len));
        // Every segment but the last was synced whole before the next one
        // began, so damage there is corruption, not a crash: replaying the
        // later segments without the lost records would give a state that
        // never existed. Refuse, as Redis refuses an AOF damaged mid-file.
        if let (Some(damage), Some((next, _))) = (&stats.damage, live.get(i + 1)) {
            return Err(OpenError::Log(format!(
                "log segment {} is damaged at byte {} ({damage}) and later segments (from {next}) follow it; refusing to replay around the gap. Keep a copy of the segments, then move {} and every later segment aside to start without their writes",
                seg_path.display(),
                stats.valid_len,
                seg_path.display()
            )));
        }
    }
    let writer = match tail {
        Some((seq, valid_len)) => wal::open_segment(&path, seq, valid_len)
            .map_err(|e| OpenError::Log(format!("opening log segment {seq}: {e}")))?,
        None => wal::create_segment(&path, meta.wal_seq)
            .map_err(|e| OpenError::Log(format!("creating log segment {}: {e}", meta.wal_seq)))?,
    };
    let next_seq = writer.seq() + 1;
    {
        let mut stats = lock(&server.storage.stats);
        stats.wal_replayed_records = replayed;
        stats.wal_replayed_commands = replayed_commands;
    }
    tracing::info!(
        database = %path.display(),
        txid = meta.txid,
        keys = server.keyspace().total_keys(),
        replayed_records = replayed,
        replayed_commands,
        ms = started.elapsed().as_millis() as u64,
        "database open"
    );

    let writer_log = log.clone();
    let writer_path = path.clone();
    std::thread::Builder::new()
        .name("wal-writer".into())
        .spawn(move || writer_log.run_writer(writer_path, writer))
        .map_err(|e| OpenError::Log(format!("starting the log writer: {e}")))?;
    let checkpointer = Checkpointer {
        server: server.clone(),
        file,
        next_seq,
        tuning,
        last: Instant::now(),
        stopped: false,
    };
    // Probed (and logged) at start-up rather than at the first checkpoint.
    background::probe();
    std::thread::Builder::new()
        .name("checkpointer".into())
        .spawn(move || checkpointer.run(rx))
        .map_err(|e| OpenError::Log(format!("starting the checkpointer: {e}")))?;
    Ok(server)
}

/// Keys whose cache entries a checkpoint forgets per hold of the keyspace
/// lock while publishing (about a quarter of a millisecond's work).
const PUBLISH_KEYS_PER_LOCK: usize = 256;
/// How long a checkpoint caches the values it wrote, or evicts what they
/// pushed over the cache's budget, per hold of the lock. Every client
/// request that arrives meanwhile waits for it: with 1 ms the holds were
/// the largest part of W6's p99 during checkpoints.
const PUBLISH_CACHE_TIME: Duration = Duration::from_micros(200);

/// What replaying one segment found.
struct Replayed {
    records: u64,
    /// Commands in those records (a record holds a pipelined batch's writes).
    commands: u64,
    /// Bytes up to the end of the last good record.
    valid_len: u64,
    /// Why the segment ends before its file does.
    damage: Option<String>,
}

/// Replays one segment.
fn replay_segment(server: &Server, path: &Path, seq: u64) -> Result<Replayed, OpenError> {
    let client = server.register_client(String::from("log-replay"), String::new());
    let mut session = Session::new(client.clone());
    let mut out = ReplyBuf::new();
    let started = Instant::now();
    let mut ctx = Ctx::new(server, &mut session, &mut out);
    let mut commands = 0u64;
    let stats = wal::replay_segment(path, seq, |payload| -> Result<(), String> {
        commands += u64::from(command::replay_record(&mut ctx, payload)?);
        Ok(())
    });
    drop(ctx);
    server.unregister_client(client.id);
    let stats = match stats {
        Ok(s) => s,
        Err(e) if e.is_incomplete_header() => {
            // A crash while the segment was being created: it holds nothing.
            tracing::warn!(path = %path.display(), "removing a log segment whose header was never completed");
            std::fs::remove_file(path)
                .map_err(|e| OpenError::Log(format!("removing {}: {e}", path.display())))?;
            let w = wal::create_segment(&server.storage.db_path, seq)
                .map_err(|e| OpenError::Log(format!("recreating log segment {seq}: {e}")))?;
            return Ok(Replayed {
                records: 0,
                commands: 0,
                valid_len: w.len(),
                damage: None,
            });
        }
        Err(e) => {
            return Err(OpenError::Log(format!(
                "replaying the write-ahead log: {e}"
            )))
        }
    };
    if let Some(damage) = &stats.damage {
        tracing::warn!(
            path = %path.display(),
            discarded_bytes = stats.discarded_bytes,
            reason = %damage,
            "the log ends in a torn or damaged record; it is cut there"
        );
    }
    if stats.records > 0 {
        tracing::info!(
            path = %path.display(),
            records = stats.records,
            commands,
            ms = started.elapsed().as_millis() as u64,
            "replayed the write-ahead log"
        );
    }
    Ok(Replayed {
        records: stats.records,
        commands,
        valid_len: stats.valid_len,
        damage: stats.damage.as_ref().map(ToString::to_string),
    })
}

struct Checkpointer {
    server: Arc<Server>,
    file: PageFile<UringFile>,
    next_seq: u64,
    tuning: Tuning,
    last: Instant,
    stopped: bool,
}

impl Checkpointer {
    fn run(mut self, requests: Receiver<Request>) {
        loop {
            let request = match requests.recv_timeout(Duration::from_secs(1)) {
                Ok(r) => Some(r),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            match request {
                Some(Request::Save(reply)) => {
                    let r = self.checkpoint("SAVE");
                    let _ = reply.send(r);
                }
                Some(Request::Background) => {
                    let _ = self.checkpoint("BGSAVE");
                }
                Some(Request::DirtyData) => {
                    let _ = self.checkpoint("dirty data");
                }
                Some(Request::Backup) => {
                    // Signals that arrived meanwhile are served by this backup.
                    let mut later = Vec::new();
                    while let Ok(r) = requests.try_recv() {
                        if !matches!(r, Request::Backup) {
                            later.push(r);
                        }
                    }
                    self.backup();
                    for r in later {
                        self.handle_queued(r);
                        if self.stopped {
                            return;
                        }
                    }
                }
                Some(Request::Shutdown(reply)) => {
                    let r = self.checkpoint("shutdown");
                    self.stop_log();
                    let _ = reply.send(r);
                    return;
                }
                None => {
                    if let Some(reason) = self.due() {
                        let _ = self.checkpoint(reason);
                    }
                }
            }
        }
    }

    /// Stops the log writer after the final checkpoint and waits for it, so
    /// the segment that checkpoint started exists when the process exits.
    fn stop_log(&self) {
        if !self.server.storage.log.stop(Duration::from_secs(10)) {
            tracing::warn!("the log writer did not stop within 10 s");
        }
    }

    /// A request that waited behind a backup.
    fn handle_queued(&mut self, r: Request) {
        match r {
            Request::Save(reply) => {
                let _ = reply.send(self.checkpoint("SAVE"));
            }
            Request::Background => {
                let _ = self.checkpoint("BGSAVE");
            }
            Request::DirtyData => {
                let _ = self.checkpoint("dirty data");
            }
            Request::Shutdown(reply) => {
                let r = self.checkpoint("shutdown");
                self.stop_log();
                let _ = reply.send(r);
                self.stopped = true;
            }
            Request::Backup => {}
        }
    }

    /// A consistent backup: a checkpoint (so everything acknowledged is in
    /// the file), then a copy of the committed pages into a temporary file
    /// beside the backup path, synced and renamed over it. On failure the
    /// previous backup stays as it was.
    fn backup(&mut self) {
        let Some(target) = self.server.config.bak.clone() else {
            tracing::warn!("SIGUSR1: no backup path is configured (-bak); nothing to do");
            return;
        };
        let started = Instant::now();
        tracing::info!(path = %target.display(), "backup started");
        lock(&self.server.storage.stats).backup_running = true;
        let result = self
            .checkpoint("backup")
            .and_then(|()| self.copy_to(&target).map_err(|e| e.to_string()));
        let mut stats = lock(&self.server.storage.stats);
        stats.backup_running = false;
        match result {
            Ok(bytes) => {
                stats.backups += 1;
                stats.last_backup_unix_ms = crate::keyspace::now_ms();
                stats.last_backup_ms = started.elapsed().as_millis() as u64;
                stats.last_backup_bytes = bytes;
                stats.last_backup_error = None;
                drop(stats);
                tracing::info!(
                    path = %target.display(),
                    bytes,
                    txid = self.file.meta().txid,
                    ms = started.elapsed().as_millis() as u64,
                    "backup written"
                );
            }
            Err(e) => {
                stats.last_backup_error = Some(e.clone());
                drop(stats);
                tracing::error!(path = %target.display(), error = %e, "backup failed; the previous backup is unchanged");
            }
        }
    }

    fn copy_to(&mut self, target: &Path) -> Result<u64, StorageError> {
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let result = (|| {
            let mut out = UringFile::open(&tmp, true)
                .map_err(|e| StorageError::io(format!("creating {}", tmp.display()), e))?;
            let file = &mut self.file;
            let bytes = at_background_priority(|| file.copy_committed_to(&mut out))?;
            drop(out);
            std::fs::rename(&tmp, target).map_err(|e| {
                StorageError::io(format!("renaming the backup to {}", target.display()), e)
            })?;
            crate::storage::io::sync_dir(&dir)
                .map_err(|e| StorageError::io("syncing the backup directory", e))?;
            Ok(bytes)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Whether an automatic checkpoint is due, and why.
    fn due(&mut self) -> Option<&'static str> {
        let log_bytes = self.server.storage.log.segment_bytes();
        if log_bytes >= self.tuning.checkpoint_log_bytes {
            return Some("log size");
        }
        let ks = self.server.keyspace();
        if !ks.has_changes() {
            self.last = Instant::now();
            return None;
        }
        if ks.dirty_bytes() >= self.tuning.cache_bytes / 2 {
            return Some("dirty data");
        }
        if self.last.elapsed() >= self.tuning.checkpoint_interval {
            return Some("interval");
        }
        None
    }

    fn checkpoint(&mut self, reason: &str) -> Result<(), String> {
        let started = Instant::now();
        self.server.storage.write_hold.started();
        let (frozen, base, seq) = {
            let mut ks = self.server.keyspace();
            // Nothing changed and nothing logged since the last checkpoint
            // (a log of commands that changed nothing still gets rotated).
            let logged = self.server.storage.log.segment_bytes() > wal::HEADER_LEN;
            if !ks.has_changes() && !logged {
                self.last = Instant::now();
                self.server.storage.write_hold.ended(true);
                return Ok(());
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            let frozen = ks.freeze();
            self.server.storage.write_hold.froze();
            // Under the keyspace lock: every record logged so far is in `frozen`.
            self.server.storage.log.rotate(seq);
            (frozen, ks.committed().clone(), seq)
        };
        let result = self.write(&frozen, &base, seq).map(|(keys, released)| {
            // Values no longer held anywhere are freed here: the whole
            // previous version of every key written, often hundreds of
            // megabytes of containers, which is no work for the normal
            // priority the checkpointer keeps for its lock holds.
            at_background_priority(move || drop((frozen, released)));
            keys
        });
        self.server.storage.write_hold.ended(result.is_ok());
        let mut stats = lock(&self.server.storage.stats);
        self.last = Instant::now();
        match result {
            Ok(keys) => {
                stats.checkpoints += 1;
                stats.last_checkpoint_unix_ms = crate::keyspace::now_ms();
                stats.last_checkpoint_ms = started.elapsed().as_millis() as u64;
                stats.last_checkpoint_error = None;
                stats.db_pages = self.file.meta().page_count;
                stats.free_pages = self.file.free_pages();
                drop(stats);
                if let Err(e) = wal::remove_segments_before(&self.server.storage.db_path, seq) {
                    tracing::warn!(error = %e, "cannot remove log segments the checkpoint made redundant");
                }
                tracing::info!(
                    reason,
                    keys_written = keys,
                    txid = self.file.meta().txid,
                    ms = started.elapsed().as_millis() as u64,
                    "checkpoint"
                );
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                stats.last_checkpoint_error = Some(msg.clone());
                drop(stats);
                tracing::error!(reason, error = %msg, "checkpoint failed; the log keeps every change and it will be retried");
                Err(msg)
            }
        }
    }

    /// Writes `frozen` on top of `base` and publishes the result; returns
    /// the number of keys written and the values the cache let go of while
    /// publishing.
    fn write(
        &mut self,
        frozen: &Layer,
        base: &Arc<Committed>,
        seq: u64,
    ) -> Result<(usize, Vec<Arc<BitString>>), StorageError> {
        let file = &mut self.file;
        let done = at_background_priority(|| write_layer(file, frozen, base, seq))?;
        let released = self.publish(frozen, done.committed, done.written);
        Ok((done.changes, released))
    }

    /// Publishes a checkpoint of `frozen` a bounded number of keys per hold
    /// of the keyspace lock: forgetting what the cache held of every changed
    /// key and caching every written value takes about a microsecond a key,
    /// and a checkpoint of 100k keys must not stop clients for 100 ms.
    /// Returns the values the cache let go of, for the caller to free.
    fn publish(
        &self,
        frozen: &Layer,
        committed: Arc<Committed>,
        written: Vec<WrittenValue>,
    ) -> Vec<Arc<BitString>> {
        let mut released = Vec::new();
        let mut hold = |step: &mut dyn FnMut(&mut Keyspace)| {
            let mut ks = self.server.keyspace();
            step(&mut ks);
            released.append(&mut ks.take_released());
            ks.unlock_fair();
        };
        hold(&mut |ks| ks.publish_committed(committed.clone()));
        for (db, changes) in frozen.dbs.iter().enumerate() {
            if changes.flushed {
                hold(&mut |ks| ks.forget_cached_db(db));
            }
            // A key written with a new value gets its new entry in place of
            // the old one below (`cache_written`): only the others (deleted,
            // or a new expiry or name over a stored payload) are forgotten.
            let mut keys = changes
                .slots
                .iter()
                .filter(|(_, slot)| {
                    !matches!(slot, Slot::Present(e) if matches!(e.value, Value::Loaded(_)))
                })
                .map(|(key, _)| key)
                .peekable();
            while keys.peek().is_some() {
                hold(&mut |ks| {
                    for key in keys.by_ref().take(PUBLISH_KEYS_PER_LOCK) {
                        ks.forget_cached(db, key);
                    }
                });
            }
        }
        let mut written = written.into_iter().peekable();
        while written.peek().is_some() {
            hold(&mut |ks| ks.cache_written(&mut written, PUBLISH_CACHE_TIME));
        }
        let mut over_budget = true;
        while over_budget {
            hold(&mut |ks| over_budget = ks.shrink_cache(PUBLISH_CACHE_TIME));
        }
        hold(&mut |ks| ks.checkpoint_published());
        released
    }
}

/// What a checkpoint produced, for publishing.
pub struct Written {
    pub committed: Arc<Committed>,
    /// The values written, with their new directory entries.
    pub written: Vec<WrittenValue>,
    pub changes: usize,
}

/// Serializes `frozen` and commits it on top of `base` into `file` (which
/// may be simulated in tests). Runs without the keyspace lock.
pub fn write_layer<F: MapFile>(
    file: &mut PageFile<F>,
    frozen: &Layer,
    base: &Arc<Committed>,
    seq: u64,
) -> Result<Written, StorageError> {
    let mut changes: Vec<(Vec<u8>, Option<NewValue>)> = Vec::new();
    let mut loaded: Vec<(Vec<u8>, Arc<BitString>)> = Vec::new();
    for (db, layer) in frozen.dbs.iter().enumerate() {
        if layer.flushed {
            // Every committed key of the database goes, unless rewritten.
            let prefix = [db as u8];
            let _ = btree::visit_from(&**base, base.meta.root, &prefix, &mut |k, _| {
                if k.first() != Some(&(db as u8)) {
                    return ControlFlow::Break(());
                }
                if !layer.slots.contains_key(&k[1..]) {
                    changes.push((k.to_vec(), None));
                }
                ControlFlow::Continue(())
            })?;
        }
        for (key, slot) in layer.slots.iter() {
            let ckey = dir_key(db, key);
            let value = match slot {
                Slot::Deleted => None,
                Slot::Present(entry) => {
                    let expire_at = entry.expire_at.unwrap_or(0);
                    match &entry.value {
                        Value::Loaded(v) => {
                            loaded.push((ckey.clone(), v.clone()));
                            Some(NewValue::Fresh {
                                payload: encode_payload(v),
                                byte_len: v.len(),
                                cardinality: v.count(),
                                expire_at,
                            })
                        }
                        Value::Stored(meta) => {
                            let mut meta = meta.clone();
                            meta.expire_at = expire_at;
                            Some(NewValue::Keep(meta))
                        }
                    }
                }
            };
            changes.push((ckey, value));
        }
    }
    changes.sort_by(|a, b| a.0.cmp(&b.0));
    let count = changes.len();
    file.checkpoint(base, changes, seq)?;
    let committed = Arc::new(file.committed()?);
    // The values just written are now committed: cache them with their
    // new directory entries.
    let mut written = Vec::with_capacity(loaded.len());
    for (mut ckey, value) in loaded {
        // Publishing replaces the cached entry of every key written here, so
        // each must be found.
        let Some(meta) = committed.lookup(&ckey)? else {
            return Err(StorageError::corrupt(format!(
                "the directory just committed lacks key {:?}",
                String::from_utf8_lossy(&ckey[1..])
            )));
        };
        let db = usize::from(ckey.remove(0));
        // A small value built bit by bit holds spare room (its container
        // vector grows four at a time): cache a copy decoded from its
        // inline payload, which holds none. A one-bit key's value then
        // takes 80 bytes instead of 208.
        let value = match &meta.payload {
            Payload::Inline(bytes) => pagefile::decode_payload(bytes, &meta)
                .map(Arc::new)
                .unwrap_or(value),
            Payload::Extent { .. } => value,
        };
        written.push(WrittenValue {
            db,
            key: ckey,
            meta,
            value_bytes: value.heap_bytes(),
            value,
        });
    }
    Ok(Written {
        committed,
        written,
        changes: count,
    })
}

#[cfg(test)]
mod tests {
    //! Model-based tests of the keyspace over a simulated database file:
    //! random changes in several databases, checkpoints, clean reopens, and
    //! crashes at every write boundary of the file (unsynced data dropped,
    //! or the last write torn). After any crash the file must open and hold
    //! exactly the state of a checkpoint that had committed.

    use super::*;
    use crate::keyspace::BitOp;
    use crate::storage::io::{CrashMode, SimFile};
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    type State = BTreeMap<(usize, Vec<u8>), (Vec<u8>, Option<u64>)>;

    const NOW: u64 = 1_000;

    #[derive(Clone, Debug)]
    enum Op {
        SetBit(usize, u8, u32, bool),
        Set(usize, u8, Vec<u8>),
        Del(usize, u8),
        Expire(usize, u8, Option<u64>),
        Rename(usize, u8, u8),
        Flush(usize),
        /// BITOP (0 AND, 1 OR, 2 XOR, 3 NOT of the first source) into
        /// the destination, run `times` times in a row (a repeat over
        /// unchanged values is answered from the keyspace's memo).
        Bitop {
            db: usize,
            op: u8,
            dest: u8,
            sources: (u8, u8),
            times: u8,
        },
        Checkpoint,
        Reopen,
    }

    fn key(k: u8) -> Vec<u8> {
        format!("trackist_ev{}_2026-{}", k % 7, k).into_bytes()
    }

    fn op() -> impl Strategy<Value = Op> {
        let db = 0usize..3;
        // Keys 0..4 (BITOP's) come up often.
        let k = prop_oneof![0u8..4, 0u8..24];
        prop_oneof![
            6 => (db.clone(), k.clone(), prop_oneof![0u32..64, 0u32..200_000, 1_000_000u32..1_100_000], any::<bool>())
                .prop_map(|(d, k, o, v)| Op::SetBit(d, k, o, v)),
            2 => (db.clone(), k.clone(), proptest::collection::vec(any::<u8>(), 0..1200)).prop_map(|(d, k, b)| Op::Set(d, k, b)),
            2 => (db.clone(), k.clone()).prop_map(|(d, k)| Op::Del(d, k)),
            1 => (db.clone(), k.clone(), proptest::option::of(10_000u64..20_000)).prop_map(|(d, k, t)| Op::Expire(d, k, t)),
            1 => (db.clone(), k.clone(), k.clone()).prop_map(|(d, a, b)| Op::Rename(d, a, b)),
            1 => db.clone().prop_map(Op::Flush),
            // Few destinations and sources, so that the same BITOP comes
            // back after other changes.
            2 => (db.clone(), 0u8..4, 0u8..3, (0u8..4, 0u8..4), 1u8..3).prop_map(
                |(db, op, dest, sources, times)| Op::Bitop { db, op, dest, sources, times }
            ),
            2 => Just(Op::Checkpoint),
            1 => Just(Op::Reopen),
        ]
    }

    /// Applies an operation to the keyspace and to the model.
    fn apply(ks: &mut Keyspace, model: &mut State, op: &Op) {
        match op {
            Op::SetBit(db, k, offset, v) => {
                ks.db(*db)
                    .value_mut(&key(*k), NOW)
                    .expect("value_mut")
                    .set_bit(*offset, *v);
                let e = model.entry((*db, key(*k))).or_insert((Vec::new(), None));
                let byte = (*offset / 8) as usize;
                if e.0.len() <= byte {
                    e.0.resize(byte + 1, 0);
                }
                let mask = 0x80u8 >> (offset % 8);
                if *v {
                    e.0[byte] |= mask;
                } else {
                    e.0[byte] &= !mask;
                }
            }
            Op::Set(db, k, bytes) => {
                ks.db(*db)
                    .put(&key(*k), BitString::from_bytes(bytes), None)
                    .expect("put");
                model.insert((*db, key(*k)), (bytes.clone(), None));
            }
            Op::Del(db, k) => {
                let removed = ks.db(*db).remove(&key(*k), NOW).expect("remove");
                assert_eq!(removed, model.remove(&(*db, key(*k))).is_some());
            }
            Op::Expire(db, k, at) => {
                let set = ks.db(*db).set_expire(&key(*k), *at, NOW).expect("expire");
                let m = model.get_mut(&(*db, key(*k)));
                assert_eq!(set, m.is_some());
                if let Some(e) = m {
                    e.1 = *at;
                }
            }
            Op::Rename(db, a, b) => {
                let moved = ks.db(*db).rename(&key(*a), &key(*b), NOW).expect("rename");
                let src = model.remove(&(*db, key(*a)));
                assert_eq!(moved, src.is_some());
                if let Some(v) = src {
                    model.insert((*db, key(*b)), v);
                }
            }
            Op::Flush(db) => {
                ks.db(*db).flush();
                model.retain(|(d, _), _| d != db);
            }
            Op::Bitop {
                db,
                op,
                dest,
                sources,
                times,
            } => {
                let names = [key(sources.0), key(sources.1)];
                let names: Vec<&[u8]> = match op {
                    3 => vec![&names[0]],
                    _ => vec![&names[0], &names[1]],
                };
                let bit_op = [BitOp::And, BitOp::Or, BitOp::Xor, BitOp::Not][usize::from(*op)];
                for _ in 0..*times {
                    let len = ks
                        .db(*db)
                        .bitop(bit_op, &key(*dest), &names, NOW)
                        .expect("bitop")
                        .len;
                    // Redis: missing sources are empty strings, shorter
                    // ones are padded with zero bytes.
                    let values: Vec<Vec<u8>> = names
                        .iter()
                        .map(|n| {
                            model
                                .get(&(*db, n.to_vec()))
                                .map(|e| e.0.clone())
                                .unwrap_or_default()
                        })
                        .collect();
                    let n = values.iter().map(Vec::len).max().unwrap_or(0);
                    let byte = |v: &Vec<u8>, i: usize| v.get(i).copied().unwrap_or(0);
                    let result: Vec<u8> = (0..n)
                        .map(|i| match op {
                            0 => values.iter().fold(0xff, |acc, v| acc & byte(v, i)),
                            1 => values.iter().fold(0, |acc, v| acc | byte(v, i)),
                            2 => values.iter().fold(0, |acc, v| acc ^ byte(v, i)),
                            _ => !byte(&values[0], i),
                        })
                        .collect();
                    assert_eq!(len, result.len() as u64, "BITOP's reply");
                    if result.is_empty() {
                        model.remove(&(*db, key(*dest)));
                    } else {
                        model.insert((*db, key(*dest)), (result, None));
                    }
                }
            }
            Op::Checkpoint | Op::Reopen => {}
        }
    }

    /// Everything the keyspace holds, as the model's type.
    fn dump(ks: &mut Keyspace) -> State {
        let mut out = State::new();
        for db in 0..3 {
            for k in ks.keys(db, b"*", NOW).expect("keys") {
                let meta = ks.db(db).meta(&k, NOW).expect("meta").expect("live");
                let v = ks.db(db).value(&k, NOW).expect("value").expect("live");
                assert_eq!(meta.len, v.len());
                assert_eq!(meta.cardinality, v.count());
                out.insert((db, k), (v.to_bytes(), meta.expire_at));
            }
            assert_eq!(
                ks.key_count(db),
                out.keys().filter(|(d, _)| *d == db).count() as u64
            );
        }
        out
    }

    fn open(disk: &SimFile) -> (PageFile<SimFile>, Keyspace) {
        let (file, committed) =
            PageFile::open_io(disk.clone_handle(), Path::new("sim.db")).expect("open");
        let ks = Keyspace::new(Arc::new(committed), 64 * 1024);
        (file, ks)
    }

    /// A checkpoint published step by step as the checkpointer does (the
    /// lock is released between steps there): every key reads the same
    /// after each step, however much of the cache was updated so far.
    fn checkpoint(file: &mut PageFile<SimFile>, ks: &mut Keyspace, seq: u64) {
        let frozen = ks.freeze();
        let base = ks.committed().clone();
        let before = dump(ks);
        let done = write_layer(file, &frozen, &base, seq).expect("checkpoint");
        ks.publish_committed(done.committed);
        assert_eq!(dump(ks), before, "after publishing the committed state");
        for (db, changes) in frozen.dbs.iter().enumerate() {
            if changes.flushed {
                ks.forget_cached_db(db);
            }
            for (i, (key, _)) in changes.slots.iter().enumerate() {
                ks.forget_cached(db, key);
                if i == changes.slots.len() / 2 {
                    assert_eq!(dump(ks), before, "halfway through forgetting");
                }
            }
        }
        let mut written = done.written.into_iter();
        while written.len() > 0 {
            ks.cache_written(&mut written, Duration::ZERO);
            assert_eq!(dump(ks), before, "while caching the values written");
        }
        assert_eq!(dump(ks), before, "after caching the values written");
        while ks.shrink_cache(Duration::ZERO) {
            assert_eq!(dump(ks), before, "while evicting down to the budget");
        }
        ks.checkpoint_published();
        assert_eq!(dump(ks), before, "after the checkpoint");
    }

    /// The check before a command (is the value on disk, to be read with
    /// io_uring first?) and the read of a cached committed value, each one
    /// cache lookup, agree with the full lookup in every state of a key.
    #[test]
    fn cold_check_and_cached_reads_of_committed_values() {
        let disk = SimFile::new();
        let (mut file, mut ks) = open(&disk);
        let bytes: Vec<u8> = (0..20_000u32).map(|i| (i * 7 + i / 3) as u8).collect();
        let now = 1_000_000;
        ks.db(0)
            .put(b"big", BitString::from_bytes(&bytes), None)
            .unwrap();
        ks.db(0)
            .put(b"gone", BitString::from_bytes(&bytes), Some(now + 10))
            .unwrap();
        ks.db(0)
            .put(b"small", BitString::from_bytes(b"ab"), None)
            .unwrap();
        // In the overlay: nothing to read.
        assert!(ks.cold(0, b"big", now).unwrap().is_none());
        checkpoint(&mut file, &mut ks, 2);
        drop(ks);

        let (_file, mut ks) = open(&disk);
        // Committed, not cached: the extent must be read first.
        let cold = ks.cold(0, b"big", now).unwrap().expect("cold");
        assert_eq!((cold.db, cold.key.as_slice()), (0, &b"big"[..]));
        assert!(ks.cold(0, b"gone", now).unwrap().is_some());
        // Inline payloads, missing keys and expired keys need no read.
        assert!(ks.cold(0, b"small", now).unwrap().is_none());
        assert!(ks.cold(0, b"absent", now).unwrap().is_none());
        assert!(ks.cold(0, b"gone", now + 10).unwrap().is_none());
        // Once the value read is installed, it is served from the cache.
        let value = BitString::from_bytes(&bytes);
        ks.install(&cold, Arc::new(value.clone()));
        assert!(ks.cold(0, b"big", now).unwrap().is_none());
        let hits = ks.cache().hits;
        assert_eq!(*ks.db(0).value(b"big", now).unwrap().unwrap(), value);
        assert_eq!(ks.cache().hits, hits + 1);
        // An expired key is not served from the cache, and is deleted.
        let gone = ks.cold(0, b"gone", now).unwrap().unwrap();
        ks.install(&gone, Arc::new(value.clone()));
        assert!(ks.db(0).value(b"gone", now + 10).unwrap().is_none());
        assert!(ks.cold(0, b"gone", now).unwrap().is_none(), "deleted");
        assert!(ks.db(0).value(b"gone", now).unwrap().is_none());
        // A change in the overlay wins over the cached committed value.
        ks.db(0).value_mut(b"big", now).unwrap().set_bit(0, true);
        assert!(ks.cold(0, b"big", now).unwrap().is_none());
        assert_ne!(*ks.db(0).value(b"big", now).unwrap().unwrap(), value);
    }

    /// A BITOP run again over committed keys (after a restart) is answered
    /// from the memo: the sources' decoded values stay cached between runs.
    #[test]
    fn a_repeated_bitop_over_committed_keys_is_answered_from_the_memo() {
        let disk = SimFile::new();
        let (mut file, mut ks) = open(&disk);
        for (k, bits) in [(&b"a"[..], [1u32, 900, 3_000_000]), (b"b", [2, 70_000, 5])] {
            for bit in bits {
                ks.db(0).value_mut(k, NOW).unwrap().set_bit(bit, true);
            }
        }
        let sources: [&[u8]; 2] = [b"a", b"b"];
        let or = |ks: &mut Keyspace| ks.db(0).bitop(BitOp::Or, b"d", &sources, NOW).unwrap().len;
        assert_eq!(or(&mut ks), 375_001);
        checkpoint(&mut file, &mut ks, 2);
        drop(ks);
        let (_file, mut ks) = open(&disk);
        for _ in 0..3 {
            assert_eq!(or(&mut ks), 375_001);
        }
        assert_eq!(ks.bitop_memo.hits, 2);
    }

    /// Found by the model test: two strings with equal bits but different
    /// lengths; after a RENAME the cache must not serve the old value.
    #[test]
    fn renamed_key_with_equal_bits_but_another_length() {
        let disk = SimFile::new();
        let (mut file, mut ks) = open(&disk);
        let mut model = State::new();
        for op in [Op::SetBit(2, 11, 0, false), Op::SetBit(2, 4, 8, false)] {
            apply(&mut ks, &mut model, &op);
        }
        checkpoint(&mut file, &mut ks, 2);
        assert_eq!(dump(&mut ks), model);
        apply(&mut ks, &mut model, &Op::Rename(2, 11, 4));
        assert_eq!(dump(&mut ks), model);
        checkpoint(&mut file, &mut ks, 3);
        assert_eq!(dump(&mut ks), model);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn checkpoints_reopens_and_crashes_match_the_model(ops in proptest::collection::vec(op(), 1..120)) {
            let disk = SimFile::new();
            let (mut file, mut ks) = open(&disk);
            let mut model = State::new();
            // The state of each committed checkpoint, with the number of
            // file changes made when its meta page had been synced.
            let mut snapshots: Vec<(u64, State)> = vec![(disk.changes(), State::new())];
            let mut seq = 2;
            for op in &ops {
                match op {
                    Op::Checkpoint => {
                        checkpoint(&mut file, &mut ks, seq);
                        seq += 1;
                        snapshots.push((disk.changes(), model.clone()));
                        prop_assert_eq!(dump(&mut ks), model.clone());
                    }
                    Op::Reopen => {
                        // A clean restart without the log: the last checkpoint.
                        drop(file);
                        let (f, k) = open(&disk);
                        file = f;
                        ks = k;
                        model = snapshots.last().map(|s| s.1.clone()).unwrap_or_default();
                        prop_assert_eq!(dump(&mut ks), model.clone());
                    }
                    other => apply(&mut ks, &mut model, other),
                }
            }
            checkpoint(&mut file, &mut ks, seq);
            snapshots.push((disk.changes(), model.clone()));
            prop_assert_eq!(dump(&mut ks), model.clone());

            // Crash after every write boundary: the file opens and holds a
            // committed state, never older than the last fully synced one.
            let total = disk.changes();
            for k in 0..=total {
                for mode in [CrashMode::DropUnsynced, CrashMode::KeepUnsynced, CrashMode::TearLastWrite(100), CrashMode::LastWriteOnly] {
                    let crashed = SimFile::from_bytes(disk.crash_after(k, mode));
                    let (_, mut ks) = open(&crashed);
                    let state = dump(&mut ks);
                    let newest_durable = snapshots.iter().rposition(|(at, _)| *at <= k).unwrap_or(0);
                    let found = snapshots.iter().rposition(|(_, s)| *s == state);
                    prop_assert!(found.is_some(), "after change {k} the file holds no committed state");
                    prop_assert!(found.unwrap_or(0) + 1 >= newest_durable,
                        "after change {k} the file went back to checkpoint {:?}, newest durable {newest_durable}", found);
                }
            }
        }
    }

    /// Commands through the whole command layer: a server that checkpoints,
    /// crashes (kill -9: everything written survives) and recovers by
    /// replaying its log must always show exactly the state of a server
    /// that never did any of that.
    mod commands {
        use super::*;
        use crate::config::Config;
        use crate::storage::log::FsyncPolicy;
        use crate::storage::wal;

        fn server_over(disk: &SimFile) -> (Arc<Server>, PageFile<SimFile>) {
            let (file, committed) =
                PageFile::open_io(disk.clone_handle(), Path::new("sim.db")).expect("open");
            let ks = Keyspace::new(Arc::new(committed), 256 * 1024);
            let (tx, _rx) = mpsc::channel();
            let storage = Storage {
                log: Arc::new(Log::new(FsyncPolicy::No, 1, 0)),
                requests: Mutex::new(tx),
                stats: Mutex::new(PersistStats::default()),
                db_path: PathBuf::from("sim.db"),
                write_hold: WriteHold::new(256 * 1024),
            };
            (Arc::new(Server::new(Config::defaults(), ks, storage)), file)
        }

        fn run(server: &Server, session: &mut Session, argv: &[Vec<u8>]) -> Vec<u8> {
            let argv: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
            let mut out = ReplyBuf::new();
            let mut ctx = Ctx::new(server, session, &mut out);
            command::execute(&mut ctx, &argv);
            drop(ctx);
            out.buf
        }

        /// Every key of every database with its value and absolute expiry.
        /// (database, key, GET reply, PEXPIRETIME reply)
        type Row = (usize, Vec<u8>, Vec<u8>, Vec<u8>);

        fn dump(server: &Server) -> Vec<Row> {
            let client = server.register_client("dump".into(), String::new());
            let mut session = Session::new(client);
            let mut out = Vec::new();
            for db in 0..4 {
                run(
                    server,
                    &mut session,
                    &[b"SELECT".to_vec(), db.to_string().into_bytes()],
                );
                let keys = server
                    .keyspace()
                    .keys(db, b"*", crate::keyspace::now_ms())
                    .expect("keys");
                for k in keys {
                    let v = run(server, &mut session, &[b"GET".to_vec(), k.clone()]);
                    let t = run(server, &mut session, &[b"PEXPIRETIME".to_vec(), k.clone()]);
                    out.push((db, k, v, t));
                }
            }
            out
        }

        /// Replays framed log records into a freshly opened server.
        fn replay(server: &Server, records: &[u8]) {
            let mut bytes = wal::encode_header(7).to_vec();
            bytes.extend_from_slice(records);
            let mut seg = SimFile::from_bytes(bytes);
            let client = server.register_client("replay".into(), String::new());
            let mut session = Session::new(client);
            let mut out = ReplyBuf::new();
            let mut ctx = Ctx::new(server, &mut session, &mut out);
            let stats = wal::read_segment(
                &mut seg,
                Path::new("sim.db-wal"),
                7,
                |p| -> Result<(), String> { command::replay_record(&mut ctx, p).map(|_| ()) },
            )
            .expect("replay");
            assert!(stats.damage.is_none());
        }

        fn key() -> impl Strategy<Value = Vec<u8>> {
            (0u8..12).prop_map(|k| {
                format!("trackist_{}_{}", ["a", "b", "c"][k as usize % 3], k).into_bytes()
            })
        }

        fn cmd() -> impl Strategy<Value = Vec<Vec<u8>>> {
            let b = |s: &str| s.as_bytes().to_vec();
            let num = |n: u64| n.to_string().into_bytes();
            // Absolute expiries only (far future or past), so both servers
            // resolve them identically whatever the clock says.
            let when = prop_oneof![Just(1u64), 4_000_000_000_000u64..4_000_000_100_000];
            prop_oneof![
                8 => (key(), prop_oneof![0u64..64, 0u64..300_000], 0u8..2).prop_map(move |(k, o, v)| vec![b("SETBIT"), k, num(o), num(v as u64)]),
                2 => (key(), proptest::collection::vec(any::<u8>(), 0..700), proptest::option::of(when.clone()), 0u8..4).prop_map(move |(k, v, px, flag)| {
                    let mut c = vec![b("SET"), k, v];
                    if let Some(t) = px { c.push(b("PXAT")); c.push(num(t)); }
                    match flag { 1 => c.push(b("NX")), 2 => c.push(b("XX")), 3 => c.push(b("GET")), _ => {} }
                    c
                }),
                2 => proptest::collection::vec(key(), 1..3).prop_map(move |ks| { let mut c = vec![b("DEL")]; c.extend(ks); c }),
                2 => (key(), when.clone(), 0u8..4).prop_map(move |(k, t, o)| {
                    let mut c = vec![b("PEXPIREAT"), k, num(t)];
                    match o { 1 => c.push(b("NX")), 2 => c.push(b("GT")), 3 => c.push(b("LT")), _ => {} }
                    c
                }),
                1 => key().prop_map(move |k| vec![b("PERSIST"), k]),
                2 => (key(), key(), any::<bool>()).prop_map(move |(a, d, nx)| vec![if nx { b("RENAMENX") } else { b("RENAME") }, a, d]),
                2 => (0u8..4, key(), proptest::collection::vec(key(), 1..4)).prop_map(move |(op, d, srcs)| {
                    let op = ["AND", "OR", "XOR", "NOT"][op as usize];
                    let mut c = vec![b("BITOP"), b(op), d];
                    if op == "NOT" { c.push(srcs[0].clone()); } else { c.extend(srcs); }
                    c
                }),
                1 => (0u8..4).prop_map(move |db| vec![b("SELECT"), num(db as u64)]),
                1 => Just(vec![b("FLUSHDB")]),
                1 => Just(vec![b("MULTI")]),
                1 => Just(vec![b("EXEC")]),
            ]
        }

        /// Runs commands as one network batch does: one context, their log
        /// records merged into one.
        fn run_merged(server: &Server, session: &mut Session, cmds: &[Vec<Vec<u8>>]) -> Vec<u8> {
            let mut out = ReplyBuf::new();
            let mut ctx = Ctx::new(server, session, &mut out);
            ctx.network_batch = true;
            for argv in cmds {
                let argv: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
                command::execute(&mut ctx, &argv);
            }
            drop(ctx);
            out.buf
        }

        /// How many records the framed log bytes hold.
        fn records(framed: &[u8]) -> usize {
            let mut bytes = wal::encode_header(7).to_vec();
            bytes.extend_from_slice(framed);
            let mut n = 0;
            wal::read_segment(
                &mut SimFile::from_bytes(bytes),
                Path::new("sim.db-wal"),
                7,
                |_| -> Result<(), String> {
                    n += 1;
                    Ok(())
                },
            )
            .expect("read");
            n
        }

        #[test]
        fn a_batch_logs_its_writes_as_one_record_and_replays_them() {
            let (server, _file) = server_over(&SimFile::new());
            let mut session = Session::new(server.register_client("t".into(), String::new()));
            let b = |s: &str| s.as_bytes().to_vec();
            let setbit = |k: &str, o: &str| vec![b("SETBIT"), b(k), b(o), b("1")];
            let cmds = vec![
                setbit("a", "1"),
                vec![b("GET"), b("a")],
                setbit("b", "7"),
                setbit("a", "9"),
            ];
            run_merged(&server, &mut session, &cmds);
            let merged = server.storage.log.take_pending();
            assert_eq!(records(&merged), 1);
            // Without merging, a record per write command.
            for argv in &cmds {
                run(&server, &mut session, argv);
            }
            assert_eq!(records(&server.storage.log.take_pending()), 3);
            // A large batch is cut into records of about MERGED_RECORD_BYTES.
            let value = vec![b'x'; 40 * 1024];
            let sets: Vec<_> = (0..5)
                .map(|i| vec![b("SET"), format!("big{i}").into_bytes(), value.clone()])
                .collect();
            run_merged(&server, &mut session, &sets);
            assert_eq!(records(&server.storage.log.take_pending()), 3);
            // The merged record replays every command.
            let (replayed, _f) = server_over(&SimFile::new());
            replay(&replayed, &merged);
            let mut s2 = Session::new(replayed.register_client("t".into(), String::new()));
            assert_eq!(run(&replayed, &mut s2, &[b("BITCOUNT"), b("a")]), b":2\r\n");
            assert_eq!(
                run(&replayed, &mut s2, &[b("GETBIT"), b("b"), b("7")]),
                b":1\r\n"
            );
        }

        #[derive(Clone, Debug)]
        enum Step {
            Command(Vec<Vec<u8>>),
            /// Commands run as one pipelined batch (records merged).
            Batch(Vec<Vec<Vec<u8>>>),
            Checkpoint,
            Crash,
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                20 => cmd().prop_map(Step::Command),
                4 => proptest::collection::vec(cmd(), 1..8).prop_map(Step::Batch),
                2 => Just(Step::Checkpoint),
                2 => Just(Step::Crash),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

            #[test]
            fn checkpoints_crashes_and_replay_never_change_what_clients_see(steps in proptest::collection::vec(step(), 1..150)) {
                let reference_disk = SimFile::new();
                let (reference, _rf) = server_over(&reference_disk);
                let mut ref_session = Session::new(reference.register_client("ref".into(), String::new()));
                let mut disk = SimFile::new();
                let (mut subject, mut file) = server_over(&disk);
                let mut session = Session::new(subject.register_client("subject".into(), String::new()));
                // Framed records since the last checkpoint: the live log.
                let mut log = Vec::new();
                let mut seq = 2;
                for step in &steps {
                    match step {
                        Step::Command(argv) => {
                            let want = run(&reference, &mut ref_session, argv);
                            let got = run(&subject, &mut session, argv);
                            prop_assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want), "{:?}", argv.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>());
                            log.extend(subject.storage.log.take_pending());
                        }
                        Step::Batch(cmds) => {
                            let mut want = Vec::new();
                            for argv in cmds {
                                want.extend(run(&reference, &mut ref_session, argv));
                            }
                            let got = run_merged(&subject, &mut session, cmds);
                            prop_assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want));
                            log.extend(subject.storage.log.take_pending());
                        }
                        Step::Checkpoint => {
                            let (frozen, base) = {
                                let mut ks = subject.keyspace();
                                (ks.freeze(), ks.committed().clone())
                            };
                            log.clear();
                            let done = write_layer(&mut file, &frozen, &base, seq).expect("checkpoint");
                            seq += 1;
                            subject.keyspace().checkpoint_committed(done.committed, done.written);
                        }
                        Step::Crash => {
                            // kill -9: the page cache survives; the log is replayed.
                            drop(file);
                            let crashed = SimFile::from_bytes(disk.crash(CrashMode::KeepUnsynced));
                            let (s, f) = server_over(&crashed);
                            disk = crashed;
                            replay(&s, &log);
                            let _ = s.storage.log.take_pending();
                            subject = s;
                            file = f;
                            // The client reconnects; a transaction it had open is gone.
                            session = Session::new(subject.register_client("subject".into(), String::new()));
                            ref_session.multi = None;
                            session.db = ref_session.db;
                            // The reference client keeps its database selection.
                        }
                    }
                    if !matches!(step, Step::Command(_)) {
                        prop_assert!(dump(&subject) == dump(&reference), "after {:?}", step);
                    }
                }
                prop_assert!(dump(&subject) == dump(&reference));
            }
        }
    }
}
