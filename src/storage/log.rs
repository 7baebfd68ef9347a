//! The log writer: network threads append framed records to a shared buffer
//! (under the keyspace lock, so the log order is the execution order); one
//! writer thread takes whatever has accumulated, writes it to the current
//! WAL segment with one write (group commit), syncs it as `--fsync` says,
//! and publishes how far the log is written. A reply to a mutation is sent
//! only once the log is written past its record.
//!
//! A checkpoint rotates the log: records appended before the rotation point
//! stay in the old segment (which the checkpoint makes redundant), later ones
//! go to a new segment.
//!
//! When a write fails (disk full, I/O error) the writer keeps the records,
//! reports the failure (writes are then refused with MISCONF) and retries
//! until the disk recovers; no waiting client is acknowledged meanwhile.

use super::io::UringFile;
use super::wal::{self, WalWriter};
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// When the log is also flushed to stable storage (`--fsync`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Before every acknowledgement.
    Always,
    /// About once a second (a power loss loses at most about a second).
    EverySec,
    /// Never explicitly (the kernel decides).
    No,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "everysec" => Ok(FsyncPolicy::EverySec),
            "no" => Ok(FsyncPolicy::No),
            other => Err(format!(
                "unknown fsync policy {other:?}: expected always, everysec or no"
            )),
        }
    }
}

impl FsyncPolicy {
    pub fn name(self) -> &'static str {
        match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::EverySec => "everysec",
            FsyncPolicy::No => "no",
        }
    }
}

#[derive(Default)]
struct State {
    /// Framed records not yet taken by the writer.
    pending: Vec<u8>,
    /// Log position after the last appended record (bytes, all segments).
    appended: u64,
    /// Start segment `seq` at log position `lsn`.
    rotations: Vec<(u64, u64)>,
    /// The writer should finish what is pending and stop.
    stopping: bool,
    /// The writer has finished (after `stopping`).
    stopped: bool,
    /// Written to the kernel up to here (per the policy: synced).
    written: u64,
    /// Why the last write failed, while it is failing.
    failure: Option<String>,
    /// Bytes in the current segment.
    segment_bytes: u64,
    /// Sequence number of the segment being appended to.
    segment_seq: u64,
    /// The writer waits for work and nobody has woken it yet (so only the
    /// first append after it went idle pays for a wake-up system call).
    writer_idle: bool,
}

/// The log as the rest of the server sees it.
pub struct Log {
    state: Mutex<State>,
    /// Wakes the writer.
    work: Condvar,
    /// Wakes threads waiting (blocking) for the log to be written.
    progress: Condvar,
    /// Written position, for network threads that wait asynchronously.
    written_tx: tokio::sync::watch::Sender<u64>,
    policy: FsyncPolicy,
    /// Set while writes fail (a cheap check before every write command).
    failing: std::sync::atomic::AtomicBool,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Log {
    pub fn new(policy: FsyncPolicy, segment_seq: u64, segment_bytes: u64) -> Log {
        let (written_tx, _) = tokio::sync::watch::channel(0);
        Log {
            state: Mutex::new(State {
                segment_seq,
                segment_bytes,
                ..State::default()
            }),
            work: Condvar::new(),
            progress: Condvar::new(),
            written_tx,
            policy,
            failing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn policy(&self) -> FsyncPolicy {
        self.policy
    }

    /// Appends one record and wakes the writer if it is idle; returns the
    /// log position the caller must wait for before acknowledging it.
    pub fn append(&self, payload: &[u8]) -> u64 {
        self.append_record(payload, true)
    }

    /// Appends one record without waking the writer: the caller calls
    /// [`Log::kick`] before it waits for the record. A network thread appends
    /// this way for every connection it serves in one round and kicks once
    /// at the end of the round, so one log write (and one wake-up of the
    /// writer and of the waiters) carries the whole round.
    pub fn append_deferred(&self, payload: &[u8]) -> u64 {
        self.append_record(payload, false)
    }

    /// Wakes the writer if it is idle (records appended with
    /// [`Log::append_deferred`] are waiting for it).
    pub fn kick(&self) {
        let wake = std::mem::take(&mut lock(&self.state).writer_idle);
        if wake {
            self.work.notify_one();
        }
    }

    fn append_record(&self, payload: &[u8], wake_writer: bool) -> u64 {
        let mut s = lock(&self.state);
        // A record over 1 GiB cannot exist: requests are limited to 512 MiB.
        if wal::frame(&mut s.pending, payload).is_err() {
            tracing::error!(bytes = payload.len(), "log record too large; not logged");
        }
        s.appended += wal::framed_len(payload.len()) as u64;
        let lsn = s.appended;
        let wake = wake_writer && std::mem::take(&mut s.writer_idle);
        drop(s);
        if wake {
            self.work.notify_one();
        }
        lsn
    }

    /// Records appended from now on go to segment `seq`.
    pub fn rotate(&self, seq: u64) {
        let mut s = lock(&self.state);
        let at = s.appended;
        s.rotations.push((at, seq));
        drop(s);
        self.work.notify_one();
    }

    /// Subscribes to the written position (for async waiting).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.written_tx.subscribe()
    }

    pub fn written(&self) -> u64 {
        lock(&self.state).written
    }

    pub fn appended(&self) -> u64 {
        lock(&self.state).appended
    }

    /// Bytes in the current segment (a checkpoint trigger).
    pub fn segment_bytes(&self) -> u64 {
        lock(&self.state).segment_bytes
    }

    /// Why writing fails, while it does (writes are refused meanwhile).
    pub fn failure(&self) -> Option<String> {
        if !self.is_failing() {
            return None;
        }
        lock(&self.state).failure.clone()
    }

    pub fn is_failing(&self) -> bool {
        self.failing.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Blocks until everything appended so far is written (and synced when
    /// `sync`), or the timeout passes. Returns whether it was.
    pub fn wait_written(&self, timeout: Duration) -> bool {
        let target = lock(&self.state).appended;
        self.wait_for_progress(timeout, |s| s.written >= target)
    }

    /// Waits (blocking) until `done` holds for the state, or the timeout
    /// passes. Returns whether it held.
    fn wait_for_progress(&self, timeout: Duration, done: impl Fn(&State) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = lock(&self.state);
        while !done(&s) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self
                .progress
                .wait_timeout(s, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        true
    }

    /// Takes the records appended and not yet taken by a writer (tests that
    /// run without the writer thread replay them themselves).
    pub fn take_pending(&self) -> Vec<u8> {
        std::mem::take(&mut lock(&self.state).pending)
    }

    /// Asks the writer to finish (write what is pending, start the segment
    /// a last checkpoint rotated to, sync) and stop; waits for it up to
    /// `timeout`. Returns whether it stopped.
    pub fn stop(&self, timeout: Duration) -> bool {
        lock(&self.state).stopping = true;
        self.work.notify_one();
        self.wait_for_progress(timeout, |s| s.stopped)
    }

    /// Marks the writer finished and wakes `stop`.
    fn finished(&self) {
        lock(&self.state).stopped = true;
        self.progress.notify_all();
    }

    /// The writer thread's loop. `writer` is the open current segment.
    pub fn run_writer(&self, db: PathBuf, mut writer: WalWriter<UringFile>) {
        let mut last_sync = Instant::now();
        let mut unsynced = false;
        // Records taken from `pending` but not yet written (kept across retries).
        let mut batch: Vec<u8> = Vec::new();
        let mut start = 0u64; // log position of batch[0]
        let mut rotations: Vec<(u64, u64)> = Vec::new();
        loop {
            {
                let mut s = lock(&self.state);
                while s.pending.is_empty()
                    && s.rotations.is_empty()
                    && batch.is_empty()
                    && !s.stopping
                {
                    let wait = if unsynced && self.policy == FsyncPolicy::EverySec {
                        Duration::from_secs(1).saturating_sub(last_sync.elapsed())
                    } else {
                        Duration::from_secs(3600)
                    };
                    if wait.is_zero() {
                        break;
                    }
                    s.writer_idle = true;
                    s = self
                        .work
                        .wait_timeout(s, wait)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|e| e.into_inner().0);
                    s.writer_idle = false;
                }
                if batch.is_empty() {
                    start = s.written.max(start);
                }
                batch.append(&mut s.pending);
                rotations.append(&mut s.rotations);
                if s.stopping && batch.is_empty() && rotations.is_empty() {
                    drop(s);
                    if unsynced {
                        let _ = writer.sync();
                    }
                    self.finished();
                    return;
                }
            }
            let had_data = !batch.is_empty();
            if let Err(e) =
                self.write_batch(&db, &mut writer, &mut batch, &mut start, &mut rotations)
            {
                self.fail(e);
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            unsynced |= had_data;
            let sync_now = match self.policy {
                FsyncPolicy::Always => true,
                FsyncPolicy::EverySec => last_sync.elapsed() >= Duration::from_secs(1),
                FsyncPolicy::No => false,
            };
            if sync_now && unsynced {
                if let Err(e) = writer.sync() {
                    self.fail(format!("syncing the write-ahead log: {e}"));
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
                unsynced = false;
                last_sync = Instant::now();
            }
            let mut s = lock(&self.state);
            s.written = start;
            s.segment_bytes = writer.len();
            s.segment_seq = writer.seq();
            if s.failure.take().is_some() {
                self.failing
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                tracing::info!("the write-ahead log is writable again; writes are accepted");
            }
            drop(s);
            self.written_tx.send_replace(start);
            self.progress.notify_all();
        }
    }

    fn fail(&self, why: String) {
        let mut s = lock(&self.state);
        if s.failure.as_deref() != Some(why.as_str()) {
            tracing::error!(error = %why, "cannot write the write-ahead log; refusing writes until it works again");
        }
        s.failure = Some(why);
        self.failing
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Writes `batch` (starting at log position `start`), switching segments
    /// at rotation points. What was written is removed from `batch` (and
    /// `start` advanced), so a retry after an error writes only the rest.
    fn write_batch(
        &self,
        db: &std::path::Path,
        writer: &mut WalWriter<UringFile>,
        batch: &mut Vec<u8>,
        start: &mut u64,
        rotations: &mut Vec<(u64, u64)>,
    ) -> Result<(), String> {
        while let Some(&(at, seq)) = rotations.first() {
            let cut = (at.saturating_sub(*start) as usize).min(batch.len());
            if cut > 0 {
                writer
                    .append(&batch[..cut])
                    .map_err(|e| format!("writing the write-ahead log: {e}"))?;
                batch.drain(..cut);
                *start += cut as u64;
            }
            writer
                .sync()
                .map_err(|e| format!("syncing the write-ahead log: {e}"))?;
            *writer = wal::create_segment(db, seq)
                .map_err(|e| format!("starting log segment {seq}: {e}"))?;
            rotations.remove(0);
        }
        if !batch.is_empty() {
            writer
                .append(batch)
                .map_err(|e| format!("writing the write-ahead log: {e}"))?;
            *start += batch.len() as u64;
            batch.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn writer_idle(log: &Log) -> bool {
        lock(&log.state).writer_idle
    }

    fn wait_until_idle(log: &Log) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !writer_idle(log) {
            assert!(Instant::now() < deadline, "the writer never went idle");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn deferred_records_wait_for_a_kick_and_plain_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let writer = wal::create_segment(&db, 1).unwrap();
        let log = Arc::new(Log::new(FsyncPolicy::No, 1, writer.len()));
        let thread = {
            let log = log.clone();
            std::thread::spawn(move || log.run_writer(db, writer))
        };

        // A plain append wakes the idle writer.
        wait_until_idle(&log);
        let first = log.append(b"first");
        assert!(log.wait_written(Duration::from_secs(5)));
        assert_eq!(log.written(), first);

        // A deferred one stays pending while the writer sleeps...
        wait_until_idle(&log);
        let second = log.append_deferred(b"second");
        let third = log.append_deferred(b"third");
        assert!(third > second && second > first);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(log.written(), first, "written without a kick");
        assert!(writer_idle(&log));

        // ...until one kick writes everything appended so far.
        log.kick();
        assert!(log.wait_written(Duration::from_secs(5)));
        assert_eq!(log.written(), third);
        // A kick with nothing pending is harmless.
        wait_until_idle(&log);
        log.kick();
        assert!(log.stop(Duration::from_secs(5)));
        thread.join().unwrap();
        let segment = std::fs::read(wal::segment_path(&dir.path().join("db"), 1)).unwrap();
        for payload in [&b"first"[..], b"second", b"third"] {
            assert!(
                segment.windows(payload.len()).any(|w| w == payload),
                "the segment lacks {:?}",
                String::from_utf8_lossy(payload)
            );
        }
    }
}
